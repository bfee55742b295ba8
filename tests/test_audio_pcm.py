"""Mono PCM WAV is read straight from its packets (bgmid.audio._raw_pcm, the cheap path that made indexing WAV
files twice as fast): the samples are bit for bit those of PyAV's decoder and resampler, which every other
stream goes through; stereo and 24-bit files still take the resampler."""

import numpy as np
import pytest
import soundfile as sf

import bgmid.audio as audio


@pytest.mark.parametrize("subtype, channels", [("PCM_16", 1), ("FLOAT", 1), ("PCM_24", 1), ("PCM_16", 2)])
def test_raw_pcm_equals_the_decoder(tmp_path, monkeypatch, subtype, channels):
    rng = np.random.default_rng(3)
    x = np.clip(rng.standard_normal((40000, channels)) * 0.3, -1, 1)
    path = tmp_path / "x.wav"
    sf.write(path, x, 16000, subtype=subtype)
    raw, used = audio._raw_pcm, []
    monkeypatch.setattr(audio, "_raw_pcm", lambda *a: used.append(1) or raw(*a))
    fast = [(a.copy(), sr) for a, sr in audio._decoded_blocks(path)]
    assert bool(used) == (channels == 1 and subtype in ("PCM_16", "FLOAT"))  # which files take the cheap path
    monkeypatch.setattr(audio, "_RAW_PCM", {})
    slow = [(a.copy(), sr) for a, sr in audio._decoded_blocks(path)]
    assert {sr for _, sr in fast} == {sr for _, sr in slow} == {16000}
    a, b = np.concatenate([a for a, _ in fast]), np.concatenate([a for a, _ in slow])
    assert a.dtype == b.dtype == np.float32 and a.size == b.size == 40000
    np.testing.assert_array_equal(a, b)
    y = audio.load(path, 8000)[0]  # the resampled signal the fingerprints see is the same too
    monkeypatch.undo()
    np.testing.assert_array_equal(audio.load(path, 8000)[0], y)


@pytest.mark.parametrize("block, hop", [(1000, 1000), (1000, 300), (4096, 4000), (7, 3)])
def test_blocker_cuts_pieces_as_slicing_the_whole_signal(block, hop):
    """Pieces of any sizes (joined lazily, once a block is full) give exactly the blocks that slicing the whole
    signal does, copies the caller may keep, and the tail block only when it holds samples no block held."""
    rng = np.random.default_rng(block + hop)
    x = rng.standard_normal(10_000).astype(np.float32)
    cuts = np.sort(rng.choice(np.arange(1, x.size), 60, replace=False))
    b = audio.Blocker(block, hop)
    got = []
    for piece in np.split(x, cuts):
        buf = piece.copy()
        got += list(b.push(buf))
        buf[:] = 0  # the caller reuses its buffer: the blocker must not hold it
        np.testing.assert_array_equal(b.held(), x[b.pos: b.total])  # what is not yet passed on
    got += list(b.finish())
    starts = list(range(0, x.size - block + 1, hop))
    want = [(s, x[s: s + block]) for s in starts]
    tail = starts[-1] + hop
    if x.size - tail > block - hop:
        want.append((tail, x[tail:]))
    assert [s for s, _ in got] == [s for s, _ in want]
    for (_, a), (_, w) in zip(got, want):
        np.testing.assert_array_equal(a, w)
    assert b.total == x.size and b.held().size == 0
