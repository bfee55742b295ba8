"""Level normalisation inside the separators (bgmid.separation.level): the output scales with the input.

A separator that answers a 2x louder mixture with anything but a 2x louder separation is level-sensitive: the
lite Wave-DenseNet trained without normalisation made music worse on mixtures ~10 dB above its training level.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from signals import synth_music, synth_speech

from bgmid.separation import available_models, build, model_from_checkpoint
from bgmid.separation.apply import separate_array
from bgmid.separation.level import FLOOR_RMS, TARGET_RMS, level_gain
from bgmid.separation.registry import make_checkpoint, shipped_weights

SR = 11025


def _mixture(seconds: float) -> np.ndarray:
    mu = synth_music(3, seconds, SR)
    sp = synth_speech(4, seconds, SR)
    x = mu / np.sqrt(np.mean(mu**2)) + 3 * sp / np.sqrt(np.mean(sp**2))  # speech ~10 dB above the music
    return (0.05 * x / np.sqrt(np.mean(x**2))).astype(np.float32)


@pytest.mark.parametrize("name", available_models())
def test_lite_output_scales_with_input(name: str) -> None:
    """Chunked separation of a 2x louder (and a 10x quieter) mixture is 2x louder (10x quieter), stem by stem."""
    torch.manual_seed(0)
    m = build(name, "lite").eval()
    assert m.input_rms == TARGET_RMS
    x = _mixture(1.5 if name == "mmdensenet" else 3.0)
    mu, sp = separate_array(m, x)
    for g in (2.0, 0.1):
        mu_g, sp_g = separate_array(m, np.float32(g) * x)
        np.testing.assert_allclose(mu_g, g * mu, rtol=1e-3, atol=1e-6 * g)
        np.testing.assert_allclose(sp_g, g * sp, rtol=1e-3, atol=1e-6 * g)


def test_unnormalised_model_is_not_scale_equivariant() -> None:
    """The property is the normalisation's doing: the same random network without it changes its answer."""
    torch.manual_seed(0)
    m = build("wave-densenet", "lite", input_rms=0.0).eval()
    x = torch.from_numpy(_mixture(1.5))[None, None]
    with torch.no_grad():
        y1, y2 = m(x), m(2 * x)
    assert not torch.allclose(y2, 2 * y1, rtol=1e-2, atol=1e-4)


def test_old_checkpoints_rebuild_unnormalised() -> None:
    """Checkpoints trained before normalisation (constructor arguments without input_rms) keep their behaviour."""
    ckpt = make_checkpoint(build("wave-unet", "lite", levels=3, base_channels=4))
    del ckpt["kwargs"]["input_rms"]
    assert model_from_checkpoint(ckpt).input_rms == 0.0


def test_level_gain_floor_and_batch() -> None:
    """Per item: each example of a batch is brought to the target; silence is not amplified past the floor."""
    x = torch.zeros(3, 1, 1000)
    x[0] = 0.5
    x[1] = 0.001
    g = level_gain(x, TARGET_RMS)
    assert g.shape == (3, 1, 1)
    assert torch.allclose(g[:2, 0, 0], torch.tensor([0.2, 100.0]))
    assert float(g[2]) == pytest.approx(TARGET_RMS / FLOOR_RMS)
    assert torch.equal(level_gain(x, 0.0), torch.ones(3, 1, 1))


def test_shipped_wave_densenet_scales_with_input() -> None:
    """The shipped Wave-DenseNet (normalised since issue 14) on a real-like mixture: 2x in, 2x out."""
    path = shipped_weights("wave-densenet")
    if not path.exists():
        pytest.skip(f"{path} not shipped")
    from bgmid.separation import load_separator

    sep = load_separator("wave-densenet")
    x = 5 * _mixture(3.0)  # about -12 dBFS, louder than the checkpoint's training mixtures on average
    mu, _ = sep.separate(x)
    mu2, _ = sep.separate(2 * x)
    ratio = float(np.sqrt(np.mean(mu2**2) / np.mean(mu**2)))
    assert ratio == pytest.approx(2.0, rel=1e-3)
