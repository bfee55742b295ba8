"""Harder fixed sets (continuous dialogue, crowd, -25 dB) on a generated cache: exact SNRs, the same clips as the
base sets, denser speech than the base dialogue, statistics, and no file of the folder ever overwritten."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_data_mixing import make_fake_cache

from bgmid.data import hard_sets, mixing
from bgmid.evaluate.identification import set_role

SR = 16000


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    root = make_fake_cache(tmp_path_factory.mktemp("hard_cache"), n_music=14, music_s=40.0)
    mixing.build_fixed_sets(root, "test", (SR,), n_clips=6, seed=0, log=lambda m: None)
    return root


def _folder(root: Path) -> Path:
    return root / "fixed" / str(SR) / "test"


def test_scene_sets_exact_snr_same_clips_and_stats(built: Path) -> None:
    d = _folder(built)
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    counts = hard_sets.build_scene_sets(built, "test", SR, log=lambda m: None)
    assert sorted(counts) == sorted(hard_sets.scene_set_names("test")) and set(counts.values()) == {6}
    for name, data in before.items():  # nothing that was there changed
        assert (d / name).read_bytes() == data, name
    base = mixing.load_fixed_set(built, "test_-10dB", SR)
    for name, snr in (("test_-10dB_turns", -10), ("test_-20dB_turns", -20), ("test_-25dB_turns", -25),
                      ("test_-10dB_crowd", -10), ("test_-25dB", -25)):
        clips = mixing.load_fixed_set(built, name, SR)
        assert len(clips) == 6
        for c, b in zip(clips, base, strict=True):
            assert abs(mixing.snr_db(c.music, c.speech) - snr) < 1e-3
            np.testing.assert_allclose(c.mix, c.music + c.speech, atol=1e-6)
            assert c.meta["music_track_id"] == b.meta["music_track_id"]  # the same clips as the base sets
            assert np.corrcoef(c.music, b.music)[0, 1] > 0.999
        assert set_role(name) == ("mixture", float(snr))
    crowd = mixing.load_fixed_set(built, "test_-10dB_crowd", SR)[0]
    assert float(crowd.meta["dialogue_snr_db"]) == pytest.approx(-10 - 3.01, abs=0.01)
    neg = mixing.load_fixed_set(built, "test_speech_crowd", SR)
    assert not np.any(neg[0].music) and set_role("test_speech_crowd")[0] == "speech"
    st = json.loads((d / "scene_sets.json").read_text())["sets"]
    # continuous dialogue and crowds leave far shorter pauses than the base dialogue
    assert st["test_-10dB_turns"]["pause_max_s"] < st["test_-10dB"]["pause_max_s"]
    assert st["test_-10dB_turns"]["pause_p90_s"] < st["test_-10dB"]["pause_p90_s"]
    assert st["test_-10dB_crowd"]["active_fraction"] > st["test_-10dB"]["active_fraction"]
    assert st["test_-10dB_turns"]["active_fraction"] > st["test_-10dB"]["active_fraction"]
    assert 5000 < st["test_-10dB"]["speech_band_hz"] <= SR / 2
    # a second run keeps every file as it is and writes its statistics beside
    snap = {p.name: p.read_bytes() for p in d.iterdir()}
    assert hard_sets.build_scene_sets(built, "test", SR, log=lambda m: None) == {}
    for name, data in snap.items():
        assert (d / name).read_bytes() == data, name
    assert (d / "scene_sets.new.json").exists()


def test_pause_stats_on_a_known_pattern() -> None:
    """1 s of tone, 2 s of silence, 1 s of tone, 0.3 s of silence, 0.7 s of tone: pauses of 2 and 0.3 s."""
    t = np.arange(SR) / SR
    tone = 0.1 * np.sin(2 * np.pi * 440 * t)
    x = np.concatenate([tone, np.zeros(2 * SR), tone, np.zeros(int(0.3 * SR)), tone[: int(0.7 * SR)]])
    st = hard_sets.pause_stats(x[None], SR)
    assert st["pause_max_s"] == pytest.approx(2.0, abs=0.06)
    assert st["pause_median_s"] == pytest.approx(1.15, abs=0.06)
    assert st["active_fraction"] == pytest.approx(2.7 / 5.0, abs=0.02)
    assert st["clips_with_pause_over_1s"] == 1.0
    assert st["pauses_per_min"] == pytest.approx(2 / (5 / 60), rel=0.01)


def test_split_scene() -> None:
    assert hard_sets.split_scene("test_-20dB_turns") == ("test_-20dB", "turns")
    assert hard_sets.split_scene("test_-20dB") == ("test_-20dB", "")
    assert hard_sets.split_scene("test_-10dB_speed+4.2") == ("test_-10dB_speed+4.2", "")
