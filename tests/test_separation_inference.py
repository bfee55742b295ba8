"""Inference tuning (bgmid.separation.inference, the U-Net's chunk plan): the tuned paths give the plain torch
module's stems within float rounding, on real-looking audio, and fall back to torch without onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bgmid.errors import BgmidError
from bgmid.separation import inference
from bgmid.separation.apply import default_plan, separate_array
from bgmid.separation.level import level_gain
from bgmid.separation.registry import build, load_separator, shipped_weights, torch_threads
from tests.signals import synth_music, synth_speech

SR = 11025
#: stems are in [-1, 1]; the tuned paths reorder float sums only
TOL = 1e-4


def _mixture(seconds: float = 6.0) -> np.ndarray:
    n = int(seconds * SR)
    music = synth_music(3, seconds, SR)[:n]
    speech = synth_speech(4, seconds, SR)[:n]
    return (0.3 * music / (np.abs(music).max() + 1e-9) + 0.3 * speech / (np.abs(speech).max() + 1e-9)
            ).astype(np.float32)


def _random_unet() -> torch.nn.Module:
    """A lite U-Net with non-trivial BatchNorm statistics (fresh ones are identities, which would hide a bad fold)."""
    torch.manual_seed(0)
    model = build("unet", "lite")
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


def test_fused_batchnorm_gives_the_same_stems():
    model = _random_unet()
    fused = inference.fuse_batchnorm(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # the original is left as trained
    x = _mixture()
    with torch_threads(1):
        a = separate_array(model, x)
        b = separate_array(fused, x)
    assert np.abs(a[0]).max() > 1e-3
    np.testing.assert_allclose(b[0], a[0], atol=TOL)
    np.testing.assert_allclose(b[1], a[1], atol=TOL)


def test_speech_is_the_mixture_minus_the_music_mask():
    """forward's one-iSTFT speech equals the complementary mask's own inverse STFT."""
    model = _random_unet()
    x = torch.from_numpy(_mixture(2.0))[None, None]
    assert model.input_rms > 0  # the lite config normalises the level: the mask sees the scaled magnitude
    with torch.inference_mode():
        y = model(x)
        spec = model.stft(x[:, 0])
        m = model.mask(spec.abs() * level_gain(x, model.input_rms))
        speech = model.stft.inverse(spec * (1 - m), x.shape[-1])
    np.testing.assert_allclose(y[0, 1].numpy(), speech[0].numpy(), atol=1e-5)
    np.testing.assert_allclose((y[0, 0] + y[0, 1]).numpy(), x[0, 0].numpy(), atol=1e-5)


def test_onnx_backend_gives_the_same_stems_and_follows_the_thread_policy(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("BGMID_ONNX_CACHE", str(tmp_path))  # the exported graph's cache
    model = _random_unet()
    fast = inference.inference_model(model, "onnx")
    assert fast.inference_backend == "onnx"
    x = _mixture()
    with torch_threads(1):
        a = separate_array(model, x)
        b = separate_array(fast, x)
    with torch_threads(2):
        c = separate_array(fast, x)
    np.testing.assert_allclose(b[0], a[0], atol=TOL)
    np.testing.assert_allclose(b[1], a[1], atol=TOL)
    np.testing.assert_allclose(c[0], a[0], atol=TOL)
    assert sorted(fast.mask_backend._sessions) == [1, 2]


@pytest.mark.skipif(not shipped_weights("unet").exists(), reason="no shipped U-Net weights")
def test_shipped_default_separator_auto_equals_plain_torch(tmp_path, monkeypatch):
    monkeypatch.setenv("BGMID_ONNX_CACHE", str(tmp_path))
    auto = load_separator("unet")
    plain = load_separator("unet", backend="torch")
    x = _mixture(8.0)
    with torch_threads(1):
        got = auto.separate(x)
        ref = separate_array(plain.model, x)  # the trained module itself, no inference copy
    assert auto.runner.inference_backend == ("onnx" if inference.has_onnxruntime() else "torch")
    assert auto.runner is not auto.model
    np.testing.assert_allclose(got[0], ref[0], atol=TOL)
    np.testing.assert_allclose(got[1], ref[1], atol=TOL)


def test_backend_choice_and_fallback(monkeypatch):
    unet = build("unet", "lite")
    wave = build("wave-unet", "lite")
    assert inference.resolve_backend(wave, "auto") == "torch"  # a waveform model has no mask network
    with pytest.raises(BgmidError):
        inference.resolve_backend(wave, "onnx")
    with pytest.raises(BgmidError):
        inference.resolve_backend(unet, "tensorrt")
    monkeypatch.setattr(inference, "has_onnxruntime", lambda: False)
    assert inference.resolve_backend(unet, "auto") == "torch"
    assert inference.inference_model(unet).mask_backend is None
    with pytest.raises(BgmidError, match="onnxruntime"):
        inference.OnnxMaskNet(unet)


def test_unet_chunks_sit_on_the_frame_grid():
    """The U-Net separates 1.2 samples per output sample (2.0 on its 64-frame grid); other models keep theirs."""
    unet = build("unet", "lite")
    plan = default_plan(unet)
    assert plan.chunk == unet.segment
    assert plan.hop % unet.hop == 0 and plan.hop % unet.quantum != 0
    assert plan.chunk / plan.hop < 1.25
    mmd = build("mmdensenet", "lite")
    assert default_plan(mmd).hop % mmd.quantum == 0


def test_exported_graph_is_cached_and_a_damaged_one_is_exported_again(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("BGMID_ONNX_CACHE", str(tmp_path))
    model = inference.fuse_batchnorm(_random_unet())
    first = inference.OnnxMaskNet(model)
    path = inference.graph_path(model)
    assert path.parent == tmp_path and path.read_bytes() == first.graph

    def no_export(_model):
        raise AssertionError("exported again although the graph is cached")

    real_export = inference.export_mask_net
    monkeypatch.setattr(inference, "export_mask_net", no_export)
    again = inference.OnnxMaskNet(model)
    feats = torch.rand(1, 1, model.n_fft // 2, 2 * model.grid)
    with torch.inference_mode():
        ref = model.mask_net(feats)
    np.testing.assert_allclose(again(feats).numpy(), ref.numpy(), atol=TOL)
    path.write_bytes(b"not a graph")  # damaged (e.g. a full disk): exported again and rewritten
    monkeypatch.setattr(inference, "export_mask_net", real_export)
    damaged = inference.OnnxMaskNet(model)
    np.testing.assert_allclose(damaged(feats).numpy(), ref.numpy(), atol=TOL)
    assert path.read_bytes() == damaged.graph != b"not a graph"
    other = _random_unet()
    torch.nn.init.zeros_(other.enc[0][0].bias)
    assert inference.graph_path(inference.fuse_batchnorm(other)) != path  # other weights, another graph
