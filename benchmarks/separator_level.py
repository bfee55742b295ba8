"""Level sensitivity of the shipped separators, with and without input normalisation (issue 14).

For each model: the RMS ratio of the separated music for a 2x louder input (a level-equivariant separator gives
exactly 2), and the music SI-SDR gain (dB) on the shipped-weights fixture (tests/data/sep_clips_11025.npz: six
5 s test clips mixed at 0 and -10 dB, sources peak-normalised to 0.5, i.e. ~10 dB above the training mixtures)
at the fixture's level and with each mixture scaled to -20 dBFS, with normalisation off (``input_rms=0``, how
the checkpoints were trained) and on (``input_rms=0.1``, bgmid.separation.level).

    PYTHONPATH=src python benchmarks/separator_level.py wave-densenet unet wave-unet mmdensenet

Results merge into benchmarks/results/separator_level.json (one key per model).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from test_separation_shipped import _mixtures  # noqa: E402

from bgmid.metrics import si_sdr  # noqa: E402
from bgmid.separation import load_separator  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "separator_level.json"


def measure(name: str) -> dict:
    sep = load_separator(name)
    mixes = _mixtures(sep.sample_rate)
    res = {}
    for norm in (0.0, 0.1):
        sep.model.input_rms = norm
        for lvl in ("fixture", -20.0):
            g: dict[float, list[float]] = {0.0: [], -10.0: []}
            ratio = []
            for snr, mu, sp in mixes:
                mix = mu + sp
                k = 1.0 if lvl == "fixture" else 10 ** (lvl / 20) / np.sqrt(np.mean(mix**2))
                m = (mix * k).astype(np.float32)
                e, _ = sep.separate(m)
                g[snr].append(si_sdr(reference=mu * k, estimate=e, zero_mean=True)
                              - si_sdr(reference=mu * k, estimate=m, zero_mean=True))
                if lvl == "fixture" and snr == -10.0:
                    e2, _ = sep.separate(2 * m)
                    ratio.append(float(np.sqrt(np.mean(e2**2) / np.mean(e**2))))
            key = f"norm={norm:g} level={lvl}"
            res[key] = {"gain_0dB": round(float(np.mean(g[0.0])), 2), "gain_-10dB": round(float(np.mean(g[-10.0])), 2)}
            if ratio:
                res[key]["out_ratio_2x_min_max"] = [round(min(ratio), 3), round(max(ratio), 3)]
            print(name, key, res[key], flush=True)
    return res


def main(names: list[str]) -> None:
    torch.set_num_threads(1)
    out = json.loads(OUT.read_text()) if OUT.exists() else {}
    for name in names:
        out[name] = measure(name)
        OUT.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:] or ["wave-densenet", "unet", "wave-unet", "mmdensenet"])
