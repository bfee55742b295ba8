"""Scene augmentations (bgmid.data.scenes) on generated audio, the effects set, and scene training mixtures."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.signal import welch
from signals import synth_speech
from test_data_mixing import make_fake_cache

from bgmid.data import corpus, mixing, scenes
from bgmid.data.effects import effects_root, load_effects

SR = 16000


def _frame_db(x: np.ndarray, sr: int = SR, frame_s: float = 0.05) -> np.ndarray:
    h = int(frame_s * sr)
    m = x.size // h
    return 10 * np.log10(np.mean(x[: m * h].reshape(m, h) ** 2, axis=1) + 1e-12)


def test_babble_unit_power_and_fills_the_pauses() -> None:
    """A crowd of six voices has unit power and far fewer quiet frames than one voice (its pauses fill in)."""
    rng = np.random.default_rng(0)
    voices = [synth_speech(10 + k, 6.0, SR) for k in range(6)]
    one = scenes.babble(voices[:1], rng)
    six = scenes.babble(voices, rng)
    assert six.shape == one.shape == voices[0].shape and six.dtype == np.float32
    assert scenes.rms(six) == pytest.approx(1.0, rel=1e-4)
    quiet = [float(np.mean(_frame_db(y) < 20 * np.log10(scenes.rms(y)) - 15)) for y in (one, six)]
    assert quiet[1] < 0.5 * quiet[0]
    assert not np.any(scenes.babble([np.zeros(100, np.float32)], rng))


@pytest.mark.parametrize("rt60", [0.3, 0.8])
def test_room_ir_decay_time_and_direct_to_reverberant_ratio(rt60: float) -> None:
    ir = scenes.room_ir(np.random.default_rng(1), SR, rt60, drr_db=6.0)
    assert ir.size == int(round(rt60 * SR)) and ir[0] == 1.0
    assert scenes.rt60_of(ir, SR) == pytest.approx(rt60, rel=0.15)
    drr = 10 * np.log10(ir[0] ** 2 / np.sum(ir[1:].astype(np.float64) ** 2))
    assert drr == pytest.approx(6.0, abs=0.01)
    assert not np.any(ir[1 : int(0.004 * SR)])  # pre-delay: silence between the direct path and the tail


def test_reverberate_keeps_length_and_alignment() -> None:
    """The direct path stays where it was (cross-correlation peaks at lag 0), the tail smears after it."""
    x = synth_speech(3, 3.0, SR)
    ir = scenes.room_ir(np.random.default_rng(2), SR, 0.6, drr_db=3.0)
    y = scenes.reverberate(x, ir)
    assert y.shape == x.shape and y.dtype == np.float32
    lags = np.arange(-200, 201)
    xc = [float(np.dot(x[200:-200], np.roll(y, -k)[200:-200])) for k in lags]
    assert lags[int(np.argmax(xc))] == 0
    click = np.zeros(SR, np.float32)
    click[100] = 1.0
    np.testing.assert_allclose(scenes.reverberate(click, ir)[100 : 100 + ir.size], ir, atol=1e-6)
    # the pauses of the dialogue fill with the room: fewer frames 30 dB below the level
    quiet = [float(np.mean(_frame_db(z) < 20 * np.log10(scenes.rms(z)) - 30)) for z in (x, y)]
    assert quiet[1] < quiet[0]


def test_equalise_tilt_and_bell_measured_on_noise() -> None:
    """On white noise the measured band-power differences match the EQ curve; power is kept."""
    x = np.random.default_rng(3).standard_normal(4 * SR).astype(np.float32)
    y = scenes.equalise(x, SR, tilt_db_per_octave=3.0, bell_hz=6000.0, bell_db=0.0)
    f, px = welch(x, fs=SR, nperseg=2048)
    _, py = welch(y, fs=SR, nperseg=2048)
    rel = 10 * np.log10(py / px)

    def at(hz: float) -> float:
        return float(np.mean(rel[(f > hz / 1.1) & (f < hz * 1.1)]))

    assert at(4000) - at(250) == pytest.approx(12.0, abs=1.0)  # 4 octaves x 3 dB
    assert scenes.rms(y) == pytest.approx(scenes.rms(x), rel=1e-4)
    z = scenes.equalise(x, SR, 0.0, 1000.0, 9.0)
    _, pz = welch(z, fs=SR, nperseg=2048)
    relz = 10 * np.log10(pz / px)
    band = (f > 900) & (f < 1100)
    far = (f > 6000) & (f < 7000)
    assert float(np.mean(relz[band]) - np.mean(relz[far])) == pytest.approx(9.0, abs=1.0)
    np.testing.assert_allclose(scenes.equalise(x, SR, 0.0, 1000.0, 0.0), x, atol=1e-5)


def test_level_ramp_end_to_end_gain() -> None:
    x = np.ones(SR, np.float32)
    y = scenes.level_ramp(x, 0.0, -6.0)
    assert y[0] == pytest.approx(1.0) and 20 * np.log10(y[-1]) == pytest.approx(-6.0, abs=1e-4)
    assert np.all(np.diff(y) <= 0)


def test_place_effects_bounds_fades_and_long_effects() -> None:
    rng = np.random.default_rng(4)
    n = SR
    fx = [np.ones(int(0.3 * SR), np.float32), np.ones(3 * SR, np.float32)]
    for _ in range(50):
        for start, piece in scenes.place_effects(fx, n, rng, SR):
            assert 0 <= start and start + piece.size <= n and piece.size > 0
            if start == 0 or start + piece.size == n:  # a cut edge fades (no click)
                assert min(abs(piece[0]), abs(piece[-1])) < 0.01
    long_pieces = [p for s, p in scenes.place_effects([fx[1]], n, rng, SR)]
    assert long_pieces[0].size == n  # an effect longer than the example is cropped to it


def _fake_effects(root: Path) -> None:
    """An effects set written directly (as bgmid data effects would): noise bursts and chirps in each split."""
    out = effects_root(root)
    recs = []
    for k in range(12):
        rng = np.random.default_rng(100 + k)
        d = float(rng.uniform(0.2, 2.0))
        for rate in corpus.CACHE_RATES:
            t = np.arange(int(d * rate)) / rate
            x = (0.3 * rng.standard_normal(t.size) * np.exp(-3 * t)).astype(np.float32)
            corpus._atomic_save_npy(out / "audio" / str(rate) / f"e{k:015d}.npy", corpus._to_int16(x))
        recs.append({"id": f"e{k:015d}", "package": "fx", "orig_path": f"s/{k}.ogg", "title": str(k),
                     "licence": "", "duration_s": d, "orig_sr": 22050, "bandwidth_hz": 8000.0, "rms_dbfs": -20.0,
                     "split": ("train", "val", "test")[k % 3]})
    (out / "effects.json").write_text(json.dumps({"version": 1, "items": recs, "summary": {}, "packages": ["fx"]}))


@pytest.fixture(scope="module")
def scene_cache(tmp_path_factory) -> Path:
    root = make_fake_cache(tmp_path_factory.mktemp("scene_cache"), n_music=8, music_s=20.0)
    _fake_effects(root)
    return root


def test_load_effects_splits_and_rates(scene_cache: Path) -> None:
    tr = load_effects(scene_cache, "train", 16000)
    te = load_effects(scene_cache, "test", 11025)
    assert len(tr) == 4 and len(te) == 4
    assert all(e.dtype == np.float32 and e.size > 0 for e in tr + te)


def test_scene_mixtures_exact_snr_and_harder_than_dialogue(scene_cache: Path) -> None:
    """Scene examples keep mix == music + non-music and the drawn SNR exactly; their non-music stem has far
    fewer quiet frames than clean dialogue (crowds, rooms and effects fill the pauses)."""
    cfg = scenes.SceneConfig(p_babble=1.0, p_effects=1.0, p_reverb=1.0, p_eq=1.0, p_level_ramp=1.0)
    ds = mixing.MixtureDataset(scene_cache, "train", 16000, 16384, seed=1, scene=cfg, p_music_only=0.0,
                               p_speech_only=0.0, p_high_snr=0.0)
    clean = mixing.MixtureDataset(scene_cache, "train", 16000, 16384, seed=1, p_music_only=0.0, p_speech_only=0.0,
                                  p_high_snr=0.0)
    assert len(ds.effects) == 4 and not clean.effects
    mix, music, speech = ds[0]
    np.testing.assert_allclose(mix.numpy(), music.numpy() + speech.numpy(), atol=1e-6)
    quiet = {"scene": [], "clean": []}
    for i in range(12):
        for key, d in (("scene", ds), ("clean", clean)):
            m, s, snr = d.draw(np.random.default_rng(i))
            assert abs(mixing.snr_db(m, s) - snr) < 1e-3 and np.max(np.abs(m + s)) <= 0.99 + 1e-6
            quiet[key].append(float(np.mean(_frame_db(s) < 20 * np.log10(scenes.rms(s)) - 20)))
    assert np.mean(quiet["scene"]) < 0.5 * np.mean(quiet["clean"])
    assert math.isfinite(float(np.mean(quiet["scene"])))
