"""The separators under evaluation, and the first stage of a run: separate a fixed set.

* :class:`SeparatorEntry` -- a separator (or ``none``: the unprocessed signal) with its weights file and sha256;
  :func:`resolve_separators` loads them by name, skipping those without weights;
* :func:`separate_set` -- a set's music estimates and per-clip separation figures (:class:`Separated`), cached
  under ``ROOT/eval_cache/<separator key>/<set>/`` (float16) so a re-run with other fingerprint settings, or after
  an interruption, separates nothing again (the key includes the weights' sha256: new weights never reuse old
  outputs);
* :func:`separation_row` -- the set's separation quality (the report's ``bss`` entry: means and medians).

The separator interface is :class:`bgmid.separation.Separator`.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bgmid.evaluate.bss import bss_eval, source_metrics
from bgmid.hashing import file_digest
from bgmid.separation.registry import Separator, separate_at

if TYPE_CHECKING:
    from bgmid.data.mixing import FixedClip
    from bgmid.evaluate.identification import FixedSet

__all__ = ["EVAL_SR", "Separated", "SeparatorEntry", "display_name", "entry_for", "resolve_separators",
           "separate_set", "separation_row"]

#: Sample rate at which sets are loaded and separation quality is measured (the paper's 16 kHz).
EVAL_SR = 16000


@dataclass
class SeparatorEntry:
    """A separator under evaluation (``separator is None``: the unprocessed signal)."""

    name: str
    separator: Separator | None = None
    weights: str = ""  #: checkpoint path, when known
    sha256: str = ""  #: of the checkpoint file
    info: dict = field(default_factory=dict)  #: sample rate, parameters, model class

    @property
    def key(self) -> str:
        """Cache key: name plus weights hash (a separator without weights file is never cached)."""
        return f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', self.name)}-{self.sha256[:12]}" if self.sha256 else ""


def _weights_path(name: str, sep: Any, models_dir: Path) -> str:
    info = getattr(sep, "info", None)
    cands = [info.get("path")] if isinstance(info, dict) else []
    cands += [getattr(sep, attr, None) for attr in ("path", "weights", "weights_path", "checkpoint")]
    for v in cands:
        if isinstance(v, str | os.PathLike) and Path(v).is_file():
            return str(v)
    if Path(name).is_file():
        return name
    for cand in (models_dir / f"{name}-lite.pt", models_dir / f"{name}.pt"):
        if cand.is_file():
            return str(cand)
    return ""


def resolve_separators(
    names: Sequence[str], models_dir: str | os.PathLike = "models"
) -> tuple[list[SeparatorEntry], dict[str, str]]:
    """Load the named separators; return the loaded ones and {name: why skipped} for the rest.

    ``none`` is the unprocessed signal. Other names go to ``bgmid.separation.load_separator`` (a registry
    name or a checkpoint path). A separator whose weights are missing is skipped with the loader's reason, so
    an evaluation runs with whatever has been trained so far.
    """
    from bgmid.separation import load_separator
    from bgmid.separation import models_dir as shipped_models_dir

    entries: list[SeparatorEntry] = []
    skipped: dict[str, str] = {}
    mdir = Path(models_dir or shipped_models_dir())
    for name in names:
        if name == "none":
            entries.append(SeparatorEntry("none"))
            continue
        try:
            sep = load_separator(name)
        except Exception as exc:
            skipped[name] = f"{exc.__class__.__name__}: {exc}"
            continue
        entries.append(entry_for(display_name(name), sep, mdir))
    return entries, skipped


def display_name(name: str) -> str:
    """Registry names stay; a checkpoint path is named after its file, or its run folder for best/last.pt."""
    p = Path(name)
    if p.suffix != ".pt":
        return name
    return p.parent.name if p.stem in ("best", "last") and p.parent.name else p.stem


def entry_for(name: str, sep: Separator, models_dir: str | os.PathLike = "models") -> SeparatorEntry:
    """A :class:`SeparatorEntry` for a loaded separator (weights path and sha256 found where possible)."""
    w = _weights_path(name, sep, Path(models_dir))
    info: dict[str, Any] = {"sample_rate": int(sep.sample_rate), "class": type(sep).__name__}
    model = getattr(sep, "model", None)
    if model is not None and hasattr(model, "parameters"):
        try:
            info["parameters"] = int(sum(p.numel() for p in model.parameters()))
            info["model_class"] = type(model).__name__
        except Exception:  # pragma: no cover - informative only
            pass
    return SeparatorEntry(name, sep, w, file_digest(w) if w else "", info)


# --------------------------------------------------------------------------------------------------
# stage 1: separate a set


@dataclass
class Separated:
    """One separator's music estimates of one set at :data:`EVAL_SR` (the mixes themselves for ``none``) and
    each clip's separation figures (``si_sdr_music``, ``sdr_music``, ... and ``sep_s``/``audio_s`` when the
    separator ran, now or in the cached run)."""

    entry: SeparatorEntry
    music: list[np.ndarray]
    metrics: list[dict[str, float]]

    @property
    def sep_s(self) -> float:
        """Seconds spent separating (as measured when each clip was separated)."""
        return sum(float(m.get("sep_s", 0.0)) for m in self.metrics)

    @property
    def audio_s(self) -> float:
        """Seconds of audio behind :attr:`sep_s`."""
        return sum(float(m.get("audio_s", 0.0)) for m in self.metrics if "sep_s" in m)


def _quality(role: str, c: FixedClip, music: np.ndarray, speech: np.ndarray, with_bss: bool) -> dict[str, float]:
    """Separation figures of one clip's estimates: music SI-SDR/SNR (mixtures and clean music), speech and BSS
    Eval (mixtures; BSS Eval only on the first clips of a set)."""
    met: dict[str, float] = {}
    if role in ("mixture", "clean"):
        met.update({f"{m}_music": v for m, v in source_metrics(c.music, music).items()})
    if role == "mixture":
        met.update({f"{m}_speech": v for m, v in source_metrics(c.speech, speech).items()})
        if with_bss:
            met.update(bss_eval(c.music, c.speech, music, speech))
    return met


class _SepCache:
    """Separated music (float16 .npy) and per-clip metrics (.json) of one separator on one set."""

    def __init__(self, base: Path | None, key: str, set_name: str):
        self.dir = base / key / set_name if (base is not None and key) else None

    def get(self, k: int) -> tuple[np.ndarray, dict] | None:
        if self.dir is None:
            return None
        a, j = self.dir / f"{k:05d}.npy", self.dir / f"{k:05d}.json"
        if a.exists() and j.exists():
            try:
                return np.load(a).astype(np.float32), json.loads(j.read_text())
            except (OSError, ValueError):
                return None
        return None

    def put(self, k: int, music: np.ndarray, metrics: dict) -> None:
        if self.dir is None:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f".{k:05d}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            np.save(f, music.astype(np.float16))
        os.replace(tmp, self.dir / f"{k:05d}.npy")
        tmp.write_text(json.dumps(metrics))
        os.replace(tmp, self.dir / f"{k:05d}.json")


def _separate_clip(sep: Separator, cache: _SepCache, role: str, c: FixedClip, k: int, with_bss: bool
                   ) -> tuple[np.ndarray, dict[str, float]]:
    """Clip ``k``'s music estimate and figures, from the cache when it holds everything this run needs."""
    got = cache.get(k)
    if got is not None and (role != "mixture" or not with_bss or "sdr_music" in got[1]):
        return got
    t0 = time.perf_counter()
    music, speech = separate_at(sep, c.mix, EVAL_SR)  # the run's thread policy is set around the stage
    met = {"sep_s": time.perf_counter() - t0, "audio_s": c.mix.size / EVAL_SR}
    met.update(_quality(role, c, music, speech, with_bss))
    cache.put(k, music, met)
    return music, met


def separate_set(fs: FixedSet, entry: SeparatorEntry, bss_clips: int, cache_base: Path | None = None,
                 progress: Callable[..., Any] | None = None) -> Separated:
    """Stage 1: ``entry``'s music estimates of every clip of ``fs`` with their separation figures (BSS Eval on
    the first ``bss_clips``). ``none`` scores the unprocessed mix as both estimates. ``progress(total=, desc=)``
    may return a tqdm-like bar."""
    cache = _SepCache(cache_base, entry.key, fs.key)
    bar = progress(total=len(fs.clips), desc=f"{fs.name} {entry.name}") if progress else None
    out = Separated(entry, [], [])
    for k, c in enumerate(fs.clips):
        if entry.separator is None:
            music, met = c.mix, _quality(fs.role, c, c.mix, c.mix, k < bss_clips)
        else:
            music, met = _separate_clip(entry.separator, cache, fs.role, c, k, k < bss_clips)
        out.music.append(music)
        out.metrics.append(met)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return out


def _nanstats(vals: Sequence[float]) -> tuple[float, float, int]:
    a = np.asarray([v for v in vals if v is not None and not math.isnan(v)], dtype=np.float64)
    if a.size == 0:
        return math.nan, math.nan, 0
    return float(a.mean()), float(np.median(a)), int(a.size)


def separation_row(fs: FixedSet, sep: Separated) -> dict[str, Any]:
    """The report's ``bss`` entry of ``sep`` on ``fs`` (a mixture or clean set): mean and median of every
    figure, the clips BSS Eval ran on, and how many estimates were silent."""
    row: dict[str, Any] = {"separator": sep.entry.name, "set": fs.name, "role": fs.role, "snr": fs.snr,
                           "clips": len(fs.clips)}
    keys = sorted({k for m in sep.metrics for k in m if k not in ("sep_s", "audio_s", "bss_silent_estimate")})
    for key in keys:
        mean, med, n = _nanstats([m.get(key, math.nan) for m in sep.metrics])
        row[f"{key}_mean"], row[f"{key}_median"] = mean, med
        if key.startswith("sdr_"):
            row["bss_clips"] = n
    row["bss_silent_estimates"] = int(sum(m.get("bss_silent_estimate", 0.0) for m in sep.metrics))
    return row
