"""Compiled loops (numba) for the two passes over memory that numpy cannot fuse: the alteration search's vote.

The search (:func:`bgmid.alterations.search`) votes with ~1 M rare postings per query. In numpy that is five
or six passes over arrays of that size (gather the postings' spans, repeat the query values, subtract, shift,
bucket, gather the bucket counts) and it was half of a searched query's time; as two loops it is a third of
it (``benchmarks/alterations.py`` times it). Imported only where a search runs, so ``import bgmid`` and an
unaltered query never load numba; the compiled code is cached on disk (``cache=True``), so a process pays
~0.3 s to load it once, and the first process after an install ~1 s to compile it.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["gather_votes", "hot_keys", "pair_grid"]

#: Fibonacci hashing: spreads keys that differ in their low bits (offsets) over all buckets
_MUL = np.uint64(0x9E3779B97F4A7C15)


@numba.njit(cache=True, nogil=True)
def gather_votes(start: np.ndarray, postings: np.ndarray, h: np.ndarray, u: np.ndarray) -> np.ndarray:
    """``(postings[j] - u[i]) >> 1`` for every posting ``j`` of every row ``i`` (``start[h[i]]`` up to
    ``start[h[i] + 1]``), row after row: the vote keys of a directory addressed by hash
    (:class:`bgmid.alterations.RareTable`), without materialising the postings, their rows or the repeated
    query values first. Postings and ``u`` int64. The directory is read in a pass of its own, so that its
    scattered reads do not wait on those of the postings (a quarter faster than one loop doing both)."""
    n = h.size
    lo = np.empty(n, np.int64)
    count = np.empty(n, np.int64)
    total = 0
    for i in range(n):
        lo[i] = start[h[i]]
        count[i] = start[h[i] + 1] - lo[i]
        total += count[i]
    keys = np.empty(total, np.int64)
    k = 0
    for i in range(n):
        ui, a = u[i], lo[i]
        for j in range(count[i]):
            keys[k + j] = (postings[a + j] - ui) >> 1
        k += count[i]
    return keys


@numba.njit(cache=True, nogil=True)
def hot_keys(keys: np.ndarray, min_count: int, bits: int) -> np.ndarray:
    """The int64 keys whose hash bucket (of ``2**bits``) holds at least ``min_count`` keys, in their
    order: a superset of the keys that occur ``min_count`` times, found with one byte per bucket (saturating)
    so the counters stay in cache. Exact counting of the few survivors is left to the caller."""
    cnt = np.zeros(1 << bits, np.uint8)
    shift = np.uint64(64 - bits)
    for i in range(keys.size):
        b = (np.uint64(keys[i]) * _MUL) >> shift
        if cnt[b] < 255:
            cnt[b] += 1
    out = np.empty(keys.size, np.int64)
    m = 0
    for i in range(keys.size):
        if cnt[(np.uint64(keys[i]) * _MUL) >> shift] >= min_count:
            out[m] = keys[i]
            m += 1
    return out[:m]


@numba.njit(cache=True, nogil=True)
def pair_grid(tt: np.ndarray, ff: np.ndarray, ok: np.ndarray, J: np.ndarray, fanout: int, dt_max: int,
              df_max: int, shift_f1: int, shift_df: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The landmarks of peaks scaled to every grid point: (hash uint32, anchor frame int32, grid point int64),
    grid point after grid point, anchor after anchor, in candidate order.

    ``tt``, ``ff`` (grid point, peak): scaled frames and bins (int32); ``ok``: which scaled peaks may pair;
    ``J`` (peak, candidate): each anchor's candidate targets, -1 padding. At each point an anchor keeps the
    first ``fanout`` candidates inside the target zone (``1 <= dt <= dt_max``, ``|df| <= df_max``), hashed
    as :func:`bgmid.fingerprint.landmarks.pack_hashes` packs them (``shift_f1``, ``shift_df``: its bit
    offsets). The loop of :func:`bgmid.alterations.undo_grid`, which in numpy built (point, anchor,
    candidate) arrays four times the size of its output."""
    G, n = tt.shape
    cap = G * n * fanout
    h = np.empty(cap, np.uint32)
    t = np.empty(cap, np.int32)
    g = np.empty(cap, np.int64)
    m = 0
    for gi in range(G):
        for i in range(n):
            if not ok[gi, i]:
                continue
            kept = 0
            for c in range(J.shape[1]):
                j = J[i, c]
                if j < 0 or not ok[gi, j]:
                    continue
                dt = tt[gi, j] - tt[gi, i]
                df = ff[gi, j] - ff[gi, i]
                if dt < 1 or dt > dt_max or df < -df_max or df > df_max:
                    continue
                h[m] = ((np.uint32(ff[gi, i]) << np.uint32(shift_f1)) | (np.uint32(df + df_max) << np.uint32(shift_df))
                        | np.uint32(dt))
                t[m] = tt[gi, i]
                g[m] = gi
                m += 1
                kept += 1
                if kept == fanout:
                    break
    return h[:m], t[:m], g[:m]

