"""``bgmid monitor``: programmes in, a background-music cue sheet out (CSV / JSON / table), optionally scored."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bgmid.alterations import Alteration
from bgmid.cli.common import add_db_argument, progress, resolve_separator
from bgmid.fingerprint.presets import QueryOptions
from bgmid.monitor import MonitorConfig
from bgmid.timecode import FPS_CHOICES

_D = MonitorConfig()


def add_monitor_options(p: argparse.ArgumentParser) -> None:
    """The options of a monitoring run (index, separator, windows, alteration), shared by ``bgmid monitor`` and
    ``bgmid batch`` so the two always accept the same ones; :func:`monitor_settings` reads them back."""
    add_db_argument(p)
    p.add_argument(
        "--separator", default="auto", metavar="NAME|PATH|none",
        help="music-speech separator run before fingerprinting: a model name (unet, wave-unet, mmdensenet, "
        "wave-densenet; spleeter, pretrained, after 'bgmid models fetch spleeter'), a checkpoint .pt, or 'none' "
        "(raw mix only: much faster, weaker under loud speech). "
        "Default 'auto': the shipped default model when its weights are installed, else none",
    )
    p.add_argument("--device", default="cpu", help="torch device for the separator (default cpu)")
    p.add_argument(
        "--threads", type=int, default=_D.separator_threads,
        help="CPU threads for the separator (default %(default)s: fastest when cores are shared; 0: torch's own)",
    )
    p.add_argument("--preset", default=None, help="fingerprint preset the index must have (default: the index's)")
    p.add_argument("--window", type=float, default=_D.window_s, help="match window, s (default %(default)s)")
    p.add_argument("--hop", type=float, default=_D.hop_s, help="window hop, s (default %(default)s)")
    p.add_argument(
        "--max-gap", type=float, default=_D.max_gap_s,
        help="bridge gaps up to this long inside a cue (same track, same position), s (default %(default)s)",
    )
    p.add_argument("--min-cue", type=float, default=_D.min_cue_s, help="drop shorter cues, s (default %(default)s)")
    p.add_argument("--shifts", type=int, default=1,
                   help="STFT analysis phases per window (more: slower, more robust under noise; default %(default)s)")
    p.add_argument(
        "--alteration", default="auto", metavar="auto|none|speed=R,tempo=R,pitch=S",
        help="how the programme airs its music, undone for the whole programme. 'auto' (default): estimated "
        "once from ten excerpts of the first 5 minutes (a 24 fps film aired at 25 fps is sped up throughout: "
        "speed=1.041667); 'none': as indexed; or given, e.g. 'speed=25/24', 'tempo=1.03', 'pitch=-1' "
        "(semitones). Cues report track times in the track's own time line",
    )


def monitor_settings(args: argparse.Namespace) -> tuple[MonitorConfig, QueryOptions, Alteration | str | None]:
    """The :class:`MonitorConfig`, query options and alteration that :func:`add_monitor_options` gave; a bad
    combination is a one-line :class:`~bgmid.errors.BgmidError`."""
    from bgmid.alterations import parse_alteration
    from bgmid.errors import BgmidError

    if args.window <= 0 or not 0 < args.hop <= args.window:
        raise BgmidError("--window must be > 0 and --hop in (0, window].")
    config = MonitorConfig(window_s=args.window, hop_s=args.hop, max_gap_s=args.max_gap, min_cue_s=args.min_cue,
                           separator_threads=args.threads)
    return config, QueryOptions(shifts=args.shifts), parse_alteration(args.alteration)


def monitor_config(args: argparse.Namespace, block_s: float | None = None) -> MonitorConfig:
    """The monitor's configuration from the command line (:func:`monitor_settings`) with its block length:
    --block, else ``block_s`` (None: the file monitor's)."""
    from dataclasses import replace

    from bgmid.errors import BgmidError

    config = monitor_settings(args)[0]
    block = getattr(args, "block", None) or block_s or config.block_s
    if block <= 0:
        raise BgmidError(f"--block {block:g}: must be > 0 s.")
    return replace(config, block_s=block)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "monitor",
        help="cue sheet of the indexed music in broadcast programmes",
        description=(
            "Find every use of indexed music in programmes of any length and format (WAV, MP3, AAC, MP4, "
            "MPEG-TS, ...): which track, programme in/out, track in/out, duration, background or featured. "
            "Audio is streamed in blocks (memory does not grow with length), optionally separated into music "
            "and speech, fingerprinted, matched in sliding windows, and the window matches are merged into cues."
        ),
        epilog=(
            "Output: a table on the terminal; --out FILE.csv or FILE.json writes the cue sheet (JSON: one object "
            "per programme, a list for several). --truth scores the cue sheet (BAF seconds-level P/R/F1, cue "
            "recall, boundary error). An unreadable input is named on stderr and skipped (the others still get "
            "their output) and makes the exit status 1. "
            "Example: bgmid monitor --db lib/ show.mp4 --out show.csv --plot show.png"
        ),
    )
    add_monitor_options(p)
    p.add_argument("--out", metavar="FILE", help="write the cue sheet to FILE.csv or FILE.json")
    p.add_argument("--json", action="store_true", help="print each programme's cue sheet as one JSON line")
    p.add_argument("--truth", metavar="CUES.csv", help="ground-truth cue CSV: print precision/recall/F1 against it")
    p.add_argument(
        "--min-level-db", type=float, default=None,
        help="with --truth: score only truth cues at least this loud relative to speech, dB (e.g. -10; default: "
        "all cues, and the cues >= -10 dB on a second line)",
    )
    p.add_argument("--plot", metavar="FILE.png", help="draw the programme timeline (levels, cues, truth)")
    g = p.add_argument_group("cue sheet conventions (broadcast reporting; see docs/monitor.md)")
    g.add_argument(
        "--fps", default="ms", choices=FPS_CHOICES,
        help="timecodes in the table, CSV and JSON: 'ms' (default) HH:MM:SS.mmm, or SMPTE HH:MM:SS:FF at 25 or "
        "30 frames per second, or HH:MM:SS;FF drop-frame at 29.97 (NTSC); hours wrap at 24",
    )
    g.add_argument(
        "--start-tc", metavar="TC", default=None,
        help="timecode of the programme's first sample, e.g. 10:00:00:00 (29.97: 10:00:00;00; ms: 10:00:00.000): "
        "the sheet's timecodes are then the file's own. Seconds columns stay 0-based",
    )
    g.add_argument(
        "--start-utc", metavar="ISO8601", default=None,
        help="wall-clock start of a recording, e.g. 2026-03-01T20:00:00Z or 2026-03-01T21:00:00+01:00 (no zone: "
        "UTC): adds utc_in/utc_out (ISO 8601, ms) to every cue. One input only",
    )
    g.add_argument("--production", default="", help="production (series) title written in every row (default: empty)")
    g.add_argument("--episode", default="", help="episode title (default: each programme's file name)")
    g.add_argument(
        "--air-date", metavar="YYYY-MM-DD", default="",
        help="first air date written in every row (default: the date of --start-utc, else empty)",
    )
    g.add_argument(
        "--sheet", default="bgmid", choices=("bgmid", "society"),
        help="CSV layout: 'bgmid' (default: every column, reporting columns included) or 'society': only the "
        "columns of the usual rights-society templates (Production Title, Episode Title, Air Date, Cue #, Cue "
        "Title, Composer(s), Publisher(s), Artist, ISRC, ISWC, Usage BI/VI, Duration MM:SS, Timecode In/Out, "
        "UTC In/Out, Source)",
    )
    p.add_argument(
        "--stream", default=None, metavar="INDEX|LANG|pid=PID",
        help="audio stream of a container or TS with several (multi-programme TS, dubbed film): its index among "
        "the audio streams (0: the first, the default), a language tag (eng, fra) or a TS packet id (pid=0x101)",
    )
    p.add_argument(
        "--surround", choices=("auto", "mono", "centre"), default="auto",
        help="surround audio (5.1, 7.1) keeps the dialogue in the centre channel: 'auto' (default) also "
        "fingerprints the other channels without the centre, a dialogue-poor signal pooled with the mono mix "
        "(quiet music under loud dialogue is found more often); 'mono' the downmix only; 'centre' as auto but an "
        "error for audio without a centre channel. Applies to the first audio stream (not with --stream)",
    )
    live = p.add_argument_group(
        "live streams",
        "An INPUT that is a URL (udp://, rtp://, srt://, http(s)://, an HLS .m3u8) or a capture device "
        "(device://FORMAT/NAME: device://alsa/hw:1,0, device://pulse/default, device://lavfi/sine=f=440) is "
        "monitored live until it ends (--idle-timeout) or SIGTERM/SIGINT, which flush the open cues: each cue is "
        "printed, and with --out FILE.jsonl written as one JSON line, as soon as it closes (about --max-gap + "
        "--window + --block after the music stops; a cue_update record amends it when a same-offset link up to "
        "30 s later makes it longer); a dropped stream is reconnected with back-off and each gap written as a "
        "signal_loss record. srt:// and devices PyAV lacks are read through the ffmpeg program. --out FILE.jsonl "
        "on a file runs the same live pipeline on it. Record types: docs/live.md.",
    )
    live.add_argument("--name", default="", help="channel name written in every record (default: the URL)")
    live.add_argument(
        "--idle-timeout", type=float, default=None, metavar="S",
        help="end after S seconds without audio (default: never; keep reconnecting)",
    )
    live.add_argument(
        "--rotate", choices=("hour", "day"), default=None,
        help="one --out file per UTC hour or day of the cues' start (show.jsonl -> show-20261201T13.jsonl; "
        "default: one file)",
    )
    live.add_argument(
        "--read-timeout", type=float, default=5.0, metavar="S",
        help="no packet for S seconds is a signal loss (default %(default)s)",
    )
    live.add_argument(
        "--alteration-scan", type=float, default=120.0, metavar="S",
        help="with --alteration auto: seconds of a channel's first audio the estimate reads; they are held back "
        "meanwhile, so the first cues come that much later (default %(default)s)",
    )
    live.add_argument(
        "--block", type=float, default=None, metavar="S",
        help="audio analysed at once, s (default: 60 for files, 10 live: a cue is settled at most one block late)",
    )
    live.add_argument(
        "--channels", metavar="CHANNELS.toml",
        help="monitor many live channels at once, each in its own process (restarted if it dies) with the shared "
        "index: a TOML file of [[channel]] tables with name, url and optional stream, separator; cues go to "
        "--out DIR/<name>.jsonl (default: the TOML's folder). A status line per channel: up, lag, cues today",
    )
    live.add_argument(
        "--ray", metavar="local|ADDRESS", default=None,
        help="with --channels: run each channel as a Ray actor ('local': an embedded cluster here, or a cluster "
        "address), spread over the nodes by load and restarted if it dies (needs bgmid[cluster])",
    )
    live.add_argument(
        "--status-every", type=float, default=10.0, metavar="S",
        help="status lines (connection, lag, cues, the cues playing now) every S seconds on a terminal; with "
        "--channels one line per channel, always (default %(default)s)",
    )
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="programme files (audio or video) or one stream URL")
    p.set_defaults(func=cmd_monitor)


def cmd_monitor(args: argparse.Namespace) -> int:
    from bgmid.audio import AudioError, info, is_url
    from bgmid.cli.common import audio_warnings
    from bgmid.cuesheet import evaluate, format_metrics, format_table, read_truth, result_to_dict, write_csv, write_json
    from bgmid.errors import BgmidError
    from bgmid.index import open_index
    from bgmid.monitor import Monitor
    from bgmid.paths import shown

    if args.channels or any(is_url(i) for i in args.inputs) or (args.out or "").lower().endswith(".jsonl"):
        from bgmid.cli.live import cmd_live

        return cmd_live(args)
    if not args.inputs:
        raise BgmidError("name at least one programme file, a stream URL or --channels CHANNELS.toml.")
    if args.out and Path(args.out).suffix.lower() not in (".csv", ".json"):
        raise BgmidError(f"--out {args.out}: name a .csv or .json file, or .jsonl for live JSON lines (the "
                         "extension picks the format).")
    if args.plot and Path(args.plot).suffix.lower() not in (".png", ".pdf", ".svg"):
        raise BgmidError(f"--plot {args.plot}: name a .png, .pdf or .svg file.")
    config, options, alteration = monitor_settings(args)
    config = monitor_config(args)
    sheet = sheet_options(args)
    sep = resolve_separator(args.separator, args.device)
    sep_name = "none" if sep is None else getattr(sep, "name", args.separator)
    truth_all = read_truth(args.truth) if args.truth else None
    failed: list[str] = []  # a bad input is named and skipped; the others still get their cue sheets

    def fail(path: str, exc: Exception) -> None:
        print(f"bgmid monitor: skipped: {exc}", file=sys.stderr, flush=True)
        failed.append(path)

    results = []
    total = None
    with open_index(args.db, preset=args.preset) as store, audio_warnings("monitor"):
        durations: list[tuple[str, float]] = []
        for path in args.inputs:  # header reads: an unreadable input is named before any work
            try:
                durations.append((path, info(path, args.stream).duration_s))
            except AudioError as exc:
                fail(path, exc)
        mon = Monitor(store, sep, config, options, separator_name=sep_name, alteration=alteration)
        bar = progress(total=round(sum(d for _, d in durations), 1) or None, desc="monitor", unit="s")
        done = 0.0
        with bar:
            for path, duration in durations:
                bar.set_postfix_str(shown(Path(path).name)[-30:])

                def tick(sec: float, base: float = done) -> None:
                    bar.n = round(base + sec, 1)
                    bar.refresh()

                try:
                    res = mon.run(path, on_progress=tick, stream=args.stream, surround=args.surround)
                except AudioError as exc:
                    fail(path, exc)
                    done += duration
                    continue
                done += res.duration_s
                results.append(res)
        for k, res in enumerate(results):
            if args.json:
                print(json.dumps(result_to_dict(res, options=sheet)))
            else:
                print(format_table(res, timebase=sheet.timebase))
            if truth_all is not None:
                truth = read_truth(args.truth, programme=res.programme)
                m = evaluate(res.cues, truth, res.duration_s, min_level_db=args.min_level_db)
                if total is None:
                    total = m
                else:
                    total = total + m
                text = format_metrics(m, label="truth" if len(results) == 1 else Path(res.programme).name)
                print(text, file=sys.stderr if args.json else sys.stdout)
                if args.min_level_db is None:
                    m10 = evaluate(res.cues, truth, res.duration_s, min_level_db=-10.0)
                    print(format_metrics(m10, label="cues >= -10 dB"), file=sys.stderr if args.json else sys.stdout)
            if args.plot:
                from bgmid.plot import plot_timeline

                out = Path(args.plot)
                if len(results) > 1:  # one picture per programme, named after it (numbered if names repeat)
                    stems = [Path(r.programme).stem for r in results]
                    tag = stems[k] if stems.count(stems[k]) == 1 else f"{k + 1}-{stems[k]}"
                    out = out.with_name(f"{out.stem}-{tag}{out.suffix}")
                truth = read_truth(args.truth, programme=res.programme) if args.truth else None
                plot_timeline(res, out, truth=truth)
                print(f"plot: {shown(out)}", file=sys.stderr)
    if total is not None and len(results) > 1:
        print(format_metrics(total, label="all programmes"), file=sys.stderr if args.json else sys.stdout)
    if args.out and results:
        (write_json if Path(args.out).suffix.lower() == ".json" else write_csv)(results, args.out, sheet)
        print(f"cue sheet: {shown(args.out)} ({sum(len(r.cues) for r in results)} cues)", file=sys.stderr)
    if failed:
        print(f"bgmid monitor: {len(failed)} of {len(args.inputs)} inputs failed: "
              + ", ".join(shown(f) for f in failed), file=sys.stderr)
        return 1
    return 0


def sheet_options(args: argparse.Namespace):
    """The cue sheet's conventions from the command line (a malformed timecode or date is a one-line error)."""
    from bgmid.cuesheet import SheetOptions
    from bgmid.errors import BgmidError
    from bgmid.timecode import Timebase, parse_air_date, parse_utc

    if args.start_utc and len(args.inputs) > 1:
        raise BgmidError("--start-utc gives one recording's start: monitor one input at a time with it.")
    if args.sheet == "society" and args.out and Path(args.out).suffix.lower() != ".csv":
        raise BgmidError("--sheet society is a CSV layout: name a .csv file with --out.")
    tb = Timebase(args.fps, args.start_tc, parse_utc(args.start_utc) if args.start_utc else None)
    air = parse_air_date(args.air_date).isoformat() if args.air_date else ""
    return SheetOptions(tb, args.production, args.episode, air, args.sheet)
