"""Wave-DenseNet, the reference paper's proposal: a DenseNet encoder-decoder on the raw waveform.

Paper settings: growth rate 12, 12 layers per dense block, 5 transition-down layers, compression 0.2 for the 1x1
convolutions, kernel 15 in encoder and decoder, transposed-convolution upsampling, 16,384-sample input, about 3 M
parameters. The paper's Table 2 block plan is followed: initial conv -> [dense block + transition down] x 5 ->
dense block -> [transition up + concat with the mirrored dense block output + dense block] x 5 -> final convs.
Where the digest leaves details open we chose (and state): a transition keeps ``compression`` x its input
channels (BN-ReLU-1x1 conv, then average pooling by 2, as in DenseNet) and the compressed map before pooling is
the skip to the mirrored decoder level (skipping the full dense-block output would double the size to ~6.8 M);
a transition up is BN-ReLU-1x1 conv (compression) then a transposed conv (kernel 15, stride 2); the mixture is
concatenated before the output 1x1 conv and outputs are tanh, as in Wave-U-Net; 16 initial channels. With
these, the paper configuration has 3.12 M parameters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bgmid.separation.level import TARGET_RMS, level_gain

PAPER = dict(
    sample_rate=16000, growth=12, layers=12, downs=5, compression=0.2, kernel=15, init_channels=16, segment=16384,
    input_rms=TARGET_RMS,
)
#: ``input_rms``: inputs are scaled to this RMS inside ``forward`` and outputs scaled back
#: (:mod:`bgmid.separation.level`), so the output scales with the input.
#: CPU configuration: same depth and kernels, 2 layers of growth 8 per block, 8 initial channels, at 11,025 Hz.
#: Dense blocks at full waveform resolution are what make this model slow on a CPU, hence so narrow.
LITE = dict(
    sample_rate=11025, growth=8, layers=2, downs=5, compression=0.2, kernel=15, init_channels=8, segment=16384,
    input_rms=TARGET_RMS,
)
CONFIGS = {"paper": PAPER, "lite": LITE}


class _DenseBlock(nn.Module):
    """``layers`` x (BN-ReLU-conv(k) -> ``growth`` channels), each fed the concatenation of all earlier maps."""

    def __init__(self, cin: int, growth: int, layers: int, kernel: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Sequential(
                nn.BatchNorm1d(cin + j * growth),
                nn.ReLU(),
                nn.Conv1d(cin + j * growth, growth, kernel, padding=kernel // 2, bias=False),
            )
            for j in range(layers)
        )
        self.cout = cin + layers * growth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = torch.cat([x, layer(x)], dim=1)
        return x


def _compressed(c: int, compression: float) -> int:
    return max(1, int(round(c * compression)))


class WaveDenseNet(nn.Module):
    """Waveform DenseNet: (B, 1, N) mixture -> (B, 2, N) music, speech (tanh outputs), any N."""

    domain = "wave"

    def __init__(
        self,
        sample_rate: int = 16000,
        growth: int = 12,
        layers: int = 12,
        downs: int = 5,
        compression: float = 0.2,
        kernel: int = 15,
        init_channels: int = 16,
        segment: int = 16384,
        sources: int = 2,
        input_rms: float = 0.0,
    ) -> None:
        super().__init__()
        self.sample_rate = int(sample_rate)
        self.input_rms = float(input_rms)  # 0: off (checkpoints trained before bgmid.separation.level)
        self.downs = int(downs)
        self.segment = int(segment)
        pad = kernel // 2
        self.init = nn.Conv1d(1, init_channels, kernel, padding=pad)
        c = init_channels
        self.enc = nn.ModuleList()
        self.trans_down = nn.ModuleList()
        skip_ch = []
        for _ in range(downs):
            block = _DenseBlock(c, growth, layers, kernel)
            self.enc.append(block)
            c_out = _compressed(block.cout, compression)
            skip_ch.append(c_out)
            self.trans_down.append(
                nn.Sequential(nn.BatchNorm1d(block.cout), nn.ReLU(), nn.Conv1d(block.cout, c_out, 1, bias=False))
            )
            c = c_out
        self.mid = _DenseBlock(c, growth, layers, kernel)
        c = self.mid.cout
        self.trans_up = nn.ModuleList()
        self.dec = nn.ModuleList()
        for s in reversed(skip_ch):
            c_up = _compressed(c, compression)
            self.trans_up.append(
                nn.Sequential(
                    nn.BatchNorm1d(c), nn.ReLU(), nn.Conv1d(c, c_up, 1, bias=False),
                    nn.ConvTranspose1d(c_up, c_up, kernel, stride=2, padding=pad, output_padding=1, bias=False),
                )
            )
            block = _DenseBlock(c_up + s, growth, layers, kernel)
            self.dec.append(block)
            c = block.cout
        self.final = nn.Sequential(nn.BatchNorm1d(c), nn.ReLU(), nn.Conv1d(c, init_channels, kernel, padding=pad))
        self.out = nn.Conv1d(init_channels + 1, sources, 1)

    @property
    def quantum(self) -> int:
        """Chunk offsets that are multiples of this keep pooling phases, so chunked == whole inference."""
        return 2**self.downs

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        n = mix.shape[-1]
        g = level_gain(mix, self.input_rms)  # the network sees one level; its output is scaled back
        extra = (-n) % self.quantum  # pooling by 2 five times needs a multiple of 32 samples
        x0 = F.pad(mix * g, (0, extra))
        x = self.init(x0)
        skips = []
        for block, down in zip(self.enc, self.trans_down, strict=True):
            x = down(block(x))  # dense block + compressing 1x1 conv ...
            skips.append(x)  # ... whose output is the skip to the mirrored decoder level
            x = F.avg_pool1d(x, 2)
        x = self.mid(x)
        for up, block, skip in zip(self.trans_up, self.dec, reversed(skips), strict=True):
            x = block(torch.cat([up(x), skip], dim=1))
        x = self.final(x)
        return torch.tanh(self.out(torch.cat([x, x0], dim=1)))[:, :, :n] / g
