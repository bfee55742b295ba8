"""One plain training loop for all four separators.

Choices (faster-converging than the 2017-18 papers, as the issue invites): AdamW, linear warm-up then cosine
decay to 5 % over a step horizon (the horizon is ``--steps``, or, with only ``--minutes``, estimated from the
measured speed after the warm-up and re-estimated at each checkpoint, since a shared CPU's speed drifts; it is
saved with the checkpoint so a resumed run follows the same schedule); L1 loss
on the waveform for the waveform models and masked-magnitude L1 for the spectrogram models (both sources);
an exponential moving average (EMA) of the weights, which is what is validated and shipped; gradient-norm
clipping at 5.

Exact resume: every batch is a pure function of ``(seed, step)`` (the dataset is seeded and re-keyed per step),
and the checkpoint carries weights, EMA, optimizer, step, schedule horizon, torch RNG state and the best score,
so stopping and resuming gives the same loss sequence as an uninterrupted run. Checkpoints are written
atomically every ``ckpt_every_s`` seconds (``last.pt``, full state) and whenever validation improves
(``best.pt``, release format with EMA weights, loadable by :func:`bgmid.separation.load_separator`).
"Improves" is judged by identification first (``TrainConfig.select``): the share of validation clips whose
separated music is identified as its track in the corpus index where the unprocessed mixture is not (:func:`_score`
says why not the plain rate), SI-SDR only between equal shares, since
the paper found SI-SDR ranks separators wrongly for what bgmid does with them (and a fine-tune on real scenes
here gained 2.7 dB of SI-SDR while its separated music was identified less often: models/wave-unet-lite.md).

Validation and model cards use the one SI-SDR (:func:`bgmid.metrics.si_sdr`, means removed first); checkpoints
record the first 16 hex digits of :func:`bgmid.data.corpus.manifest_sha256`; torch threads follow
:func:`bgmid.separation.torch_threads` (``cfg.threads`` for the run, restored after).
"""

from __future__ import annotations

import copy
import csv
import json
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import numpy as np
import torch
from torch import nn

from bgmid.errors import BgmidError
from bgmid.metrics import si_sdr as metrics_si_sdr
from bgmid.separation import registry
from bgmid.separation.losses import relative_l1
from bgmid.separation.registry import torch_threads

if TYPE_CHECKING:
    from bgmid.separation.apply import ChunkPlan

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # mix, music, speech: (B, 1, N) each


@dataclass
class TrainConfig:
    """Everything that defines a run (saved in every checkpoint)."""

    model: str = "wave-unet"
    config: str = "lite"
    root: str | None = None
    out: str = "runs"
    run_name: str | None = None  #: default "<model>"
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup: int = 100
    lr_floor: float = 0.05
    clip_grad: float = 5.0
    steps: int | None = None  #: stop after this many steps (also the schedule horizon)
    minutes: float | None = None  #: stop after this much wall time (this invocation)
    horizon: int | None = None  #: schedule horizon in steps; default steps, or estimated from minutes
    ema_decay: float = 0.999
    ckpt_every_s: float = 180.0
    val_every_s: float = 360.0
    val_clips: int = 16
    #: the fixed ``val_<name>`` sets validated on: the base sets, or harder ones where the unprocessed mixture is
    #: rarely identified (``-10dB_crowd``, ``-20dB_turns``: 'bgmid data hard-sets --split val'), which is where
    #: selection by identification can tell checkpoints apart
    val_sets: tuple[str, ...] = ("0dB", "-10dB")
    val_seconds: float = 6.0
    seed: int = 0
    snr_db: tuple[float, float] = (-30.0, 0.0)
    p_music_only: float = 0.1
    p_speech_only: float = 0.05
    p_high_snr: float = 0.15
    threads: int = 2
    init: str | None = None  #: start a fresh run from these weights (a release checkpoint of the same model)
    scenes: bool = False  #: train on real scenes (crowds, effects, rooms, EQ: bgmid.data.scenes.SceneConfig)
    #: the loss (:data:`LOSSES`, :func:`model_losses`): ``l1`` sums both sources' L1 errors, so at -30..0 dB
    #: music the speech error dominates it; ``balanced-l1`` divides each source's error by that source's own
    #: level; ``peak-l1`` (Spleeter) adds the music's log-magnitude error on its spectral peaks
    loss: str = "l1"
    #: what picks ``best.pt`` (:data:`SELECTIONS`): ``identification``, the share of validation clips whose
    #: separated music is identified as its track in the corpus index (``p1``, built once if missing) where
    #: the mixture alone is not, SI-SDR breaking ties, since the paper found SI-SDR ranks separators wrongly
    #: for identification; or
    #: ``si-sdr`` alone (also what identification falls back to for validation clips without a track)
    select: str = "identification"
    model_overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def run_dir(self) -> Path:
        return Path(self.out) / (self.run_name or self.model)


class BatchSource(Protocol):
    def batch(self, step: int) -> Batch: ...


class MixtureBatches:
    """Batches of on-the-fly mixtures from the corpus; batch ``step`` is a fixed function of (seed, step)."""

    def __init__(self, cfg: TrainConfig, sample_rate: int, length: int) -> None:
        from bgmid.data.mixing import MixtureDataset
        from bgmid.data.scenes import SceneConfig

        self.ds = MixtureDataset(
            cfg.root, split="train", sample_rate=sample_rate, length=length, snr_db=tuple(cfg.snr_db),
            p_music_only=cfg.p_music_only, p_speech_only=cfg.p_speech_only, p_high_snr=cfg.p_high_snr,
            seed=cfg.seed, epoch_size=cfg.batch_size, scene=SceneConfig() if cfg.scenes else None,
        )
        self.batch_size = cfg.batch_size
        self.lock = threading.Lock()

    def batch(self, step: int) -> Batch:
        with self.lock:  # set_epoch + draws must not interleave between threads
            self.ds.set_epoch(step)
            items = [self.ds[i] for i in range(self.batch_size)]
        return tuple(torch.stack(z) for z in zip(*items, strict=True))  # type: ignore[return-value]


class SyntheticBatches:
    """Deterministic toy mixtures (harmonic 'music' + noise-burst 'speech') for tests and smoke runs."""

    def __init__(self, batch_size: int, length: int, sample_rate: int = 16000, seed: int = 0) -> None:
        self.batch_size, self.length, self.sr, self.seed = batch_size, length, sample_rate, seed

    def batch(self, step: int) -> Batch:
        rng = np.random.default_rng([self.seed, step])
        t = np.arange(self.length) / self.sr
        music, speech = [], []
        for _ in range(self.batch_size):
            f0 = rng.uniform(100, 600)
            m = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6.3)) / k for k in range(1, 4))
            env = (np.sin(2 * np.pi * rng.uniform(2, 5) * t + rng.uniform(0, 6.3)) > 0).astype(np.float64)
            s = rng.standard_normal(self.length) * env
            g = 10 ** (rng.uniform(-20, 0) / 20)
            music.append(0.1 * g * m / np.sqrt(np.mean(m**2) + 1e-9))
            speech.append(0.1 * s / np.sqrt(np.mean(s**2) + 1e-9))
        mu = torch.tensor(np.array(music), dtype=torch.float32)[:, None]
        sp = torch.tensor(np.array(speech), dtype=torch.float32)[:, None]
        return mu + sp, mu, sp


class _Prefetch:
    """Draw batch ``step + 1`` in a thread while the network trains on batch ``step`` (numpy releases the
    GIL); results are keyed by step, so prefetching never changes what a step sees."""

    def __init__(self, src: BatchSource) -> None:
        self.src = src
        self.step: int | None = None
        self.thread: threading.Thread | None = None
        self.result: Batch | None = None

    def _work(self, step: int) -> None:
        self.result = self.src.batch(step)

    def get(self, step: int) -> Batch:
        if self.step == step and self.thread is not None:
            self.thread.join()
            out = self.result
        else:
            out = self.src.batch(step)
        self.step, self.result = step + 1, None
        self.thread = threading.Thread(target=self._work, args=(step + 1,), daemon=True)
        self.thread.start()
        assert out is not None
        return out


#: Losses :func:`loss_fn` knows (``TrainConfig.loss``); a spectrogram model lists those it trains with in its
#: ``losses`` attribute.
LOSSES = ("l1", "balanced-l1", "peak-l1")
#: Waveform models' losses.
WAVE_LOSSES = ("l1", "balanced-l1")


def model_losses(model: nn.Module) -> tuple[str, ...]:
    """The ``--loss`` values ``model`` trains with."""
    return tuple(model.losses) if getattr(model, "domain", "wave") == "spectrogram" else WAVE_LOSSES


def require_loss(model: nn.Module, loss: str, who: str) -> None:
    """A :class:`BgmidError` naming ``who`` (the model, as the user chose it) unless ``model`` trains with
    ``loss``."""
    if loss not in model_losses(model):
        raise BgmidError(f"--loss {loss}: {who} trains with {', '.join(model_losses(model))}")


def loss_fn(model: nn.Module, mix: torch.Tensor, music: torch.Tensor, speech: torch.Tensor,
            loss: str = "l1") -> torch.Tensor:
    """Waveform L1 (both sources; ``l1`` or ``balanced-l1``) for waveform models; a spectrogram model's own
    ``spectrogram_loss`` (masked-magnitude L1, and whatever else its ``losses`` lists: Spleeter's)."""
    require_loss(model, loss, type(model).__name__)
    if getattr(model, "domain", "wave") == "spectrogram":
        return model.spectrogram_loss(mix, music, speech, loss=loss)
    est = model(mix)
    if loss == "balanced-l1":
        return relative_l1(est[:, :1], music, mix) + relative_l1(est[:, 1:], speech, mix)
    return (est[:, :1] - music).abs().mean() + (est[:, 1:] - speech).abs().mean()


def lr_at(cfg: TrainConfig, step: int, horizon: int | None) -> float:
    warm = min(1.0, (step + 1) / max(1, cfg.warmup))
    if not horizon:
        return cfg.lr * warm
    p = min(1.0, step / horizon)
    return cfg.lr * warm * (cfg.lr_floor + (1 - cfg.lr_floor) * 0.5 * (1 + math.cos(math.pi * p)))


def manifest_hash(root: str | None) -> str:
    """:func:`bgmid.data.corpus.manifest_sha256` of the corpus the run trained on, shortened to the 16 hex digits
    checkpoints record (``data_manifest_hash``); '' when there is none."""
    from bgmid.data.corpus import manifest_sha256

    try:
        return manifest_sha256(root)[:16]
    except (BgmidError, OSError):
        return ""


class ValClip(NamedTuple):
    """One validation clip: the mixture and its two sources (float32, the model's rate)."""

    mix: np.ndarray
    music: np.ndarray
    speech: np.ndarray
    item: str | None = None  #: the corpus item id of its music (the identification score's truth)


ValSet = dict[str, list[ValClip]]  # set name -> clips

#: Checkpoint selections (``TrainConfig.select``).
SELECTIONS = ("identification", "si-sdr")


def load_val_sets(root: str | None, sample_rate: int, clips: int, seconds: float,
                  names: tuple[str, ...] = ("0dB", "-10dB"), split: str = "val") -> ValSet:
    """The fixed validation sets at ``sample_rate`` (resampled from a stored rate when not built at it),
    first ``clips`` clips, first ``seconds`` of each."""
    from bgmid.audio import resample
    from bgmid.data.mixing import load_fixed_set

    out: ValSet = {}
    n = int(seconds * sample_rate)
    for snr in names:
        name = f"{split}_{snr}"
        got = None
        for sr in (sample_rate, 22050, 16000):
            try:
                got = (load_fixed_set(root, name, sr, limit=clips), sr)
                break
            except BgmidError:
                continue
        if got is None:
            from bgmid.data.hard_sets import scene_set_names

            build = f"bgmid data hard-sets --split {split}" if name in scene_set_names(split) else \
                f"bgmid data mix --splits {split}"
            raise BgmidError(f"fixed set '{name}' not found under the data root; build it with '{build}'.")
        fixed, sr = got
        rows = []
        for c in fixed:
            mu, sp = c.music, c.speech
            if sr != sample_rate:
                mu, sp = resample(mu, sr, sample_rate), resample(sp, sr, sample_rate)
            mu, sp = mu[:n].astype(np.float32), sp[:n].astype(np.float32)
            rows.append(ValClip(mu + sp, mu, sp, c.meta.get("music_track_id") or None))
        out[snr] = rows
    return out


def validate(model: nn.Module, sets: ValSet, plan: ChunkPlan | None = None,
             identify: Callable[[np.ndarray, int], str | None] | None = None) -> dict[str, float]:
    """Mean SI-SDR of music and speech estimates per set, and of the unprocessed mixture (the baseline), in
    the model's inference chunks (:func:`bgmid.separation.apply.default_plan`) or ``plan``'s. With
    ``identify`` (music estimate, its rate -> the item id it is identified as, or None): ``id_<set>``, the
    share of the set's clips with a known track whose separated music alone is identified as it,
    ``idmix_<set>`` the same for the unprocessed mixture, and ``rescued_<set>`` the share identified from the
    separated music but not from the mixture: what a separator adds where bgmid fuses the two."""
    from bgmid.separation.apply import separate_array

    res: dict[str, float] = {}
    for name, rows in sets.items():
        mu_s, sp_s, base, found = [], [], [], []
        for clip in rows:
            mix, mu, sp = clip[:3]
            if np.dot(mu, mu) < 1e-8 or np.dot(sp, sp) < 1e-8:
                continue
            em, es = separate_array(model, mix, batch=8, plan=plan)
            mu_s.append(metrics_si_sdr(reference=mu, estimate=em, zero_mean=True))
            sp_s.append(metrics_si_sdr(reference=sp, estimate=es, zero_mean=True))
            base.append(metrics_si_sdr(reference=mu, estimate=mix, zero_mean=True))
            item = getattr(clip, "item", None)
            if identify is not None and item:
                found.append((identify(em, model.sample_rate) == item, identify(mix, model.sample_rate) == item))
        res[f"music_{name}"] = float(np.mean(mu_s))
        res[f"speech_{name}"] = float(np.mean(sp_s))
        res[f"mix_{name}"] = float(np.mean(base))
        res[f"gain_{name}"] = res[f"music_{name}"] - res[f"mix_{name}"]
        if found:
            sep_ok, mix_ok = np.array(found).T
            res[f"id_{name}"] = float(np.mean(sep_ok))
            res[f"idmix_{name}"] = float(np.mean(mix_ok))
            res[f"rescued_{name}"] = float(np.mean(sep_ok & ~mix_ok))
    model.train()
    return res


def _score(metrics: dict[str, float], select: str = "identification") -> tuple[float, float]:
    """Model selection, compared as a tuple: (mean share of validation clips *rescued*, identified from the
    separated music and not from the mixture, mean music SI-SDR) for ``identification`` when there are
    rates, else (0, mean music SI-SDR). Not the separated music's own identification rate: on our sets the
    mixture alone is identified 70-90 % of the time, so a network that passes the mixture through scores as
    well as one that separates (a fine-tune here collapsed to exactly that, SI-SDR gain -0.8 / -0.0 dB at
    0 / -10 dB, and identified 85 % of the validation clips against a real separator's 70 %)."""
    sdr = [v for k, v in metrics.items() if k.startswith("music_")]
    rate = [v for k, v in metrics.items() if k.startswith("rescued_")]
    return (float(np.mean(rate)) if select == "identification" and rate else 0.0,
            float(np.mean(sdr)) if sdr else -math.inf)


def corpus_identifier(root: str | None, log: Callable[[str], None] = print
                      ) -> tuple[Callable[[np.ndarray, int], str | None], Any]:
    """``identify(y, sr)`` -> the corpus item id that mono ``y`` is identified as (top match, as indexed: no
    alteration search), against the corpus index of preset ``p1`` (built the first time, ~1 min), and the open
    store (close it when done)."""
    from bgmid.evaluate.library import open_corpus_index
    from bgmid.fingerprint.presets import QueryOptions
    from bgmid.match import Matcher

    store, _ = open_corpus_index(root, "p1", log=log)
    item_of = {t.track_id: t.extra.get("item_id") for t in store.tracks()}
    matcher = Matcher(store, QueryOptions(alterations=False))

    def identify(y: np.ndarray, sr: int) -> str | None:
        found = matcher.identify(y, sr)
        return item_of.get(found[0].track_id) if found else None

    return identify, store


@dataclass
class TrainResult:
    step: int
    losses: list[float]
    metrics: dict[str, float]
    best: tuple[float, float]  #: the selection score of best.pt (:func:`_score`)
    run_dir: Path
    seconds: float


def _ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    with torch.no_grad():
        for pe, p in zip(ema.parameters(), model.parameters(), strict=True):
            pe.lerp_(p, 1.0 - decay)
        for be, b in zip(ema.buffers(), model.buffers(), strict=True):
            be.copy_(b)


def _init_state(cfg: TrainConfig) -> dict[str, torch.Tensor]:
    """The weights a fine-tune starts from: a release checkpoint of ``cfg.model``, or, where ``cfg.init`` names
    a fine-tunable pretrained model (:data:`~bgmid.separation.registry.FINE_TUNABLE`), its fetched weights."""
    import importlib

    if cfg.init == cfg.model and cfg.model in registry.FINE_TUNABLE:
        module = importlib.import_module(registry.FINE_TUNABLE[cfg.model][0])
        return module.pretrained_network(cfg.config).state_dict()
    ck = registry.load_checkpoint(cfg.init)
    if ck.get("name") != cfg.model:
        raise BgmidError(f"{cfg.init} holds a '{ck.get('name')}' model, not '{cfg.model}'.")
    return ck["state"]


def train(cfg: TrainConfig, data: BatchSource | None = None, resume: bool = False,
          val_sets: ValSet | None = None, progress: bool = True,
          log: Callable[[str], None] = print) -> TrainResult:
    """Train ``cfg.model`` until ``cfg.steps`` or ``cfg.minutes`` with ``cfg.threads`` torch threads; see the
    module docstring."""
    with torch_threads(max(1, cfg.threads)):
        return _train(cfg, data, resume, val_sets, progress, log)


def _train(cfg: TrainConfig, data: BatchSource | None, resume: bool, val_sets: ValSet | None, progress: bool,
           log: Callable[[str], None]) -> TrainResult:
    torch.manual_seed(cfg.seed)
    model = registry.build(cfg.model, cfg.config, **cfg.model_overrides)  # seeded init
    require_loss(model, cfg.loss, f"--model {cfg.model}")  # before a run folder or any data is made or read
    run = cfg.run_dir
    run.mkdir(parents=True, exist_ok=True)
    last_path, best_path = run / "last.pt", run / "best.pt"
    ema = copy.deepcopy(model).eval()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.select not in SELECTIONS:
        raise BgmidError(f"unknown checkpoint selection {cfg.select!r}; choose one of {', '.join(SELECTIONS)}")
    step, horizon, elapsed_before = 0, cfg.horizon or cfg.steps, 0.0
    best: tuple[float, float] = (-math.inf, -math.inf)
    metrics: dict[str, float] = {}
    if resume and last_path.exists():
        st = torch.load(last_path, map_location="cpu", weights_only=True)
        model.load_state_dict(st["model"])
        ema.load_state_dict(st["ema"])
        opt.load_state_dict(st["opt"])
        step, horizon = int(st["step"]), st["horizon"]
        b = st["best"]  # a run from before selection by identification kept its SI-SDR alone
        best = (float(b[0]), float(b[1])) if isinstance(b, (list, tuple)) else (-math.inf, float(b))
        elapsed_before = float(st["elapsed_s"])
        metrics = dict(st.get("metrics", {}))
        torch.set_rng_state(st["rng_torch"])
        log(f"resumed {last_path} at step {step}")
    elif resume:
        log(f"no checkpoint at {last_path}; starting fresh")
    if cfg.init and step == 0:  # fine-tuning: weights (and EMA) from a release checkpoint, a fresh optimiser
        state = _init_state(cfg)
        model.load_state_dict(state)
        ema.load_state_dict(state)
        log(f"initialised from {cfg.init}")
    if data is None:  # a model may train on shorter segments than it separates in (fully convolutional)
        data = MixtureBatches(cfg, model.sample_rate, getattr(model, "train_segment", model.segment))
    retry_val = val_sets is None  # the fixed sets may be built while we train: look again at each validation

    def try_load_val() -> ValSet:
        nonlocal retry_val
        try:
            sets = load_val_sets(cfg.root, model.sample_rate, cfg.val_clips, cfg.val_seconds, tuple(cfg.val_sets))
            retry_val = False
            return sets
        except (BgmidError, ImportError, OSError) as exc:
            log(f"no validation sets yet ({exc}); will look again at the next validation (until then no "
                "best.pt is chosen, only last.pt is saved)")
            return {}

    if val_sets is None:
        val_sets = try_load_val()
    mhash = manifest_hash(cfg.root)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"{cfg.model} ({cfg.config}): {n_params:,} parameters, {model.sample_rate} Hz, segment {model.segment}, "
        f"batch {cfg.batch_size}; run dir {run}")
    cfg_dict = asdict(cfg)

    def save_last() -> None:
        registry.save_checkpoint(last_path, {
            "model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(), "step": step,
            "horizon": horizon, "best": list(best), "elapsed_s": elapsed_before + (time.time() - t0),
            "rng_torch": torch.get_rng_state(), "metrics": metrics, "config": registry._plain(cfg_dict),
        })

    identify, id_store = None, None

    def identifier() -> Callable[[np.ndarray, int], str | None] | None:
        """The corpus identifier, opened at the first validation with clips of known tracks."""
        nonlocal identify, id_store
        wanted = cfg.select == "identification" and any(getattr(c, "item", None) for r in val_sets.values() for c in r)
        if identify is None and id_store is None and wanted:
            try:
                identify, id_store = corpus_identifier(cfg.root, log)
            except (BgmidError, OSError) as exc:
                id_store = False  # asked once: selection by SI-SDR
                log(f"no corpus index for identification ({exc}); best.pt is chosen by SI-SDR")
        return identify

    def run_validation() -> None:
        nonlocal best, metrics, val_sets
        if not val_sets and retry_val:
            val_sets = try_load_val()
        if not val_sets:
            return
        tv = time.time()
        metrics = validate(ema, val_sets, identify=identifier())
        metrics["step"] = step
        metrics["val_s"] = round(time.time() - tv, 1)
        with open(run / "val.jsonl", "a") as f:
            f.write(json.dumps({"step": step, "elapsed_s": round(elapsed_before + time.time() - t0, 1),
                                **metrics}) + "\n")
        score = _score(metrics, cfg.select)
        shown = ", ".join(f"{k} {v:.2f}" for k, v in metrics.items()
                          if k.startswith(("music", "mix", "gain", "id", "rescued")))
        log(f"val step {step}: {shown}")
        if score > best:
            best = score
            train_info = {**cfg_dict, "steps_done": step,
                          "minutes_done": round((elapsed_before + time.time() - t0) / 60, 1)}
            registry.save_checkpoint(best_path, registry.make_checkpoint(
                model, ema.state_dict(), train_info, mhash, metrics))

    t0 = time.time()
    if cfg.init and step == 0:  # a fine-tune's start is a candidate too: best.pt is never worse than it
        run_validation()
    model.train()
    t0 = time.time()
    last_ckpt = last_val = t0
    losses: list[float] = []
    prefetch = _Prefetch(data)
    csv_path = run / "log.csv"
    new_csv = not csv_path.exists() or not resume
    fcsv = open(csv_path, "w" if new_csv else "a", newline="")
    writer = csv.writer(fcsv)
    if new_csv:
        writer.writerow(["step", "elapsed_s", "loss", "lr", "steps_per_s", "x_real_time"])
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps or horizon, initial=step, unit="step", dynamic_ncols=True, mininterval=5)
    deadline = t0 + cfg.minutes * 60 if cfg.minutes else math.inf
    auto_horizon = bool(cfg.minutes) and cfg.horizon is None and cfg.steps is None
    step0 = step
    window: list[float] = []
    t_window = time.time()
    try:
        while (cfg.steps is None or step < cfg.steps) and time.time() < deadline:
            mix, music, speech = prefetch.get(step)
            lr = lr_at(cfg, step, horizon)
            for g in opt.param_groups:
                g["lr"] = lr
            loss = loss_fn(model, mix, music, speech, cfg.loss)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.clip_grad:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
            opt.step()
            decay = min(cfg.ema_decay, (1 + step) / (10 + step))
            _ema_update(ema, model, decay)
            step += 1
            lv = float(loss.detach())
            losses.append(lv)
            window.append(lv)
            now = time.time()
            at_ckpt = bool(horizon) and now - last_ckpt >= cfg.ckpt_every_s
            if auto_horizon and (step - step0 == max(20, cfg.warmup) or at_ckpt):
                # time budget only: re-estimate the horizon from this invocation's speed (the shared CPU's
                # speed drifts); it is saved with each checkpoint, so a resumed run continues the same schedule
                rate = (step - step0) / max(1e-9, now - t0)
                horizon = step + int(rate * max(0.0, deadline - now))
                log(f"schedule horizon set to {horizon} steps ({rate:.2f} steps/s)")
            if len(window) >= 10 or (cfg.steps is not None and step >= cfg.steps):
                sps = len(window) / max(1e-9, now - t_window)
                xrt = sps * cfg.batch_size * model.segment / model.sample_rate
                writer.writerow([step, round(elapsed_before + now - t0, 1), round(float(np.mean(window)), 6),
                                 f"{lr:.3g}", round(sps, 3), round(xrt, 1)])
                fcsv.flush()
                if bar is not None:
                    bar.set_postfix(loss=f"{np.mean(window):.4f}", lr=f"{lr:.2g}", xRT=f"{xrt:.0f}")
                window, t_window = [], now
            if bar is not None:
                bar.update(1)
            if now - last_val >= cfg.val_every_s:
                run_validation()
                last_val = time.time()
            if now - last_ckpt >= cfg.ckpt_every_s:
                save_last()
                last_ckpt = time.time()
        run_validation()
        save_last()
    finally:
        if bar is not None:
            bar.close()
        fcsv.close()
        if id_store:
            id_store.close()
    if not val_sets:  # no validation: still leave a usable release file
        registry.save_checkpoint(best_path, registry.make_checkpoint(
            model, ema.state_dict(), {**cfg_dict, "steps_done": step}, mhash, {}))
    total = elapsed_before + time.time() - t0
    chosen = ("none" if best[1] == -math.inf else f"music SI-SDR {best[1]:.2f} dB" if identify is None
              else f"rescued {best[0]:.0%} of the clips the mixture misses, music SI-SDR {best[1]:.2f} dB")
    log(f"done: step {step}, {total / 60:.1f} min, best validation ({chosen}); {best_path}")
    return TrainResult(step, losses, metrics, best, run, total)


def release(run_dir: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Copy a run's best EMA weights (release format, small) to ``dest``."""
    ck = registry.load_checkpoint(Path(run_dir) / "best.pt")
    return registry.save_checkpoint(dest, ck)


def speed_x_real_time(model: nn.Module, seconds: float = 30.0, threads: int = 2) -> float:
    """Separation speed of ``model`` on ``seconds`` of noise through the chunked path (x real time)."""
    from bgmid.separation.apply import separate_array

    x = (np.random.default_rng(0).standard_normal(int(seconds * model.sample_rate)) * 0.05).astype(np.float32)
    with torch_threads(threads):
        t = time.perf_counter()
        separate_array(model, x, batch=8)
        return seconds / (time.perf_counter() - t)


def publish(name: str, run_dir: str | os.PathLike, root: str | None = None, models: str | os.PathLike = "models",
            clips: int = 40, command: str = "", hardware: str = "2-core CPU (shared), no GPU") -> Path:
    """Copy a run's best EMA weights to ``models/<name>-lite.pt`` and write its model card with measured
    numbers: validation metrics from training, held-out test SI-SDR (full 12 s clips), speed."""
    from bgmid.separation.registry import model_from_checkpoint

    ck = registry.load_checkpoint(Path(run_dir) / "best.pt")
    model = model_from_checkpoint(ck)
    test = validate(model, load_val_sets(root, model.sample_rate, clips, 12.0, split="test"))
    xrt = speed_x_real_time(model)
    ck["metrics"] = {**ck["metrics"], **{f"test_{k}": v for k, v in test.items()}, "x_real_time_2cpu": xrt}
    dest = registry.save_checkpoint(Path(models) / f"{name}-lite.pt", ck)
    tr, m = ck["train"], ck["metrics"]
    n_params = sum(p.numel() for p in model.parameters())
    lines = [
        f"# {name} (lite) — music/speech separator",
        "",
        f"- Weights: `{dest.name}` ({dest.stat().st_size / 1e6:.1f} MB), EMA weights of the best validation step.",
        f"- Architecture: `{ck['class']}` with `{ck['kwargs']}` ({n_params:,} parameters), "
        f"{model.sample_rate} Hz mono.",
        f"- Data: the bgmid corpus (`bgmid data fetch`), manifest hash `{ck['data_manifest_hash']}`; on-the-fly "
        f"mixtures, SNR U{list(tr.get('snr_db', []))} dB, music-only p={tr.get('p_music_only')}, speech-only "
        f"p={tr.get('p_speech_only')}, high-SNR [0, 20] dB p={tr.get('p_high_snr')}; segment {model.segment} "
        f"samples, batch {tr.get('batch_size')}.",
        f"- Training: {tr.get('steps_done')} steps in {tr.get('minutes_done')} min on {hardware}; AdamW lr "
        f"{tr.get('lr')}, warm-up {tr.get('warmup')} + cosine, EMA {tr.get('ema_decay')}, "
        "L1 loss (waveform for wave models, masked magnitude for spectrogram models).",
        f"- Validation (first {tr.get('val_clips')} clips of val_0dB / val_-10dB, first {tr.get('val_seconds')} s, "
        f"mean SI-SDR dB): music {m.get('music_0dB', float('nan')):.2f} / {m.get('music_-10dB', float('nan')):.2f} "
        f"(mixture {m.get('mix_0dB', float('nan')):.2f} / {m.get('mix_-10dB', float('nan')):.2f}).",
        f"- Held-out test (first {clips} clips of test_0dB / test_-10dB, 12 s each, mean SI-SDR dB): music "
        f"{test['music_0dB']:.2f} / {test['music_-10dB']:.2f} (unprocessed mixture {test['mix_0dB']:.2f} / "
        f"{test['mix_-10dB']:.2f}; improvement {test['gain_0dB']:+.2f} / {test['gain_-10dB']:+.2f}); speech "
        f"{test['speech_0dB']:.2f} / {test['speech_-10dB']:.2f}.",
        f"- Speed: {xrt:.1f}x real time (chunked inference, 2 CPU threads, while other jobs shared the CPU).",
        "",
        "Reproduce:",
        "",
        "```",
        command or f"bgmid train --model {name} --config lite --minutes {tr.get('minutes')} "
        f"--batch-size {tr.get('batch_size')} --lr {tr.get('lr')}",
        f"python -m bgmid.train publish {name} runs/{name} --clips {clips}",
        "```",
        "",
    ]
    (Path(models) / f"{name}-lite.md").write_text("\n".join(lines))
    return dest


if __name__ == "__main__":  # python -m bgmid.train publish NAME RUN_DIR [--clips N] [--command CMD]
    import argparse

    ap = argparse.ArgumentParser(prog="python -m bgmid.train")
    sp = ap.add_subparsers(dest="cmd", required=True)
    pp = sp.add_parser("publish", help="copy a run's best weights to models/ and write the model card")
    pp.add_argument("name")
    pp.add_argument("run_dir")
    pp.add_argument("--root")
    pp.add_argument("--models", default="models")
    pp.add_argument("--clips", type=int, default=40)
    pp.add_argument("--command", default="", help="the exact command that trained it (for the card)")
    a = ap.parse_args()
    print(publish(a.name, a.run_dir, a.root, a.models, a.clips, a.command))
