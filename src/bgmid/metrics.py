"""Signal-level quality figures, defined once: SI-SDR and plain SNR of an estimate against its reference.

Both take ``(reference, estimate)`` in that order (the order of mir_eval and of the literature); pass them by
keyword when the call site could be misread: ``si_sdr(reference=music, estimate=music_est)``. Used by the
evaluation (:mod:`bgmid.evaluate.bss`, damage to clean music, BSS rows) and by training's validation
(:mod:`bgmid.train`, model selection and model cards).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["si_sdr", "snr"]

_EPS = 1e-20


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    """Inner product without BLAS: on a shared machine OpenBLAS threads make ``np.dot`` ~30x slower here."""
    return float(np.einsum("i,i->", a, b))


def si_sdr(reference: np.ndarray, estimate: np.ndarray, *, zero_mean: bool = False) -> float:
    """Scale-invariant SDR in dB (Le Roux et al. 2019): the estimate's projection on the reference against
    the rest; NaN when the reference is silent.

    Why alongside SDR: it does not let BSS Eval's 512-tap filter absorb spectral damage. ``zero_mean``
    removes both signals' means first (the paper's recommendation; training's validation has always done so,
    the evaluation has not: each keeps its figures).
    """
    r = np.asarray(reference, dtype=np.float64).reshape(-1)
    e = np.asarray(estimate, dtype=np.float64).reshape(-1)
    if zero_mean:
        r, e = r - r.mean(), e - e.mean()
    rr = _dot(r, r)
    if rr < _EPS * r.size:
        return math.nan
    target = (_dot(e, r) / rr) * r
    noise = e - target
    return 10.0 * math.log10((_dot(target, target) + _EPS) / (_dot(noise, noise) + _EPS))


def snr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Plain SNR in dB: reference power over the power of (estimate - reference); no scaling, no filter;
    NaN when the reference is silent."""
    r = np.asarray(reference, dtype=np.float64).reshape(-1)
    e = np.asarray(estimate, dtype=np.float64).reshape(-1)
    pr = _dot(r, r)
    if pr < _EPS * r.size:
        return math.nan
    d = e - r
    return 10.0 * math.log10((pr + _EPS) / (_dot(d, d) + _EPS))
