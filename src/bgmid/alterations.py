"""Music as broadcasters air it: estimating and undoing speed, tempo and pitch changes.

A channel rarely airs library music exactly as it was indexed. A 24 fps film shown at 25 fps plays 4.2 %
faster (tempo and pitch: *speed*); US channels time-compress (tempo only); music is transposed to fit an
edit (pitch only). Landmark hashes pack exact frequency bins and frame differences, so a change of 1 % already
breaks most of them (measured on the corpus: 305 aligned hashes unchanged, 70 at 1 %, none at 2 %).

An :class:`Alteration` maps query coordinates to the reference's: a peak at query frame ``t`` and bin ``f``
sits at reference frame ``t * time_factor`` and bin ``f / freq_factor``. Undoing one costs no new analysis:
the query's spectral peaks are computed once (with sub-bin frequency from a parabola through the log
magnitudes, so scaling does not round twice), scaled, re-paired and hashed (:func:`undo`). Measured at -10 dB
speech on the corpus, undoing the exact alteration finds as many queries as unaltered ones (31-33 of 40 vs
32 of 40), with about 60 % of their aligned hashes.

Which alteration? :func:`search` tries a grid of them at once with a *cheap* lookup: only rare hashes
(``max_postings`` 50 instead of the index's ~1,400 limit), which decode few postings yet carry most of the
evidence. The grid steps follow the measured tolerance of an undone query in the cheap search: frequency
errors of 0.5 % keep ~70 % of the hashes, time errors of 1 % ~70 % too, so the grid steps by 1 % in frequency
and 2 % in time (:func:`default_grid`). That is coarse for the decision, though: verified 0.16 % off its true
speed, a sped-up clip aligns a quarter of the hashes it aligns at the true speed. So each candidate's factor
is first settled on a 0.1 % grid around it, on its own axis and on those of the alterations the search
confuses with it (speed and transposition share the frequency factor; :func:`settle`), by the same cheap
count restricted to its track; only then is it verified with the full query and the ordinary match decision,
so the calibrated thresholds of :mod:`bgmid.match` keep their meaning.

What it costs: the search looks up ~180,000 hashes (41 alterations of a 12 s query) and votes with ~1 M
postings. So the index's rare postings are read into memory once per process (:class:`RareTable`, a
gather by hash instead of a search per hash), the query's peaks are paired once for every grid point
(:func:`undo_grid`), and the pairing, the gather and the vote's bucket count are compiled loops
(:mod:`bgmid.kernels`), which numpy took five or six passes over memory for each.
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bgmid.fingerprint.landmarks import Landmarks, find_peaks, hash_bits, pack_hashes, spectrogram
from bgmid.fingerprint.presets import Preset
from bgmid.kernels import BUCKET_MUL, compiled

__all__ = ["Alteration", "NONE", "PostingCache", "QueryPeaks", "RareTable", "UndoStream", "default_grid", "fine_grid",
           "pack_postings", "peaks_at", "query_peaks", "search", "settle", "settled", "tempo_grid", "undo", "undo_grid",
           "undo_pieces", "unpack_postings"]


@dataclass(frozen=True)
class Alteration:
    """How the aired audio differs from the indexed track (factors > 1: faster / higher)."""

    speed: float = 1.0  #: playback speed: tempo and pitch both times this (PAL speed-up: 25/24)
    tempo: float = 1.0  #: further tempo factor with the pitch kept (time compression)
    pitch_semitones: float = 0.0  #: further transposition with the tempo kept

    @property
    def time_factor(self) -> float:
        """Reference time per query time."""
        return self.speed * self.tempo

    @property
    def freq_factor(self) -> float:
        """Query frequency per reference frequency."""
        return self.speed * 2.0 ** (self.pitch_semitones / 12.0)

    @property
    def is_none(self) -> bool:
        return abs(self.time_factor - 1) < 1e-9 and abs(self.freq_factor - 1) < 1e-9

    @property
    def kind(self) -> str:
        """``none``, ``speed``, ``tempo`` or ``pitch`` when only that one factor moves, else ``mixed``."""
        moved = [k for k, v, one in (("speed", self.speed, 1.0), ("tempo", self.tempo, 1.0),
                                     ("pitch", self.pitch_semitones, 0.0)) if v != one]
        return "none" if not moved else moved[0] if len(moved) == 1 else "mixed"

    def siblings(self) -> list[Alteration]:
        """Alterations the rare-hash search tells apart least well from this one: a speed change and a
        transposition share the frequency factor, a speed change and a tempo change the time factor (on the
        corpus at -10 dB the search took 3 of 60 sped-up clips for transpositions, which then verified a
        few aligned hashes at an offset 0.2-0.4 s off)."""
        if self.kind == "speed":
            return [Alteration(pitch_semitones=float(12 * np.log2(self.speed))), Alteration(tempo=self.speed)]
        if self.kind == "pitch":
            return [Alteration(speed=float(self.freq_factor))]
        if self.kind == "tempo":
            return [Alteration(speed=float(self.tempo))]
        return []

    def to_dict(self) -> dict:
        return {"speed": round(self.speed, 5), "tempo": round(self.tempo, 5),
                "pitch_semitones": round(self.pitch_semitones, 3)}


NONE = Alteration()


def default_grid(max_speed: float = 0.06, max_tempo: float = 0.05, max_semitones: float = 2.0,
                 freq_step: float = 0.01, time_step: float = 0.02) -> list[Alteration]:
    """Alterations tried by :func:`search`: speed, tempo and pitch families, unaltered first.

    Steps: ``freq_step`` (relative) for anything that moves frequencies (speed, pitch), ``time_step`` for
    tempo alone (time is the more tolerant axis). ±6 % speed, ±5 % tempo, ±2 semitones: 41 alterations.
    """
    grid = [NONE]
    n = int(round(max_speed / freq_step))
    grid += [Alteration(speed=1 + k * freq_step) for k in range(-n, n + 1) if k]
    # the unaltered point covers +-time_step/2; then +-1.5, 2.5, ... steps until the range is covered
    j = np.arange(1, int(np.ceil(max_tempo / time_step + 0.5)))
    grid += [Alteration(tempo=float(1 + s * (k + 0.5) * time_step)) for k in j for s in (-1, 1)]
    step_st = 12 * np.log2(1 + freq_step)
    n = int(np.ceil(max_semitones / step_st))
    grid += [Alteration(pitch_semitones=float(k * step_st)) for k in range(-n, n + 1) if k]
    return grid


def tempo_grid(max_tempo: float = 0.06, step: float = 0.01) -> list[Alteration]:
    """Tempo changes only, on a finer grid: searched when an unaltered match drifts (the frequency is right,
    only the time factor is to be found)."""
    n = int(round(max_tempo / step))
    return [NONE] + [Alteration(tempo=1 + k * step) for k in range(-n, n + 1) if k]


@dataclass(frozen=True)
class QueryPeaks:
    """Spectral peaks of a query: frames (int), bins with sub-bin precision (float)."""

    t: np.ndarray
    f: np.ndarray

    @staticmethod
    def pool(parts: Sequence[QueryPeaks]) -> QueryPeaks:
        """Peaks of several analyses of one time line (mix and separated music) together."""
        return QueryPeaks(np.concatenate([p.t for p in parts]), np.concatenate([p.f for p in parts]))


def query_peaks(y: np.ndarray, preset: Preset, density: float) -> QueryPeaks:
    """Peaks of mono ``y`` (at ``preset.sample_rate``), ``density`` per second, frequencies interpolated."""
    s = spectrogram(y, preset)
    return peaks_at(s, *find_peaks(s, preset, density))


def peaks_at(s: np.ndarray, t: np.ndarray, f: np.ndarray) -> QueryPeaks:
    """The peaks (frames ``t``, bins ``f``) of log spectrogram ``s``, with sub-bin frequencies from a parabola
    through the log magnitudes around each: for a query's landmark peaks (:func:`bgmid.match.analyse` finds
    them anyway), so the search does not analyse the query again."""
    if t.size == 0:
        return QueryPeaks(t.astype(np.int64), f.astype(np.float64))
    fm = np.clip(f, 1, s.shape[1] - 2)
    a, b, c = s[t, fm - 1], s[t, fm], s[t, fm + 1]
    den = a - 2 * b + c
    safe = np.abs(den) > 1e-9
    d = np.where(safe, 0.5 * (a - c) / np.where(safe, den, 1.0), 0.0)
    return QueryPeaks(t.astype(np.int64), fm + np.clip(d, -0.5, 0.5))


def undo(peaks: QueryPeaks, alt: Alteration, preset: Preset, fanout: int) -> Landmarks:
    """Landmarks of ``peaks`` moved to the reference's time and frequency scale (times in reference frames)."""
    h, t, _ = undo_grid(peaks, [alt], preset, fanout)
    return Landmarks(h, t)


def undo_grid(peaks: QueryPeaks, grid: Sequence[Alteration], preset: Preset, fanout: int
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`undo` at every point of ``grid`` in one vectorised pass: (hashes, times in reference frames,
    grid index) of all their landmarks, grid point after grid point. One pass instead of one per alteration:
    the search undoes ~40, a settling ~40 more.

    The peaks are paired once, not once per point: scaling keeps their time order, so each anchor's
    candidate targets are the first ``fanout + 4`` later peaks that can land in the target zone under some
    alteration (:func:`_candidate_targets`); at each point the scaled pairs outside the zone are dropped and
    the first ``fanout`` kept, as :func:`~bgmid.fingerprint.landmarks.pair_peaks` keeps them. Against pairing
    every point anew: 2-3x faster, 97-98 % of the same hashes, the same rates found on every set of
    ``benchmarks/alterations.py``. Two analyses of one time line (mix and music estimate) often give the
    same peak: it is used once per frame and bin, and at each point once more where two round together.
    The pairing is a compiled loop once it is loaded (:func:`bgmid.kernels.pair_grid`: 4x faster than the
    (point, anchor, candidate) arrays of numpy below, with the same output)."""
    G, empty = len(grid), (np.zeros(0, np.uint32), np.zeros(0, np.int32), np.zeros(0, np.int64))
    if peaks.t.size < 2 or G == 0:
        return empty
    order = np.lexsort((peaks.f, peaks.t))
    t, f = peaks.t[order].astype(np.int64), peaks.f[order].astype(np.float64)
    fb = np.round(f)
    first = np.r_[True, (t[1:] != t[:-1]) | (fb[1:] != fb[:-1])]  # one peak per frame and bin
    t, f = t[first], f[first]
    n = t.size
    if n < 2:
        return empty
    a = np.array([alt.time_factor for alt in grid], np.float64)
    b = np.array([alt.freq_factor for alt in grid], np.float64)
    tt = np.round(t[None, :] * a[:, None]).astype(np.int32)  # (grid point, peak)
    ff = np.round(f[None, :] / b[:, None]).astype(np.int32)
    ok = (ff >= int(np.ceil(preset.fmin_hz * preset.n_fft / preset.sample_rate))) & (ff <= preset.n_fft // 2)
    ok[:, 1:] &= (t[1:] != t[:-1]) | (ff[:, 1:] != ff[:, :-1])
    J = _candidate_targets(t, f, preset, fanout)
    fast = compiled()
    if fast is not None:
        _, bdf, bdt = hash_bits(preset)
        return fast.pair_grid(tt, ff, ok, J, fanout, preset.dt_max, preset.df_max, bdf + bdt, bdt)
    has = J >= 0
    Jc = np.where(has, J, 0)
    dt = tt[:, Jc]  # (grid point, anchor, candidate); in place, the arrays are large
    dt -= tt[:, :, None]
    df = ff[:, Jc]
    df -= ff[:, :, None]
    valid = ok[:, Jc]
    valid &= has[None]
    valid &= ok[:, :, None]
    valid &= dt >= 1
    valid &= dt <= preset.dt_max
    valid &= np.abs(df) <= preset.df_max
    valid &= np.cumsum(valid, axis=2, dtype=np.int16) <= fanout
    pair = np.flatnonzero(valid)
    row = pair // J.shape[1]  # (grid point, anchor) of each pair, flat
    return (pack_hashes(ff.ravel()[row], df.ravel()[pair], dt.ravel()[pair], preset), tt.ravel()[row],
            row // n)


#: The widest alterations :func:`undo_grid` pairs for exactly: time factors down to this, frequency factors up
#: to :data:`REACH_FREQ` (the search's grids reach 0.94 and 1.13). Fixed, so that a point's landmarks do not
#: depend on the grid it is undone with; beyond them pairs near the target zone's edge are missed.
REACH_TIME = 0.9
REACH_FREQ = 1.15


def _candidate_targets(t: np.ndarray, f: np.ndarray, preset: Preset, fanout: int, spare: int = 4) -> np.ndarray:
    """For each peak (sorted by frame), the indices of the first ``fanout + spare`` of its next ``4 * fanout``
    peaks (the window of :func:`~bgmid.fingerprint.landmarks.pair_peaks`) that can pair with it under some
    alteration within :data:`REACH_TIME` and :data:`REACH_FREQ`; -1 pads. The ``spare`` candidates stand in
    for those that leave the target zone at one grid point."""
    n, k = t.size, fanout + spare
    window = min(n - 1, 4 * fanout)
    j = np.arange(n)[:, None] + np.arange(1, window + 1)[None, :]
    jc = np.minimum(j, n - 1)
    dt = t[jc] - t[:, None]
    reach = ((j < n) & (dt >= 1) & (dt * REACH_TIME <= preset.dt_max + 1)
             & (np.abs(f[jc] - f[:, None]) <= (preset.df_max + 1) * REACH_FREQ))
    rank = np.cumsum(reach, axis=1)
    rows, cols = np.nonzero(reach & (rank <= k))
    J = np.full((n, k), -1, np.int64)
    J[rows, rank[rows, cols] - 1] = jc[rows, cols]
    return J


@dataclass(frozen=True)
class Candidate:
    """A (track, alteration) the cheap search found, with its aligned-hash count in that search."""

    track_id: int
    alteration: Alteration
    score: int


#: A search candidate needs at least this many rare hashes on one (alteration, offset) to be verified. Chance
#: reaches 5-8 on speech-only clips (12 s, and 5 s of processed speech: 30 of each on the corpus) and 5-16 on
#: never-indexed music; altered music under speech at -10 dB mostly 15-150. Below it, verifying (a new analysis
#: and lookup per alteration) would cost most of the search's time for nothing.
MIN_SEARCH_SCORE = 9


#: Searches after which a process loads the compiled loops of :mod:`bgmid.kernels` (in the background). Loading
#: takes ~0.9 s of CPU (numba's import and first cache load), about half of it from a busy process's own work
#: (the GIL), and a compiled search saves ~35 ms: it pays after ~15 more searches. A one-off identify and a
#: monitor (up to ~10 searches a programme, to estimate its alteration) never load them; an evaluation, a batch
#: of programmes or a server does, early on.
COMPILE_AFTER = 32
_searches = itertools.count(1)


def search(store, peaks: QueryPeaks, grid: Sequence[Alteration], fanout: int, max_postings: int = 50,
           top: int = 3, min_score: int = MIN_SEARCH_SCORE, cache: PostingCache | RareTable | None = None
           ) -> list[Candidate]:
    """The ``top`` tracks with their best alteration from one lookup of every grid point's rare hashes,
    leaving out those below ``min_score``.

    Votes are on (track, alteration, offset in 2-frame bins): the bins absorb the drift of an alteration
    that is off by up to half a grid step.
    """
    if not grid:
        return []
    if len(grid) > 511:
        raise ValueError("the search votes on at most 511 grid points")
    if next(_searches) == COMPILE_AFTER:
        compiled(start=True)
    h, t, g = undo_grid(peaks, grid, store.preset, fanout)
    # key: track << 31 | grid point << 22 | 2**21 + (track time - query time) // 2, from the packed postings
    # (track << 32 | TIME0 + track time) in one subtraction and one shift
    key = (cache or PostingCache(store, max_postings)).vote_keys(h, t.astype(np.int64) - (g << 23))
    if key.size == 0:
        return []
    uk, counts = frequent(key, max(1, min_score))
    if uk.size == 0:
        return []
    track = uk >> 31
    order = np.lexsort((-counts, track))  # per track, its best (alteration, offset) first
    track, counts, uk = track[order], counts[order], uk[order]
    first = np.flatnonzero(np.r_[True, track[1:] != track[:-1]])
    best = first[np.argsort(-counts[first], kind="stable")[:top]]
    return [Candidate(int(track[i]), grid[int((uk[i] >> 22) & 511)], int(counts[i])) for i in best]


def frequent(keys: np.ndarray, min_count: int) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values of int64 ``keys`` that occur at least ``min_count`` times, sorted, and their counts.

    Exact, without sorting every key: the keys are counted in hash buckets first (a bucket holds at least
    the count of each key in it; compiled: :func:`bgmid.kernels.hot_keys`), and only the keys of buckets that reach
    ``min_count`` are counted exactly. The search votes ~1 M postings per query, of which a few hundred share
    a (track, alteration, offset); sorting them all was a quarter of its time."""
    keys = np.ascontiguousarray(keys, np.int64)
    if min_count > 1 and keys.size > 4096:
        # ~1 bucket per 2 keys, at most 2**20: a byte counter each (compiled) stays in a core's L2 cache and
        # counts 2x faster than twice as many (4.9 against 10.6 ms for 1.3 M keys); a few thousand survive
        bits = int(np.clip(np.ceil(np.log2(keys.size)) - 1, 12, 20))
        fast = compiled()
        if fast is not None:
            keys = fast.hot_keys(keys, int(min_count), bits)
        else:
            bucket = ((keys.view(np.uint64) * BUCKET_MUL) >> np.uint64(64 - bits)).astype(np.int64)
            keys = keys[np.bincount(bucket, minlength=1 << bits)[bucket] >= min_count]
    uk, counts = np.unique(keys, return_counts=True)
    keep = counts >= min_count
    return uk[keep], counts[keep]


class PostingCache:
    """The rare-hash postings of one query's search, each distinct hash looked up once.

    Neighbouring grid points of :func:`search` share about half their hashes, and the fine grids of
    :func:`settle` 90 % of theirs with the search's (a 0.1 % step moves few peaks by a bin); the index lookup
    is most of their cost. Each lookup of new hashes is kept as one block: distinct hashes, sorted, with
    their postings as compressed rows (a query makes a handful of blocks; merging them would cost more).
    """

    def __init__(self, store, max_postings: int = 50):
        self.store, self.max_postings = store, max_postings
        #: (sorted distinct hashes, row starts, track ids, track times) per lookup
        self.blocks: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []

    def lookup(self, h: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The postings of every row of ``h`` as (row, track id, track time in frames), as ``store.lookup``
        returns them (in another order), skipping hashes with more than ``max_postings``."""
        h = np.asarray(h, np.uint32)
        uh, inv = np.unique(h, return_inverse=True)  # sorted: the searches below stay cache-friendly
        row_block = self._blocks_of(uh)[inv]
        parts = []
        for b, (keys, start, tids, times) in enumerate(self.blocks):
            rows = np.flatnonzero(row_block == b)
            k = np.searchsorted(keys, uh)[inv[rows]]
            c = start[k + 1] - start[k]
            idx = _spans(start[k], c)
            parts.append((np.repeat(rows, c), tids[idx], times[idx]))
        if not parts:
            empty = np.zeros(0, np.int64)
            return empty, empty, empty
        rows, tids, times = (np.concatenate(a) for a in zip(*parts, strict=True))
        return rows, tids, times

    def vote_keys(self, h: np.ndarray, u: np.ndarray) -> np.ndarray:
        """As :meth:`RareTable.vote_keys` (in :meth:`lookup`'s order)."""
        rows, tids, times = self.lookup(h)
        return _vote_keys(pack_postings(tids, times), np.asarray(u, np.int64)[rows])

    def track_lookup(self, h: np.ndarray, track: int) -> tuple[np.ndarray, np.ndarray]:
        """The postings of ``h``'s rows in one track: (row, track time), the rows of :meth:`lookup` whose
        track is ``track``, found from that track's few cached postings instead of expanding every row's
        (settling counts one candidate's track only)."""
        h = np.asarray(h, np.uint32)
        self._blocks_of(np.unique(h))  # every hash known, the new ones looked up
        th, tt = [], []
        for keys, start, tids, times in self.blocks:
            at = np.flatnonzero(tids == track)
            th.append(keys[np.searchsorted(start, at, side="right") - 1])
            tt.append(times[at])
        th, tt = np.concatenate(th), np.concatenate(tt)
        order = np.argsort(th, kind="stable")
        th, tt = th[order], tt[order]
        lo, hi = np.searchsorted(th, h, "left"), np.searchsorted(th, h, "right")
        c = hi - lo
        return np.repeat(np.arange(h.size), c), tt[_spans(lo, c)]

    def _blocks_of(self, uh: np.ndarray) -> np.ndarray:
        """The block holding each of the sorted distinct hashes ``uh``, those not held yet looked up first (as
        one new block)."""
        where = np.full(uh.size, -1, np.int64)
        for b, (keys, *_) in enumerate(self.blocks):
            where[_members(keys, uh)] = b
        if (where < 0).any():
            self._add(uh[where < 0])
            where[where < 0] = len(self.blocks) - 1
        return where

    def _add(self, new: np.ndarray) -> None:
        """Look up ``new`` (sorted, distinct, not yet known) as a new block."""
        rows, tids, times = self.store.lookup(new, max_postings=self.max_postings)
        order = np.argsort(rows, kind="stable")
        count = np.bincount(np.asarray(rows, np.int64)[order], minlength=new.size)
        self.blocks.append((new, np.r_[0, np.cumsum(count)], np.asarray(tids, np.int64)[order],
                            np.asarray(times, np.int64)[order]))


#: Added to a posting's track time in a packed posting (:func:`pack_postings`), so that the time minus a
#: query time stays positive in its 32 bits.
TIME0 = 1 << 22


def _vote_keys(packed: np.ndarray, u: np.ndarray) -> np.ndarray:
    """The search's vote keys ``(packed - u) >> 1`` of packed postings and their rows' query values, in place
    (numpy; :func:`bgmid.kernels.gather_votes` is the compiled twin)."""
    packed -= u
    packed >>= 1
    return packed


def pack_postings(tids: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Postings as one int64 each: ``track_id << 32`` plus :data:`TIME0` plus the track time (frames). The
    search's vote key is then one subtraction and one shift away (:func:`search`)."""
    return (np.asarray(tids, np.int64) << 32) + TIME0 + np.asarray(times, np.int64)


def unpack_postings(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(track ids, track times) of packed postings: :func:`pack_postings` undone."""
    return packed >> 32, (packed & 0xFFFFFFFF) - TIME0


class RareTable:
    """Every rare-hash posting of an index in memory, addressed by the hash itself: what :class:`PostingCache`
    looks up hash by hash, read once for the whole index, so a search's lookup is a gather.

    A landmark hash has few bits (22 for ``p1``), so a directory of every possible hash is small (17 MB for
    ``p1``) and needs no search; the postings of hashes with at most ``max_postings`` entries follow, packed
    (:func:`pack_postings`), with their hashes: 12 bytes a posting. On the 103-track corpus that is 2.0 M
    postings, read in ~0.4 s; a search's ~180,000 hashes then cost ~10 ms instead of ~100. :meth:`of` keeps
    one table per index (from a process's second search on) and rebuilds it when the index has changed.
    Indexes with more than ``MAX_POSTINGS`` stored postings keep the :class:`PostingCache` (the table could
    pass ~400 MB).
    """

    #: stored postings above which :meth:`of` answers ``None`` (the table holds up to this many)
    MAX_POSTINGS = 32_000_000
    _tables: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def __init__(self, store, max_postings: int = 50, chunk: int = 1 << 20):
        space = 1 << sum(hash_bits(store.preset))
        keys = store.keys() if hasattr(store, "keys") else np.arange(space, dtype=np.uint32)
        h, packed = [np.zeros(0, np.uint32)], [np.zeros(0, np.int64)]
        for a in range(0, keys.size, chunk):  # bounded memory for stores that are asked every hash
            part = np.asarray(keys[a:a + chunk], np.uint32)
            rows, tid, t = store.lookup(part, max_postings=max_postings)
            h.append(part[rows])
            packed.append(pack_postings(tid, t))
        h = np.concatenate(h)
        order = np.argsort(h, kind="stable")
        # int32 (the table holds at most MAX_POSTINGS): half the directory's 2**22 entries' bytes to read past
        self.start = np.r_[0, np.cumsum(np.bincount(h, minlength=space))].astype(np.int32)
        self.hashes = h[order]
        self.postings = np.concatenate(packed)[order]  #: packed (:func:`pack_postings`), by hash
        self._track: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._by_track: np.ndarray | None = None
        self._track_of: np.ndarray | None = None

    @classmethod
    def of(cls, store, max_postings: int = 50) -> RareTable | None:
        """The table of ``store`` from its second search on (rebuilt after the index changed), or ``None``:
        for the first search of a process, which a one-off ``bgmid identify`` would pay the table's reading
        for (0.4 s against the 0.1 s its own lookups cost), for stores that cannot be referenced weakly, and
        for indexes too large for one (then :class:`PostingCache` serves)."""
        stored, snapshot = getattr(store, "n_postings", None), getattr(store, "snapshot", None)
        if stored is None or snapshot is None or stored > cls.MAX_POSTINGS:
            return None
        version = (snapshot, max_postings)
        try:
            got = cls._tables.get(store)
        except TypeError:
            return None
        if got is None:  # the first search: remembered, not built
            cls._tables[store] = (None, None)
            return None
        if got[0] != version:
            got = (version, cls(store, max_postings))
            cls._tables[store] = got
        return got[1]

    def lookup(self, h: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The postings of every row of ``h`` as (row, track id, track time in frames): those of
        :meth:`PostingCache.lookup`, row by row in the same order."""
        c, packed = self._spans_of(h)
        return np.repeat(np.arange(c.size), c), *unpack_postings(packed)

    def vote_keys(self, h: np.ndarray, u: np.ndarray) -> np.ndarray:
        """``(posting - u[row]) >> 1`` for every packed posting (:func:`pack_postings`) of every row of ``h``,
        row by row: the search's vote keys, gathered by compiled loops (:func:`bgmid.kernels.gather_votes`;
        in numpy, below, materialising the postings and the repeated ``u`` first costs 2.5x as much)."""
        fast = compiled()
        if fast is not None:
            return fast.gather_votes(self.start, self.postings, np.asarray(h, np.int64),
                                     np.ascontiguousarray(u, np.int64))
        c, packed = self._spans_of(h)
        return _vote_keys(packed, np.repeat(np.asarray(u, np.int64), c))

    def _spans_of(self, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(postings per row, the rows' packed postings row after row, a copy) of the hashes ``h``."""
        h = np.asarray(h, np.int64)
        lo = self.start[h]
        c = self.start[h + 1] - lo
        return c, self.postings[_spans(lo, c)]

    def track_lookup(self, h: np.ndarray, track: int) -> tuple[np.ndarray, np.ndarray]:
        """The postings of ``h``'s rows in one track: (row, track time), as :meth:`PostingCache.track_lookup`."""
        present, th, tt = self._of_track(track)
        h = np.asarray(h, np.uint32)
        rows = np.flatnonzero(present[h])  # a byte gather; only the track's own hashes are searched
        lo, hi = np.searchsorted(th, h[rows], "left"), np.searchsorted(th, h[rows], "right")
        c = hi - lo
        return np.repeat(rows, c), tt[_spans(lo, c)].astype(np.int64)

    def _of_track(self, track: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One track's rare postings: which hashes it holds (a byte per possible hash), and (hash, time)
        sorted by hash; kept for the last few tracks settled (4 MB each for ``p1``)."""
        if track not in self._track:
            if len(self._track) >= 8:
                self._track.pop(next(iter(self._track)))
            if self._by_track is None:  # postings by track, each track's in hash order (stable)
                tids = unpack_postings(self.postings)[0]
                self._by_track = np.argsort(tids, kind="stable")
                self._track_of = tids[self._by_track]
            at = self._by_track[np.searchsorted(self._track_of, track):np.searchsorted(self._track_of, track, "right")]
            present = np.zeros(self.start.size - 1, bool)
            present[self.hashes[at]] = True
            self._track[track] = (present, self.hashes[at], unpack_postings(self.postings[at])[1])
        return self._track[track]


def _spans(start: np.ndarray, count: np.ndarray) -> np.ndarray:
    """The indices ``start[i], ..., start[i] + count[i] - 1`` of every ``i``, concatenated."""
    return np.repeat(start - (np.cumsum(count) - count), count) + np.arange(int(count.sum()))


def _members(keys: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Which of ``q`` are in sorted ``keys``."""
    if keys.size == 0:
        return np.zeros(q.size, bool)
    at = np.minimum(np.searchsorted(keys, q), keys.size - 1)
    return keys[at] == q


def fine_grid(alt: Alteration, step: float = 0.001, n: int = 6, siblings: bool = True) -> list[Alteration]:
    """Alterations within +-``n * step`` of ``alt`` (relative), on its own axis and those of its
    :meth:`~Alteration.siblings`: speed moves time and frequency together, a transposition frequency
    only, a tempo change time only. A search candidate is a grid step (1 %) coarse, but a verification
    0.16 % off the true speed already aligns 4x fewer hashes (82 against 305 for one sped-up clip at
    -10 dB), so the factor is settled on this finer grid before anything is verified. Without
    ``siblings`` only ``alt``'s own axis (a drifting unaltered match: the frequency is known to be right).
    Empty for the unaltered point."""
    xs = 1.0 + step * np.arange(-n, n + 1)
    out: list[Alteration] = []
    for a in [alt] + (alt.siblings() if siblings else []):
        if a.kind == "speed":
            out += [Alteration(speed=float(a.speed * x)) for x in xs]
        elif a.pitch_semitones:
            out += [Alteration(a.speed, a.tempo, float(a.pitch_semitones + 12 * np.log2(x))) for x in xs]
        elif a.tempo != 1.0:
            out += [Alteration(a.speed, float(a.tempo * x), a.pitch_semitones) for x in xs]
    return list(dict.fromkeys(out))


def settle(store, peaks: QueryPeaks, cand: Candidate, fanout: int, max_postings: int = 50,
           step: float = 0.001, n: int = 6, siblings: bool = True, cache: PostingCache | RareTable | None = None
           ) -> Alteration:
    """The alteration of :func:`fine_grid` around ``cand`` on which ``cand.track_id`` aligns the most rare
    hashes (the search's cheap lookup, counted for that one track, offsets within +-1 frame): one lookup of
    the few distinct hashes the fine steps add (a 0.1 % step moves few peaks by a bin)."""
    grid = fine_grid(cand.alteration, step, n, siblings)
    if not grid:
        return cand.alteration
    h, t, g = undo_grid(peaks, grid, store.preset, fanout)
    rows, times = (cache or PostingCache(store, max_postings)).track_lookup(h, cand.track_id)
    if rows.size == 0:
        return cand.alteration
    t = t.astype(np.int64)
    off = times - t[rows]
    lo = off.min() - 1
    width = int(off.max() - lo) + 2
    hist = np.bincount(g[rows] * width + (off - lo), minlength=len(grid) * width).reshape(len(grid), width)
    smooth = hist.copy()
    smooth[:, 1:] += hist[:, :-1]
    smooth[:, :-1] += hist[:, 1:]
    best = smooth.max(axis=1)
    return grid[int(np.argmax(best))]


def settled(alt: Alteration, tempo_step: float = 0.005) -> list[Alteration]:
    """What is verified for a settled alteration: itself, and for a tempo change also ``tempo_step`` either
    side. Time is the tolerant axis, so the rare-hash count of :func:`settle` barely changes over +-0.5 %
    of tempo on a 12 s query and its best point is often not the truth; the full verification tells them
    apart (tempo +-3 % at -10 dB with U-Net fusion, 60 clips: 88.3 / 86.7 % verifying the settled point
    alone; 93.3 / 90.0 % with its neighbours, measured together with the Hough drift test and the benchmark's
    0.2 s repeat tolerance)."""
    if alt.kind == "tempo":
        return [alt] + [Alteration(tempo=alt.tempo * (1 + d)) for d in (tempo_step, -tempo_step)]
    return [alt]


# -- programmes: one alteration for the whole programme -----------------------------------------------------


def estimate_programme(identify, x: np.ndarray, sr: int, window_s: float = 12.0, windows: int = 10,
                       min_agree: int = 2) -> tuple[Alteration, list[dict]]:
    """The alteration of a programme, from ``windows`` excerpts of its first minutes ``x`` (mono, ``sr`` Hz).

    A sped-up film is sped up throughout, so the monitor estimates once and undoes it for the whole stream.
    ``identify(excerpt, sr) -> list[Match]`` is the query pipeline (with its separator, if any). The answer
    is the alteration whose matches carry the most aligned hashes, when at least ``min_agree`` excerpts
    agree on it (within 0.6 % in time and frequency); otherwise the programme is taken as unaltered. Returns
    it and the evidence (one dict per matched excerpt).
    """
    n = int(window_s * sr)
    if x.size < n:
        starts = [0]
    else:
        starts = np.linspace(0, x.size - n, max(1, windows)).astype(int).tolist()
    seen: list[tuple[Alteration, int]] = []
    evidence = []
    for a in starts:
        found = identify(x[a:a + n], sr)
        if not found:
            continue
        m = found[0]
        alt = Alteration(m.speed, m.tempo, m.pitch_semitones)
        seen.append((alt, m.score))
        evidence.append({"start_s": round(a / sr, 2), "track_id": m.track_id, "score": m.score, **alt.to_dict()})
        if len(seen) >= 3 and all(s[0].is_none for s in seen):
            break  # three unaltered matches: not worth searching further
    best, best_w = NONE, 0
    for alt, _ in seen:
        agree = [(b, w) for b, w in seen if abs(np.log(b.time_factor / alt.time_factor)) < 0.006
                 and abs(np.log(b.freq_factor / alt.freq_factor)) < 0.006]
        weight = sum(w for _, w in agree)
        if len(agree) >= min_agree and weight > best_w:
            tf = float(np.exp(np.average([np.log(b.time_factor) for b, _ in agree], weights=[w for _, w in agree])))
            ff = float(np.exp(np.average([np.log(b.freq_factor) for b, _ in agree], weights=[w for _, w in agree])))
            best, best_w = _from_factors(tf, ff, alt), weight
    return best, evidence


def _from_factors(time_factor: float, freq_factor: float, like: Alteration | None = None) -> Alteration:
    """The simplest alteration with these factors: a speed change when time and frequency moved together
    (within 0.3 %), a tempo change when only time moved, a transposition when only frequency moved."""
    tol = 0.003
    if abs(time_factor - 1) < tol and abs(freq_factor - 1) < tol:
        return NONE
    if abs(np.log(time_factor / freq_factor)) < tol:
        return Alteration(speed=float(np.sqrt(time_factor * freq_factor)))
    if abs(freq_factor - 1) < tol:
        return Alteration(tempo=time_factor)
    if abs(time_factor - 1) < tol:
        return Alteration(pitch_semitones=float(12 * np.log2(freq_factor)))
    return Alteration(speed=freq_factor, tempo=time_factor / freq_factor)


def undo_pieces(pieces, sr: int, alt: Alteration):
    """Undo ``alt`` on a stream of mono pieces at ``sr`` Hz (yields pieces): the aired programme back on the
    track's scale, so the monitor matches it as if unaltered (its times are then ``time_factor`` times the
    programme's). Speed and transposition by streamed soxr resampling (exact), tempo with ffmpeg's
    ``atempo`` (the WSOLA time stretch broadcast tools use), streamed through one filter graph."""
    if alt.is_none:
        yield from pieces
        return
    undo = UndoStream(sr, alt)
    for last, piece in _flag_last(pieces):
        y = undo.push(piece, last)
        if y.size:
            yield y


class UndoStream:
    """:func:`undo_pieces` pushed a piece at a time (live monitoring: the pieces come as they arrive)."""

    def __init__(self, sr: int, alt: Alteration):
        import soxr

        ratio = alt.freq_factor  # resampling slows by this and lowers the pitch by it
        self.rs = soxr.ResampleStream(sr, sr * ratio, 1, dtype="float32", quality="HQ")
        stretch = ratio / alt.time_factor  # then atempo restores the remaining tempo difference
        self.graph = _AtempoStream(sr, stretch) if abs(stretch - 1) > 1e-6 else None

    def push(self, piece: np.ndarray, last: bool = False) -> np.ndarray:
        """The undone samples of ``piece`` available so far (``last``: flush the filters' tails)."""
        y = self.rs.resample_chunk(np.asarray(piece, np.float32), last=last)
        return self.graph.push(y, last) if self.graph is not None else y


def _flag_last(it):
    it = iter(it)
    try:
        prev = next(it)
    except StopIteration:
        return
    for cur in it:
        yield False, prev
        prev = cur
    yield True, prev


class _AtempoStream:
    """ffmpeg's ``atempo`` on a stream of mono float32 pieces (PyAV filter graph, pushed and pulled)."""

    def __init__(self, sr: int, factor: float):
        import fractions

        import av

        self.av, self.sr, self.tb, self.pos = av, sr, fractions.Fraction(1, sr), 0
        self.g = av.filter.Graph()
        src = self.g.add_abuffer(format="flt", sample_rate=sr, layout="mono")
        f = self.g.add("atempo", f"{factor:.6f}")
        self.sink = self.g.add("abuffersink")
        src.link_to(f)
        f.link_to(self.sink)
        self.src = src
        self.g.configure()

    def push(self, y: np.ndarray, last: bool) -> np.ndarray:
        av = self.av
        if y.size:
            fr = av.AudioFrame.from_ndarray(y[None, :].astype(np.float32), format="flt", layout="mono")
            fr.sample_rate, fr.pts, fr.time_base = self.sr, self.pos, self.tb
            self.pos += y.size
            self.src.push(fr)
        if last:
            self.src.push(None)
        out = []
        while True:
            try:
                fr = self.sink.pull()
            except (av.error.BlockingIOError, av.error.EOFError):
                break
            out.append(fr.to_ndarray().reshape(-1).astype(np.float32))
        return np.concatenate(out) if out else np.zeros(0, np.float32)


def parse_alteration(text: str):
    """``auto`` / ``none`` / ``speed=25/24,tempo=1.03,pitch=-1`` -> what :class:`bgmid.monitor.Monitor` takes."""
    from fractions import Fraction

    from bgmid.errors import BgmidError

    t = text.strip().lower()
    if t in ("auto", "none"):
        return "auto" if t == "auto" else None
    kw = {"speed": 1.0, "tempo": 1.0, "pitch": 0.0}
    try:
        for part in t.split(","):
            k, v = part.split("=")
            if k.strip() not in kw:
                raise ValueError(k)
            kw[k.strip()] = float(Fraction(v.strip()))
    except (ValueError, ZeroDivisionError):
        raise BgmidError(f"--alteration {text!r}: use auto, none, or e.g. speed=25/24,tempo=1.03,pitch=-1") from None
    if not (0.5 < kw["speed"] < 2 and 0.5 < kw["tempo"] < 2 and abs(kw["pitch"]) <= 12):
        raise BgmidError(f"--alteration {text!r}: speed and tempo must be factors near 1, pitch in semitones")
    return Alteration(kw["speed"], kw["tempo"], kw["pitch"])
