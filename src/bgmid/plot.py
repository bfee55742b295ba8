"""Programme timeline picture: level curves, detected cues labelled by title, ground truth underneath.

People check a cue sheet by looking: a cue that starts where the music visibly rises, or a truth cue with no
detection next to it, is seen at a glance. Drawn with matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bgmid.cuesheet import TruthCue, programme_title, same_track, timecode
from bgmid.monitor import MonitorResult

__all__ = ["plot_timeline"]


def _time_axis(ax, duration_s: float) -> None:
    """Tick labels as timecodes (minutes for long programmes)."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(nbins=12, steps=[1, 2, 3, 5, 6, 10]))
    fmt = (lambda v, _: timecode(v)[:8]) if duration_s >= 600 else (lambda v, _: timecode(v)[3:10])
    ax.xaxis.set_major_formatter(FuncFormatter(fmt))


def plot_timeline(
    result: MonitorResult,
    out: str | os.PathLike,
    truth: Sequence[TruthCue] | None = None,
    title: str | None = None,
) -> Path:
    """Draw ``result`` (and ``truth`` when given) to ``out`` (PNG/PDF/SVG by extension); return the path."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    dur = max(result.duration_s, 1.0)
    # one row per distinct track (detected or true), in order of first appearance
    rows: list[str] = []
    names: dict[str, str] = {}

    def row_of(key: str, name: str) -> int:
        if key not in rows:
            rows.append(key)
            names[key] = name
        return rows.index(key)

    det_rows = []
    for c in result.cues:
        key = next((t.track for t in truth or [] if same_track(c, t)), f"index:{c.track_id}")
        det_rows.append(row_of(key, c.title or key))
    tru_rows = [row_of(t.track, t.title or t.track) for t in truth or []]
    n_rows = max(1, len(rows))
    height = 2.2 + 0.32 * n_rows
    fig, (ax0, ax1) = plt.subplots(
        2, 1, figsize=(14, height + 1.6), sharex=True, gridspec_kw={"height_ratios": [1.6, height]}
    )
    t = np.arange(result.level_db.size) + 0.5
    ax0.plot(t, result.level_db, color="0.45", lw=0.8, label="programme")
    if result.music_db is not None and result.speech_db is not None:
        ax0.plot(t, result.speech_db, color="tab:blue", lw=0.8, label="speech (separated)")
        ax0.plot(t, result.music_db, color="tab:orange", lw=0.8, label="music (separated)")
    lo = np.percentile(result.level_db, 2) - 6 if result.level_db.size else -80
    ax0.set_ylim(max(-90.0, lo), 0)
    ax0.set_ylabel("level, dBFS")
    ax0.legend(loc="upper right", fontsize=7, ncol=3)
    ax0.grid(alpha=0.3)
    for c, r in zip(result.cues, det_rows):
        y = r + 0.15
        col = "tab:red" if c.usage == "featured" else "tab:green"
        ax1.broken_barh([(c.programme_start_s, c.duration_s)], (y, 0.35), facecolors=col, alpha=0.85)
        label = f"{c.seq}. {c.title}" + (f" (x{c.loops + 1})" if c.loops else "")
        ax1.text(c.programme_start_s, y + 0.4, label, fontsize=7, va="bottom", clip_on=True)
    for tc, r in zip(truth or [], tru_rows):
        ax1.broken_barh([(tc.start_s, tc.duration_s)], (r - 0.3, 0.35), facecolors="0.55", alpha=0.7)
        if tc.level_db is not None:
            ax1.text(tc.end_s, r - 0.3, f" {tc.level_db:+.0f} dB", fontsize=6, va="bottom", color="0.35",
                     clip_on=True)
    ax1.set_ylim(-0.5, n_rows)
    ax1.set_yticks(range(n_rows))
    ax1.set_yticklabels([names[k][:28] for k in rows] if rows else [""], fontsize=7)
    ax1.invert_yaxis()
    ax1.set_xlim(0, dur)
    ax1.grid(axis="x", alpha=0.3)
    from matplotlib.patches import Patch

    handles = [
        Patch(color="tab:green", label="detected, background"),
        Patch(color="tab:red", label="detected, featured"),
    ]
    if truth is not None:
        handles.append(Patch(color="0.55", label="ground truth"))
    ax1.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.09 * 6 / (height + 1.6) - 0.1),
               fontsize=7, ncol=3, frameon=False)
    _time_axis(ax1, dur)
    ax1.set_xlabel("programme time")
    fig.suptitle(title or f"{programme_title(result.programme)}: {len(result.cues)} cues", fontsize=10)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
