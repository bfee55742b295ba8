"""Chunked overlap-add inference: lengths, exact cross-fade, and equality with whole-signal inference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bgmid.separation import build
from bgmid.separation.apply import plan_chunks, separate_array, separate_file, separate_stream


def _ident(x: np.ndarray) -> np.ndarray:
    return np.stack([x, 2 * x], axis=1)


@pytest.mark.parametrize("n", [0, 1, 777, 4096, 30001])
@pytest.mark.parametrize("parts", [1, 5])
def test_stream_identity_any_length(n: int, parts: int) -> None:
    """With an identity 'network' the cross-faded output is the input exactly: weights sum to one."""
    x = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    plan = plan_chunks(4096, 256)
    pieces = list(separate_stream(np.array_split(x, parts), _ident, plan, batch=3))
    y = np.concatenate(pieces, axis=1) if pieces else np.zeros((2, 0), np.float32)
    assert y.shape == (2, n)
    np.testing.assert_allclose(y[0], x, atol=1e-5)
    np.testing.assert_allclose(y[1], 2 * x, atol=1e-5)


def test_plan_hop_is_multiple_of_quantum() -> None:
    for chunk, q in [(16384, 1024), (16256, 8192), (4032, 256)]:
        p = plan_chunks(chunk, q)
        assert p.hop % q == 0 and p.hop + p.edge + p.ramp <= chunk
        assert abs(p.window()[p.edge + p.ramp : p.hop + p.edge].min() - 1) < 1e-12


def _whole(m: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return m(torch.from_numpy(x)[None, None])[0].numpy()


def test_chunked_equals_whole_wave_model() -> None:
    torch.manual_seed(0)
    # without level normalisation: each chunk is normalised on its own, which is not what this test is about
    m = build("wave-unet", "lite", levels=3, base_channels=4, segment=2048, input_rms=0.0).eval()
    x = np.random.default_rng(1).standard_normal(20000).astype(np.float32) * 0.1
    mu, sp = separate_array(m, x)
    y = _whole(m, x)
    np.testing.assert_allclose(mu[500:-500], y[0, 500:-500], atol=1e-5)
    np.testing.assert_allclose(sp[500:-500], y[1, 500:-500], atol=1e-5)


def test_chunked_equals_whole_spectrogram_model() -> None:
    torch.manual_seed(0)
    m = build("unet", "lite", n_fft=256, hop=64, frames=64, channels=(4, 8), input_rms=0.0).eval()
    x = np.random.default_rng(2).standard_normal(30000).astype(np.float32) * 0.1
    # on the network's own grid (the U-Net's default inference chunks sit on the finer STFT frame grid, which
    # is what its wide receptive field calls for; this small one fits its chunk edges)
    mu, _ = separate_array(m, x, plan=plan_chunks(4096 * 2 - 64, m.quantum, 0.6))
    y = _whole(m, x)
    np.testing.assert_allclose(mu[3000:-3000], y[0, 3000:-3000], atol=1e-4)


def test_separate_file_writes_both(tmp_path) -> None:
    from bgmid.audio import load, write_wav

    m = build("wave-unet", "lite", levels=3, base_channels=4).eval()
    sr = m.sample_rate
    x = (0.1 * np.sin(2 * np.pi * 440 * np.arange(int(2.5 * sr)) / sr)).astype(np.float32)
    src = write_wav(tmp_path / "clip.wav", x, sr)
    r = separate_file(m, src, tmp_path / "out", block_s=0.7)
    assert r.music_path.name == "clip.music.wav" and r.speech_path.name == "clip.speech.wav"
    mu, rate = load(r.music_path)
    assert rate == sr and mu.size == x.size and r.x_real_time > 0


def test_separate_file_writes_the_inputs_rate(tmp_path) -> None:
    """Stems come back at the input's rate (44.1 kHz here; the model runs at 11,025 Hz), as long as the input,
    and still in time with it: an identity 'network' (music = mix) returns the input's tone at its phase."""
    from bgmid.audio import load, write_wav

    class Ident(torch.nn.Module):
        sample_rate, segment, quantum = 11025, 8192, 1

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cat([x, 0.5 * x], dim=1)

    sr = 44100
    t = np.arange(int(3.3 * sr)) / sr
    x = (0.3 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    src = write_wav(tmp_path / "clip.wav", x, sr)
    r = separate_file(Ident(), src, tmp_path / "out", block_s=0.7)
    mu, rate = load(r.music_path)
    sp, _ = load(r.speech_path)
    assert rate == r.sample_rate == sr and abs(mu.size - x.size) <= 2
    k = min(mu.size, x.size)
    mid = slice(sr // 10, k - sr // 10)  # away from the filters' start-up and end
    assert np.max(np.abs(mu[mid] - x[mid])) < 2e-3  # 16-bit output of a 1 kHz tone through 44.1 -> 11.025 -> 44.1
    assert np.max(np.abs(sp[mid] - 0.5 * x[mid])) < 2e-3
    r = separate_file(Ident(), src, tmp_path / "o16", block_s=0.7, sample_rate=16000)
    assert load(r.music_path)[1] == 16000 and abs(load(r.music_path)[0].size - x.size * 16000 / sr) <= 2


def test_cli_separate(tmp_path, capsys) -> None:
    from bgmid.audio import write_wav
    from bgmid.cli import main
    from bgmid.separation.registry import make_checkpoint, save_checkpoint

    m = build("wave-unet", "lite", levels=3, base_channels=4)
    ck = save_checkpoint(tmp_path / "w.pt", make_checkpoint(m))
    src = write_wav(tmp_path / "in.wav", np.zeros(5000, np.float32), 22050)  # resampled to the model rate
    assert main(["separate", "--model", "wave-unet", "--weights", str(ck), str(src), "--out",
                 str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "in.music.wav").exists() and (tmp_path / "o" / "in.speech.wav").exists()
    assert "real time" in capsys.readouterr().out
    from bgmid.audio import info

    assert info(tmp_path / "o" / "in.music.wav").sample_rate == 22050  # the input's rate, not the model's
    assert main(["separate", "--model", "wave-unet", "--weights", str(ck), str(src), "--out", str(tmp_path / "o2"),
                 "--sr", "8000"]) == 0
    assert info(tmp_path / "o2" / "in.music.wav").sample_rate == 8000
    assert main(["separate", "--weights", str(ck), str(src), "--out", str(tmp_path / "o3"), "--sr", "0"]) == 2
