"""Refit the per-cue confidence (:data:`bgmid.monitor.CUE_CALIBRATION`) on generated programmes.

Every programme is monitored (no separator, as indexed) and *every* candidate cue is kept: the window-hit segments
through the monitor's own merging with the acceptance thresholds lowered to the weakest window hit, so the fit
sees the phantoms that acceptance normally hides (chance alignments in dialogue, crowds and unindexed music,
shadows of a stronger track of one soundtrack) next to the true cues. A candidate is true when a truth cue of its
track overlaps it. Features (:func:`bgmid.monitor.cue_features`): log distinct aligned landmarks, log best window,
share of the span inside a stronger cue of another track; a logistic regression (Newton's method, light L2) maps
them to a probability. Prints the table to paste into ``bgmid/monitor.py``, a reliability table (predicted vs
observed by bin, accepted cues only and all candidates), and writes JSON (``--json``).

Programmes used for the table in the code (tuning seeds; the benchmarks' held-out seeds 5000+ and 7000+ are not)::

    P=/tmp/bench; bgmid data programme --seed 1003 --duration 600 --out $P/prog_1003.wav   # and 1004
    bgmid data programme --seed 1005 --duration 600 --no-music --out $P/prog_1005_nomusic.wav
    for s in 7100 7101 7102 7103; do bgmid data programme --hard --duration 300 --seed $s --out $P/hard_$s.wav; done
    python benchmarks/calibrate_cues.py $P/*.wav

``--evaluate`` does not refit: it scores the shipped table on other programmes (held out from the fit) and adds,
per bin of accepted cues, the observed share true with its 95 % lower bound (Clopper-Pearson; with no phantom
in a bin of n cues, ``0.05 ** (1 / n)``: 0.99 can be confirmed only by a bin of about 300 cues without a phantom)::

    python benchmarks/calibrate_cues.py --evaluate --json benchmarks/results/cue_calibration_heldout.json \
        ~/.cache/bgmid/bench/monitor/programmes/prog_600s_{0,1,2_nomusic}.wav HARD/hard_300s_7*.wav
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

import bgmid.monitor as M
from bgmid.cuesheet import merge_truth, read_truth, same_track
from bgmid.index import open_index


def candidates(store, wav: Path, config: M.MonitorConfig) -> list[tuple[tuple[float, float, float], bool, bool]]:
    """(features, true, accepted) of every candidate cue of one programme."""
    captured: dict = {}
    real = M.segments_to_cues

    def spy(segs, frame_s, cfg=config, n_windows_total=None):
        captured.update(segs=segs, frame_s=frame_s, n=n_windows_total)
        return real(segs, frame_s, cfg, n_windows_total)

    M.segments_to_cues = spy
    try:
        res = M.Monitor(store, config=config, alteration=None).run(wav)
    finally:
        M.segments_to_cues = real
    for c in res.cues:
        c.title, c.path = store.track(c.track_id).title, store.track(c.track_id).path
    loose = replace(config, strong_score=config.weak_score, min_cue_score=config.weak_score, min_windows=1,
                    min_cue_s=0.0)
    segs = [replace(s, hits=list(s.hits)) for s in captured["segs"]]
    cues = real(segs, captured["frame_s"], loose, captured["n"])
    truth = merge_truth(read_truth(wav.with_suffix(".cues.csv")), config.loop_gap_s)
    accepted = {(c.track_id, round(c.programme_start_s, 1)) for c in res.cues}
    out = []
    for c in cues:
        meta = store.track(c.track_id)
        c.title, c.path, c.extra = meta.title, meta.path, dict(meta.extra)
        stronger = [(o.programme_start_s, o.programme_end_s) for o in cues
                    if o.track_id != c.track_id and o.score > c.score]
        f = M.cue_features(c.score, c.max_window_score, (c.programme_start_s, c.programme_end_s), stronger)
        true = any(same_track(c, t) and min(c.programme_end_s, t.end_s) > max(c.programme_start_s, t.start_s)
                   for t in truth)
        acc = any(t == c.track_id and abs(a - c.programme_start_s) < 2.0 for t, a in accepted)
        out.append((f, true, acc))
    return out


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0, iters: int = 100) -> np.ndarray:
    """Weights (bias first) of a logistic regression by Newton's method with an L2 penalty (not on the bias)."""
    X = np.hstack([np.ones((x.shape[0], 1)), x])
    w = np.zeros(X.shape[1])
    reg = l2 * np.eye(X.shape[1])
    reg[0, 0] = 0.0
    for _ in range(iters):
        p = 1 / (1 + np.exp(-X @ w))
        g = X.T @ (p - y) + reg @ w
        h = X.T @ (X * (p * (1 - p))[:, None]) + reg
        step = np.linalg.solve(h, g)
        w -= step
        if np.max(np.abs(step)) < 1e-8:
            break
    return w


def lower_bound(k: int, n: int, alpha: float = 0.05) -> float:
    """One-sided ``1 - alpha`` Clopper-Pearson lower bound on a proportion with ``k`` successes of ``n``."""
    from scipy.stats import beta

    return 0.0 if k == 0 else float(beta.ppf(alpha, k, n - k + 1))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("programmes", nargs="+", type=Path, help="programme WAVs with their .cues.csv")
    ap.add_argument("--db", type=Path, default=Path.home() / ".cache/bgmid/index/p1-81ba01b17eac",
                    help="index (default: the benchmarks' corpus index)")
    ap.add_argument("--l2", type=float, default=1.0,
                    help="L2 penalty on the weights (default 1: the data are nearly separable, so an unpenalised "
                    "fit would put every accepted cue at 1.000 on the strength of a few dozen true cues)")
    ap.add_argument("--evaluate", action="store_true",
                    help="score the shipped CUE_CALIBRATION on these programmes instead of refitting it")
    ap.add_argument("--json", type=Path, default=None,
                    help="write the figures as JSON (default results/cue_calibration.json, or "
                    "results/cue_calibration_heldout.json with --evaluate)")
    args = ap.parse_args(argv)
    if args.json is None:
        args.json = Path(__file__).parent / "results" / (
            "cue_calibration_heldout.json" if args.evaluate else "cue_calibration.json")
    rows: list = []
    with open_index(args.db) as store:
        for wav in args.programmes:
            got = candidates(store, wav, M.MonitorConfig())
            rows += got
            print(f"{wav.name}: {len(got)} candidates, {sum(t for _, t, _ in got)} true, "
                  f"{sum(a for *_, a in got)} accepted, {sum(a and not t for _, t, a in got)} accepted phantoms",
                  file=sys.stderr)
    x = np.array([f for f, _, _ in rows], np.float64)
    y = np.array([t for _, t, _ in rows], np.float64)
    acc = np.array([a for *_, a in rows], bool)
    if args.evaluate:
        w = np.array(M.CUE_CALIBRATION["w"], np.float64)
        print(f"shipped CUE_CALIBRATION ({M.CUE_CALIBRATION['fitted_on']}) on {len(args.programmes)} programmes")
    else:
        w = fit_logistic(x, y, args.l2)
        print(f'CUE_CALIBRATION = {{"w": ({", ".join(f"{v:.3f}" for v in w)}), '
              f'"fitted_on": "{len(rows)} candidates ({int(y.sum())} true) of {len(args.programmes)} programmes"}}')
    p = 1 / (1 + np.exp(-(w[0] + x @ w[1:])))
    bins = [0.0, 0.5, 0.9, 0.99, 0.999, 1.0001]
    table = []
    for name, sel in (("all candidates", np.ones_like(acc)), ("accepted cues", acc)):
        print(f"{name}: predicted vs observed share true")
        for lo, hi in zip(bins, bins[1:]):
            m = sel & (p >= lo) & (p < hi)
            if m.any():
                k, n = int(y[m].sum()), int(m.sum())
                low = lower_bound(k, n)
                print(f"  [{lo:.3f}, {min(hi, 1):.3f}): n {n:4d}  predicted {p[m].mean():.3f}  "
                      f"observed {k / n:.3f} (95 % lower bound {low:.3f})")
                table.append({"set": name, "lo": lo, "hi": min(hi, 1.0), "n": n,
                              "predicted": round(float(p[m].mean()), 4), "observed": round(k / n, 4),
                              "observed_lower_95": round(low, 4)})
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "command": "python benchmarks/calibrate_cues.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "mode": "evaluate" if args.evaluate else "fit",
            "w": [round(float(v), 4) for v in w], "l2": args.l2,
            "features": ["log score", "log max window score", "inside"],
            "candidates": len(rows), "true": int(y.sum()), "accepted": int(acc.sum()),
            "accepted_phantoms": int((acc & (y == 0)).sum()), "programmes": [p.name for p in args.programmes],
            "reliability": table,
        }, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
