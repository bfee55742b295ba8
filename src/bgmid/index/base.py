"""The storage interface. Matching code talks only to :class:`Store`, so the embedded on-disk index
(:mod:`bgmid.index.local`) and a future server backend are interchangeable."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from bgmid.fingerprint.presets import Preset


@dataclass
class TrackMeta:
    """What the index knows about one reference track."""

    title: str
    path: str
    duration_s: float
    content_hash: str  #: sha1 of the file's bytes: the same file is never indexed twice
    n_hashes: int = 0
    extra: dict = field(default_factory=dict)  #: any further metadata (album, composer, ISRC, ...)
    track_id: int = -1  #: assigned by the store


@runtime_checkable
class Store(Protocol):
    """A fingerprint index: track metadata plus hash postings (hash -> (track, time))."""

    preset: Preset

    def add_track(self, meta: TrackMeta, hashes: np.ndarray, times: np.ndarray) -> int:
        """Store one track's hashes (uint32) and anchor times (frames) durably; return its track id."""
        ...

    def lookup(
        self, hashes: np.ndarray, max_postings: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every posting of every query hash, vectorised: (query_row, track_id, track_time_frames).
        Hashes with more than ``max_postings`` postings (stop words) are skipped."""
        ...

    def tracks(self) -> Sequence[TrackMeta]:
        """All live (not removed) tracks."""
        ...

    def track(self, track_id: int) -> TrackMeta:
        """One track's metadata."""
        ...

    def has_content(self, content_hash: str) -> bool:
        """Whether a file with these bytes is already indexed."""
        ...

    def remove(self, track_ids: Sequence[int]) -> int:
        """Remove tracks; return how many were removed."""
        ...

    def stats(self) -> dict:
        """Tracks, hours, postings, bytes on disk."""
        ...

    def close(self) -> None: ...
