"""Archives: many programmes through :class:`bgmid.monitor.Monitor` on a pool of workers, resumably.

Each programme is one task: decode, separate, fingerprint, match and build its cues, exactly as ``bgmid monitor``
does for it alone (the same :class:`~bgmid.monitor.Monitor`, built by :func:`make_monitor`), so a batch gives
the same cue sheets. The driver writes each programme's ``<name>.json`` and ``<name>.csv``
(:func:`bgmid.cuesheet.write_json` / :func:`~bgmid.cuesheet.write_csv`: the ``monitor`` contract) and then a
marker ``.batch/<name>.json`` holding the programme's *fingerprint*: the sha1 of its bytes, the monitoring
options and the index's identity. A re-run skips every programme whose marker matches, so an interrupted batch
resumes and a changed file, option or index is done again. Programmes without a marker are hashed as they are
handed out (while the workers run), not all before the first one starts.

Workers are processes of a local pool (:class:`concurrent.futures.ProcessPoolExecutor`) or Ray tasks
(:class:`bgmid.cluster.RayExecutor`): the driver sees ``submit() -> Future`` either way, one code path. A worker
opens the index and loads the separator once, on its first programme, and keeps them for the next ones
(:func:`_worker_monitor`: a per-process cache; Ray reuses its worker processes), so nothing large travels per
task: the task carries a path and the options. On Ray with a separator, separation is a stage of its own
(``BatchJob.stage``, :func:`bgmid.cluster.separator_stage`): actors holding the model (one per GPU where the
cluster has GPUs) separate each block for the programmes' CPU tasks, which decode, fingerprint and match.
The index must be at the same path on every node (a shared folder), like the programmes.

A programme that fails (an exception, or its worker process killed) is tried again, ``retries`` times, and then
reported; the batch goes on. An unreadable programme (its header does not parse) is reported at once.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bgmid.alterations import Alteration
from bgmid.errors import BgmidError
from bgmid.fingerprint.presets import QueryOptions
from bgmid.index.base import Store
from bgmid.monitor import Monitor, MonitorConfig, MonitorResult
from bgmid.paths import shown

#: Folder (inside the output folder) of the per-programme completion markers.
MARKERS = ".batch"


@dataclass(frozen=True)
class BatchJob:
    """What every programme of a batch is monitored with (picklable: it travels with each task)."""

    db: str  #: index folder, at the same path on every worker
    separator: str = "none"  #: a concrete separator name or checkpoint (``auto`` resolved by :func:`concrete`)
    device: str = "cpu"  #: torch device of the separator
    preset: str | None = None  #: the preset the index must have (None: the index's)
    config: MonitorConfig = field(default_factory=MonitorConfig)
    options: QueryOptions = field(default_factory=QueryOptions)
    alteration: Alteration | str | None = "auto"
    #: the separation stage (:class:`bgmid.cluster.RemoteSeparator`: the separator runs on Ray actors, a GPU's
    #: where there are GPUs) instead of a separator loaded in each worker; None: the worker loads ``separator``
    stage: Any = field(default=None, compare=False)

    def options_key(self) -> dict:
        """Everything that changes a programme's cues (the device does not, by intent)."""
        alt = asdict(self.alteration) if isinstance(self.alteration, Alteration) else self.alteration
        return {"separator": self.separator, "preset": self.preset, "config": asdict(self.config),
                "options": asdict(self.options), "alteration": alt}


def concrete(job: BatchJob) -> BatchJob:
    """``separator="auto"`` made definite once in the driver (the shipped default model when its weights are
    installed, else none), so every worker runs the same separator and the reason is printed once."""
    if job.separator != "auto":
        return job
    import importlib.util
    from dataclasses import replace

    from bgmid.separation.registry import DEFAULT_MODEL, resolve_separator, shipped_weights

    if shipped_weights(DEFAULT_MODEL).exists() and importlib.util.find_spec("torch") is not None:
        return replace(job, separator=DEFAULT_MODEL)
    resolve_separator("auto", command="batch")  # None, with the one line saying why
    return replace(job, separator="none")


def make_monitor(store: Store, separator: Any, job: BatchJob) -> Monitor:
    """The one place a batch builds its :class:`Monitor` (``bgmid monitor`` builds the same one)."""
    name = "none" if separator is None else getattr(separator, "name", job.separator)
    return Monitor(store, separator, job.config, job.options, separator_name=name, alteration=job.alteration)


#: Per-process cache: the open index, separator and monitor of the last job this worker ran.
_WORKER: dict[str, Any] = {}


def _worker_monitor(job: BatchJob) -> Monitor:
    """This process's monitor for ``job``: the index is opened and the separator loaded on the first programme
    only (a worker runs many programmes)."""
    stage = None if job.stage is None else job.stage.key
    key = json.dumps({"db": job.db, "device": job.device, "stage": stage, **job.options_key()}, sort_keys=True,
                     default=str)
    if _WORKER.get("key") != key:
        if "store" in _WORKER:
            _WORKER.pop("store").close()
        store, monitor = _open_monitor(job)
        _WORKER.update(key=key, store=store, monitor=monitor)
    return _WORKER["monitor"]


def _open_monitor(job: BatchJob) -> tuple[Store, Monitor]:
    """The index opened and the monitor of ``job`` built on it (the caller closes the store)."""
    from bgmid.index import open_index
    from bgmid.separation.registry import resolve_separator

    store = open_index(job.db, preset=job.preset)
    try:
        sep = job.stage or resolve_separator(job.separator, job.device, command="batch")
        return store, make_monitor(store, sep, job)
    except BaseException:
        store.close()
        raise


def warm_worker(job: BatchJob) -> None:
    """Open the index and load the separator in a worker before its first programme (a worker task)."""
    _worker_monitor(job)


def run_programme(job: BatchJob, path: str) -> MonitorResult:
    """Monitor one programme (a worker's task). The result travels back whole; the driver writes it."""
    return _worker_monitor(job).run(path)


# -- inputs, names, fingerprints -------------------------------------------------------------------------


def expand_inputs(inputs: Sequence[str], lists: Sequence[str] = ()) -> list[str]:
    """Programme paths from files, folders (walked recursively, audio/video extensions) and list files (one
    path a line, ``#`` comments; ``@list.txt`` among the inputs or ``--list``), in order, each once."""
    from bgmid.audio import iter_audio_files

    items: list[str] = []
    for raw in list(inputs) + [f"@{x}" for x in lists]:
        if raw.startswith("@"):
            src = Path(raw[1:])
            try:
                lines = src.read_text(encoding="utf-8", errors="surrogateescape").splitlines()
            except OSError as exc:
                raise BgmidError(f"{shown(src)}: cannot read the list file ({exc.strerror}).") from None
            base = src.parent
            for line in lines:
                line = line.strip()
                if line and not line.startswith("#"):
                    items.append(str(Path(line) if Path(line).is_absolute() else base / line))
        else:
            if not os.path.lexists(raw):
                raise BgmidError(f"{shown(raw)}: no such file or folder. Check the path.")
            items.append(raw)
    out: list[str] = []
    seen: set[str] = set()
    for p in iter_audio_files(items):
        key = os.path.abspath(p)
        if key not in seen:
            seen.add(key)
            out.append(str(p))
    return out


def output_names(paths: Sequence[str]) -> list[str]:
    """One output name per programme: its file stem, made unique (``stem-2``, ...) when stems repeat."""
    names: list[str] = []
    used: set[str] = set()
    for p in paths:
        stem = Path(p).stem or "programme"
        name, k = stem, 1
        while name in used:
            k += 1
            name = f"{stem}-{k}"
        used.add(name)
        names.append(name)
    return names


def index_identity(db: str) -> dict:
    """What identifies the index's content for the fingerprints: its tracks, postings and commit generation."""
    from bgmid.index import open_index

    with open_index(db) as store:
        s = store.stats()
        return {"tracks": s["tracks"], "postings": s["postings"], "generation": getattr(store, "generation", None)}


def programme_fingerprint(path: str, job: BatchJob, index: dict) -> str:
    """sha1 over the programme's bytes, the options that change its cues and the index's identity."""
    import hashlib

    from bgmid.hashing import file_digest

    key = json.dumps({"file": file_digest(path, "sha1"), "job": job.options_key(), "index": index}, sort_keys=True,
                     default=str)
    return hashlib.sha1(key.encode()).hexdigest()


# -- the driver ------------------------------------------------------------------------------------------


@dataclass
class ProgrammeOutcome:
    path: str
    name: str
    status: str  #: ``done``, ``skipped`` (already done with the same fingerprint) or ``failed`` (``pending`` in flight)
    duration_s: float = 0.0
    cues: int = 0
    attempts: int = 0
    elapsed_s: float = 0.0  #: worker seconds of the successful attempt
    error: str = ""


@dataclass
class BatchReport:
    outcomes: list[ProgrammeOutcome]
    wall_s: float
    workers: int
    engine: str  #: ``local`` (process pool) or ``ray``

    def summary(self) -> dict:
        done = [o for o in self.outcomes if o.status == "done"]
        failed = [o for o in self.outcomes if o.status == "failed"]
        hours = sum(o.duration_s for o in done) / 3600.0
        return {
            "programmes": len(self.outcomes),
            "done": len(done),
            "skipped": sum(o.status == "skipped" for o in self.outcomes),
            "failed": len(failed),
            "hours": round(hours, 4),
            "cues": sum(o.cues for o in done),
            "retries": sum(max(0, o.attempts - 1) for o in self.outcomes),
            "wall_s": round(self.wall_s, 2),
            "x_real_time": round(hours * 3600.0 / self.wall_s, 2) if self.wall_s > 0 and done else 0.0,
            "workers": self.workers,
            "engine": self.engine,
            "failures": [{"programme": shown(o.path), "attempts": o.attempts, "error": o.error} for o in failed],
        }


def _marker(out: Path, name: str) -> Path:
    return out / MARKERS / f"{name}.json"


def _finished(out: Path, name: str, fingerprint: str) -> dict | None:
    """The marker of a programme finished with this fingerprint whose outputs are still there, else None."""
    try:
        m = json.loads(_marker(out, name).read_text())
    except (OSError, ValueError):
        return None
    if m.get("fingerprint") != fingerprint:
        return None
    if not ((out / f"{name}.json").is_file() and (out / f"{name}.csv").is_file()):
        return None
    return m


def _write_outputs(out: Path, name: str, res: MonitorResult, fingerprint: str) -> None:
    """The cue sheets first, the marker last: a marker always means both outputs are complete."""
    from bgmid.cuesheet import _atomic_write, write_csv, write_json

    write_json([res], out / f"{name}.json")
    write_csv([res], out / f"{name}.csv")
    (out / MARKERS).mkdir(exist_ok=True)
    marker = {"programme": shown(res.programme), "fingerprint": fingerprint, "duration_s": res.duration_s,
              "cues": len(res.cues), "elapsed_s": res.elapsed_s}
    _atomic_write(_marker(out, name), json.dumps(marker) + "\n")


class LocalPool:
    """A process pool that comes back after a worker is killed (a killed worker breaks a
    :class:`ProcessPoolExecutor` for good: :meth:`renew` replaces it)."""

    def __init__(self, workers: int):
        self.workers = workers
        self.pool = ProcessPoolExecutor(max_workers=workers)

    def submit(self, fn: Callable, *args: Any) -> Future:
        return self.pool.submit(fn, *args)

    def renew(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.pool = ProcessPoolExecutor(max_workers=self.workers)

    def pids(self) -> list[int]:
        """The worker processes' ids (for tests that kill one)."""
        return [p.pid for p in (self.pool._processes or {}).values()]

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        self.pool.shutdown(wait=wait, cancel_futures=cancel_futures)


class HeadStart:
    """The driver's own programmes while an embedded Ray cluster starts.

    ``ray.init`` takes ~2.5-4 s on this 2-core machine, during which Ray's own processes use about half the
    CPU and the driver nothing, and each worker then spends ~1 s importing bgmid and opening the index
    (measured: docs/scale.md). A head start monitors programmes (those without a marker, in order, one after
    another) meanwhile, until :meth:`stop`: :func:`run_batch` calls it once its workers are warm and takes the
    programmes claimed by then as in flight (``started``), outside the workers' slots; it writes their outputs
    like any other's and sends a failed one to the workers.

    The programmes run in a process of their own, forked here before Ray is imported: a thread of the driver
    shares its interpreter lock with ``import ray`` and ``ray.init`` (measured: its first programme took
    3.3 s there against ~1 s). A daemon thread hands them over one at a time.
    """

    def __init__(self, job: BatchJob, paths: Sequence[str], out: str | os.PathLike):
        names = output_names(paths)
        self._todo = [p for p, n in zip(paths, names, strict=True) if not _marker(Path(out), n).exists()]
        self._lock = threading.Lock()
        self._stopped = False
        #: programme -> future of its result, for every programme claimed so far
        self.started: dict[str, Future] = {}
        if self._todo:
            self._pool = ProcessPoolExecutor(max_workers=1)
            first = self._claim()  # the first at once: a caller that never stops the head start still gets one
            running = self._pool.submit(run_programme, job, first)  # forks now, before Ray is imported
            threading.Thread(target=self._work, args=(job, first, running), name="bgmid-head-start",
                             daemon=True).start()

    def _claim(self) -> str | None:
        """The next programme to monitor here (its future in :attr:`started`), or None once stopped."""
        with self._lock:
            if self._stopped or not self._todo:
                return None
            path = self._todo.pop(0)
            self.started[path] = Future()
            return path

    def stop(self) -> dict[str, Future]:
        """Claim no more programmes; the claimed ones (running or done), path -> future."""
        with self._lock:
            self._stopped = True
            return dict(self.started)

    def _work(self, job: BatchJob, path: str | None, running: Future) -> None:
        try:
            while path is not None:
                fut = self.started[path]
                fut.set_running_or_notify_cancel()
                try:
                    fut.set_result(running.result())
                except Exception as exc:  # retried on the workers (a dead head process too)
                    fut.set_exception(exc)
                    if isinstance(exc, BrokenProcessPool):
                        self.stop()
                        return
                path = self._claim()
                if path is not None:
                    running = self._pool.submit(run_programme, job, path)
        finally:
            self._pool.shutdown(wait=False)


def run_batch(
    job: BatchJob,
    paths: Sequence[str],
    out: str | os.PathLike,
    executor: Any,
    workers: int,
    retries: int = 2,
    on_progress: Callable[[ProgrammeOutcome], None] | None = None,
    on_start: Callable[[float, int], None] | None = None,
    engine: str = "local",
    started: HeadStart | dict[str, Future] | None = None,
) -> BatchReport:
    """Monitor every programme of ``paths`` on ``executor`` (``submit(fn, *args) -> Future``; a
    :class:`LocalPool` or a :class:`~bgmid.cluster.RayExecutor`) with at most ``workers`` in flight; write the
    outputs under ``out``. ``on_start(total_s, to_do)`` is called once the headers are read (total seconds of
    the programmes still to do), ``on_progress`` after every programme settles. ``started``: programmes
    already being monitored elsewhere (path -> future of its :class:`MonitorResult`), taken as in flight besides
    the workers' ``workers`` slots; or a :class:`HeadStart`, stopped once the workers are warm (it monitors
    programmes until then) and its claimed programmes taken so."""
    from bgmid.audio import AudioError, info

    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ident = index_identity(job.db)
    outcomes: list[ProgrammeOutcome] = []
    todo: list[tuple[ProgrammeOutcome, str | None]] = []  # fingerprint None: hashed when handed out
    head = started if isinstance(started, HeadStart) else None
    started = {} if head is not None else dict(started or {})
    warming: list[Future] = []
    in_flight: dict[Future, tuple[ProgrammeOutcome, str]] = {}
    elsewhere: set[Future] = set()  # of in_flight, the programmes of ``started``: they hold no worker slot

    def settle(o: ProgrammeOutcome) -> None:
        if on_progress is not None:
            on_progress(o)

    def unreadable(o: ProgrammeOutcome, exc: Exception) -> None:
        o.status = "failed"
        o.error = str(exc) if isinstance(exc, AudioError) else f"{shown(o.path)}: cannot read ({exc})"

    for path, name in zip(paths, output_names(paths)):
        o = ProgrammeOutcome(path, name, "failed")
        outcomes.append(o)
        try:
            o.duration_s = info(path).duration_s
            # only a programme with a marker needs its bytes hashed now (done already?); the others are hashed
            # as they are handed out, while the workers run, not all before the first one starts
            fp = programme_fingerprint(path, job, ident) if _marker(out, name).exists() else None
        except (AudioError, OSError) as exc:
            unreadable(o, exc)
            continue
        m = None if fp is None else _finished(out, name, fp)
        if m is not None:
            o.status, o.duration_s, o.cues = "skipped", float(m.get("duration_s", o.duration_s)), int(m["cues"])
            continue
        o.status = "pending"
        todo.append((o, fp))
        if len(todo) == 1:  # workers start (imports, index, separator) while the rest's headers are read
            warming = [executor.submit(warm_worker, job) for _ in range(workers)]
    if head is not None:  # the driver monitors programmes itself until the workers are ready for theirs
        wait(warming)
        started = head.stop()
    for i in reversed(range(len(todo))):
        o, fp = todo[i]
        if o.path in started:  # in flight elsewhere: it holds no worker slot
            del todo[i]
            o.attempts += 1
            fut = started.pop(o.path)
            in_flight[fut] = (o, fp or programme_fingerprint(o.path, job, ident))
            elsewhere.add(fut)
    for o in outcomes:
        if o.status == "failed":
            settle(o)
    if on_start is not None:
        pending = [o for o, _ in todo] + [o for o, _ in in_flight.values()]  # in flight: the head start's
        on_start(sum(o.duration_s for o in pending), len(pending))
    # longest programmes first (popped from the end): the batch does not end waiting on one long programme
    # while the other workers idle; results do not depend on the order
    queue = sorted(reversed(todo), key=lambda t: t[0].duration_s)

    broken = False  # the pool is broken (a killed worker) until it is renewed

    def submit(o: ProgrammeOutcome, fp: str | None) -> None:
        nonlocal broken
        if fp is None:
            try:
                fp = programme_fingerprint(o.path, job, ident)
            except OSError as exc:
                unreadable(o, exc)
                return settle(o)
        o.attempts += 1
        try:
            in_flight[executor.submit(run_programme, job, o.path)] = (o, fp)
        except BrokenProcessPool as exc:  # a worker died between programmes (e.g. while warming up)
            broken = True
            failed_attempt(o, fp, exc)

    def failed_attempt(o: ProgrammeOutcome, fp: str, exc: BaseException) -> None:
        o.error = f"{type(exc).__name__}: {exc}".strip()
        if o.attempts <= retries:
            queue.append((o, fp))  # tried again next (before the rest)
        else:
            o.status = "failed"
            settle(o)

    while queue or in_flight:
        while queue and len(in_flight) - len(elsewhere) < workers and not broken:
            submit(*queue.pop())
        done, _ = wait(list(in_flight), return_when=FIRST_COMPLETED) if in_flight else (set(), set())
        for fut in done:
            o, fp = in_flight.pop(fut)
            elsewhere.discard(fut)
            try:
                res = fut.result()
            except BrokenProcessPool as exc:
                broken = True
                failed_attempt(o, fp, exc)
                continue
            except Exception as exc:  # the programme failed on its worker: retried, then reported
                failed_attempt(o, fp, exc)
                continue
            _write_outputs(out, o.name, res, fp)
            o.status, o.duration_s, o.cues, o.elapsed_s, o.error = "done", res.duration_s, len(res.cues), \
                res.elapsed_s, ""
            settle(o)
        if broken:
            if not hasattr(executor, "renew"):
                raise BrokenProcessPool("the executor's workers died and it cannot be renewed")
            for fut, (o, fp) in list(in_flight.items()):  # the whole pool went down with the killed worker
                if fut in elsewhere:
                    continue
                in_flight.pop(fut)
                failed_attempt(o, fp, BrokenProcessPool("a worker process died"))
            executor.renew()
            broken = False
    return BatchReport(outcomes, time.perf_counter() - t0, workers, engine)
