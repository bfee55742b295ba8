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
        assert a.programme_end_s <= b.programme_start_s  # no overlapping cues
    for c in cues:
        assert -25.0 <= c.level_db <= 5.0 and 5.0 <= c.programme_end_s - c.programme_start_s <= 40.0 + 1e-6
        n = int(round((c.programme_end_s - c.programme_start_s) * sr))
        piece = cor.crop(c.track_id, int(round(c.track_offset_s * sr)), n)
        # least-squares gain of the track piece in the programme, away from the fades: it must be there,
        # at the stated level relative to the dialogue (speech is uncorrelated with it)
        a = int(round(c.programme_start_s * sr))
        lo, hi = int((c.fade_in_s + 0.05) * sr), n - int((c.fade_out_s + 0.05) * sr)
        seg, ref = y[a + lo : a + hi], piece[lo:hi]
        g = float(np.dot(seg, ref) / np.dot(ref, ref))
        level = 10 * math.log10(g * g * np.mean(piece.astype(np.float64) ** 2) / p_dialogue)
        assert abs(level - c.level_db) < 1.5, (c, level)
        # and a wrong offset would not fit: the piece 5.25 s later is not in the programme
        wrong = cor.crop(c.track_id, int(round((c.track_offset_s + 5.25) * sr)), n)[lo:hi]
        assert abs(np.dot(seg, wrong)) < 0.5 * abs(np.dot(seg, ref))
    # silences not covered by a cue are silent; dialogue passages are not
    for p in info["passages"]:
        a, b = int(p["start_s"] * sr), int(p["end_s"] * sr)
        covered = any(c.programme_start_s < p["end_s"] and c.programme_end_s > p["start_s"] for c in cues)
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
