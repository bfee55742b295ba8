"""Speed, tempo and pitch changes: undoing a known one, finding an unknown one, and identify reporting it."""

import numpy as np
import pytest
import soundfile as sf
from conftest import SR

from bgmid.alterations import (
    NONE,
    Alteration,
    PostingCache,
    RareTable,
    default_grid,
    fine_grid,
    frequent,
    query_peaks,
    search,
    settle,
    undo,
    undo_grid,
)
from bgmid.audio import resample
from bgmid.data import transforms
from bgmid.fingerprint.presets import QueryOptions
from bgmid.index import open_index
from bgmid.match import Matcher

CASES = [("speed", 25 / 24), ("speed", 0.96), ("tempo", 1.03), ("tempo", 0.97), ("pitch", 1.0), ("pitch", -2.0)]


def _excerpt(music_dir, name="track03.flac", start_s=8.0, dur_s=14.0):
    x, sr = sf.read(music_dir / name, dtype="float32")
    return x[int(start_s * sr): int((start_s + dur_s) * sr)], sr


def _alter(x, sr, kind, v):
    y = getattr(transforms, kind)(x, sr, v)
    return y[: int(12 * sr)]


@pytest.fixture(params=["numpy", "compiled"])
def kernels(request, monkeypatch):
    """Run a test on the numpy code and on the compiled loops (:mod:`bgmid.kernels`): the same results."""
    import bgmid.alterations
    from bgmid import kernels as k

    if request.param == "compiled":
        if k.compiled(wait=True) is None:
            pytest.skip("numba is not installed: only the numpy code runs")
    else:
        monkeypatch.setattr(bgmid.alterations, "compiled", lambda start=False, wait=False: None)
    return request.param


def _truth(kind, v) -> Alteration:
    return {"speed": Alteration(speed=v), "tempo": Alteration(tempo=v), "pitch": Alteration(pitch_semitones=v)}[kind]


def test_grid_covers_the_ranges_at_the_tolerated_steps():
    g = default_grid()
    assert g[0] == NONE and len(set(g)) == len(g)
    f = sorted(a.freq_factor for a in g if a.tempo == 1.0)
    assert f[0] < 2 ** (-2 / 12) + 1e-9 and f[-1] > 2 ** (2 / 12) - 1e-9
    assert max(np.diff(np.log(f))) <= np.log(1.0101)  # 1 % in frequency
    t = sorted(a.tempo for a in g)
    assert t[0] <= 0.95 and t[-1] >= 1.05


@pytest.mark.parametrize("kind,v", CASES)
def test_undoing_the_true_alteration_restores_the_match(built_index, music_dir, kind, v):
    x, sr = _excerpt(music_dir)
    y = resample(_alter(x, sr, kind, v), sr, 11025)
    with open_index(built_index) as store:
        m = Matcher(store)
        o = m.options
        peaks = query_peaks(y, store.preset, store.preset.density * o.density_factor)
        fanout = int(round(store.preset.fanout * o.fanout_factor))
        plain = m.match_landmarks(undo(peaks, NONE, store.preset, fanout))
        fixed = m.match_landmarks(undo(peaks, _truth(kind, v), store.preset, fanout))
        assert fixed and fixed[0].title == "track03"
        assert abs(fixed[0].track_offset_s - 8.0) < 0.1
        assert not plain or plain[0].score < fixed[0].score / 2


@pytest.mark.parametrize("kind,v", CASES)
def test_search_finds_track_and_alteration(built_index, music_dir, kind, v, kernels):
    x, sr = _excerpt(music_dir)
    y = resample(_alter(x, sr, kind, v), sr, 11025)
    with open_index(built_index) as store:
        peaks = query_peaks(y, store.preset, store.preset.density * 2)
        cands = search(store, peaks, default_grid(), fanout=10)
        assert cands == search(store, peaks, default_grid(), fanout=10, cache=RareTable(store))  # either lookup
        best = cands[0]
        assert store.track(best.track_id).title == "track03"
        true = _truth(kind, v)
        assert abs(np.log(best.alteration.freq_factor / true.freq_factor)) < 0.0075
        assert abs(np.log(best.alteration.time_factor / true.time_factor)) < 0.015


def test_posting_cache_answers_as_the_index_does(built_index, music_dir):
    """Looked up in two overlapping calls (the second adds hashes in between the first's), the cache returns
    each query row's postings exactly as one ``store.lookup`` would, skipping over-long lists the same way."""
    x, sr = _excerpt(music_dir)
    y = resample(x, sr, 11025)
    with open_index(built_index) as store:
        peaks = query_peaks(y, store.preset, store.preset.density * 2)
        h = np.concatenate([undo(peaks, a, store.preset, 10).hashes for a in default_grid()[:6]])
        cache = PostingCache(store, max_postings=5)
        for part in (h[::2], h):
            want = store.lookup(part, max_postings=5)
            got = cache.lookup(part)
            assert got[0].size > 100
            key = lambda r: sorted(zip(*(a.tolist() for a in r), strict=True))  # noqa: E731
            assert key(got) == key(want)


def _key(r):
    return sorted(zip(*(a.tolist() for a in r), strict=True))


def test_rare_table_answers_as_the_index_does(built_index, music_dir, kernels):
    """Read once for the whole index, the table gives each query row's postings as one ``store.lookup`` with
    the same limit, and one track's as that lookup restricted to the track."""
    x, sr = _excerpt(music_dir)
    y = resample(x, sr, 11025)
    with open_index(built_index) as store:
        peaks = query_peaks(y, store.preset, store.preset.density * 2)
        h, _, _ = undo_grid(peaks, default_grid()[:8], store.preset, 10)
        for limit in (5, 50):
            table = RareTable(store, max_postings=limit)
            rows, tids, times = store.lookup(h, max_postings=limit)
            assert rows.size > 100 and _key(table.lookup(h)) == _key((rows, tids, times))
            track = int(np.bincount(tids).argmax())
            want = sorted(zip(rows[tids == track].tolist(), times[tids == track].tolist()))
            assert len(want) > 50 and _key(table.track_lookup(h, track)) == want
            # the search's vote keys, gathered by the compiled loop, are those of the per-query lookups
            u = np.random.default_rng(1).integers(-5000, 5000, h.size)
            want_keys = np.sort(PostingCache(store, max_postings=limit).vote_keys(h, u))
            assert want_keys.size == rows.size and np.array_equal(np.sort(table.vote_keys(h, u)), want_keys)
        assert RareTable(store, max_postings=5).postings.size < RareTable(store, max_postings=50).postings.size


def test_rare_table_follows_the_index_and_its_shards(music_dir, tmp_path):
    """One table per index, from its second search on, rebuilt when a track is added or removed; a sharded
    catalogue's table sums each hash's count over the shards before the limit, as its lookup does."""
    from bgmid.index.build import index_paths
    from bgmid.index.shard import ShardedStore, split_index

    files = sorted(music_dir.glob("track0[1-4]*"))
    probe = resample(_excerpt(music_dir, files[-1].name)[0], SR, 11025)
    with open_index(tmp_path / "lib", preset="p1", create=True) as store:
        index_paths(store, files[:3])
        h = undo(query_peaks(probe, store.preset, 40.0), NONE, store.preset, 10).hashes
        assert RareTable.of(store) is None  # a process's first search looks its hashes up itself
        first = RareTable.of(store)
        assert first is not None and RareTable.of(store) is first
        index_paths(store, files[3:])
        second = RareTable.of(store)
        assert second is not first and _key(second.lookup(h)) == _key(store.lookup(h, max_postings=50))
        new = max(t.track_id for t in store.tracks())
        assert new in second.lookup(h)[1] and new not in first.lookup(h)[1]
        store.remove([new])
        assert new not in RareTable.of(store).lookup(h)[1]
    split_index(tmp_path / "lib", tmp_path / "lib2", 2)
    with open_index(tmp_path / "lib2") as two:
        assert isinstance(two, ShardedStore)
        for limit in (2, 50):
            assert _key(RareTable(two, max_postings=limit).lookup(h)) == _key(two.lookup(h, max_postings=limit))


def test_undo_grid_is_undo_at_every_point(built_index, music_dir, kernels):
    """The search's one vectorised pass gives each grid point's landmarks exactly as :func:`undo` alone."""
    x, sr = _excerpt(music_dir)
    y = resample(_alter(x, sr, "speed", 25 / 24), sr, 11025)
    with open_index(built_index) as store:
        peaks = query_peaks(y, store.preset, store.preset.density * 2)
        grid = default_grid()
        h, t, g = undo_grid(peaks, grid, store.preset, 10)
        assert h.size > 10_000
        for k in (0, 3, len(grid) - 1):
            one = undo(peaks, grid[k], store.preset, 10)
            assert np.array_equal(h[g == k], one.hashes) and np.array_equal(t[g == k], one.times)
        assert np.array_equal(np.unique(g), np.arange(len(grid)))


def _pairs_by_rule(peaks, grid, preset, fanout):
    """undo_grid's pairing rule written out as plain loops: scaled peaks, one per frame and bin, each anchor
    paired with the first ``fanout`` of its candidate targets that land in the target zone."""
    from bgmid.alterations import _candidate_targets
    from bgmid.fingerprint.landmarks import pack_hashes

    order = np.lexsort((peaks.f, peaks.t))
    t, f = peaks.t[order], peaks.f[order]
    first = np.r_[True, (t[1:] != t[:-1]) | (np.round(f[1:]) != np.round(f[:-1]))]
    t, f = t[first], f[first]
    J = _candidate_targets(t, f, preset, fanout)
    fmin = int(np.ceil(preset.fmin_hz * preset.n_fft / preset.sample_rate))
    out = []
    for g, alt in enumerate(grid):
        tt = np.round(t * alt.time_factor).astype(int)
        ff = np.round(f / alt.freq_factor).astype(int)
        ok = [fmin <= ff[i] <= preset.n_fft // 2 and (i == 0 or t[i] != t[i - 1] or ff[i] != ff[i - 1])
              for i in range(t.size)]
        for i in range(t.size):
            kept = 0
            for j in J[i]:
                if kept == fanout or not ok[i]:
                    break
                dt, df = tt[j] - tt[i], ff[j] - ff[i]
                if j >= 0 and ok[j] and 1 <= dt <= preset.dt_max and abs(df) <= preset.df_max:
                    out.append((int(pack_hashes(ff[i], df, dt, preset)), int(tt[i]), g))
                    kept += 1
    return out


def test_undo_grid_pairs_by_its_rule(built_index, music_dir, kernels):
    """The compiled pairing loop keeps exactly the pairs of the documented rule, in its order: grid point,
    anchor, candidate (on 4 s of a sped-up excerpt, at three points of the grid and a fanout of 3 and 10)."""
    x, sr = _excerpt(music_dir, dur_s=4.0)
    y = resample(_alter(x, sr, "speed", 25 / 24), sr, 11025)
    with open_index(built_index) as store:
        peaks = query_peaks(y, store.preset, store.preset.density * 2)
    grid = [NONE, Alteration(speed=1.04), Alteration(pitch_semitones=-2.0)]
    for fanout in (3, 10):
        h, t, g = undo_grid(peaks, grid, store.preset, fanout)
        want = _pairs_by_rule(peaks, grid, store.preset, fanout)
        assert len(want) > 300 and list(zip(h.tolist(), t.tolist(), g.tolist(), strict=True)) == want


def test_the_unaltered_analysis_gives_the_search_its_peaks(music_dir):
    """Asked for them, the query analysis returns the same landmarks and, per signal, the peaks the search
    would find by analysing the query again."""
    from bgmid.fingerprint.presets import get_preset
    from bgmid.match import analyse

    x, sr = _excerpt(music_dir)
    y = resample(_alter(x, sr, "pitch", 1.0), sr, 11025)
    preset, opts = get_preset("p1"), QueryOptions(shifts=2)
    peaks: list = []
    lm = analyse([y, 0.5 * y], preset, opts, peaks=peaks)
    plain = analyse([y, 0.5 * y], preset, opts)
    assert np.array_equal(lm.hashes, plain.hashes) and np.array_equal(lm.times, plain.times)
    want = query_peaks(y, preset, preset.density * opts.density_factor)
    assert len(peaks) == 2 and want.t.size > 100
    assert np.array_equal(peaks[0].t, want.t) and np.array_equal(peaks[0].f, want.f)


def test_frequent_counts_exactly_what_a_full_count_finds(kernels):
    rng = np.random.default_rng(3)
    keys = np.concatenate([rng.integers(0, 1 << 40, 200_000), np.repeat([7, 1 << 33, 12345], [9, 30, 8])])
    keys = rng.permutation(keys)
    uk, c = np.unique(keys, return_counts=True)
    for m in (2, 9, 31):
        got = frequent(keys, m)
        assert np.array_equal(got[0], uk[c >= m]) and np.array_equal(got[1], c[c >= m])
    assert frequent(keys, 9)[0].tolist() == [7, 1 << 33]


def test_track_lookup_is_lookup_of_one_track(built_index, music_dir):
    x, sr = _excerpt(music_dir)
    y = resample(x, sr, 11025)
    with open_index(built_index) as store:
        peaks = query_peaks(y, store.preset, store.preset.density * 2)
        h, _, _ = undo_grid(peaks, default_grid()[:8], store.preset, 10)
        cache = PostingCache(store, max_postings=5)
        cache.lookup(h[::3])  # part of it known already, the rest looked up by track_lookup
        rows, tids, times = store.lookup(h, max_postings=5)
        track = int(np.bincount(tids).argmax())
        got = cache.track_lookup(h, track)
        want = sorted(zip(rows[tids == track].tolist(), times[tids == track].tolist()))
        assert len(want) > 50 and sorted(zip(*(a.tolist() for a in got))) == want


def test_fine_grid_spans_the_candidate_and_its_siblings_at_a_tenth_of_a_percent():
    g = fine_grid(Alteration(speed=1.04))
    speeds = sorted(a.speed for a in g if a.tempo == 1.0 and a.pitch_semitones == 0.0)
    assert speeds[0] < 1.04 * 0.995 and speeds[-1] > 1.04 * 1.005
    assert max(np.diff(np.log(speeds))) <= np.log(1.0011)
    assert any(a.pitch_semitones and a.speed == 1.0 for a in g)  # the transposition with that frequency factor
    assert any(a.tempo != 1.0 and a.freq_factor == 1.0 for a in g)  # the tempo change with that time factor
    assert fine_grid(NONE) == []
    kinds = [Alteration(speed=1.04), Alteration(tempo=0.97), Alteration(pitch_semitones=-1.0), NONE,
             Alteration(speed=1.04, tempo=1.01)]
    assert [a.kind for a in kinds] == ["speed", "tempo", "pitch", "none", "mixed"]
    assert all(a.speed == 1.0 for a in fine_grid(Alteration(tempo=1.03), siblings=False))


@pytest.mark.parametrize("kind,v", [("speed", 25 / 24), ("speed", 0.96), ("pitch", 1.0)])
def test_settle_finds_the_factor_between_grid_points(built_index, music_dir, kind, v):
    """The search's candidate is a grid point (1 % steps); settling moves it to within 0.2 % of the truth
    and to the right kind of alteration (a transposition is not taken for a speed change or back)."""
    x, sr = _excerpt(music_dir)
    y = resample(_alter(x, sr, kind, v), sr, 11025)
    true = _truth(kind, v)
    with open_index(built_index) as store:
        peaks = query_peaks(y, store.preset, store.preset.density * 2)
        best = search(store, peaks, default_grid(), fanout=10)[0]
        got = settle(store, peaks, best, fanout=10)
    assert abs(np.log(got.freq_factor / true.freq_factor)) < 0.002
    assert abs(np.log(got.time_factor / true.time_factor)) < 0.002


@pytest.mark.parametrize("kind,v", CASES)
def test_identify_reports_the_alteration_and_the_track_time(built_index, music_dir, kind, v):
    x, sr = _excerpt(music_dir)
    y = _alter(x, sr, kind, v)
    with open_index(built_index) as store:
        (m,) = Matcher(store).identify(y, sr)
    assert m.title == "track03" and abs(m.track_offset_s - 8.0) < 0.15
    true = _truth(kind, v)
    got = Alteration(m.speed, m.tempo, m.pitch_semitones)
    assert abs(got.freq_factor / true.freq_factor - 1) < 0.005  # the estimator within 0.5 %
    assert abs(got.time_factor / true.time_factor - 1) < 0.01
    assert m.to_dict()["speed"] == round(m.speed, 5)


def test_unaltered_queries_report_no_alteration(built_index, music_dir):
    x, sr = _excerpt(music_dir)
    with open_index(built_index) as store:
        (m,) = Matcher(store).identify(x[: 12 * sr], sr)
    assert (m.speed, m.tempo, m.pitch_semitones) == (1.0, 1.0, 0.0)


def test_altered_speech_and_unknown_music_give_no_match(built_index):
    from signals import synth_music, synth_speech

    rng = np.random.default_rng(0)
    with open_index(built_index) as store:
        m = Matcher(store)
        for y in (synth_speech(7, 14.0, SR), synth_music(999, 14.0, SR)):
            for kind, v in CASES:
                z = _alter(y, SR, kind, v)
                assert m.identify(z + 0.001 * rng.standard_normal(z.size).astype(np.float32), SR) == []


def test_a_sped_up_programme_is_monitored_with_the_right_cues(built_index, music_dir):
    """A constructed programme (three cues under babble) aired with the PAL speed-up: the monitor estimates
    the speed once (within 0.5 %), finds every cue at programme times of the aired programme, and reports
    track times in the track's own time line."""
    from signals import synth_speech

    from bgmid.monitor import Monitor

    sr = SR
    rng = np.random.default_rng(4)
    prog = 0.05 * synth_speech(11, 150.0, sr)[: int(150 * sr)]
    truth = []  # (title, programme start s, track start s, duration s)
    plan = (("track01", 10.0, 5.0, 30.0), ("track05", 60.0, 2.0, 25.0), ("track07", 110.0, 8.0, 28.0))
    for title, at, t0, dur in plan:
        x, xsr = sf.read(music_dir / f"{title}.flac", dtype="float32")
        seg = x[int(t0 * xsr): int((t0 + dur) * xsr)]
        prog[int(at * sr): int(at * sr) + seg.size] += 0.3 * seg
        truth.append((title, at, t0, dur))
    prog += 0.001 * rng.standard_normal(prog.size).astype(np.float32)
    speed = 25 / 24
    aired = transforms.speed(prog, sr, speed)
    with open_index(built_index) as store:
        res = Monitor(store, alteration="auto").run_array(aired, sr)
        plain = Monitor(store).run_array(aired, sr)
    assert abs(res.alteration["speed"] * res.alteration["tempo"] / speed - 1) < 0.005
    assert abs(res.alteration["speed"] / speed - 1) < 0.005
    assert plain.cues == [] or len(plain.cues) < len(truth)  # unaltered matching misses the sped-up cues
    assert [c.title for c in res.cues] == [t[0] for t in truth]
    for c, (_, at, t0, dur) in zip(res.cues, truth, strict=True):
        assert abs(c.programme_start_s - at / speed) < 1.5 and abs(c.duration_s - dur / speed) < 3.0
        assert abs(c.track_start_s - (t0 + (c.programme_start_s * speed - at))) < 0.3
        assert abs(c.speed / speed - 1) < 0.005
    assert abs(res.duration_s - prog.size / sr / speed) < 0.1


def test_a_long_sped_up_query_file_is_searched_too(built_index, music_dir, tmp_path):
    """Queries longer than STREAM_QUERY_S are streamed; when nothing matches as indexed, the pipeline
    searches the alterations on their first minute (a PAL transfer is sped up throughout)."""
    from signals import synth_speech

    from bgmid.pipeline import STREAM_QUERY_S, QueryPipeline

    x, sr = sf.read(music_dir / "track03.flac", dtype="float32")
    y = np.concatenate([transforms.speed(x, sr, 25 / 24), 0.3 * synth_speech(3, 35.0, sr)])
    assert y.size / sr > STREAM_QUERY_S
    path = tmp_path / "long.flac"
    sf.write(path, y, sr)
    with open_index(built_index) as store:
        (m,) = QueryPipeline(store).identify_file(path)
        assert QueryPipeline(store, options=QueryOptions(alterations=False)).identify_file(path) == []
    assert m.title == "track03" and abs(m.track_offset_s) < 0.15
    assert abs(m.speed - 25 / 24) < 0.005


def test_a_process_loads_the_compiled_loops_after_searching_often(built_index, music_dir, monkeypatch):
    """The search asks for the compiled loops (in the background) at its COMPILE_AFTER-th call only, and
    ``BGMID_KERNELS=numpy`` keeps a process on the numpy code even when asked to wait for them."""
    import itertools

    import bgmid.alterations as alt
    from bgmid import kernels

    calls = []
    monkeypatch.setattr(alt, "compiled", lambda start=False, wait=False: calls.append(start) or None)
    monkeypatch.setattr(alt, "_searches", itertools.count(alt.COMPILE_AFTER - 1))
    x, sr = _excerpt(music_dir)
    with open_index(built_index) as store:
        peaks = query_peaks(resample(_alter(x, sr, "pitch", 1.0), sr, 11025), store.preset, 40.0)
        for _ in range(3):
            search(store, peaks, default_grid()[:4], fanout=10)
    assert calls.count(True) == 1 and len(calls) > 3  # started once; every other call only asks
    monkeypatch.setenv("BGMID_KERNELS", "numpy")
    assert kernels.compiled(wait=True) is None
