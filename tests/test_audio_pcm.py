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
