"""The storage interface. Matching code talks only to :class:`Store`, so the embedded on-disk index
(:mod:`bgmid.index.local`) and a future server backend are interchangeable."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from bgmid.fingerprint.presets import Preset

#: Stop words: a hash with more postings than this many times the index's mean postings per hash (over the
#: whole hash space of the preset) is skipped at query time, and its postings are not even stored. Such hashes
#: (low notes, short pairs that all music shares) carry almost no information, cost most of the lookup time
#: and feed chance agreement between different music. Measured on the corpus (179 tracks, 5.3 M hashes, mean
#: 1.26 per hash of p1's 2**22): the limit is 200; skipping such hashes cut a 12 s query from 235 ms to 17 ms
#: and the best chance score of never-indexed music from 31 to 15, while every noisy positive was still found;
#: not storing them saves 29 % of the postings.
STOP_FACTOR = 160.0

#: The limit never goes below this many postings (small indexes have tiny means).
STOP_FLOOR = 50


def stop_word_limit(n_hashes: int, preset: Preset) -> int:
    """Postings above which a hash is a stop word, for an index holding ``n_hashes`` hashes of ``preset``."""
    from bgmid.fingerprint.landmarks import hash_bits

    return max(STOP_FLOOR, int(STOP_FACTOR * n_hashes / 2 ** sum(hash_bits(preset))))


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
        Hashes with more than ``max_postings`` postings in the whole index, and the index's stop words (whose
        postings a store need not keep, see :data:`STOP_FACTOR`), are skipped."""
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

    @property
    def n_hashes(self) -> int:
        """Hashes extracted from the live tracks (stored or not): the basis of :func:`stop_word_limit`."""
        ...

    def stats(self) -> dict:
        """Tracks, hours, postings, bytes on disk."""
        ...

    def close(self) -> None: ...
