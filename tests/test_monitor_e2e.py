"""End to end: a short programme made of the indexed test tracks under generated dialogue, through the library
and the CLI (streamed decoding, block edges, JSON contract, truth scoring, plot). Runs in a few seconds."""

import csv
import json
from functools import lru_cache

import numpy as np
import pytest
from conftest import SR, TRACK_S
from signals import encode, synth_music, synth_speech

from bgmid.audio import resample
from bgmid.cli import main
from bgmid.cuesheet import evaluate, read_truth
from bgmid.index import open_index
from bgmid.monitor import Monitor, MonitorConfig

DUR = 150.0
#: (track index, programme start, end, track time at start, music-to-speech dB): a -10 dB cue, back-to-back
#: tracks, the same track twice, a 6 s cue, a cross-fade, and a cue that starts mid-track
CUES = [
    (0, 5.0, 25.0, 3.0, -10.0),
    (1, 25.0, 40.0, 10.0, -5.0),
    (0, 60.0, 72.0, 20.0, 0.0),
    (2, 80.0, 86.0, 0.0, 0.0),
    (3, 95.0, 120.0, 5.0, 3.0),
    (4, 115.0, 135.0, 17.0, 0.0),
]


def _power(x: np.ndarray) -> float:
    return float(np.mean(x.astype(np.float64) ** 2))


@lru_cache(maxsize=4)
def make_programme(with_music: bool = True, seed: int = 7) -> np.ndarray:
    """The test programme (cached: generating the babble is the slow part; callers must not modify it)."""
    speech = resample(synth_speech(seed, DUR, 11025), 11025, SR)[: int(DUR * SR)]
    prog = speech.copy()
    if with_music:
        ref = _power(speech)
        for i, a, b, off, lvl in CUES:
            x = synth_music(100 + i, TRACK_S, SR)[int(off * SR): int((off + b - a) * SR)]
            prog[int(a * SR): int(a * SR) + x.size] += x * np.sqrt(ref * 10 ** (lvl / 10) / _power(x))
    else:
        prog += 0.3 * synth_music(999, DUR, SR)  # music that is not in the index
    return (0.5 * prog / np.abs(prog).max()).astype(np.float32)


@pytest.fixture(scope="module")
def programme(tmp_path_factory):
    d = tmp_path_factory.mktemp("prog")
    wav = d / "show.wav"
    import soundfile as sf

    sf.write(wav, make_programme(), SR)
    truth = d / "show.cues.csv"
    with open(truth, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["cue", "track_id", "title", "programme_start_s", "programme_end_s", "track_offset_s", "level_db",
                    "music_only"])
        for k, (i, a, b, off, lvl) in enumerate(CUES):
            w.writerow([k, f"track{i:02d}", f"track{i:02d}", a, b, off, lvl, False])
    return wav, truth


def test_programme_cues_found_with_accurate_boundaries(built_index):
    with open_index(built_index) as store:
        res = Monitor(store).run_array(make_programme(), SR, "show")
    got = [(c.title, round(c.programme_start_s), round(c.programme_end_s)) for c in res.cues]
    assert [c.title for c in res.cues] == [f"track{i:02d}" for i, *_ in CUES], got
    truth = [(i, a, b, off) for i, a, b, off, _ in CUES]
    errs = []
    for c, (_i, a, b, off) in zip(res.cues, truth):
        errs += [abs(c.programme_start_s - a), abs(c.programme_end_s - b)]
        # the reported track position is the one heard at the cue's in point
        assert abs(c.track_start_s - (off + c.programme_start_s - a)) < 0.1
    assert np.median(errs) < 1.0, got
    assert res.cues[4].programme_end_s > res.cues[5].programme_start_s  # the cross-fade overlap
    assert res.level_db.size == int(DUR) and res.n_windows > 60


def test_no_phantom_cues_without_indexed_music(built_index):
    with open_index(built_index) as store:
        res = Monitor(store).run_array(make_programme(with_music=False), SR, "talk")
    assert res.cues == []


def test_small_blocks_give_the_same_cues(built_index):
    """Windows that straddle block edges see the same landmarks: block size does not change the result."""
    x = make_programme()
    with open_index(built_index) as store:
        big = Monitor(store).run_array(x, SR)
        small = Monitor(store, config=MonitorConfig(block_s=20.0)).run_array(x, SR)
    key = lambda r: [(c.track_id, round(c.programme_start_s, 1), round(c.programme_end_s, 1)) for c in r.cues]  # noqa: E731
    assert key(small) == key(big)


def test_prefetch_thread_gives_the_same_cues(built_index):
    x = make_programme()
    with open_index(built_index) as store:
        a = Monitor(store, config=MonitorConfig(block_s=20.0)).run_array(x, SR)
        b = Monitor(store, config=MonitorConfig(block_s=20.0, prefetch=True)).run_array(x, SR)
    key = lambda r: [(c.track_id, c.programme_start_s, c.programme_end_s, c.score) for c in r.cues]  # noqa: E731
    assert key(a) == key(b) and a.n_windows == b.n_windows


class _FakeSeparator:
    """Stands in for a trained separator: 'music' is the mix minus the known speech (an oracle)."""

    sample_rate = 16000

    def __init__(self):
        self.calls = 0

    def separate(self, mono):
        self.calls += 1
        return mono * 0.5, mono * 0.5


def test_separator_is_called_per_block_and_gives_level_curves(built_index):
    sep = _FakeSeparator()
    with open_index(built_index) as store:
        res = Monitor(store, sep, config=MonitorConfig(block_s=60.0)).run_array(make_programme(), SR)
    assert sep.calls == 3  # 150 s in 60 s blocks
    assert res.music_db is not None and res.music_db.size == int(DUR)
    assert len(res.cues) == len(CUES)
    # usage: the mean (dB) of the halves' ratio (0 dB) and the mix's floor estimate over the cue
    from bgmid.monitor import _frame_span, _Levels, floor_msr_db

    lv = _Levels(sep.sample_rate)
    x = resample(make_programme(), SR, sep.sample_rate)
    lv.add({"mix": x}, 0, 0, x.size)
    frames = lv.curves()["frames"]
    want = [0.5 * floor_msr_db(_frame_span(frames, c.programme_start_s, c.programme_end_s)) for c in res.cues]
    assert np.allclose([c.msr_db for c in res.cues], want, atol=0.1)


def test_cli_end_to_end_json_contract_truth_and_plot(built_index, programme, tmp_path, capsys):
    wav, truth = programme
    out = tmp_path / "cues.json"
    png = tmp_path / "t.png"
    rc = main(["monitor", "--db", str(built_index), "--separator", "none", str(wav), "--out", str(out),
               "--truth", str(truth), "--plot", str(png)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "track03" in text and "F1" in text
    doc = json.loads(out.read_text())
    assert doc["programme"] == str(wav) and len(doc["cues"]) == len(CUES)
    for c in doc["cues"]:
        for k in ("seq", "track_id", "path", "title", "programme_start_s", "programme_end_s", "track_start_s",
                  "track_end_s", "duration_s", "usage", "score", "confidence"):
            assert k in c
        assert c["usage"] in ("background", "featured") and 0 <= c["confidence"] <= 1
    assert png.stat().st_size > 10_000
    # scores from the library agree with what the CLI printed
    t = read_truth(truth)
    with open_index(built_index) as store:
        res = Monitor(store).run(wav)
    m = evaluate(res.cues, t, res.duration_s)
    assert m.f1 >= 0.9 and m.cue_recall == 1.0 and m.phantom_cues == 0
    assert f"F1 {m.f1:.3f}" in text


def test_cli_streams_compressed_video_container(built_index, tmp_path, capsys):
    x = make_programme()[: int(60 * SR)]
    ts = encode(tmp_path / "show.ts", x, SR, "aac", "mpegts", bitrate=96000)
    rc = main(["monitor", "--db", str(built_index), "--separator", "none", "--json", str(ts)])
    assert rc == 0
    doc = json.loads(capsys.readouterr().out.strip().splitlines()[0])
    assert [c["title"] for c in doc["cues"]] == ["track00", "track01"]
    assert abs(doc["cues"][0]["programme_start_s"] - 5.0) < 1.0


def test_cli_errors_name_the_problem(built_index, tmp_path, capsys):
    # an unreadable input is named and skipped (issue 10: the others still get their cue sheets): status 1
    assert main(["monitor", "--db", str(built_index), "--separator", "none", str(tmp_path / "missing.wav")]) == 1
    assert "missing.wav" in capsys.readouterr().err
    assert main(["monitor", "--db", str(built_index), "--separator", "nosuchmodel", str(tmp_path / "x.wav")]) == 2
    assert "nosuchmodel" in capsys.readouterr().err
    assert main(["monitor", "--db", str(built_index), "--out", str(tmp_path / "c.txt"), "x.wav"]) == 2
    assert ".csv or .json" in capsys.readouterr().err
