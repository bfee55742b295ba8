"""Spectrogram U-Net (Jansson et al. 2017): a soft music mask in [0, 1] on the mixture magnitude.

Six strided 5x5 convolutions (16-32-64-128-256-512 channels, BN, LeakyReLU 0.2) encode, six strided transposed
convolutions with skips decode (BN, ReLU, dropout 0.5 on the first three), and a sigmoid gives the mask. The STFT,
the mixture-phase reconstruction, the complementary speech mask and the masked-magnitude L1 loss live in
:mod:`bgmid.separation.spectral`. Paper configuration (16 kHz, n_fft 1024, hop 256, 512 frames): 9.82 M parameters.
"""

from __future__ import annotations

import torch
from torch import nn

from bgmid.separation.level import TARGET_RMS
from bgmid.separation.spectral import SpectrogramMaskModel

#: ``input_rms``: the mask network sees the mixture at this RMS (:mod:`bgmid.separation.level`).
PAPER = dict(sample_rate=16000, n_fft=1024, hop=256, frames=512, channels=(16, 32, 64, 128, 256, 512),
             input_rms=TARGET_RMS)
#: CPU configuration: half the channels at 11,025 Hz, n_fft 512, hop 128 (75% overlap), 128 frames (1.5 s).
LITE = dict(sample_rate=11025, n_fft=512, hop=128, frames=128, channels=(8, 16, 32, 64, 128, 256),
            input_rms=TARGET_RMS)
CONFIGS = {"paper": PAPER, "lite": LITE}


class UNet(SpectrogramMaskModel):
    """(B, 1, N) mixture -> (B, 2, N) music, speech through a U-Net magnitude mask.

    Inference chunks are the training segment on the STFT frame grid with 16 % overlap: 1.2 samples separated
    per output sample, against 2.0 on the 64-frame grid of the six strided layers, with the held-out gains kept;
    512-frame chunks cost less still but lose 0.7 / 0.8 dB of gain at -10 / -20 dB
    (``benchmarks/separator_speed.py``, docs/separation-speed.md)."""

    inference_overlap = 0.16
    inference_step_frames = 1

    def __init__(
        self,
        sample_rate: int = 16000,
        n_fft: int = 1024,
        hop: int = 256,
        frames: int = 512,
        channels: tuple[int, ...] | list[int] = (16, 32, 64, 128, 256, 512),
        kernel: int = 5,
        dropout: float = 0.5,
        dropout_layers: int = 3,
        input_rms: float = 0.0,
    ) -> None:
        super().__init__(sample_rate, n_fft, hop, frames, input_rms)
        channels = [int(c) for c in channels]
        self.grid = 2 ** len(channels)
        pad = kernel // 2
        self.enc = nn.ModuleList()
        cin = 1
        for c in channels:
            self.enc.append(
                nn.Sequential(nn.Conv2d(cin, c, kernel, stride=2, padding=pad), nn.BatchNorm2d(c), nn.LeakyReLU(0.2))
            )
            cin = c
        self.dec = nn.ModuleList()
        outs = list(reversed(channels[:-1])) + [1]
        for i, c in enumerate(outs):
            cin_i = channels[-1] if i == 0 else 2 * outs[i - 1]
            up = nn.ConvTranspose2d(cin_i, c, kernel, stride=2, padding=pad, output_padding=1)
            if i == len(outs) - 1:
                self.dec.append(nn.Sequential(up, nn.Sigmoid()))
            else:
                layers: list[nn.Module] = [up, nn.BatchNorm2d(c), nn.ReLU()]
                if i < dropout_layers:
                    layers.append(nn.Dropout(dropout))
                self.dec.append(nn.Sequential(*layers))

    def mask_net(self, feats: torch.Tensor) -> torch.Tensor:
        skips = []
        x = feats
        for layer in self.enc:
            x = layer(x)
            skips.append(x)
        skips.pop()  # the bottleneck feeds the first decoder layer directly
        for i, layer in enumerate(self.dec):
            if i > 0:
                x = torch.cat([x, skips.pop()], dim=1)
            x = layer(x)
        return x
