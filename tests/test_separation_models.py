"""Shapes, parameter counts and checkpoint files of the four separators."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bgmid.errors import BgmidError
from bgmid.separation import available_models, build, load_checkpoint, load_separator, model_from_checkpoint
from bgmid.separation.registry import make_checkpoint, save_checkpoint


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# paper figures where the digest gives one (Wave-U-Net M1 ~10.3 M, Wave-DenseNet ~3 M), ours otherwise
PAPER_PARAMS = {"wave-unet": 10.3e6, "wave-densenet": 3.0e6, "unet": 9.82e6, "mmdensenet": 0.944e6}


def test_registry_names() -> None:
    assert available_models() == ["unet", "wave-unet", "mmdensenet", "wave-densenet"]
    with pytest.raises(BgmidError):
        build("nope")


@pytest.mark.parametrize("name", list(PAPER_PARAMS))
def test_paper_param_counts(name: str) -> None:
    m = build(name, "paper")
    assert abs(n_params(m) / PAPER_PARAMS[name] - 1) < 0.05, n_params(m)
    assert n_params(build(name, "lite")) < n_params(m) / 3  # lite is much narrower


def test_paper_wave_unet_shape() -> None:
    m = build("wave-unet", "paper").eval()
    assert m.segment == 16384 and m.sample_rate == 16000
    with torch.no_grad():
        y = m(torch.randn(1, 1, 16384) * 0.1)  # at the normalisation's target level the tanh outputs are the stems
    assert y.shape == (1, 2, 16384) and y.abs().max() <= 1


@pytest.mark.parametrize("name", ["unet", "wave-unet", "mmdensenet", "wave-densenet"])
@pytest.mark.parametrize("n", [5000, 16384])
def test_lite_output_length(name: str, n: int) -> None:
    m = build(name, "lite").eval()
    with torch.no_grad():
        y = m(torch.randn(2, 1, n) * 0.1)
    assert y.shape == (2, 2, n)
    assert torch.isfinite(y).all()


def test_spectrogram_masks_sum_to_mixture() -> None:
    """Complementary masks: music + speech estimates rebuild the mixture (iSTFT is linear)."""
    m = build("unet", "lite").eval()
    x = torch.randn(1, 1, 8000) * 0.1
    with torch.no_grad():
        y = m(x)
    assert torch.allclose(y.sum(1), x[:, 0], atol=1e-4)


def test_checkpoint_round_trip(tmp_path) -> None:
    torch.manual_seed(0)
    m = build("wave-unet", "lite", levels=3, base_channels=4).eval()
    ck = make_checkpoint(m, train={"steps": 1}, data_manifest_hash="abc", metrics={"music_0dB": 1.0})
    p = save_checkpoint(tmp_path / "m.pt", ck)
    back = load_checkpoint(p)  # weights_only=True inside
    assert set(back) == {"class", "name", "kwargs", "state", "train", "data_manifest_hash", "metrics"}
    assert back["class"] == "WaveUNet" and back["name"] == "wave-unet" and back["kwargs"]["levels"] == 3
    m2 = model_from_checkpoint(back)
    x = torch.randn(1, 1, 3000)
    with torch.no_grad():
        assert torch.equal(m(x), m2(x))
    sep = load_separator(str(p))
    mu, sp = sep.separate(np.random.default_rng(0).standard_normal(3000).astype(np.float32) * 0.1)
    assert mu.shape == sp.shape == (3000,) and mu.dtype == np.float32


def test_missing_weights_is_user_error(tmp_path) -> None:
    with pytest.raises(BgmidError):
        load_separator(str(tmp_path / "absent.pt"))
