"""Indexing a music library: walk files, skip ones already indexed, fingerprint in parallel, store.

Memory stays flat however many hours are indexed: files are fingerprinted in streamed blocks
(:func:`~bgmid.fingerprint.landmarks.fingerprint_file`), at most ``2 * jobs`` files are in flight, and every
finished track is committed to the store at once (so an interrupted run keeps everything but the tracks in
flight, and a re-run skips what is already there by content hash).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from bgmid.audio import AudioError, iter_audio_files
from bgmid.fingerprint.landmarks import Landmarks, fingerprint_file
from bgmid.fingerprint.presets import Preset
from bgmid.index.base import Store, TrackMeta

#: Tracks between tiered compactions during a run.
COMPACT_EVERY = 32


@dataclass
class IndexReport:
    added: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  #: already in the index (same bytes)
    failed: list[tuple[str, str]] = field(default_factory=list)  #: (path, reason)


def file_sha1(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """sha1 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha1()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_title(path: str | os.PathLike) -> tuple[str, dict]:
    """Title and other tags from the file's metadata; the file name when it has no title tag."""
    import av

    extra: dict = {}
    try:
        with av.open(str(path)) as c:
            tags = {k.lower(): v for k, v in (c.metadata or {}).items()}
            if c.streams.audio:
                tags.update({k.lower(): v for k, v in (c.streams.audio[0].metadata or {}).items()})
    except Exception:
        tags = {}
    for k in ("artist", "album", "composer", "isrc", "date", "genre"):
        if tags.get(k):
            extra[k] = str(tags[k])
    return str(tags.get("title") or Path(path).stem), extra


def _work(path: str, preset: Preset) -> tuple[Landmarks, float, str, dict]:
    lm, dur = fingerprint_file(path, preset)
    title, extra = read_title(path)
    return lm, dur, title, extra


def index_paths(
    store: Store,
    paths: Iterable[str | os.PathLike],
    jobs: int = 1,
    on_progress: Callable[[str, str], None] | None = None,
    min_duration_s: float = 1.0,
) -> IndexReport:
    """Index every audio file under ``paths`` into ``store``; failures are collected, not raised.

    ``on_progress(path, status)`` is called once per file with status ``added``, ``skipped`` or ``failed``.
    """
    report = IndexReport()
    files = [str(p) for p in iter_audio_files(list(paths))]
    in_flight: dict[Future, tuple[str, str]] = {}
    seen: set[str] = set()

    def note(path: str, status: str) -> None:
        if on_progress:
            on_progress(path, status)

    def finish(fut: Future) -> None:
        path, digest = in_flight.pop(fut)
        try:
            lm, dur, title, extra = fut.result()
        except AudioError as exc:
            report.failed.append((path, str(exc)))
            note(path, "failed")
            return
        except Exception as exc:  # a broken file must not stop the run
            report.failed.append((path, f"{path}: {exc.__class__.__name__}: {exc}"))
            note(path, "failed")
            return
        if dur < min_duration_s or len(lm) == 0:
            report.failed.append((path, f"{path}: too short or silent ({dur:.2f} s, {len(lm)} landmarks); not indexed"))
            note(path, "failed")
            return
        store.add_track(TrackMeta(title, os.path.abspath(path), dur, digest, extra=extra), lm.hashes, lm.times)
        report.added.append(path)
        note(path, "added")
        if len(report.added) % COMPACT_EVERY == 0 and hasattr(store, "compact"):
            store.compact()  # tiered merges as we go: a long run keeps few segments (and few open files)

    executor = ProcessPoolExecutor(max_workers=jobs) if jobs > 1 else None
    try:
        for path in files:
            try:
                digest = file_sha1(path)
            except OSError as exc:
                report.failed.append((path, f"{path}: cannot read ({exc.strerror}); check permissions"))
                note(path, "failed")
                continue
            if digest in seen or store.has_content(digest):
                report.skipped.append(path)
                note(path, "skipped")
                continue
            seen.add(digest)
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
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
        if hasattr(store, "compact"):
            store.compact()
    return report
