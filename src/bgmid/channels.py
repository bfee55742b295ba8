"""Many live channels on one machine: each in its own process, restarted if it dies, one status line each.

``channels.toml`` lists the channels::

    [[channel]]
    name = "news"                      # used in every record and as the output file's name
    url = "udp://239.1.1.1:5000"
    stream = "eng"                     # optional: the audio stream (index, language or pid=PID)
    separator = "none"                 # optional: this channel's separator (default: --separator)

Every channel runs :class:`bgmid.live.LiveMonitor` in a process of its own (``multiprocessing`` with *spawn*: no
state inherited, and one channel's crash or memory cannot take the others down). The index is opened by each
process for reading; its segments are memory-mapped, so the operating system shares their pages between the
channels instead of copying the index per channel. The supervisor (:func:`supervise`) restarts a process that
dies (doubling wait, up to a minute) and not one that ended on its own (``--idle-timeout``); SIGTERM/SIGINT are
passed on to the channels, which flush their open cues. Each channel reports its figures (connected, lag, cues
written today UTC, audio read) a few times a minute, shown as one status line per channel.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import sys
import threading
import time
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bgmid.errors import BgmidError

__all__ = ["Channel", "ChannelJob", "read_channels", "run_channels", "supervise"]


@dataclass(frozen=True)
class Channel:
    """One line-up entry of ``channels.toml``."""

    name: str
    url: str
    stream: int | str | None = None
    separator: str | None = None  #: None: the command line's --separator


def read_channels(path: str | os.PathLike) -> list[Channel]:
    """The ``[[channel]]`` tables of a TOML file; a bad file is one clear :class:`BgmidError`."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BgmidError(f"{p}: no such file (the channel list, TOML).") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise BgmidError(f"{p}: not valid TOML ({exc}).") from None
    rows = data.get("channel")
    if not isinstance(rows, list) or not rows:
        raise BgmidError(f"{p}: lists no channels; add [[channel]] tables with name and url.")
    out, names = [], set()
    for k, row in enumerate(rows, 1):
        unknown = set(row) - {"name", "url", "stream", "separator"}
        if not isinstance(row.get("name"), str) or not isinstance(row.get("url"), str) or not row["name"]:
            raise BgmidError(f"{p}: channel {k} needs a name and a url (strings).")
        if unknown:
            raise BgmidError(f"{p}: channel {row['name']}: unknown keys {sorted(unknown)} "
                             "(known: name, url, stream, separator).")
        if row["name"] in names or "/" in row["name"]:
            raise BgmidError(f"{p}: channel name {row['name']!r} repeats or contains '/' (it names a file).")
        names.add(row["name"])
        out.append(Channel(row["name"], row["url"], row.get("stream"), row.get("separator")))
    return out


@dataclass(frozen=True)
class ChannelJob:
    """Everything a channel's process needs (picklable: the process starts from nothing)."""

    channel: Channel
    db: str
    out: str  #: the channel's JSON-lines file
    rotate: str | None
    monitor: object  #: :class:`bgmid.monitor.MonitorConfig`
    live: object  #: :class:`bgmid.live.LiveConfig`
    separator: str = "none"
    device: str = "cpu"
    preset: str | None = None
    shifts: int = 1
    alteration: str = "none"
    status_s: float = 2.0  #: how often the channel reports its figures


def _channel_main(job: ChannelJob, status: mp.Queue, on_start=None) -> None:
    """A channel's process: the live monitor, records to its file, figures to the supervisor (``status.put``).
    ``on_start(live)``: called with the :class:`~bgmid.live.LiveMonitor` before it runs (a Ray actor keeps it to
    stop it; SIGTERM/SIGINT are handled only when this runs in a main thread)."""
    from bgmid.cli.live import live_alteration
    from bgmid.fingerprint.presets import QueryOptions
    from bgmid.index import open_index
    from bgmid.live import JsonlWriter, LiveMonitor
    from bgmid.monitor import Monitor
    from bgmid.separation.registry import resolve_separator

    name = job.channel.name
    writer = JsonlWriter(job.out, job.rotate)
    today: dict[str, int] = {}

    def record(rec: dict) -> None:
        writer.write(rec)
        if rec["type"] in ("cue", "cue_retract"):  # a retraction takes back a cue written
            day = rec["start_utc"][:10]
            today[day] = today.get(day, 0) + (1 if rec["type"] == "cue" else -1)

    sep = resolve_separator(job.separator, job.device)
    with open_index(job.db, preset=job.preset) as store:
        mon = Monitor(store, sep, job.monitor, QueryOptions(shifts=job.shifts),
                      separator_name="none" if sep is None else getattr(sep, "name", job.separator),
                      alteration=live_alteration(job.alteration))
        live = LiveMonitor(mon, job.channel.url, job.live, record)
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGTERM, signal.SIGINT):
                signal.signal(s, lambda *_: live.stop())
        if on_start is not None:
            on_start(live)
        done = threading.Event()

        def report() -> None:
            while not done.wait(job.status_s):
                st = live.stats
                status.put((name, {"up": st.connected, "lag_s": st.lag_s, "audio_s": st.programme_s,
                                   "cues_today": today.get(datetime.now(UTC).date().isoformat(), 0),
                                   "cues": st.cues, "gaps": st.gaps}))

        threading.Thread(target=report, daemon=True).start()
        try:
            live.run()
        finally:
            done.set()
            writer.close()
            st = live.stats
            status.put((name, {"up": False, "lag_s": st.lag_s, "audio_s": st.programme_s, "cues": st.cues,
                               "cues_today": today.get(datetime.now(UTC).date().isoformat(), 0), "gaps": st.gaps,
                               "ended": live.end_reason}))


def status_line(name: str, s: dict, restarts: int, width: int = 16) -> str:
    """``name  up  lag 0.4 s  cues today 12  audio 3600 s  gaps 0  restarts 0``."""
    state = s.get("state") or ("up" if s.get("up") else "down")
    return (f"{name[:width]:{width}s} {state:10s} lag {s.get('lag_s', 0.0):6.1f} s  cues today "
            f"{s.get('cues_today', 0):4d}  audio {s.get('audio_s', 0.0):8.0f} s  gaps {s.get('gaps', 0)}  "
            f"restarts {restarts}")


def supervise(jobs: list[ChannelJob], status_every_s: float = 10.0, restart_max_s: float = 60.0,
              log=None) -> dict[str, dict]:
    """Run every job in its own process until all have ended on their own, or SIGTERM/SIGINT (passed on to
    the channels, which flush). A process that dies (non-zero exit) is restarted after 1 s, doubling per
    death up to ``restart_max_s``. Prints a status line per channel every ``status_every_s`` to ``log``
    (default stderr). Returns the last figures of each channel."""
    log = log or sys.stderr
    ctx = mp.get_context("spawn")
    status: mp.Queue = ctx.Queue()
    procs: dict[str, mp.Process] = {}
    figures: dict[str, dict] = {j.channel.name: {"state": "starting"} for j in jobs}
    restarts = dict.fromkeys(figures, 0)
    waits = dict.fromkeys(figures, 1.0)
    due: dict[str, float] = dict.fromkeys(figures, 0.0)  # when to (re)start
    stopping = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stopping.set()) for s in (signal.SIGTERM, signal.SIGINT)}

    def say(text: str) -> None:
        print(f"bgmid monitor: {text}", file=log, flush=True)

    by_name = {j.channel.name: j for j in jobs}
    next_status = time.time() + status_every_s
    try:
        while True:
            now = time.time()
            for name, t in list(due.items()):
                if t <= now and not stopping.is_set():
                    p = ctx.Process(target=_channel_main, args=(by_name[name], status), name=f"bgmid-{name}",
                                    daemon=False)
                    p.start()
                    procs[name] = p
                    del due[name]
                    say(f"channel {name}: started (pid {p.pid}) on {by_name[name].channel.url}")
            for name, p in list(procs.items()):
                if p.is_alive():
                    continue
                del procs[name]
                if p.exitcode == 0 or stopping.is_set():
                    figures[name]["state"] = "ended"
                    say(f"channel {name}: ended ({figures[name].get('ended', 'stopped')})")
                else:
                    restarts[name] += 1
                    figures[name]["state"] = "restarting"
                    say(f"channel {name}: died (exit {p.exitcode}); restarting in {waits[name]:g} s")
                    due[name] = time.time() + waits[name]
                    waits[name] = min(2 * waits[name], restart_max_s)
            if not procs and not due:
                break
            if stopping.is_set():
                for p in procs.values():
                    if p.is_alive() and p.pid:
                        os.kill(p.pid, signal.SIGTERM)
                due.clear()
            try:
                while True:
                    name, fig = status.get(timeout=0.3)
                    figures[name] = {**fig, "state": None if "ended" not in fig else "ended"}
            except queue.Empty:
                pass
            if time.time() >= next_status:
                next_status = time.time() + status_every_s
                for name in figures:
                    print(status_line(name, figures[name], restarts[name]), file=log, flush=True)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        for p in procs.values():
            p.join(30)
    return {name: {**f, "restarts": restarts[name]} for name, f in figures.items()}


def run_channels(args, supervisor=None) -> int:
    """``bgmid monitor --channels CHANNELS.toml``: the command line's options for every channel; ``supervisor``
    (default :func:`supervise`, one process each) runs them (:func:`bgmid.cluster_channels.supervise_ray`)."""
    from bgmid.cli.monitor import monitor_config
    from bgmid.live import LIVE_BLOCK_S, LiveConfig

    chans = read_channels(args.channels)
    out_dir = Path(args.out) if args.out else Path(args.channels).parent
    if out_dir.suffix.lower() in (".jsonl", ".json", ".csv"):
        raise BgmidError(f"--out {args.out}: with --channels name a folder (each channel writes NAME.jsonl).")
    out_dir.mkdir(parents=True, exist_ok=True)
    config = monitor_config(args, block_s=LIVE_BLOCK_S)
    jobs = [ChannelJob(
        channel=c, db=str(args.db), out=str(out_dir / f"{c.name}.jsonl"), rotate=args.rotate, monitor=config,
        live=LiveConfig(name=c.name, stream=c.stream if c.stream is not None else args.stream,
                        read_timeout_s=args.read_timeout, idle_timeout_s=args.idle_timeout,
                        alteration_scan_s=args.alteration_scan),
        separator=c.separator or args.separator, device=args.device, preset=args.preset, shifts=args.shifts,
        alteration=args.alteration) for c in chans]
    final = (supervisor or supervise)(jobs, status_every_s=args.status_every)
    for name, f in final.items():
        print(f"bgmid monitor: channel {name}: {f.get('cues', 0)} cues, {f.get('gaps', 0)} signal losses, "
              f"{f.get('audio_s', 0.0):.1f} s of audio, {f['restarts']} restarts -> {out_dir / (name + '.jsonl')}",
              file=sys.stderr)
    return 0

