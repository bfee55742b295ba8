"""The paper's experiments on our corpus: separation quality and identification after separation.

One run evaluates a grid of configurations on the fixed test sets of the data module (``bgmid data mix``):

* **separator** -- ``none`` (the unprocessed signal) or a separator name/checkpoint;
* **input** -- ``sep`` (the separator's music estimate alone, the paper's pipeline) or ``fusion`` (the votes of
  the estimate and of the unprocessed mix pooled in one query: :meth:`bgmid.match.Matcher.identify` with
  ``[mix, music_est]``);
* **preset** -- the fingerprint parameter set of the index (``p1``/``p2``);
* **query** -- query-side options (density and fan-out factors, analysis shifts), which need no new index;
* **threshold** -- aligned hashes needed to report a match. Every query records its best candidate's score,
  so the rate and the false matches at any threshold come from one pass (no re-run to trade one for the
  other).

Sets and what they measure (``SPLIT`` is ``test`` by default): ``SPLIT_<snr>dB`` mixtures (identification
rate, BSS Eval); ``SPLIT_music`` the same clips' clean music (``none``: the ceiling; a separator: damage to clean
music, paper Table 7); ``SPLIT_speech``, ``SPLIT_ooi`` and ``SPLIT_ooi_<snr>dB`` negatives (any match is false).
A query is correct when its top-1 match is the clip's track with the offset within 0.5 s (paper's criterion
is the track; the offset check makes a lucky right-track-wrong-place match count as wrong) -- or at another place
of the same track that holds the same music (looped game music repeats exactly; a query cannot tell the loops
apart, and the fingerprint rightly reports the place with the most votes). The strict (offset only) and
track-only counts are kept too (``strict``, ``track`` in ``by_threshold`` and ``clips.csv``).

Separated outputs are cached under ``ROOT/eval_cache/<separator key>/<set>/`` (float16) with the clip's
separation metrics, so a re-run with other fingerprint settings, or after an interruption, separates nothing
again. The separator key includes the weights' sha256, so new weights never reuse old outputs.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from bgmid.errors import BgmidError
from bgmid.evaluate.bss import bss_eval, source_metrics
from bgmid.fingerprint import QueryOptions
from bgmid.fingerprint.landmarks import Landmarks

__all__ = [
    "DEFAULT_THRESHOLDS",
    "EvalSettings",
    "QuerySpec",
    "QUERY_GRID",
    "SeparatorEntry",
    "default_sets",
    "evaluate",
    "resolve_separators",
    "set_role",
    "sha256_file",
]

#: Offsets within this many seconds of the truth count as correct.
OFFSET_TOLERANCE_S = 0.5
#: Thresholds (aligned hashes) at which every configuration is scored; the matcher's calibrated default is added.
DEFAULT_THRESHOLDS = (5, 6, 7, 8, 9, 10, 12, 14, 16, 20, 25, 30, 40, 50)
#: Runner-up ratios scored with every threshold (see :func:`rule_key`).
DEFAULT_RATIOS = (1.0, 1.5, 2.0)
#: Sample rate at which sets are loaded and separation quality is measured (the paper's 16 kHz).
EVAL_SR = 16000


class Separator(Protocol):
    sample_rate: int

    def separate(self, mono: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass(frozen=True)
class QuerySpec:
    """Query-side fingerprint options (no new index needed); ``label`` names them in tables."""

    density_factor: float = QueryOptions.density_factor
    fanout_factor: float = QueryOptions.fanout_factor
    shifts: int = QueryOptions.shifts

    @property
    def label(self) -> str:
        return f"d{self.density_factor:g}-f{self.fanout_factor:g}-s{self.shifts}"

    def options(self, min_aligned: int = 1) -> QueryOptions:
        return QueryOptions(density_factor=self.density_factor, fanout_factor=self.fanout_factor,
                            shifts=self.shifts, min_aligned=min_aligned)

    @classmethod
    def parse(cls, text: str) -> QuerySpec:
        """``d2-f2-s1`` (any order, parts optional) -> QuerySpec."""
        kw: dict[str, Any] = {}
        for part in text.split("-"):
            if not part:
                continue
            key, val = part[0], part[1:]
            try:
                if key == "d":
                    kw["density_factor"] = float(val)
                elif key == "f":
                    kw["fanout_factor"] = float(val)
                elif key == "s":
                    kw["shifts"] = int(val)
                else:
                    raise ValueError(part)
            except ValueError:
                raise BgmidError(f"query spec {text!r}: use parts like d2 (density factor), f2 (fan-out factor), "
                                 "s4 (analysis shifts), joined by '-', e.g. d3-f3-s2") from None
        return cls(**kw)


#: The query grid of ``--grid``: audfprint-like sparse queries, the default, denser ones, several analysis
#: phases (audfprint's --shifts), and both together.
QUERY_GRID = (
    QuerySpec(1.0, 1.0, 1),
    QuerySpec(),
    QuerySpec(3.0, 3.0, 1),
    QuerySpec(2.0, 2.0, 4),
    QuerySpec(3.0, 3.0, 4),
)


def set_role(name: str) -> tuple[str, float]:
    """(role, SNR dB) of a fixed set name: ``mixture``, ``clean``, ``speech``, ``ooi``, ``ooi_mixture``.

    SNR is +inf for music-only sets and -inf for speech-only ones.
    """
    m = re.fullmatch(r"[A-Za-z0-9]+_(ooi_)?(-?\d+(?:\.\d+)?)dB", name)
    if m:
        return ("ooi_mixture" if m.group(1) else "mixture"), float(m.group(2))
    suffix = name.split("_", 1)[-1]
    if suffix == "music":
        return "clean", math.inf
    if suffix == "speech":
        return "speech", -math.inf
    if suffix == "ooi":
        return "ooi", math.inf
    raise BgmidError(f"fixed set {name!r}: not a set this evaluation knows (SPLIT_<snr>dB, SPLIT_music, "
                     "SPLIT_speech, SPLIT_ooi, SPLIT_ooi_<snr>dB)")


def is_negative(role: str) -> bool:
    return role in ("speech", "ooi", "ooi_mixture")


def default_sets(split: str = "test", snrs: Sequence[float] = (0, -10, -20)) -> list[str]:
    """The data module's fixed sets of ``split`` (mixtures, clean music, speech and out-of-index negatives)."""
    from bgmid.data.mixing import fixed_set_names

    return fixed_set_names(split, snrs)


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def fixed_set_key(root: Path, set_name: str, sample_rate: int = EVAL_SR) -> str:
    """``<set>-<sha256 of its CSV>``: the CSV fixes every clip (track, offset, gains, speech lines), so caches keyed
    by it are never reused after ``bgmid data mix`` rebuilds the sets from a changed corpus."""
    split = set_name.split("_", 1)[0]
    p = root / "fixed" / str(int(sample_rate)) / split / f"{set_name}.csv"
    return f"{set_name}-{sha256_file(p)[:12]}"


# --------------------------------------------------------------------------------------------------
# separators


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
    entries: list[SeparatorEntry] = []
    skipped: dict[str, str] = {}
    if not models_dir:
        try:
            from bgmid.separation import models_dir as _md

            models_dir = _md()
        except Exception:
            models_dir = "models"
    mdir = Path(models_dir)
    for name in names:
        if name == "none":
            entries.append(SeparatorEntry("none"))
            continue
        try:
            from bgmid.separation import load_separator
        except Exception as exc:  # the separation package is not there yet
            skipped[name] = f"bgmid.separation.load_separator unavailable ({exc.__class__.__name__}: {exc})"
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
    return SeparatorEntry(name, sep, w, sha256_file(w) if w else "", info)


def run_separator(sep: Separator, mix: np.ndarray, sr: int = EVAL_SR) -> tuple[np.ndarray, np.ndarray]:
    """Separate ``mix`` (at ``sr``) with ``sep`` at its own rate; return (music, speech) at ``sr``, same length."""
    from bgmid.audio import resample

    x = mix if sep.sample_rate == sr else resample(mix, sr, sep.sample_rate)
    music, speech = sep.separate(np.ascontiguousarray(x, dtype=np.float32))
    out = []
    for y in (music, speech):
        y = np.asarray(y, dtype=np.float32).reshape(-1)
        if sep.sample_rate != sr:
            y = resample(y, sep.sample_rate, sr)
        y = y[: mix.size] if y.size >= mix.size else np.pad(y, (0, mix.size - y.size))
        out.append(y.astype(np.float32))
    return out[0], out[1]


# --------------------------------------------------------------------------------------------------
# settings and the run


@dataclass
class EvalSettings:
    """Everything that defines an evaluation run (recorded in the report)."""

    root: str = ""
    models: list[str] = field(default_factory=lambda: ["none"])
    presets: list[str] = field(default_factory=lambda: ["p1", "p2"])
    sets: list[str] = field(default_factory=default_sets)
    clips: int | None = None  #: first N clips of each set (None: all)
    fusion: bool = True  #: also score fusion of separated + unprocessed votes
    queries: list[str] = field(default_factory=lambda: [QuerySpec().label])
    thresholds: list[int] = field(default_factory=lambda: list(DEFAULT_THRESHOLDS))
    #: also score "top-1 score >= ratio x runner-up score" on top of each threshold (1 = off). Why: chance
    #: votes for unindexed music spread evenly over many tracks, a real match towers over the runner-up.
    ratios: list[float] = field(default_factory=lambda: list(DEFAULT_RATIOS))
    bss_clips: int = 50  #: BSS Eval on the first N clips of each mixture set (about 1 s per clip per core)
    threads: int = 2  #: torch threads for separation
    jobs: int = 1  #: processes for building indexes
    cache: bool = True  #: cache separated outputs under ROOT/eval_cache
    models_dir: str = ""  #: where shipped weights are ('' = the separation registry's models folder)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class _ClipResult:
    score: int
    correct: bool  #: right track, and the offset within 0.5 s or at a repeat of the same music
    strict: bool  #: right track and offset within 0.5 s
    track: bool  #: right track (the paper's criterion)
    time_s: float
    second: int = 0  #: aligned hashes of the runner-up track (chance level for this query)


#: Two places of a track hold the same music when at least this fraction of one's landmarks recur at the same
#: relative times in the other. Measured on the demo corpus: looped game music 0.10-0.37, other places 0.000.
REPEAT_OVERLAP = 0.05


class _RepeatCheck:
    """Is the reported offset a repeat of the true place (looped music)? Compares the reference track's own
    landmarks at both places; independent of the evaluated preset (p2 on the 16 kHz cache), cached."""

    def __init__(self, root: Path, clip_n: int):
        self.root, self.n = root, clip_n
        self.memo: dict[tuple[str, float, float], bool] = {}

    def _lm(self, tid: str, off: float) -> set[tuple[int, int]]:
        from bgmid.data.corpus import load_item
        from bgmid.fingerprint import fingerprint, get_preset

        x = load_item(self.root, tid, EVAL_SR)
        a = max(0, int(round(off * EVAL_SR)))
        y = np.asarray(x[a:a + self.n], dtype=np.float32) * (1.0 / 32768.0)
        lm = fingerprint(y, get_preset("p2"))
        return set(zip(lm.hashes.tolist(), lm.times.tolist()))

    def __call__(self, tid: str, off_true: float, off_found: float) -> bool:
        key = (tid, round(off_true, 2), round(off_found, 2))
        if key not in self.memo:
            a, b = self._lm(tid, off_true), self._lm(tid, off_found)
            shared = max(len(a & {(h, t + d) for h, t in b}) for d in (-1, 0, 1)) if a and b else 0
            self.memo[key] = shared >= REPEAT_OVERLAP * max(1, min(len(a), len(b)))
        return self.memo[key]


def _pool(parts: Sequence[Landmarks]) -> Landmarks:
    """Union of landmarks on one time line (what Matcher.identify does with several signals)."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return Landmarks(np.zeros(0, np.uint32), np.zeros(0, np.int32))
    h = np.concatenate([p.hashes for p in parts]).astype(np.uint64)
    t = np.concatenate([p.times for p in parts]).astype(np.int64)
    key = np.unique((h << np.uint64(32)) | (t.astype(np.uint64) & np.uint64(0xFFFFFFFF)))
    return Landmarks((key >> np.uint64(32)).astype(np.uint32), (key & np.uint64(0xFFFFFFFF)).astype(np.int32))


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


#: Bump when what an identification cache entry means changes (criteria, matcher semantics).
ID_CACHE_VERSION = 1


class _IdCache:
    """Per-clip identification results of one separator (``none`` or by weights hash) x set x index x query, so a
    re-run that adds a separator or a preset only computes what is new. Stored as JSON lists of clip rows."""

    def __init__(self, base: Path | None, sep_key: str, set_name: str, index_name: str, query: str):
        self.dir = (base / "ident" / f"v{ID_CACHE_VERSION}" / sep_key / set_name / index_name
                    if base is not None and sep_key else None)
        self.query = query

    def _path(self, inp: str) -> Path:
        assert self.dir is not None
        return self.dir / f"{self.query}-{inp}.json"

    def get(self, inputs: Sequence[str], n: int) -> dict[str, list[dict]] | None:
        if self.dir is None:
            return None
        out = {}
        for i in inputs:
            try:
                rows = json.loads(self._path(i).read_text())
            except (OSError, ValueError):
                return None
            if len(rows) < n:
                return None
            out[i] = rows[:n]
        return out

    def put(self, rows_by: dict[str, list[dict]]) -> None:
        if self.dir is None:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        for i, rows in rows_by.items():
            tmp = self.dir / f".{self.query}-{i}.{os.getpid()}.tmp"
            tmp.write_text(json.dumps(rows))
            os.replace(tmp, self._path(i))


def _nanstats(vals: Sequence[float]) -> tuple[float, float, int]:
    a = np.asarray([v for v in vals if v is not None and not math.isnan(v)], dtype=np.float64)
    if a.size == 0:
        return math.nan, math.nan, 0
    return float(a.mean()), float(np.median(a)), int(a.size)


def _clip_truth(meta: dict) -> tuple[str, float]:
    off = meta.get("track_offset_s", "")
    return str(meta.get("music_track_id", "")), float(off) if off not in ("", None) else math.nan


def evaluate(
    settings: EvalSettings,
    separators: Sequence[SeparatorEntry] | None = None,
    log: Callable[[str], None] | None = print,
    progress: Callable[..., Any] | None = None,
) -> dict:
    """Run the evaluation grid; return the report dict (see :mod:`bgmid.evaluate.report` for its layout).

    ``separators`` overrides ``settings.models`` (tests pass stand-in separators this way). ``progress(total=,
    desc=)`` may return a tqdm-like bar (``update``/``close``) for the separation loops.
    """
    import torch

    from bgmid.audio import resample
    from bgmid.data.corpus import default_root
    from bgmid.data.mixing import load_fixed_set
    from bgmid.evaluate.library import manifest_sha256, open_corpus_index
    from bgmid.match import Matcher

    say = log or (lambda _m: None)
    root = Path(settings.root) if settings.root else default_root()
    settings.root = str(root)
    skipped: dict[str, str] = {}
    if separators is None:
        separators, skipped = resolve_separators(settings.models, settings.models_dir)
        for name, why in skipped.items():
            say(f"skipping separator {name}: {why}")
    if not separators:
        raise BgmidError("no separator to evaluate (even 'none' was left out); pass --models none ...")
    queries = [QuerySpec.parse(q) for q in settings.queries]
    from bgmid.match import CALIBRATION

    default_t = int(CALIBRATION["min_aligned"])
    thresholds = sorted(set(int(t) for t in settings.thresholds) | {default_t})
    ratios = sorted(set(float(r) for r in settings.ratios) | {1.0})
    rules = [(t, r, rule_key(t, r)) for r in ratios for t in thresholds]
    torch.set_num_threads(max(1, int(settings.threads)))
    cache_base = root / "eval_cache" if settings.cache else None

    report: dict[str, Any] = {
        "settings": settings.to_dict(),
        "manifest_sha256": manifest_sha256(root),
        "default_threshold": default_t,
        "thresholds": thresholds,
        "rules": [k for _, _, k in rules],
        "separators": {},
        "skipped_separators": skipped,
        "index": {},
        "bss": [],
        "identification": [],
        "cost": {"separation": {}, "identification": {}, "index": {}},
    }
    for e in separators:
        report["separators"][e.name] = {"weights": e.weights, "sha256": e.sha256, **e.info}

    stores = {}
    for p in settings.presets:
        store, info = open_corpus_index(root, p, jobs=settings.jobs, log=log)
        stores[p] = store
        report["index"][p] = info
    track_of = {p: {m.track_id: m.content_hash for m in s.tracks()} for p, s in stores.items()}
    matchers = {(p, q.label): Matcher(stores[p], q.options(min_aligned=1)) for p in settings.presets for q in queries}

    sep_time: dict[str, float] = {e.name: 0.0 for e in separators}
    sep_audio: dict[str, float] = {e.name: 0.0 for e in separators}
    timing_clips: list[np.ndarray] | None = None
    clip_rows: list[dict] = []

    for set_name in settings.sets:
        role, snr = set_role(set_name)
        try:
            clips = load_fixed_set(root, set_name, EVAL_SR, limit=settings.clips)
            set_key = fixed_set_key(root, set_name)
        except BgmidError as exc:
            say(f"skipping set {set_name}: {exc}")
            report.setdefault("skipped_sets", {})[set_name] = str(exc)
            continue
        if not clips:
            continue
        clip_s = clips[0].mix.size / EVAL_SR
        say(f"set {set_name}: {len(clips)} clips of {clip_s:.1f} s ({role})")
        truths = [_clip_truth(c.meta) for c in clips]
        repeat = _RepeatCheck(root, clips[0].mix.size)
        mix_lm: dict[tuple[int, str, str], Landmarks] = {}

        mix_at: dict[tuple[int, int], np.ndarray] = {}

        def at_rate(x: np.ndarray, sr: int) -> np.ndarray:
            """``x`` (at EVAL_SR) resampled to ``sr`` (once per signal and rate, not once per query option)."""
            return resample(x, EVAL_SR, sr)

        for e in separators:
            cache = _SepCache(cache_base, e.key, set_key)
            per_clip: list[dict] = []
            ests: list[np.ndarray] = []
            bar = progress(total=len(clips), desc=f"{set_name} {e.name}") if progress else None
            for k, c in enumerate(clips):
                if e.separator is None:
                    est, met = c.mix, {}
                    if role == "mixture":
                        met = {f"{m}_music": v for m, v in source_metrics(c.music, c.mix).items()}
                        met.update({f"{m}_speech": v for m, v in source_metrics(c.speech, c.mix).items()})
                        if k < settings.bss_clips:
                            met.update(bss_eval(c.music, c.speech, c.mix, c.mix))
                    elif role == "clean":
                        met = {f"{m}_music": v for m, v in source_metrics(c.music, c.mix).items()}
                else:
                    got = cache.get(k)
                    if got is not None and (role != "mixture" or k >= settings.bss_clips or "sdr_music" in got[1]):
                        est, met = got
                    else:
                        t0 = time.perf_counter()
                        est, sp = run_separator(e.separator, c.mix)
                        dt = time.perf_counter() - t0
                        met = {"sep_s": dt, "audio_s": c.mix.size / EVAL_SR}
                        if role in ("mixture", "clean"):
                            met.update({f"{m}_music": v for m, v in source_metrics(c.music, est).items()})
                        if role == "mixture":
                            met.update({f"{m}_speech": v for m, v in source_metrics(c.speech, sp).items()})
                            if k < settings.bss_clips:
                                met.update(bss_eval(c.music, c.speech, est, sp))
                        cache.put(k, est, met)
                    sep_time[e.name] += float(met.get("sep_s", 0.0))
                    sep_audio[e.name] += float(met.get("audio_s", 0.0)) if "sep_s" in met else 0.0
                per_clip.append(met)
                ests.append(est)
                if bar is not None:
                    bar.update(1)
            if bar is not None:
                bar.close()

            if role in ("mixture", "clean"):
                row: dict[str, Any] = {"separator": e.name, "set": set_name, "role": role, "snr": snr,
                                       "clips": len(clips)}
                keys = sorted({k for m in per_clip for k in m if k not in ("sep_s", "audio_s",
                                                                           "bss_silent_estimate")})
                for key in keys:
                    mean, med, n = _nanstats([m.get(key, math.nan) for m in per_clip])
                    row[f"{key}_mean"], row[f"{key}_median"] = mean, med
                    if key.startswith("sdr_"):
                        row["bss_clips"] = n
                row["bss_silent_estimates"] = int(sum(m.get("bss_silent_estimate", 0.0) for m in per_clip))
                report["bss"].append(row)

            inputs = ["sep"] + (["fusion"] if settings.fusion and e.separator is not None else [])
            id_key = "none" if e.separator is None else e.key
            for p in settings.presets:
                psr = stores[p].preset.sample_rate
                ests_p: list[np.ndarray | None] | None = None
                for q in queries:
                    matcher = matchers[(p, q.label)]
                    icache = _IdCache(cache_base, id_key, set_key, stores[p].path.name, q.label)
                    rows_by = icache.get(inputs, len(clips))
                    if rows_by is None:
                        if ests_p is None:
                            ests_p = [None] * len(ests) if e.separator is None else [at_rate(x, psr) for x in ests]
                        rows_by = {i: [] for i in inputs}
                        for k, (c, est) in enumerate(zip(clips, ests_p)):
                            mkey = (k, p, q.label)
                            if mkey not in mix_lm:
                                if (k, psr) not in mix_at:
                                    mix_at[(k, psr)] = at_rate(c.mix, psr)
                                mix_lm[mkey] = matcher.landmarks(mix_at[(k, psr)], psr)
                            t_est = time.perf_counter()
                            est_lm = mix_lm[mkey] if est is None else matcher.landmarks(est, psr)
                            t_est = time.perf_counter() - t_est
                            for inp in inputs:
                                t0 = time.perf_counter()
                                lm = _pool([est_lm, mix_lm[mkey]]) if inp == "fusion" else est_lm
                                ms = matcher.match_landmarks(lm, top=2, min_aligned=1)
                                dt = time.perf_counter() - t0 + t_est
                                tid, off = truths[k]
                                track_ok = bool(ms) and not is_negative(role) and \
                                    track_of[p].get(ms[0].track_id) == tid
                                strict = track_ok and abs(ms[0].track_offset_s - off) <= OFFSET_TOLERANCE_S
                                ok = strict or (track_ok and repeat(tid, off, ms[0].track_offset_s))
                                rows_by[inp].append({
                                    "set": set_name, "clip": c.meta.get("clip", k), "separator": e.name,
                                    "input": inp, "preset": p, "query": q.label,
                                    "score": ms[0].score if ms else 0, "runner_up": ms[1].score if len(ms) > 1 else 0,
                                    "correct": int(ok), "strict": int(strict), "track": int(track_ok),
                                    "match_span_s": round(ms[0].query_end_s - ms[0].query_start_s, 2) if ms else "",
                                    "match_track": track_of[p].get(ms[0].track_id, "") if ms else "",
                                    "match_offset_s": round(ms[0].track_offset_s, 3) if ms else "",
                                    "truth_track": tid, "truth_offset_s": off, "time_s": round(dt, 5),
                                })
                        icache.put(rows_by)
                    res: dict[str, list[_ClipResult]] = {
                        i: [_ClipResult(int(r["score"]), bool(r["correct"]), bool(r["strict"]), bool(r["track"]),
                                        float(r["time_s"]), int(r["runner_up"])) for r in rows_by[i]]
                        for i in inputs}
                    if q == queries[0]:
                        for i in inputs:
                            clip_rows += [{**r, "separator": e.name} for r in rows_by[i]]
                    for inp, rs in res.items():
                        scores = np.array([r.score for r in rs])
                        correct = np.array([r.correct for r in rs])
                        strict_ = np.array([r.strict for r in rs])
                        track_ = np.array([r.track for r in rs])
                        second = np.array([r.second for r in rs])
                        by_t = {}
                        for t, ratio, key in rules:
                            ok_t = (scores >= t) & (scores >= ratio * second)
                            by_t[key] = {"correct": int(np.sum(correct & ok_t)), "strict": int(np.sum(strict_ & ok_t)),
                                         "track": int(np.sum(track_ & ok_t)), "matched": int(np.sum(ok_t))}
                        d = by_t[str(default_t)]
                        report["identification"].append({
                            "separator": e.name, "input": inp, "preset": p, "query": q.label, "set": set_name,
                            "role": role, "snr": snr, "clips": len(rs),
                            "rate": d["correct"] / len(rs) if not is_negative(role) else math.nan,
                            "false_rate": (d["matched"] / len(rs)) if is_negative(role)
                            else (d["matched"] - d["correct"]) / len(rs),
                            "by_threshold": by_t,
                            "query_s_mean": float(np.mean([r.time_s for r in rs])),
                        })
        if timing_clips is None and role == "mixture":
            timing_clips = [c.mix for c in clips[:40]]

    for e in separators:
        if e.separator is not None and sep_time[e.name] > 0:
            report["cost"]["separation"][e.name] = {
                "audio_s": round(sep_audio[e.name], 2), "wall_s": round(sep_time[e.name], 2),
                "x_realtime": round(sep_audio[e.name] / sep_time[e.name], 2), "threads": settings.threads,
            }
    if timing_clips:
        # identification time of the unprocessed query (analysis + lookup + vote), per preset and query option
        hours = sum(x.size for x in timing_clips) / EVAL_SR / 3600
        for p in settings.presets:
            for q in queries:
                m = matchers[(p, q.label)]
                t0 = time.perf_counter()
                for x in timing_clips:
                    m.match_landmarks(m.landmarks(x, EVAL_SR), top=1)
                t = time.perf_counter() - t0
                report["cost"]["identification"].setdefault(p, {})[q.label] = {
                    "query_hours": round(hours, 4), "wall_s": round(t, 3),
                    "s_per_hour_of_queries": round(t / hours, 2),
                }
    for p, info in report["index"].items():
        tracks = max(1, int(info["tracks"]))
        report["cost"]["index"][p] = {
            "tracks": info["tracks"], "hours": info["hours"], "bytes": info["bytes"],
            "mb_per_1000_tracks": round(info["bytes"] / tracks * 1000 / 1e6, 2),
            "mb_at_paper_scale_9118_tracks": round(info["bytes"] / tracks * 9118 / 1e6, 1),
            "fingerprint_x_realtime_one_core": info.get("fingerprint_x_realtime_one_core"),
        }
    report["clip_rows"] = clip_rows
    for s in stores.values():
        s.close()
    return report


def rule_key(threshold: int, ratio: float = 1.0) -> str:
    """Key of a decision rule in ``by_threshold``: ``"25"`` (score >= 25) or ``"25r1.5"`` (and >= 1.5 x the
    runner-up track's score)."""
    return str(int(threshold)) if ratio == 1.0 else f"{int(threshold)}r{ratio:g}"


def parse_rule(key: str | int) -> tuple[int, float]:
    """Inverse of :func:`rule_key`."""
    t, _, r = str(key).partition("r")
    return int(t), float(r) if r else 1.0


def query_fields() -> list[str]:
    """Names of the query options a configuration sets (for best.json consumers)."""
    return [f.name for f in fields(QueryOptions)]


# --------------------------------------------------------------------------------------------------
# U-Net ablations (paper Tables 3-4)

#: name -> list of (run name, U-Net constructor overrides). Table 3: input frames at 16 kHz, window 1,024,
#: hop 373. Table 4: hop at 22,050 Hz, 512 frames, window 1,024.
ABLATIONS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "frames": [(f"unet-frames{f}", {"sample_rate": 16000, "n_fft": 1024, "hop": 373, "frames": f})
               for f in (128, 256, 512)],
    "hop": [(f"unet-hop{h}", {"sample_rate": 22050, "n_fft": 1024, "hop": h, "frames": 512})
            for h in (256, 384, 512)],
}


def train_ablations(
    which: Sequence[str], root: str | None, out: str | os.PathLike = "runs/ablations", config: str = "lite",
    minutes: float | None = 30.0, steps: int | None = None, threads: int = 2, resume: bool = True,
    log: Callable[[str], None] = print,
) -> list[str]:
    """Train the U-Net ablation runs (same budget each, as the paper's "same iterations"); return the paths of
    their ``best.pt`` for evaluation. Resumes unfinished runs. Expensive: not part of the default evaluation."""
    from bgmid.train import TrainConfig, train

    paths = []
    for w in which:
        if w not in ABLATIONS:
            raise BgmidError(f"unknown ablation {w!r}; choose from {', '.join(ABLATIONS)}")
        for run_name, overrides in ABLATIONS[w]:
            cfg = TrainConfig(model="unet", config=config, root=root, out=str(out), run_name=run_name,
                              minutes=minutes, steps=steps, threads=threads, model_overrides=dict(overrides))
            best = cfg.run_dir / "best.pt"
            done = cfg.run_dir / "ablation_done.json"
            if not done.exists():
                log(f"training ablation {run_name} ({config} + {overrides}), "
                    f"{f'{minutes:g} min' if minutes else f'{steps} steps'}")
                res = train(cfg, resume=resume and (cfg.run_dir / "last.pt").exists(), progress=False, log=log)
                done.write_text(json.dumps({"step": res.step, "seconds": res.seconds, "best": res.best}))
            if best.exists():
                paths.append(str(best))
            else:
                log(f"ablation {run_name}: no best.pt (no validation finished); not evaluated")
    return paths
