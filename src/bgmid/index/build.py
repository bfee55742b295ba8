"""Indexing a music library: walk files, skip ones already indexed, fingerprint in parallel, store.

Memory stays flat however many hours are indexed: files are fingerprinted in streamed blocks
(:func:`~bgmid.fingerprint.landmarks.fingerprint_file`), at most ``2 * jobs`` files are in flight, and every
finished track is committed to the store at once (so an interrupted run keeps everything but the tracks in
flight, and a re-run skips what is already there by content hash).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field

from bgmid.audio import AudioError, iter_audio_files, require_regular_file
from bgmid.audio import read_tags as read_title  # moved to bgmid.audio; the old name stays
from bgmid.fingerprint.landmarks import Landmarks, fingerprint_file
from bgmid.fingerprint.presets import Preset
from bgmid.hashing import file_digest
from bgmid.index.base import Store, TrackMeta
from bgmid.paths import shown

#: Tracks between tiered compactions during a run.
COMPACT_EVERY = 32


@dataclass
class IndexReport:
    added: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  #: already in the index (same bytes)
    failed: list[tuple[str, str]] = field(default_factory=list)  #: (path, reason)
    warnings: list[tuple[str, str]] = field(default_factory=list)  #: (path, message): indexed, with a caveat


def _work(path: str, preset: Preset) -> tuple[Landmarks, float, str, dict, list[str]]:
    """Fingerprint and tags of one file (runs in a worker process with ``--jobs``). Returns ``(landmarks,
    duration_s, title, extra tags, notes)``: ``notes`` are the :class:`~bgmid.audio.AudioWarning` messages
    (a truncated or damaged file, indexed on what could be read), for the report; other warnings are shown
    as usual."""
    import warnings

    from bgmid.audio import AudioWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", AudioWarning)
        lm, dur = fingerprint_file(path, preset)
        title, extra = read_title(path)
    notes = []
    for w in caught:
        if issubclass(w.category, AudioWarning):
            notes.append(str(w.message))
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return lm, dur, title, extra, notes


def index_paths(
    store: Store,
    paths: Iterable[str | os.PathLike],
    jobs: int = 1,
    on_progress: Callable[[str, str], None] | None = None,
    min_duration_s: float = 1.0,
    executor=None,
) -> IndexReport:
    """Index every audio file under ``paths`` into ``store``; failures are collected, not raised.

    ``on_progress(path, status)`` is called once per file with status ``added``, ``skipped`` or ``failed``.
    ``executor``: where files are fingerprinted (anything with ``submit(fn, *args) -> Future``, e.g. a
    :class:`bgmid.cluster.RayExecutor`; default a process pool of ``jobs`` workers when ``jobs`` > 1), with at
    most ``2 * jobs`` files in flight. Only this process writes: every result comes back here and is committed
    through the store's single writer.
    """
    report = IndexReport()
    files = [str(p) for p in iter_audio_files(list(paths))]
    in_flight: dict[Future, tuple[str, str]] = {}
    #: content hash -> None while in flight, "" once added, else the failure reason (a byte-identical copy of
    #: a file that failed fails with it rather than passing for "already indexed")
    outcome: dict[str, str | None] = {}
    waiting: dict[str, list[str]] = {}  # content hash -> copies found while the first one was in flight

    def note(path: str, status: str) -> None:
        if on_progress:
            on_progress(path, status)

    def fail(path: str, reason: str) -> None:
        report.failed.append((path, reason))
        note(path, "failed")

    def settle(digest: str, reason: str) -> None:
        outcome[digest] = reason
        for dup in waiting.pop(digest, []):
            if reason:
                fail(dup, f"{shown(dup)}: same bytes as {shown(path_of[digest])}, which failed")
            else:
                report.skipped.append(dup)
                note(dup, "skipped")

    path_of: dict[str, str] = {}

    def finish(fut: Future) -> None:
        path, digest = in_flight.pop(fut)
        try:
            res = fut.result()
        except AudioError as exc:
            fail(path, str(exc))
            return settle(digest, str(exc))
        except Exception as exc:  # a broken file must not stop the run
            fail(path, f"{shown(path)}: {exc.__class__.__name__}: {exc}")
            return settle(digest, str(exc))
        lm, dur, title, extra = res[:4]
        for msg in res[4] if len(res) > 4 else []:
            report.warnings.append((path, msg))
        if dur < min_duration_s or len(lm) == 0:
            why = f"{shown(path)}: too short or silent ({dur:.2f} s, {len(lm)} landmarks); not indexed"
            fail(path, why)
            return settle(digest, why)
        store.add_track(TrackMeta(title, os.path.abspath(path), dur, digest, extra=extra), lm.hashes, lm.times)
        report.added.append(path)
        note(path, "added")
        settle(digest, "")
        if len(report.added) % COMPACT_EVERY == 0 and hasattr(store, "compact"):
            store.compact()  # tiered merges as we go: a long run keeps few segments (and few open files)

    own_executor = executor is None and jobs > 1
    if own_executor:
        executor = ProcessPoolExecutor(max_workers=jobs)
    try:
        for path in files:
            try:
                require_regular_file(path)  # a FIFO or device would block the hashing below forever
                digest = file_digest(path, "sha1")  # the index names tracks by sha1 (bgmid.hashing)
            except AudioError as exc:
                fail(path, str(exc))
                continue
            except OSError as exc:
                fail(path, f"{shown(path)}: cannot read ({exc.strerror}); check permissions")
                continue
            if digest in outcome:
                if outcome[digest] is None:
                    waiting.setdefault(digest, []).append(path)
                elif outcome[digest]:
                    fail(path, f"{shown(path)}: same bytes as {shown(path_of[digest])}, which failed")
                else:
                    report.skipped.append(path)
                    note(path, "skipped")
                continue
            if store.has_content(digest):
                report.skipped.append(path)
                note(path, "skipped")
                continue
            outcome[digest], path_of[digest] = None, path
            if executor is None:
                fut: Future = Future()
                try:
                    fut.set_result(_work(path, store.preset))
                except Exception as exc:
                    fut.set_exception(exc)
                in_flight[fut] = (path, digest)
                finish(fut)
                continue
            in_flight[executor.submit(_work, path, store.preset)] = (path, digest)
            while len(in_flight) >= 2 * jobs:
                done, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
                for f in done:
                    finish(f)
        while in_flight:
            done, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
            for f in done:
                finish(f)
    finally:
        if own_executor:
            executor.shutdown(wait=False, cancel_futures=True)
        if hasattr(store, "compact"):
            store.compact()
    return report
