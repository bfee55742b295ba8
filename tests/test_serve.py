"""``bgmid serve``'s API through the ASGI test client: the token on every call, the upload limit, paths outside
the data folders, identify = the CLI's JSON, concurrent monitor jobs, cue edits kept with their audit trail
across a restart, range requests on the audio, reviewed cue sheets. A 75 s generated programme, a few seconds."""

import csv
import io
import json
import os
import threading
import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("multipart")

import soundfile as sf  # noqa: E402
from conftest import SR, TRACK_S  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from serve_helpers import AUTH, CUES, make_app, write_programme  # noqa: E402
from signals import synth_music, synth_speech  # noqa: E402

from bgmid.cli import main  # noqa: E402


def wait_job(client, job_id: str, timeout_s: float = 60.0) -> dict:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        j = client.get(f"/api/jobs/{job_id}", headers=AUTH).json()
        if j["status"] in ("done", "failed"):
            return j
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} still {j['status']} after {timeout_s} s")


@pytest.fixture(scope="module")
def programme(tmp_path_factory):
    return write_programme(tmp_path_factory.mktemp("prog"))


def monitor_upload(client, wav, truth=None) -> dict:
    files = {"file": (wav.name, wav.read_bytes(), "audio/wav")}
    if truth is not None:
        files["truth"] = (truth.name, truth.read_bytes(), "text/csv")
    r = client.post("/api/monitor", headers=AUTH, files=files, data={"separator": "none"})
    assert r.status_code == 202, r.text
    return wait_job(client, r.json()["job"])


def test_every_api_call_needs_the_token(built_index, tmp_path):
    with TestClient(make_app(built_index, tmp_path / "data")) as c:
        calls = [("get", "/api/programmes"), ("get", "/api/programmes/1"), ("get", "/api/programmes/1/cuesheet.csv"),
                 ("get", "/api/programmes/1/cuesheet.json"), ("get", "/api/programmes/1/audit"),
                 ("get", "/api/tracks?q=track"), ("get", "/api/jobs"), ("get", "/api/jobs/abc"),
                 ("patch", "/api/programmes/1/cues/1"),
                 ("post", "/api/programmes/1/cues"), ("post", "/api/monitor"), ("post", "/api/identify"),
                 ("get", "/api/programmes/1/audio"), ("get", "/api/tracks/1/audio")]
        for method, path in calls:
            for headers in ({}, {"Authorization": "Bearer wrong-token"}, {"Authorization": "test-token-123"}):
                r = getattr(c, method)(path, headers=headers)
                assert r.status_code == 401, (method, path, headers, r.status_code)
        assert c.get("/api/tracks?q=track03", headers=AUTH).json()[0]["title"] == "track03"
        # the pages and the API description are public and self-contained: nothing loaded from elsewhere
        for page in ("/", "/docs", "/static/app.js", "/static/docs.js"):
            r = c.get(page)
            assert r.status_code == 200
            assert "//cdn" not in r.text and 'src="http' not in r.text and "href=\"http" not in r.text
            assert "<script>" not in r.text  # no inline script: the CSP allows only this server's files
            assert r.headers["content-security-policy"].startswith("default-src 'self'")
        assert c.get("/api/programmes").headers["x-content-type-options"] == "nosniff"
        paths = c.get("/openapi.json").json()["paths"]
        assert {"/api/identify", "/api/monitor", "/api/jobs/{job_id}", "/api/programmes/{pid}/cues/{n}"} <= set(paths)
        assert "access-control-allow-origin" not in c.get("/", headers={"Origin": "http://evil.example"}).headers


def test_no_body_is_read_without_the_token(built_index, tmp_path):
    import asyncio

    app = make_app(built_index, tmp_path / "data")
    read, sent = [], []

    async def receive():
        read.append(1)
        return {"type": "http.request", "body": b"x" * 1000, "more_body": False}

    async def send(msg):
        sent.append(msg)

    scope = {"type": "http", "method": "POST", "path": "/api/identify", "raw_path": b"/api/identify",
             "query_string": b"", "headers": [(b"content-type", b"multipart/form-data; boundary=x"),
                                               (b"content-length", b"1000")],
             "http_version": "1.1", "scheme": "http", "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 1)}
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 401 and not read


def test_uploads_over_the_limit_get_413(built_index, tmp_path):
    with TestClient(make_app(built_index, tmp_path / "data", max_upload_mb=0.05)) as c:
        big = b"\0" * 80_000
        r = c.post("/api/identify", headers=AUTH, files={"file": ("big.wav", big)})
        assert r.status_code == 413
        # a body without Content-Length (chunked) is cut off while it streams in
        r = c.post("/api/monitor", headers={**AUTH, "Content-Type": "multipart/form-data; boundary=x"},
                   content=iter([b"--x\r\n", big, b"\r\n--x--\r\n"]))
        assert r.status_code == 413
        assert not any((tmp_path / "data" / "uploads").iterdir())  # nothing of them kept


def test_paths_outside_the_data_folders_are_refused(built_index, music_dir, programme, tmp_path):
    data, other = tmp_path / "data", tmp_path / "more"
    other.mkdir()
    (other / "show.wav").write_bytes(programme[0].read_bytes())
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.wav").write_bytes(programme[0].read_bytes())
    with TestClient(make_app(built_index, [data, other])) as c:
        os.symlink(outside / "secret.wav", data / "link.wav")  # a symlink inside a root pointing outside it
        os.symlink(outside, data / "linkdir")
        refused = ["../outside/secret.wav", "uploads/../../outside/secret.wav", str(outside / "secret.wav"),
                   "link.wav", "linkdir/secret.wav", str(data / "linkdir" / "secret.wav"), "/etc/passwd",
                   f"{other}/../outside/secret.wav", str(music_dir / "track03.flac"), "/"]
        for p in refused:
            r = c.post("/api/monitor", headers=AUTH, data={"path": p, "separator": "none"})
            assert r.status_code == 403, (p, r.status_code, r.text)
        assert c.post("/api/monitor", headers=AUTH, data={"path": "nope.wav"}).status_code == 404
        ok = c.post("/api/monitor", headers=AUTH, data={"path": str(other / "show.wav"), "separator": "none"})
        assert ok.status_code == 202
        assert wait_job(c, ok.json()["job"])["status"] == "done"
        # a client's file name is never a path: it lands in a fresh folder under uploads/ with a harmless name
        r = c.post("/api/monitor", headers=AUTH, data={"separator": "none"},
                   files={"file": ("../../../evil name.wav", programme[0].read_bytes())})
        job = wait_job(c, r.json()["job"])
        assert job["status"] == "done" and job["source"] == "evil_name.wav"
        assert len(list((data / "uploads").glob("*/evil_name.wav"))) == 1
        assert not (tmp_path / "evil name.wav").exists()
        # the separator is a name, never a file to load
        r = c.post("/api/monitor", headers=AUTH, data={"path": "show.wav", "separator": "/etc/passwd"})
        assert r.status_code == 400


def test_identify_gives_the_cli_json(built_index, tmp_path, capsys):
    x = synth_music(106, TRACK_S, SR)[int(14.0 * SR): int(26.0 * SR)] + 0.3 * synth_speech(3, 12.0, SR)
    clip = tmp_path / "clip.wav"
    sf.write(clip, x, SR)
    assert main(["identify", "--db", str(built_index), "--json", "--top", "2", "--separator", "none", str(clip)]) == 0
    cli = json.loads(capsys.readouterr().out)
    assert cli["matches"][0]["title"] == "track06"
    with TestClient(make_app(built_index, tmp_path / "data")) as c:
        r = c.post("/api/identify", headers=AUTH, files={"file": ("clip.wav", clip.read_bytes(), "audio/wav")},
                   data={"separator": "none", "top": "2"})
        assert r.status_code == 200
        assert r.json() == {**cli, "query": "clip.wav"}
        bad = c.post("/api/identify", headers=AUTH, files={"file": ("bad.wav", b"RIFF not audio")},
                     data={"separator": "none"}).json()
        assert bad["matches"] == [] and bad["error"] and str(tmp_path) not in bad["error"]
    assert not any((tmp_path / "data" / "uploads").iterdir())  # the clips are not kept


def _csv(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def test_concurrent_jobs_edits_audit_and_restart(built_index, programme, tmp_path):
    wav, truth = programme
    data = tmp_path / "data"
    (data / "in").mkdir(parents=True)
    (data / "in" / "show2.wav").write_bytes(wav.read_bytes())
    with TestClient(make_app(built_index, data, workers=2)) as c:
        jobs: list = []

        def submit(kind: str) -> None:
            if kind == "upload":
                r = c.post("/api/monitor", headers=AUTH, data={"separator": "none"},
                           files={"file": (wav.name, wav.read_bytes()), "truth": (truth.name, truth.read_bytes())})
            else:
                r = c.post("/api/monitor", headers=AUTH, data={"path": "in/show2.wav", "separator": "none"})
            jobs.append(r.json()["job"])

        threads = [threading.Thread(target=submit, args=(k,)) for k in ("upload", "path", "path")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        done = [wait_job(c, j) for j in jobs]
        assert [j["status"] for j in done] == ["done"] * 3
        assert all(j["progress"] == 1.0 and j["duration_s"] == 75.0 and j["programme_id"] for j in done)
        assert len({j["programme_id"] for j in done}) == 3
        listed = c.get("/api/jobs", headers=AUTH).json()
        assert sorted(j["id"] for j in listed) == sorted(jobs) and {j["source"] for j in listed} == {"show.wav",
                                                                                                     "show2.wav"}
        progs = c.get("/api/programmes", headers=AUTH).json()
        assert len(progs) == 3 and {p["cues"] for p in progs} == {len(CUES)}
        pid = next(j["programme_id"] for j in done if j["name"] == "show.wav")
        prog = c.get(f"/api/programmes/{pid}", headers=AUTH).json()
        assert [q["title"] for q in prog["cues"]] == [f"track{i:02d}" for i, *_ in CUES]
        assert len(prog["truth"]) == len(CUES) and len(prog["levels"]["level_db"]) == 75
        url = f"/api/programmes/{pid}/cues"
        # concurrent edits by two reviewers on different cues all land, each with its audit row
        edits = [(1, {"status": "rejected"}, "ann"), (2, {"programme_start_s": "00:00:28.000"}, "bob"),
                 (3, {"status": "accepted"}, "ann"), (2, {"usage": "featured"}, "bob")]

        def edit(n, body, who):
            assert c.patch(f"{url}/{n}", headers={**AUTH, "X-Reviewer": who}, json=body).status_code == 200

        threads = [threading.Thread(target=edit, args=e) for e in edits]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        t01 = c.get("/api/tracks?q=track01", headers=AUTH).json()[0]["track_id"]
        r = c.post(url, headers=AUTH, json={"track_id": t01, "programme_start_s": 71.0,
                                            "programme_end_s": "00:01:14.5", "track_start_s": 1.0})
        assert r.status_code == 201 and r.json()["n"] == 4
        assert c.patch(f"{url}/2", headers=AUTH, json={"programme_start_s": 50.0}).status_code == 422  # in > out
        assert c.patch(f"{url}/9", headers=AUTH, json={"status": "accepted"}).status_code == 404
        assert c.patch(f"{url}/1", headers=AUTH, json={"status": "maybe"}).status_code == 422
        assert c.patch(f"{url}/1", headers=AUTH, json={"track_id": 999}).status_code == 422
        assert c.patch(f"{url}/1", headers=AUTH, json={}).status_code == 422
        assert c.patch(f"{url}/1", headers=AUTH, json={"programme_end_s": "1:xx"}).status_code == 422
        before_restart = c.get(f"/api/programmes/{pid}", headers=AUTH).json()["cues"]
        # another programme: a cue given another track takes that track's title and the reviewer's word
        other = next(j["programme_id"] for j in done if j["programme_id"] != pid)
        t06 = c.get("/api/tracks?q=track06", headers=AUTH).json()[0]["track_id"]
        r = c.patch(f"/api/programmes/{other}/cues/3", headers=AUTH, json={"track_id": t06})
        assert r.status_code == 200
        assert (r.json()["title"], r.json()["score"], r.json()["confidence"], r.json()["status"]) == \
            ("track06", 0, 1.0, "accepted")
        assert r.json()["programme_start_s"] == c.get(f"/api/programmes/{other}", headers=AUTH).json()["cues"][2][
            "programme_start_s"]
    # a new server on the same data folder: everything the reviewers did is there
    with TestClient(make_app(built_index, data)) as c:
        cues = c.get(f"/api/programmes/{pid}", headers=AUTH).json()["cues"]
        strip = ("track_audio_url",)
        assert [{k: v for k, v in q.items() if k not in strip} for q in cues] == \
            [{k: v for k, v in q.items() if k not in strip} for q in before_restart]
        assert [q["status"] for q in cues] == ["rejected", "accepted", "accepted", "accepted"]
        c2 = cues[1]
        assert c2["programme_start_s"] == 28.0 and c2["usage"] == "featured" and c2["tc_in"] == "00:00:28.000"
        # the in point moved by (28 - detected in) and the track time with it
        assert abs((c2["track_start_s"] - 28.0) - (CUES[1][3] - CUES[1][1])) < 0.3
        audit = c.get(f"/api/programmes/{pid}/audit", headers=AUTH).json()
        assert len(audit) == 5
        assert sorted((a["cue_n"], a["action"], a["who"]) for a in audit) == \
            [(1, "reject", "ann"), (2, "edit", "bob"), (2, "edit", "bob"), (3, "accept", "ann"), (4, "add", "tester")]
        rej = next(a for a in audit if a["action"] == "reject")
        assert rej["before"]["status"] == "pending" and rej["after"]["status"] == "rejected"
        assert rej["token_name"] == "tester" and rej["at"].endswith("Z")
        moved = next(a for a in audit if a["cue_n"] == 2 and a["after"]["programme_start_s"] == 28.0)
        assert moved["before"]["programme_start_s"] != 28.0
        # the reviewed cue sheet: the rejected cue left out, the edit and the added cue in, renumbered
        sheet = c.get(f"/api/programmes/{pid}/cuesheet.json", headers=AUTH).json()
        assert [(q["seq"], q["title"]) for q in sheet["cues"]] == [(1, "track03"), (2, "track05"), (3, "track01")]
        assert sheet["cues"][0]["tc_in"] == "00:00:28.000" and sheet["cues"][2]["tc_out"] == "00:01:14.500"
        rows = _csv(c.get(f"/api/programmes/{pid}/cuesheet.csv", headers=AUTH).text)
        assert [r["title"] for r in rows] == ["track03", "track05", "track01"]
        assert rows[0]["programme_start_s"] == "28.0" and rows[0]["usage"] == "featured"


def test_audio_is_served_with_range_requests_and_signed_urls(built_index, programme, tmp_path):
    with TestClient(make_app(built_index, tmp_path / "data")) as c:
        job = monitor_upload(c, programme[0])
        prog = c.get(f"/api/programmes/{job['programme_id']}", headers=AUTH).json()
        whole = programme[0].read_bytes()
        r = c.get(prog["audio_url"], headers={"Range": "bytes=1000-1999"})  # signed URL: no token needed
        assert r.status_code == 206 and r.content == whole[1000:2000]
        assert r.headers["content-range"] == f"bytes 1000-1999/{len(whole)}"
        assert c.get(prog["audio_url"].replace("sig=", "sig=0")).status_code == 401
        other = prog["audio_url"].replace(f"/programmes/{prog['id']}/", "/programmes/999/")
        assert c.get(other).status_code == 401  # a signature is for its own path only
        # track00 is an extensionless OGG: served as a FLAC copy the browser can play, ranges included
        t0 = next(q for q in prog["cues"] if q["title"] == "track00")
        r = c.get(t0["track_audio_url"], headers={"Range": "bytes=0-3"})
        assert r.status_code == 206 and r.content == b"fLaC" and r.headers["content-type"] == "audio/flac"
        full = c.get(f"/api/tracks/{t0['track_id']}/audio", headers=AUTH)
        y, sr = sf.read(io.BytesIO(full.content))
        assert abs(len(y) / sr - TRACK_S) < 0.1


def test_jobs_left_unfinished_by_a_stopped_server_are_failed(built_index, tmp_path):
    from bgmid.serve.store import ReviewStore

    data = tmp_path / "data"
    ReviewStore(data).add_job("j1", "monitor", "/x.wav", "x.wav", {})
    with TestClient(make_app(built_index, data)) as c:
        j = c.get("/api/jobs/j1", headers=AUTH).json()
        assert j["status"] == "failed" and "interrupted" in j["error"]
        r = c.post("/api/monitor", headers=AUTH, data={"separator": "none"}, files={"file": ("x.wav", b"junk")})
        j = wait_job(c, r.json()["job"])
        assert j["status"] == "failed" and "x.wav" in j["error"]


def test_process_pool_runs_a_job(built_index, programme, tmp_path):
    with TestClient(make_app(built_index, tmp_path / "data", pool="process")) as c:
        job = monitor_upload(c, programme[0])
        assert job["status"] == "done", job
        cues = c.get(f"/api/programmes/{job['programme_id']}", headers=AUTH).json()["cues"]
        assert [q["title"] for q in cues] == [f"track{i:02d}" for i, *_ in CUES]


def test_token_file_and_cli_errors(tmp_path, built_index, capsys):
    from bgmid.errors import BgmidError
    from bgmid.serve.security import Tokens, safe_name

    f = tmp_path / "tokens.txt"
    f.write_text("# reviewers\nann aaaaaaaaaa\nbbbbbbbbbb\n")
    t = Tokens.from_file(f)
    assert t.name_of("Bearer aaaaaaaaaa") == "ann" and t.name_of("Bearer bbbbbbbbbb") == "token2"
    assert t.name_of("Bearer aaaaaaaaa") is None and t.name_of(None) is None
    f.write_text("ann short\n")
    with pytest.raises(BgmidError, match="at least 8"):
        Tokens.from_file(f)
    assert safe_name("../../etc/passwd") == "passwd" and safe_name("..") == "upload"
    assert safe_name("Émission 1.MP4") == "_mission_1.MP4"
    assert main(["serve", "--db", str(tmp_path / "nope")]) == 2
    assert "no index there" in capsys.readouterr().err
    assert main(["serve", "--db", str(built_index), "--token", "short"]) == 2
