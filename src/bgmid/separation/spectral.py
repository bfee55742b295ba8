"""STFT front end shared by the spectrogram separators (U-Net, MMDenseNet).

Both spectrogram models predict a soft mask in [0, 1] for the music magnitude; speech is the complementary mask,
and both are turned back into waveforms with the mixture phase. Keeping the STFT, the mask application and the
padding rules in one place means the two models differ only in their mask network, and that the waveform
interface (``forward(mix) -> (music, speech)``) is the same as the waveform models', so training, chunked
inference and the CLI treat all four alike.
"""

from __future__ import annotations

import torch
from torch import nn

from bgmid.separation.level import level_gain


class STFT(nn.Module):
    """Hann-window STFT / inverse STFT with ``center=True`` (frame ``t`` is centred on sample ``t * hop``).

    Centred frames make a chunk that starts at a multiple of ``hop`` produce exactly the frames the whole
    signal would, which is what lets chunked inference match whole-signal inference.
    """

    def __init__(self, n_fft: int, hop: int) -> None:
        super().__init__()
        self.n_fft = int(n_fft)
        self.hop = int(hop)
        # not persistent: rebuilt from the constructor arguments, so checkpoints only hold learned weights
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N) real -> (B, F, T) complex, F = n_fft // 2 + 1, T = N // hop + 1."""
        return torch.stft(
            x, self.n_fft, self.hop, window=self.window, center=True, pad_mode="constant", return_complex=True
        )

    def inverse(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        """(B, F, T) complex -> (B, length) real."""
        return torch.istft(spec, self.n_fft, self.hop, window=self.window, center=True, length=length)


def mask_input(mag: torch.Tensor) -> torch.Tensor:
    """Network input features from a magnitude: log(1 + |X|) compresses the huge dynamic range of speech-over-
    music mixtures (a -30 dB music bed is otherwise numerically invisible next to speech), which speeds up
    convergence compared with the raw magnitude used by Jansson et al."""
    return torch.log1p(mag)


def pad_to_multiple(x: torch.Tensor, dim: int, multiple: int) -> tuple[torch.Tensor, int]:
    """Zero-pad ``x`` at the end of ``dim`` to a multiple of ``multiple``; returns (padded, original size)."""
    n = x.shape[dim]
    extra = (-n) % multiple
    if extra:
        shape = list(x.shape)
        shape[dim] = extra
        x = torch.cat([x, x.new_zeros(shape)], dim=dim)
    return x, n


class SpectrogramMaskModel(nn.Module):
    """Base class: waveform in, (music, speech) waveforms out, through a magnitude mask.

    Subclasses implement :meth:`mask_net` on a (B, 1, F', T') log-magnitude whose F' and T' are multiples of
    :attr:`grid` (the total down-sampling of the network). The Nyquist bin is dropped before the network (so
    n_fft / 2 bins divide evenly) and given the mask of its neighbour.
    """

    domain = "spectrogram"
    #: total down-sampling factor of the mask network in frequency and time (set by subclasses)
    grid: int = 1
    #: what runs the mask network at inference, when not :meth:`mask_net` itself (e.g. an ONNX Runtime session,
    #: :func:`bgmid.separation.inference.inference_model`); same signature
    mask_backend = None
    #: the share of an inference chunk given to its zero-weight edges and cross-fade
    #: (:func:`bgmid.separation.apply.default_plan`, :func:`~bgmid.separation.apply.plan_chunks`)
    inference_overlap: float = 0.25
    #: inference chunk offsets are multiples of this many STFT frames (0: :attr:`grid`, which makes chunked
    #: inference equal whole-signal inference where the receptive field fits the chunk edges). A network whose
    #: receptive field is wider than its chunk gains nothing from the coarse grid, and pays for it: the lite
    #: U-Net's 8,192-sample grid on its 16,256-sample chunks separates every sample twice
    inference_step_frames: int = 0

    def __init__(self, sample_rate: int, n_fft: int, hop: int, frames: int, input_rms: float = 0.0) -> None:
        super().__init__()
        self.sample_rate = int(sample_rate)
        #: the mask network sees the magnitude of the mixture scaled to this RMS (0: unscaled, as checkpoints
        #: trained before :mod:`bgmid.separation.level`); the mask is applied to the unscaled mixture, so the
        #: output scales with the input
        self.input_rms = float(input_rms)
        self.n_fft = int(n_fft)
        self.hop = int(hop)
        self.frames = int(frames)
        self.stft = STFT(n_fft, hop)

    @property
    def segment(self) -> int:
        """Training / chunk length in samples: ``frames`` STFT frames."""
        return self.hop * (self.frames - 1)

    @property
    def quantum(self) -> int:
        """Chunk offsets must be multiples of this many samples for chunked == whole-signal inference."""
        return self.hop * self.grid

    @property
    def inference_quantum(self) -> int:
        """Inference chunk offsets are multiples of this many samples (:attr:`inference_step_frames`)."""
        return self.hop * self.inference_step_frames if self.inference_step_frames else self.quantum

    def mask_net(self, feats: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def mask(self, mag: torch.Tensor) -> torch.Tensor:
        """(B, F, T) mixture magnitude -> (B, F, T) music mask in [0, 1]."""
        feats = mask_input(mag[:, :-1, :]).unsqueeze(1)  # drop Nyquist: F-1 = n_fft/2 divides by grid
        feats, t = pad_to_multiple(feats, 3, self.grid)
        feats, f = pad_to_multiple(feats, 2, self.grid)
        m = (self.mask_backend or self.mask_net)(feats)[:, 0, :f, :t]
        return torch.cat([m, m[:, -1:, :]], dim=1)

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        """(B, 1, N) mixture -> (B, 2, N): music, speech (complementary mask, mixture phase).

        Speech is the mixture minus the music: the inverse STFT is linear and reconstructs the unmasked
        mixture exactly (Hann window, 75 % overlap, centred frames), so ``istft((1 - M) X) = x - istft(M X)``
        up to float rounding, and one inverse STFT is saved."""
        n = mix.shape[-1]
        spec = self.stft(mix[:, 0])
        m = self.mask(spec.abs() * level_gain(mix, self.input_rms))
        music = self.stft.inverse(spec * m, n)
        return torch.stack([music, mix[:, 0] - music], dim=1)

    #: ``bgmid train --loss`` values this model trains with (:meth:`spectrogram_loss`).
    losses = ("l1",)

    def spectrogram_loss(self, mix: torch.Tensor, music: torch.Tensor, speech: torch.Tensor,
                         loss: str = "l1") -> torch.Tensor:
        """Masked-magnitude L1 (Jansson et al.): |M X| vs |Y_music| and |(1-M) X| vs |Y_speech|, mean. ``loss``
        is ``l1``, the one this model has (the balanced and peak forms are Spleeter's)."""
        if loss not in self.losses:
            raise ValueError(f"unknown loss {loss!r}; one of {', '.join(self.losses)}")
        mag = self.stft(mix[:, 0]).abs()
        m = self.mask(mag * level_gain(mix, self.input_rms))
        loss_mu = (m * mag - self.stft(music[:, 0]).abs()).abs().mean()
        loss_sp = ((1 - m) * mag - self.stft(speech[:, 0]).abs()).abs().mean()
        return loss_mu + loss_sp
