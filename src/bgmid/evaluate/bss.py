"""Separation quality: BSS Eval (as the paper computed it), SI-SDR and plain SNR.

BSS Eval is mir_eval's ``bss_eval_sources`` on the (music, speech) pair, the paper's tool, so our Table 5 is
comparable with theirs. Two guards that the paper did not need to state:

* a silent *reference* (speech-only or music-only clips) makes BSS Eval undefined (mir_eval raises): such
  clips get NaN for every BSS figure and are counted, not averaged in;
* a silent *estimate* (a separator that outputs nothing) would also make mir_eval raise, yet it is a real,
  very bad result: it is replaced by faint white noise (BSS Eval is scale-invariant, so this scores like noise,
  about -10 dB SDR) so that it scores terribly instead of disappearing from the average.

``compute_permutation=False``: the separator's output order is known (music, speech). Letting mir_eval pick the
best permutation would credit a separator that swaps its outputs, and doubles the cost (about 1 s per 12 s clip
on one core). On every clip where the separator is better than chance both choices give the same numbers.

SI-SDR (Le Roux et al. 2019) and SNR are cheap per-source figures that are defined for one source alone, so
they are also reported for the clean-music set (damage to clean music), where BSS Eval is not. Their one
definition is :mod:`bgmid.metrics` (re-exported here), argument order ``(reference, estimate)``.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from bgmid.metrics import si_sdr, snr

__all__ = ["BSS_KEYS", "bss_eval", "si_sdr", "snr", "source_metrics"]

#: Keys of :func:`bss_eval`'s result, in report order.
BSS_KEYS = ("sdr_music", "sdr_speech", "sir_music", "sir_speech", "sar_music", "sar_speech")

_EPS = 1e-20


def _silent(x: np.ndarray) -> bool:
    return float(np.mean(np.square(x, dtype=np.float64))) < _EPS


def source_metrics(reference: np.ndarray, estimate: np.ndarray) -> dict[str, float]:
    """SI-SDR and SNR of one source."""
    return {"si_sdr": si_sdr(reference, estimate), "snr": snr(reference, estimate)}


def bss_eval(
    music: np.ndarray, speech: np.ndarray, music_est: np.ndarray, speech_est: np.ndarray
) -> dict[str, float]:
    """BSS Eval SDR/SIR/SAR of the music and speech estimates (mir_eval ``bss_eval_sources``), guarded.

    Returns the :data:`BSS_KEYS` (NaN when a reference is silent) plus ``bss_silent_estimate`` (1.0 when an
    estimate was silent and replaced by noise far below the reference).
    """
    from mir_eval.separation import bss_eval_sources

    n = min(music.size, speech.size, music_est.size, speech_est.size)
    ref = np.stack([music[:n], speech[:n]]).astype(np.float64)
    est = np.stack([music_est[:n], speech_est[:n]]).astype(np.float64)
    out: dict[str, float] = {k: math.nan for k in BSS_KEYS}
    out["bss_silent_estimate"] = 0.0
    if n == 0 or _silent(ref[0]) or _silent(ref[1]):
        return out
    rng = np.random.default_rng(0)
    for i in range(2):
        if _silent(est[i]):
            level = math.sqrt(float(np.mean(np.square(ref[i])))) * 1e-10
            est[i] = rng.standard_normal(n) * level
            out["bss_silent_estimate"] = 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # bss_eval_sources is deprecated in mir_eval 0.8, still exact
        sdr_, sir_, sar_, _ = bss_eval_sources(ref, est, compute_permutation=False)
    for j, src in enumerate(("music", "speech")):
        out[f"sdr_{src}"] = float(sdr_[j])
        out[f"sir_{src}"] = float(sir_[j])
        out[f"sar_{src}"] = float(sar_[j])
    return out
