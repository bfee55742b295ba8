"""The paper's experiments on our corpus: separation quality and identification after separation.

One run evaluates a grid of configurations on the fixed test sets of the data module (``bgmid data mix``):

* **separator** -- ``none`` (the unprocessed signal) or a separator name/checkpoint;
* **input** -- ``sep`` (the separator's music estimate alone, the paper's pipeline) or ``fusion`` (the votes of
  the estimate and of the unprocessed mix pooled in one query), both through the query pipeline that
  ``bgmid identify`` runs (:class:`bgmid.pipeline.QueryPipeline`), given the stems stage 1 cached;
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
of the same track that holds the same music (:mod:`bgmid.evaluate.repeats`: looped game music; a query cannot
tell the loops apart, and the fingerprint rightly reports the place with the most votes). The strict (offset
only) and track-only counts are kept too (``strict``, ``track`` in ``by_threshold`` and ``clips.csv``).

A run is four typed stages, per fixed set (:class:`FixedSet`) and separator:

1. :func:`bgmid.evaluate.separators.separate_set` -> :class:`~bgmid.evaluate.separators.Separated` (music
   estimates and separation figures, cached under ``ROOT/eval_cache``);
2. :func:`identify_set` -> one :class:`Row` per clip x input x preset x query (cached under
   ``ROOT/eval_cache/ident``: a re-run that adds a separator or a preset only computes what is new);
3. :func:`score` -> one :class:`Score` per configuration: correct/strict/track/matched counts at every decision
   rule (:class:`Rules`);
4. :func:`cost` -> separation speed, identification time per hour of queries, index size.

:func:`evaluate` runs them over the grid and returns the report dict (:mod:`bgmid.evaluate.report` writes it).
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bgmid.errors import BgmidError
from bgmid.evaluate.repeats import RepeatCheck
from bgmid.evaluate.separators import (
    EVAL_SR,
    Separated,
    SeparatorEntry,
    display_name,
    entry_for,
    resolve_separators,
    separate_set,
    separation_row,
)
from bgmid.fingerprint import QueryOptions
from bgmid.hashing import file_digest
from bgmid.pipeline import QueryPipeline

if TYPE_CHECKING:
    from bgmid.data.mixing import FixedClip
    from bgmid.fingerprint.landmarks import Landmarks
    from bgmid.index import LocalStore
    from bgmid.match import Match

__all__ = [
    "DEFAULT_THRESHOLDS",
    "EVAL_SR",
    "EvalSettings",
    "FixedSet",
    "Library",
    "QuerySpec",
    "QUERY_GRID",
    "Row",
    "Rules",
    "Score",
    "SeparatorEntry",
    "cost",
    "default_sets",
    "display_name",
    "entry_for",
    "evaluate",
    "identify_set",
    "load_set",
    "open_library",
    "resolve_separators",
    "score",
    "is_condition",
    "set_role",
]

#: What a separator's row identifies: its music estimate alone (the paper's pipeline) or fused with the mix.
INPUTS = ("sep", "fusion")
#: Offsets within this many seconds of the truth count as correct.
OFFSET_TOLERANCE_S = 0.5
#: Thresholds (aligned hashes) at which every configuration is scored; the matcher's calibrated default is added.
DEFAULT_THRESHOLDS = (5, 6, 7, 8, 9, 10, 12, 14, 16, 20, 25, 30, 40, 50)
#: Runner-up ratios scored with every threshold (see :func:`rule_key`).
DEFAULT_RATIOS = (1.0, 1.5, 2.0)
#: Clips of the first mixture set that :func:`cost` times identification on.
TIMING_CLIPS = 40


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
        """Query options (``min_aligned`` 0: the calibrated decision, with alteration search)."""
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
    """(role, SNR dB) of a fixed set name: ``mixture``, ``clean``, ``speech``, ``ooi``, ``ooi_mixture``, and
    the scene sets of ``bgmid data hard-sets`` (``test_-20dB_turns``, ``test_speech_crowd``) the role of their
    base set; for the broadcast-condition sets of ``bgmid data mix --conditions`` (``test_-10dB_speed+4.2``,
    ``test_speech_broadcast``, see :func:`bgmid.data.mixing.split_condition`) ``condition`` (altered music)
    or ``condition_negative`` (altered speech or out-of-index music), with the SNR of their base set.

    SNR is +inf for music-only sets and -inf for speech-only ones.
    """
    from bgmid.data.hard_sets import split_scene
    from bgmid.data.mixing import split_condition

    base, cond = split_condition(name)
    if cond:
        role, snr = set_role(base)
        return ("condition_negative" if is_negative(role) else "condition"), snr
    base, scene = split_scene(name)  # the scene sets (test_-20dB_turns, test_speech_crowd) keep their base's role
    if scene:
        return set_role(base)
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
                     "SPLIT_speech, SPLIT_ooi, SPLIT_ooi_<snr>dB, or one of those with a condition suffix "
                     "such as _speed+4.2: see bgmid data mix --help)")


def is_negative(role: str) -> bool:
    return role in ("speech", "ooi", "ooi_mixture", "condition_negative")


def is_condition(role: str) -> bool:
    """A broadcast-condition set: identified with the full decision of ``bgmid identify`` (alteration search,
    short-query density), not with the raw candidates of the threshold sweep."""
    return role in ("condition", "condition_negative")


def default_sets(split: str = "test", snrs: Sequence[float] = (0, -10, -20)) -> list[str]:
    """The data module's fixed sets of ``split`` (mixtures, clean music, speech and out-of-index negatives)."""
    from bgmid.data.mixing import fixed_set_names

    return fixed_set_names(split, snrs)


def fixed_set_key(root: Path, set_name: str, sample_rate: int = EVAL_SR) -> str:
    """``<set>-<sha256 of its CSV>``: the CSV fixes every clip (track, offset, gains, speech lines), so caches keyed
    by it are never reused after ``bgmid data mix`` rebuilds the sets from a changed corpus."""
    split = set_name.split("_", 1)[0]
    p = root / "fixed" / str(int(sample_rate)) / split / f"{set_name}.csv"
    return f"{set_name}-{file_digest(p)[:12]}"


# --------------------------------------------------------------------------------------------------
# settings and decision rules


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


@dataclass(frozen=True)
class Rules:
    """The decision rules every configuration is scored at: each threshold, alone and with each runner-up
    ratio (``keys``: ``(threshold, ratio, rule_key)``), including the matcher's calibrated ``default``."""

    default: int
    thresholds: list[int]
    keys: list[tuple[int, float, str]]

    @classmethod
    def of(cls, settings: EvalSettings) -> Rules:
        from bgmid.match import CALIBRATION

        default = int(CALIBRATION["min_aligned"])
        thresholds = sorted(set(int(t) for t in settings.thresholds) | {default})
        ratios = sorted(set(float(r) for r in settings.ratios) | {1.0})
        return cls(default, thresholds, [(t, r, rule_key(t, r)) for r in ratios for t in thresholds])


# --------------------------------------------------------------------------------------------------
# what a run reads: fixed sets and the reference library


@dataclass
class FixedSet:
    """One fixed set loaded for a run: its clips at :data:`EVAL_SR`, what it measures, its cache key."""

    name: str
    role: str  #: see :func:`set_role`
    snr: float
    key: str  #: :func:`fixed_set_key`
    clips: list[FixedClip]
    truths: list[tuple[str, float]]  #: (track item id, offset s) per clip; ("", nan) for negatives

    @property
    def negative(self) -> bool:
        return is_negative(self.role)

    @property
    def clip_s(self) -> float:
        return self.clips[0].mix.size / EVAL_SR if self.clips else 0.0


def _clip_truth(meta: dict) -> tuple[str, float]:
    off = meta.get("track_offset_s", "")
    return str(meta.get("music_track_id", "")), float(off) if off not in ("", None) else math.nan


def load_set(root: Path, name: str, limit: int | None = None) -> FixedSet:
    """The first ``limit`` clips of fixed set ``name`` (a :class:`BgmidError` when it is not there)."""
    from bgmid.data.mixing import load_fixed_set

    role, snr = set_role(name)
    clips = load_fixed_set(root, name, EVAL_SR, limit=limit)
    return FixedSet(name, role, snr, fixed_set_key(root, name), clips, [_clip_truth(c.meta) for c in clips])


@dataclass
class Library:
    """The corpus index of each preset (:func:`bgmid.evaluate.library.open_corpus_index`), its track id -> item
    id map, and a query pipeline per (preset, query label, input): the pipeline ``bgmid identify`` runs, here
    given stems that stage 1 separated and cached (``sep``: the music estimate alone; ``fusion``: pooled with
    the mix)."""

    stores: dict[str, LocalStore]
    info: dict[str, dict]  #: each index's ``built.json``
    item_of: dict[str, dict[int, str]]
    pipelines: dict[tuple[str, str, str], QueryPipeline]
    #: the same with the calibrated decision and alteration search, for the condition sets (:func:`is_condition`)
    decisions: dict[tuple[str, str, str], QueryPipeline]

    def close(self) -> None:
        for s in self.stores.values():
            s.close()


def open_library(root: Path, presets: Sequence[str], queries: Sequence[QuerySpec], jobs: int = 1,
                 log: Callable[[str], None] | None = print) -> Library:
    """Build (once, cached) and open the corpus index of every preset."""
    from bgmid.evaluate.library import open_corpus_index

    stores, info = {}, {}
    for p in presets:
        stores[p], info[p] = open_corpus_index(root, p, jobs=jobs, log=log)
    item_of = {p: {m.track_id: m.content_hash for m in s.tracks()} for p, s in stores.items()}
    pipelines = {(p, q.label, inp): QueryPipeline(stores[p], fusion=inp == "fusion", options=q.options(min_aligned=1))
                 for p in presets for q in queries for inp in INPUTS}
    decisions = {(p, q.label, inp): QueryPipeline(stores[p], fusion=inp == "fusion", options=q.options(min_aligned=0))
                 for p in presets for q in queries for inp in INPUTS}
    return Library(stores, info, item_of, pipelines, decisions)


# --------------------------------------------------------------------------------------------------
# stage 2: identify a set


@dataclass
class Row:
    """One identification: a clip x separator x input x preset x query (a line of ``clips.csv``; the
    identification cache stores these fields as JSON)."""

    set: str
    clip: Any  #: the clip's number in its set (as the set's CSV writes it)
    separator: str
    input: str  #: ``sep`` or ``fusion``
    preset: str
    query: str  #: :attr:`QuerySpec.label`
    score: int  #: aligned hashes of the top-1 match (0: none)
    runner_up: int  #: of the second track (chance level for this query)
    correct: int  #: right track, offset within 0.5 s or at a repeat of the same music
    strict: int  #: right track, offset within 0.5 s
    track: int  #: right track (the paper's criterion)
    match_span_s: float | str
    match_track: str
    match_offset_s: float | str
    truth_track: str
    truth_offset_s: float
    time_s: float  #: query analysis + lookup + vote


#: Bump when what an identification cache entry means changes (criteria, matcher semantics).
ID_CACHE_VERSION = 1


class _IdCache:
    """The :class:`Row` lists of one separator (``none`` or by weights hash) x set x index x query, one JSON
    file per input."""

    def __init__(self, base: Path | None, sep_key: str, set_name: str, index_name: str, query: str):
        self.dir = (base / "ident" / f"v{ID_CACHE_VERSION}" / sep_key / set_name / index_name
                    if base is not None and sep_key else None)
        self.query = query

    def _path(self, inp: str) -> Path:
        assert self.dir is not None
        return self.dir / f"{self.query}-{inp}.json"

    def get(self, inputs: Sequence[str], n: int) -> dict[str, list[Row]] | None:
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
            out[i] = [Row(**r) for r in rows[:n]]
        return out

    def put(self, rows_by: dict[str, list[Row]]) -> None:
        if self.dir is None:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        for i, rows in rows_by.items():
            tmp = self.dir / f".{self.query}-{i}.{os.getpid()}.tmp"
            tmp.write_text(json.dumps([asdict(r) for r in rows]))
            os.replace(tmp, self._path(i))


class MixLandmarks:
    """The unprocessed mixes' query landmarks of one set per clip x preset x query, computed once and shared by
    every separator (``none``'s input and each fusion)."""

    def __init__(self, fs: FixedSet):
        self.fs = fs
        self._at: dict[tuple[int, int], np.ndarray] = {}
        self._lm: dict[tuple[int, str, str], Landmarks] = {}

    def mix(self, k: int, sr: int) -> np.ndarray:
        """Clip ``k``'s mix at ``sr`` Hz."""
        if (k, sr) not in self._at:
            self._at[(k, sr)] = _at_rate(self.fs.clips[k].mix, sr)
        return self._at[(k, sr)]

    def get(self, k: int, preset: str, query: str, pipeline: QueryPipeline) -> Landmarks:
        """Clip ``k``'s mix landmarks through ``pipeline`` (of ``preset`` and query label ``query``)."""
        key = (k, preset, query)
        if key not in self._lm:
            self._lm[key] = pipeline.stem_landmarks(self.mix(k, pipeline.sample_rate))
        return self._lm[key]


def _at_rate(x: np.ndarray, sr: int) -> np.ndarray:
    """``x`` (at :data:`EVAL_SR`) resampled to ``sr``."""
    from bgmid.audio import resample

    return resample(x, EVAL_SR, sr)


def _judge(fs: FixedSet, k: int, ms: list[Match], item_of: dict[int, str], repeat: RepeatCheck
           ) -> tuple[bool, bool, bool]:
    """(correct, strict, track) of clip ``k``'s matches (see the module docstring)."""
    tid, off = fs.truths[k]
    track_ok = bool(ms) and not fs.negative and item_of.get(ms[0].track_id) == tid
    strict = track_ok and abs(ms[0].track_offset_s - off) <= OFFSET_TOLERANCE_S
    ok = strict or (track_ok and repeat(tid, off, ms[0].track_offset_s))
    return ok, strict, track_ok


def _row(fs: FixedSet, k: int, sep: str, inp: str, preset: str, query: str, ms: list[Match],
         item_of: dict[int, str], repeat: RepeatCheck, dt: float) -> Row:
    ok, strict, track_ok = _judge(fs, k, ms, item_of, repeat)
    top = ms[0] if ms else None
    tid, off = fs.truths[k]
    return Row(
        set=fs.name, clip=fs.clips[k].meta.get("clip", k), separator=sep, input=inp, preset=preset, query=query,
        score=top.score if top else 0, runner_up=ms[1].score if len(ms) > 1 else 0,
        correct=int(ok), strict=int(strict), track=int(track_ok),
        match_span_s=round(top.query_end_s - top.query_start_s, 2) if top else "",
        match_track=item_of.get(top.track_id, "") if top else "",
        match_offset_s=round(top.track_offset_s, 3) if top else "",
        truth_track=tid, truth_offset_s=off, time_s=round(dt, 5),
    )


def _identify_clips(fs: FixedSet, sep: str, ests: Sequence[np.ndarray | None], preset: str, label: str,
                    inputs: Sequence[str], lib: Library, mixes: MixLandmarks, repeat: RepeatCheck
                    ) -> dict[str, list[Row]]:
    """Rows of every clip of ``fs`` for one preset and query; ``ests`` at the preset's rate (None: the mix)."""
    pipes = {i: lib.pipelines[(preset, label, i)] for i in inputs}
    first = pipes[inputs[0]]
    decide = is_condition(fs.role)  # the decision identify makes (runner_up 0, score as decided)
    out: dict[str, list[Row]] = {i: [] for i in inputs}
    for k, est in enumerate(ests):
        stems = {"mix": mixes.mix(k, first.sample_rate)} | ({} if est is None else {"music": est})
        known = {} if decide else {"mix": mixes.get(k, preset, label, first)}  # shared: not timed per separator
        t_est = time.perf_counter()
        if est is not None and not decide:
            known["music"] = first.stem_landmarks(est)
        t_est = time.perf_counter() - t_est
        for inp in inputs:
            t0 = time.perf_counter()
            if decide:
                ms = lib.decisions[(preset, label, inp)].identify_stems(stems, top=1)
            else:
                ms = pipes[inp].candidates(pipes[inp].landmarks(stems, known), top=2, min_aligned=1)
            dt = time.perf_counter() - t0 + t_est
            out[inp].append(_row(fs, k, sep, inp, preset, label, ms, lib.item_of[preset], repeat, dt))
    return out


def identify_set(fs: FixedSet, sep: Separated, lib: Library, queries: Sequence[QuerySpec], fusion: bool,
                 mixes: MixLandmarks, repeat: RepeatCheck, cache_base: Path | None = None) -> list[Row]:
    """Stage 2: one :class:`Row` per clip x input x preset x query (in that nesting, innermost first: clip),
    from the identification cache where it has them."""
    e = sep.entry
    inputs = ["sep"] + (["fusion"] if fusion and e.separator is not None else [])
    rows: list[Row] = []
    for p, store in lib.stores.items():
        psr = store.preset.sample_rate
        ests: list[np.ndarray | None] | None = None  # resampled once per preset, at the first query not cached
        for q in queries:
            icache = _IdCache(cache_base, "none" if e.separator is None else e.key, fs.key, store.path.name,
                              q.label)
            by_input = icache.get(inputs, len(fs.clips))
            if by_input is None:
                if ests is None:
                    ests = [None] * len(sep.music) if e.separator is None else [_at_rate(x, psr) for x in sep.music]
                by_input = _identify_clips(fs, e.name, ests, p, q.label, inputs, lib, mixes, repeat)
                icache.put(by_input)
            rows += [r if r.separator == e.name else _renamed(r, e.name) for i in inputs for r in by_input[i]]
    return rows


def _renamed(r: Row, separator: str) -> Row:
    """A cached row under this run's name of its separator (the cache is keyed by weights, not by name)."""
    return Row(**{**asdict(r), "separator": separator})


# --------------------------------------------------------------------------------------------------
# stage 3: score


@dataclass
class Score:
    """One configuration (separator x input x preset x query) on one set: the report's ``identification`` entry
    (``by_threshold``: correct/strict/track/matched counts at every :class:`Rules` key)."""

    separator: str
    input: str
    preset: str
    query: str
    set: str
    role: str
    snr: float
    clips: int
    rate: float  #: correct / clips at the default threshold (NaN for negatives)
    false_rate: float  #: matched (negatives) or matched but not correct (positives) / clips
    by_threshold: dict[str, dict[str, int]]
    query_s_mean: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _score_config(rows: Sequence[Row], fs: FixedSet, rules: Rules) -> Score:
    r0 = rows[0]
    scores = np.array([int(r.score) for r in rows])
    second = np.array([int(r.runner_up) for r in rows])
    correct, strict, track = (np.array([bool(getattr(r, a)) for r in rows]) for a in ("correct", "strict", "track"))
    by_t = {}
    for t, ratio, key in rules.keys:
        ok = (scores >= t) & (scores >= ratio * second)
        by_t[key] = {"correct": int(np.sum(correct & ok)), "strict": int(np.sum(strict & ok)),
                     "track": int(np.sum(track & ok)), "matched": int(np.sum(ok))}
    d, n = by_t[str(rules.default)], len(rows)
    return Score(
        r0.separator, r0.input, r0.preset, r0.query, fs.name, fs.role, fs.snr, n,
        rate=d["correct"] / n if not fs.negative else math.nan,
        false_rate=d["matched"] / n if fs.negative else (d["matched"] - d["correct"]) / n,
        by_threshold=by_t, query_s_mean=float(np.mean([float(r.time_s) for r in rows])),
    )


def score(rows: Sequence[Row], fs: FixedSet, rules: Rules) -> list[Score]:
    """Stage 3: a :class:`Score` per configuration among ``rows`` (all from set ``fs``), in order of appearance."""
    by: dict[tuple[str, str, str, str], list[Row]] = {}
    for r in rows:
        by.setdefault((r.separator, r.input, r.preset, r.query), []).append(r)
    return [_score_config(rs, fs, rules) for rs in by.values()]


# --------------------------------------------------------------------------------------------------
# stage 4: cost


def cost(sep_totals: dict[str, tuple[float, float]], threads: int, lib: Library, queries: Sequence[QuerySpec],
         timing_clips: Sequence[np.ndarray]) -> dict[str, dict]:
    """Stage 4: separation speed (``sep_totals``: separator -> (seconds, audio seconds)), identification time of
    the unprocessed ``timing_clips`` (analysis + lookup + vote) per preset and query option, index size."""
    out: dict[str, dict] = {"separation": {}, "identification": {}, "index": {}}
    for name, (wall, audio) in sep_totals.items():
        if wall > 0:
            out["separation"][name] = {"audio_s": round(audio, 2), "wall_s": round(wall, 2),
                                       "x_realtime": round(audio / wall, 2), "threads": threads}
    if timing_clips:
        hours = sum(x.size for x in timing_clips) / EVAL_SR / 3600
        for p in lib.stores:
            for q in queries:
                pipe = lib.pipelines[(p, q.label, "sep")]
                t0 = time.perf_counter()
                for x in timing_clips:
                    pipe.candidates(pipe.landmarks(pipe.stems(x, EVAL_SR)), top=1)
                t = time.perf_counter() - t0
                out["identification"].setdefault(p, {})[q.label] = {
                    "query_hours": round(hours, 4), "wall_s": round(t, 3), "s_per_hour_of_queries": round(t / hours, 2),
                }
    for p, info in lib.info.items():
        tracks = max(1, int(info["tracks"]))
        out["index"][p] = {
            "tracks": info["tracks"], "hours": info["hours"], "bytes": info["bytes"],
            "mb_per_1000_tracks": round(info["bytes"] / tracks * 1000 / 1e6, 2),
            "mb_at_paper_scale_9118_tracks": round(info["bytes"] / tracks * 9118 / 1e6, 1),
            "fingerprint_x_realtime_one_core": info.get("fingerprint_x_realtime_one_core"),
        }
    return out


# --------------------------------------------------------------------------------------------------
# the run


@dataclass
class _Tally:
    """What a run collects set by set."""

    bss: list[dict] = field(default_factory=list)
    identification: list[dict] = field(default_factory=list)
    clip_rows: list[dict] = field(default_factory=list)
    skipped_sets: dict[str, str] = field(default_factory=dict)
    sep_totals: dict[str, tuple[float, float]] = field(default_factory=dict)
    timing_clips: list[np.ndarray] | None = None


def _evaluate_set(fs: FixedSet, settings: EvalSettings, separators: Sequence[SeparatorEntry], lib: Library,
                  queries: Sequence[QuerySpec], rules: Rules, cache_base: Path | None, tally: _Tally,
                  progress: Callable[..., Any] | None) -> None:
    """Stages 1-3 for every separator on one set, into ``tally``."""
    repeat = RepeatCheck(Path(settings.root), fs.clip_s)
    mixes = MixLandmarks(fs)
    for e in separators:
        sep = separate_set(fs, e, settings.bss_clips, cache_base, progress)
        if e.separator is not None:
            wall, audio = tally.sep_totals.get(e.name, (0.0, 0.0))
            tally.sep_totals[e.name] = (wall + sep.sep_s, audio + sep.audio_s)
        if fs.role in ("mixture", "clean"):
            tally.bss.append(separation_row(fs, sep))
        rows = identify_set(fs, sep, lib, queries, settings.fusion, mixes, repeat, cache_base)
        tally.identification += [s.to_dict() for s in score(rows, fs, rules)]
        tally.clip_rows += [asdict(r) for r in rows if r.query == queries[0].label]
    if tally.timing_clips is None and fs.role == "mixture":
        tally.timing_clips = [c.mix for c in fs.clips[:TIMING_CLIPS]]


def _run_sets(settings: EvalSettings, separators: Sequence[SeparatorEntry], lib: Library,
              queries: Sequence[QuerySpec], rules: Rules, say: Callable[[str], None],
              progress: Callable[..., Any] | None) -> _Tally:
    root = Path(settings.root)
    cache_base = root / "eval_cache" if settings.cache else None
    tally = _Tally(sep_totals={e.name: (0.0, 0.0) for e in separators if e.separator is not None})
    for name in settings.sets:
        set_role(name)  # a name this evaluation does not know is an error, a set not built yet is skipped
        try:
            fs = load_set(root, name, settings.clips)
        except BgmidError as exc:
            say(f"skipping set {name}: {exc}")
            tally.skipped_sets[name] = str(exc)
            continue
        if not fs.clips:
            continue
        say(f"set {name}: {len(fs.clips)} clips of {fs.clip_s:.1f} s ({fs.role})")
        _evaluate_set(fs, settings, separators, lib, queries, rules, cache_base, tally, progress)
    return tally


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
    from bgmid.data.corpus import default_root, manifest_sha256
    from bgmid.separation.registry import torch_threads

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
    rules = Rules.of(settings)
    report: dict[str, Any] = {
        "settings": settings.to_dict(), "manifest_sha256": manifest_sha256(root), "default_threshold": rules.default,
        "thresholds": rules.thresholds, "rules": [k for _, _, k in rules.keys],
        "separators": {e.name: {"weights": e.weights, "sha256": e.sha256, **e.info} for e in separators},
        "skipped_separators": skipped,
    }
    with torch_threads(max(1, int(settings.threads))):
        lib = open_library(root, settings.presets, queries, settings.jobs, log)
        try:
            tally = _run_sets(settings, separators, lib, queries, rules, say, progress)
            costs = cost(tally.sep_totals, settings.threads, lib, queries, tally.timing_clips or [])
        finally:
            lib.close()
    report.update(index=lib.info, bss=tally.bss, identification=tally.identification, cost=costs)
    if tally.skipped_sets:
        report["skipped_sets"] = tally.skipped_sets
    report["clip_rows"] = tally.clip_rows
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
