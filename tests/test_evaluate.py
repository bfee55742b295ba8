"""bgmid evaluate on a tiny generated corpus (no download): metrics, the grid, the report, quick mode via the CLI."""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import numpy as np
import pytest
from signals import synth_speech

from bgmid.audio import resample
from bgmid.data import corpus
from bgmid.evaluate import bss
from bgmid.evaluate.identification import EvalSettings, QuerySpec, SeparatorEntry, evaluate, set_role
from bgmid.evaluate.report import best_configuration, rank_correlation, write_report

CLIP_S = 6.0
N_CLIPS = 10


def _music(seed: int, duration_s: float, sr: int = 22050) -> np.ndarray:
    """Cheap music-like signal: a chord per 0.5 s from a per-track vocabulary, plus noise hits."""
    rng = np.random.default_rng(seed)
    n, seg = int(duration_s * sr), sr // 2
    t = np.arange(seg) / sr
    h = np.arange(1, 7)
    chords = []
    for _ in range(8):
        f0 = 110 * 2 ** (rng.integers(0, 24, 3) / 12)
        x = (np.sin(2 * np.pi * (f0[:, None, None] * h[None, :, None]) * t) / h[None, :, None]).sum(axis=(0, 1))
        chords.append(x * np.exp(-3 * t) + 0.3 * rng.standard_normal(seg) * np.exp(-t / 0.02))
    out = np.concatenate([chords[i] for i in rng.integers(0, 8, n // seg + 1)])[:n]
    return (0.3 * out / np.abs(out).max()).astype(np.float32)


def make_corpus(root: Path) -> Path:
    """A corpus cache written directly (int16 arrays + manifest with fixed splits), then fixed sets of 6 s."""
    from bgmid.data.mixing import build_fixed_sets

    recs = []

    def put(item_id: str, x22: np.ndarray) -> None:
        for rate in corpus.CACHE_RATES:
            corpus._atomic_save_npy(corpus.audio_path(root, item_id, rate),
                                    corpus._to_int16(resample(x22, 22050, rate)))

    for i, split in enumerate(["test", "test", "test", "train", "train", "ooi", "ooi"]):
        iid = f"m{i:015d}"
        put(iid, _music(700 + i, 40.0))
        recs.append({"id": iid, "kind": "music", "split": split, "package": "pk", "title": f"track{i}",
                     "orig_path": f"t{i}.ogg", "licence": "", "duration_s": 40.0, "orig_sr": 22050,
                     "bandwidth_hz": 8000.0, "bandwidth99_hz": 4000.0, "rms_dbfs": -20.0, "language": "",
                     "speaker": "", "group": ""})
    for k in range(8):
        rng = np.random.default_rng(zlib.crc32(f"sp{k}".encode()))
        x = synth_speech(int(rng.integers(1 << 30)), float(rng.uniform(0.8, 2.0)), 22050)
        x = x + 0.02 * rng.standard_normal(x.size).astype(np.float32) * (np.abs(x) > 0.01)
        iid = f"s{k:015d}"
        put(iid, x)
        recs.append({"id": iid, "kind": "speech", "split": "test", "package": "voices", "title": iid,
                     "orig_path": "", "licence": "", "duration_s": x.size / 22050, "orig_sr": 22050,
                     "bandwidth_hz": 9000.0, "bandwidth99_hz": 3000.0, "rms_dbfs": -20.0, "language": "xx",
                     "speaker": "a", "group": "voices:a"})
    (root / "manifest.json").write_text(json.dumps({"version": 1, "root": str(root), "items": recs,
                                                    "duplicates": [], "summary": {}}))
    build_fixed_sets(root, "test", sample_rates=(16000,), n_clips=N_CLIPS, snrs=(0.0, -10.0), clip_s=CLIP_S,
                     log=lambda _m: None)
    return root


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("evalcorpus"))


class OracleSeparator:
    """Stand-in separator that knows the clean music of every clip (by its mixture's first samples): the
    best possible separator, so fusion and damage figures have a known answer."""

    sample_rate = 16000

    def __init__(self, root: Path, sets: list[str]):
        from bgmid.data.mixing import load_fixed_set

        self.truth: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}
        for s in sets:
            for c in load_fixed_set(root, s, 16000):
                self.truth[c.mix[:64].tobytes()] = (c.music, c.speech)

    def separate(self, mono: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        m, s = self.truth.get(mono[:64].astype(np.float32).tobytes(), (mono, np.zeros_like(mono)))
        return m.copy(), s.copy()


class SilentSeparator:
    """Outputs no music at all: exercises the silent-estimate guard and must identify nothing."""

    sample_rate = 11025

    def separate(self, mono: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros_like(mono), mono.copy()


# ---------------------------------------------------------------------------------------------------------------
# metrics


def test_si_sdr_and_snr_known_values():
    rng = np.random.default_rng(0)
    r = rng.standard_normal(16000)
    n = rng.standard_normal(16000)
    n -= r * (n @ r) / (r @ r)  # orthogonal noise: SI-SDR is exactly the power ratio
    est = 2.0 * r + 0.2 * n  # scaled: SI-SDR ignores the gain, SNR does not
    assert bss.si_sdr(r, est) == pytest.approx(10 * np.log10((4 * (r @ r)) / (0.04 * (n @ n))), abs=1e-6)
    assert bss.snr(r, r + 0.1 * n) == pytest.approx(10 * np.log10((r @ r) / (0.01 * (n @ n))), abs=1e-6)
    assert math.isnan(bss.si_sdr(np.zeros(100), np.ones(100)))


def test_bss_eval_guards_silent_reference_and_estimate():
    rng = np.random.default_rng(1)
    m, s = rng.standard_normal(8000), rng.standard_normal(8000)
    good = bss.bss_eval(m, s, m + 0.1 * s, s + 0.1 * m)
    assert good["sdr_music"] > 15 and good["sir_music"] > 15 and good["bss_silent_estimate"] == 0.0
    silent_ref = bss.bss_eval(m, np.zeros(8000), m, np.zeros(8000))  # mir_eval would raise
    assert all(math.isnan(silent_ref[k]) for k in bss.BSS_KEYS)
    silent_est = bss.bss_eval(m, s, np.zeros(8000), m + s)  # scored terribly instead of dropped
    assert silent_est["bss_silent_estimate"] == 1.0 and silent_est["sdr_music"] < -5


def test_set_roles_and_query_specs():
    assert set_role("test_-10dB") == ("mixture", -10.0)
    assert set_role("test_ooi_0dB") == ("ooi_mixture", 0.0)
    assert set_role("val_music")[0] == "clean" and set_role("test_speech")[0] == "speech"
    assert set_role("test_ooi")[0] == "ooi"
    q = QuerySpec.parse("d3-f2.5-s4")
    assert (q.density_factor, q.fanout_factor, q.shifts) == (3.0, 2.5, 4) and QuerySpec.parse(q.label) == q
    assert math.isnan(rank_correlation([1, 2], [2, 1]))
    assert rank_correlation([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert rank_correlation([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)


# ---------------------------------------------------------------------------------------------------------------
# the grid and the report


@pytest.fixture(scope="module")
def small_report(data_root, tmp_path_factory):
    sets = ["test_0dB", "test_-10dB", "test_music", "test_speech", "test_ooi", "test_ooi_0dB"]
    seps = [SeparatorEntry("none"), SeparatorEntry("oracle", OracleSeparator(data_root, sets)),
            SeparatorEntry("silent", SilentSeparator())]
    settings = EvalSettings(root=str(data_root), presets=["p1"], sets=sets, fusion=True, bss_clips=1,
                            queries=["d2-f2-s1", "d1-f1-s1"], threads=1, cache=False)
    rep = evaluate(settings, separators=seps, log=None)
    out = tmp_path_factory.mktemp("report")
    res = write_report(rep, out, argv=["bgmid", "evaluate", "--test"], started=0.0)
    return rep, out, res


def _row(rep, sep, inp, set_name, query="d2-f2-s1"):
    return next(r for r in rep["identification"] if (r["separator"], r["input"], r["set"], r["query"]) ==
                (sep, inp, set_name, query))


def test_identification_grid_has_the_known_answers(small_report):
    rep, _, _ = small_report
    assert rep["index"]["p1"]["tracks"] == 5  # all music but the ooi split
    # the oracle hands over the clean music: as good as the clean set, at every SNR
    clean = _row(rep, "none", "sep", "test_music")["rate"]
    assert clean >= 0.8
    assert _row(rep, "oracle", "sep", "test_-10dB")["rate"] == pytest.approx(clean)
    assert _row(rep, "oracle", "fusion", "test_-10dB")["rate"] >= _row(rep, "none", "sep", "test_-10dB")["rate"]
    # a separator that outputs nothing identifies nothing; fused with the mix it is the mix again
    assert _row(rep, "silent", "sep", "test_0dB")["rate"] == 0.0
    assert _row(rep, "silent", "fusion", "test_0dB")["rate"] == _row(rep, "none", "sep", "test_0dB")["rate"]
    for r in rep["identification"]:
        assert r["clips"] == N_CLIPS
        if r["role"] in ("speech", "ooi", "ooi_mixture"):
            assert math.isnan(r["rate"]) and 0.0 <= r["false_rate"] <= 1.0
        by = r["by_threshold"]
        ts = sorted((k for k in by if "r" not in k), key=int)
        assert all(by[a]["matched"] >= by[b]["matched"] for a, b in zip(ts, ts[1:]))  # monotone in threshold
        assert all(by[f"{t}r2"]["matched"] <= by[f"{t}r1.5"]["matched"] <= by[t]["matched"] for t in ts)
    # separation figures: oracle perfect, the mix at the set's SNR, silent caught by the guard
    b = {(r["separator"], r["set"]): r for r in rep["bss"]}
    assert b[("oracle", "test_0dB")]["si_sdr_music_mean"] > 60
    assert b[("none", "test_-10dB")]["si_sdr_music_mean"] == pytest.approx(-10.0, abs=0.5)
    assert b[("silent", "test_0dB")]["bss_silent_estimates"] == 1
    assert b[("none", "test_0dB")]["bss_clips"] == 1
    assert "silent" in rep["cost"]["separation"] and rep["cost"]["index"]["p1"]["bytes"] > 0


def test_report_files_and_best_configuration(small_report):
    rep, out, res = small_report
    for f in ("README.md", "report.json", "run.json", "best.json", "separation.csv", "identification.csv",
              "identification_vs_snr.png", "threshold_tradeoff.png", "clips.csv"):
        assert (out / f).exists(), f
    md = (out / "README.md").read_text()
    for head in ("Separation quality", "Identification rate", "Damage to clean music", "False matches", "Cost",
                 "Best configuration", "Query options"):
        assert head in md
    log = json.loads((out / "run.json").read_text())
    assert log["manifest_sha256"] == rep["manifest_sha256"] and log["versions"]["numpy"]
    best = json.loads((out / "best.json").read_text())
    assert best == res["best"] == best_configuration(json.loads((out / "report.json").read_text()))
    assert best["preset"] == "p1" and best["separator"] in ("oracle", None)
    assert best["scores"]["false_match"] <= 0.01 or not best["meets"]["false_match"]
    assert set(best["query_options"]) == {"density_factor", "fanout_factor", "shifts", "min_aligned"}


def test_best_configuration_respects_false_matches():
    def row(sep, role, snr, correct, matched, n=100):
        return {"separator": sep, "input": "sep", "preset": "p2", "query": "d2-f2-s1", "set": f"x{role}{snr}",
                "role": role, "snr": snr, "clips": n,
                "by_threshold": {"8": {"correct": correct, "matched": matched}}}

    rep = {"thresholds": [8], "default_threshold": 8, "settings": {"queries": ["d2-f2-s1"]}, "identification": [
        row("greedy", "mixture", 0.0, 99, 100), row("greedy", "mixture", -10.0, 95, 100),
        row("greedy", "speech", -math.inf, 0, 5),  # 5 % false matches: ruled out
        row("careful", "mixture", 0.0, 90, 90), row("careful", "mixture", -10.0, 70, 71),
        row("careful", "speech", -math.inf, 0, 1), row("careful", "clean", math.inf, 98, 98)]}
    best = best_configuration(rep)
    assert best["separator"] == "careful" and best["meets"]["false_match"] and not best["meets"]["-10dB"]


# ---------------------------------------------------------------------------------------------------------------
# the command line: quick mode, as the default test suite runs it


def test_cli_quick_runs_and_reuses_the_cached_index(data_root, tmp_path):
    from bgmid.cli import main

    out = tmp_path / "quick"
    assert main(["evaluate", "--quick", "--models", "none", "no-such-model", "--root", str(data_root),
                 "--out", str(out), "--clips", "6", "--bss-clips", "1", "--fusion"]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["settings"]["presets"] == ["p2"] and "no-such-model" in rep["skipped_separators"]
    assert {r["set"] for r in rep["identification"]} == {"test_0dB", "test_-10dB", "test_music", "test_speech",
                                                         "test_ooi"}
    assert (out / "best.json").exists() and "no-such-model" in (out / "README.md").read_text()
    idx = list((data_root / "index").glob("p2-*"))
    assert len(idx) == 1 and (idx[0] / "built.json").exists()
    stamp = (idx[0] / "built.json").stat().st_mtime
    assert main(["evaluate", "--quick", "--models", "none", "--root", str(data_root), "--out", str(out),
                 "--clips", "2"]) == 0
    assert (idx[0] / "built.json").stat().st_mtime == stamp  # not rebuilt
    cached = list((data_root / "eval_cache" / "ident").rglob("*.json"))
    assert cached  # per-clip identification results are reused by the next run
    rep2 = json.loads((out / "report.json").read_text())
    a = next(r for r in rep["identification"] if r["set"] == "test_-10dB")
    b = next(r for r in rep2["identification"] if r["set"] == "test_-10dB")
    assert b["clips"] == 2 and b["by_threshold"]["8"]["matched"] <= a["by_threshold"]["8"]["matched"]


def test_missing_corpus_is_a_clear_error(tmp_path, capsys):
    from bgmid.cli import main

    assert main(["evaluate", "--quick", "--root", str(tmp_path / "none"), "--out", str(tmp_path / "r")]) == 2
    assert "bgmid data fetch" in capsys.readouterr().err


def test_preset_variants_parse():
    from bgmid.errors import BgmidError
    from bgmid.evaluate.library import resolve_preset

    p = resolve_preset("p2:density=30,fanout=8")
    assert (p.name, p.sample_rate, p.density, p.fanout) == ("p2:density=30,fanout=8", 16000, 30.0, 8)
    assert resolve_preset("p1").name == "p1"
    with pytest.raises(BgmidError):
        resolve_preset("p2:nosuch=1")


def test_ablation_runs_are_planned_and_resumable(tmp_path, monkeypatch):
    """--ablations trains one U-Net per paper Table 3/4 row (training itself is stubbed here) and hands their
    best.pt to the evaluation; a finished run is not trained again."""
    import bgmid.train
    from bgmid.evaluate.identification import ABLATIONS, display_name, train_ablations

    calls = []

    class Res:
        step, seconds, best = 10, 1.0, 0.5

    def fake_train(cfg, resume=False, progress=True, log=print):
        calls.append((cfg.run_name, cfg.model, dict(cfg.model_overrides)))
        cfg.run_dir.mkdir(parents=True, exist_ok=True)
        (cfg.run_dir / "best.pt").write_bytes(b"x")
        return Res()

    monkeypatch.setattr(bgmid.train, "train", fake_train)
    paths = train_ablations(["frames", "hop"], None, tmp_path, minutes=0.1, log=lambda _m: None)
    assert [c[0] for c in calls] == [n for w in ("frames", "hop") for n, _ in ABLATIONS[w]]
    assert calls[0][1] == "unet" and calls[0][2] == {"sample_rate": 16000, "n_fft": 1024, "hop": 373, "frames": 128}
    assert calls[-1][2]["hop"] == 512 and calls[-1][2]["sample_rate"] == 22050
    assert [display_name(p) for p in paths] == [c[0] for c in calls]
    calls.clear()
    assert train_ablations(["hop"], None, tmp_path, log=lambda _m: None) == paths[3:] and not calls


# ---------------------------------------------------------------------------------------------------------------
# the library's corpus index (what the benchmarks use) and the repeat criterion


def test_corpus_index_items_and_decoys(data_root):
    from bgmid.evaluate.library import indexed_items, open_corpus_index
    from bgmid.match import Matcher

    ids = [r["id"] for r in indexed_items(corpus.load_manifest(data_root))]
    store, info = open_corpus_index(data_root, "p1", items=ids[:3][::-1], log=None)
    with store:
        assert sorted(t.content_hash for t in store.tracks()) == sorted(ids[:3])
        assert all(t.extra["item_id"] == t.content_hash for t in store.tracks())  # what cue sheets look for
    again, _ = open_corpus_index(data_root, "p1", items=ids[:3], log=None)  # a set: the same cached index
    assert again.path == store.path
    again.close()
    store, info = open_corpus_index(data_root, "p1", fill_to=12, decoy_seed=3, log=None)
    with store:
        tracks = store.tracks()
        assert len(tracks) == 12 and sum(t.content_hash.startswith("decoy") for t in tracks) == 7
        assert info["decoys"] == {"fill_to": 12, "seed": 3, "real_tracks": 5} and info["tracks"] == 12
        x = np.asarray(corpus.load_item(data_root, ids[1], 16000)[16000 * 5:16000 * 17], np.float32) / 32768
        m = Matcher(store).identify(x, 16000)
        assert m and store.track(m[0].track_id).content_hash == ids[1]  # decoys never match real music


def test_repeat_criterion_on_a_loop():
    from bgmid.evaluate.repeats import is_repeat

    sr = 16000
    a, b = _music(11, 10.0, sr), _music(12, 20.0, sr)
    x = np.concatenate([a, a, b])  # the first 10 s loop once, then other music
    assert is_repeat(x, 1.0, 11.0, 8.0)  # the loop's second pass holds the same music
    assert not is_repeat(x, 1.0, 24.0, 8.0)  # another place does not
    x16 = (x * 32767).astype(np.int16)  # the corpus cache's int16 is read as is
    assert is_repeat(x16, 1.0, 11.0, 8.0) and not is_repeat(x16, 1.0, 24.0, 8.0)


def test_same_music_in_another_track():
    """An extended version holding an edit's music (quieter, at another place) is the same music there only."""
    from bgmid.evaluate.repeats import same_music

    sr = 16000
    a, b, c = _music(11, 10.0, sr), _music(12, 20.0, sr), _music(13, 10.0, sr)
    edit = np.concatenate([a, c])
    extended = np.concatenate([b, 0.5 * a, b])
    assert same_music(edit, 1.0, extended, 21.0, 8.0)
    assert not same_music(edit, 1.0, extended, 1.0, 8.0) and not same_music(edit, 11.0, extended, 21.0, 8.0)


# ---------------------------------------------------------------------------------------------------------------
# broadcast-condition sets (issue 12): evaluated with identify's own decision


def test_condition_set_roles():
    assert set_role("test_-10dB_speed+4.2") == ("condition", -10.0)
    assert set_role("test_0dB_tempo-3") == ("condition", 0.0)
    assert set_role("test_speech_broadcast") == ("condition_negative", -math.inf)
    with pytest.raises(Exception, match="condition suffix"):
        set_role("test_-10dB_warp9")


def test_condition_sets_are_identified_through_the_alteration_search(data_root, tmp_path):
    """A PAL speed-up (+4.2 %) defeats a plain landmark match; the evaluation scores such sets with the
    pipeline identify runs, so the sped-up clips are found at the track's own offsets."""
    from bgmid.data.mixing import build_fixed_sets
    from bgmid.evaluate.report import _markdown, run_log

    build_fixed_sets(data_root, "test", sample_rates=(16000,), n_clips=N_CLIPS, snrs=(0.0, -10.0), clip_s=CLIP_S,
                     conditions=["speed+4.2"], log=lambda _m: None)
    sets = ["test_0dB_speed+4.2", "test_0dB"]
    st = EvalSettings(root=str(data_root), models=["none"], presets=["p1"], sets=sets, bss_clips=2, cache=False)
    rep = evaluate(st, log=None)
    rows = {r["set"]: r for r in rep["identification"]}
    assert rows["test_0dB_speed+4.2"]["role"] == "condition"
    assert rows["test_0dB_speed+4.2"]["rate"] >= 0.7, rows["test_0dB_speed+4.2"]
    assert rows["test_0dB"]["rate"] >= 0.7
    md = _markdown(rep, best_configuration(rep), run_log(rep, ["bgmid", "evaluate"]), [], "t")
    assert "## 4b. Broadcast conditions" in md and "`test_0dB_speed+4.2`" in md
