"""Training losses of the separators beyond plain L1, shared by the waveform and the spectrogram models.

Plain L1 on a mixture of dialogue and music 10-30 dB under it is the dialogue's error almost alone, and the
paper's finding (SDR ranks separators wrongly for identification) holds within one network too: a Spleeter
fine-tune on it raised SI-SDR and lowered identification (reports/spleeter-fine-tune). ``bgmid train --loss``:

* ``balanced-l1`` (:func:`relative_l1`): each source's error over that source's own level;
* ``peak-l1`` (:func:`peak_log_l1`, spectrogram models that offer it): the music's log-magnitude error,
  weighted on the spectral peaks that landmark fingerprinting keeps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: ``relative_l1``: a source below this share of the mixture's level (-40 dB) counts as absent (a music-only or
#: speech-only example): its leakage is measured against the mixture's level instead. A first version floored
#: the level there, which weighed any leakage into an absent source 100x; a Wave-DenseNet fine-tune with it
#: learned to output almost no music (validation gain at -10 dB 6.3 -> -5.0 dB in 620 steps).
BALANCE_FLOOR = 0.01


def relative_l1(est: torch.Tensor, ref: torch.Tensor, mix: torch.Tensor) -> torch.Tensor:
    """Per example (dimension 0), the L1 error over the source's own mean absolute level (the mixture's where
    the source is absent), then the batch mean: an error of music at -30 dB weighs what the same relative error
    of the dialogue does. Waveforms (B, 1, N) or magnitudes (B, C, T, F) alike: the balanced loss of every
    separator (``bgmid train --loss balanced-l1``)."""
    dims = tuple(range(1, ref.dim()))
    level = ref.abs().mean(dim=dims)
    mix_level = mix.abs().mean(dim=dims)
    scale = torch.where(level >= BALANCE_FLOOR * mix_level, level, mix_level).clamp_min(1e-8)
    return ((est - ref).abs().mean(dim=dims) / scale).mean()


#: ``peak_log_l1``: weight of a bin that is a spectral peak of the reference or of the estimate, over 1 for the
#: rest; the peak neighbourhood in (frames, bins), about what a landmark's peak must top (~0.2 s x ~100 Hz at
#: Spleeter's 23 ms / 10.8 Hz grid); and the floor, relative to the mixture's mean magnitude, below which
#: magnitudes are not told apart (-60 dB: a peak must stand out of what is audible in the mix).
PEAK_WEIGHT = 4.0
PEAK_SIZE = (9, 9)
PEAK_FLOOR = 1e-3


def spectral_peaks(mag: torch.Tensor, floor: torch.Tensor, size: tuple[int, int] = PEAK_SIZE) -> torch.Tensor:
    """Bool map of the local maxima of ``mag`` (B, C, T, F) over a ``size`` (frames, bins) neighbourhood that
    are above ``floor`` (broadcast against ``mag``): the candidates landmark fingerprinting picks its peaks from."""
    pad = (size[0] // 2, size[1] // 2)
    top = F.max_pool2d(mag, size, stride=1, padding=pad)
    return (mag >= top) & (mag > floor)


def peak_log_l1(est: torch.Tensor, ref: torch.Tensor, mix: torch.Tensor, weight: float = PEAK_WEIGHT
                ) -> torch.Tensor:
    """L1 between log magnitudes (B, C, T, F), each bin weighted ``1 + weight`` where the reference or the
    estimate has a spectral peak (:func:`spectral_peaks`), per example over the mixture's level.

    Why: identification keeps only the separated music's spectral peaks. A peak of the music that the
    estimate loses, or a peak of leftover speech that it keeps, costs a landmark, however small its energy;
    a plain magnitude L1 hardly sees either when the music lies 20 dB under the dialogue (fine-tuning Spleeter
    on it raised SI-SDR and lowered identification). Log magnitudes weigh a quiet peak like a loud one; the
    floor (:data:`PEAK_FLOOR` of the mixture's mean magnitude) keeps silence from dominating."""
    dims = tuple(range(1, mix.dim()))
    floor = (PEAK_FLOOR * mix.abs().mean(dim=dims)).clamp_min(1e-8).reshape(-1, *([1] * (mix.dim() - 1)))
    with torch.no_grad():
        w = 1.0 + weight * (spectral_peaks(ref, floor) | spectral_peaks(est.detach(), floor)).float()
    err = (torch.log(est + floor) - torch.log(ref + floor)).abs()
    return (w * err).sum(dim=dims).div(w.sum(dim=dims)).mean()
