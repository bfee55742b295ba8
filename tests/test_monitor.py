"""Segment merging on constructed vote sequences, window voting on constructed postings, cue-sheet I/O and scores.

The window hits here are what the monitor's windows would produce for a described programme: windows of 10 s
every 2 s; a track sounding over [a, b) at a constant offset gives every window that overlaps it a hit whose
aligned landmarks are the track's landmarks inside the window (10 per second, ids shared between overlapping
windows, as real landmark ids are).
"""

import csv
import json

import numpy as np
import pytest

from bgmid.cuesheet import (
    CSV_FIELDS,
    TruthCue,
    cue_to_dict,
    evaluate,
    merge_truth,
    parse_timecode,
    read_truth,
    result_to_dict,
    timecode,
    write_csv,
    write_json,
)
from bgmid.monitor import (
    Cue,
    CuePart,
    MonitorConfig,
    MonitorResult,
    WindowHit,
    cue_confidence,
    cue_features,
    estimate_usage,
    floor_edge,
    hit_span,
    landmark_id,
    merge_segments,
    refine_edges,
    segments_to_cues,
    window_votes,
)

FS = 256 / 11025  # p1 frame
CFG = MonitorConfig(edge_pad_s=0.0)  # boundaries exactly at the evidence (the padding has its own test)
WIN, HOP = CFG.window_s, CFG.hop_s


def play(track: int, a: float, b: float, track_at_a: float, density: float = 10.0, duration: float = 300.0,
         id_base: int = 0, holes: tuple[tuple[float, float], ...] = ()) -> list[WindowHit]:
    """Window hits for ``track`` sounding over programme [a, b) with track time ``track_at_a`` at ``a``."""
    offset = int(round((track_at_a - a) / FS))
    times = np.arange(a, b, 1.0 / density)
    for h0, h1 in holes:  # stretches where speech masks the music completely
        times = times[(times < h0) | (times >= h1)]
    ids = landmark_id(np.round(times / FS).astype(np.int64), id_base + np.round(times * 1000).astype(np.int64))
    hits = []
    w = 0.0
    while w < duration:
        sel = (times >= w) & (times < w + WIN)
        if sel.sum() >= CFG.weak_score:
            hits.append(WindowHit(w, w + WIN, track, offset, int(sel.sum()), float(times[sel].min()),
                                  float(times[sel].max()) + 0.05, ids[sel]))
        w += HOP
    return hits


def cues_of(hits, config=CFG):
    return segments_to_cues(merge_segments(hits, config), FS, config, n_windows_total=150)


def test_single_cue_boundaries_and_track_position():
    cues = cues_of(play(3, 20.0, 50.0, track_at_a=12.0))
    assert len(cues) == 1
    c = cues[0]
    assert c.track_id == 3 and c.seq == 1 and c.loops == 0
    assert abs(c.programme_start_s - 20.0) < 0.1 and abs(c.programme_end_s - 50.0) < 0.2
    assert abs(c.track_start_s - 12.0) < 0.05 and abs(c.track_end_s - 42.0) < 0.2
    assert c.score == 300  # distinct landmarks, not the sum over overlapping windows
    assert c.confidence > 0.9


def test_cues_are_widened_by_the_edge_pad():
    cfg = MonitorConfig(edge_pad_s=0.5)
    c = cues_of(play(3, 20.0, 50.0, track_at_a=12.0), cfg)[0]
    assert abs(c.programme_start_s - 19.5) < 0.1 and abs(c.track_start_s - 11.5) < 0.05
    assert abs(c.programme_end_s - 50.5) < 0.2 and abs(c.track_end_s - 42.5) < 0.2
    c = cues_of(play(3, 0.2, 30.0, track_at_a=12.0), cfg)[0]
    assert c.programme_start_s == 0.0 and abs(c.track_start_s - 11.8) < 0.05  # not before the programme


def test_same_track_twice_gives_two_cues():
    hits = play(1, 10.0, 40.0, 0.0) + play(2, 45.0, 70.0, 5.0, id_base=10**7) + play(1, 90.0, 120.0, 0.0)
    cues = cues_of(hits)
    assert [c.track_id for c in cues] == [1, 2, 1]
    assert [c.seq for c in cues] == [1, 2, 3]
    assert abs(cues[2].programme_start_s - 90.0) < 0.1 and abs(cues[2].track_start_s) < 0.05


def test_back_to_back_tracks_split_at_the_switch():
    hits = play(4, 0.0, 30.0, 60.0) + play(5, 30.0, 55.0, 0.0, id_base=10**7)
    cues = cues_of(hits)
    assert [c.track_id for c in cues] == [4, 5]
    assert abs(cues[0].programme_end_s - 30.0) < 0.2 and abs(cues[1].programme_start_s - 30.0) < 0.1


def test_cross_fade_keeps_both_tracks():
    hits = play(1, 0.0, 40.0, 0.0) + play(2, 35.0, 70.0, 0.0, id_base=10**7)
    cues = cues_of(hits)
    assert [c.track_id for c in cues] == [1, 2]
    assert cues[0].programme_end_s > cues[1].programme_start_s  # they overlap, as the cross-fade did


def test_gap_inside_a_cue_is_bridged_but_a_long_one_splits():
    one = cues_of(play(7, 10.0, 60.0, 0.0, holes=((30.0, 36.0),)))
    assert len(one) == 1 and abs(one[0].duration_s - 50.0) < 0.3
    two = cues_of(play(7, 10.0, 120.0, 0.0, holes=((30.0, 75.0),)))  # longer than link_gap_s
    assert len(two) == 2
    assert abs(two[0].programme_end_s - 30.0) < 0.2 and abs(two[1].programme_start_s - 75.0) < 0.2


def test_same_offset_after_a_masked_stretch_is_one_cue_but_another_offset_is_not():
    """15-25 s where no window reaches weak_score (loud speech over quiet music): past max_gap_s, but the track
    comes back at the offset it had, so it kept playing; at another offset it is a new use."""
    for hole in ((30.0, 45.0), (30.0, 55.0)):
        one = cues_of(play(7, 10.0, 80.0, 0.0, holes=(hole,)))
        assert len(one) == 1 and one[0].loops == 0 and abs(one[0].duration_s - 70.0) < 0.3
    other = cues_of(play(7, 10.0, 30.0, 0.0) + play(7, 45.0, 80.0, 100.0, id_base=10**7))
    assert len(other) == 2 and abs(other[1].track_start_s - 100.0) < 0.1


def test_one_chance_landmark_does_not_move_a_boundary_but_sparse_evidence_does():
    """A last landmark far beyond dense evidence is chance; the lone last one of sparse evidence is not."""
    dense = np.arange(100, 200, 2)  # 0.5 landmarks a frame, then one 30 frames after the rest
    frames = np.concatenate([dense, [dense[-1] + 30]])
    ids = landmark_id(frames, np.arange(frames.size))
    assert hit_span(ids, ids, frames + 10, 86, 0.01) == (100, 208)
    early = np.concatenate([[70], dense])  # the same at the in point
    ids = landmark_id(early, np.arange(early.size))
    assert hit_span(ids, ids, early + 10, 86, 0.01)[0] == 100
    sparse = np.array([100, 140, 180, 220, 260])  # under loud speech: a landmark every 40 frames
    ids = landmark_id(sparse, np.arange(sparse.size))
    assert hit_span(ids, ids, sparse + 10, 86, 0.01) == (100, 270)
    assert hit_span(ids[:1], ids[:1], sparse[:1] + 10, 86, 0.01) == (100, 110)  # one landmark: it is the span


def test_music_looping_within_a_track_is_one_cue_with_parts():
    # track 0-20 s plays at programme 10-30, then jumps back and plays 0-20 s again at 30-50
    hits = play(6, 10.0, 30.0, 0.0) + play(6, 30.0, 50.0, 0.0, id_base=10**7)
    cues = cues_of(hits)
    assert len(cues) == 1
    c = cues[0]
    assert c.loops == 1 and len(c.parts) == 2
    assert abs(c.programme_start_s - 10.0) < 0.1 and abs(c.programme_end_s - 50.0) < 0.2
    assert abs(c.track_start_s - 0.0) < 0.05 and abs(c.track_end_s - 20.0) < 0.2
    assert abs(c.parts[1].programme_start_s - 30.0) < 0.2


def test_repeated_section_matching_two_offsets_does_not_double_count():
    # the same programme audio matches the track at two positions (a chorus that occurs twice)
    hits = play(2, 20.0, 60.0, 30.0) + play(2, 35.0, 50.0, 95.0, density=4, id_base=10**7)
    cues = cues_of(hits)
    assert len(cues) == 1
    c = cues[0]
    assert abs(c.programme_start_s - 20.0) < 0.1 and abs(c.programme_end_s - 60.0) < 0.2
    assert c.loops == 0 and abs(c.track_start_s - 30.0) < 0.05 and abs(c.track_end_s - 70.0) < 0.2
    # the other position is reported with the part (at the part's in point: 95 s at 35 s is 80 s at 20 s)
    assert len(c.parts[0].also_track_start_s) == 1 and abs(c.parts[0].also_track_start_s[0] - 80.0) < 0.1


def test_short_cue_of_five_seconds_is_kept():
    cues = cues_of(play(1, 40.0, 45.0, 3.0))
    assert len(cues) == 1 and abs(cues[0].duration_s - 5.0) < 0.2


def test_weak_shadow_of_a_stronger_track_is_dropped():
    # track 8 shares a drum loop with track 1: a few of track 1's landmarks align with it too
    strong = play(1, 10.0, 60.0, 0.0, density=20)
    shadow = play(8, 25.0, 35.0, 100.0, density=2.5, id_base=10**6)
    cues = cues_of(strong + shadow)
    assert [c.track_id for c in cues] == [1]
    # alone (no stronger track at that time) the same evidence is a cue
    assert [c.track_id for c in cues_of(shadow)] == [8]
    # a second track really playing along (its own landmarks, about as strong) is kept
    along = play(9, 20.0, 50.0, 300.0, density=15, id_base=10**6)
    assert sorted(c.track_id for c in cues_of(strong + along)) == [1, 9]
    # a medley that contains track 1's audio: the same landmarks align with both; reported once, as track 1
    medley = play(9, 20.0, 50.0, 300.0, density=20)
    for h in medley:  # three in four of track 1's landmarks there align with the medley too
        h.aligned = h.aligned[np.arange(h.aligned.size) % 4 != 0]
        h.score = h.aligned.size
    assert [c.track_id for c in cues_of(strong + medley)] == [1]


def test_isolated_weak_hits_are_rejected():
    rng = np.random.default_rng(0)
    hits = []
    for k in range(60):  # chance alignments: weak scores scattered over tracks and offsets
        tr = int(rng.integers(1, 50))
        off = int(rng.integers(-5000, 5000))
        t = k * 2.0
        hits.append(WindowHit(t, t + WIN, tr, off, int(rng.integers(5, 8)), t + 3, t + 4,
                              np.arange(6, dtype=np.int64) + 100 * k))
    # and one strong but single-window hit
    hits.append(WindowHit(50.0, 60.0, 9, 1234, 14, 52.0, 58.0, np.arange(14, dtype=np.int64) + 10**6))
    assert cues_of(hits) == []


def test_two_weak_windows_agreeing_by_chance_are_rejected():
    ids = np.arange(6, dtype=np.int64)
    hits = [WindowHit(10.0, 20.0, 3, 500, 6, 14.0, 15.0, ids), WindowHit(12.0, 22.0, 3, 500, 6, 14.0, 15.0, ids)]
    assert cues_of(hits) == []


def test_offset_jitter_of_one_frame_stays_one_segment():
    hits = play(1, 0.0, 40.0, 10.0)
    for k, h in enumerate(hits):
        h.offset += (k % 3) - 1
    assert len(cues_of(hits)) == 1


def test_window_votes_finds_aligned_track_among_chance_postings():
    rng = np.random.default_rng(1)
    n_noise = 3000
    qt = rng.integers(0, 430, n_noise)
    tid = rng.integers(1, 20, n_noise)
    off = rng.integers(-4000, 4000, n_noise)
    lid = np.arange(n_noise)
    # track 7 at offset 900 (+-1 frame jitter) for 40 landmarks, track 8 at offset -50 for 12 (a cross-fade)
    t7 = np.sort(rng.integers(0, 430, 40))
    t8 = np.sort(rng.integers(300, 430, 12))
    qt = np.concatenate([qt, t7, t8])
    tid = np.concatenate([tid, np.full(40, 7), np.full(12, 8)])
    off = np.concatenate([off, 900 + rng.integers(-1, 2, 40), np.full(12, -50)])
    lid = np.concatenate([lid, n_noise + np.arange(52)])
    order = np.argsort(qt, kind="stable")
    qt, tid, off, lid = qt[order], tid[order], off[order], lid[order]
    out = window_votes(qt, tid.astype(np.int64), off.astype(np.int64), lid, qt + 5, top=3, min_score=5)
    assert [r[0] for r in out[:2]] == [7, 8]
    tr, o, score, f0, f1, ids = out[0]
    assert abs(o - 900) <= 1 and score >= 38 and f0 == t7.min() and ids.size == score
    assert window_votes(qt[:0], tid[:0], off[:0], lid[:0], qt[:0], top=3, min_score=5) == []


@pytest.fixture(scope="module")
def usage_programme():
    """155 s at 16 kHz of dialogue (synthetic speech with syllables and pauses) with music laid in: 10-30 s at
    +3 dB re the dialogue, 40-60 s at -12 dB, 70-85 s alone, 90-150 s at -10 dB with a music-only passage
    110-128 s. The music is sustained (4 s chords of harmonics cross-fading every 2 s, a slow 2 dB swell), as
    underscore is: the estimate rests on music that keeps sounding between the dialogue's syllables (sparse
    plucked notes with silences between them read lower). Returns the mix's frame powers (``_Levels``, as
    the monitor accumulates them)."""
    from signals import synth_speech

    def pad(seed: int, dur: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        t = np.arange(dur * sr) / sr
        y = np.zeros(t.size)
        for k in range(-2, dur, 2):  # 4 s chords, each fading in as the one before fades out
            w = slice(max(0, int((k - 1) * sr)), min(t.size, int((k + 3) * sr)))
            env = np.clip(1 - np.abs(t[w] - k - 1) / 2, 0, 1)
            for f0 in 110 * 2 ** (rng.choice([0, 3, 5, 7, 10, 12], 3) / 12):
                y[w] += env * sum(np.sin(2 * np.pi * h * f0 * t[w]) / h for h in range(1, 6))
        return y * 10 ** (np.sin(2 * np.pi * 0.2 * t) / 20)

    from bgmid.monitor import _Levels

    sr = 16000
    n = 155 * sr
    speech = synth_speech(3, 155, sr).astype(np.float64)
    p_d = np.mean(speech**2)
    music = np.zeros(n)
    for a, b, db in ((10, 30, 3.0), (40, 60, -12.0), (70, 85, 0.0), (90, 150, -10.0)):
        m = pad(a, b - a)
        music[a * sr:b * sr] = m * np.sqrt(p_d * 10 ** (db / 10) / np.mean(m**2))
    for a, b in ((70, 85), (110, 128)):
        speech[a * sr:b * sr] = 0.0
    lv = _Levels(sr)
    lv.add({"mix": (speech + music).astype(np.float32)}, 0, 0, n)
    return lv.curves()["frames"]


def test_usage_reads_the_music_in_the_dialogues_gaps(usage_programme):
    cues = [Cue(1, 10.0, 30.0, 0.0, 20.0, 300, 1.0), Cue(2, 40.0, 60.0, 0.0, 20.0, 80, 1.0),
            Cue(3, 70.0, 85.0, 0.0, 15.0, 500, 1.0)]
    estimate_usage(cues, frames=usage_programme)
    assert [c.usage for c in cues] == ["featured", "background", "featured"], [c.msr_db for c in cues]
    assert abs(cues[0].msr_db - 3.0) < 3.0 and abs(cues[1].msr_db + 12.0) < 3.0
    # with a separator the two estimates give the ratio directly
    music, speech = np.full(300, -30.0), np.full(300, -20.0)
    music[10:30] = -15.0
    estimate_usage(cues, music, speech)
    assert [c.usage for c in cues] == ["featured", "background", "background"]
    assert abs(cues[0].msr_db - 5.0) < 1e-6 and abs(cues[1].msr_db + 10.0) < 1e-6
    assert estimate_usage(cues) is None and {c.usage for c in cues} == {"background"}  # no evidence
    # both: the mean of the two estimates (dB)
    sep = [c.msr_db for c in cues if estimate_usage([c], music, speech) is None]
    floor = [c.msr_db for c in cues if estimate_usage([c], frames=usage_programme) is None]
    estimate_usage(cues, music, speech, usage_programme)
    assert np.allclose([c.msr_db for c in cues], (np.array(sep) + np.array(floor)) / 2)


def test_usage_parts_find_a_featured_passage_inside_a_cue(usage_programme):
    cue = Cue(1, 90.0, 150.0, 0.0, 60.0, 900, 1.0)
    estimate_usage([cue], frames=usage_programme)
    got = [(round(a), round(b), u) for a, b, u in cue.usage_parts]
    assert cue.usage == "background" and [u for *_, u in got] == ["background", "featured", "background"], got
    assert abs(got[1][0] - 110) <= 3 and abs(got[1][1] - 128) <= 3 and got[0][0] == 90 and got[-1][1] == 150
    steady = Cue(2, 40.0, 60.0, 0.0, 20.0, 80, 1.0)
    estimate_usage([steady], frames=usage_programme)
    assert steady.usage_parts == [(40.0, 60.0, "background")]  # one stretch: the cue's own usage


def test_cue_confidence_grows_with_evidence_and_falls_inside_a_stronger_cue():
    weak, strong = cue_features(25, 16, (10.0, 20.0), []), cue_features(400, 120, (10.0, 40.0), [])
    assert cue_confidence(weak) < cue_confidence(strong)
    shadow = cue_features(25, 16, (10.0, 20.0), [(0.0, 60.0)])
    assert shadow[2] == 1.0 and cue_confidence(shadow) < cue_confidence(weak)
    assert 0.0 < cue_confidence(weak) < 1.0


# -- cue sheet ------------------------------------------------------------------------------------------


def _cue(track_id, a, b, usage="background", title=None, path="", extra=None, seq=1) -> Cue:
    return Cue(track_id, a, b, 10.0, 10.0 + b - a, 100, 0.99, usage=usage, seq=seq,
               title=title or f"t{track_id}", path=path, extra=extra or {}, msr_db=-8.0)


def test_timecodes():
    assert timecode(0) == "00:00:00.000"
    assert timecode(3725.5) == "01:02:05.500"
    assert timecode(59.9996) == "00:01:00.000"
    assert timecode(100 * 3600) == "100:00:00.000"
    assert parse_timecode("01:02:05.500") == pytest.approx(3725.5)
    assert parse_timecode("02:05.5") == pytest.approx(125.5)
    assert parse_timecode("12.25") == pytest.approx(12.25)


def test_json_contract_and_csv(tmp_path):
    res = MonitorResult("/x/show.mp4", 120.0, [_cue(3, 10.0, 40.0, path="/lib/a.flac", extra={"composer": "Z"})],
                        np.zeros(120, np.float32))
    d = result_to_dict(res)
    assert d["programme"] == "/x/show.mp4" and d["programme_title"] == "show"
    keys = ["seq", "track_id", "path", "title", "programme_start_s", "programme_end_s", "track_start_s",
            "track_end_s", "duration_s", "usage", "score", "confidence"]
    assert list(d["cues"][0])[: len(keys)] == keys
    c = d["cues"][0]
    assert c["duration_s"] == 30.0 and c["tc_in"] == "00:00:10.000" and c["metadata"] == {"composer": "Z"}
    json.dumps(d)  # serialisable
    write_json([res], tmp_path / "one.json")
    assert json.loads((tmp_path / "one.json").read_text())["cues"][0]["track_id"] == 3
    write_json([res, res], tmp_path / "two.json")
    assert len(json.loads((tmp_path / "two.json").read_text())) == 2
    write_csv([res], tmp_path / "s.csv")
    rows = list(csv.DictReader(open(tmp_path / "s.csv")))
    assert list(rows[0])[: len(CSV_FIELDS)] == list(CSV_FIELDS) and rows[0]["meta_composer"] == "Z"
    assert rows[0]["tc_out"] == "00:00:40.000" and rows[0]["programme_title"] == "show"
    # bgmid's own CSV reads back as truth
    truth = read_truth(tmp_path / "s.csv")
    assert truth[0].track == "3" and truth[0].start_s == 10.0 and truth[0].end_s == 40.0
    assert cue_to_dict(res.cues[0])["usage"] == "background"


def test_read_generator_truth(tmp_path):
    p = tmp_path / "prog.cues.csv"
    p.write_text(
        "cue,track_id,title,package,orig_path,programme_start_s,programme_end_s,track_offset_s,level_db,"
        "fade_in_s,fade_out_s,music_only\n"
        "0,mabc,Theme,pkg,x.ogg,5.0,35.5,12.0,-10.5,1.0,1.0,False\n"
        "1,mdef,Song,pkg,y.ogg,50.0,70.0,0.0,1.0,1.0,1.0,True\n"
    )
    t = read_truth(p)
    assert [x.track for x in t] == ["mabc", "mdef"]
    assert t[0].level_db == -10.5 and not t[0].featured and t[1].music_only and t[1].featured


def test_scores_perfect_shifted_and_phantom():
    truth = [TruthCue("a", 10.0, 40.0, level_db=-5.0), TruthCue("b", 60.0, 80.0, level_db=2.0)]
    perfect = [_cue(1, 10.0, 40.0, title="a"), _cue(2, 60.0, 80.0, title="b", usage="featured")]
    m = evaluate(perfect, truth, 100.0)
    assert m.f1 == 1.0 and m.cue_recall == 1.0 and m.boundary_median_s == 0.0 and m.phantom_cues == 0
    assert m.usage_accuracy == 1.0
    late = [_cue(1, 12.0, 40.0, title="a")]  # 2 s late, second cue missed, plus a phantom
    m = evaluate(late + [_cue(9, 85.0, 95.0, title="zzz")], truth, 100.0)
    assert m.tp_s == 28 and m.fn_s == 2 + 20 and m.fp_s == 10
    assert m.n_found_cues == 1 and m.n_truth_cues == 2 and m.phantom_cues == 1
    assert m.boundary_errors == [2.0, 0.0]
    # the quiet cue ignored below -10 dB: neither hits nor misses there
    quiet = [TruthCue("a", 10.0, 40.0, level_db=-20.0)]
    assert evaluate([], quiet, 100.0, min_level_db=-10.0).fn_s == 0
    assert evaluate([], quiet, 100.0).fn_s == 30


def test_truth_matched_by_file_stem_or_metadata():
    truth = [TruthCue("m0123", 0.0, 20.0)]
    assert evaluate([_cue(1, 0.0, 20.0, path="/lib/m0123.wav")], truth, 30.0).f1 == 1.0
    assert evaluate([_cue(1, 0.0, 20.0, extra={"item_id": "m0123"})], truth, 30.0).f1 == 1.0
    assert evaluate([_cue(1, 0.0, 20.0)], truth, 30.0).f1 == 0.0


def test_merge_truth_joins_a_looped_track():
    t = merge_truth([TruthCue("a", 0.0, 20.0), TruthCue("a", 21.0, 40.0), TruthCue("a", 80.0, 90.0)], gap_s=4.0)
    assert [(x.start_s, x.end_s) for x in t] == [(0.0, 40.0), (80.0, 90.0)]


def test_a_run_short_of_evidence_counts_only_next_to_a_cue_of_its_track():
    """18 distinct landmarks over 5 s at the calibrated window threshold (15) but short of ``min_cue_score``
    (20): next to a cue of the same track (its start at another offset of a looping track) it is that cue's
    start; for another track, or far from the track's cue, it is nothing."""
    run_up = play(3, 25.0, 30.0, track_at_a=200.0, density=3.6, id_base=10**6)
    assert all(h.score < CFG.min_cue_score for h in run_up) and max(h.score for h in run_up) >= CFG.strong_score
    main = play(3, 30.0, 60.0, track_at_a=12.0)
    cues = cues_of(main + run_up)
    assert len(cues) == 1 and abs(cues[0].programme_start_s - 25.0) < 0.1 and cues[0].loops == 1
    other = play(4, 25.0, 30.0, track_at_a=200.0, density=3.6, id_base=10**6)
    far = play(3, 100.0, 105.0, track_at_a=200.0, density=3.6, id_base=10**6)
    got = cues_of(main + other + far)
    assert [(c.track_id, round(c.programme_start_s)) for c in got] == [(3, 30)]


def test_per_second_sums_grow_and_drop_like_one_bincount():
    """The level accumulator, fed block by block (capacity doubling) and then trimmed (live monitoring keeps
    the recent past), holds what one bincount over everything holds."""
    from bgmid.monitor import _PerSecond

    rng = np.random.default_rng(1)
    idx = np.sort(rng.integers(0, 5000, 20000))
    w = rng.random(idx.size)
    acc = _PerSecond()
    for part in np.array_split(np.arange(idx.size), 37):
        acc.add(idx[part], w[part])
    want = np.bincount(idx, weights=w, minlength=idx.max() + 1)
    assert acc.sums.size == want.size and np.allclose(acc.values(want.size + 3)[: want.size], want)
    acc.drop(1000)
    acc.add(np.array([want.size - 1000 + 2]), np.array([1.0]))  # grows after the drop
    got = acc.values(want.size - 1000 + 3)
    assert np.allclose(got[: want.size - 1000], want[1000:]) and got[-1] == 1.0 and got[-2] == 0.0


def _frames(dur_s: float, music: tuple[float, float], after: str = "dialogue", seed: int = 3) -> np.ndarray:
    """Mix power per 20 ms frame (50 per second): dialogue at power 1 with gaps between syllables (4 per second)
    where only the room's noise sounds (-40 dB), music at power 0.05 (-13 dB) sounding over ``music``; ``after``
    the music a steady crowd at 0.03 with a 0.3 s dip, or the dialogue alone."""
    rng = np.random.default_rng(seed)
    n = int(dur_s * 50)
    i = np.arange(n)
    p = np.where((i % 12) < 8, 1.0, 1e-4) * rng.uniform(0.5, 1.5, n)  # the gaps at the room's noise (-40 dB)
    a, b = (int(v * 50) for v in music)
    p[a:b] += 0.05 * rng.uniform(0.8, 1.2, b - a)
    if after == "crowd":
        crowd = 0.03 * rng.uniform(0.8, 1.2, n - b)
        crowd[100:115] = 0.008  # a 0.3 s dip, 2 s after the music
        p[b:] += crowd
    return p


def test_floor_edge_finds_where_the_music_stops_under_dialogue():
    p = _frames(60.0, (20.0, 40.0))
    # the landmarks lost the music 3 s before its end (masked) and 2 s after its start (a fade-in)
    assert abs(floor_edge(p, 37.0, +1, 8.0) - 40.0) <= 0.1
    assert abs(floor_edge(p, 22.0, -1, 8.0) - 20.0) <= 0.25
    assert floor_edge(p, 31.0, +1, 8.0) is None  # the music goes on past the reach
    # from the programme's start: the music was there from the first frame
    assert floor_edge(_frames(30.0, (0.0, 20.0)), 2.0, -1, 8.0) == 0.0


def test_floor_edge_does_not_follow_a_steady_crowd():
    """A crowd after the music keeps the floor up; a dip in it is not where the music stopped (the floor
    beyond it stays up), so the edge stays where the landmarks put it."""
    p = _frames(60.0, (20.0, 40.0), after="crowd")
    assert floor_edge(p, 38.0, +1, 8.0) is None


def test_refine_edges_moves_cue_edges_and_parts_but_not_into_another_cue():
    p = _frames(80.0, (20.0, 40.0)).reshape(-1, 50)
    cfg = MonitorConfig()  # edge_pad_s 0.5: the cues below are already padded
    a = Cue(1, 22.0, 37.5, 102.0, 117.5, 100, 0.99, parts=[CuePart(22.0, 37.5, 102.0, 117.5)])
    b = Cue(2, 38.5, 60.0, 0.0, 21.5, 100, 0.99)  # another track's cue starting before a's music ended
    refine_edges([a], p, cfg)
    assert abs(a.programme_start_s - 20.0) <= 0.25 and abs(a.programme_end_s - 40.0) <= 0.1
    assert abs(a.track_start_s - (a.programme_start_s + 80.0)) < 1e-9
    assert (a.parts[0].programme_start_s, a.parts[0].programme_end_s) == (a.programme_start_s, a.programme_end_s)
    assert abs(a.parts[0].track_end_s - (a.programme_end_s + 80.0)) < 1e-9
    a = Cue(1, 22.0, 37.5, 102.0, 117.5, 100, 0.99)
    refine_edges([a, b], p, cfg)
    assert a.programme_end_s == 38.5 and b.programme_start_s == 38.5
    refine_edges([a], None, cfg)  # no frame powers (live audio not yet there): nothing moves
    off = Cue(1, 22.0, 37.5, 102.0, 117.5, 100, 0.99)
    refine_edges([off], p, MonitorConfig(edge_extend_s=0.0))
    assert (off.programme_start_s, off.programme_end_s) == (22.0, 37.5)
