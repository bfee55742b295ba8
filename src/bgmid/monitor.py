"""Broadcast monitoring: a programme of any length in, the music cues it contains out.

The query side (analysis, postings lookup with the index's stop-word policy, offset scoring) is
:mod:`bgmid.match`'s, the same as for a single query; this module adds the streaming, the window bookkeeping and
the segment logic. Pipeline (one pass, bounded memory):

1. **Blocks.** The programme is decoded and streamed in blocks of ``block_s`` seconds plus ``context_s`` on each
   side (:func:`bgmid.audio.blocks_of`). Each block goes through the query pipeline that ``bgmid identify``
   uses (:meth:`bgmid.pipeline.QueryPipeline.block_landmarks`: optional separation into music and speech
   estimates under the separator's thread policy, then the raw mix and the separated music analysed
   together, their landmarks pooled on one time line: true votes add up, chance votes do not); only the
   landmarks anchored in the block's own core are kept (``Monitor._owned``), so no landmark is counted twice
   and none is cut by a block edge. Surround audio with the dialogue in its centre channel adds a second,
   dialogue-poor signal (the other channels, :func:`bgmid.audio.surround_pieces`) in the same blocks, whose
   landmarks are pooled with the mix's (``Monitor.run(surround=...)``).
   Every landmark is looked up once, when its block is processed (:func:`bgmid.match.lookup`), and the
   per-second levels of the block's own audio are accumulated (``_Levels``).
2. **Windows.** ``_WindowVoter`` keeps the postings in a rolling buffer and scores sliding windows
   (``window_s`` long every ``hop_s``) with the postings whose query time falls inside them, with
   :func:`bgmid.match.score_offsets`, the scorer of a single query's :func:`~bgmid.match.vote`. A window keeps
   its ``top`` tracks that clear ``weak_score`` aligned landmarks (several per window: cross-fades) as
   :class:`WindowHit` records, each with the ids (:func:`landmark_id`) and times of its aligned landmarks.
3. **Segments.** :func:`merge_segments` links window hits of the same track whose offsets
   (track time - programme time) agree within ``offset_tol_frames`` and whose aligned landmarks are no more than
   ``max_gap_s`` apart: a constant offset means the track kept running, so a few seconds masked by loud speech
   do not split a cue. A segment becomes a cue only with real evidence (at least one window at the calibrated
   match threshold, ``min_windows`` windows, ``min_cue_score`` distinct aligned landmarks, ``min_cue_s``
   seconds): isolated weak hits, which chance produces in speech, are dropped. Boundaries are the first
   aligned landmark's anchor and the last aligned landmark's target peak, not window edges, unless that
   landmark stands apart from the others more than their rate explains (a chance alignment: :func:`hit_span`).
   Accepted segments at the same offset up to ``link_gap_s`` apart are one cue (:func:`link_same_offset`): the
   playback went on under speech that masked it. Edges are padded (``edge_pad_s``) and then moved out to where
   the music's floor in the mix drops (:func:`refine_edges`, :func:`floor_edge`): fades and stretches masked by
   dialogue have too few landmarks for a codec-independent edge; the music in the dialogue's gaps has.
4. **Loops.** Segments of the same track with different offsets that touch (within ``loop_gap_s``) or overlap
   are one continuous use of the track whose playback jumped: looped game/library music, an edit that repeats
   a section, or a track whose own sections repeat (then the same audio matches two offsets at once). They are
   merged into one cue whose ``parts`` keep each offset run, because a cue sheet reports one use with its total
   duration. The same track played again after something else (a gap longer than ``loop_gap_s``) is a new cue.
5. **Usage.** Each cue is labelled ``featured`` (music dominant: BV/VV/VI-style) or ``background`` (BI: under
   speech) from an estimate of its music-to-speech ratio (``msr_db``): the separator's two outputs, or without
   one the music that still sounds in the dialogue's gaps (:func:`floor_msr_db`), see :func:`estimate_usage`;
   per part where a cue has a music-only passage (:func:`usage_parts`).

The functions that turn hits into cues are pure (lists in, lists out) so they are tested on constructed
vote sequences; :class:`Monitor` does the streaming around them.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from bgmid.alterations import NONE, Alteration, estimate_programme, undo_pieces
from bgmid.audio import OwnedBlock, owned_blocks, resample
from bgmid.fingerprint.landmarks import Landmarks, hash_dt
from bgmid.fingerprint.presets import Preset, QueryOptions
from bgmid.index.base import Store
from bgmid.match import Postings, confidence, lookup, near_counts, pool_landmarks, score_offsets
from bgmid.pipeline import QueryPipeline
from bgmid.separation.registry import Separator

__all__ = [
    "Cue",
    "CuePart",
    "Monitor",
    "MonitorConfig",
    "MonitorResult",
    "Segment",
    "WindowHit",
    "cue_confidence",
    "cue_features",
    "estimate_usage",
    "floor_msr_db",
    "floor_edge",
    "hit_span",
    "refine_edges",
    "usage_parts",
    "link_same_offset",
    "merge_loops",
    "merge_segments",
    "segments_to_cues",
    "suppress_shadows",
    "supporting",
    "window_votes",
]

#: Usage threshold: a cue whose music-to-speech ratio is at least this (dB) is ``featured``, else
#: ``background``. 0 dB: the music is at least as loud as the dialogue over the cue (or there is none).
FEATURED_MSR_DB = 0.0


@dataclass(frozen=True)
class MonitorConfig:
    """Windowing, evidence and merging parameters; the defaults are tuned on the generated programmes."""

    window_s: float = 10.0  #: sliding window length; the paper's 12 s queries identify far better than 3-6 s
    hop_s: float = 2.0  #: window hop; sets how finely a cue's evidence is sampled in time
    block_s: float = 60.0  #: audio decoded, separated and fingerprinted at once (memory ~ block)
    context_s: float = 3.0  #: extra audio each side of a block (separator and peak/pair context)
    top: int = 5  #: tracks kept per window (>= 2 so both tracks of a cross-fade survive)
    weak_score: int = 5  #: aligned landmarks for a window hit to be kept as evidence for a segment
    #: a cue needs one window this strong, and this many distinct aligned landmarks in all. Measured on the
    #: benchmark (179-track index, p1): chance alignments reach 13 in 20 min of dialogue and 16 during other,
    #: unindexed-offset music; the quietest real cues found (-18 to -24 dB under dialogue) have 33 and more.
    strong_score: int = 15
    min_cue_score: int = 20
    min_windows: int = 2  #: window hits over a whole cue (overlapping windows: any real >= 5 s cue has >= 3)
    offset_tol_frames: int = 2  #: offsets this close (STFT frames) are the same playback
    max_gap_s: float = 10.0  #: bridge gaps up to this long between hits of the same track and offset
    loop_gap_s: float = 8.0  #: same track, different offset, this close: one cue (loop / repeat)
    #: accepted segments of one track at the same offset this far apart are one cue that kept playing under
    #: loud speech: a constant offset after a pause is the same playback (an MP2 copy of a programme split a
    #: -16 dB cue at a 13.6 s gap its WAV bridged with weak windows); two uses of a track never share an offset
    link_gap_s: float = 30.0
    #: a window hit's first (last) aligned landmark is a chance alignment, not the boundary, when its gap to
    #: the next is this improbable at the landmark rate of the ``span_rate_s`` next to it (see :func:`hit_span`)
    span_outlier_p: float = 0.01
    span_rate_s: float = 2.0
    min_cue_s: float = 2.0  #: shorter detections are dropped (landmark spans are shorter than the audible cue)
    #: cues are widened by this much at each end: the first aligned landmark comes after the music became
    #: audible (a fade-in hides the first notes) and the last one before it stopped; on the benchmark the
    #: landmark span starts 0.9 s late and ends 0.5 s early (medians), and 0.5 s halves the median error
    edge_pad_s: float = 0.5
    #: a cue's edge is moved further out, by at most this much (s) past its padded landmark edge, to where the
    #: music's floor in the mix (:func:`floor_edge`) drops: fade-ins, fade-outs and the ends of a cue masked by
    #: dialogue have too few landmarks to place an edge (one landmark more or less in an MP2 copy moved an
    #: out point 3.4 s), the music's level in the dialogue's gaps does not depend on the codec. 0: off
    edge_extend_s: float = 8.0
    shadow_ratio: float = 2.0  #: drop a cue inside another track's cue that has this many times its evidence there
    shadow_overlap: float = 0.5  #: ... when at least this fraction of the weaker cue lies inside the stronger
    shared_fraction: float = 0.15  #: ... or when this share of its aligned landmarks also align with the stronger
    #: torch intra-op threads while separating. One thread is by far the fastest when the cores are shared
    #: (U-Net lite on 2 busy cores: 45x real time with 1 thread, 2.7x with 2: threads spin waiting for each
    #: other); raise it on an idle machine with many cores. 0 leaves torch's setting alone.
    separator_threads: int = 1
    #: decode, separate and fingerprint the next block in a worker thread while this one is matched (torch and
    #: numpy release the GIL). Off by default: with no idle core it was slower (U-Net lite on 2 busy cores:
    #: 19-20x instead of 21-23x real time); try it on a machine with cores to spare
    prefetch: bool = False


@dataclass
class WindowHit:
    """One track's best offset in one window (a vote result with its aligned landmarks)."""

    start_s: float  #: window start in the programme
    end_s: float  #: window end
    track_id: int
    offset: int  #: frames: track frame - programme frame
    score: int  #: distinct query landmarks aligned on ``offset`` (+-1 frame)
    first_s: float  #: programme time of the first aligned landmark's anchor
    last_s: float  #: programme time where the last aligned landmark ends (its target peak's frame end)
    aligned: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  #: aligned landmark ids


@dataclass
class Segment:
    """Window hits of one track at one offset, linked through time."""

    track_id: int
    offset: int  #: frames (of the strongest hit)
    start_s: float
    end_s: float
    hits: list[WindowHit]
    aligned: np.ndarray  #: distinct aligned landmark ids (:func:`landmark_id`)

    @property
    def score(self) -> int:
        return int(self.aligned.size)

    @property
    def max_score(self) -> int:
        return max(h.score for h in self.hits)


@dataclass
class CuePart:
    """One offset run inside a cue (a cue has several when the music loops or jumps)."""

    programme_start_s: float
    programme_end_s: float
    track_start_s: float
    track_end_s: float
    #: other track positions (at ``programme_start_s``) where the same programme audio also aligns: a track
    #: whose own audio repeats (looped game/library music) matches it at each; the cue reports the strongest
    also_track_start_s: list[float] = field(default_factory=list)


def _also_at(parts: list[CuePart], echoes: Sequence[Segment], frame_s: float) -> None:
    """Record on each part the track positions of the echo runs (same track, other offset, adding no time of
    their own: :func:`_main_runs`) that lie mostly inside it."""
    for p in parts:
        pos = set()
        for e in echoes:
            ov = min(p.programme_end_s, e.end_s) - max(p.programme_start_s, e.start_s)
            same = abs(e.offset * frame_s - (p.track_start_s - p.programme_start_s)) <= 1.0
            if ov >= 0.5 * (e.end_s - e.start_s) and not same:
                pos.add(round(p.programme_start_s + e.offset * frame_s, 3))
        p.also_track_start_s = sorted(pos)


@dataclass
class Cue:
    """A detected cue: one use of one track in a programme, the unit of a cue sheet (written by
    :mod:`bgmid.cuesheet`; a ground-truth cue is :class:`bgmid.cuesheet.TruthCue`)."""

    track_id: int
    programme_start_s: float
    programme_end_s: float
    track_start_s: float  #: track time at ``programme_start_s``
    track_end_s: float  #: track time at ``programme_end_s`` (of the last part when the music looped)
    score: int  #: distinct aligned landmarks over the cue
    confidence: float  #: calibrated probability that the track sounds there (:func:`cue_confidence`)
    parts: list[CuePart] = field(default_factory=list)
    n_windows: int = 0
    max_window_score: int = 0  #: aligned landmarks of the cue's strongest window
    #: ``(start_s, end_s, usage)`` stretches (a featured passage inside a background cue), see :func:`usage_parts`
    usage_parts: list[tuple[float, float, str]] = field(default_factory=list)
    msr_db: float | None = None  #: estimated music-to-speech ratio over the cue (dB); None: music alone
    usage: str = "background"  #: "background" (BI-style) or "featured" (music dominant)
    seq: int = 0  #: 1-based position in the programme's cue sheet
    title: str = ""
    path: str = ""
    extra: dict = field(default_factory=dict)  #: index metadata (album, composer, ...)
    #: how the programme airs the track (the programme's alteration, :mod:`bgmid.alterations`); the track
    #: times above are in the track's own time line
    speed: float = 1.0
    tempo: float = 1.0
    pitch_semitones: float = 0.0
    aligned: np.ndarray | None = field(default=None, repr=False)  #: aligned landmark ids (dropped after merging)

    @property
    def duration_s(self) -> float:
        return self.programme_end_s - self.programme_start_s

    @property
    def loops(self) -> int:
        """Offset jumps inside the cue (0: played straight through)."""
        return max(0, len(self.parts) - 1)


@dataclass
class MonitorResult:
    """Everything one programme gave: cues plus the per-second level curves the plot and usage need."""

    programme: str
    duration_s: float
    cues: list[Cue]
    level_db: np.ndarray  #: mix level per second (dBFS)
    music_db: np.ndarray | None = None  #: separated music level per second (dBFS), with a separator
    speech_db: np.ndarray | None = None  #: separated speech level per second (dBFS), with a separator
    n_windows: int = 0
    elapsed_s: float = 0.0
    separator: str = "none"
    hits: list[WindowHit] = field(default_factory=list)  #: every window hit (aligned ids dropped), for inspection
    alteration: dict = field(default_factory=lambda: {"speed": 1.0, "tempo": 1.0, "pitch_semitones": 0.0})
    alteration_evidence: list[dict] = field(default_factory=list)  #: matched excerpts the estimate came from

    @property
    def speed(self) -> float:
        """Times real time (programme seconds per wall-clock second)."""
        return self.duration_s / self.elapsed_s if self.elapsed_s > 0 else float("inf")


# -- pure functions: votes -> hits -> segments -> cues -------------------------------------------------

#: Per-cue confidence: a logistic map from the cue's evidence (:func:`cue_features`) to the probability that
#: its track really sounds there, fitted on the candidate cues (every segment, accepted or not) of generated
#: programmes against their truth: true cues and phantoms (chance alignments in speech, crowds and unindexed
#: music; shadows of a stronger track). Refit (prints this table) with
#: ``python benchmarks/calibrate_cues.py PROGRAMMES.wav`` (its docstring lists the programmes: 3 standard, 4
#: hard, tuning seeds; reliability table in ``benchmarks/results/cue_calibration.json``: all 39 accepted cues
#: true, predicted 0.80-1.00; the 1,013 candidates below 0.5 are 0.2 % true). L2 1 keeps a fit on 42 true cues
#: from claiming certainty.
CUE_CALIBRATION = {"w": (-12.358, 1.736, 2.007, -1.285),
                   "fitted_on": "1054 candidates (42 true) of 7 programmes"}


def cue_features(score: int, max_score: int, span: tuple[float, float],
                 stronger: Sequence[tuple[float, float]]) -> tuple[float, float, float]:
    """Evidence of one candidate cue: log of its distinct aligned landmarks, log of its best window's, and the
    share of its span that cues of other tracks with more evidence cover (a shadow lies inside one)."""
    a, b = span
    inside = _covered(a, b, list(stronger)) / (b - a) if b > a else 0.0
    return math.log(max(score, 1)), math.log(max(max_score, 1)), inside


def cue_confidence(features: tuple[float, float, float]) -> float:
    """:data:`CUE_CALIBRATION`'s probability for :func:`cue_features`."""
    w = CUE_CALIBRATION["w"]
    z = w[0] + sum(wi * fi for wi, fi in zip(w[1:], features, strict=True))
    return 1.0 / (1.0 + math.exp(-z))

#: Landmark ids carry their programme frame in the high bits (``frame << ID_FRAME_SHIFT | serial``) so the time
#: of any aligned landmark can be recovered from a cue's id set (used by :func:`suppress_shadows`).
ID_FRAME_SHIFT = 24


def landmark_id(frame: np.ndarray, serial: np.ndarray) -> np.ndarray:
    """Unique landmark ids: the anchor frame and a serial unique within the frame's block."""
    serial = np.asarray(serial, np.int64) & ((1 << ID_FRAME_SHIFT) - 1)
    return (np.asarray(frame, np.int64) << ID_FRAME_SHIFT) | serial


def landmark_frames(ids: np.ndarray) -> np.ndarray:
    """Anchor frames of landmark ids made by :func:`landmark_id`."""
    return np.asarray(ids, np.int64) >> ID_FRAME_SHIFT



def window_votes(
    qt: np.ndarray,
    tids: np.ndarray,
    offs: np.ndarray,
    lids: np.ndarray,
    ends: np.ndarray,
    top: int,
    min_score: int,
    tolerance: int = 1,
) -> list[tuple[int, int, int, int, int, np.ndarray]]:
    """Per-track best offset from one window's postings: :func:`bgmid.match.score_offsets` as plain tuples.

    Inputs are parallel arrays over postings: query frame, track id, offset (frames), query landmark id and the
    frame where the landmark ends. Returns up to ``top`` tuples ``(track, offset, score, first_frame,
    last_end_frame, aligned_ids)`` with ``score >= min_score``, best first. The score counts distinct query
    landmarks within +-``tolerance`` frames of the best offset.
    """
    if qt.size == 0:
        return []
    v = score_offsets(Postings(lids, tids, qt, offs), top, tolerance, min_score, candidates=2 * max(top, 1),
                      ids=lids, ends=ends)
    return [(int(t), int(o), int(s), int(f0), int(f1), a)
            for t, o, s, f0, f1, a in zip(v.track_ids, v.offsets, v.scores, v.q_first, v.q_last, v.aligned or [],
                                          strict=True)]


def _trim_outlier(t: np.ndarray, rate_frames: int, p: float) -> int:
    """The last value of sorted frames ``t`` unless it is an outlier: its gap to the one before is one that the
    landmark rate just before (over ``rate_frames``) would leave with probability below ``p`` (Poisson:
    ``exp(-rate * gap)``); then the one before."""
    if t.size < 3:
        return int(t[-1])
    gap = float(t[-1] - t[-2])
    rate = float(np.count_nonzero(t[:-1] >= t[-2] - rate_frames)) / rate_frames
    return int(t[-2]) if gap > 0 and math.exp(-rate * gap) < p else int(t[-1])


def hit_span(aligned: np.ndarray, ids: np.ndarray, ends: np.ndarray, rate_frames: int, p: float) -> tuple[int, int]:
    """A window hit's evidence span in frames: the earliest anchor frame of its ``aligned`` landmark ids and
    the latest end frame (``ends`` parallel to the window's landmark ``ids``), except that an extreme landmark
    that stands apart from the others more than their rate explains (:func:`_trim_outlier`, probability
    ``p``) is a chance alignment (a peak of the next track in a cross-fade, a codec's noise: it moved an out
    point by 0.56 s between a WAV and an M4A of one programme) and the next one sets the boundary. Quiet music
    under speech has sparse landmarks, so its lone last landmark is kept."""
    anchors = np.sort(landmark_frames(aligned))
    u, first = np.unique(ids, return_index=True)
    e = np.sort(ends[first[np.isin(u, aligned, assume_unique=True)]])
    if anchors.size == 0:
        return 0, int(e[-1]) if e.size else 0
    a0 = -_trim_outlier(-anchors[::-1], rate_frames, p)
    return a0, (_trim_outlier(e, rate_frames, p) if e.size else a0)


def link_same_offset(segments: Sequence[Segment], config: MonitorConfig = MonitorConfig()) -> list[Segment]:
    """Join segments of one track whose offsets agree (``offset_tol_frames``) and that are at most
    ``link_gap_s`` apart: the same playback, with a stretch in between where speech masked the music too much
    for any window to reach ``weak_score`` (:func:`merge_segments` bridges only ``max_gap_s``)."""
    out: list[Segment] = []
    for s in sorted(segments, key=lambda s: (s.track_id, s.start_s)):
        prev = next((p for p in reversed(out) if p.track_id == s.track_id
                     and abs(p.offset - s.offset) <= config.offset_tol_frames
                     and s.start_s - p.end_s <= config.link_gap_s), None)
        if prev is not None:
            if s.max_score > prev.max_score:
                prev.offset = s.offset
            prev.hits = prev.hits + s.hits
            prev.end_s = max(prev.end_s, s.end_s)
            prev.aligned = np.union1d(prev.aligned, s.aligned)
        else:
            out.append(Segment(s.track_id, s.offset, s.start_s, s.end_s, list(s.hits), s.aligned))
    out.sort(key=lambda s: (s.start_s, s.track_id))
    return out


def merge_segments(hits: Iterable[WindowHit], config: MonitorConfig = MonitorConfig()) -> list[Segment]:
    """Link window hits into segments of one track at one (constant) offset.

    A hit joins the open segment of its track whose offset is within ``offset_tol_frames`` and whose aligned
    evidence ends no more than ``max_gap_s`` before the hit's first aligned landmark (windows overlap, so most
    hits overlap their segment); otherwise it opens a new segment. The same track at two offsets (played twice,
    or looping) therefore gives two segments. Segments are not yet filtered: see :func:`accept_segment`.
    """
    hits = sorted(hits, key=lambda h: (h.start_s, -h.score))
    open_: list[Segment] = []
    done: list[Segment] = []
    for h in hits:
        # close segments that can no longer be extended (keeps the scan short on long programmes)
        still = []
        for s in open_:
            (still if h.start_s - s.end_s <= config.max_gap_s + config.window_s else done).append(s)
        open_ = still
        best = None
        for s in open_:
            if s.track_id != h.track_id or abs(h.offset - s.offset) > config.offset_tol_frames:
                continue
            if h.first_s - s.end_s > config.max_gap_s:
                continue
            if best is None or abs(h.offset - s.offset) < abs(h.offset - best.offset):
                best = s
        if best is None:
            open_.append(Segment(h.track_id, h.offset, h.first_s, h.last_s, [h], np.unique(h.aligned)))
        else:
            if h.score > best.max_score:
                best.offset = h.offset
            best.hits.append(h)
            best.start_s = min(best.start_s, h.first_s)
            best.end_s = max(best.end_s, h.last_s)
            best.aligned = np.union1d(best.aligned, h.aligned)
    done.extend(open_)
    done.sort(key=lambda s: (s.start_s, s.track_id))
    return done


def accept_segment(seg: Segment, config: MonitorConfig = MonitorConfig(), n_windows_total: int | None = None) -> bool:
    """Whether a segment is real music rather than chance: enough windows, landmarks, strength and length.

    Chance alignments in speech or unindexed music give isolated hits a little above ``weak_score`` in one or
    two overlapping windows; a real cue gives a run of windows, one of them at the calibrated threshold.
    """
    min_windows = config.min_windows if n_windows_total is None else min(config.min_windows, n_windows_total)
    return (
        len(seg.hits) >= min_windows
        and seg.max_score >= config.strong_score
        and seg.score >= config.min_cue_score
        and seg.end_s - seg.start_s >= config.min_cue_s
    )


def supporting(segments: Sequence[Segment], accepted: Sequence[Segment], config: MonitorConfig = MonitorConfig(),
               n_windows_total: int | None = None) -> list[Segment]:
    """Segments short of :func:`accept_segment` only on the number of distinct aligned landmarks or on length
    that touch or overlap (within ``loop_gap_s``) an accepted segment of their track: a run of windows at the
    calibrated threshold (``strong_score``) next to a cue of the same track is more of that cue (its own start
    at another offset of a looping track, the other side of an edit), not a new claim that the track plays.
    Held to the full evidence bar, such a run was dropped at 19 distinct landmarks in a WAV and kept at 20 in
    its MP3, which moved the cue's in point by 4.8 s between the two; and the second side of an edit, 45
    landmarks within 1.7 s in an MP2 copy (5.1 s in its WAV), was dropped as shorter than ``min_cue_s``."""
    out = []
    for s in segments:
        if any(s is a for a in accepted):
            continue
        strong = replace(config, min_cue_score=config.strong_score, min_cue_s=0.0)
        if not accept_segment(s, strong, n_windows_total):
            continue
        if any(a.track_id == s.track_id and s.start_s <= a.end_s + config.loop_gap_s
               and a.start_s <= s.end_s + config.loop_gap_s for a in accepted):
            out.append(s)
    return out


def merge_loops(segments: Sequence[Segment], config: MonitorConfig = MonitorConfig()) -> list[list[Segment]]:
    """Group accepted segments of the same track that overlap or touch (within ``loop_gap_s``) into one cue.

    Returns groups (each one cue), in programme order. See the module docstring for why loops are one cue.
    """
    by_track: dict[int, list[Segment]] = {}
    for s in sorted(segments, key=lambda s: s.start_s):
        by_track.setdefault(s.track_id, []).append(s)
    groups: list[list[Segment]] = []
    for segs in by_track.values():
        cur = [segs[0]]
        end = segs[0].end_s
        for s in segs[1:]:
            if s.start_s <= end + config.loop_gap_s:
                cur.append(s)
                end = max(end, s.end_s)
            else:
                groups.append(cur)
                cur, end = [s], s.end_s
        groups.append(cur)
    groups.sort(key=lambda g: (min(s.start_s for s in g), g[0].track_id))
    return groups


def _covered(a: float, b: float, spans: Sequence[tuple[float, float]]) -> float:
    """Length of [a, b) covered by the union of ``spans``."""
    total, cur = 0.0, a
    for s0, s1 in sorted(spans):
        lo, hi = max(s0, cur), min(s1, b)
        if hi > lo:
            total += hi - lo
            cur = hi
    return total


def _main_runs(group: Sequence[Segment], min_new_s: float) -> list[Segment]:
    """The offset runs that really played, strongest first: a weaker run that adds less than ``min_new_s`` of
    programme time to the stronger ones is the same audio matching a repeated section of the track (a chorus,
    a loop inside the recording), not a jump of the playback. A run that explains time the others do not (the
    start of a cue in periodic music, the second pass of a loop) is kept."""
    kept: list[Segment] = []
    for s in sorted(group, key=lambda s: -s.score):
        new = (s.end_s - s.start_s) - _covered(s.start_s, s.end_s, [(k.start_s, k.end_s) for k in kept])
        if not kept or new >= min_new_s:
            kept.append(s)
    return sorted(kept, key=lambda s: s.start_s)


def _parts(group: Sequence[Segment], frame_s: float) -> list[CuePart]:
    """Offset runs of a cue in programme order; where two runs overlap (window smear at a jump) the later one
    starts where the earlier ends, so the parts tile the cue without double-counting programme time."""
    segs = sorted(group, key=lambda s: (s.start_s, -s.score))
    parts: list[CuePart] = []
    for s in segs:
        start = s.start_s if not parts else max(s.start_s, parts[-1].programme_end_s)
        if s.end_s <= start:
            continue
        off = s.offset * frame_s
        parts.append(CuePart(start, s.end_s, start + off, s.end_s + off))
    return parts


def suppress_shadows(cues: Sequence[Cue], frame_s: float, config: MonitorConfig = MonitorConfig()) -> list[Cue]:
    """Drop weaker cues that are echoes of a stronger cue of another track at the same time.

    Two cases, both a cue B lying mostly (``shadow_overlap``) inside a cue A of another track:

    * *shadow*: tracks of one soundtrack share samples, drum loops and instruments, so a cue of A also aligns a
      few landmarks with B at some offset. B is dropped when A has ``shadow_ratio`` times B's aligned landmarks
      within B's span;
    * *shared audio*: B contains A's audio (a medley, a remix, the same cue in two library tracks), so the
      same programme landmarks align with both. B is dropped when at least ``shared_fraction`` of its aligned
      landmarks are also A's, A having at least B's evidence: the audio is reported once, as the better match
      (cues are visited strongest first, so of two equal ones the first kept wins).

    Two tracks that really sound together keep both cues: their landmarks are different ones (under 3% shared
    measured), and a cross-fade overlaps only at the edges.
    """
    kept: list[tuple[Cue, np.ndarray | None]] = []
    for b in sorted(cues, key=lambda c: -c.score):  # strongest first: only a kept cue can suppress another
        echo = False
        for a, fa in kept:
            if a.track_id == b.track_id or fa is None or b.aligned is None:
                continue
            ov = min(a.programme_end_s, b.programme_end_s) - max(a.programme_start_s, b.programme_start_s)
            if ov < config.shadow_overlap * b.duration_s:
                continue
            f0, f1 = b.programme_start_s / frame_s, b.programme_end_s / frame_s
            n_a = int(np.searchsorted(fa, f1, "right") - np.searchsorted(fa, f0, "left"))
            if n_a >= config.shadow_ratio * b.score:
                echo = True
            elif a.aligned is not None:  # a has at least b's evidence overall (visiting order)
                shared = np.intersect1d(a.aligned, b.aligned, assume_unique=True).size
                echo = shared >= config.shared_fraction * b.score
            if echo:
                break
        if not echo:
            kept.append((b, None if b.aligned is None else np.sort(landmark_frames(b.aligned))))
    return sorted((c for c, _ in kept), key=lambda c: (c.programme_start_s, c.track_id))


def _widen(cue: Cue, pad: float) -> None:
    """Move a cue's in point ``pad`` earlier (not before 0 in the programme or in the track) and its out point
    ``pad`` later, parts and track positions with them (the programme end is clipped later, when the
    programme's length is known)."""
    lead = max(0.0, min(pad, cue.programme_start_s, cue.track_start_s))  # not before the track's own start
    cue.programme_start_s -= lead
    cue.track_start_s -= lead
    cue.programme_end_s += pad
    cue.track_end_s += pad
    if cue.parts:
        first, last = cue.parts[0], cue.parts[-1]
        first.programme_start_s -= lead
        first.track_start_s -= lead
        first.also_track_start_s = [v - lead for v in first.also_track_start_s]
        last.programme_end_s += pad
        last.track_end_s += pad


def segments_to_cues(
    segments: Sequence[Segment],
    frame_s: float,
    config: MonitorConfig = MonitorConfig(),
    n_windows_total: int | None = None,
) -> list[Cue]:
    """Filter segments (:func:`accept_segment`), merge loops (:func:`merge_loops`), drop shadows
    (:func:`suppress_shadows`) and build numbered cues."""
    accepted = [s for s in segments if accept_segment(s, config, n_windows_total)]
    good = link_same_offset(accepted + supporting(segments, accepted, config, n_windows_total), config)
    cues = []
    for g in merge_loops(good, config):
        main = _main_runs(g, config.min_cue_s + 1.0)
        parts = _parts(main, frame_s)
        _also_at(parts, [x for x in g if not any(x is m for m in main)], frame_s)
        aligned = np.unique(np.concatenate([s.aligned for s in g]))
        max_score = max(s.max_score for s in g)
        cues.append(
            Cue(
                track_id=g[0].track_id,
                programme_start_s=parts[0].programme_start_s,
                programme_end_s=max(p.programme_end_s for p in parts),
                track_start_s=parts[0].track_start_s,
                track_end_s=parts[-1].track_end_s,
                score=int(aligned.size),
                confidence=float(confidence(max_score)),  # replaced by the per-cue calibration below
                parts=parts,
                max_window_score=int(max_score),
                n_windows=sum(len(s.hits) for s in g),
                aligned=aligned,
            )
        )
    cues = suppress_shadows(cues, frame_s, config)
    for c in cues:
        stronger = [(o.programme_start_s, o.programme_end_s) for o in cues
                    if o.track_id != c.track_id and o.score > c.score]
        c.confidence = cue_confidence(cue_features(c.score, c.max_window_score, (c.programme_start_s,
                                                                                 c.programme_end_s), stronger))
    for c in cues:
        _widen(c, config.edge_pad_s)
    cues.sort(key=lambda c: (c.programme_start_s, c.track_id))
    for i, c in enumerate(cues, 1):
        c.seq = i
    return cues


#: Usage parts: a stretch of a cue whose usage differs from its neighbours' must last this long (s) ...
MIN_USAGE_PART_S = 8.0
#: ... judged on per-second evidence smoothed over this many seconds.
USAGE_SMOOTH_S = 7

#: Without a separator the music under the dialogue is read from the mix's power per short frame
#: (:func:`floor_msr_db`): frames per second (20 ms: shorter than the gaps between syllables) ...
FLOOR_FRAMES_PER_S = 50
#: ... the music's level is this percentile of the frame powers (the frames in the dialogue's gaps) ...
FLOOR_PERCENTILE = 10.0
#: ... read this many dB low, since the music has dips of its own below its mean. Chosen on the parts of the hard
#: programmes of seeds 7000-7002 (the threshold that labels most of them right); ``benchmarks/usage_floor.py``
#: measures what remains: median (estimate - true level) over the parts under dialogue -0.3 dB there (24 parts),
#: -1.7 dB on seeds 7200-7204 (40 parts, held out), so the correction holds to about 1.5 dB across music
FLOOR_BIAS_DB = 2.5
#: ... and frames this far below the stretch's mean power are not part of it: silence around a sting, where
#: neither music nor dialogue sounds, says nothing about their ratio.
FLOOR_SILENT_DB = -40.0


def floor_msr_db(frame_power: np.ndarray) -> float | None:
    """Music-to-speech ratio (dB) of a stretch of the mix from its power per 20 ms frame (any shape; flattened),
    without separation: speech stops between syllables, words and lines, music keeps sounding, so the low
    frames (``FLOOR_PERCENTILE``) carry the music alone and the mean carries both (minimum statistics, the way
    a noise floor is tracked under speech). ``10·log10(floor / (mean - floor))`` plus ``FLOOR_BIAS_DB``. Music
    alone reads as its own dynamics (-5 to +5 dB), music under continuous dialogue as its level below the
    dialogue. None: under half a second of sounding frames."""
    p = np.asarray(frame_power, np.float64).ravel()
    if p.size == 0:
        return None
    p = p[p > p.mean() * 10 ** (FLOOR_SILENT_DB / 10)]
    if p.size < FLOOR_FRAMES_PER_S // 2:
        return None
    floor, mean = float(np.percentile(p, FLOOR_PERCENTILE)), float(p.mean())
    return 10 * math.log10(max(floor, 1e-15) / max(mean - floor, 1e-3 * floor, 1e-15)) + FLOOR_BIAS_DB


#: Edges from the music's floor (:func:`floor_edge`): the floor is read over this long (s) inside the edge ...
EDGE_REF_S = 3.0
#: ... a 20 ms frame this far (dB) under it holds no music ...
EDGE_DROP_DB = 6.0
#: ... and the music has stopped where this many such frames fall within ``EDGE_RUN_S`` (a rest in the music
#: leaves one or two; the dialogue's gaps after the music has stopped, several)
EDGE_LOW_FRAMES = 3
EDGE_RUN_S = 0.5
#: ... and only where the music stopped: the mix's floor over the ``EDGE_STOP_S`` beyond that frame lies this far
#: (dB) under the music's, the dialogue's gaps falling silent, its frames under ``EDGE_SILENT_POWER`` (digital
#: silence, a pause in the recording) left out. A steady sound (a crowd, ambience) keeps the floor up as the music
#: does and dips now and then, and dialogue recorded with its own room noise can have a floor at the level of a
#: quiet cue's: on the hard programmes (seeds 7000-7002, 7200-7204, no separator) and the standard ones, moves of
#: 2-6 s into crowds or into such dialogue stopped at dips or pauses
EDGE_STOP_S = 3.0
EDGE_STOP_DB = 10.0
EDGE_SILENT_POWER = 1e-9


def floor_edge(frame_power: np.ndarray, edge_s: float, direction: int, max_s: float) -> float | None:
    """Where the music of a cue stops, from the mix's power per 20 ms frame (``frame_power``, any shape, flat
    ``FLOOR_FRAMES_PER_S`` per second from programme time 0), scanning outward from ``edge_s`` (s): backward
    from an in point (``direction`` -1) or forward from an out point (+1), by at most ``max_s`` (s).

    The music's floor is the ``FLOOR_PERCENTILE`` of the frames over ``EDGE_REF_S`` inside the edge (with
    dialogue over it, its low frames carry the music alone, as for :func:`floor_msr_db`); the music has
    stopped at the first frame, outward, of ``EDGE_LOW_FRAMES`` frames ``EDGE_DROP_DB`` under that floor
    within ``EDGE_RUN_S``: the dialogue's gaps fall silent there. Returns the time of that frame's inner side
    (s; 0 when the scan reaches the programme's start with the floor up). None: no drop within ``max_s``
    (more music, a crowd, the next cue keep the floor up: the edge stays where the evidence put it), or a drop
    the floor beyond does not confirm (``EDGE_STOP_DB``). Depends on the frames around the edge only, so live
    monitoring (:mod:`bgmid.live`), which knows fewer neighbouring cues, moves edges as the file run does."""
    p = np.asarray(frame_power, np.float64).ravel()
    fps = FLOOR_FRAMES_PER_S
    e = min(max(int(round(edge_s * fps)), 0), p.size)
    n_ref, m, w = int(EDGE_REF_S * fps), int(max_s * fps), max(1, int(EDGE_RUN_S * fps))
    ref = p[e : e + n_ref] if direction < 0 else p[max(0, e - n_ref) : e]
    if ref.size < fps // 2 or m <= 0:
        return None
    floor = float(np.percentile(ref, FLOOR_PERCENTILE))
    if floor <= 0:
        return None
    seg = p[max(0, e - m) : e][::-1] if direction < 0 else p[e : e + m]  # outward order
    low = seg < floor * 10 ** (-EDGE_DROP_DB / 10)
    runs = np.convolve(low, np.ones(w), "full")[w - 1 : w - 1 + low.size]  # low frames in [i, i + w)
    hit = np.nonzero(low & (runs >= EDGE_LOW_FRAMES))[0]
    if hit.size:
        i = int(hit[0])
        at, k = (e - i if direction < 0 else e + i), int(EDGE_STOP_S * fps)
        beyond = p[max(0, at - k) : at] if direction < 0 else p[at : at + k]
        beyond = beyond[beyond >= EDGE_SILENT_POWER]
        if beyond.size < fps // 2 or float(np.percentile(beyond, FLOOR_PERCENTILE)) < floor * 10 ** (
                -EDGE_STOP_DB / 10):
            return at / fps
        return None
    if direction < 0 and e - m <= 0:
        return 0.0
    return None


def refine_edges(cues: Sequence[Cue], frames: np.ndarray | None, config: MonitorConfig = MonitorConfig()) -> None:
    """Move cue edges out to where the music's floor drops (:func:`floor_edge`, at most ``edge_extend_s``
    beyond the padded landmark edge), never into another cue: an edge that another cue overlaps (a
    cross-fade) stays. Parts and track positions move with the edges (not before the track's own start)."""
    if frames is None or config.edge_extend_s <= 0:
        return
    spans = [(c.programme_start_s, c.programme_end_s) for c in cues]  # the neighbours' edges before any moved
    for k, c in enumerate(cues):
        others = spans[:k] + spans[k + 1 :]
        a, b = spans[k]
        if not any(o0 < a < o1 for o0, o1 in others):
            lim = max([o1 for _, o1 in others if o1 <= a], default=0.0)
            got = floor_edge(frames, a + config.edge_pad_s, -1, config.edge_pad_s + config.edge_extend_s)
            if got is not None and got < a:
                lead = min(a - max(got, lim), c.track_start_s)
                c.programme_start_s -= lead
                c.track_start_s -= lead
                if c.parts:
                    c.parts[0].programme_start_s -= lead
                    c.parts[0].track_start_s -= lead
                    c.parts[0].also_track_start_s = [v - lead for v in c.parts[0].also_track_start_s]
        if not any(o0 < b < o1 for o0, o1 in others):
            lim = min([o0 for o0, _ in others if o0 >= b], default=math.inf)
            got = floor_edge(frames, b - config.edge_pad_s, 1, config.edge_pad_s + config.edge_extend_s)
            if got is not None and got > b:
                tail = min(got, lim) - b
                c.programme_end_s += tail
                c.track_end_s += tail
                if c.parts:
                    c.parts[-1].programme_end_s += tail
                    c.parts[-1].track_end_s += tail


def _frame_span(frames: np.ndarray, a_s: float, b_s: float) -> np.ndarray:
    """The frame powers of programme time ``[a_s, b_s)`` from the ``(seconds, FLOOR_FRAMES_PER_S)`` matrix."""
    flat = frames.reshape(-1)
    i0 = max(0, int(math.floor(a_s * FLOOR_FRAMES_PER_S)))
    return flat[i0 : max(i0, min(flat.size, int(math.ceil(b_s * FLOOR_FRAMES_PER_S))))]


def _smooth(x: np.ndarray, n: int) -> np.ndarray:
    """Centred moving mean over ``n`` samples (shorter at the ends)."""
    if x.size == 0 or n <= 1:
        return x.astype(np.float64)
    k = np.ones(n)
    return np.convolve(x, k, "same") / np.convolve(np.ones(x.size), k, "same")


def usage_parts(
    cue: Cue,
    music_db: np.ndarray | None,
    speech_db: np.ndarray | None,
    frames: np.ndarray | None,
) -> list[tuple[float, float, str]]:
    """``(start_s, end_s, usage)`` stretches of one cue: a cue under dialogue with a music-only passage inside is
    background, featured, background. Per second of the cue, over ``USAGE_SMOOTH_S`` around it, the
    music-to-speech ratio (featured at >= ``FEATURED_MSR_DB``): :func:`floor_msr_db` of the mix's frames and,
    with a separator, its two outputs' ratio, averaged in dB (see :func:`estimate_usage`). Stretches shorter
    than ``MIN_USAGE_PART_S`` join the one before; a cue with one stretch has the cue's own usage."""
    a, b = int(math.floor(cue.programme_start_s)), max(int(math.ceil(cue.programme_end_s)), 1)
    whole = [(cue.programme_start_s, cue.programme_end_s, cue.usage)]
    sizes = [c.shape[0] for c in (music_db, speech_db, frames) if c is not None]
    n = min([b, *sizes]) - a
    if n < 2 * MIN_USAGE_PART_S or (frames is None and (music_db is None or speech_db is None)):
        return whole
    est = []  # per-second estimates (dB) of each source there is
    if music_db is not None and speech_db is not None:
        pm = _smooth(10 ** (music_db[a : a + n].astype(np.float64) / 10), USAGE_SMOOTH_S)
        ps = _smooth(10 ** (speech_db[a : a + n].astype(np.float64) / 10), USAGE_SMOOTH_S)
        est.append(10 * np.log10((pm + 1e-12) / (ps + 1e-12)))
    if frames is not None:
        h = USAGE_SMOOTH_S / 2
        fl = [floor_msr_db(_frame_span(frames, max(cue.programme_start_s, a + i + 0.5 - h),
                                       min(cue.programme_end_s, a + i + 0.5 + h))) for i in range(n)]
        est.append(np.array([np.nan if e is None else e for e in fl]))
    with np.errstate(all="ignore"):
        m = np.nanmean(np.vstack(est), axis=0)
    feat = np.nan_to_num(m, nan=-np.inf) >= FEATURED_MSR_DB
    runs: list[list] = []  # [start second, end second, featured]
    for i, f in enumerate(feat):
        if runs and runs[-1][2] == f:
            runs[-1][1] = i + 1
        else:
            runs.append([i, i + 1, bool(f)])
    merged: list[list] = []
    for r in runs:
        if merged and (r[1] - r[0] < MIN_USAGE_PART_S or merged[-1][2] == r[2]):
            merged[-1][1] = r[1]
        elif not merged and r[1] - r[0] < MIN_USAGE_PART_S and len(runs) > 1:
            runs[1][0] = r[0]  # a short first stretch joins the next
        else:
            merged.append(list(r))
    if len(merged) <= 1:
        return whole
    out = [(max(cue.programme_start_s, a + r[0]), min(cue.programme_end_s, a + r[1]),
            "featured" if r[2] else "background") for r in merged]
    out[-1] = (out[-1][0], cue.programme_end_s, out[-1][2])
    return out


def estimate_usage(
    cues: Sequence[Cue],
    music_db: np.ndarray | None = None,
    speech_db: np.ndarray | None = None,
    frames: np.ndarray | None = None,
) -> None:
    """Set each cue's ``msr_db`` (music-to-speech ratio estimate) and ``usage`` (``featured``/``background``):
    ``featured`` when ``msr_db >= FEATURED_MSR_DB`` (music at least as loud as the dialogue, or alone).

    * :func:`floor_msr_db` of the mix's 20 ms frame powers over the cue (``frames``, from :class:`_Levels`):
      the music is what still sounds in the dialogue's gaps. It needs no reference level outside the cue (a
      former estimate from the cue's level rise over the programme's median level read music at -4 dB as
      +2 dB, and called music alone, which adds no level, background).
    * With a separator, also the separated music's power over the separated speech's power during the cue;
      the two estimates err differently (the separator leaks dialogue into music, the floor reads music's own
      dips), so their mean in dB is used: with U-Net fusion on the hard programmes of seeds 7200-7204 (held
      out) it labelled 88 % of the cues >= -10 dB right, the separator's ratio alone 81 %, the floor alone 85 %.

    Each cue also gets ``usage_parts`` (:func:`usage_parts`). No evidence (neither given): background.
    """
    for c in cues:
        a, b = int(math.floor(c.programme_start_s)), max(int(math.ceil(c.programme_end_s)), 1)
        est = []
        if music_db is not None and speech_db is not None and b > a:
            pm = float(np.sum(10 ** (music_db[a:b].astype(np.float64) / 10)))
            ps = float(np.sum(10 ** (speech_db[a:b].astype(np.float64) / 10)))
            est.append(10 * math.log10((pm + 1e-12) / (ps + 1e-12)))
        if frames is not None and (e := floor_msr_db(_frame_span(frames, c.programme_start_s, c.programme_end_s))) \
                is not None:
            est.append(e)
        c.msr_db = float(np.mean(est)) if est else None
        c.usage = "featured" if c.msr_db is not None and c.msr_db >= FEATURED_MSR_DB else "background"
        c.usage_parts = usage_parts(c, music_db, speech_db, frames)


# -- streaming ------------------------------------------------------------------------------------------


def _frame_step(preset: Preset, sr: int) -> int:
    """Smallest number of preset frames that is a whole number of samples at ``sr`` (exact block starts)."""
    num = preset.hop * sr
    return preset.sample_rate // math.gcd(num, preset.sample_rate)


def _db(p: np.ndarray) -> np.ndarray:
    return (10 * np.log10(np.maximum(p, 1e-12))).astype(np.float32)


class _WindowVoter:
    """Sliding windows over a programme's postings: a rolling buffer, sorted by programme frame, from which every
    window (``window_s`` every ``hop_s``) is scored (:func:`bgmid.match.score_offsets`) once all its postings are
    in; postings before the next window's start are dropped, so memory stays at about one block."""

    def __init__(self, preset: Preset, config: MonitorConfig):
        self.preset, self.config = preset, config
        self.win_f = int(round(config.window_s / preset.frame_s))
        self.hop_f = max(1, int(round(config.hop_s / preset.frame_s)))
        self.postings, self.ids, self.ends = Postings.empty(), np.zeros(0, np.int64), np.zeros(0, np.int64)
        self.next_win = 0  #: start frame of the next window to score
        self.n_windows = 0
        self.hits: list[WindowHit] = []

    def add(self, p: Postings, ids: np.ndarray, ends: np.ndarray) -> None:
        """Append a block's postings (sorted by query frame, all after those already in)."""
        self.postings += p
        self.ids, self.ends = np.concatenate([self.ids, ids]), np.concatenate([self.ends, ends])

    def emit(self, upto: int | None, end_frame: int = 0) -> None:
        """Score every window that ends by frame ``upto``; ``None``: every window left, the programme having
        ``end_frame`` frames (the last one ends there)."""
        c, buf = self.config, self.postings
        # only postings whose near_counts bound can reach a qualifying vote in some window (a window sees a
        # subset of the buffer, so the bound over the whole buffer is conservative): far fewer to sort
        cand = near_counts(buf.tids, buf.off) >= c.weak_score
        p = buf.take(cand)
        ids, ends = self.ids[cand], self.ends[cand]
        while True:
            w0, w1 = self.next_win, self.next_win + self.win_f
            if upto is not None and w1 > upto:
                break
            # at the end: stop once the previous window already reached the last frame
            if upto is None and (w0 >= end_frame or (w0 > 0 and w1 - self.hop_f >= end_frame)):
                break
            i0, i1 = np.searchsorted(p.qt, w0), np.searchsorted(p.qt, w1)
            w = slice(i0, i1)
            self._score(p.take(w), ids[w], ends[w], w0, min(w1, end_frame) if upto is None else w1)
            self.next_win += self.hop_f
        keep = np.searchsorted(buf.qt, self.next_win)
        self.postings = buf.take(slice(keep, None))
        self.ids, self.ends = self.ids[keep:], self.ends[keep:]

    def _score(self, w: Postings, ids: np.ndarray, ends: np.ndarray, w0: int, w_end: int) -> None:
        """One window's hits: its ``top`` tracks with at least ``weak_score`` aligned landmarks."""
        c, p = self.config, self.preset
        self.n_windows += 1
        if len(w) == 0:
            return
        fs, tail = p.frame_s, p.n_fft / p.sample_rate
        v = score_offsets(w, c.top, min_score=c.weak_score, candidates=2 * max(c.top, 1), ids=ids, ends=ends)
        for tr, o, s, a in zip(v.track_ids, v.offsets, v.scores, v.aligned or [], strict=True):
            f0, f1 = hit_span(a, ids, ends, max(1, int(round(c.span_rate_s / fs))), c.span_outlier_p)
            self.hits.append(WindowHit(w0 * fs, w_end * fs, int(tr), int(o), int(s), f0 * fs, f1 * fs + tail, a))


class _Levels:
    """Mean power per second of each analysed signal (mix; with a separator, music and speech too), and of the
    mix per ``1/FLOOR_FRAMES_PER_S`` s frame (:func:`floor_msr_db` reads the music under speech from them)."""

    def __init__(self, sr: int):
        self.sr = sr
        self.power = {k: _PerSecond() for k in ("mix", "music", "speech")}
        self.frames = _PerSecond()  #: mix power summed per frame, ``FLOOR_FRAMES_PER_S`` bins per second
        self.n_samples = 0  #: programme samples accounted for so far

    def add(self, signals: dict[str, np.ndarray], start: int, a: int, b: int) -> None:
        """Samples ``a:b`` of a block starting at programme sample ``start`` (the block's own audio)."""
        self.n_samples = start + b
        g = np.arange(start + a, start + b, dtype=np.int64)
        sec = g // self.sr
        for key, y in signals.items():
            self.power[key].add(sec, np.square(y[a:b], dtype=np.float64))
            if key == "mix":
                self.frames.add(sec * FLOOR_FRAMES_PER_S + (g % self.sr) * FLOOR_FRAMES_PER_S // self.sr,
                                np.square(y[a:b], dtype=np.float64))

    def drop_seconds(self, k: int) -> None:
        """Forget the first ``k`` seconds (live monitoring keeps only the recent past)."""
        for acc in self.power.values():
            acc.drop(k)
        self.frames.drop(k * FLOOR_FRAMES_PER_S)
        self.n_samples -= k * self.sr

    def curves(self) -> dict[str, np.ndarray | None]:
        """dBFS per second of each signal (None: not analysed); the last second is averaged over its samples;
        ``frames``: the mix's mean power per frame, ``(seconds, FLOOR_FRAMES_PER_S)`` (None: no mix)."""
        n_sec = int(math.ceil(self.n_samples / self.sr))
        per_sec = np.full(n_sec, float(self.sr))
        if n_sec:
            per_sec[-1] = self.n_samples - (n_sec - 1) * self.sr
        out: dict[str, np.ndarray | None] = {
            k: (_db(acc.values(n_sec) / np.maximum(per_sec, 1)) if acc.used else None)
            for k, acc in self.power.items()}
        per_frame = self.sr / FLOOR_FRAMES_PER_S  # samples (the last second's missing frames read 0: silent)
        out["frames"] = ((self.frames.values(n_sec * FLOOR_FRAMES_PER_S) / per_frame).reshape(n_sec, -1)
                         if self.frames.used else None)
        return out


#: Seconds at the start of a programme that ``alteration="auto"`` reads to estimate it (ten 12 s excerpts).
ALTERATION_SCAN_S = 300.0


class Monitor:
    """Stream programmes through separation, fingerprinting and window matching; produce cues.

    ``separator`` is any :class:`~bgmid.separation.Separator` (``sample_rate`` and ``separate(mono) -> (music,
    speech)``); ``None`` matches the raw mix only (much faster, weaker under loud speech). The query side
    (analysis, lookup, scoring) is :mod:`bgmid.match`'s; this class adds the blocks, the windows and the cues.
    """

    def __init__(
        self,
        store: Store,
        separator: Separator | None = None,
        config: MonitorConfig | None = None,
        options: QueryOptions | None = None,
        separator_name: str | None = None,
        alteration: Alteration | str | None = None,
        pipeline: QueryPipeline | None = None,
    ):
        """``pipeline``: the :class:`~bgmid.pipeline.QueryPipeline` each block goes through (separator, fusion,
        query options, thread policy); when not given it is made from ``separator``, ``options`` and
        ``config.separator_threads``. ``alteration``: how the programme airs its music, undone for the whole
        stream: an :class:`~bgmid.alterations.Alteration`, ``"auto"`` (estimated once from its first
        ``ALTERATION_SCAN_S`` seconds, :func:`bgmid.alterations.estimate_programme`) or None (as indexed)."""
        self.store = store
        self.alteration = alteration
        self.preset = store.preset
        self.config = config or MonitorConfig()
        self.pipeline = pipeline or QueryPipeline(store, separator, options=options or QueryOptions(),
                                                  threads=self.config.separator_threads,
                                                  separator_name=separator_name or "")
        self.separator = self.pipeline.separator
        self.separator_name = self.pipeline.separator_name
        self.options = self.pipeline.options
        self.sr = self.pipeline.sample_rate
        p, c = self.preset, self.config
        step = _frame_step(p, self.sr)
        self.core_frames = max(step, int(round(c.block_s / p.frame_s / step)) * step)
        self.ctx_frames = max(step, int(math.ceil(c.context_s / p.frame_s / step)) * step)
        self.samples_per_frame = p.hop * self.sr / p.sample_rate  # exact at multiples of ``step``

    # public entry points
    def run(self, path: str | os.PathLike, on_progress: Callable[[float], None] | None = None,
            stream: int | str | None = None, surround: str = "auto") -> MonitorResult:
        """Monitor one file (any format PyAV decodes), streamed with bounded memory; ``stream`` picks its audio
        stream (:func:`bgmid.audio.select_stream`: index, language or pid; None: the first). ``surround``:
        ``"auto"`` fingerprints, for surround audio with a centre channel (5.1, 7.1: dialogue in FC), the
        channels without the centre as an extra, dialogue-poor signal pooled with the mix
        (:func:`bgmid.audio.surround_pieces`; the first audio stream, when ``stream`` is not given);
        ``"mono"`` the downmix only; ``"centre"`` as auto, an error for audio without a centre channel."""
        from bgmid.audio import AudioError, load, resampled_pieces, surround_pieces

        if surround not in ("auto", "mono", "centre"):
            raise ValueError(f"surround must be auto, mono or centre, got {surround!r}")
        alt, evidence = self._alteration(lambda: load(path, self.sr, duration_s=ALTERATION_SCAN_S, stream=stream)[0])
        tick = None if on_progress is None else (lambda s: on_progress(s / alt.time_factor))
        split = surround_pieces(path, self.sr) if surround != "mono" and stream is None else None
        if split is None and surround == "centre":
            raise AudioError(f"{path}: --surround centre needs surround audio with a centre channel (5.1, 7.1) "
                             "in its first audio stream; this one has none.")
        if split is not None:
            mix, side = (self._blocks(undo_pieces(x, self.sr, alt)) for x in split)
            return self._rescaled(self._run(str(path), mix, tick, side), alt, evidence)
        pieces = undo_pieces(resampled_pieces(path, self.sr, stream), self.sr, alt)
        return self._rescaled(self._run(str(path), self._blocks(pieces), tick), alt, evidence)

    def run_array(self, x: np.ndarray, sr: int, name: str = "<array>") -> MonitorResult:
        """Monitor an in-memory mono signal (tests, notebooks)."""
        y = resample(np.asarray(x, np.float32), sr, self.sr)
        alt, evidence = self._alteration(lambda: y[: int(ALTERATION_SCAN_S * self.sr)])
        pieces = undo_pieces([y[i:i + self.sr] for i in range(0, y.size, self.sr)], self.sr, alt)
        return self._rescaled(self._run(name, self._blocks(pieces), None), alt, evidence)

    def _alteration(self, head: Callable[[], np.ndarray]) -> tuple[Alteration, list[dict]]:
        """The programme's alteration: the one given, or estimated once from its first minutes (mix only:
        cheaper than separating, and a film's speed-up shows in its music-heavy passages)."""
        if self.alteration is None:
            return NONE, []
        if isinstance(self.alteration, Alteration):
            return self.alteration, []
        matcher = self.pipeline.matcher
        return estimate_programme(lambda x, sr: matcher.identify(x, sr), head(), self.sr)

    @staticmethod
    def _rescaled(result: MonitorResult, alt: Alteration, evidence: list[dict]) -> MonitorResult:
        """Programme times back from the undone stream's time line (``time_factor`` times longer) to the
        programme's own; track times stay the track's. Level curves are resampled per programme second."""
        result.alteration, result.alteration_evidence = alt.to_dict(), evidence
        if alt.is_none:
            return result
        f = alt.time_factor
        result.duration_s /= f
        for c in result.cues:
            c.programme_start_s /= f
            c.programme_end_s /= f
            c.speed, c.tempo, c.pitch_semitones = alt.speed, alt.tempo, alt.pitch_semitones
            for part in c.parts:
                part.programme_start_s /= f
                part.programme_end_s /= f
            c.usage_parts = [(a / f, b / f, u) for a, b, u in c.usage_parts]
        for h in result.hits:
            h.start_s, h.end_s, h.first_s, h.last_s = h.start_s / f, h.end_s / f, h.first_s / f, h.last_s / f
        n = int(math.ceil(result.duration_s))
        for k in ("level_db", "music_db", "speech_db"):
            curve = getattr(result, k)
            if curve is not None and curve.size:
                idx = np.minimum((np.arange(n) * f).astype(int), curve.size - 1)
                setattr(result, k, curve[idx])
        return result

    # internals
    def _blocks(self, pieces: Iterable[np.ndarray]) -> Iterator[OwnedBlock]:
        """The programme's blocks (:func:`bgmid.audio.owned_blocks`): ``core_frames`` owned, ``ctx_frames`` of
        context each side, in samples at the working rate (exact: both are multiples of ``_frame_step``)."""
        f = self.samples_per_frame
        return owned_blocks(pieces, int(round(self.core_frames * f)), int(round(self.ctx_frames * f)))

    def _analyse(self, x: np.ndarray, side: np.ndarray | None = None) -> tuple[Landmarks, dict[str, np.ndarray]]:
        """Pooled landmarks of a block (raw mix, plus separated music with a separator; plus ``side``, the
        surround channels without the dialogue's centre, on the same samples) and its stems (levels and usage
        read the mix's)."""
        lm, stems = self.pipeline.block_landmarks(x)
        if side is None:
            return lm, stems
        return pool_landmarks([lm, self.pipeline.stem_landmarks(side)]), stems

    def _owned(self, blk: OwnedBlock, lm: Landmarks) -> tuple[Landmarks, int]:
        """The block's landmarks anchored in the frames it owns, on the programme's frame grid, and the first
        frame it does not own (every window ending by then has all its postings)."""
        f = self.samples_per_frame
        k0 = int(round(blk.start / f))  # programme frame of the block's first sample
        own_lo = int(round(blk.own_lo / f))
        own_hi = k0 + int(blk.x.size / f) + 1 if blk.last else int(round(blk.own_hi / f))
        t = lm.times.astype(np.int64) + k0
        keep = (t >= own_lo) & (t < own_hi)
        return Landmarks(lm.hashes[keep], t[keep]), own_hi

    def _postings(self, lm: Landmarks) -> tuple[Postings, np.ndarray, np.ndarray]:
        """One index lookup per landmark, with the index's stop-word policy (as a single query's: on the
        benchmark the same cues and window hits as the former cap of 1,000 postings, since a compacted index
        drops its stop words anyway): postings sorted by programme frame, each with its landmark's id
        (:func:`landmark_id`) and the frame where the landmark ends (its target peak)."""
        p = lookup(self.store, lm)
        order = np.argsort(p.qt, kind="stable")
        p = p.take(order)
        return p, landmark_id(p.qt, p.rows), p.qt + hash_dt(lm.hashes[p.rows], self.preset)

    def _feed(self, voter: _WindowVoter, levels: _Levels, blk: OwnedBlock,
              analysis: tuple[Landmarks, dict[str, np.ndarray]]) -> None:
        """One analysed block (:meth:`_analyse`) into the windows and the levels: its own landmarks looked up,
        every window it completes scored (the last block: every window left). The step file monitoring and live
        monitoring (:mod:`bgmid.live`) share."""
        lm, sig = analysis
        own, own_hi = self._owned(blk, lm)
        levels.add(sig, blk.start, blk.own.start, blk.own.stop)
        voter.add(*self._postings(own))
        voter.emit(None if blk.last else own_hi, int(levels.n_samples / self.samples_per_frame) if blk.last else 0)

    def _run(
        self,
        name: str,
        blocks: Iterable[OwnedBlock],
        on_progress: Callable[[float], None] | None,
        side: Iterable[OwnedBlock] | None = None,
    ) -> MonitorResult:
        """``side``: blocks of the dialogue-poor surround signal in step with ``blocks`` (same layout)."""
        t_start = time.perf_counter()
        voter, levels = _WindowVoter(self.preset, self.config), _Levels(self.sr)
        pairs: Iterable = zip(blocks, side, strict=True) if side is not None else ((b, None) for b in blocks)

        def work(bs: tuple[OwnedBlock, OwnedBlock | None]) -> tuple[Landmarks, dict[str, np.ndarray]]:
            return self._analyse(bs[0].x, None if bs[1] is None else bs[1].x)

        analysed: Iterable = (_prefetch(pairs, work) if self.config.prefetch else ((bs, work(bs)) for bs in pairs))
        for (blk, _), analysis in analysed:
            self._feed(voter, levels, blk, analysis)
            if on_progress is not None:
                on_progress(levels.n_samples / self.sr)
        return self._result(name, voter, levels, time.perf_counter() - t_start)

    def _result(self, name: str, voter: _WindowVoter, levels: _Levels, elapsed_s: float) -> MonitorResult:
        """Cues from the window hits (clipped to the programme, with index metadata and usage) and the curves."""
        duration_s = levels.n_samples / self.sr
        cues = segments_to_cues(merge_segments(voter.hits, self.config), self.preset.frame_s, self.config,
                                n_windows_total=voter.n_windows)
        for h in voter.hits:
            h.aligned = h.aligned[:0]
        curves = levels.curves()
        n_sec = int(math.ceil(duration_s))
        level_db = curves["mix"] if curves["mix"] is not None else np.zeros(n_sec, np.float32)
        self._annotate(cues, duration_s, curves["music"], curves["speech"], curves["frames"])
        return MonitorResult(
            programme=name,
            duration_s=duration_s,
            cues=cues,
            level_db=level_db,
            music_db=curves["music"],
            speech_db=curves["speech"],
            n_windows=voter.n_windows,
            elapsed_s=elapsed_s,
            separator=self.separator_name,
            hits=voter.hits,
        )


    def _annotate(self, cues: list[Cue], duration_s: float, music_db: np.ndarray | None,
                  speech_db: np.ndarray | None, frames: np.ndarray | None) -> None:
        """Finish cues: clipped to the programme's ``duration_s``, the index's metadata, usage from the separated
        level curves or the mix's frame powers (:func:`estimate_usage`; per second from programme time 0).
        Shared with live monitoring (:mod:`bgmid.live`)."""
        refine_edges(cues, frames, self.config)
        for cue in cues:
            _clip(cue, duration_s)
            meta = self.store.track(cue.track_id)
            cue.title, cue.path, cue.extra = meta.title, meta.path, dict(meta.extra)
        estimate_usage(cues, music_db, speech_db, frames)


def _clip(cue: Cue, duration_s: float) -> None:
    """End a cue (and its last part) at the programme's end: widening may have carried it past."""
    over = max(0.0, cue.programme_end_s - duration_s)
    cue.programme_end_s -= over
    cue.track_end_s -= over
    if cue.parts:
        cue.parts[-1].programme_end_s -= over
        cue.parts[-1].track_end_s -= over


class _PerSecond:
    """A per-bin accumulator that grows with the programme (a float per second, or per frame for the mix's
    frame powers: hours cost kilobytes to a few MB). Capacity doubles as it grows, so a day-long recording
    copies its sums a few dozen times, not once per block."""

    def __init__(self) -> None:
        self._buf = np.zeros(0, np.float64)
        self._n = 0  #: bins in use
        self.used = False

    @property
    def sums(self) -> np.ndarray:
        """The sums of the bins in use (a view)."""
        return self._buf[: self._n]

    def add(self, sec: np.ndarray, weights: np.ndarray | None) -> None:
        if sec.size == 0:
            return
        self.used = True
        lo = int(sec.min())
        part = np.bincount(sec - lo, weights=weights)
        need = lo + part.size
        if need > self._buf.size:
            grown = np.zeros(max(need, 2 * self._buf.size), np.float64)
            grown[: self._n] = self._buf[: self._n]
            self._buf = grown
        self._n = max(self._n, need)
        self._buf[lo:need] += part

    def drop(self, k: int) -> None:
        """Forget the first ``k`` bins (bin ``k`` becomes bin 0)."""
        k = min(k, self._n)
        self._buf, self._n = self._buf[k:], self._n - k

    def values(self, n: int) -> np.ndarray:
        out = np.zeros(n, np.float64)
        m = min(n, self._n)
        out[:m] = self._buf[:m]
        return out


def _prefetch(items: Iterable, fn: Callable) -> Iterator[tuple[object, object]]:
    """Yield ``(item, fn(item))``, reading the next item and computing ``fn`` on it in a worker thread while the
    caller works on the current one (at most one item ahead: memory stays at a few blocks). Exceptions of the
    worker (a decoding error) are raised in the caller."""
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()
    done = object()

    def work() -> None:
        try:
            for item in items:
                out = (item, fn(item))
                while not stop.is_set():
                    try:
                        q.put(out, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(done)
        except BaseException as exc:  # handed to the caller
            q.put(exc)

    th = threading.Thread(target=work, name="bgmid-monitor-prefetch", daemon=True)
    th.start()
    try:
        while True:
            got = q.get()
            if got is done:
                return
            if isinstance(got, BaseException):
                raise got
            yield got
    finally:
        stop.set()


def monitor_file(
    db: str | os.PathLike,
    path: str | os.PathLike,
    separator: Separator | None = None,
    config: MonitorConfig | None = None,
) -> MonitorResult:
    """Convenience: open the index at ``db`` and monitor one file."""
    from bgmid.index import open_index

    with open_index(Path(db)) as store:
        return Monitor(store, separator, config).run(path)
