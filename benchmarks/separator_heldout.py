"""Held-out music SI-SDR of separators on fixed test sets (first N clips, 12 s each), e.g. a retrained checkpoint
against the shipped one (issue 14).

    PYTHONPATH=src python benchmarks/separator_heldout.py --weights models/wave-densenet-lite.pt runs/x/best.pt \
        --sets test_0dB test_-10dB test_-10dB_crowd test_-20dB_turns --clips 10 --out benchmarks/results/x.json

For each weights file and set: mean music SI-SDR of the separated music, of the unprocessed mixture, and the
gain (dB), with bgmid.train.validate (the model cards' measure). One torch thread.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from bgmid.separation.registry import load_checkpoint, model_from_checkpoint
from bgmid.train import load_val_sets, validate


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", nargs="+", required=True)
    ap.add_argument("--sets", nargs="+", default=["test_0dB", "test_-10dB"])
    ap.add_argument("--clips", type=int, default=10)
    ap.add_argument("--root")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    torch.set_num_threads(1)
    names = tuple(s.split("_", 1)[1] for s in a.sets)
    out: dict = {"sets": a.sets, "clips": a.clips, "results": {}}
    for w in a.weights:
        model = model_from_checkpoint(load_checkpoint(w))
        t0 = time.time()
        sets = load_val_sets(a.root, model.sample_rate, a.clips, 12.0, names=names, split="test")
        m = validate(model, sets)
        out["results"][w] = {k: round(v, 2) for k, v in m.items()} | {"seconds": round(time.time() - t0, 1)}
        print(w, out["results"][w], flush=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
