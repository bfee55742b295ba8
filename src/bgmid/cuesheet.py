"""Cue sheets: the monitor's output as CSV, JSON and a terminal table, and their scoring against ground truth.

The JSON form is a contract other tools read. One object per programme::

    {"programme": PATH, "programme_title": str, "duration_s": float, "separator": str,
     # additions: "alteration", "production", "episode", "air_date", "timebase",
     "cues": [{"seq", "track_id", "path", "title", "programme_start_s", "programme_end_s",
               "track_start_s", "track_end_s", "duration_s", "usage", "score", "confidence",
               # additions, which readers may ignore:
               "tc_in", "tc_out", "msr_db", "loops", "speed", "tempo", "pitch_semitones", "metadata",
               "usage_code", "usage_parts", "parts", "utc_in", "utc_out" (with a known start)}]}

Times are seconds (3 decimals) from the programme's first sample; ``tc_in``/``tc_out`` are the same instants as
timecodes in the sheet's :class:`~bgmid.timecode.Timebase` (default ``HH:MM:SS.mmm`` from 0; SMPTE
``HH:MM:SS:FF`` at 25/30 fps or drop-frame ``HH:MM:SS;FF`` at 29.97, after a programme start timecode), and
``utc_in``/``utc_out`` wall-clock UTC when the recording's start is known. ``parts`` lists each offset run of a
cue (a loop or a repeat inside one use).

Broadcast reporting (:class:`SheetOptions`): production, episode and air date, a usage code (``BI`` background
instrumental, ``VI`` visual/featured instrumental) and the track's composer, publisher, artist, ISRC and ISWC
from the index's tags go into every row; the ``society`` CSV layout (:data:`SOCIETY_FIELDS`) has only the
columns of the usual rights-society cue-sheet templates, under their usual headings.

Scoring (:func:`evaluate`) follows the BAF broadcast-monitoring benchmark's seconds-level measure: every second
of the programme holds a set of tracks in the truth and a set in the cue sheet (a cue holds a second when it
covers at least half of it); a (second, track) pair in both is a true positive, only in the cue sheet a false
positive, only in the truth a false negative. Cue-level recall counts a truth cue as found when a detected cue
of the same track covers at least half of it; the boundary error is the distance between a found cue's in and
out points and the truth's.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bgmid.errors import BgmidError
from bgmid.monitor import Cue, MonitorConfig, MonitorResult
from bgmid.paths import shown
from bgmid.timecode import Timebase, format_ms

__all__ = [
    "BROADCAST_FIELDS",
    "CSV_FIELDS",
    "CueMetrics",
    "SOCIETY_FIELDS",
    "SheetOptions",
    "TRUTH_FIELDS",
    "TruthCue",
    "USAGE_CODES",
    "csv_text",
    "cue_to_dict",
    "evaluate",
    "format_metrics",
    "format_table",
    "parse_timecode",
    "read_truth",
    "result_to_dict",
    "timecode",
    "write_csv",
    "write_json",
]

#: Columns of the CSV cue sheet, in order; :data:`BROADCAST_FIELDS` and index metadata columns (``meta_<key>``)
#: follow.
CSV_FIELDS = (
    "programme", "programme_title", "seq", "track_id", "title", "path", "tc_in", "tc_out", "duration_tc",
    "programme_start_s", "programme_end_s", "track_start_s", "track_end_s", "duration_s", "usage", "msr_db",
    "loops", "score", "confidence",
)

#: Reporting columns after :data:`CSV_FIELDS`: the sheet's production/episode/air date, the usage code, the
#: track's rights tags from the index, wall-clock UTC in/out and the timebase of the timecodes.
BROADCAST_FIELDS = (
    "production", "episode", "air_date", "usage_code", "composer", "publisher", "artist", "isrc", "iswc",
    "utc_in", "utc_out", "timebase",
)

#: The ``society`` CSV layout: the columns of the usual rights-society cue-sheet templates (PRS/ASCAP/BMI/GEMA
#: style music reporting), one row per cue, under their usual headings. ``Duration`` is ``MM:SS`` (whole
#: seconds, at least 00:01); ``Usage`` the code of :data:`USAGE_CODES`.
SOCIETY_FIELDS = (
    "Production Title", "Episode Title", "Air Date", "Cue #", "Cue Title", "Composer(s)", "Publisher(s)",
    "Artist", "ISRC", "ISWC", "Usage", "Duration", "Timecode In", "Timecode Out", "UTC In", "UTC Out", "Source",
)

#: Usage codes of the cue-sheet templates for bgmid's two usages: BI background instrumental (under dialogue),
#: VI visual (featured) instrumental. Vocal/instrumental is not detected: instrumental is reported.
USAGE_CODES = {"background": "BI", "featured": "VI"}

#: Index tag names read for each rights column (first present wins; case-insensitive). ``bgmid index`` reads
#: them from the files' tags (:func:`bgmid.audio.read_tags`).
_TAGS = {
    "composer": ("composer",),
    "publisher": ("publisher", "label", "organization"),
    "artist": ("artist", "performer"),
    "isrc": ("isrc",),
    "iswc": ("iswc",),
}


@dataclass(frozen=True)
class SheetOptions:
    """What a cue sheet says besides the cues: how it writes times, and the programme's reporting fields.

    ``episode`` empty: each programme's title (its file name) is its episode. ``air_date`` empty: the date of
    ``timebase.start_utc`` as given (the local date when it carries a zone offset), else empty. ``layout``:
    ``bgmid`` (every column) or ``society`` (:data:`SOCIETY_FIELDS`)."""

    timebase: Timebase = field(default_factory=Timebase)
    production: str = ""
    episode: str = ""
    air_date: str = ""
    layout: str = "bgmid"

    def episode_of(self, result: MonitorResult) -> str:
        return self.episode or programme_title(result.programme)

    @property
    def air_date_text(self) -> str:
        if self.air_date:
            return self.air_date
        t = self.timebase.start_utc
        return t.date().isoformat() if t is not None else ""


def timecode(seconds: float) -> str:
    """``HH:MM:SS.mmm`` (hours grow past 99 for multi-day logs)."""
    return format_ms(seconds)


def track_tags(extra: dict) -> dict[str, str]:
    """The rights columns (:data:`_TAGS`) of one track from its index metadata ("" where the tag is missing)."""
    low = {str(k).lower(): v for k, v in extra.items()}
    out = {}
    for col, names in _TAGS.items():
        v = next((low[n] for n in names if low.get(n) not in (None, "")), "")
        out[col] = "; ".join(map(str, v)) if isinstance(v, list | tuple) else str(v)
    return out


def society_duration(seconds: float) -> str:
    """A cue's length as the templates want it: ``MM:SS``, whole seconds rounded, at least ``00:01``."""
    s = max(1, int(math.floor(seconds + 0.5)))
    return f"{s // 60:02d}:{s % 60:02d}"


def parse_timecode(text: str | float) -> float:
    """Seconds from ``HH:MM:SS.mmm``, ``MM:SS.mmm`` or plain seconds (truth files come in all forms)."""
    if isinstance(text, int | float):
        return float(text)
    parts = str(text).strip().split(":")
    try:
        vals = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"not a time: {text!r} (use seconds or HH:MM:SS.mmm)") from None
    out = 0.0
    for v in vals:
        out = out * 60 + v
    return out


def programme_title(path: str) -> str:
    """A programme's title for the cue sheet: its file name without extension (valid UTF-8: undecodable bytes
    of the name as U+FFFD, see :func:`bgmid.paths.shown`)."""
    return shown(Path(path).stem) if path and not path.startswith("<") else shown(path)


def cue_to_dict(cue: Cue, timebase: Timebase | None = None) -> dict:
    """One cue as the JSON contract's object (contract keys first, then additions); timecodes in ``timebase``."""
    tb = timebase or Timebase()
    d = {
        "seq": cue.seq,
        "track_id": cue.track_id,
        "path": shown(cue.path),
        "title": cue.title,
        "programme_start_s": round(cue.programme_start_s, 3),
        "programme_end_s": round(cue.programme_end_s, 3),
        "track_start_s": round(cue.track_start_s, 3),
        "track_end_s": round(cue.track_end_s, 3),
        "duration_s": round(cue.duration_s, 3),
        "usage": cue.usage,
        "score": int(cue.score),
        "confidence": round(float(cue.confidence), 4),
        "tc_in": tb.tc(cue.programme_start_s),
        "tc_out": tb.tc(cue.programme_end_s),
        "msr_db": None if cue.msr_db is None else round(float(cue.msr_db), 1),
        "loops": cue.loops,
        "speed": round(cue.speed, 5),
        "tempo": round(cue.tempo, 5),
        "pitch_semitones": round(cue.pitch_semitones, 3),
        "metadata": dict(cue.extra),
        "usage_code": USAGE_CODES.get(cue.usage, ""),
        "usage_parts": [{"programme_start_s": round(a, 3), "programme_end_s": round(b, 3), "usage": u,
                         "usage_code": USAGE_CODES.get(u, ""), "tc_in": tb.tc(a), "tc_out": tb.tc(b)}
                        for a, b, u in (cue.usage_parts or [(cue.programme_start_s, cue.programme_end_s, cue.usage)])],
        "parts": [
            {"programme_start_s": round(p.programme_start_s, 3), "programme_end_s": round(p.programme_end_s, 3),
             "track_start_s": round(p.track_start_s, 3), "track_end_s": round(p.track_end_s, 3),
             "tc_in": tb.tc(p.programme_start_s), "tc_out": tb.tc(p.programme_end_s),
             "also_track_start_s": [round(v, 3) for v in p.also_track_start_s]}
            for p in cue.parts
        ],
    }
    if tb.start_utc is not None:
        d.update(utc_in=tb.utc(cue.programme_start_s), utc_out=tb.utc(cue.programme_end_s))
    return d


def result_to_dict(result: MonitorResult, title: str | None = None, options: SheetOptions | None = None) -> dict:
    """One programme's cue sheet as the JSON contract's object."""
    o = options or SheetOptions()
    return {
        "programme": shown(result.programme),
        "programme_title": title or programme_title(result.programme),
        "duration_s": round(result.duration_s, 3),
        "separator": result.separator,
        "alteration": dict(result.alteration),
        "production": o.production,
        "episode": o.episode_of(result),
        "air_date": o.air_date_text,
        "timebase": o.timebase.to_dict(),
        "cues": [cue_to_dict(c, o.timebase) for c in result.cues],
    }


def write_json(results: Sequence[MonitorResult], path: str | os.PathLike, options: SheetOptions | None = None) -> Path:
    """Write the cue sheet(s): one object for one programme, a list of objects for several."""
    objs = [result_to_dict(r, options=options) for r in results]
    return _atomic_write(path, json.dumps(objs[0] if len(objs) == 1 else objs, indent=1) + "\n")


def _broadcast(r: MonitorResult, c: Cue, o: SheetOptions) -> dict:
    """The :data:`BROADCAST_FIELDS` of one cue."""
    tb = o.timebase
    return {"production": o.production, "episode": o.episode_of(r), "air_date": o.air_date_text,
            "usage_code": USAGE_CODES.get(c.usage, ""), **track_tags(c.extra), "utc_in": tb.utc(c.programme_start_s),
            "utc_out": tb.utc(c.programme_end_s), "timebase": tb.fps + ("df" if tb.drop_frame else "")}


def csv_rows(results: Sequence[MonitorResult], options: SheetOptions | None = None) -> tuple[list[str], list[dict]]:
    """CSV header and rows: one row per cue of every programme. Layout ``bgmid``: :data:`CSV_FIELDS`,
    :data:`BROADCAST_FIELDS`, index metadata flattened to ``meta_*``; layout ``society``: :data:`SOCIETY_FIELDS`."""
    o = options or SheetOptions()
    tb = o.timebase
    if o.layout == "society":
        rows = []
        for r in results:
            for c in r.cues:
                b = _broadcast(r, c, o)
                rows.append(dict(zip(SOCIETY_FIELDS, (
                    b["production"], b["episode"], b["air_date"], c.seq, c.title, b["composer"], b["publisher"],
                    b["artist"], b["isrc"], b["iswc"], b["usage_code"], society_duration(c.duration_s),
                    tb.tc(c.programme_start_s), tb.tc(c.programme_end_s), b["utc_in"], b["utc_out"],
                    shown(c.path)), strict=True)))
        return list(SOCIETY_FIELDS), rows
    if o.layout != "bgmid":
        raise BgmidError(f"cue sheet layout {o.layout!r}: use 'bgmid' or 'society'.")
    meta_keys = sorted({k for r in results for c in r.cues for k in c.extra})
    header = list(CSV_FIELDS) + list(BROADCAST_FIELDS) + [f"meta_{k}" for k in meta_keys]
    rows = []
    for r in results:
        for c in r.cues:
            d = cue_to_dict(c, tb)
            row = {k: d.get(k, "") for k in CSV_FIELDS}
            row.update(programme=shown(r.programme), programme_title=programme_title(r.programme),
                       duration_tc=tb.duration(c.duration_s), msr_db="" if d["msr_db"] is None else d["msr_db"])
            row.update(_broadcast(r, c, o))
            for k in meta_keys:
                v = c.extra.get(k, "")
                row[f"meta_{k}"] = json.dumps(v) if isinstance(v, dict | list) else v
            rows.append(row)
    return header, rows


def csv_text(results: Sequence[MonitorResult], options: SheetOptions | None = None) -> str:
    """One CSV cue sheet for all programmes (a ``programme`` column, or ``Episode Title``, tells them apart),
    as text."""
    header, rows = csv_rows(results, options)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=header, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def write_csv(results: Sequence[MonitorResult], path: str | os.PathLike, options: SheetOptions | None = None) -> Path:
    """Write :func:`csv_text` to ``path``."""
    return _atomic_write(path, csv_text(results, options))


def _atomic_write(path: str | os.PathLike, text: str) -> Path:
    p = Path(path)
    if p.parent and not p.parent.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".part")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()
    return p


def format_table(result: MonitorResult, width: int = 34, timebase: Timebase | None = None) -> str:
    """A human-readable cue sheet for the terminal (in/out in ``timebase``)."""
    tb = timebase or Timebase()
    lines = [
        f"{programme_title(result.programme)}  ({timecode(result.duration_s)}, {len(result.cues)} cues, "
        f"separator: {result.separator}, {result.speed:.0f}x real time)"
    ]
    if not result.cues:
        lines.append("  no indexed music found")
        return "\n".join(lines)
    lines.append(f"  {'#':>3}  {'in':<12}  {'out':<12}  {'dur':>6}  {'title':<{width}}  {'track in':>8}  "
                 f"{'usage':<10}  {'M/S dB':>6}  {'conf':>5}")
    for c in result.cues:
        title = c.title if len(c.title) <= width else c.title[: width - 1] + "…"
        msr = "" if c.msr_db is None else f"{c.msr_db:+.0f}"
        loop = f"  (loops {c.loops}x)" if c.loops else ""
        lines.append(
            f"  {c.seq:>3}  {tb.tc(c.programme_start_s):<12}  {tb.tc(c.programme_end_s):<12}  "
            f"{c.duration_s:>5.1f}s  {title:<{width}}  {c.track_start_s:>7.1f}s  {c.usage:<10}  {msr:>6}  "
            f"{c.confidence:>5.2f}{loop}"
        )
    return "\n".join(lines)


# -- ground truth and scoring ---------------------------------------------------------------------------


#: Columns of a ground-truth cue sheet as the programme generator writes it (``bgmid data programme``,
#: :func:`bgmid.data.programmes.generate_programme`), in order; :func:`read_truth` reads these and other forms.
TRUTH_FIELDS = (
    "cue", "track_id", "title", "package", "orig_path", "programme_start_s", "programme_end_s",
    "track_offset_s", "level_db", "fade_in_s", "fade_out_s", "music_only",
)


@dataclass
class TruthCue:
    """A ground-truth cue: which track sounds where (the one ground-truth type: truth files read for scoring
    and the programme generator's cue sheets alike). A detected cue is :class:`bgmid.monitor.Cue`.

    Times in programme seconds; the music heard at programme time ``t`` (between start and end) is the track at
    ``track_offset_s + (t - start_s)`` (times the aired speed·tempo, see :mod:`bgmid.data.programmes`)."""

    track: str  #: identifier as the truth file gives it (corpus id, file name, title, or index id)
    start_s: float
    end_s: float
    title: str = ""
    track_offset_s: float | None = None
    level_db: float | None = None  #: music relative to dialogue (dB), where the generator knows it
    music_only: bool = False
    programme: str = ""  #: which programme it belongs to, when a truth file covers several
    # known where the programme generator wrote the sheet:
    seq: int = 0  #: position in the programme's cue sheet (column ``cue``, 0-based)
    package: str = ""  #: corpus package of the track
    orig_path: str = ""  #: the track's file inside its package
    fade_in_s: float = 0.0
    fade_out_s: float = 0.0

    def to_row(self) -> dict:
        """This cue as a row of :data:`TRUTH_FIELDS` (the generator's CSV and JSON)."""
        return {"cue": self.seq, "track_id": self.track, "title": self.title, "package": self.package,
                "orig_path": self.orig_path, "programme_start_s": self.start_s, "programme_end_s": self.end_s,
                "track_offset_s": self.track_offset_s, "level_db": self.level_db, "fade_in_s": self.fade_in_s,
                "fade_out_s": self.fade_out_s, "music_only": self.music_only}

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    @property
    def featured(self) -> bool:
        """Ground-truth usage: music alone, or at least as loud as the dialogue."""
        return self.music_only or (self.level_db is not None and self.level_db >= 0.0)


def _pick(row: dict, *names: str) -> str | None:
    for n in names:
        if n in row and row[n] not in (None, ""):
            return row[n]
    return None


def read_truth(path: str | os.PathLike, programme: str | None = None) -> list[TruthCue]:
    """Read a ground-truth cue CSV.

    Understands the programme generator's sheets (``track_id, title, programme_start_s, programme_end_s,
    track_offset_s, level_db, music_only``) and bgmid's own CSV output (so a corrected cue sheet can serve as
    truth); in/out may be seconds or timecodes (``start``/``end``/``tc_in``/``tc_out``). When the file has a
    ``programme`` column and ``programme`` is given, only that programme's rows (matched by path or title).
    """
    p = Path(path)
    if not p.is_file():
        raise BgmidError(f"{p}: no such truth file. Give the cue CSV written with the programme (*.cues.csv).")
    with open(p, newline="") as f:
        rows = list(csv.DictReader(f))
    out = []
    for i, r in enumerate(rows, 2):
        track = _pick(r, "track_id", "track", "title", "path")
        a = _pick(r, "programme_start_s", "start_s", "start", "tc_in")
        b = _pick(r, "programme_end_s", "end_s", "end", "tc_out")
        if track is None or a is None or b is None:
            raise BgmidError(
                f"{p}, line {i}: a truth cue needs a track (track_id/title) and in/out times "
                "(programme_start_s/programme_end_s or tc_in/tc_out); got columns " + ", ".join(r)
            )
        lvl = _pick(r, "level_db")
        off = _pick(r, "track_offset_s", "track_start_s")
        out.append(
            TruthCue(
                track=str(track),
                start_s=parse_timecode(a),
                end_s=parse_timecode(b),
                title=str(_pick(r, "title") or ""),
                track_offset_s=None if off is None else float(off),
                level_db=None if lvl is None else float(lvl),
                music_only=str(_pick(r, "music_only") or "").lower() in ("true", "1", "yes"),
                programme=str(_pick(r, "programme") or ""),
                seq=int(seq) if (seq := _pick(r, "cue")) is not None and seq.strip().isdigit() else 0,
                package=str(_pick(r, "package") or ""),
                orig_path=str(_pick(r, "orig_path") or ""),
                fade_in_s=float(_pick(r, "fade_in_s") or 0.0),
                fade_out_s=float(_pick(r, "fade_out_s") or 0.0),
            )
        )
    if programme is not None and any(t.programme for t in out):
        keys = {programme, Path(programme).name, Path(programme).stem}
        out = [t for t in out if t.programme in keys or Path(t.programme).stem in keys]
    return out


def cue_identifiers(cue: Cue) -> set[str]:
    """Every name a detected cue's track goes by: index id, title, file name and stem, metadata values."""
    ids = {str(cue.track_id), cue.title}
    if cue.path:
        ids |= {Path(cue.path).name, Path(cue.path).stem, cue.path}
    ids |= {str(v) for v in cue.extra.values() if isinstance(v, str | int)}
    ids.discard("")
    return ids


def same_track(cue: Cue, truth: TruthCue) -> bool:
    """Whether a detected cue names the truth cue's track (by id, file name, metadata, or else by title)."""
    ids = cue_identifiers(cue)
    return truth.track in ids or (bool(truth.title) and truth.title == cue.title)


@dataclass
class CueMetrics:
    """Scores of one or several programmes' cue sheets against truth (see the module docstring)."""

    tp_s: int = 0  #: (second, track) pairs in both
    fp_s: int = 0  #: reported, not true
    fn_s: int = 0  #: true, not reported
    n_truth_cues: int = 0  #: truth cues eligible for cue recall (long enough and loud enough)
    n_found_cues: int = 0
    boundary_errors: list[float] = field(default_factory=list)  #: |in - true in| and |out - true out|, seconds
    n_cues: int = 0  #: detected cues
    phantom_cues: int = 0  #: detected cues that overlap no truth cue of their track
    usage_total: int = 0  #: found cues whose usage was compared
    usage_correct: int = 0
    seconds: float = 0.0  #: programme seconds scored

    @property
    def precision(self) -> float:
        return self.tp_s / (self.tp_s + self.fp_s) if self.tp_s + self.fp_s else 1.0

    @property
    def recall(self) -> float:
        return self.tp_s / (self.tp_s + self.fn_s) if self.tp_s + self.fn_s else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    @property
    def cue_recall(self) -> float:
        return self.n_found_cues / self.n_truth_cues if self.n_truth_cues else 1.0

    @property
    def boundary_median_s(self) -> float:
        return float(np.median(self.boundary_errors)) if self.boundary_errors else float("nan")

    @property
    def boundary_p90_s(self) -> float:
        return float(np.percentile(self.boundary_errors, 90)) if self.boundary_errors else float("nan")

    @property
    def usage_accuracy(self) -> float:
        return self.usage_correct / self.usage_total if self.usage_total else float("nan")

    def __add__(self, other: CueMetrics) -> CueMetrics:
        return CueMetrics(
            self.tp_s + other.tp_s, self.fp_s + other.fp_s, self.fn_s + other.fn_s,
            self.n_truth_cues + other.n_truth_cues, self.n_found_cues + other.n_found_cues,
            self.boundary_errors + other.boundary_errors, self.n_cues + other.n_cues,
            self.phantom_cues + other.phantom_cues, self.usage_total + other.usage_total,
            self.usage_correct + other.usage_correct, self.seconds + other.seconds,
        )

    def to_dict(self) -> dict:
        r4 = lambda v: None if isinstance(v, float) and math.isnan(v) else round(v, 4)  # noqa: E731
        return {
            "precision": r4(self.precision), "recall": r4(self.recall), "f1": r4(self.f1),
            "tp_s": self.tp_s, "fp_s": self.fp_s, "fn_s": self.fn_s,
            "cue_recall": r4(self.cue_recall), "truth_cues": self.n_truth_cues, "found_cues": self.n_found_cues,
            "boundary_median_s": r4(self.boundary_median_s), "boundary_p90_s": r4(self.boundary_p90_s),
            "cues": self.n_cues, "phantom_cues": self.phantom_cues,
            "usage_accuracy": r4(self.usage_accuracy), "seconds": round(self.seconds, 1),
        }


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def merge_truth(truth: Sequence[TruthCue], gap_s: float) -> list[TruthCue]:
    """Join truth cues of the same track that touch (within ``gap_s``): the monitor reports such a run (a loop
    or a restart) as one cue, so the truth is read the same way for cue-level scores."""
    out: list[TruthCue] = []
    for t in sorted(truth, key=lambda t: (t.track, t.start_s)):
        if out and out[-1].track == t.track and t.start_s <= out[-1].end_s + gap_s:
            prev = out[-1]
            prev.end_s = max(prev.end_s, t.end_s)
            prev.music_only = prev.music_only and t.music_only
            if t.level_db is not None:
                prev.level_db = t.level_db if prev.level_db is None else max(prev.level_db, t.level_db)
        else:
            out.append(TruthCue(**{k: getattr(t, k) for k in t.__dataclass_fields__}))
    return sorted(out, key=lambda t: t.start_s)


def evaluate(
    cues: Sequence[Cue],
    truth: Sequence[TruthCue],
    duration_s: float,
    min_level_db: float | None = None,
    min_recall_cue_s: float = 10.0,
    loop_gap_s: float | None = None,
) -> CueMetrics:
    """Score one programme's cues against its truth.

    ``min_level_db`` restricts the scores to truth cues at least that loud relative to speech: seconds that
    only quieter truth cues occupy are left out of the seconds-level counts (neither a hit nor a miss there
    counts), and quieter cues are not in cue recall. Phantom cues are counted regardless. Truth cues of one
    track less than ``loop_gap_s`` apart (default: the monitor's) are joined first, as the monitor joins them.
    """
    n = int(math.ceil(duration_s))
    m = CueMetrics(seconds=float(duration_s), n_cues=len(cues))
    truth = merge_truth(truth, MonitorConfig().loop_gap_s if loop_gap_s is None else loop_gap_s)

    def loud(t: TruthCue) -> bool:
        return min_level_db is None or t.level_db is None or t.music_only or t.level_db >= min_level_db

    # label each detected cue by the truth track it names (else by its own index id)
    def label(c: Cue) -> str:
        for t in truth:
            if same_track(c, t):
                return t.track
        return f"index:{c.track_id}"

    def covered(a: float, b: float) -> np.ndarray:
        """Seconds that [a, b) covers by at least half."""
        s = np.arange(n)
        return (np.minimum(b, s + 1) - np.maximum(a, s)) >= 0.5

    true_sets: list[set[str]] = [set() for _ in range(n)]
    ignore: list[set[str]] = [set() for _ in range(n)]
    for t in truth:
        for s in np.nonzero(covered(t.start_s, t.end_s))[0]:
            (true_sets if loud(t) else ignore)[s].add(t.track)
    pred: list[set[str]] = [set() for _ in range(n)]
    for c in cues:
        lab = label(c)
        for s in np.nonzero(covered(c.programme_start_s, c.programme_end_s))[0]:
            pred[s].add(lab)
    for s in range(n):
        p, t = pred[s] - (ignore[s] - true_sets[s]), true_sets[s]
        m.tp_s += len(p & t)
        m.fp_s += len(p - t)
        m.fn_s += len(t - p)
    # cue level
    for t in truth:
        if t.duration_s < min_recall_cue_s or not loud(t):
            continue
        m.n_truth_cues += 1
        best, best_ov = None, 0.0
        for c in cues:
            if same_track(c, t):
                ov = _overlap(c.programme_start_s, c.programme_end_s, t.start_s, t.end_s)
                if ov > best_ov:
                    best, best_ov = c, ov
        if best is not None and best_ov >= 0.5 * t.duration_s:
            m.n_found_cues += 1
            m.boundary_errors += [abs(best.programme_start_s - t.start_s), abs(best.programme_end_s - t.end_s)]
            if t.level_db is not None or t.music_only:
                m.usage_total += 1
                m.usage_correct += int((best.usage == "featured") == t.featured)
    for c in cues:
        if not any(same_track(c, t) and _overlap(c.programme_start_s, c.programme_end_s, t.start_s, t.end_s) > 0
                   for t in truth):
            m.phantom_cues += 1
    return m


def format_metrics(m: CueMetrics, label: str = "") -> str:
    """Metrics as a few human-readable lines."""
    head = f"{label}: " if label else ""
    return (
        f"{head}seconds-level P {m.precision:.3f}  R {m.recall:.3f}  F1 {m.f1:.3f}  "
        f"(tp {m.tp_s}, fp {m.fp_s}, fn {m.fn_s} s)\n"
        f"{' ' * len(head)}cue recall {m.n_found_cues}/{m.n_truth_cues} = {m.cue_recall:.1%}  "
        f"boundary error median {m.boundary_median_s:.2f} s (p90 {m.boundary_p90_s:.2f} s)  "
        f"phantom cues {m.phantom_cues}/{m.n_cues}  usage accuracy "
        + ("n/a" if math.isnan(m.usage_accuracy) else f"{m.usage_accuracy:.0%}")
    )
