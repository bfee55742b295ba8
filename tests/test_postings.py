"""The posting-list codec and the offset histogram: exact round trips against plain-Python references."""

import numpy as np
import pytest

from bgmid.index.postings import bit_length, encode
from bgmid.match import best_offsets


def _reference(h, v):
    ref: dict[int, set] = {}
    for a, b in zip(h.tolist(), v.tolist()):
        ref.setdefault(a, set()).add(b)
    return ref


@pytest.mark.parametrize(
    "n, hash_space, value_space",
    [(0, 10, 10), (1, 10, 10), (2000, 40, 100), (50_000, 2**22, 2**22), (3000, 5, 2**50), (4000, 2**31, 7)],
)
def test_encode_decode_round_trip(n, hash_space, value_space):
    rng = np.random.default_rng(n)
    h = rng.integers(0, hash_space, n).astype(np.uint32)
    v = rng.integers(0, value_space, n)
    lists = encode(h, v)
    ref = _reference(h, v)
    queries = np.concatenate([h[:500], rng.integers(0, hash_space + 1000, 500).astype(np.uint32)])
    k, counts = lists.find(queries)
    for q, kk, c in zip(queries.tolist(), k.tolist(), counts.tolist()):
        want = sorted(ref.get(q, ()))
        assert c == len(want)
        assert (kk >= 0) == bool(want)
    hit = k >= 0
    got = lists.decode(k[hit], counts[hit])
    want = np.concatenate([sorted(ref[q]) for q in queries[hit].tolist()] or [np.zeros(0)])
    assert np.array_equal(got, want)
    assert np.array_equal(lists.keys, np.unique(h))


def test_common_hashes_cost_fewer_bits_than_rare_ones():
    """Frame-of-reference gaps: a long list of close values packs tighter than the full value width."""
    v = np.arange(0, 2**20, 16)  # 65,536 values, gaps of 16 (5 bits) in a 20-bit universe
    dense = encode(np.zeros(v.size, np.uint32), v)
    assert dense.words.nbytes * 8 < v.size * 6
    sparse = encode(np.arange(v.size, dtype=np.uint32), v)  # one value per hash: full width each
    assert sparse.words.nbytes * 8 >= v.size * dense.value_bits


def test_bit_length_is_exact_at_powers_of_two():
    x = np.array([0, 1, 2, 3, 4, 7, 8, 2**31 - 1, 2**31, 2**52, 2**52 + 1])
    assert bit_length(x).tolist() == [int(a).bit_length() for a in x.tolist()]


def _brute_best(tids, offs, tolerance):
    """Per track: (best smoothed count, smallest offset reaching it), by dictionaries."""
    hist: dict[tuple[int, int], int] = {}
    for t, o in zip(tids.tolist(), offs.tolist()):
        hist[t, o] = hist.get((t, o), 0) + 1
    best: dict[int, tuple[int, int]] = {}
    for (t, o) in sorted(hist):
        c = sum(hist.get((t, o + d), 0) for d in range(-tolerance, tolerance + 1))
        if t not in best or c > best[t][0]:
            best[t] = (c, o)
    return best


@pytest.mark.parametrize("seed", range(12))
def test_best_offsets_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n, n_tracks = int(rng.integers(1, 2000)), int(rng.integers(1, 40))
    tids = rng.integers(0, n_tracks, n)
    offs = rng.integers(-300, 4000, n)
    k = min(n, 150)  # a planted alignment with jitter
    tids[:k] = rng.integers(0, n_tracks)
    offs[:k] = 77 + rng.integers(-2, 3, k)
    tolerance, top, min_count = seed % 3, 1 + seed % 4, seed % 5
    tracks, offsets, counts = best_offsets(tids, offs, top, tolerance, min_count)
    best = _brute_best(tids, offs, tolerance)
    want = sorted((c for c, _ in best.values() if c >= min_count), reverse=True)[:top]
    assert counts.tolist() == want
    for t, o, c in zip(tracks.tolist(), offsets.tolist(), counts.tolist()):
        assert best[t] == (c, o)
