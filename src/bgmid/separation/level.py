"""Level normalisation inside the separators: a network sees every input at one level, so its output scales
with its input.

Why: a separator trained on mixtures at -32..-12 dBFS and fed a mixture 10 dB louder than that answers with a
worse separation (the lite Wave-DenseNet made music *worse* on a fixture with peak-normalised sources; its
card records it): convolutions with biases, BatchNorm statistics and tanh outputs are not scale-equivariant.
Scaling each input to a fixed RMS before the network and undoing the gain on the output makes
``separate(g * x) == g * separate(x)`` for any gain ``g`` (down to a floor where silence is not amplified),
so level is no longer something the network must learn.

The target is -20 dBFS RMS (0.1), the middle of the training mixtures' level range and low enough that a
waveform model's tanh outputs (|y| < 1) have ~20 dB of headroom. A model built with ``input_rms=0`` (every
checkpoint trained before this existed, whose stored constructor arguments lack it) is unchanged.
"""

from __future__ import annotations

import torch

#: Default target RMS of a normalised input (linear, full scale 1.0): -20 dBFS.
TARGET_RMS = 0.1
#: Inputs quieter than this RMS (-80 dBFS) are scaled as if they had it, so near-silence is not amplified
#: into noise the network was never shown.
FLOOR_RMS = 1e-4


def level_gain(mix: torch.Tensor, target_rms: float, floor_rms: float = FLOOR_RMS) -> torch.Tensor:
    """Per-item gain (B, 1, 1) that brings (B, C, N) ``mix`` to ``target_rms`` RMS over channels and samples;
    ones when ``target_rms`` is 0 (normalisation off)."""
    if not target_rms:
        return mix.new_ones(mix.shape[0], 1, 1)
    rms = mix.detach().pow(2).mean(dim=(1, 2), keepdim=True).sqrt()
    return target_rms / rms.clamp_min(floor_rms)
