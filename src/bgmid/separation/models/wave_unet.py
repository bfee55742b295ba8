"""Wave-U-Net (Stoller, Ewert & Dixon 2018), basic model M1 with zero ("same") padding, as in the paper.

Why these choices: the paper uses zero padding so the output has the input's length (Stoller's valid convolutions
shrink the output and slow separation); linear-interpolation upsampling (no transposed convolution) avoids
high-frequency artefacts; decimation keeps every other sample *after* the convolution, which is what makes the
network shift-equivariant for shifts that are multiples of ``2 ** levels`` (chunked inference relies on that).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bgmid.separation.level import TARGET_RMS, level_gain

#: The paper's configuration (model M1): 12 levels, 24 * i filters, kernels 15 down / 5 up, 16 kHz, 16,384
#: samples of input; 10.26 M parameters.
PAPER = dict(sample_rate=16000, levels=12, base_channels=24, down_kernel=15, up_kernel=5, segment=16384,
             input_rms=TARGET_RMS)
#: CPU configuration: same structure, 10 levels of 10 * i filters at 11,025 Hz (the fingerprinter's p1 rate);
#: 1.07 M parameters (narrow because training shares 2 CPU cores with other jobs).
LITE = dict(sample_rate=11025, levels=10, base_channels=10, down_kernel=15, up_kernel=5, segment=16384,
            input_rms=TARGET_RMS)
CONFIGS = {"paper": PAPER, "lite": LITE}


class WaveUNet(nn.Module):
    """Waveform U-Net: (B, 1, N) mixture -> (B, 2, N) music, speech (tanh outputs), any N."""

    domain = "wave"

    def __init__(
        self,
        sample_rate: int = 16000,
        levels: int = 12,
        base_channels: int = 24,
        down_kernel: int = 15,
        up_kernel: int = 5,
        segment: int = 16384,
        sources: int = 2,
        input_rms: float = 0.0,
    ) -> None:
        super().__init__()
        self.sample_rate = int(sample_rate)
        self.input_rms = float(input_rms)  # 0: off (checkpoints trained before bgmid.separation.level)
        self.levels = int(levels)
        self.segment = int(segment)
        c = base_channels
        self.down = nn.ModuleList()
        for i in range(1, levels + 1):
            cin = 1 if i == 1 else c * (i - 1)
            self.down.append(nn.Conv1d(cin, c * i, down_kernel, padding=down_kernel // 2))
        self.bottom = nn.Conv1d(c * levels, c * (levels + 1), down_kernel, padding=down_kernel // 2)
        self.up = nn.ModuleList()
        for i in range(levels, 0, -1):
            self.up.append(nn.Conv1d(c * (i + 1) + c * i, c * i, up_kernel, padding=up_kernel // 2))
        self.out = nn.Conv1d(c + 1, sources, 1)

    @property
    def quantum(self) -> int:
        """Chunk offsets that are multiples of this keep decimation phases, so chunked == whole inference."""
        return 2**self.levels

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        g = level_gain(mix, self.input_rms)  # the network sees one level; its output is scaled back
        mix = mix * g
        skips = []
        x = mix
        for conv in self.down:
            x = F.leaky_relu(conv(x), 0.2)
            skips.append(x)
            x = x[:, :, ::2]  # decimation after the convolution
        x = F.leaky_relu(self.bottom(x), 0.2)
        for conv, skip in zip(self.up, reversed(skips), strict=True):
            x = F.interpolate(x, scale_factor=2, mode="linear", align_corners=False)[:, :, : skip.shape[-1]]
            x = F.leaky_relu(conv(torch.cat([x, skip], dim=1)), 0.2)
        return torch.tanh(self.out(torch.cat([x, mix], dim=1))) / g
