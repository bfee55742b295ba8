"""Shipped weights (models/<name>-lite.pt) load offline and actually separate a small real mixture.

The clip fixture ``tests/data/sep_clips_11025.npz`` holds six 5 s music and speech excerpts from the held-out test
split of the corpus (int16, 11,025 Hz; sources in ``tests/data/README.md``); they are mixed here at 0 and -10 dB.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bgmid.metrics import si_sdr
from bgmid.separation import DEFAULT_MODEL, available_models, load_separator
from bgmid.separation.registry import shipped_weights

CLIPS = Path(__file__).parent / "data" / "sep_clips_11025.npz"


def _mixtures(sr: int) -> list[tuple[float, np.ndarray, np.ndarray]]:
    from bgmid.audio import resample

    z = np.load(CLIPS)
    out = []
    for k in range(z["music"].shape[0]):
        mu = z["music"][k].astype(np.float32) / 32768
        sp = z["speech"][k].astype(np.float32) / 32768
        if sr != 11025:
            mu, sp = resample(mu, 11025, sr), resample(sp, 11025, sr)
        for snr in (0.0, -10.0):
            g = np.sqrt(np.mean(mu**2) / np.mean(sp**2) / 10 ** (snr / 10))
            out.append((snr, mu, (sp * g).astype(np.float32)))
    return out


# the default separator in the default run; the others with -m slow (MMDenseNet runs ~1x real time on a shared CPU)
@pytest.mark.parametrize(
    "name", [n if n == DEFAULT_MODEL else pytest.param(n, marks=pytest.mark.slow) for n in available_models()]
)
def test_shipped_weights_improve_music(name: str) -> None:
    path = shipped_weights(name)
    if not path.exists():
        pytest.skip(f"{path} not shipped yet (train it with 'bgmid train --model {name}')")
    if not CLIPS.exists():
        pytest.skip(f"{CLIPS} missing")
    sep = load_separator(name)
    gains: dict[float, list[float]] = {0.0: [], -10.0: []}
    for snr, mu, sp in _mixtures(sep.sample_rate):
        mix = mu + sp
        est_mu, est_sp = sep.separate(mix)
        assert est_mu.shape == est_sp.shape == mix.shape and est_mu.dtype == np.float32
        gains[snr].append(si_sdr(reference=mu, estimate=est_mu, zero_mean=True)
                          - si_sdr(reference=mu, estimate=mix, zero_mean=True))
    # the criterion, on a small scale: on average over the clips, music gets better at each SNR
    for snr, g in gains.items():
        assert np.mean(g) > 0, f"{name} at {snr:g} dB: music SI-SDR gains {np.round(g, 2).tolist()} dB"
