"""The query side: analyse a signal, look its hashes up, score (track, time offset), report the best tracks.

One pipeline serves a single query (:class:`Matcher`, ``bgmid identify``) and the sliding windows of a programme
(:mod:`bgmid.monitor`) alike:

1. :func:`analyse` -- landmarks of one or several signals on one time line (the unprocessed mix and the
   separated music, each at ``QueryOptions.shifts`` sub-hop STFT phases), pooled by :func:`pool_landmarks`:
   their votes for the true (track, offset) add up, while chance votes do not line up.
2. :func:`lookup` -- every posting of the query's hashes, skipping the index's stop words
   (:func:`stop_word_limit`), as :class:`Postings` (query row, track, query frame, offset).
3. :func:`score_offsets` -- per track, the best offset and the distinct query landmarks aligned on it (+-1 frame),
   with the first and last aligned query frame: a :class:`Votes`. :func:`vote` is 2 and 3 for one query.
4. :func:`accept` / :func:`confidence` -- the calibrated decision (:data:`CALIBRATION`).

A reference track that really plays in the query produces many hashes whose reference time minus query time is
the same constant (the offset); chance coincidences spread over all offsets. So the evidence for a track is the
largest number of hashes that agree on one offset (allowing +-1 frame of jitter). A match is reported only
when that count clears a threshold that chance practically never reaches (see :data:`CALIBRATION`): a query
with no indexed music returns nothing, rather than the least bad guess.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np

from bgmid.audio import resample
from bgmid.fingerprint.landmarks import Landmarks, LandmarkStream, fingerprint
from bgmid.fingerprint.presets import Preset, QueryOptions
from bgmid.index.base import STOP_FACTOR, Store
from bgmid.index.base import stop_word_limit as index_stop_word_limit
from bgmid.paths import shown
from bgmid.separation.registry import Separator

__all__ = [
    "CALIBRATION",
    "STOP_FACTOR",
    "Match",
    "Matcher",
    "Postings",
    "Votes",
    "accept",
    "analyse",
    "best_offsets",
    "confidence",
    "lookup",
    "near_counts",
    "pool_landmarks",
    "score_offsets",
    "stop_word_limit",
    "vote",
]

#: Decision and confidence model, fitted by ``benchmarks/query_tuning.py`` on the real corpus (12 s clips;
#: positives clean / white noise at 0 dB / speech at -10 dB; negatives speech-only and never-indexed music).
#: Chance agreement between *different* music (same tempo, key and instruments, as in one game's soundtrack)
#: reaches ~25 aligned hashes, speech alone < 10; so a match needs either ``strong`` aligned hashes, or at
#: least ``min_aligned`` and ``min_ratio`` times the best other track's count (a real match stands out from
#: every other track; look-alike music does not). ``min_aligned`` was raised from 12 to 16 after never-indexed
#: music of the grown corpus reached 12-15 aligned hashes with a high ratio once stop words were skipped, and
#: from 16 to 24 when 3 of 100 never-indexed clips (look-alike music of the same games) reached 16-23 with a
#: ratio >= 3 against the 179-track index (a 1,000-track index lowers chance ratios; there the change cost 2.7
#: points of found noisy queries and 4 of speech-masked ones, see benchmarks/README.md).
#: ``certain`` aligned hashes (twice the most that chance reached on any negative) is a match whatever the
#: runner-up: two library tracks that share material (a game's "menu" theme and its 11-minute "menu_enhanced"
#: version) both align with such a query, and the ratio rule would otherwise reject the right answer.
#: Confidence = sigmoid(w0 + w1 ln(score) + w2 ln(ratio)), the ratio taken as at least ``min_ratio`` for
#: ``certain`` matches (a runner-up that shares the material does not make this track less present).
CALIBRATION = {"strong": 25, "strong_ratio": 1.5, "min_aligned": 24, "min_ratio": 3.0, "certain": 50,
               "w": (-17.05, 2.38, 13.71)}



@dataclass
class Match:
    """One identified track in a query."""

    track_id: int
    path: str
    title: str
    track_offset_s: float  #: position in the reference track that corresponds to the query's time 0
    query_start_s: float  #: first matching landmark in the query
    query_end_s: float  #: end of the last matching landmark's frame
    score: int  #: hashes aligned on the winning offset
    confidence: float  #: calibrated probability that the match is right, 0..1
    #: how the query differs from the track (see :class:`bgmid.alterations.Alteration`): playback speed,
    #: tempo (pitch kept) and transposition (tempo kept); ``track_offset_s`` is in the track's own time line
    speed: float = 1.0
    tempo: float = 1.0
    pitch_semitones: float = 0.0

    def to_dict(self) -> dict:
        """The JSON contract's match object; ``path`` as valid UTF-8 (undecodable bytes of a file name as
        U+FFFD, see :func:`bgmid.paths.shown`)."""
        d = asdict(self)
        d["path"] = shown(self.path)
        for k in ("track_offset_s", "query_start_s", "query_end_s"):
            d[k] = round(d[k], 3)
        d["confidence"] = round(d["confidence"], 4)
        d["speed"], d["tempo"] = round(self.speed, 5), round(self.tempo, 5)
        d["pitch_semitones"] = round(self.pitch_semitones, 3)
        return d


def confidence(score: np.ndarray | float, ratio: np.ndarray | float | None = None) -> np.ndarray | float:
    """Calibrated probability that a match is correct, from its aligned-hash ``score`` and its ``ratio`` to
    the best other track's score (default: the decision rule's ``min_ratio``)."""
    c = CALIBRATION
    ratio = c["min_ratio"] if ratio is None else ratio
    ratio = np.where(np.asarray(score) >= c["certain"], np.maximum(ratio, c["min_ratio"]), ratio)
    w0, w1, w2 = c["w"]
    z = w0 + w1 * np.log(np.maximum(score, 1.0)) + w2 * np.log(np.maximum(ratio, 1.0))
    out = 1.0 / (1.0 + np.exp(-z))
    return float(out) if np.ndim(out) == 0 else out


def accept(score: np.ndarray | int, ratio: np.ndarray | float, min_aligned: int | None = None) -> np.ndarray | bool:
    """The match decision (see :data:`CALIBRATION`); ``min_aligned`` overrides the moderate-evidence floor."""
    c = CALIBRATION
    floor = c["min_aligned"] if not min_aligned else min_aligned
    strong = max(c["strong"], floor)
    certain = max(c["certain"], floor)
    score, ratio = np.asarray(score), np.asarray(ratio)
    return (
        (score >= certain)
        | ((score >= strong) & (ratio >= c["strong_ratio"]))
        | ((score >= floor) & (ratio >= c["min_ratio"]))
    )


@dataclass
class Postings:
    """The index's answer to a query's landmarks: parallel int64 arrays over postings."""

    rows: np.ndarray  #: query landmark row
    tids: np.ndarray  #: track id
    qt: np.ndarray  #: query frame of the landmark
    off: np.ndarray  #: offset, frames: track frame - query frame

    def __len__(self) -> int:
        return int(self.rows.size)

    @classmethod
    def empty(cls) -> Postings:
        e = np.zeros(0, np.int64)
        return cls(e, e, e, e)

    def take(self, i: slice | np.ndarray) -> Postings:
        """The postings at ``i`` (a slice, a mask or indices)."""
        return Postings(self.rows[i], self.tids[i], self.qt[i], self.off[i])

    def __add__(self, other: Postings) -> Postings:
        """These postings followed by ``other``'s."""
        return Postings(*(np.concatenate([a, b]) for a, b in zip(
            (self.rows, self.tids, self.qt, self.off), (other.rows, other.tids, other.qt, other.off), strict=True)))


@dataclass
class Votes:
    """Per-track best offset from one query: parallel arrays, best track first."""

    track_ids: np.ndarray  #: int64
    offsets: np.ndarray  #: int64 frames (reference frame - query frame)
    scores: np.ndarray  #: int64 aligned hashes (within +-tolerance frames)
    q_first: np.ndarray  #: int64 first aligned query frame
    q_last: np.ndarray  #: int64 last aligned query frame (or the latest ``ends`` given to :func:`score_offsets`)
    #: the postings voted on: (query landmark row, track id, offset frames), for a later look at one track
    postings: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    #: per track, the distinct ids of its aligned landmarks (sorted int64), when :func:`score_offsets` made them
    aligned: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return int(self.track_ids.size)


def near_counts(tids: np.ndarray, offs: np.ndarray, tolerance: int = 1) -> np.ndarray:
    """For each posting, an upper bound of the count of any offset window (+-``tolerance``) it takes part in.

    Offsets are grouped in bins of ``2 * tolerance`` frames, so the postings of one track within
    +-``tolerance`` of one offset (at most ``2 * tolerance`` frames from each other) lie in a member's bin or
    its two neighbours. (track, bin)
    pairs are hashed into a count table (collisions only add counts, so the bound stays a bound) and each
    posting gets the count of its own and its two neighbouring bins. Linear time, no sort.
    """
    n = tids.size
    if n == 0:
        return np.zeros(0, np.int64)
    size = 1 << int(min(24, max(16, math.ceil(math.log2(4 * n)))))  # ~1/4 posting a slot: few collisions
    mask = size - 1
    width = max(1, 2 * tolerance)
    b = offs >> (width.bit_length() - 1) if width & (width - 1) == 0 else offs // width
    h = (tids * 0x9E3779B1 + b) & mask
    counts = np.bincount(h, minlength=size)
    return counts[h] + counts[(h - 1) & mask] + counts[(h + 1) & mask]


def best_offsets(
    tids: np.ndarray, offs: np.ndarray, top: int, tolerance: int = 1, min_count: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The offset histogram: per track, the offset (frames) with the most postings within +-``tolerance``.

    ``tids`` and ``offs`` are parallel int64 arrays over postings (track ids >= 0). Returns ``(tracks,
    offsets, counts)`` of the ``top`` best tracks, best first, leaving out tracks whose best count is below
    ``min_count``. Counts are of postings (a query landmark may count more than once); callers recount
    distinct landmarks.

    One sort of (track, offset) keys does it (a 12 s query against 1,000 tracks draws ~200,000 postings;
    numpy's SIMD sort takes ~2.5 ms for them): runs of equal keys are the histogram, neighbouring offsets of a
    track are neighbouring keys, and each track's keys are contiguous. With ``min_count`` > 1, postings that
    :func:`near_counts` proves unable to reach it are dropped first.
    """
    empty = np.zeros(0, np.int64)
    if min_count > 1 and tids.size:
        keep = near_counts(tids, offs, tolerance) >= min_count
        tids, offs = tids[keep], offs[keep]
    if tids.size == 0:
        return empty, empty, empty
    key = np.sort((tids << 32) + (offs + (1 << 31)))
    starts = np.concatenate([[0], np.flatnonzero(np.diff(key)) + 1])
    uk = key[starts]
    counts = np.diff(np.append(starts, key.size))
    smooth = counts.copy()
    for d in range(1, tolerance + 1):  # +-d frames of jitter: the key d above sits at most d places further on
        for j in range(1, d + 1):
            hit = np.flatnonzero(uk[j:] == uk[:-j] + d)
            smooth[hit] += counts[hit + j]
            smooth[hit + j] += counts[hit]
    ktrack = uk >> 32
    tstart = np.concatenate([[0], np.flatnonzero(np.diff(ktrack)) + 1])
    tend = np.append(tstart[1:], uk.size)
    tbest = np.maximum.reduceat(smooth, tstart)
    chosen = np.argsort(-tbest, kind="stable")[:top]
    chosen = chosen[tbest[chosen] >= min_count]
    tracks, offsets = np.empty(chosen.size, np.int64), np.empty(chosen.size, np.int64)
    for n, c in enumerate(chosen):  # a handful of tracks: each one's first key with its best count
        i = tstart[c] + int(np.argmax(smooth[tstart[c]:tend[c]]))
        tracks[n], offsets[n] = ktrack[i], (uk[i] & ((1 << 32) - 1)) - (1 << 31)
    return tracks, offsets, tbest[chosen]


def stop_word_limit(store: Store) -> int:
    """Postings above which a query hash is skipped in ``store`` (see :data:`bgmid.index.base.STOP_FACTOR`)."""
    return index_stop_word_limit(store.n_hashes, store.preset)


def lookup(store: Store, lm: Landmarks, max_postings: int | None = None) -> Postings:
    """Every posting of ``lm``'s hashes in ``store``, skipping stop words: hashes with more than ``max_postings``
    postings (default: the index's policy, :func:`stop_word_limit`) and those the index no longer stores.
    Landmark times may be on any frame grid (a programme's global frames, say): offsets are taken against them."""
    limit = stop_word_limit(store) if max_postings is None else max_postings
    rows, tids, ttimes = store.lookup(lm.hashes, max_postings=limit)
    if rows.size == 0:
        return Postings.empty()
    rows = np.asarray(rows, np.int64)
    qt = np.asarray(lm.times, np.int64)[rows]
    return Postings(rows, np.asarray(tids, np.int64), qt, np.asarray(ttimes, np.int64) - qt)


def score_offsets(
    p: Postings,
    top: int,
    tolerance: int = 1,
    min_score: int = 0,
    candidates: int | None = None,
    ids: np.ndarray | None = None,
    ends: np.ndarray | None = None,
) -> Votes:
    """The offset scorer: per track, its best offset (:func:`best_offsets`) and the distinct query landmarks
    aligned on it within +-``tolerance`` frames; the ``top`` tracks with at least ``min_score`` of them, best first.

    A hash repeated in the reference must not count twice, so the score counts distinct landmarks: ``ids``
    (parallel to the postings; default their query rows) name them. ``q_first``/``q_last`` are the first aligned
    query frame and the latest of ``ends`` (default: the query frames) over the aligned postings; ``aligned``
    holds each track's aligned ids. ``candidates`` tracks (default ``top``) are looked at by posting count
    before landmarks are counted. Used by :func:`vote` (one query) and :mod:`bgmid.monitor` (each window).
    """
    ids = p.rows if ids is None else ids
    ends = p.qt if ends is None else ends
    b_track, b_off, _ = best_offsets(p.tids, p.off, candidates or top, tolerance, min_count=min_score)
    found: list[tuple[int, int, int, int, int, np.ndarray]] = []
    for tr, o in zip(b_track, b_off, strict=True):  # a handful of tracks, not a hot loop
        sel = (p.tids == tr) & (np.abs(p.off - o) <= tolerance)
        a = np.unique(ids[sel])
        if a.size >= min_score:
            found.append((int(tr), int(o), int(a.size), int(p.qt[sel].min()), int(ends[sel].max()), a))
    found.sort(key=lambda r: -r[2])  # stable: of equal scores, the track with more postings first
    found = found[:top]
    cols = [np.array([r[k] for r in found], np.int64) for k in range(5)]
    return Votes(*cols, postings=(p.rows, p.tids, p.off), aligned=[r[5] for r in found])


def vote(
    store: Store,
    lm: Landmarks,
    top: int = 5,
    tolerance: int = 1,
    max_postings: int | None = None,
) -> Votes:
    """Count, per track, the hashes that agree on the best offset; return the ``top`` tracks
    (:func:`lookup` with the index's stop-word policy unless ``max_postings`` is given, then
    :func:`score_offsets`)."""
    p = lookup(store, lm, max_postings)
    if len(p) == 0:
        empty = np.zeros(0, np.int64)
        return Votes(empty, empty, empty, empty, empty)
    return score_offsets(p, top, tolerance)


def _offset_candidates(off: np.ndarray, fraction: float, limit: int = 64) -> np.ndarray:
    """Offsets (frames) whose +-1-smoothed count reaches ``fraction`` of the best, local maxima only (one per
    +-2 frames), at most ``limit``, best first. On the corpus, the true offset of loop-based music reached
    19-90 % of a phase-favoured repeat's count, and was not always among its 8 best offsets (a loop repeated
    60 times yields ~50 candidates). The default ``refine_fraction`` of 0.4 is a speed trade-off: at 0.25
    most queries were refined (median 38 ms against 1,000 tracks, 30 ms at 0.4) for the same offset accuracy
    on 150 queries."""
    if off.size == 0:
        return np.zeros(0, np.int64)
    u, c = np.unique(off, return_counts=True)
    span = np.arange(u[0] - 3, u[-1] + 4)
    h = np.zeros(span.size, np.int64)
    h[u - span[0]] = c
    sm = h.copy()
    sm[1:] += h[:-1]
    sm[:-1] += h[1:]
    peak = np.ones(sm.size, bool)
    for d in (1, 2):  # a local maximum within +-2 frames (ties: the first)
        peak[d:] &= sm[d:] > sm[:-d]
        peak[:-d] &= sm[:-d] >= sm[d:]
    idx = np.flatnonzero(peak & (sm >= fraction * sm.max()))
    idx = idx[np.argsort(-sm[idx], kind="stable")][:limit]
    return span[idx]


def _aligned(rows: np.ndarray, off: np.ndarray, at: int, tolerance: int = 1) -> int:
    """Distinct query landmarks whose offset (whole frames) is within ``tolerance`` frames of ``at``."""
    return int(np.unique(rows[np.abs(off - at) <= tolerance]).size)


def pool_landmarks(parts: Sequence[Landmarks]) -> Landmarks:
    """Union of landmarks on one time line; a (hash, time) found in several analyses counts once."""
    h = np.concatenate([p.hashes for p in parts]).astype(np.uint64)
    t = np.concatenate([p.times for p in parts]).astype(np.int64)
    if h.size == 0:
        return Landmarks(np.zeros(0, np.uint32), np.zeros(0, np.int32))
    key = np.unique((h << np.uint64(32)) | (t.astype(np.uint64) & np.uint64(0xFFFFFFFF)))
    return Landmarks((key >> np.uint64(32)).astype(np.uint32), (key & np.uint64(0xFFFFFFFF)).astype(np.int32))


def analyse(
    signals: Sequence[np.ndarray],
    preset: Preset,
    options: QueryOptions,
    phases: Sequence[int] | None = None,
    n_phases: int | None = None,
    peaks: list | None = None,
) -> Landmarks:
    """Query landmarks of ``signals`` (aligned analyses of one query at the preset's rate: the mix, the
    separated music), pooled on one time line (:func:`pool_landmarks`).

    Each signal is analysed from sample ``round(k * hop / n_phases)`` for each ``k`` in ``phases`` (default:
    all ``options.shifts`` phases); times stay on phase 0's frame grid, since a shift below one hop is within the
    +-1 frame tolerance. With ``options``' density and fanout factors (queries use more peaks and pairs than the
    index, so that the reference's sparser pairs are among theirs despite noise). ``peaks``: a list that gets
    each signal's phase-0 peaks (:class:`bgmid.alterations.QueryPeaks`), which the alteration search needs.
    """
    n = max(1, options.shifts) if n_phases is None else n_phases
    parts = []
    for k in range(n) if phases is None else phases:
        shift = int(round(k * preset.hop / n))
        for y in signals:
            kept: list | None = [] if k == 0 and peaks is not None else None
            parts.append(fingerprint(y[shift:], preset, options.density_factor, options.fanout_factor, kept))
            if kept:
                from bgmid.alterations import peaks_at

                peaks.append(peaks_at(*kept[0]))
    return pool_landmarks(parts)


#: An unaltered match whose aligned landmarks span less than this share of the query, or whose offset walks
#: by more than ``TEMPO_DRIFT`` per frame, is searched again for a tempo change. Time is the tolerant axis:
#: a query 3 % faster still matches unaltered, but only over the ~1.5 s where its walking offset stays within
#: +-1 frame of the winner, where unaltered music aligns over most of the query.
DRIFT_SPAN = 0.5
TEMPO_DRIFT = 0.0075


def _drifting(match: Match, votes: Votes, q_times: np.ndarray, query_s: float, window: int = 24) -> bool:
    """Whether an unaltered match looks like a tempo-changed query (see :data:`DRIFT_SPAN`)."""
    if query_s > 0 and (match.query_end_s - match.query_start_s) < DRIFT_SPAN * query_s:
        return True
    if votes.postings is None:
        return False
    rows, tids, off = votes.postings
    sel = tids == match.track_id
    qt = np.asarray(q_times, np.int64)[rows[sel]]
    off = off[sel]
    o = votes.offsets[list(votes.track_ids).index(match.track_id)]
    near = np.abs(off - o) <= window
    qt, off = qt[near], off[near]
    if qt.size < 20:
        return False
    slope, best, flat = _drift_line(qt, off)
    return abs(slope) >= TEMPO_DRIFT and best >= DRIFT_GAIN * flat


#: A walking offset must explain this many times the hashes the flat (unaltered) line does.
DRIFT_GAIN = 1.2


def _drift_line(qt: np.ndarray, off: np.ndarray, max_slope: float = 0.06, step: float = 0.0025
                ) -> tuple[float, int, int]:
    """The line ``off = slope * qt + c`` (frames) that the most postings lie on within +-1 frame, over slopes
    up to ``max_slope`` (a tempo change of that much): its slope, its count and the flat line's count.
    A Hough search rather than comparing the two halves' modes: the music under speech is often audible
    in one burst, whose own offset then sets both halves' modes (one sped-up clip, 3 %: 38 of the 126 nearby
    postings on one offset in 2 s, the rest walking 8 frames over 6 s)."""
    qt = np.asarray(qt, np.float64) - float(np.median(qt))
    slopes = np.arange(-max_slope, max_slope + step / 2, step)
    r = np.rint(off[None, :] - slopes[:, None] * qt[None, :]).astype(np.int64)
    r -= r.min()
    counts = np.zeros((slopes.size, int(r.max()) + 3), np.int64)
    np.add.at(counts, (np.repeat(np.arange(slopes.size), qt.size), r.ravel() + 1), 1)
    smooth = counts[:, :-2] + counts[:, 1:-1] + counts[:, 2:]
    per = smooth.max(axis=1)
    k = int(np.argmax(per))
    return float(slopes[k]), int(per[k]), int(per[np.argmin(np.abs(slopes))])


class Matcher:
    """Identify queries against a :class:`~bgmid.index.base.Store`."""

    def __init__(self, store: Store, options: QueryOptions | None = None):
        self.store = store
        self.preset = store.preset
        self.options = options or QueryOptions()
        self.max_postings = stop_word_limit(store)

    def landmarks(self, x: np.ndarray, sr: int) -> Landmarks:
        """Query landmarks of mono ``x`` at ``sr`` Hz with this matcher's query options (shifts pooled)."""
        return self._query_landmarks([resample(x, sr, self.preset.sample_rate)])

    def _query_landmarks(self, ys: Sequence[np.ndarray], peaks: list | None = None) -> Landmarks:
        """Pooled landmarks of signals at the preset's rate, at this matcher's ``shifts`` analysis phases
        (``peaks``: as :func:`analyse`'s)."""
        return analyse(ys, self.preset, self.options, peaks=peaks)

    def match_landmarks(self, lm: Landmarks, top: int = 1, min_aligned: int | None = None) -> list[Match]:
        """Matches for pooled landmarks, best first; empty when nothing passes :func:`accept`.

        Each candidate's ``ratio`` is its score over the best score of every *other* track, so the top track
        is compared with its strongest competitor, and a lower-ranked track can only be reported on evidence
        that needs no lead (``certain``): a track that loses to a rejected one must not take its place.
        """
        return self._match(lm, top, min_aligned)[0]

    def _match(self, lm: Landmarks, top: int, min_aligned: int | None) -> tuple[list[Match], Votes]:
        v = vote(self.store, lm, top=max(top, 1) + 1, max_postings=self.max_postings)
        fs = self.preset.frame_s
        out = []
        for n, (tr, o, s, q0, q1) in enumerate(zip(v.track_ids, v.offsets, v.scores, v.q_first, v.q_last)):
            if len(out) >= top:
                break
            others = np.delete(v.scores, n)
            ratio = float(s) / max(1.0, float(others.max()) if others.size else 1.0)
            if not accept(int(s), ratio, min_aligned or self.options.min_aligned):
                continue
            meta = self.store.track(int(tr))
            out.append(
                Match(
                    track_id=int(tr),
                    path=meta.path,
                    title=meta.title,
                    track_offset_s=float(o) * fs,
                    query_start_s=float(q0) * fs,
                    query_end_s=float(q1) * fs + self.preset.n_fft / self.preset.sample_rate,
                    score=int(s),
                    confidence=float(confidence(float(s), ratio)),
                )
            )
        return out, v

    def refine_offset(
        self,
        ys: Sequence[np.ndarray] | None,
        match: Match,
        votes: Votes,
        phase: Callable[[int], Landmarks] | None = None,
    ) -> Match:
        """Settle the track offset of ``match`` when its track aligns with the query at several offsets.

        Music that repeats itself (loops, choruses, a steady beat) aligns with the query wherever it repeats.
        The true offset should win, but the query's STFT frames fall at an arbitrary fraction of a hop from
        the reference's, and a frame grid half a hop off changes many hashes (peak times round the other
        way); a repeat a non-integer number of frames away can then align *better* than the truth. So when
        an offset other than the winner reaches ``QueryOptions.refine_fraction`` of its aligned count, the query is
        analysed again at ``refine_phases - 1`` further sub-hop phases and every candidate offset keeps its
        best count over all phases. ``ys``: the query signals at the preset's rate; or ``phase(k)``: the
        pooled landmarks of phase ``k`` (of ``refine_phases``) when the signals are not in memory (a streamed
        query, :meth:`identify_stream`). Costs nothing on unambiguous queries.
        """
        n_phases = self.options.refine_phases
        if n_phases <= 1 or votes.postings is None:
            return match
        rows, tids, off = votes.postings
        sel = tids == match.track_id
        rows, off = rows[sel], off[sel]
        cands = _offset_candidates(off, self.options.refine_fraction)
        if cands.size <= 1:
            return match
        best = np.array([_aligned(rows, off, c) for c in cands], np.int64)
        for k in range(1, n_phases):
            lm = phase(k) if phase is not None else analyse(ys, self.preset, self.options, [k], n_phases)
            p_k = lookup(self.store, lm, self.max_postings)
            mine = p_k.tids == match.track_id
            r_k, o_k = p_k.rows[mine], p_k.off[mine]
            # frame j of phase k starts k/n_phases of a hop after frame j of phase 0, so its offsets read
            # that much higher: count each candidate's +-1 window around the nearest whole frame
            shift = int(round(k / n_phases))
            best = np.maximum(best, [_aligned(r_k, o_k, c + shift) for c in cands])
        win = int(np.argmax(best))
        match.track_offset_s = float(cands[win]) * self.preset.frame_s
        match.score = max(match.score, int(best[win]))  # aligned hashes at the reported offset, best phase
        return match

    def identify(self, signals: np.ndarray | Sequence[np.ndarray], sr: int, top: int = 1) -> list[Match]:
        """Identify one query given as one signal or several aligned analyses of it (e.g. mix + separated).

        Unaltered first (the common case costs nothing more); when that finds nothing, the speed, tempo and
        pitch changes of :mod:`bgmid.alterations` are searched (``QueryOptions.alterations``). Short queries
        (``short_query_s``) are analysed more densely.
        """
        if isinstance(signals, np.ndarray) and signals.ndim == 1:
            signals = [signals]
        ys = [resample(s, sr, self.preset.sample_rate) for s in signals]
        o = self.options
        short = bool(ys) and ys[0].size < o.short_query_s * self.preset.sample_rate
        if short:
            o = replace(o, density_factor=o.density_factor * o.short_density, shifts=max(o.short_shifts, o.shifts))
        m = self if o is self.options else Matcher(self.store, o)
        peaks: list = []  # the search's query peaks, found by the unaltered analysis
        lm = m._query_landmarks(ys, peaks if o.alterations else None)
        matches, votes = m._match(lm, top, None)
        if matches:
            drifting = o.alterations and _drifting(matches[0], votes, lm.times, ys[0].size / self.preset.sample_rate)
            matches[0] = m.refine_offset(ys, matches[0], votes)
            if drifting:  # a tempo change must beat the unaltered match at its best phase
                altered = m._identify_altered(ys, top, tempo_only=True, beat=matches[0].score, peaks=peaks)
                if altered:
                    return altered
        elif o.alterations:
            matches = m._identify_altered(ys, top, peaks=peaks)
        return matches

    def _undone(self, ys: Sequence[np.ndarray], peaks, alt, fanout: int
                ) -> tuple[Landmarks, list[np.ndarray] | None]:
        """Query landmarks on the reference's scale under ``alt``, and the undone signals when there are any.
        A pure speed change is undone exactly, by resampling the audio and analysing it again (on the corpus
        at -10 dB: 33 of 40 found, against 30 of 40 from scaled peaks); tempo and pitch changes by scaling
        the peaks (:func:`bgmid.alterations.undo`; no signal)."""
        from bgmid.alterations import undo

        if alt.kind == "speed":
            import soxr

            sr = self.preset.sample_rate
            slowed = [soxr.resample(y, sr, sr * alt.speed, quality="HQ").astype(np.float32) for y in ys]
            return self._query_landmarks(slowed), slowed
        return undo(peaks, alt, self.preset, fanout), None

    def _identify_altered(self, ys: Sequence[np.ndarray], top: int, tempo_only: bool = False,
                          beat: int = 0, peaks: Sequence | None = None) -> list[Match]:
        """Search speed/tempo/pitch alterations, verify the best candidates with the full match decision.

        The query's peaks are found once (every signal, pooled); :func:`bgmid.alterations.search` proposes the
        three best (track, alteration) pairs from rare hashes; each one's factor is settled on a 0.1 % grid
        (:func:`bgmid.alterations.settle`), then verified with all query hashes undone at it, and the best
        accepted match wins; an exactly undone (resampled) winner has its offset refined among the track's
        repeats like an unaltered match. Reported query times are the query's own; the track offset is the
        track's. ``tempo_only``: an unaltered match drifts (:func:`_drifting`), so only tempo changes are
        searched, on a 1 % grid, and the result must align more than ``beat`` hashes (else nothing is returned).
        ``peaks``: each signal's peaks from the unaltered analysis (:func:`analyse`), else found here.
        """
        from bgmid.alterations import (
            PostingCache,
            QueryPeaks,
            RareTable,
            default_grid,
            query_peaks,
            search,
            settle,
            settled,
            tempo_grid,
        )

        p, o = self.preset, self.options
        fanout = int(round(p.fanout * o.fanout_factor))
        f_search = int(round(p.fanout * o.search_fanout_factor))
        peaks = QueryPeaks.pool(peaks or [query_peaks(y, p, p.density * o.density_factor) for y in ys])
        # a drifting match was found unaltered already: only real tempo changes can beat it
        grid = tempo_grid()[1:] if tempo_only else default_grid()
        # the index's rare postings, read once per process at its second search; before that, or for an index
        # too large, one lookup per hash that the search and every settling share
        cache = RareTable.of(self.store) or PostingCache(self.store)
        cands = search(self.store, peaks, grid, f_search, top=1 if tempo_only else 3, cache=cache)
        tried: dict = {}

        def verify(alt):
            if alt.is_none or alt in tried:  # the unaltered query was matched already
                return
            lm, undone = self._undone(ys, peaks, alt, fanout)
            found, votes = self._match(lm, top, None)
            tried[alt] = (found[0].score if found else 0, found, votes, undone)

        for c in cands:
            for alt in settled(settle(self.store, peaks, c, fanout, siblings=not tempo_only, cache=cache)):
                verify(alt)
        best = max(tried, key=lambda a: tried[a][0], default=None)
        if best is None or tried[best][0] <= beat:
            return []
        _, found, votes, undone = tried[best]
        if undone is not None:  # exact undo: settle loop offsets as for an unaltered query
            found[0] = self.refine_offset(undone, found[0], votes)
        for m in found:
            m.query_start_s /= best.time_factor
            m.query_end_s /= best.time_factor
            m.speed, m.tempo, m.pitch_semitones = best.speed, best.tempo, best.pitch_semitones
        return found

    def identify_file(
        self,
        path,
        top: int = 1,
        separator: Separator | None = None,
        block_s: float = 60.0,
        context_s: float = 3.0,
    ) -> list[Match]:
        """Identify a query file of any length, streamed: memory stays flat however long it is.

        Same matches as :meth:`identify` on the loaded file (fused with ``separator``'s music when given),
        see :meth:`identify_stream`.
        """
        from bgmid.audio import resampled_pieces

        sr = int(separator.sample_rate) if separator is not None else self.preset.sample_rate
        return self.identify_stream(resampled_pieces(path, sr), sr, top, separator, block_s, context_s)

    def identify_stream(
        self,
        pieces: Iterable[np.ndarray],
        sr: int,
        top: int = 1,
        separator: Separator | None = None,
        block_s: float = 60.0,
        context_s: float = 3.0,
    ) -> list[Match]:
        """Identify one query given as consecutive mono ``pieces`` at ``sr`` Hz, with bounded memory.

        Every analysis :meth:`identify` would make of the whole signal (each STFT phase, and the refinement
        phases, since the signal cannot be read twice) runs as a :class:`LandmarkStream`, so the landmarks
        are exactly those of the whole signal; they are small (a hash and a frame each) and are pooled and
        matched once at the end. With a ``separator`` (``sr`` must be its rate), the query is separated in
        blocks of ``block_s`` seconds with ``context_s`` seconds of context each side, and each block's own
        part of the music estimate is kept: a query no longer than one block is separated whole, so the
        matches equal :meth:`identify`'s on ``[mix, music]``; longer ones differ from a whole-signal
        separation only as much as the separator's output depends on far context.
        """
        import soxr

        from bgmid.audio import owned_blocks

        p, o = self.preset, self.options
        n_sh, n_ref = max(1, o.shifts), self.options.refine_phases
        main = [int(round(k * p.hop / n_sh)) for k in range(n_sh)]
        refine = {k: int(round(k * p.hop / n_ref)) for k in range(1, n_ref)} if n_ref > 1 else {}
        shifts = sorted(set(main) | set(refine.values()))
        signals = 1 if separator is None else 2  # the mix, and the separated music
        streams = {(i, sh): LandmarkStream(p, o.density_factor, o.fanout_factor, block_s, skip=sh)
                   for i in range(signals) for sh in shifts}
        to_preset = [soxr.ResampleStream(sr, p.sample_rate, 1, dtype="float32", quality="HQ")
                     if sr != p.sample_rate else None for _ in range(signals)]

        def feed(i: int, y: np.ndarray, last: bool = False) -> None:
            y = np.asarray(y, np.float32)
            if to_preset[i] is not None:
                y = to_preset[i].resample_chunk(y, last=last)
            for sh in shifts:
                streams[(i, sh)].feed(y)

        if separator is None:
            for y in pieces:
                feed(0, y)
        else:
            core, ctx = max(1, int(round(block_s * sr))), max(0, int(round(context_s * sr)))
            for blk in owned_blocks(pieces, core, ctx):  # each block's own part of the mix and the music
                music, _ = separator.separate(blk.x)
                feed(0, blk.x[blk.own])
                feed(1, np.asarray(music, np.float32)[blk.own])
        for i in range(signals):
            feed(i, np.zeros(0, np.float32), last=True)
        lms = {key: ls.finish() for key, ls in streams.items()}
        pooled = pool_landmarks([lms[(i, sh)] for sh in main for i in range(signals)])
        matches, votes = self._match(pooled, top, None)
        if matches:
            matches[0] = self.refine_offset(
                None, matches[0], votes, phase=lambda k: pool_landmarks([lms[(i, refine[k])] for i in range(signals)])
            )
        return matches
