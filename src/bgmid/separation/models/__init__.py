"""The four separator networks. Each is a plain ``nn.Module`` mapping a (B, 1, N) mixture to (B, 2, N)
(music, speech), with ``sample_rate``, ``segment`` (training length in samples), ``domain`` ("wave" or
"spectrogram") and ``quantum`` (chunk offsets that keep chunked inference identical to whole-signal inference).
Each module has ``PAPER`` and ``LITE`` constructor-argument dicts (``CONFIGS``)."""

from bgmid.separation.models.mmdensenet import MMDenseNet
from bgmid.separation.models.unet import UNet
from bgmid.separation.models.wave_densenet import WaveDenseNet
from bgmid.separation.models.wave_unet import WaveUNet

__all__ = ["MMDenseNet", "UNet", "WaveDenseNet", "WaveUNet"]
