"""Landmark fingerprints: streamed == whole-signal, density and fan-out control, hash layout."""

import numpy as np
import pytest
import soundfile as sf
from signals import synth_music

from bgmid.audio import load
from bgmid.fingerprint import PRESETS, fingerprint
from bgmid.fingerprint.landmarks import fingerprint_file, hash_bits, spectrogram


@pytest.mark.parametrize("name", ["p1", "p2"])
def test_streamed_file_equals_whole_signal(tmp_path, name):
    p = PRESETS[name]
    x = synth_music(7, 150.0, 22050)
    sf.write(tmp_path / "a.flac", x, 22050)
    whole = fingerprint(load(tmp_path / "a.flac", p.sample_rate)[0], p)
    streamed, dur = fingerprint_file(tmp_path / "a.flac", p, block_s=20)
    assert abs(dur - 150.0) < 0.01
    a = sorted(zip(whole.hashes.tolist(), whole.times.tolist()))
    b = sorted(zip(streamed.hashes.tolist(), streamed.times.tolist()))
    assert len(a) > 5000 and a == b


def test_density_and_fanout_control_hash_rate():
    p = PRESETS["p1"]
    x = np.random.default_rng(0).standard_normal(p.sample_rate * 30).astype(np.float32)
    base = len(fingerprint(x, p)) / 30
    # white noise has peaks everywhere: the per-second quota binds, so hashes/s ~ density x fanout
    assert 0.8 * p.density * p.fanout < base <= p.density * p.fanout * 1.05
    assert len(fingerprint(x, p, density_factor=2, fanout_factor=2)) / 30 > 3 * base


def test_hash_fields_fit_and_silence_gives_nothing():
    for p in PRESETS.values():
        assert sum(hash_bits(p)) <= 32
    p = PRESETS["p2"]
    assert len(fingerprint(np.zeros(p.sample_rate * 5, np.float32), p)) == 0
    assert spectrogram(np.zeros(10, np.float32), p).shape[0] == 0


@pytest.mark.parametrize("shift", [10, 21, 43])
def test_query_analysis_recovers_reference_hashes_at_any_offset(shift):
    """A query cut anywhere (not on a frame-block boundary) still contains most of the reference's hashes
    at the right relative time when analysed with the query options (denser peaks, larger fan-out)."""
    p = PRESETS["p1"]
    x = synth_music(3, 20.0, p.sample_rate)
    ref = fingerprint(x, p)
    q = fingerprint(x[p.hop * shift:], p, density_factor=2, fanout_factor=2)
    ref_pairs = {(h, t - shift) for h, t in zip(ref.hashes.tolist(), ref.times.tolist()) if t >= shift + 5}
    found = ref_pairs & set(zip(q.hashes.tolist(), q.times.tolist()))
    assert len(found) > 0.85 * len(ref_pairs)


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (40, 257), (200, 31)])
@pytest.mark.parametrize("size", [(7, 13), (1, 1), (3, 1), (9, 3)])
def test_box_max_equals_scipy_maximum_filter(shape, size):
    """The peak picker's neighbourhood maximum is scipy's ``maximum_filter(mode="nearest")`` exactly, with
    windows wider than the array, ties (quantised values) and a real log spectrogram."""
    from scipy import ndimage

    from bgmid.fingerprint.landmarks import box_max

    rng = np.random.default_rng(shape[0] * 31 + size[1])
    s = np.round(rng.standard_normal(shape) * 3).astype(np.float32)  # many equal neighbours
    assert np.array_equal(box_max(s, size), ndimage.maximum_filter(s, size=size, mode="nearest"))
    spec = spectrogram(synth_music(5, 4.0, 11025), PRESETS["p1"])
    assert np.array_equal(box_max(spec, size), ndimage.maximum_filter(spec, size=size, mode="nearest"))
