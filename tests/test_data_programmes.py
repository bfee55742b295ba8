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


def test_hard_programme_has_every_structure_and_its_cue_sheet_describes_the_audio(cache, tmp_path):
    wav, cue_csv = programmes.generate_hard_programme(cache, duration_s=400.0, seed=3, out=tmp_path / "h.wav")
    y, sr = sf.read(wav, dtype="float32")
    info = json.loads(wav.with_suffix(".json").read_text())
    rows = programmes.read_cue_sheet(cue_csv)
    assert abs(y.size / sr - 400.0) < 1e-3 and info["structure"] == "hard"
    kinds = {p["kind"] for p in info["passages"]}
    assert {"dialogue", "crowd", "silence"} <= kinds
    # a featured passage inside a cue: background, music-only, background rows of one track, offsets continuous
    trio = [(a, b, c) for a, b, c in zip(rows, rows[1:], rows[2:], strict=False)
            if a.track == b.track == c.track and b.music_only and not a.music_only and a.end_s == b.start_s]
    assert trio
    a, b, _ = trio[0]
    assert abs(b.track_offset_s - (a.track_offset_s + a.duration_s)) < 1e-3
    assert abs(b.level_db - a.level_db - 6.0) < 0.01
    # an edit: two rows of one track that touch, with the track position jumping
    edits = [(a, b) for a, b in zip(rows, rows[1:], strict=False) if a.track == b.track and a.end_s == b.start_s
             and not (a.music_only or b.music_only)]
    assert edits and all(abs(b.track_offset_s - (a.track_offset_s + a.duration_s)) > 1.0 for a, b in edits)
    assert any(3.0 <= r.duration_s <= 5.0 and r.level_db >= 0 for r in rows)  # a sting
    starts = sorted(rows, key=lambda r: r.start_s)
    assert any(0 <= b.start_s - a.end_s <= 3.0 and a.track != b.track for a, b in zip(starts, starts[1:]))  # suite
    assert any(b.start_s < a.end_s and a.track != b.track for a, b in zip(starts, starts[1:]))  # cross-fade
    # each row's music is in the programme at its offset, at its stated level (least squares, dialogue and
    # crowd are uncorrelated with it); parts of one cue share the gain curve, so test away from ramps and fades
    cor = Corpus(cache, sr)
    p_dialogue = 10 ** (info["dialogue_dbfs"] / 10)
    overlapped = {id(r) for a, b in zip(starts, starts[1:]) if b.start_s < a.end_s for r in (a, b)}
    tested = 0
    for r in rows:
        if id(r) in overlapped or r.duration_s < 4.0:
            continue
        n = int(round(r.duration_s * sr))
        piece = cor.crop(r.track, int(round(r.track_offset_s * sr)), n)
        lo, hi = int((max(r.fade_in_s, 0.5) + 0.3) * sr), n - int((max(r.fade_out_s, 0.5) + 0.3) * sr)
        s0 = int(round(r.start_s * sr))
        seg, ref = y[s0 + lo : s0 + hi], piece[lo:hi]
        g = float(np.dot(seg, ref) / np.dot(ref, ref))
        level = 10 * math.log10(g * g * np.mean(piece.astype(np.float64) ** 2) / p_dialogue)
        assert abs(level - r.level_db) < 1.5, (r, level)
        tested += 1
    assert tested >= 5


def test_cli_writes_a_hard_programme(cache, tmp_path, capsys):
    from bgmid.cli import main

    out = tmp_path / "h.wav"
    assert main(["data", "programme", "--root", str(cache), "--hard", "--duration", "200", "--seed", "4",
                 "--out", str(out)]) == 0
    assert out.exists() and programmes.read_cue_sheet(out.with_suffix(".cues.csv"))
