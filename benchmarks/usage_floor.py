"""How well the mix's floor reads the music under dialogue (:func:`bgmid.monitor.floor_msr_db`), per truth part.

For every part of the hard programmes' truth (``bgmid data programme --hard``: one row per part, with its level
relative to the dialogue, or music only), the floor estimate over the part (its first and last second left out:
fades) is compared with the true level: prints each part, the median of (estimate - true level) over the parts
under dialogue (what ``FLOOR_BIAS_DB`` corrects, so it reads ~0 after the correction), and the share of parts
labelled right (featured: music only or >= 0 dB) at thresholds around ``FEATURED_MSR_DB``. The estimate is
read from the audio alone (no index, no detection), so it isolates the usage estimate from cue finding.

    python benchmarks/usage_floor.py --work DIR --seeds 7000,7001,7002
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from bgmid.audio import load
from bgmid.cuesheet import read_truth
from bgmid.monitor import FEATURED_MSR_DB, FLOOR_BIAS_DB, _frame_span, _Levels, floor_msr_db


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True, help="folder of hard_300s_SEED.wav programmes")
    ap.add_argument("--seeds", required=True, help="comma-separated seeds")
    ap.add_argument("--duration", type=float, default=300.0)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")
    args = ap.parse_args(argv)
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        wav = args.work / f"hard_{int(args.duration)}s_{seed}.wav"
        if not wav.exists():
            from bgmid.data.programmes import generate_hard_programme

            generate_hard_programme(None, duration_s=args.duration, seed=seed, out=wav)
        x, sr = load(wav, 16000)
        lv = _Levels(sr)
        lv.add({"mix": x}, 0, 0, x.size)
        frames = lv.curves()["frames"]
        kinds = json.loads(wav.with_suffix(".json").read_text())["passages"]
        for t in read_truth(wav.with_suffix(".cues.csv")):
            a, b = t.start_s + 1.0, t.end_s - 1.0
            if b - a < 2.0:
                continue
            est = floor_msr_db(_frame_span(frames, a, b))
            under = any(p["kind"] == "dialogue" and p["end_s"] > a and p["start_s"] < b for p in kinds)
            rows.append({"seed": seed, "title": t.title, "start_s": round(t.start_s, 1), "end_s": round(t.end_s, 1),
                         "level_db": t.level_db, "music_only": t.music_only, "featured": t.featured,
                         "under_dialogue": under and not t.music_only,
                         "estimate_db": None if est is None else round(est, 2)})
            print(f"{seed} {t.title:12s} {t.start_s:6.1f}-{t.end_s:6.1f} level {t.level_db:6.1f} "
                  f"{'music only' if t.music_only else '          '} estimate "
                  + ("  none" if est is None else f"{est:6.1f}"))
    ok = [r for r in rows if r["estimate_db"] is not None]
    under = [r["estimate_db"] - r["level_db"] for r in ok if r["under_dialogue"] and r["level_db"] is not None]
    med = float(np.median(under)) if under else math.nan
    print(f"\n{len(ok)} parts; under dialogue ({len(under)}): median estimate - true level {med:+.2f} dB "
          f"(FLOOR_BIAS_DB {FLOOR_BIAS_DB} dB already added)")
    acc = {}
    for thr in np.arange(-3.0, 3.01, 0.5):
        acc[round(float(thr), 1)] = float(np.mean([(r["estimate_db"] >= thr) == r["featured"] for r in ok]))
    print("parts labelled right by threshold (dB): "
          + ", ".join(f"{k:+.1f}: {v:.0%}" for k, v in acc.items())
          + f"  (the monitor uses {FEATURED_MSR_DB:+.1f})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "command": "python benchmarks/usage_floor.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "parts": len(ok), "median_estimate_minus_level_under_dialogue_db": round(med, 2),
            "right_by_threshold": acc, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
