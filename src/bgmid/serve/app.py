"""The review server's HTTP API and pages (FastAPI), built by :func:`create_app` from a :class:`ServeConfig`.

The API is a thin layer: identification is ``bgmid identify``'s own code path (the query pipeline,
:meth:`bgmid.pipeline.QueryPipeline.identify_file`), monitoring is :class:`bgmid.monitor.Monitor` in a job
(:mod:`bgmid.serve.jobs`), cue sheets are written by :mod:`bgmid.cuesheet`, state lives in
:class:`bgmid.serve.store.ReviewStore`. Security rules are in :mod:`bgmid.serve.security`. Every ``/api``
route needs the bearer token except the two audio routes, which also accept the signed URLs the API hands out
(an ``<audio>`` element cannot send a header).
"""

from __future__ import annotations

import os
import shutil
import threading
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from bgmid.cuesheet import csv_text, parse_timecode, result_to_dict
from bgmid.errors import BgmidError
from bgmid.serve.jobs import JobRunner, MonitorOptions
from bgmid.serve.media import media_type, playable
from bgmid.serve.security import BodyLimit, SecurityHeaders, TokenGate, Tokens, UrlSigner, resolve_under, safe_name
from bgmid.serve.store import CUE_STATUSES, ReviewStore, cue_from_dict, cue_record

__all__ = ["ServeConfig", "create_app"]

STATIC = resources.files("bgmid.serve") / "static"
#: The routes that also take a signed URL instead of the token (``<audio>`` elements cannot send headers).
AUDIO_ROUTES = r"/api/(programmes|tracks)/\d+/audio"


@dataclass
class ServeConfig:
    """Everything ``bgmid serve`` is started with."""

    db: Path  #: the index folder (read only)
    data: list[Path]  #: allowed roots; the first holds uploads, generated files and the state file
    tokens: Tokens
    max_upload_mb: float = 500.0  #: request bodies over this many MB (10^6 bytes) get 413
    workers: int = 1  #: monitor jobs run at once
    pool: str = "process"  #: ``process`` or ``thread`` workers
    cors_origins: list[str] = field(default_factory=list)  #: none: no CORS headers at all (the default)


@dataclass(frozen=True)
class Caller:
    token_name: str  #: the name of the token presented
    who: str  #: the reviewer the audit trail records (the ``X-Reviewer`` header, else the token's name)


class CueEdit(BaseModel):
    """A change to one cue; fields left out are kept. Times in seconds or ``HH:MM:SS.mmm``."""

    status: str | None = Field(None, description="pending, accepted or rejected")
    programme_start_s: float | str | None = Field(None, description="new in point (programme time)")
    programme_end_s: float | str | None = Field(None, description="new out point (programme time)")
    track_id: int | None = Field(None, description="another indexed track (GET /api/tracks)")
    track_start_s: float | str | None = Field(None, description="track time at the in point")
    usage: str | None = Field(None, description="background or featured")


class NewCue(BaseModel):
    """A cue the detector missed."""

    track_id: int
    programme_start_s: float | str
    programme_end_s: float | str
    track_start_s: float | str = 0.0
    usage: str = "background"


def _reviewer(request: Request, token_name: str) -> str:
    who = (request.headers.get("x-reviewer") or "").strip()
    who = "".join(ch for ch in who if ch.isprintable())[:64]
    return who or token_name


class Server:
    """What the routes share: the configuration, the state file, the URL signer, the job pool, loaded separators."""

    def __init__(self, config: ServeConfig):
        self.config = config
        self.data = config.data[0]
        for d in ("uploads", "cache"):
            (self.data / d).mkdir(parents=True, exist_ok=True)
        self.roots = [Path(os.path.realpath(d)) for d in config.data]
        self.store = ReviewStore(self.data)
        self.signer = UrlSigner()
        self.jobs: JobRunner | None = None  # started with the app (lifespan)
        self._separators: dict[str, object] = {}
        self._sep_lock = threading.Lock()

    def save_upload(self, upload: UploadFile) -> Path:
        """An upload copied to ``<data>/uploads/<random id>/<sanitised name>``."""
        folder = self.data / "uploads" / uuid.uuid4().hex[:16]
        folder.mkdir(parents=True)
        dest = folder / safe_name(upload.filename)
        with open(dest, "wb") as f:
            shutil.copyfileobj(upload.file, f, 1 << 20)
        return dest

    @staticmethod
    def check_separator(name: str) -> None:
        """400 unless ``name`` is ``auto``, ``none`` or a registry model name: a client never names a file."""
        from bgmid.separation.registry import available_models

        if name not in ("auto", "none", *available_models()):
            raise HTTPException(400, f"separator must be auto, none or one of {', '.join(available_models())}")

    def separator(self, name: str):
        """A separator by API name (see :meth:`check_separator`), loaded once per server."""
        from bgmid.separation.registry import resolve_separator

        self.check_separator(name)
        with self._sep_lock:
            if name not in self._separators:
                self._separators[name] = resolve_separator(name, command="serve")
            return self._separators[name]

    def tracks_by_id(self) -> dict[int, object]:
        from bgmid.index import open_index

        with open_index(self.config.db) as index:
            return {t.track_id: t for t in index.tracks()}

    def programme_or_404(self, pid: int) -> dict:
        prog = self.store.programme(pid)
        if prog is None:
            raise HTTPException(404, f"no programme {pid}")
        return prog


def server(request: Request) -> Server:
    return request.app.state.server


Srv = Annotated[Server, Depends(server)]


def caller(request: Request) -> Caller:
    """The dependency of every ``/api`` route: the bearer token's name, or 401."""
    name = server(request).config.tokens.name_of(request.headers.get("authorization"))
    if name is None:
        raise HTTPException(401, "give 'Authorization: Bearer TOKEN' (printed when bgmid serve started)",
                            headers={"WWW-Authenticate": "Bearer"})
    return Caller(name, _reviewer(request, name))


Auth = Annotated[Caller, Depends(caller)]


def media_allowed(request: Request) -> None:
    """The audio routes' dependency: the bearer token, or a valid signed URL for exactly this path."""
    srv, q = server(request), request.query_params
    if srv.config.tokens.name_of(request.headers.get("authorization")) is None and \
            not srv.signer.valid(request.url.path, q.get("exp"), q.get("sig")):
        raise HTTPException(401, "give the bearer token or a signed URL from the API")


def seconds(value: float | str, what: str) -> float:
    """A time from a request (seconds or a timecode), or 422."""
    try:
        return parse_timecode(value)
    except ValueError as exc:
        raise HTTPException(422, f"{what}: {exc}") from None


router = APIRouter()


# -- pages -----------------------------------------------------------------------------------------
@router.get("/", include_in_schema=False)
def index_page() -> HTMLResponse:
    return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"))


@router.get("/docs", include_in_schema=False)
def docs_page() -> HTMLResponse:
    return HTMLResponse((STATIC / "docs.html").read_text(encoding="utf-8"))


# -- identify and monitor --------------------------------------------------------------------------
@router.post("/api/identify", summary="identify the music in an uploaded clip (bgmid identify --json's object)")
def identify(auth: Auth, srv: Srv, file: Annotated[UploadFile, File()], separator_name: Annotated[str, Form(
        alias="separator")] = "auto", top: Annotated[int, Form(ge=1, le=50)] = 1) -> dict:
    from bgmid.audio import AudioError
    from bgmid.cli.library import identify_object
    from bgmid.index import open_index
    from bgmid.pipeline import QueryPipeline

    sep = srv.separator(separator_name)
    path = srv.save_upload(file)
    try:
        with open_index(srv.config.db) as index:
            try:
                matches = QueryPipeline(index, sep).identify_file(path, top=top)
            except AudioError as exc:
                return identify_object(path.name, [], error=str(exc).replace(str(path.parent) + "/", ""))
        return identify_object(path.name, matches)
    finally:
        shutil.rmtree(path.parent, ignore_errors=True)  # the clip was only needed for this answer


@router.post("/api/monitor", status_code=202, summary="queue a monitor job on an upload or a file under --data")
def monitor(auth: Auth, srv: Srv, file: Annotated[UploadFile | None, File()] = None,
            path: Annotated[str | None, Form()] = None, truth: Annotated[UploadFile | None, File()] = None,
            separator_name: Annotated[str, Form(alias="separator")] = "auto",
            alteration: Annotated[str, Form()] = "auto", shifts: Annotated[int, Form(ge=1, le=8)] = 1) -> dict:
    from bgmid.alterations import parse_alteration
    from bgmid.cuesheet import read_truth

    if (file is None) == (path is None):
        raise HTTPException(400, "give either an uploaded 'file' or a 'path' under the data folders")
    srv.check_separator(separator_name)  # the job loads it, in its worker
    try:
        parse_alteration(alteration)
    except BgmidError as exc:
        raise HTTPException(400, str(exc)) from None
    if file is not None:
        source = srv.save_upload(file)
        name = source.name
    else:
        source = resolve_under(path, srv.roots)
        if not source.is_file():
            raise HTTPException(404, f"{path}: no such file under the data folders")
        name = source.name
    rows = None
    if truth is not None:
        tpath = srv.save_upload(truth)
        try:
            rows = [t.to_row() for t in read_truth(tpath)]
        except (BgmidError, ValueError) as exc:
            raise HTTPException(400, f"truth: {str(exc).replace(str(tpath), tpath.name)}") from None
    job = srv.jobs.submit(str(source), name, MonitorOptions(separator_name, alteration, shifts), rows)
    return {"job": job, "status_url": f"/api/jobs/{job}"}


@router.get("/api/jobs", summary="the latest jobs, newest first")
def jobs(auth: Auth, srv: Srv, limit: int = 20) -> list[dict]:
    return [{**j, "source": Path(j["source"]).name} for j in srv.store.jobs(min(limit, 200))]


@router.get("/api/jobs/{job_id}", summary="a job's status (queued, running, done, failed) and progress (0-1)")
def job(auth: Auth, srv: Srv, job_id: str) -> dict:
    j = srv.store.job(job_id)
    if j is None:
        raise HTTPException(404, f"no job {job_id}")
    j["source"] = Path(j["source"]).name
    return j


# -- programmes and their cues ---------------------------------------------------------------------
@router.get("/api/programmes", summary="monitored programmes, newest first, with review counts")
def programmes(auth: Auth, srv: Srv) -> list[dict]:
    return srv.store.programmes()


@router.get("/api/programmes/{pid}", summary="one programme: levels per second, truth, cues, audio URL")
def programme(auth: Auth, srv: Srv, pid: int) -> dict:
    prog = srv.programme_or_404(pid)
    prog["source"] = Path(prog["source"]).name
    prog.pop("audio")
    prog["audio_url"] = srv.signer.sign(f"/api/programmes/{pid}/audio")
    for c in prog["cues"]:
        c["track_audio_url"] = srv.signer.sign(f"/api/tracks/{c['track_id']}/audio")
    return prog


@router.get("/api/programmes/{pid}/cuesheet.json", summary="the reviewed cue sheet (JSON contract)")
def cuesheet_json(auth: Auth, srv: Srv, pid: int) -> JSONResponse:
    res = srv.store.reviewed_result(pid)
    if res is None:
        raise HTTPException(404, f"no programme {pid}")
    title = srv.programme_or_404(pid)["title"]
    return JSONResponse(result_to_dict(res, title=title), headers={
        "Content-Disposition": f'attachment; filename="{safe_name(title, "programme")}.cues.json"'})


@router.get("/api/programmes/{pid}/cuesheet.csv", summary="the reviewed cue sheet (CSV)")
def cuesheet_csv(auth: Auth, srv: Srv, pid: int) -> Response:
    res = srv.store.reviewed_result(pid)
    if res is None:
        raise HTTPException(404, f"no programme {pid}")
    title = safe_name(srv.programme_or_404(pid)["title"], "programme")
    return Response(csv_text([res]), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{title}.cues.csv"'})


@router.patch("/api/programmes/{pid}/cues/{n}", summary="accept, reject or edit a cue (audited)")
def edit_cue(auth: Auth, srv: Srv, pid: int, n: int, edit: CueEdit) -> dict:
    prog = srv.programme_or_404(pid)
    if not edit.model_dump(exclude_none=True):
        raise HTTPException(422, "nothing to change: give status, times, track_id or usage")
    track = None
    if edit.track_id is not None:
        track = srv.tracks_by_id().get(edit.track_id)
        if track is None:
            raise HTTPException(422, f"track_id {edit.track_id}: not in the index")
    if edit.status is not None and edit.status not in CUE_STATUSES:
        raise HTTPException(422, f"status must be one of {', '.join(CUE_STATUSES)}")
    if edit.usage is not None and edit.usage not in ("background", "featured"):
        raise HTTPException(422, "usage must be background or featured")
    times = {k: None if getattr(edit, k) is None else seconds(getattr(edit, k), k)
             for k in ("programme_start_s", "programme_end_s", "track_start_s")}

    def change(status: str, d: dict) -> tuple[str, dict]:
        return apply_edit(status, d, edit.status, times, track, edit.usage, prog["duration_s"])

    try:
        after = srv.store.edit_cue(pid, n, change, auth.who, auth.token_name, action=_action(edit))
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    if after is None:
        raise HTTPException(404, f"programme {pid} has no cue {n}")
    return {"n": n, **after}


@router.post("/api/programmes/{pid}/cues", status_code=201, summary="add a cue the detector missed (audited)")
def add_cue(auth: Auth, srv: Srv, pid: int, cue: NewCue) -> dict:
    from bgmid.monitor import Cue

    prog = srv.programme_or_404(pid)
    track = srv.tracks_by_id().get(cue.track_id)
    if track is None:
        raise HTTPException(422, f"track_id {cue.track_id}: not in the index")
    a, b = seconds(cue.programme_start_s, "programme_start_s"), seconds(cue.programme_end_s, "programme_end_s")
    t0 = seconds(cue.track_start_s, "track_start_s")
    try:
        _check_span(a, b, prog["duration_s"])
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    if cue.usage not in ("background", "featured"):
        raise HTTPException(422, "usage must be background or featured")
    new = Cue(track_id=track.track_id, programme_start_s=a, programme_end_s=b, track_start_s=t0,
              track_end_s=t0 + (b - a), score=0, confidence=1.0, usage=cue.usage, title=track.title,
              path=track.path, extra=dict(track.extra))
    n = srv.store.add_cue(pid, cue_record(new), auth.who, auth.token_name)
    return {"n": n, "status": "accepted", "origin": "reviewer", **cue_record(new), "seq": n}


@router.get("/api/programmes/{pid}/audit", summary="every edit of the programme's cues: who, when (UTC), what")
def audit(auth: Auth, srv: Srv, pid: int) -> list[dict]:
    srv.programme_or_404(pid)
    return srv.store.audit(pid)


# -- the library and audio -------------------------------------------------------------------------
@router.get("/api/tracks", summary="indexed tracks whose title, file name or metadata contain q")
def tracks(auth: Auth, srv: Srv, q: str = "", limit: int = 50) -> list[dict]:
    needle = q.strip().lower()
    out = []
    for t in srv.tracks_by_id().values():
        hay = " ".join([t.title, Path(t.path).name, *map(str, t.extra.values())]).lower()
        if needle in hay:
            out.append({"track_id": t.track_id, "title": t.title, "file": Path(t.path).name,
                        "duration_s": round(t.duration_s, 3), "metadata": t.extra,
                        "audio_url": srv.signer.sign(f"/api/tracks/{t.track_id}/audio")})
            if len(out) >= max(1, min(limit, 500)):
                break
    return out


@router.get("/api/programmes/{pid}/audio", dependencies=[Depends(media_allowed)],
         summary="the programme's audio (HTTP range requests)")
def programme_audio(srv: Srv, pid: int) -> FileResponse:
    prog = srv.programme_or_404(pid)
    path = resolve_under(prog["audio"], srv.roots)  # written by us under --data; checked all the same
    return FileResponse(path, media_type=media_type(path))


@router.get("/api/tracks/{tid}/audio", dependencies=[Depends(media_allowed)],
         summary="a reference track's audio (HTTP range requests)")
def track_audio(srv: Srv, tid: int) -> FileResponse:
    from bgmid.audio import AudioError

    track = srv.tracks_by_id().get(tid)
    if track is None:
        raise HTTPException(404, f"no track {tid} in the index")
    try:  # the index names this file (not the client): it may lie outside --data
        path = playable(track.path, srv.data / "cache", f"track-{track.content_hash[:16]}")
    except (AudioError, OSError) as exc:
        raise HTTPException(404, f"track {tid}: its audio file cannot be read ({exc})") from None
    return FileResponse(path, media_type=media_type(path))



def _action(edit: CueEdit) -> str:
    """The audit row's action: ``accept``, ``reject``, ``reset`` or ``edit``."""
    fields = {k for k, v in edit.model_dump().items() if v is not None}
    if fields == {"status"}:
        return {"accepted": "accept", "rejected": "reject"}.get(edit.status, "reset")
    return "edit"


def _check_span(a: float, b: float, duration_s: float) -> None:
    if not 0 <= a < b <= duration_s + 0.5:
        raise ValueError(f"in {a:.3f} s and out {b:.3f} s must satisfy 0 <= in < out <= {duration_s:.3f} s")


def apply_edit(status: str, d: dict, new_status: str | None, times: dict, track, usage: str | None,
               duration_s: float) -> tuple[str, dict]:
    """A cue after an edit (pure). Moving the in point moves the track time with it (the music keeps playing
    at the programme's speed·tempo); a new track resets the evidence (score 0, confidence 1: the reviewer's
    word) and the offset runs. Any change of times, track or usage counts as a review: ``accepted``, unless a
    status is given with it."""
    cue = cue_from_dict(d)
    rate = cue.speed * cue.tempo
    a = cue.programme_start_s if times["programme_start_s"] is None else times["programme_start_s"]
    b = cue.programme_end_s if times["programme_end_s"] is None else times["programme_end_s"]
    _check_span(a, b, duration_s)
    changed = (a, b) != (cue.programme_start_s, cue.programme_end_s)
    if times["track_start_s"] is not None:
        cue.track_start_s, changed = times["track_start_s"], True
    else:
        cue.track_start_s += (a - cue.programme_start_s) * rate
    if not cue.parts or len(cue.parts) == 1:
        cue.track_end_s = cue.track_start_s + (b - a) * rate
    else:
        cue.track_end_s += (b - cue.programme_end_s) * rate
    cue.programme_start_s, cue.programme_end_s = a, b
    if cue.parts:
        cue.parts[0].programme_start_s, cue.parts[0].track_start_s = a, cue.track_start_s
        cue.parts[-1].programme_end_s, cue.parts[-1].track_end_s = b, cue.track_end_s
    if track is not None and track.track_id != cue.track_id:
        cue.track_id, cue.title, cue.path, cue.extra = track.track_id, track.title, track.path, dict(track.extra)
        cue.score, cue.confidence, cue.parts, changed = 0, 1.0, [], True
    if usage is not None and usage != cue.usage:
        cue.usage, changed = usage, True
    if new_status is not None:
        status = new_status
    elif changed:
        status = "accepted"
    return status, cue_record(cue)


def create_app(config: ServeConfig) -> FastAPI:
    """The ASGI app. The job pool starts with the app's lifespan and stops with it."""
    srv = Server(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        srv.store.fail_unfinished_jobs("interrupted: the server stopped before the job finished; submit it again")
        srv.jobs = JobRunner(srv.store, config.db, workers=config.workers, kind=config.pool)
        yield
        srv.jobs.shutdown(wait=False)

    app = FastAPI(title="bgmid review server", version="1", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Identify music, monitor programmes, review and export their cue sheets. "
                  "Every /api call needs 'Authorization: Bearer TOKEN'.")
    app.state.server = srv
    app.add_middleware(BodyLimit, max_bytes=int(config.max_upload_mb * 1_000_000))
    app.add_middleware(TokenGate, tokens=config.tokens, open_paths=AUDIO_ROUTES)  # before any body is read
    app.add_middleware(SecurityHeaders)  # outermost: on every response, the 401s and 413s included
    if config.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=config.cors_origins, allow_methods=["*"],
                           allow_headers=["Authorization", "Content-Type", "X-Reviewer"])
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    return app
