"""Separation quality of a few separators on the held-out fixed test mixes, through bgmid.evaluate's own code path
(``load_set`` -> ``separate_set`` -> ``separation_row``: SI-SDR, SNR and BSS Eval of the music/speech estimates
at 16 kHz), reading the corpus only (no ``eval_cache`` is written). Writes one JSON with per-set means and the
music SI-SDR gain over the unprocessed mixture.

    PYTHONPATH=src python scripts/eval_separators.py --models unet spleeter --sets test_0dB test_-10dB \
        --clips 20 --threads 1 --out benchmarks/results/spleeter-vs-unet.json
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["unet", "spleeter"], help="registry or pretrained names")
    ap.add_argument("--sets", nargs="+", default=["test_0dB", "test_-10dB"])
    ap.add_argument("--clips", type=int, default=20, help="first N clips of each set")
    ap.add_argument("--bss-clips", type=int, default=None, help="BSS Eval on the first N clips (default: all)")
    ap.add_argument("--root", default=None, help="data root (default $BGMID_DATA or ~/.cache/bgmid)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    import torch

    from bgmid.data.corpus import default_root
    from bgmid.evaluate.identification import load_set
    from bgmid.evaluate.separators import resolve_separators, separate_set, separation_row

    torch.set_num_threads(args.threads)
    root = Path(args.root) if args.root else default_root()
    entries, skipped = resolve_separators(["none", *args.models])
    if skipped:
        print(f"skipped: {skipped}", file=sys.stderr)
    rows = []
    for name in args.sets:
        fs = load_set(root, name, limit=args.clips)
        base = None
        for e in entries:
            t0 = time.perf_counter()
            sep = separate_set(fs, e, bss_clips=args.bss_clips or len(fs.clips))
            row = separation_row(fs, sep)
            row["wall_s"] = time.perf_counter() - t0
            row["x_real_time"] = sep.audio_s / sep.sep_s if sep.sep_s else None
            row["weights_sha256"] = e.sha256
            if e.name == "none":
                base = row["si_sdr_music_mean"]
            row["si_sdr_music_gain"] = row["si_sdr_music_mean"] - base
            rows.append(row)
            print(f"{name:12s} {e.name:10s} music SI-SDR {row['si_sdr_music_mean']:6.2f} dB "
                  f"(gain {row['si_sdr_music_gain']:+6.2f}), SDR {row.get('sdr_music_mean', float('nan')):6.2f}, "
                  f"speech SI-SDR {row['si_sdr_speech_mean']:6.2f}, "
                  f"{row['x_real_time'] or float('nan'):.1f}x real time", file=sys.stderr, flush=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    out = {"command": " ".join(sys.argv), "commit": commit, "machine": platform.machine(),
           "threads": args.threads, "clips": args.clips, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
