"""Monitor jobs of the review server, run in a worker pool and tracked in the state file.

A job is one ``bgmid monitor`` run: :func:`run_monitor_job` opens the index, streams the programme through
:class:`bgmid.monitor.Monitor` built as for ``bgmid batch`` (:func:`bgmid.batch.make_monitor`: the same monitor
``bgmid monitor`` runs with its defaults), and saves the result as a programme whose cues await review. It is a plain
top-level function that talks to the rest of the server only through the SQLite state file (progress, result,
error), so the same code runs in a thread pool or in a process pool (``spawn``: a separate interpreter per worker,
so a crash or a stuck decoder cannot take the server down, and the cores are used in parallel).
"""

from __future__ import annotations

import multiprocessing
import os
import time
import uuid
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from bgmid.serve.store import ReviewStore, utc_now

__all__ = ["JobRunner", "MonitorOptions", "run_monitor_job"]


@dataclass(frozen=True)
class MonitorOptions:
    """What a client may choose for a monitor job (validated by the API before it is queued)."""

    separator: str = "auto"  #: ``auto``, ``none`` or a registry model name (never a file path)
    alteration: str = "auto"  #: as ``bgmid monitor --alteration``
    shifts: int = 1  #: STFT analysis phases


class ServerGone(RuntimeError):
    """The server that queued a job in a worker process has exited: the job stops."""


def run_monitor_job(data_dir: str, db: str, job_id: str, source: str, name: str, options: dict,
                    truth: list[dict] | None = None, server_pid: int | None = None) -> int | None:
    """Run one monitor job to its end; every outcome is written to the state file (``done`` with the new
    programme's id, or ``failed`` with a one-line reason). Returns the programme id, or None on failure.
    In a worker process (``server_pid`` is not this process), the job stops at its next progress report when
    the server process is gone (killed without shutting its pool down), instead of running on orphaned."""
    from bgmid.alterations import parse_alteration
    from bgmid.batch import BatchJob, make_monitor
    from bgmid.cuesheet import programme_title
    from bgmid.errors import BgmidError
    from bgmid.fingerprint.presets import QueryOptions
    from bgmid.index import open_index
    from bgmid.separation.registry import resolve_separator
    from bgmid.serve.media import playable

    store = ReviewStore(data_dir)
    opts = MonitorOptions(**options)
    in_worker = server_pid is not None and server_pid != os.getpid()

    def orphan() -> bool:
        return in_worker and os.getppid() != server_pid

    store.update_job(job_id, status="running", started=utc_now())
    try:
        from bgmid.audio import info

        duration = info(source).duration_s
        store.update_job(job_id, duration_s=round(duration, 3))
        sep = resolve_separator(opts.separator, command="serve")
        job = BatchJob(db=db, separator=opts.separator, options=QueryOptions(shifts=max(1, opts.shifts)),
                       alteration=parse_alteration(opts.alteration))
        last = [0.0]

        def tick(sec: float) -> None:  # at most a few writes a second
            if orphan():
                raise ServerGone("the server stopped before the job finished; submit it again")
            now = time.monotonic()
            if duration > 0 and now - last[0] >= 0.5:
                last[0] = now
                store.update_job(job_id, progress=round(min(0.99, sec / duration), 3))

        with open_index(db) as index:
            result = make_monitor(index, sep, job).run(source, on_progress=tick)
        audio = playable(source, Path(data_dir) / "cache", f"programme-{job_id}")
        return store.add_programme(result, source=source, audio=str(audio), name=name,
                                   title=programme_title(name), truth=truth, job_id=job_id)
    except (BgmidError, OSError, ServerGone) as exc:  # AudioError is a BgmidError: the message names the problem
        store.update_job(job_id, status="failed", error=str(exc), finished=utc_now())
    except Exception as exc:  # noqa: BLE001  (anything else still ends the job, with its type for the report)
        store.update_job(job_id, status="failed", error=f"{type(exc).__name__}: {exc}", finished=utc_now())
    return None


class JobRunner:
    """Queue monitor jobs on a pool of ``workers`` threads or processes (``kind``)."""

    def __init__(self, store: ReviewStore, db: str | os.PathLike, workers: int = 1, kind: str = "process"):
        if kind not in ("thread", "process"):
            raise ValueError(f"kind must be 'thread' or 'process', not {kind!r}")
        self.store = store
        self.db = str(db)
        self.kind = kind
        self.pool: Executor = (
            ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="bgmid-job") if kind == "thread"
            else ProcessPoolExecutor(max_workers=max(1, workers), mp_context=multiprocessing.get_context("spawn"))
        )

    def submit(self, source: str, name: str, options: MonitorOptions, truth: list[dict] | None = None) -> str:
        """Queue a job on ``source`` (a file under the data roots); returns the job id."""
        job_id = uuid.uuid4().hex[:16]
        self.store.add_job(job_id, "monitor", source, name, asdict(options))
        fut = self.pool.submit(run_monitor_job, str(self.store.path.parent), self.db, job_id, source, name,
                               asdict(options), truth, os.getpid())
        fut.add_done_callback(lambda f, j=job_id: self._finished(j, f))
        return job_id

    def _finished(self, job_id: str, fut: Future) -> None:
        """A worker that died (killed process, broken pool) never wrote its outcome: record it here."""
        exc = fut.exception() if not fut.cancelled() else None
        if fut.cancelled() or exc is not None:
            why = "cancelled (server stopped)" if fut.cancelled() else f"worker failed: {type(exc).__name__}: {exc}"
            job = self.store.job(job_id)
            if job is not None and job["status"] in ("queued", "running"):
                self.store.update_job(job_id, status="failed", error=why, finished=utc_now())

    def shutdown(self, wait: bool = True) -> None:
        """Stop: queued jobs are cancelled; with ``wait=False`` running worker processes are terminated too
        (their jobs are marked failed when the server starts again)."""
        procs = list((getattr(self.pool, "_processes", None) or {}).values())  # none in a thread pool
        self.pool.shutdown(wait=wait, cancel_futures=True)
        if not wait:
            for proc in procs:
                proc.terminate()
