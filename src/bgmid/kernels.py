"""Compiled loops (numba) for the passes over memory that numpy cannot fuse: the alteration search's vote.

The search (:func:`bgmid.alterations.search`) votes with ~1 M rare postings per query. In numpy that is five
or six passes over arrays of that size (gather the postings' spans, repeat the query values, subtract, shift,
bucket, gather the bucket counts), and the pairing of :func:`bgmid.alterations.undo_grid` builds (point,
anchor, candidate) arrays four times the size of its output; as loops they cost a third (measured by
``benchmarks/alterations.py``). The numpy code stays in :mod:`bgmid.alterations`, with the same results.

Loading numba costs ~0.9 s per process (its import, and its first function loaded from the on-disk cache),
which a one-off ``bgmid identify`` would pay for one search. So the loops below are plain Python functions,
compiled by :func:`compiled` in a background thread once a process shows it searches again and again
(:data:`bgmid.alterations.COMPILE_AFTER` searches); until they are ready, and where numba is not installed,
the numpy code serves. Compiled code is cached on disk (``cache=True``), so only the first process
after an install compiles (~3 s, in the background too). ``BGMID_KERNELS=numpy`` in the environment keeps a
process on the numpy code (to compare, or where numba misbehaves).
"""

from __future__ import annotations

import os
import threading
from types import SimpleNamespace

import numpy as np

__all__ = ["compiled", "gather_votes", "hot_keys", "pair_grid"]

#: Fibonacci hashing of the vote keys into buckets: spreads keys that differ in their low bits (offsets)
BUCKET_MUL = np.uint64(0x9E3779B97F4A7C15)


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


def hot_keys(keys: np.ndarray, min_count: int, bits: int) -> np.ndarray:
    """The int64 keys whose hash bucket (of ``2**bits``) holds at least ``min_count`` keys, in their
    order: a superset of the keys that occur ``min_count`` times, found with one byte per bucket (saturating)
    so the counters stay in cache. Exact counting of the few survivors is left to the caller."""
    cnt = np.zeros(1 << bits, np.uint8)
    shift = np.uint64(64 - bits)
    for i in range(keys.size):
        b = (np.uint64(keys[i]) * BUCKET_MUL) >> shift
        if cnt[b] < 255:
            cnt[b] += 1
    out = np.empty(keys.size, np.int64)
    m = 0
    for i in range(keys.size):
        if cnt[(np.uint64(keys[i]) * BUCKET_MUL) >> shift] >= min_count:
            out[m] = keys[i]
            m += 1
    return out[:m]


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



_lock = threading.Lock()
_loader: threading.Thread | None = None
_loaded: SimpleNamespace | None = None


def compiled(start: bool = False, wait: bool = False) -> SimpleNamespace | None:
    """The compiled loops (``gather_votes``, ``hot_keys``, ``pair_grid``) once they are loaded, else None.

    ``start``: begin loading them in a background thread (once per process; numba's import and the cache
    load do not hold up the caller, which uses numpy meanwhile). ``wait``: load them now and wait (tests).
    Stays None where numba is missing or fails to compile: the numpy code is always there."""
    global _loader
    if os.environ.get("BGMID_KERNELS", "").lower() == "numpy":
        return None
    if _loaded is None and (start or wait):
        with _lock:
            if _loader is None:  # not a daemon: an exit waits for it instead of killing it inside LLVM
                _loader = threading.Thread(target=_load, name="bgmid-kernels")
                _loader.start()
        if wait:
            _loader.join()
    return _loaded


def _load() -> None:
    """Compile (or load from the cache) every loop and run each once on a tiny input, so the first search
    that uses them does not pay for it."""
    global _loaded
    try:
        import numba

        jit = numba.njit(cache=True, nogil=True)
        ns = SimpleNamespace(gather_votes=jit(gather_votes), hot_keys=jit(hot_keys), pair_grid=jit(pair_grid))
        z = np.zeros(1, np.int64)
        ns.gather_votes(np.zeros(2, np.int32), z, z, z)
        ns.hot_keys(z, 2, 4)
        ns.pair_grid(np.zeros((1, 2), np.int32), np.zeros((1, 2), np.int32), np.ones((1, 2), bool),
                     np.full((2, 2), -1, np.int64), 1, 1, 1, 2, 1)
    except Exception:  # noqa: BLE001 - numba missing or broken: numpy serves, with the same results
        return
    _loaded = ns
