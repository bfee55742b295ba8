"""The PyTorch port of Spleeter 2stems (bgmid.separation.models.spleeter).

Without the weights: TensorFlow's asymmetric ``same`` padding and its transposed counterpart (checked as exact
adjoints, which is what Conv2DTranspose is), Spleeter's STFT framing (perfect reconstruction), segmenting and
ratio masks, and the TF name map. With the weights (``bgmid models fetch spleeter``; skipped otherwise): the port
against the original TensorFlow Spleeter's outputs on three stereo clips (``tests/data/spleeter_ref.npz``, made by
``scripts/spleeter_reference.py`` with TensorFlow 2.21 and Spleeter's own model code), and the separator on
mono 16 kHz mixtures.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bgmid.errors import BgmidError
from bgmid.separation import load_separator, pretrained
from bgmid.separation.models.spleeter import (
    SPLEETER_2STEMS,
    Spleeter,
    _ConvSame,
    _ConvTransposeSame,
    _same_pad,
    load_pretrained,
    tf_variable_map,
)

DATA = Path(__file__).parent / "data"
sys.path.insert(0, str(Path(__file__).parents[1] / "scripts"))

TINY = dict(sample_rate=8000, n_fft=256, hop=64, frames=64, bins=64, channels=(2, 3, 4, 5, 6, 7))


def test_tf_same_padding():
    assert _same_pad(512, 5, 2) == (1, 2)  # even input, stride 2: the extra row after (TF), not before
    assert _same_pad(7, 5, 2) == (2, 2)
    assert _same_pad(1024, 4, 1, dilation=2) == (3, 3)
    conv = _ConvSame(3, 4, 5, stride=2)
    x = torch.randn(2, 3, 16, 12)
    assert conv(x).shape == (2, 4, 8, 6)


@pytest.mark.parametrize("size", [(16, 12), (8, 32)])
def test_transposed_conv_is_the_adjoint_of_the_strided_conv(size):
    """<conv(x), y> == <conv_t(y), x> with shared weights: the crop of the full transposed convolution sits where
    TF's asymmetric padding puts the strided convolution's taps (any other offset breaks the identity)."""
    torch.manual_seed(0)
    conv = _ConvSame(3, 4, 5, stride=2, bias=False)
    up = _ConvTransposeSame(4, 3, 5, stride=2, bias=False)
    up.weight.data.copy_(conv.weight.data)  # (out=4, in=3, h, w) is the transposed layer's (in, out, h, w)
    x = torch.randn(1, 3, *size, dtype=torch.float64)
    conv, up = conv.double(), up.double()
    with torch.no_grad():
        y = torch.randn_like(conv(x))
        assert up(y).shape == x.shape
        lhs, rhs = (conv(x) * y).sum(), (up(y) * x).sum()
    assert abs(float(lhs - rhs)) < 1e-9 * float(abs(lhs) + 1)


def test_stft_frames_and_perfect_reconstruction():
    m = Spleeter(**SPLEETER_2STEMS)
    x = torch.randn(1, 2, 44100 + 333, dtype=torch.float64) * 0.1
    m = m.double()
    spec = m.stft(x)
    assert spec.shape == (1, 2, -(-(x.shape[-1] + 4096) // 1024), 2049)
    # Hann^2 overlap at hop n_fft/4 sums to 3/2, undone by Spleeter's 2/3 (the float32 window leaves ~1e-7)
    assert float((m.istft(spec, x.shape[-1]) - x).abs().max()) < 1e-6
    assert m.segment == 512 * 1024 - 4096


@torch.no_grad()
def test_masks_segments_and_forward_shapes():
    torch.manual_seed(1)
    m = Spleeter(**TINY).eval()
    x = torch.randn(2, 2, 64 * 150)  # 154 frames: three 64-frame segments, the last one padded
    spec = m.stft(x)
    masks = m.masks(spec.abs())
    total = masks["vocals"] + masks["accompaniment"]
    assert torch.allclose(total[..., :64], torch.ones_like(total[..., :64]), atol=1e-6)
    assert float(total[..., 64:].abs().max()) == 0.0  # mask_extension "zeros": nothing above F bins
    # segments are independent: the second segment's estimate is the network on that segment alone
    est = m.estimates(spec.abs()[..., :64])["vocals"]
    alone = m.nets["vocals"](spec.abs()[:, :, 64:128, :64])
    assert torch.allclose(est[:, :, 64:128], alone, atol=1e-6)
    with torch.inference_mode():
        assert m(x[:, :1]).shape == (2, 2, x.shape[-1]) and m(x).shape == (2, 2, x.shape[-1])


def test_tf_name_map_covers_every_weight_once():
    m = Spleeter(**SPLEETER_2STEMS)
    mp = tf_variable_map(m)
    state = [k for k in m.state_dict() if not k.endswith("num_batches_tracked")]
    assert sorted(mp) == sorted(state)
    names = [v[0] for v in mp.values()]
    assert len(set(names)) == len(names) == 148  # the checkpoint's 149 variables less global_step
    assert mp["nets.vocals.out.weight"] == ("conv2d_6/kernel", "hwio")
    assert mp["nets.accompaniment.enc.0.weight"] == ("conv2d_7/kernel", "hwio")
    assert mp["nets.accompaniment.dec.5.weight"] == ("conv2d_transpose_11/kernel", "hwoi")
    assert mp["nets.accompaniment.dec_bn.5.running_var"] == ("batch_normalization_23/moving_variance", "vec")


def test_missing_weights_say_how_to_fetch(tmp_path, monkeypatch):
    monkeypatch.setenv("BGMID_CACHE", str(tmp_path))
    with pytest.raises(BgmidError, match="bgmid models fetch spleeter"):
        load_separator("spleeter")


needs_weights = pytest.mark.skipif(not pretrained.installed("spleeter"),
                                   reason="Spleeter weights not fetched ('bgmid models fetch spleeter')")


@pytest.fixture(scope="module")
def spleeter():
    torch.set_num_threads(1)
    return load_pretrained()


@needs_weights
def test_port_matches_tensorflow_spleeter(spleeter):
    """Max abs error against TF Spleeter: stems' waveforms < 1e-5 (measured 3e-7); ratio masks < 1e-3 (measured
    2e-4) wherever the mixture magnitude exceeds 1e-4 (below it, est^2 ~ 1e-12 meets Spleeter's eps = 1e-10 and
    float32 rounding decides the ratio: those bins carry no energy either way)."""
    from spleeter_reference import clip_inputs

    z = np.load(DATA / "spleeter_ref.npz")
    fs, bs = (int(v) for v in z["mask_steps"])
    a, b = (int(v) for v in z["excerpt"])
    m = spleeter.model
    for i, x in enumerate(clip_inputs()):
        w = torch.from_numpy(x.T.copy())[None]
        with torch.inference_mode():
            spec = m.stft(w)
            mask = m.masks(spec.abs())["vocals"][0].permute(1, 2, 0).numpy()[::fs, ::bs]
            stems = m.separate_stems(w)
        mag = spec.abs()[0].permute(1, 2, 0).numpy()[::fs, ::bs]
        ref = z[f"mask_vocals_{i}"]
        assert mask.shape == ref.shape
        loud = mag > 1e-4
        assert loud.mean() > 0.5 and np.abs(mask - ref)[loud].max() < 1e-3
        for stem in ("vocals", "accompaniment"):
            y = stems[stem][0].T.numpy()[a:b]
            assert np.abs(y - z[f"{stem}_{i}"]).max() < 1e-5, (i, stem)


@needs_weights
def test_separator_at_16k_improves_music(spleeter):
    from bgmid.audio import resample
    from bgmid.metrics import si_sdr

    z = np.load(DATA / "sep_clips_11025.npz")
    gains = []
    for k in (0, 2):
        mu = resample(z["music"][k].astype(np.float32) / 32768, 11025, 16000)
        sp = resample(z["speech"][k].astype(np.float32) / 32768, 11025, 16000)
        g = np.sqrt(np.mean(mu**2) / np.mean(sp**2))  # 0 dB
        mix = mu + g * sp
        music, speech = spleeter.separate(mix)
        assert music.shape == speech.shape == mix.shape and music.dtype == np.float32
        gains.append(si_sdr(reference=mu, estimate=music, zero_mean=True)
                     - si_sdr(reference=mu, estimate=mix, zero_mean=True))
    assert np.mean(gains) > 3.0, gains
