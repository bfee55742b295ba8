"""The training loop: a step lowers the loss, checkpoints resume exactly, releases load."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bgmid.errors import BgmidError
from bgmid.metrics import si_sdr
from bgmid.separation import build, load_separator
from bgmid.train import SyntheticBatches, TrainConfig, loss_fn, train, validate

TINY = {
    "wave-unet": dict(levels=3, base_channels=4, segment=4096),
    "wave-densenet": dict(growth=4, layers=2, init_channels=4, segment=4096),
    "unet": dict(n_fft=256, hop=64, frames=64, channels=(4, 8, 16)),
    "mmdensenet": dict(n_fft=256, hop=64, frames=64, growth=(4, 2, 3), layers=(2, 1, 1), first_channels=4,
                       band_out=4, final_growth=4, final_layers=1, scales=2),
}


@pytest.mark.parametrize("name", list(TINY))
def test_one_step_lowers_loss(name: str) -> None:
    torch.manual_seed(0)
    m = build(name, "lite", **TINY[name])
    mix, mu, sp = SyntheticBatches(4, 4032).batch(0)
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)

    def loss() -> torch.Tensor:
        torch.manual_seed(1)  # same dropout masks before and after
        return loss_fn(m, mix, mu, sp)

    before = loss()
    opt.zero_grad()
    before.backward()
    opt.step()
    with torch.no_grad():
        after = loss()
    assert float(after) < float(before.detach())


def _cfg(out, steps: int) -> TrainConfig:
    return TrainConfig(model="unet", out=str(out), steps=steps, horizon=6, batch_size=2, warmup=2,
                       ckpt_every_s=1e9, val_every_s=1e9, model_overrides=TINY["unet"])


def test_resume_equals_uninterrupted(tmp_path) -> None:
    """Stop after 3 steps, resume to 6: the same loss sequence as 6 steps in one go (U-Net has dropout, so
    this also checks the RNG state is restored)."""
    data = SyntheticBatches(2, 4032)
    whole = train(_cfg(tmp_path / "a", 6), data, progress=False, val_sets={}, log=lambda s: None)
    first = train(_cfg(tmp_path / "b", 3), data, progress=False, val_sets={}, log=lambda s: None)
    rest = train(_cfg(tmp_path / "b", 6), data, resume=True, progress=False, val_sets={}, log=lambda s: None)
    assert rest.step == 6
    np.testing.assert_allclose(first.losses + rest.losses, whole.losses, rtol=1e-6)


def test_validation_and_release(tmp_path) -> None:
    data = SyntheticBatches(2, 4032, sample_rate=11025, seed=3)
    mix, mu, sp = data.batch(99)
    val = {"0dB": [(mix[i, 0].numpy(), mu[i, 0].numpy(), sp[i, 0].numpy()) for i in range(2)]}
    r = train(_cfg(tmp_path, 2), data, progress=False, val_sets=val, log=lambda s: None)
    assert {"music_0dB", "mix_0dB", "gain_0dB"} <= set(r.metrics)
    sep = load_separator(str(r.run_dir / "best.pt"))
    assert sep.info["metrics"]["music_0dB"] == pytest.approx(r.metrics["music_0dB"])
    assert np.isfinite(validate(sep.model, val)["music_0dB"])


def test_si_sdr() -> None:
    rng = np.random.default_rng(0)
    s = rng.standard_normal(1000)
    assert si_sdr(reference=s, estimate=3 * s, zero_mean=True) > 80
    assert si_sdr(reference=s, estimate=s + rng.standard_normal(1000), zero_mean=True) == pytest.approx(0, abs=1)


def test_init_fine_tunes_from_weights(tmp_path) -> None:
    """--init: a fresh run starts from a release checkpoint's weights (another seed's random network would
    differ), and names a mismatched model as a user error."""
    from bgmid.errors import BgmidError
    from bgmid.separation import load_checkpoint

    data = SyntheticBatches(2, 4032)
    a = train(_cfg(tmp_path / "a", 3), data, progress=False, val_sets={}, log=lambda s: None)
    cfg = _cfg(tmp_path / "b", 0)
    cfg.init, cfg.seed = str(a.run_dir / "best.pt"), 7
    b = train(cfg, data, progress=False, val_sets={}, log=lambda s: None)
    sa, sb = load_checkpoint(a.run_dir / "best.pt")["state"], load_checkpoint(b.run_dir / "best.pt")["state"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    fresh = train(_cfg(tmp_path / "c", 0), data, progress=False, val_sets={}, log=lambda s: None)
    sc = load_checkpoint(fresh.run_dir / "best.pt")["state"]
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    bad = _cfg(tmp_path / "d", 0)
    bad.model, bad.init, bad.model_overrides = "wave-unet", cfg.init, TINY["wave-unet"]
    with pytest.raises(BgmidError):
        train(bad, data, progress=False, val_sets={}, log=lambda s: None)


def test_missing_validation_sets_name_the_command_that_builds_them(tmp_path) -> None:
    from bgmid.errors import BgmidError
    from bgmid.train import load_val_sets

    with pytest.raises(BgmidError, match=r"val_0dB.*'bgmid data mix --splits val'"):
        load_val_sets(str(tmp_path), 11025, clips=2, seconds=1.0)
    with pytest.raises(BgmidError, match=r"val_-10dB_crowd.*'bgmid data hard-sets --split val'"):
        load_val_sets(str(tmp_path), 11025, clips=2, seconds=1.0, names=("-10dB_crowd",))
    with pytest.raises(BgmidError, match=r"val_music.*'bgmid data mix --splits val'"):
        load_val_sets(str(tmp_path), 11025, clips=2, seconds=1.0, names=("music",))


def test_cli_val_sets_reach_the_run(monkeypatch) -> None:
    """``--val-sets=-10dB_crowd,-20dB_turns`` (names starting with '-', hence '=' and commas) becomes the
    run's ``val_sets``; the default stays the base sets."""
    import bgmid.train
    from bgmid.cli import main

    seen = []
    monkeypatch.setattr(bgmid.train, "train", lambda cfg, **kw: seen.append(cfg))
    assert main(["train", "--model", "unet", "--steps", "1", "--val-sets=-10dB_crowd, -20dB_turns"]) == 0
    assert main(["train", "--model", "spleeter", "--steps", "1"]) == 0
    assert seen[0].val_sets == ("-10dB_crowd", "-20dB_turns") and seen[0].config == "lite"
    assert seen[1].val_sets == ("0dB", "-10dB") and seen[1].config == "16k"


def test_balanced_l1_counts_quiet_music_as_much_as_dialogue() -> None:
    """A separator that gives no music at all and the whole mix as dialogue: at -30 dB music the plain L1 hardly
    sees it (the error is the music's own tiny level), the balanced loss counts the music's whole error (1.0);
    leakage into an absent source is measured against the mixture's level (not divided by zero, not blown up)."""
    from bgmid.train import LOSSES

    g = torch.Generator().manual_seed(0)
    speech = 0.1 * torch.randn(2, 1, 8000, generator=g)
    music = 0.1 * 10 ** (-30 / 20) * torch.randn(2, 1, 8000, generator=g)
    mix = music + speech

    class NoMusic(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cat([torch.zeros_like(x), x], dim=1)

    plain = float(loss_fn(NoMusic(), mix, music, speech, "l1"))
    balanced = float(loss_fn(NoMusic(), mix, music, speech, "balanced-l1"))
    assert plain < 0.01 and 1.0 < balanced < 1.1, (plain, balanced)
    silent = float(loss_fn(NoMusic(), speech, torch.zeros_like(speech), speech, "balanced-l1"))
    assert silent == pytest.approx(0.0, abs=1e-6)

    class Leaky(torch.nn.Module):  # a tenth of the mix leaks into the music
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cat([0.1 * x, 0.9 * x], dim=1)

    leak = float(loss_fn(Leaky(), speech, torch.zeros_like(speech), speech, "balanced-l1"))
    assert leak == pytest.approx(0.2, rel=1e-4)  # 0.1 of the mix in each source, relative to the mix
    import argparse

    from bgmid.cli import build_parser

    (sub,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    train_cmd = sub.choices["train"]
    (opt,) = [a for a in train_cmd._actions if "--loss" in a.option_strings]
    assert tuple(opt.choices) == LOSSES
    with pytest.raises(BgmidError, match="trains with l1, balanced-l1"):
        loss_fn(NoMusic(), mix, music, speech, "l2")
    with pytest.raises(BgmidError, match="trains with l1, balanced-l1"):  # Spleeter's, not a waveform model's
        loss_fn(NoMusic(), mix, music, speech, "peak-l1")


def test_a_loss_the_model_does_not_train_with_is_an_error_before_training(tmp_path) -> None:
    """The U-Net's masked-magnitude L1 has no balanced or peak form: asking for one is refused (it used to be
    ignored silently), by ``train`` before it reads any data."""
    from bgmid.separation import registry
    from bgmid.train import model_losses

    unet = registry.build("unet", "lite")
    assert model_losses(unet) == ("l1",)
    mix = torch.zeros(1, 1, 4096)
    with pytest.raises(BgmidError, match="UNet trains with l1"):
        loss_fn(unet, mix, mix, mix, "balanced-l1")
    cfg = TrainConfig(model="unet", config="lite", loss="peak-l1", out=str(tmp_path / "runs"), steps=1,
                      root=str(tmp_path / "no-data"))
    with pytest.raises(BgmidError, match="--loss peak-l1: --model unet trains with l1"):
        train(cfg, progress=False)
    assert not (tmp_path / "runs").exists()


def test_best_checkpoint_is_chosen_by_identification_then_si_sdr(tmp_path, monkeypatch) -> None:
    """Validation clips of known tracks get, per set, the share identified from the separated music, from the
    mixture, and *rescued* (from the separated music, not from the mixture); the selection compares the
    rescued share first and SI-SDR only between equal shares, or SI-SDR alone with ``si-sdr``; a training run
    opens the corpus identifier once and closes it."""
    import bgmid.train as tr

    data = SyntheticBatches(2, 4032, sample_rate=11025, seed=3)
    mix, mu, sp = data.batch(99)
    val = {"0dB": [tr.ValClip(mix[i, 0].numpy(), mu[i, 0].numpy(), sp[i, 0].numpy(), item) for i, item in
                   enumerate(["a", "b"])]}
    seen = []

    def identify(y, sr):  # the mixtures are never identified, every separated music as track "a"
        seen.append((y.shape, sr))
        return None if any(np.array_equal(y, c.mix) for c in val["0dB"]) else "a"

    m = validate(build("unet", "lite", **TINY["unet"]).eval(), val, identify=identify)
    assert m["id_0dB"] == 0.5 and m["idmix_0dB"] == 0.0 and m["rescued_0dB"] == 0.5
    assert seen == [(mix[0, 0].shape, 11025)] * 4
    loud, clear = {"music_0dB": 9.0, "rescued_0dB": 0.25}, {"music_0dB": 3.0, "rescued_0dB": 0.5}
    assert tr._score(clear) > tr._score(loud) and tr._score(loud, "si-sdr") > tr._score(clear, "si-sdr")
    assert tr._score({"music_0dB": 4.0, "rescued_0dB": 0.5}) > tr._score(clear)  # equal shares: SI-SDR decides
    # a network that passes the mixture through is identified as often as the mixture and rescues nothing
    passthrough = {"music_0dB": -1.0, "id_0dB": 0.9, "idmix_0dB": 0.9, "rescued_0dB": 0.0}
    assert tr._score({"music_0dB": 3.0, "id_0dB": 0.7, "rescued_0dB": 0.1}) > tr._score(passthrough)

    closed = []

    class Store:
        def close(self):
            closed.append(True)

    opened = []
    monkeypatch.setattr(tr, "corpus_identifier", lambda root, log: opened.append(root) or (identify, Store()))
    cfg = _cfg(tmp_path, 2)
    cfg.val_every_s = 0.0  # validate after every step, then at the end
    r = train(cfg, data, progress=False, val_sets=val, log=lambda s: None)
    assert r.metrics["rescued_0dB"] == 0.5 and r.best[0] == 0.5 and opened == [None] and closed == [True]
    with pytest.raises(Exception, match="unknown checkpoint selection"):
        bad = _cfg(tmp_path / "x", 1)
        bad.select = "loss"
        train(bad, data, progress=False, val_sets={}, log=lambda s: None)


def test_fine_tune_validates_its_start_so_best_is_never_worse(tmp_path) -> None:
    """With --init, the starting weights are validated at step 0 and kept as best.pt until a later checkpoint
    scores better: a fine-tune that only degrades returns its start."""
    import json

    data = SyntheticBatches(2, 4032, sample_rate=11025, seed=3)
    mix, mu, sp = data.batch(99)
    val = {"0dB": [(mix[i, 0].numpy(), mu[i, 0].numpy(), sp[i, 0].numpy()) for i in range(2)]}
    a = train(_cfg(tmp_path / "a", 3), data, progress=False, val_sets={}, log=lambda s: None)
    cfg = _cfg(tmp_path / "b", 2)
    cfg.init = str(a.run_dir / "best.pt")
    b = train(cfg, data, progress=False, val_sets=val, log=lambda s: None)
    rows = [json.loads(line) for line in (b.run_dir / "val.jsonl").read_text().splitlines()]
    assert rows[0]["step"] == 0
    start = validate(load_separator(str(a.run_dir / "best.pt")).model, val)["music_0dB"]
    assert rows[0]["music_0dB"] == pytest.approx(start, abs=1e-4)
    best = load_separator(str(b.run_dir / "best.pt")).info["metrics"]["music_0dB"]
    assert best >= max(r["music_0dB"] for r in rows) - 1e-9
