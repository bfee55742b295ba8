"""Speed of the default separator per stage, and its held-out scores, for each inference variant (issue 14 part 5).

    PYTHONPATH=src python benchmarks/separator_speed.py --seconds 120 --threads 1 2 --reps 3 --clips 20 \
        --out benchmarks/results/separator_speed.json

Variants (measured interleaved, rep by rep, so a change of machine load hits them alike; the best rep counts):

* ``grid-64 torch`` -- the plain module in the chunks used before issue 14 part 5: the 128-frame training
  segment, offsets on the 64-frame grid of the six strided layers, 0.25 overlap (2.0 samples separated per
  output sample);
* ``frame-grid torch`` -- the plain module in the model's inference chunks (:func:`bgmid.separation.apply.
  default_plan`: the same segment, offsets on the STFT frame grid, 0.16 overlap: 1.2 samples per sample);
* ``frame-grid fused`` -- BatchNorm folded (:func:`bgmid.separation.inference.inference_model`, torch backend);
* ``frame-grid onnx`` -- folded and the mask network on ONNX Runtime: what ``load_separator`` runs by default
  when onnxruntime is installed (``pip install onnxruntime onnx``);
* ``grid-64 onnx`` -- ONNX Runtime in the old chunks (what the backend alone buys);
* ``long-512 onnx`` -- 512-frame chunks, 0.12 overlap (1.14 samples per sample; scored to show why the
  training segment stays).

All variants compute speech as mixture minus music (one inverse STFT, :class:`bgmid.separation.spectral.
SpectrogramMaskModel`); before issue 14 part 5 the model ran a second inverse STFT for speech, which
``benchmarks/monitor.py`` on the earlier commit includes.

Speed: ``--seconds`` of real corpus audio (the first 20 s of the first tracks of ``ROOT/audio/16000``, int16 at
16 kHz) through :func:`bgmid.separation.registry.separate_at` (16 kHz in and out, as identify and monitor call it),
x real time per torch thread count, with seconds per stage: resample (16 kHz -> model rate and back), STFT,
network, inverse STFT, the rest of the model's forward (level, log-magnitude, mask, tensors), overlap-add (the
chunking and cross-fade around the network). ``uptime``'s load is recorded before and after: figures taken while
other jobs share the cores are low.

Scores: music SI-SDR gain on the first ``--clips`` clips (12 s) of ``--sets`` with :func:`bgmid.train.validate`
(what ``benchmarks/separator_heldout.py`` and the model cards measure), and each variant's largest difference
from the plain torch module with the same chunks (float rounding only). Identification is ``bgmid evaluate``'s
(run it before/after; the commands are in docs/separation-speed.md).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from bgmid.audio import resample
from bgmid.data.corpus import default_root
from bgmid.separation.apply import ChunkPlan, default_plan, model_fn, plan_chunks, separate_stream
from bgmid.separation.inference import has_onnxruntime, inference_model
from bgmid.separation.registry import DEFAULT_MODEL, load_separator, torch_threads
from bgmid.train import load_val_sets, validate

SR = 16000


def corpus_audio(root: Path, seconds: float, per_track: float = 20.0) -> np.ndarray:
    """``seconds`` of real music: the first ``per_track`` s of the first tracks (sorted) at 16 kHz, float32."""
    files = sorted((root / "audio" / str(SR)).glob("*.npy"))
    pieces, n = [], 0
    for f in files:
        a = np.load(f, mmap_mode="r")[: int(per_track * SR)]
        pieces.append(np.asarray(a, np.float32) / 32768.0)
        n += a.size
        if n >= seconds * SR:
            break
    if not pieces:
        raise SystemExit(f"no decoded tracks under {root / 'audio' / str(SR)}: run 'bgmid data fetch'")
    return np.concatenate(pieces)[: int(seconds * SR)]


def variants(model: torch.nn.Module) -> dict[str, tuple[torch.nn.Module, ChunkPlan]]:
    """name -> (module, chunk plan)."""
    old = plan_chunks(model.segment, model.quantum, 0.25)
    new = default_plan(model)
    out = {
        "grid-64 torch": (copy.deepcopy(model), old),
        "frame-grid torch": (copy.deepcopy(model), new),
        "frame-grid fused": (inference_model(model, "torch"), new),
    }
    if has_onnxruntime():
        out["frame-grid onnx"] = (inference_model(model, "onnx"), new)
        out["grid-64 onnx"] = (inference_model(model, "onnx"), old)
        out["long-512 onnx"] = (inference_model(model, "onnx"), plan_chunks(model.hop * 511, model.quantum, 0.12))
    return out


class Stages:
    """Seconds per stage, accumulated by wrappers around the module's STFT, inverse STFT and network."""

    def __init__(self) -> None:
        self.s: dict[str, float] = defaultdict(float)

    def timed(self, fn, name: str):
        def run(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.s[name] += time.perf_counter() - t
        return run

    def instrument(self, mod: torch.nn.Module) -> None:
        mod.stft.forward = self.timed(mod.stft.forward, "stft")
        mod.stft.inverse = self.timed(mod.stft.inverse, "istft")
        mod.mask_backend = self.timed(mod.mask_backend or mod.mask_net, "network")


def run_once(mod: torch.nn.Module, plan: ChunkPlan, x: np.ndarray, stages: Stages) -> tuple[np.ndarray, float]:
    """The chunked path of :func:`bgmid.separation.registry.separate_at` with every stage timed."""
    t0 = time.perf_counter()
    y = stages.timed(resample, "resample")(x, SR, mod.sample_rate)
    fn = stages.timed(model_fn(mod), "model")
    t1 = time.perf_counter()
    out = np.concatenate(list(separate_stream([y], fn, plan, 4)), axis=1)
    stages.s["chunked"] += time.perf_counter() - t1
    music = stages.timed(resample, "resample")(out[0], mod.sample_rate, SR)
    stages.timed(resample, "resample")(out[1], mod.sample_rate, SR)
    return music[: x.size], time.perf_counter() - t0


def speed(vs: dict, x: np.ndarray, threads: list[int], reps: int) -> dict:
    """Best-of-``reps`` x real time and its stage split, per variant and thread count (interleaved)."""
    best: dict[tuple[str, int], dict] = {}
    outs: dict[str, np.ndarray] = {}
    stages = {name: Stages() for name in vs}
    for name, (mod, _) in vs.items():
        stages[name].instrument(mod)
    for _ in range(reps):
        for n in threads:
            for name, (mod, plan) in vs.items():
                st = stages[name]
                st.s.clear()
                with torch_threads(n):
                    music, wall = run_once(mod, plan, x, st)
                outs[name] = music
                k = (name, n)
                if k not in best or wall < best[k]["wall_s"]:
                    s = st.s
                    best[k] = {"wall_s": round(wall, 3), "x_real_time": round(x.size / SR / wall, 1),
                               "stages_s": {
                                   "resample": round(s["resample"], 3), "stft": round(s["stft"], 3),
                                   "network": round(s["network"], 3), "istft": round(s["istft"], 3),
                                   "rest_of_forward": round(s["model"] - s["stft"] - s["istft"] - s["network"], 3),
                                   "overlap_add": round(s["chunked"] - s["model"], 3)}}
    res: dict = defaultdict(dict)
    for (name, n), r in best.items():
        res[name][f"threads_{n}"] = r
    for name, (_, plan) in vs.items():
        res[name]["samples_separated_per_sample"] = round(plan.chunk / plan.hop, 3)
        same = [k for k, (_, p) in vs.items() if k.endswith("torch") and p == plan]
        if same:  # the plain module in the same chunks: only float rounding may differ
            res[name]["max_abs_diff_vs_plain_torch"] = float(np.abs(outs[name] - outs[same[0]]).max())
    return dict(res)


def load() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):  # pragma: no cover - informative only
        return "load {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=DEFAULT_MODEL, help="separator name or checkpoint (default: the default)")
    ap.add_argument("--seconds", type=float, default=120.0, help="seconds of corpus audio to separate")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts to time")
    ap.add_argument("--reps", type=int, default=3, help="interleaved repetitions (the best counts)")
    ap.add_argument("--sets", nargs="+", default=["test_-10dB", "test_-20dB"], help="held-out sets scored")
    ap.add_argument("--clips", type=int, default=20, help="first N clips (12 s) of each set; 0: no scores")
    ap.add_argument("--root", help="data root (default $BGMID_DATA or ~/.cache/bgmid)")
    ap.add_argument("--out", default="benchmarks/results/separator_speed.json")
    a = ap.parse_args()
    root = Path(a.root) if a.root else default_root()
    model = load_separator(a.model, backend="torch").model
    vs = variants(model)
    x = corpus_audio(root, a.seconds)
    out: dict = {"model": a.model, "seconds": round(x.size / SR, 1), "threads": a.threads, "reps": a.reps,
                 "torch": torch.__version__, "cpus": os.cpu_count(), "load_before": load()}
    print(out["load_before"], flush=True)
    out["speed"] = speed(vs, x, a.threads, a.reps)
    out["load_after_speed"] = load()
    for name, r in out["speed"].items():
        print(name, {k: v["x_real_time"] for k, v in r.items() if k.startswith("threads")},
              "max diff", r.get("max_abs_diff_vs_plain_torch"), flush=True)
    if a.clips:
        names = tuple(s.split("_", 1)[1] for s in a.sets)
        sets = load_val_sets(str(root), model.sample_rate, a.clips, 12.0, names=names, split="test")
        out["scores"] = {"sets": a.sets, "clips": a.clips, "measure": "bgmid.train.validate: mean SI-SDR dB"}
        with torch_threads(2):
            for name, (mod, plan) in vs.items():
                m = validate(mod, sets, plan)
                out["scores"][name] = {k: round(v, 2) for k, v in m.items()}
                print(name, {k: round(v, 2) for k, v in m.items() if k.startswith("gain")}, flush=True)
    out["load_after"] = load()
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
    print("wrote", a.out)


if __name__ == "__main__":
    main()
