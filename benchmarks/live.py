"""Live monitoring benchmark: memory over a long accelerated run, latency and lag on the air, channels per machine.

ffmpeg streams a generated programme (``bgmid data programme``'s, from the real corpus: ``prog_600s_0.wav`` of the
monitor benchmark, encoded once as AAC in MPEG-TS and sent as it is) on 127.0.0.1 to
:class:`bgmid.live.LiveMonitor`, run in this process:

* ``long``: the programme looped ``--loops`` times, AAC in MPEG-TS over HTTP (ffmpeg ``-listen 1``; TCP, so a
  slower monitor slows the sender instead of losing audio) at ``--rate`` times real time. Resident memory
  (VmRSS) is sampled every second against the audio read: it must level off, not grow with the hours. The
  process CPU time per second of audio is the per-channel cost; one 2-core machine holds about
  ``2 * 0.8 / cost`` channels (80 % of both cores, leaving headroom for decoding bursts and the OS): an
  estimate from the measured cost, not a run of that many channels.
* ``realtime``: ``--seconds`` of the programme over UDP at real time (``-re``): for each cue, the delay from its
  end on the air (``end_utc`` of its settled record: when that audio arrived) to its first JSON line
  (``emitted_utc``: written once settled but for a same-offset link) and to its last one (a ``cue_update`` when
  a link or the usage estimate changed it), and the lag behind real time (``LiveStats.lag_s``: from a block's
  last audio arriving to the end of its analysis), sampled every second; with and without a separator.
* ``channels``: ``--n`` channels at once, each its own process (as ``monitor --channels`` runs them) with its
  own ffmpeg sender over HTTP at ``--rate`` times real time: how much audio the machine gets through
  (``realtime_channels``: the sum of each channel's audio seconds per wall second, i.e. how many real-time
  channels it would hold) and each channel's lag. A channel that keeps up reaches ``--rate``; when the machine
  is full they fall below it together.

    python benchmarks/live.py long --loops 6 --rate 30 --separator none
    python benchmarks/live.py realtime --seconds 240 --separator none
    python benchmarks/live.py realtime --seconds 240 --separator unet
    python benchmarks/live.py channels --n 4 --rate 60 --loops 1 --separator none
    python benchmarks/live.py channels --n 4 --rate 10 --loops 1 --separator unet

Results are merged into ``benchmarks/results/live.json`` (one entry per mode and separator).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import numpy as np

from bgmid.data.corpus import default_root
from bgmid.index import open_index
from bgmid.live import JsonlWriter, LiveConfig, LiveMonitor
from bgmid.monitor import Monitor
from bgmid.separation import resolve_separator

RESULTS = Path(__file__).parent / "results" / "live.json"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _private_mb() -> float:
    """Memory of this process no other process shares (Private_Clean + Private_Dirty): what one more channel
    costs, the memory-mapped index and shared libraries being in the page cache once."""
    kb = 0
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
        if line.startswith(("Private_Clean:", "Private_Dirty:")):
            kb += int(line.split()[1])
    return kb / 1024


def _ts(t: str) -> float:
    return datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp()


def _as_ts(ffmpeg: str, prog: Path) -> Path:
    """The programme as AAC 128 kb/s in MPEG-TS (what a broadcaster sends), made once in the temp folder."""
    import tempfile

    ts = Path(tempfile.gettempdir()) / "bgmid-bench-live" / f"{prog.stem}-{prog.stat().st_size}.ts"
    if not ts.exists():
        ts.parent.mkdir(parents=True, exist_ok=True)
        part = ts.with_suffix(f".{os.getpid()}.part")
        subprocess.run([ffmpeg, "-loglevel", "error", "-y", "-i", str(prog), "-c:a", "aac", "-b:a", "128k", "-f",
                        "mpegts", str(part)], check=True)
        part.rename(ts)
    return ts


def run(args: argparse.Namespace) -> dict:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        sys.exit("ffmpeg is needed (scripts/system-deps.sh)")
    prog = Path(args.programme)
    ts = _as_ts(ffmpeg, prog)  # encoded once: the senders copy it (an AAC encoder at 60x would be the bottleneck)
    port = _port()
    if args.mode == "long":
        url = f"http://127.0.0.1:{port}/live.ts"
        cmd = [ffmpeg, "-loglevel", "error", "-stream_loop", str(args.loops - 1), "-readrate", str(args.rate),
               "-i", str(ts), "-c", "copy", "-f", "mpegts", "-listen", "1", url]
    else:
        url = f"udp://127.0.0.1:{port}"
        cmd = [ffmpeg, "-loglevel", "error", "-re", "-t", str(args.seconds), "-i", str(ts), "-c", "copy",
               "-f", "mpegts", f"{url}?pkt_size=1316"]
    sep = resolve_separator(args.separator, "cpu")
    records: list[dict] = []
    out = JsonlWriter(args.out) if args.out else None

    def on_record(r: dict) -> None:
        records.append(r)
        if out is not None:
            out.write(r)

    samples: list[tuple[float, float, float, float]] = []  # (wall s, audio s, rss MB, lag s)
    with open_index(args.db) as store:
        mon = Monitor(store, sep, LiveMonitor.live_config(), separator_name=args.separator)
        live = LiveMonitor(mon, url, LiveConfig(name="bench", idle_timeout_s=args.idle, read_timeout_s=3.0),
                           on_record)
        done = threading.Event()
        t0 = time.time()

        def sample() -> None:
            while not done.wait(1.0):
                samples.append((time.time() - t0, live.stats.programme_s, _rss_mb(), live.stats.lag_s))

        senders: list[subprocess.Popen] = []
        # HTTP: the server first (the reader retries until it listens); UDP: once the reader has bound the socket
        delay = 0.0 if args.mode == "long" else 1.5
        threading.Timer(delay, lambda: senders.append(subprocess.Popen(cmd, stdin=subprocess.DEVNULL))).start()
        threading.Thread(target=sample, daemon=True).start()
        cpu0 = time.process_time()
        stats = live.run()
        cpu = time.process_time() - cpu0
        private = _private_mb()
        done.set()
        wall = time.time() - t0
        for p in senders:
            p.kill()
            p.wait()
    if out is not None:
        out.close()
    cues = [r for r in records if r["type"] == "cue"]
    s = np.array([x for x in samples if x[1] > 0] or [(0, 0, 0, 0)], float)
    res = {
        "mode": args.mode, "separator": args.separator, "programme": prog.name, "audio_s": round(stats.programme_s, 1),
        "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "cues": len(cues), "signal_losses": stats.gaps,
        "cpu_per_audio_s": round(cpu / max(stats.programme_s, 1e-9), 4),
        "channels_per_2_cores_estimate": int(2 * 0.8 / max(cpu / max(stats.programme_s, 1e-9), 1e-9)),
        "rss_mb": {"after_10_min_audio": round(float(np.interp(600.0, s[:, 1], s[:, 2])), 1),
                   "max": round(float(s[:, 2].max()), 1), "last": round(float(s[-1, 2]), 1),
                   "private_at_end": round(private, 1),
                   "by_audio_hour": [[round(float(a) / 3600, 2), round(float(r), 1)]
                                     for _, a, r, _ in s[:: max(1, len(s) // 12)]]},
        "lag_s": {"median": round(float(np.median(s[:, 3])), 2), "p95": round(float(np.percentile(s[:, 3], 95)), 2),
                  "max": round(float(s[:, 3].max()), 2)},
    }
    done_at = next((w for w, a, _, _ in samples if a >= stats.programme_s - 0.5), wall)  # last audio analysed
    res["busy_s"] = round(done_at, 1)
    res["speed_x"] = round(stats.programme_s / max(done_at, 1e-9), 2)  # audio seconds per wall second
    if args.mode == "long":
        res.update(loops=args.loops, rate=args.rate)
    else:
        first: dict[int, dict] = {}
        last: dict[int, dict] = {}
        for r in records:
            if r["type"] in ("cue", "cue_update"):
                first.setdefault(r["cue_id"], r)
                last[r["cue_id"]] = r
            elif r["type"] == "cue_retract":
                first.pop(r["cue_id"], None)
                last.pop(r["cue_id"], None)
        # from the music's end on the air (the settled record's end) to the cue's first and last lines
        lat1 = [_ts(first[k]["emitted_utc"]) - _ts(last[k]["end_utc"]) for k in last]
        lat2 = [_ts(last[k]["emitted_utc"]) - _ts(last[k]["end_utc"]) for k in last]
        flushed = [k for k in last if _ts(last[k]["emitted_utc"]) > t0 + wall - args.idle - 1.0]
        res["cues"] = len(last)
        res["records"] = {t: sum(r["type"] == t for r in records) for t in ("cue", "cue_update", "cue_retract")}
        res["latency_s"] = {"first_line_per_cue": [round(x, 1) for x in lat1],
                            "last_line_per_cue": [round(x, 1) for x in lat2],
                            "flushed_at_the_end": flushed,
                            "first_line_median": round(float(np.median(lat1)), 1) if lat1 else None,
                            "first_line_max_before_the_end": round(max((x for k, x in zip(last, lat1, strict=True)
                                                                        if k not in flushed), default=0.0), 1)}
    return res


def channels(args: argparse.Namespace) -> dict:
    """``--n`` benchmark processes in ``long`` mode at once (each its own sender and LiveMonitor), aggregated."""
    import tempfile

    _as_ts(shutil.which("ffmpeg") or sys.exit("ffmpeg is needed"), Path(args.programme))  # once, for all senders
    with tempfile.TemporaryDirectory() as tmp:
        outs = [Path(tmp) / f"ch{k}.json" for k in range(args.n)]
        procs = [subprocess.Popen([sys.executable, __file__, "long", "--db", args.db, "--programme", args.programme,
                                   "--separator", args.separator, "--loops", str(args.loops), "--rate", str(args.rate),
                                   "--idle", str(args.idle), "--result", str(o)]) for o in outs]
        t0 = time.time()
        for p in procs:
            p.wait()
        wall = time.time() - t0
        each = [json.loads(o.read_text()) for o in outs]
    return {"mode": "channels", "separator": args.separator, "n": args.n, "rate": args.rate, "loops": args.loops,
            "wall_s": round(wall, 1), "realtime_channels": round(sum(e["speed_x"] for e in each), 1),
            "speed_x_per_channel": [e["speed_x"] for e in each],
            "cpu_per_audio_s": [e["cpu_per_audio_s"] for e in each],
            "lag_s_median_per_channel": [e["lag_s"]["median"] for e in each],
            "lag_s_max_per_channel": [e["lag_s"]["max"] for e in each],
            "cues_per_channel": [e["cues"] for e in each],
            "private_mb_per_channel": [e["rss_mb"]["private_at_end"] for e in each]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=("long", "realtime", "channels"))
    root = default_root()
    ap.add_argument("--db", default=str(root / "index" / "p1-81ba01b17eac"), help="index (default: the corpus's)")
    ap.add_argument("--programme", default=str(root / "bench" / "monitor" / "programmes" / "prog_600s_0.wav"))
    ap.add_argument("--separator", default="none")
    ap.add_argument("--loops", type=int, default=6, help="long: times the programme is played")
    ap.add_argument("--rate", type=float, default=30.0, help="long: times real time")
    ap.add_argument("--seconds", type=float, default=240.0, help="realtime: seconds of the programme aired")
    ap.add_argument("--idle", type=float, default=8.0, help="end after this long without audio, s")
    ap.add_argument("--out", default=None, help="also write the JSON lines here")
    ap.add_argument("--n", type=int, default=4, help="channels: channels run at once")
    ap.add_argument("--result", default=None, help="write this run's result here instead of merging it into "
                    "benchmarks/results/live.json (the channels mode's processes)")
    args = ap.parse_args()
    res = channels(args) if args.mode == "channels" else run(args)
    if args.result:
        Path(args.result).write_text(json.dumps(res))
        return
    print(json.dumps(res, indent=1))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    allres = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    key = {"long": f"long-{args.separator}-{args.loops}x", "realtime": f"realtime-{args.separator}",
           "channels": f"channels-{args.separator}-{args.n}x{args.rate:g}"}[args.mode]
    allres[key] = res
    RESULTS.write_text(json.dumps(allres, indent=1) + "\n")


if __name__ == "__main__":
    main()
