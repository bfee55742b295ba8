"""Long-form programmes: the cue sheet must describe the audio (where, what, how loud)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import soundfile as sf
from test_data_mixing import make_fake_cache

from bgmid.data import programmes
from bgmid.data.mixing import Corpus


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return make_fake_cache(tmp_path_factory.mktemp("pcache"), music_s=60.0)


def test_programme_cues_match_audio(cache, tmp_path):
    wav, cue_csv = programmes.generate_programme(cache, duration_s=240.0, seed=1, out=tmp_path / "p.wav",
                                                 cue_s=(5.0, 40.0))
    y, sr = sf.read(wav, dtype="float32")
    info = json.loads(wav.with_suffix(".json").read_text())
    cues = programmes.read_cue_sheet(cue_csv)
    assert abs(y.size / sr - 240.0) < 1e-3 and sr == 16000
    assert len(cues) >= 2 and any(c.music_only for c in cues)
    cor = Corpus(cache, sr)
    p_dialogue = 10 ** (info["dialogue_dbfs"] / 10)
    for a, b in zip(cues, cues[1:], strict=False):
        assert a.end_s <= b.start_s  # no overlapping cues
    for c in cues:
        assert -25.0 <= c.level_db <= 5.0 and 5.0 <= c.end_s - c.start_s <= 40.0 + 1e-6
        n = int(round((c.end_s - c.start_s) * sr))
        piece = cor.crop(c.track, int(round(c.track_offset_s * sr)), n)
        # least-squares gain of the track piece in the programme, away from the fades: it must be there,
        # at the stated level relative to the dialogue (speech is uncorrelated with it)
        a = int(round(c.start_s * sr))
        lo, hi = int((c.fade_in_s + 0.05) * sr), n - int((c.fade_out_s + 0.05) * sr)
        seg, ref = y[a + lo : a + hi], piece[lo:hi]
        g = float(np.dot(seg, ref) / np.dot(ref, ref))
        level = 10 * math.log10(g * g * np.mean(piece.astype(np.float64) ** 2) / p_dialogue)
        assert abs(level - c.level_db) < 1.5, (c, level)
        # and a wrong offset would not fit: the piece 5.25 s later is not in the programme
        wrong = cor.crop(c.track, int(round((c.track_offset_s + 5.25) * sr)), n)[lo:hi]
        assert abs(np.dot(seg, wrong)) < 0.5 * abs(np.dot(seg, ref))
    # silences not covered by a cue are silent; dialogue passages are not
    for p in info["passages"]:
        a, b = int(p["start_s"] * sr), int(p["end_s"] * sr)
        covered = any(c.start_s < p["end_s"] and c.end_s > p["start_s"] for c in cues)
        if p["kind"] == "silence" and not covered:
            assert np.max(np.abs(y[a:b])) < 1e-3
        if p["kind"] == "dialogue" and b - a > sr:
            assert np.sqrt(np.mean(y[a:b] ** 2)) > 1e-3


def test_programme_without_music(cache, tmp_path):
    wav, cue_csv = programmes.generate_programme(cache, duration_s=120.0, seed=2, with_music=False,
                                                 out=tmp_path / "n.wav")
    assert programmes.read_cue_sheet(cue_csv) == []
    info = json.loads(wav.with_suffix(".json").read_text())
    assert {p["kind"] for p in info["passages"]} <= {"dialogue", "silence"}


def test_programme_speed_maps_truth(cache, tmp_path):
    """``data programme --speed R``: the whole programme R times faster; cue times / R, track offsets kept."""
    from bgmid.cli import main
    from bgmid.data import transforms

    r = 1.0416667
    wav0, csv0 = programmes.generate_programme(cache, duration_s=240.0, seed=4, out=tmp_path / "p.wav",
                                               cue_s=(8.0, 30.0))
    assert main(["data", "programme", "--root", str(cache), "--duration", "240", "--seed", "4", "--speed",
                 str(r), "--out", str(tmp_path / "fast.wav")]) == 0
    # the CLI's programme uses the default cue lengths: compare with the library call of the same arguments
    wav1, csv1 = programmes.generate_programme(cache, duration_s=240.0, seed=4, out=tmp_path / "f2.wav",
                                               cue_s=(8.0, 30.0), speed=r)
    assert (tmp_path / "fast.cues.csv").exists()
    y0, sr = sf.read(wav0, dtype="float32")
    y1, _ = sf.read(wav1, dtype="float32")
    assert abs(y1.size / sr - 240.0 / r) < 1e-3
    c0, c1 = programmes.read_cue_sheet(csv0), programmes.read_cue_sheet(csv1)
    assert len(c0) == len(c1) >= 2
    for a, b in zip(c0, c1, strict=True):
        assert b.track == a.track and b.track_offset_s == a.track_offset_s  # the track's own time line
        assert b.start_s == pytest.approx(a.start_s / r, abs=1e-5)
        assert b.end_s == pytest.approx(a.end_s / r, abs=1e-5)
    info = json.loads(wav1.with_suffix(".json").read_text())
    assert info["speed"] == r and info["tempo"] == 1.0 and info["pitch_semitones"] == 0.0
    assert info["duration_s"] == pytest.approx(240.0 / r, abs=1e-3)
    with open(csv1) as f:
        header = f.readline().strip().split(",")
    assert header == list(programmes.CUE_FIELDS) + ["speed", "tempo", "pitch_semitones"]
    with open(csv0) as f:
        assert f.readline().strip().split(",") == list(programmes.CUE_FIELDS)  # default output as before
    assert "speed" not in json.loads(wav0.with_suffix(".json").read_text())
    # the audio agrees with the truth: at aired time t the programme plays the track, sped up, at
    # track_offset_s + r·(t - programme_start_s)
    cor = Corpus(cache, sr)
    checked = 0
    for c in c1:
        if c.end_s - c.start_s < 4.0:
            continue
        checked += 1
        n = int((c.end_s - c.start_s) * sr)
        piece = transforms.speed(cor.crop(c.track, int(round(c.track_offset_s * sr)), int(n * r) + 10), sr, r)[:n]
        a = int(round(c.start_s * sr))
        lo, hi = int((c.fade_in_s + 0.1) * sr), n - int((c.fade_out_s + 0.1) * sr)
        seg, ref = y1[a + lo : a + hi], piece[lo:hi]
        wrong = transforms.speed(cor.crop(c.track, int(round((c.track_offset_s + 5.25) * sr)), int(n * r) + 10),
                                 sr, r)[lo:hi]
        assert abs(np.dot(seg, ref)) > 2 * abs(np.dot(seg, wrong)), c
        lag = np.argmax(np.correlate(y1[a + lo - 80 : a + hi + 80], ref, mode="valid")) - 80
        assert abs(lag) <= 2  # within 2 samples of the stated time
    assert checked >= 2


def test_programme_tempo_pitch_options(cache, tmp_path):
    wav, cue_csv = programmes.generate_programme(cache, duration_s=60.0, seed=5, out=tmp_path / "t.wav",
                                                 tempo=1.03, pitch_semitones=-1.0)
    y, sr = sf.read(wav, dtype="float32")
    assert abs(y.size / sr - 60.0 / 1.03) < 0.01
    info = json.loads(wav.with_suffix(".json").read_text())
    assert info["tempo"] == 1.03 and info["pitch_semitones"] == -1.0 and info["speed"] == 1.0
    assert all(p["end_s"] <= 60.0 / 1.03 + 1e-3 for p in info["passages"])
    default = programmes.generate_programme(cache, duration_s=60.0, seed=5, tempo=1.03)[0]
    assert default.name == "prog_5_tempo1.03.wav"
