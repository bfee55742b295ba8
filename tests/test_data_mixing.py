"""Mixing dataset and fixed sets on a small generated cache (no download, no decoding)."""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import numpy as np
import pytest
from scipy.signal import welch
from signals import synth_speech

from bgmid.audio import resample
from bgmid.data import corpus, mixing
from bgmid.errors import BgmidError


def fast_music(seed: int, duration_s: float, sr: int = 22050) -> np.ndarray:
    """Cheap music-like signal: a chord per 0.5 s (3 notes x 6 harmonics, decaying) plus noise hits."""
    rng = np.random.default_rng(seed)
    n = int(duration_s * sr)
    seg = sr // 2
    t = np.arange(seg) / sr
    h = np.arange(1, 7)
    chords = []
    for _ in range(8):  # a per-track vocabulary of 8 chords, sequenced at random
        f0 = 110 * 2 ** (rng.integers(0, 24, 3) / 12)
        parts = np.sin(2 * np.pi * (f0[:, None, None] * h[None, :, None]) * t[None, None, :])
        x = (parts / h[None, :, None]).sum(axis=(0, 1)) * np.exp(-3 * t)
        chords.append(x + 0.3 * rng.standard_normal(seg) * np.exp(-t / 0.02))
    out = np.concatenate([chords[i] for i in rng.integers(0, 8, n // seg + 1)])[:n]
    return (0.3 * out / np.abs(out).max()).astype(np.float32)


def make_fake_cache(root: Path, n_music: int = 14, music_s: float = 40.0) -> Path:
    """Write a corpus cache directly (int16 arrays at the stored rates and a manifest with fixed splits):
    music tracks in every split, a wideband speech source and a 3.4 kHz-band one in train/test/val."""
    from scipy.signal import butter, sosfiltfilt

    recs = []
    splits = ["train", "train", "train", "train", "train", "train", "val", "val", "test", "test", "test",
              "ooi", "ooi", "train"]

    def put(item_id: str, x22: np.ndarray) -> None:
        for rate in corpus.CACHE_RATES:
            y = resample(x22, 22050, rate)
            corpus._atomic_save_npy(corpus.audio_path(root, item_id, rate), corpus._to_int16(y))

    for i in range(n_music):
        x = fast_music(500 + i, music_s, 22050)
        iid = f"m{i:015d}"
        put(iid, x)
        recs.append({"id": iid, "kind": "music", "split": splits[i % len(splits)], "package": f"pk{i % 3}",
                     "title": f"track{i}", "orig_path": f"music/track{i}.ogg", "licence": "", "duration_s":
                     music_s, "orig_sr": 22050, "bandwidth_hz": 8000.0, "bandwidth99_hz": 4000.0,
                     "rms_dbfs": -20.0, "language": "", "speaker": "", "group": ""})
    sos = butter(10, 3400, fs=22050, output="sos")
    for src, band in (("wide", 0), ("narrow", 3400)):
        for split in ("train", "val", "test"):
            for k in range(6):
                rng = np.random.default_rng(zlib.crc32(f"{src}{split}{k}".encode()))
                x = synth_speech(int(rng.integers(1 << 30)), float(rng.uniform(0.8, 2.5)), 22050)
                x = x + 0.02 * rng.standard_normal(x.size).astype(np.float32) * (np.abs(x) > 0.01)  # fricative
                if band:
                    x = sosfiltfilt(sos, x).astype(np.float32)
                iid = f"s{src}{split}{k:08d}"
                put(iid, x)
                recs.append({"id": iid, "kind": "speech", "split": split, "package": src, "title": iid,
                             "orig_path": "", "licence": "", "duration_s": x.size / 22050, "orig_sr": 22050,
                             "bandwidth_hz": 9000.0 if not band else 3000.0, "bandwidth99_hz": 3000.0,
                             "rms_dbfs": -20.0, "language": "xx", "speaker": f"{src}{split}",
                             "group": f"{src}:{split}"})
    (root / "manifest.json").write_text(json.dumps({"version": 1, "root": str(root), "items": recs,
                                                    "duplicates": [], "summary": {}}))
    return root


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return make_fake_cache(tmp_path_factory.mktemp("cache"))


def test_training_mixtures_exact_snr_shapes_determinism(cache):
    ds = mixing.MixtureDataset(cache, "train", 16000, 16384, seed=3, p_music_only=0.1, p_speech_only=0.1)
    assert len(ds) == 10000
    mix, music, speech = ds[5]
    assert mix.shape == music.shape == speech.shape == (1, 16384)
    assert str(mix.dtype) == "torch.float32"
    np.testing.assert_allclose(mix.numpy(), music.numpy() + speech.numpy(), atol=1e-6)
    m2 = ds[5][0]
    assert np.array_equal(mix.numpy(), m2.numpy())  # same seed, epoch, index: same example
    ds.set_epoch(1)
    assert not np.array_equal(ds[5][0].numpy(), mix.numpy())
    snrs, kinds = [], {"both": 0, "music": 0, "speech": 0}
    for i in range(300):
        m, s, snr = ds.draw(np.random.default_rng(i))
        assert np.max(np.abs(m + s)) <= 0.99 + 1e-6
        if math.isinf(snr):
            kinds["music" if snr > 0 else "speech"] += 1
            assert (not np.any(s)) if snr > 0 else (not np.any(m))
            continue
        kinds["both"] += 1
        assert abs(mixing.snr_db(m, s) - snr) < 1e-3  # SNR = 10 log10(Pm/Ps) holds exactly
        snrs.append(snr)
    snrs = np.array(snrs)
    assert kinds["music"] > 10 and kinds["speech"] > 10
    assert snrs.min() >= -30 and snrs.max() <= 20
    assert 0.05 < np.mean(snrs > 0) < 0.3  # p_high_snr share in [0, 20] dB
    assert np.mean(snrs < -15) > 0.3


def test_dataloader_batches_and_pickles_small(cache):
    import pickle

    import torch

    ds = mixing.MixtureDataset(cache, "train", 16000, 4096, seed=1)
    for i in range(3):
        ds[i]  # opens memory maps
    assert len(pickle.dumps(ds)) < 200_000  # no sample arrays travel to spawned workers
    mix, music, speech = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert mix.shape == (4, 1, 4096) and torch.allclose(mix, music + speech, atol=1e-6)


def test_dataset_other_rates_and_dialogue_pauses(cache):
    ds = mixing.MixtureDataset(cache, "train", 8000, 8000 * 4, seed=0, p_music_only=0, p_speech_only=1.0)
    assert corpus.audio_path(cache, ds.music[0]["id"], 8000).exists()  # derived once, then memory-mapped
    _, _, speech = ds[0]
    assert speech.shape == (1, 32000)
    # dialogue, not wall-to-wall talk: over many 4 s draws there are silent 50 ms frames
    quiet = []
    for i in range(20):
        _, s, _ = ds.draw(np.random.default_rng(i))
        fr = s[: 32000 // 400 * 400].reshape(-1, 400)
        e = 10 * np.log10(np.mean(fr**2, axis=1) + 1e-20) - 10 * np.log10(np.mean(s**2) + 1e-20)
        quiet.append(np.mean(e < -30))
    assert 0.05 < np.mean(quiet) < 0.8


def test_wideband_sources_weighted_up(cache):
    ds = mixing.MixtureDataset(cache, "train", 16000, 1024, wideband_weight=4.0)
    p = dict(zip(ds.source_names, ds.source_p, strict=True))
    assert p["wide"] == pytest.approx(4 * p["narrow"] * math.sqrt(
        sum(r["duration_s"] for r in ds.sources["narrow"]) / sum(r["duration_s"] for r in ds.sources["wide"])
    ) ** -1, rel=1e-6)


def test_fixed_sets(cache):
    counts = mixing.build_fixed_sets(cache, "test", (16000, 22050), n_clips=8, seed=0, log=lambda m: None)
    # 3 test tracks of 40 s give 2 non-overlapping 12 s clips each from their middle 80 %; 2 ooi tracks
    assert counts["test_-10dB"] == 6 and counts["test_ooi"] == 4
    man = json.loads((cache / "manifest.json").read_text())
    split_of = {r["id"]: r["split"] for r in man["items"]}
    for sr in (16000, 22050):
        for snr in (0, -10, -20):
            clips = mixing.load_fixed_set(cache, f"test_{snr}dB", sr)
            assert len(clips) == 6
            for c in clips:
                assert c.mix.shape == (12 * sr,)
                assert abs(mixing.snr_db(c.music, c.speech) - snr) < 1e-3
                np.testing.assert_allclose(c.mix, c.music + c.speech, atol=1e-6)
                assert split_of[c.meta["music_track_id"]] == "test"
                # wideband speech only: the 3.4 kHz source is not used when a wideband one exists
                assert c.meta["speech_source"] == "wide"
                for item in c.meta["speech_lines"].split():
                    assert split_of[item.split("@")[0]] == "test"
                assert np.max(np.abs(c.mix)) <= 0.99 + 1e-6
        # the same clips at 0 and -10 dB: same music, speech 10 dB louder relative to it
        a = mixing.load_fixed_set(cache, "test_0dB", sr)[0]
        b = mixing.load_fixed_set(cache, "test_-10dB", sr)[0]
        assert a.meta["music_track_id"] == b.meta["music_track_id"]
        assert np.corrcoef(a.music, b.music)[0, 1] > 0.999
        ooi = mixing.load_fixed_set(cache, "test_ooi", sr)
        assert {split_of[c.meta["music_track_id"]] for c in ooi} == {"ooi"} and not np.any(ooi[0].speech)
        sp = mixing.load_fixed_set(cache, "test_speech", sr, limit=3)
        assert len(sp) == 3 and not np.any(sp[0].music)
    # the 22,050 Hz music reaches above 8 kHz (its speech is wideband: no low-pass recorded)
    c = mixing.load_fixed_set(cache, "test_music", 22050)[0]
    f, p = welch(c.music, fs=22050, nperseg=1024)
    assert int(c.meta["lowpass_hz"]) == 0 or int(c.meta["lowpass_hz"]) >= 8000


def test_fixed_sets_lowpass_band_limited_speech(tmp_path):
    """Where a split has only band-limited speech, music is low-passed to the speech's band."""
    root = make_fake_cache(tmp_path / "c", n_music=14, music_s=30.0)
    man = json.loads((root / "manifest.json").read_text())
    man["items"] = [r for r in man["items"] if not (r["kind"] == "speech" and r["package"] == "wide")]
    (root / "manifest.json").write_text(json.dumps(man))
    mixing.build_fixed_sets(root, "val", (16000,), n_clips=4, log=lambda m: None)
    for c in mixing.load_fixed_set(root, "val_0dB", 16000):
        lp = float(c.meta["lowpass_hz"])
        assert 3000 <= lp <= 4000 and float(c.meta["speech_band_hz"]) == lp
        f, p = welch(c.music, fs=16000, nperseg=1024)
        assert p[f > lp + 1000].sum() < 1e-4 * p.sum()


def _file_digests(d: Path) -> dict[str, str]:
    import hashlib

    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir())
            if p.suffix in (".csv", ".npy")}


def _envelope_lag_s(y: np.ndarray, x: np.ndarray, sr: int, max_s: float = 0.1) -> float:
    """Lag (s, positive: ``y`` late) between the 10 ms amplitude envelopes of ``y`` and ``x``."""
    from scipy.signal import fftconvolve

    h = np.ones(sr // 100) / (sr // 100)
    ey, ex = (fftconvolve(np.abs(v), h, mode="same") for v in (y, x))
    ey, ex = ey - ey.mean(), ex - ex.mean()
    m = int(max_s * sr)
    cc = np.correlate(ey, ex[m:-m], mode="valid")
    return (int(np.argmax(cc)) - m) / sr


def test_fixed_sets_conditions(tmp_path):
    """Conditions add sets of the same clips with their truth; the unchanged sets stay byte for byte."""
    from bgmid.data import transforms

    root = make_fake_cache(tmp_path / "c", n_music=14, music_s=40.0)
    quiet = dict(log=lambda m: None)
    mixing.build_fixed_sets(root, "test", (16000,), n_clips=4, **quiet)
    d = root / "fixed" / "16000" / "test"
    before = _file_digests(d)
    conds = ["speed+4.2", "tempo-3", "pitch+1", "broadcast", "short5"]
    counts = mixing.build_fixed_sets(root, "test", (16000,), n_clips=4, conditions=conds, **quiet)
    after = _file_digests(d)
    assert {k: after[k] for k in before} == before  # existing sets unchanged and reproducible
    names = mixing.condition_set_names("test", conds)
    assert names == ["test_0dB_speed+4.2", "test_-10dB_speed+4.2", "test_-10dB_tempo-3", "test_-10dB_pitch+1",
                     "test_-10dB_broadcast", "test_speech_broadcast", "test_-10dB_short5"]
    assert all(counts[n] == 4 for n in names)
    assert mixing.split_condition("test_-10dB_speed+4.2") == ("test_-10dB", "speed+4.2")
    assert mixing.split_condition("test_speech_broadcast") == ("test_speech", "broadcast")
    assert mixing.split_condition("test_ooi_-10dB") == ("test_ooi_-10dB", "")
    info = json.loads((d / "info.json").read_text())
    assert info["conditions"] == conds and set(names) <= set(info["sets"])

    sr = 16000
    cor = mixing.Corpus(root, sr)
    base = mixing.load_fixed_set(root, "test_-10dB", sr)
    assert all(c.speed == 1.0 and c.tempo == 1.0 and c.pitch_semitones == 0.0 and c.condition == "" for c in base)
    for name in names:
        clips = mixing.load_fixed_set(root, name, sr)
        snr = float(name.split("_")[1][:-2]) if "dB" in name else None
        for c, b in zip(clips, base, strict=True):
            np.testing.assert_allclose(c.mix, c.music + c.speech, atol=1e-6)
            if snr is not None:
                assert abs(mixing.snr_db(c.music, c.speech) - snr) < 1e-3
                assert c.meta["music_track_id"] == b.meta["music_track_id"]
    # ground truth: clip time t plays the track at track_offset_s + speed·tempo·t
    for c in mixing.load_fixed_set(root, "test_-10dB_speed+4.2", sr):
        assert c.speed == pytest.approx(25 / 24) and c.condition == "speed+4.2" and c.mix.size == 12 * sr
        a = int(round(float(c.meta["track_offset_s"]) * sr))
        ref = transforms.speed(cor.crop(c.meta["music_track_id"], a, int(12 * sr * 25 / 24) + 10), sr, 25 / 24)
        ref = ref[: 12 * sr]
        assert np.corrcoef(ref[sr:-sr], c.music[sr:-sr])[0, 1] > 0.99
    for c in mixing.load_fixed_set(root, "test_-10dB_tempo-3", sr):
        assert c.tempo == pytest.approx(0.97) and c.speed == 1.0
        # the exact time map is a resampling by 0.97: the energy envelopes line up with it (chords every 0.5 s)
        a = int(round(float(c.meta["track_offset_s"]) * sr))
        exact = transforms.speed(cor.crop(c.meta["music_track_id"], a, int(12 * sr * 0.97) + 10), sr, 0.97)
        assert abs(_envelope_lag_s(c.music, exact[: 12 * sr], sr)) <= 0.012
    for c in mixing.load_fixed_set(root, "test_-10dB_pitch+1", sr):
        assert c.pitch_semitones == 1.0 and c.tempo == 1.0 and c.mix.size == 12 * sr
    for c, b in zip(mixing.load_fixed_set(root, "test_-10dB_broadcast", sr), base, strict=True):
        assert c.meta["track_offset_s"] == b.meta["track_offset_s"]
        # processed, but the same music, aligned: cross-correlation peaks at lag 0 (±2 ms)
        m = sr // 20
        cc = np.correlate(c.music, b.music[m:-m], mode="valid")
        assert abs(int(np.argmax(cc)) - m) <= 0.002 * sr
        assert np.corrcoef(c.music, b.music)[0, 1] > 0.5
    neg = mixing.load_fixed_set(root, "test_speech_broadcast", sr)
    plain = mixing.load_fixed_set(root, "test_speech", sr)
    for c, p in zip(neg, plain, strict=True):
        assert not np.any(c.music) and np.any(c.speech) and c.meta["music_track_id"] == ""
        assert 0.5 < np.corrcoef(c.speech, p.speech)[0, 1] < 0.9999  # the dialogue, processed
    for c in mixing.load_fixed_set(root, "test_-10dB_short5", sr):
        assert c.mix.size == 5 * sr and float(c.meta["clip_s"]) == 5.0
        piece = cor.crop(c.meta["music_track_id"], int(round(float(c.meta["track_offset_s"]) * sr)), 5 * sr)
        assert np.corrcoef(piece, c.music)[0, 1] > 0.999  # the excerpt starts at its stated track offset
        assert mixing._active(c.speech, sr) > 0.3
    with pytest.raises(BgmidError, match="test_-10dB_speed"):
        mixing.load_fixed_set(root, "test_-10dB_tempo+5", sr)  # not built; the message lists what is there
    with pytest.raises(BgmidError, match="unknown condition"):
        mixing.build_fixed_sets(root, "test", (16000,), n_clips=2, conditions=["warp9"], **quiet)


def test_cli_mix_conditions(tmp_path, capsys):
    from bgmid.cli import main

    root = make_fake_cache(tmp_path / "c", n_music=14, music_s=30.0)
    assert main(["data", "mix", "--root", str(root), "--sr", "16000", "--splits", "test", "--clips", "2",
                 "--conditions", "speed-4", "aac64"]) == 0
    out = capsys.readouterr().out
    assert "test_0dB_speed-4 test_-10dB_speed-4 test_-10dB_aac64" in out
    c = mixing.load_fixed_set(root, "test_0dB_speed-4", 16000)[0]
    assert c.speed == pytest.approx(0.96) and c.meta["speed"] == "0.96"
    assert main(["data", "mix", "--root", str(root), "--conditions", "nope"]) == 2
