"""The separators' training losses beyond plain L1 (bgmid.separation.losses): the peak-weighted log loss."""

from __future__ import annotations

import torch

from bgmid.separation.losses import PEAK_FLOOR, PEAK_WEIGHT, peak_log_l1, spectral_peaks


def _spectrum(seed: int = 0) -> torch.Tensor:
    """(1, 1, 40, 60) magnitudes: a low noise floor with three tonal peaks (bins 10, 30, 50 at frames 10-30)."""
    g = torch.Generator().manual_seed(seed)
    mag = 0.01 + 0.005 * torch.rand(1, 1, 40, 60, generator=g)
    for b in (10, 30, 50):
        mag[..., 10:31, b] = 1.0 + 0.01 * torch.arange(21.0)  # a rising tone: one maximum, at frame 30
    return mag


def test_spectral_peaks_are_local_maxima_above_the_floor() -> None:
    mag = _spectrum()
    pk = spectral_peaks(mag, torch.tensor(0.1))
    assert {(int(t), int(f)) for t, f in pk[0, 0].nonzero()} == {(30, 10), (30, 30), (30, 50)}
    assert not spectral_peaks(mag, torch.tensor(2.0)).any()  # nothing above that floor
    assert spectral_peaks(mag, torch.tensor(0.0)).sum() > 3  # the noise floor's own local maxima


def test_peak_log_l1_weighs_lost_and_invented_peaks_over_the_rest() -> None:
    """Zero for a perfect estimate; losing a peak of the music, or keeping a peak that is not the music's,
    costs more than the same log error on an ordinary bin; an error far under the floor costs nothing."""
    ref = _spectrum()
    mix = ref + 0.5
    assert float(peak_log_l1(ref, ref, mix)) == 0.0

    def cost(t: int, f: int, value: float) -> float:
        est = ref.clone()
        est[0, 0, t, f] = value
        return float(peak_log_l1(est, ref, mix))

    lost = cost(30, 30, ref[0, 0, 30, 30] / 8)  # a music peak 18 dB down
    ordinary = cost(15, 40, ref[0, 0, 15, 40] / 8)  # a noise-floor bin 18 dB down
    invented = cost(5, 40, ref[0, 0, 5, 40] * 8)  # a bin of the floor 18 dB up: a peak the music lacks
    assert lost > 2 * ordinary and invented > 2 * ordinary, (lost, ordinary, invented)
    assert ordinary > 0
    floor = PEAK_FLOOR * float(mix.abs().mean())
    quiet = ref.clone() * 0 + floor * 1e-3
    tiny = peak_log_l1(quiet * 0.5, quiet, mix)  # both far under the floor: told apart hardly at all
    assert float(tiny) < 1e-2
    assert PEAK_WEIGHT > 1


def test_peak_log_l1_gradient_moves_a_lost_peak_back() -> None:
    """The loss is differentiable in the estimate (the peak map is not): one gradient step on an estimate whose
    peaks are 12 dB down raises those peaks."""
    ref = _spectrum()
    est = (ref.clone() / 4).requires_grad_(True)
    loss = peak_log_l1(est, ref, ref + 0.5)
    loss.backward()
    assert float(est.grad[0, 0, 30, 30]) < 0  # raising the peak lowers the loss
