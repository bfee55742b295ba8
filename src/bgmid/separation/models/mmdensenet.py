"""MMDenseNet (Takahashi & Mitsufuji 2017): multi-scale multi-band DenseNets on the magnitude spectrogram.

A low band, a high band and the full band each get their own multi-scale DenseNet (dense blocks of BN-ReLU-3x3
conv with their own growth rate, transitions of BN-ReLU-1x1 conv + 2x2 average pooling down, 2x2 transposed
convolutions up, skip concatenation); the two band outputs are stacked along frequency, concatenated with the
full-band output along channels, and a final dense block + 1x1 conv + sigmoid gives the music mask. Speech uses
the complementary mask, so one network separates both (as the reference paper modified it).

Details we chose (the digest leaves them open): the up path carries only the new feature maps of each decoder
dense block (as in the "Tiramisu" DenseNet), each band ends in a 1x1 conv to ``band_out`` channels so the bands
can be stacked, and the split is at half the bins. Paper configuration (16 kHz, n_fft 1024, hop 256 = 75%
overlap, 512 frames; growth 14 / 4 / 7 for low / high / full, 4 / 3 / 3 layers, 3 scales, final block growth 12,
3 layers, after Takahashi's Table 1; 32 first-conv channels, 16 per band output): 0.94 M parameters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bgmid.separation.level import TARGET_RMS
from bgmid.separation.spectral import SpectrogramMaskModel

PAPER = dict(
    sample_rate=16000, n_fft=1024, hop=256, frames=512, growth=(14, 4, 7), layers=(4, 3, 3), scales=3,
    first_channels=32, band_out=16, final_growth=12, final_layers=3, input_rms=TARGET_RMS,
)
#: CPU configuration at 11,025 Hz, n_fft 512, hop 128 (75% overlap), 64 frames (0.73 s); much narrower, since
#: dense 2-D blocks at full spectrogram resolution are slow on a CPU.
LITE = dict(
    sample_rate=11025, n_fft=512, hop=128, frames=64, growth=(6, 3, 4), layers=(2, 2, 2), scales=3,
    first_channels=8, band_out=8, final_growth=6, final_layers=2, input_rms=TARGET_RMS,
)
CONFIGS = {"paper": PAPER, "lite": LITE}


class _DenseBlock2d(nn.Module):
    def __init__(self, cin: int, growth: int, layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Sequential(
                nn.BatchNorm2d(cin + j * growth), nn.ReLU(),
                nn.Conv2d(cin + j * growth, growth, 3, padding=1, bias=False),
            )
            for j in range(layers)
        )
        self.new = layers * growth
        self.cout = cin + self.new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Returns all maps (input + new); callers slice ``[:, -self.new:]`` for the new ones."""
        for layer in self.layers:
            x = torch.cat([x, layer(x)], dim=1)
        return x


class _MDenseNet(nn.Module):
    """One band's multi-scale DenseNet: (B, 1, F, T) -> (B, out, F, T); F, T multiples of 2**scales."""

    def __init__(self, growth: int, layers: int, scales: int, first_channels: int, out: int) -> None:
        super().__init__()
        self.first = nn.Conv2d(1, first_channels, 3, padding=1)
        c = first_channels
        self.enc = nn.ModuleList()
        self.down = nn.ModuleList()
        skip_ch = []
        for _ in range(scales):
            block = _DenseBlock2d(c, growth, layers)
            self.enc.append(block)
            skip_ch.append(block.cout)
            self.down.append(nn.Sequential(nn.BatchNorm2d(block.cout), nn.ReLU(), nn.Conv2d(block.cout, block.cout, 1)))
            c = block.cout
        self.mid = _DenseBlock2d(c, growth, layers)
        c = self.mid.new
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        for s in reversed(skip_ch):
            self.up.append(nn.ConvTranspose2d(c, c, 2, stride=2))
            block = _DenseBlock2d(c + s, growth, layers)
            self.dec.append(block)
            c = block.new
        self.out = nn.Conv2d(c, out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.first(x)
        skips = []
        for block, down in zip(self.enc, self.down, strict=True):
            x = block(x)
            skips.append(x)
            x = F.avg_pool2d(down(x), 2)
        x = self.mid(x)[:, -self.mid.new :]
        for up, block, skip in zip(self.up, self.dec, reversed(skips), strict=True):
            x = block(torch.cat([up(x), skip], dim=1))[:, -block.new :]
        return self.out(x)


class MMDenseNet(SpectrogramMaskModel):
    """(B, 1, N) mixture -> (B, 2, N) music, speech through a multi-band DenseNet magnitude mask."""

    def __init__(
        self,
        sample_rate: int = 16000,
        n_fft: int = 1024,
        hop: int = 256,
        frames: int = 512,
        growth: tuple[int, int, int] | list[int] = (14, 4, 7),
        layers: tuple[int, int, int] | list[int] = (4, 3, 3),
        scales: int = 3,
        first_channels: int = 32,
        band_out: int = 16,
        final_growth: int = 12,
        final_layers: int = 3,
        input_rms: float = 0.0,
    ) -> None:
        super().__init__(sample_rate, n_fft, hop, frames, input_rms)
        self.grid = 2 ** (scales + 1)  # the band split at F/2 must leave both halves divisible by 2**scales
        self.bands = nn.ModuleList(
            _MDenseNet(int(g), int(n), scales, first_channels, band_out) for g, n in zip(growth, layers, strict=True)
        )
        self.final = _DenseBlock2d(2 * band_out, final_growth, final_layers)
        self.head = nn.Sequential(nn.BatchNorm2d(self.final.cout), nn.ReLU(), nn.Conv2d(self.final.cout, 1, 1))

    def mask_net(self, feats: torch.Tensor) -> torch.Tensor:
        half = feats.shape[2] // 2
        low = self.bands[0](feats[:, :, :half])
        high = self.bands[1](feats[:, :, half:])
        full = self.bands[2](feats)
        x = torch.cat([torch.cat([low, high], dim=2), full], dim=1)
        return torch.sigmoid(self.head(self.final(x)))
