"""``bgmid monitor URL`` and ``bgmid monitor --channels``: live channels, cues written as they close."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path

from bgmid.errors import BgmidError


def cue_line(rec: dict) -> str:
    """One record as a terminal line: ``channel  UTC in-out  #id title  duration usage score`` (``updated`` after
    an update), a retraction, a gap or the alteration estimate."""
    ch = f"{rec['channel']}  " if rec.get("channel") else ""
    kind = rec["type"]
    if kind == "signal_loss":
        return f"{ch}{rec['start_utc'][11:19]}-{rec['end_utc'][11:19]}  -- signal lost {rec['duration_s']:.1f} s --"
    if kind == "cue_retract":
        into = f" (merged into #{rec['merged_into']})" if rec.get("merged_into") else ""
        return f"{ch}#{rec['cue_id']} retracted{into}"
    if kind == "alteration":
        return (f"{ch}alteration from the first {rec['from_s']:.0f} s: speed {rec['speed']:g}, tempo {rec['tempo']:g}, "
                f"pitch {rec['pitch_semitones']:+g} semitones")
    return (f"{ch}{rec['start_utc'][11:19]}-{rec['end_utc'][11:19]}  #{rec['seq']:<4d} {rec['title'][:34]:34s} "
            f"{rec['tc_in']}-{rec['tc_out']}  {rec['duration_s']:6.1f} s  {rec['usage']:10s} {rec['score']:5d}"
            f"{'  updated' if kind == 'cue_update' else ''}")


def live_alteration(text: str):
    """--alteration for a live source (:func:`bgmid.alterations.parse_alteration`): 'auto' is estimated from the
    channel's first --alteration-scan seconds (:class:`bgmid.live.LiveMonitor`)."""
    from bgmid.alterations import parse_alteration

    return parse_alteration(text)


def _status(live, done: threading.Event, every_s: float) -> None:
    """Every ``every_s`` a status line on stderr: connection, audio read, lag, cues written, the cues playing."""
    from bgmid.cuesheet import timecode

    while not done.wait(every_s):
        st = live.stats
        now = ", ".join(f"{t[:24]} since {timecode(a)} ({d:.0f} s)" for t, a, d in live.playing()) or "-"
        held = live.held_s()
        if held:
            now = f"- (holding {held:.0f} of {live.cfg.alteration_scan_s:g} s to estimate the alteration)"
        print(f"bgmid monitor: {live.cfg.name}: {'up' if st.connected else 'down'}  audio {st.programme_s:.0f} s  "
              f"lag {st.lag_s:.1f} s  cues {st.cues}  gaps {st.gaps}  playing: {now}", file=sys.stderr, flush=True)


def cmd_live(args: argparse.Namespace) -> int:
    from bgmid.cli.common import audio_warnings, resolve_separator
    from bgmid.cli.monitor import monitor_config
    from bgmid.fingerprint.presets import QueryOptions
    from bgmid.index import open_index
    from bgmid.live import LIVE_BLOCK_S, JsonlWriter, LiveConfig, LiveMonitor
    from bgmid.monitor import Monitor
    from bgmid.paths import shown

    if args.channels:
        if args.inputs:
            raise BgmidError("--channels: the channels come from the TOML file; name no INPUT besides it.")
        if getattr(args, "ray", None):
            from bgmid.cluster_channels import run_channels_ray

            return run_channels_ray(args)
        from bgmid.channels import run_channels

        return run_channels(args)
    if len(args.inputs) != 1:
        raise BgmidError(f"a live run monitors one source (got {len(args.inputs)}); use --channels for several.")
    if args.out and not args.out.lower().endswith(".jsonl"):
        raise BgmidError(f"--out {args.out}: a live stream writes JSON lines; name a .jsonl file.")
    if args.truth or args.plot:
        raise BgmidError("--truth and --plot need a whole programme; run them on a recording.")
    source = args.inputs[0]
    config = monitor_config(args, block_s=LIVE_BLOCK_S)
    live_cfg = LiveConfig(name=args.name or source, stream=args.stream, read_timeout_s=args.read_timeout,
                          idle_timeout_s=args.idle_timeout, alteration_scan_s=args.alteration_scan)
    sep = resolve_separator(args.separator, args.device)
    sep_name = "none" if sep is None else getattr(sep, "name", args.separator)
    writer = JsonlWriter(args.out, args.rotate) if args.out else None

    shown_lines: dict[int, str] = {}  # cue_id -> its terminal line: an update that shows nothing new is not shown

    def record(rec: dict) -> None:
        if writer is not None:
            writer.write(rec)
        if args.json:
            print(json.dumps(rec, ensure_ascii=False), flush=True)
            return
        line = cue_line(rec)
        if rec["type"] in ("cue", "cue_update"):
            if shown_lines.get(rec["cue_id"]) == line.removesuffix("  updated"):
                return
            shown_lines[rec["cue_id"]] = line.removesuffix("  updated")
            if len(shown_lines) > 1000:  # updates come within a minute: the oldest are not needed (bounded memory)
                del shown_lines[next(iter(shown_lines))]
        elif rec["type"] == "cue_retract":
            shown_lines.pop(rec["cue_id"], None)
        print(line, flush=True)

    with open_index(args.db, preset=args.preset) as store, audio_warnings("monitor"):
        mon = Monitor(store, sep, config, QueryOptions(shifts=args.shifts), separator_name=sep_name,
                      alteration=live_alteration(args.alteration))
        live = LiveMonitor(mon, source, live_cfg, record)
        previous = {s: signal.signal(s, lambda *_: live.stop()) for s in (signal.SIGTERM, signal.SIGINT)}
        print(f"bgmid monitor: {live_cfg.name}: reading {source}", file=sys.stderr, flush=True)
        done = threading.Event()
        if sys.stderr.isatty() or os.environ.get("BGMID_PROGRESS"):
            threading.Thread(target=_status, args=(live, done, args.status_every), daemon=True).start()
        try:
            stats = live.run()
        finally:
            done.set()
            for s, h in previous.items():
                signal.signal(s, h)
            if writer is not None:
                writer.close()
    out = f"; cues in {shown(Path(args.out))}" if args.out else ""
    print(f"bgmid monitor: {live_cfg.name}: ended ({live.end_reason}): {stats.cues} cues, {stats.gaps} signal "
          f"losses, {stats.programme_s:.1f} s of audio{out}", file=sys.stderr, flush=True)
    return 0
