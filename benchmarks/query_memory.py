"""Memory of ``bgmid identify`` on an hour-long query stays flat (issue 10): peak RSS of the command.

Indexes a few generated tracks, writes a ``--minutes`` long FLAC query of generated music-like audio (a minute
at a time, so this script stays small too) with one indexed track embedded in the middle, runs
``bgmid identify --separator none --json`` on it in a child process and reports the child's peak resident
memory (``wait4`` rusage, so only that process is counted), its wall time and the match. ``--compare`` also
measures the pre-streaming path (the query decoded whole, then ``Matcher.identify``) in another child.

    .venv/bin/python benchmarks/query_memory.py --minutes 60 --compare
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from signals import synth_music  # noqa: E402

SR = 22050
TRACK_S = 40.0

WHOLE = """
import json, sys
from bgmid.audio import load
from bgmid.index import open_index
from bgmid.match import Matcher
x, sr = load(sys.argv[2])
with open_index(sys.argv[1]) as store:
    print(json.dumps([m.to_dict() for m in Matcher(store).identify(x, sr)]))
"""


def run_child(cmd: list[str]) -> tuple[float, float, str]:
    """(peak RSS in MB, wall seconds, stdout) of one child process."""
    with tempfile.TemporaryFile("w+") as out:
        t0 = time.time()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.PIPE, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.time() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        err = proc.stderr.read()
        out.seek(0)
        text = out.read()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed ({proc.returncode}):\n{err}")
    return usage.ru_maxrss / 1024, wall, text  # ru_maxrss is in KiB on Linux


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=int, default=60, help="query length (default 60)")
    ap.add_argument("--tracks", type=int, default=4, help="generated tracks in the index (default 4)")
    ap.add_argument("--compare", action="store_true", help="also measure the query decoded whole")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        lib = Path(tmp) / "music"
        lib.mkdir()
        tracks = [synth_music(100 + i, TRACK_S, SR) for i in range(args.tracks)]
        for i, x in enumerate(tracks):
            sf.write(lib / f"track{i:02d}.flac", x, SR)
        db = Path(tmp) / "db"
        subprocess.run([sys.executable, "-m", "bgmid.cli", "index", "--db", str(db), str(lib)], check=True,
                       capture_output=True)
        query = Path(tmp) / "query.flac"
        at = args.minutes // 2  # the indexed track plays at this minute
        t0 = time.time()
        with sf.SoundFile(query, "w", SR, 1) as f:
            for k in range(args.minutes):
                x = 0.5 * synth_music(5000 + k, 60.0, SR)
                if k == at:
                    x[: tracks[1].size] += tracks[1]
                f.write(np.clip(x, -1, 1))
        print(f"query: {args.minutes} min FLAC, {query.stat().st_size / 1e6:.0f} MB, written in "
              f"{time.time() - t0:.0f} s; track01 plays at {at * 60} s")
        env_cmd = [sys.executable, "-m", "bgmid.cli", "identify", "--db", str(db), "--separator", "none",
                   "--json", str(query)]
        rss, wall, out = run_child(env_cmd)
        res = json.loads(out)
        best = res["matches"][0] if res["matches"] else None
        found = f"{best['title']} at track offset {best['track_offset_s']} s" if best else "no match"
        print(f"bgmid identify (streamed): peak RSS {rss:.0f} MB, {wall:.0f} s wall; {found}")
        summary = {"minutes": args.minutes, "streamed_peak_rss_mb": round(rss), "streamed_wall_s": round(wall, 1),
                   "match": best}
        if args.compare:
            rss_w, wall_w, out_w = run_child([sys.executable, "-c", WHOLE, str(db), str(query)])
            same = json.loads(out_w) == res["matches"]
            print(f"decoded whole (before):    peak RSS {rss_w:.0f} MB, {wall_w:.0f} s wall; same matches: {same}")
            summary.update(whole_peak_rss_mb=round(rss_w), whole_wall_s=round(wall_w, 1), same_matches=same)
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
