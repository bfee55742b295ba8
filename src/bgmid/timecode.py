"""Broadcast time conventions for cue sheets: SMPTE timecodes, a programme start timecode, wall-clock UTC.

A cue sheet names instants the way the broadcaster's edit and playout systems do:

* **SMPTE timecode** ``HH:MM:SS:FF`` counts frames at a nominal rate: 25 fps (PAL/SECAM, EBU), 30 fps, or
  29.97 fps (NTSC, exactly 30000/1001) in *drop-frame* form ``HH:MM:SS;FF``: frame *labels* 0 and 1 are skipped
  at the start of every minute except every tenth, so that the label stays within 2 frames of the wall clock
  (108 labels an hour fewer: 01:00:00;00 is frame 107,892, the frame one real hour in). Frames are counted from
  the programme's first sample; an instant is on the frame it rounds to. Hours wrap at 24, as SMPTE timecode
  does.
* **Programme start timecode** (``--start-tc 10:00:00:00``): master tapes and playout files usually start at
  10:00:00:00 (or 09:59:30:00 with a leader), so the sheet's timecodes must be the file's own, not 0-based.
* **Wall-clock UTC** (``--start-utc``) for off-air recordings whose start is known: ``utc_in``/``utc_out`` are
  ISO 8601 instants with milliseconds.

Pure arithmetic on integers and :class:`fractions.Fraction` (no float drift on long programmes).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from fractions import Fraction

from bgmid.errors import BgmidError

__all__ = [
    "FPS_CHOICES",
    "Timebase",
    "df_frames_to_label",
    "df_label_to_frames",
    "format_ms",
    "parse_air_date",
    "parse_utc",
]

#: ``--fps`` values: milliseconds (``HH:MM:SS.mmm``) or a SMPTE frame rate (29.97 is drop-frame).
FPS_CHOICES = ("ms", "25", "29.97", "30")

_RATES = {"25": Fraction(25), "29.97": Fraction(30000, 1001), "30": Fraction(30)}
_NOMINAL = {"25": 25, "29.97": 30, "30": 30}
_DF_MIN = 30 * 60 - 2  #: frames in a drop-frame minute that drops labels (1798)
_DF_10MIN = 10 * 30 * 60 - 9 * 2  #: frames in ten drop-frame minutes (17982)


def format_ms(seconds: float) -> str:
    """``HH:MM:SS.mmm`` (hours grow past 99 for multi-day logs)."""
    ms = int(round(max(0.0, float(seconds)) * 1000))
    h, rem = divmod(ms, 3_600_000)
    m, rem = divmod(rem, 60_000)
    s, ms = divmod(rem, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}.{ms:03d}"


def df_frames_to_label(frames: int) -> tuple[int, int, int, int]:
    """29.97 fps drop-frame: frame count since 00:00:00;00 -> label (hours, minutes, seconds, frames).

    Every ten minutes hold 17,982 frames; within them the first minute has 1,800 labels and the nine others
    1,798 (labels ;00 and ;01 skipped). Frame 1,800 is 00:01:00;02, frame 17,982 is 00:10:00;00."""
    tens, rem = divmod(int(frames), _DF_10MIN)
    skipped = 18 * tens + (2 * ((rem - 2) // _DF_MIN) if rem >= 2 else 0)
    n = int(frames) + skipped  # the label as a 30 fps frame count
    f = n % 30
    s = n // 30
    return (s // 3600) % 24, (s // 60) % 60, s % 60, f


def df_label_to_frames(h: int, m: int, s: int, f: int) -> int:
    """29.97 fps drop-frame: label -> frame count since 00:00:00;00. Raises ``ValueError`` for a label that
    drop-frame skips (;00 and ;01 of a minute not divisible by ten)."""
    if f in (0, 1) and s == 0 and m % 10 != 0:
        raise ValueError(f"{h:02d}:{m:02d}:{s:02d};{f:02d} does not exist in drop-frame timecode (frames 00 and "
                         f"01 are skipped at minute {m}); the frame after {h:02d}:{m - 1 if m else 59:02d}:59;29 is "
                         f"{h:02d}:{m:02d}:00;02")
    minutes = 60 * h + m
    return ((h * 3600 + m * 60 + s) * 30 + f) - 2 * (minutes - minutes // 10)


_TC = re.compile(r"^(\d{1,2}):(\d{2}):(\d{2})(?:([:;.])(\d{1,3}))?$")


@dataclass(frozen=True)
class Timebase:
    """How a cue sheet writes programme instants: ``fps`` (one of :data:`FPS_CHOICES`), the programme's start
    timecode (``start``, in the same form: ``HH:MM:SS:FF``/``HH:MM:SS;FF`` with a frame rate, ``HH:MM:SS[.mmm]``
    with ``ms``) and, for recordings whose start is known, its wall-clock start ``start_utc`` (aware)."""

    fps: str = "ms"
    start: str | None = None
    start_utc: datetime | None = None

    def __post_init__(self) -> None:
        if self.fps not in FPS_CHOICES:
            raise BgmidError(f"--fps {self.fps}: choose one of {', '.join(FPS_CHOICES)}.")
        _ = self.start_offset  # a malformed start timecode fails here, when the options are read

    @property
    def drop_frame(self) -> bool:
        return self.fps == "29.97"

    @property
    def rate(self) -> Fraction | None:
        """Frames per second (exact), None for milliseconds."""
        return _RATES.get(self.fps)

    @property
    def start_offset(self) -> int | float:
        """The start timecode as frames (a frame rate) or seconds (``ms``); 0 without one."""
        if not self.start:
            return 0
        m = _TC.match(self.start.strip())
        if not m:
            raise BgmidError(f"--start-tc {self.start}: write it as HH:MM:SS:FF (HH:MM:SS;FF at 29.97 drop-frame) "
                             "or, with --fps ms, HH:MM:SS.mmm.")
        h, mi, s = int(m[1]), int(m[2]), int(m[3])
        sep, sub = m[4], m[5]
        if mi > 59 or s > 59 or h > 23:
            raise BgmidError(f"--start-tc {self.start}: hours 0-23, minutes and seconds 0-59.")
        if self.rate is None:
            if sep in (":", ";"):
                raise BgmidError(f"--start-tc {self.start} counts frames: give the frame rate too (--fps 25, "
                                 "29.97 or 30), or write HH:MM:SS.mmm.")
            return h * 3600 + mi * 60 + s + (float(f"0.{sub}") if sub else 0.0)
        if sep == ".":
            raise BgmidError(f"--start-tc {self.start}: with --fps {self.fps} write frames, HH:MM:SS:FF.")
        f = int(sub or 0)
        if f >= _NOMINAL[self.fps]:
            raise BgmidError(f"--start-tc {self.start}: frame {f} does not exist at {self.fps} fps "
                             f"(00-{_NOMINAL[self.fps] - 1:02d}).")
        if self.drop_frame:
            try:
                return df_label_to_frames(h, mi, s, f)
            except ValueError as exc:
                raise BgmidError(f"--start-tc {self.start}: {exc}.") from None
        return (h * 3600 + mi * 60 + s) * _NOMINAL[self.fps] + f

    def frames(self, seconds: float) -> int:
        """Programme seconds -> frames since the programme's first sample (nearest frame)."""
        assert self.rate is not None
        return math.floor(Fraction(max(0.0, float(seconds))) * self.rate + Fraction(1, 2))

    def label(self, frames: int) -> str:
        """A frame count (since 00:00:00:00) as SMPTE timecode; hours wrap at 24."""
        if self.drop_frame:
            h, m, s, f = df_frames_to_label(frames)
            return f"{h:02d}:{m:02d}:{s:02d};{f:02d}"
        n = _NOMINAL[self.fps]
        sec, f = divmod(int(frames), n)
        return f"{(sec // 3600) % 24:02d}:{(sec // 60) % 60:02d}:{sec % 60:02d}:{f:02d}"

    def tc(self, seconds: float) -> str:
        """The timecode of programme time ``seconds`` (after the start timecode)."""
        if self.rate is None:
            return format_ms(float(self.start_offset) + seconds)
        return self.label(int(self.start_offset) + self.frames(seconds))

    def duration(self, seconds: float) -> str:
        """A length in the same form (no start offset; drop-frame: the label of that many frames, as an edit
        system shows a clip's length)."""
        if self.rate is None:
            return format_ms(seconds)
        return self.label(self.frames(seconds))

    def utc(self, seconds: float) -> str:
        """Wall-clock UTC of programme time ``seconds`` (ISO 8601 with milliseconds and ``Z``); "" when the
        recording's start is not known."""
        if self.start_utc is None:
            return ""
        t = self.start_utc.astimezone(UTC) + timedelta(milliseconds=round(float(seconds) * 1000))
        return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"

    def to_dict(self) -> dict:
        return {"fps": self.fps, "drop_frame": self.drop_frame, "start_tc": self.tc(0.0),
                "start_utc": self.utc(0.0) or None}


def parse_utc(text: str) -> datetime:
    """``--start-utc``: an ISO 8601 instant (``2026-03-01T20:00:00Z``, ``...+01:00``); without a zone it is UTC."""
    try:
        t = datetime.fromisoformat(text.strip())
    except ValueError:
        raise BgmidError(f"--start-utc {text}: not an ISO 8601 time; write e.g. 2026-03-01T20:00:00Z "
                         "or 2026-03-01T21:00:00+01:00.") from None
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def parse_air_date(text: str) -> date:
    """``--air-date``: ``YYYY-MM-DD``."""
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise BgmidError(f"--air-date {text}: write the date as YYYY-MM-DD.") from None

