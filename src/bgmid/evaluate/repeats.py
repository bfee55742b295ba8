"""The repeat criterion: when a right-track answer at another offset still counts as the true place.

Why it exists: the corpus is game music, which loops whole sections. A query cut from one pass of a loop holds
the music of the other passes too, so the fingerprint cannot tell them apart and the matcher rightly reports the
pass with the most votes (even a clean query: two passes that differ only in the mix get the same landmarks).
Counting that as wrong would measure the corpus, not the matcher; counting any right-track answer as right would
hide real offset errors.

The criterion: two places of a track hold the same music when at least :data:`REPEAT_OVERLAP` of the landmarks
of one (the track's own ``p2`` landmarks over the query's length, at :data:`REPEAT_SR`) recur at the same
relative times (+-1 frame) in the other. It is checked on the reference track, never on the query, so speech or
separation damage in a query cannot change the verdict, and it does not depend on the preset under test.
Measured on the demo corpus: looped passes share 0.10-0.37 of their landmarks, other places 0.000, so the
threshold sits in a wide gap. Every sample-identical repeat passes it (normalised cross-correlation of the two
places >= 0.9: all the repeats of the identification benchmark), and so do passes that differ only in ways the
fingerprint does not see (correlation 0.3-0.9: 172 of the 354 answers that reports/shipped credits as repeats,
clean queries among them), which a correlation test would count as wrong places.

One definition for every figure that credits repeats: ``bgmid evaluate`` (the ``correct`` counts of the report,
:mod:`bgmid.evaluate.identification`) and ``benchmarks/identification.py``
(``top1_offset_0.1s_or_identical_repeat``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["REPEAT_OVERLAP", "REPEAT_PRESET", "REPEAT_SR", "RepeatCheck", "is_repeat", "same_music"]

#: Fraction of one place's landmarks that must recur in the other (see the module docstring).
REPEAT_OVERLAP = 0.05
#: The fingerprint the check compares with, whatever preset is evaluated, and the rate of its audio (a cached
#: corpus rate: the check reads the int16 cache directly).
REPEAT_PRESET = "p2"
REPEAT_SR = 16000


def _landmarks(x: np.ndarray, start_s: float, n: int) -> set[tuple[int, int]]:
    """(hash, frame) pairs of ``x[start : start + n]`` (``x`` at :data:`REPEAT_SR`, int16 or float)."""
    from bgmid.fingerprint import fingerprint, get_preset

    a = max(0, int(round(start_s * REPEAT_SR)))
    y = np.asarray(x[a:a + n], dtype=np.float32)
    if x.dtype == np.int16:
        y = y * (1.0 / 32768.0)
    lm = fingerprint(y, get_preset(REPEAT_PRESET))
    return set(zip(lm.hashes.tolist(), lm.times.tolist()))


def is_repeat(x: np.ndarray, true_s: float, found_s: float, length_s: float, tolerance_s: float = 0.0) -> bool:
    """Whether track audio ``x`` (at :data:`REPEAT_SR`; an int16 cache array or float) holds the same music
    at ``found_s`` as the ``length_s`` seconds at ``true_s`` (see the module docstring), give or take
    ``tolerance_s``: a figure that allows its offsets that much at the true place allows it at a repeat too
    (default: +-1 frame)."""
    return same_music(x, true_s, x, found_s, length_s, tolerance_s)


def same_music(x: np.ndarray, x_s: float, y: np.ndarray, y_s: float, length_s: float,
               tolerance_s: float = 0.0) -> bool:
    """:func:`is_repeat` across two tracks: whether ``y`` at ``y_s`` holds the music of ``x`` at ``x_s``
    (both at :data:`REPEAT_SR`). A library can hold one piece twice (an edit and its extended version): on
    the demo corpus, colobot's ``Infinite.ogg`` holds the music of ``music008.ogg`` twice, sharing 0.16 and
    0.23 of its landmarks at those places, 0.000 elsewhere."""
    from bgmid.fingerprint import get_preset

    n = int(round(length_s * REPEAT_SR))
    a, b = _landmarks(x, x_s, n), _landmarks(y, y_s, n)
    k = max(1, int(round(tolerance_s / get_preset(REPEAT_PRESET).frame_s)))
    shared = max(len(a & {(h, t + d) for h, t in b}) for d in range(-k, k + 1)) if a and b else 0
    return shared >= REPEAT_OVERLAP * max(1, min(len(a), len(b)))


class RepeatCheck:
    """:func:`is_repeat` on the corpus's own tracks (their :data:`REPEAT_SR` cache), memoised per (track, true
    offset, reported offset) to the centisecond."""

    def __init__(self, root: str | os.PathLike, length_s: float, tolerance_s: float = 0.0):
        self.root, self.length_s, self.tolerance_s = Path(root), float(length_s), float(tolerance_s)
        self.memo: dict[tuple[str, float, float], bool] = {}

    def __call__(self, item_id: str, true_s: float, found_s: float) -> bool:
        from bgmid.data.corpus import load_item

        key = (item_id, round(true_s, 2), round(found_s, 2))
        if key not in self.memo:
            self.memo[key] = is_repeat(load_item(self.root, item_id, REPEAT_SR), true_s, found_s, self.length_s,
                                       self.tolerance_s)
        return self.memo[key]

    def elsewhere(self, item_id: str, true_s: float, other_id: str, other_s: float) -> bool:
        """Whether another track, ``other_id`` at ``other_s``, holds the music of ``item_id`` at ``true_s``
        (:func:`same_music`). Not part of the repeat criterion: figures that credit it say so."""
        from bgmid.data.corpus import load_item

        key = (f"{item_id}>{other_id}", round(true_s, 2), round(other_s, 2))
        if key not in self.memo:
            self.memo[key] = same_music(load_item(self.root, item_id, REPEAT_SR), true_s,
                                        load_item(self.root, other_id, REPEAT_SR), other_s, self.length_s,
                                        self.tolerance_s)
        return self.memo[key]
