"""Memory while indexing hours of audio stays flat (issue #2): peak RSS vs hours indexed.

Writes N long FLAC files of generated music-like audio (each ``--minutes`` long), indexes them with
``bgmid index`` in a child process, and samples its resident memory every 0.2 s. Prints peak RSS after each
file: flat means the peak does not grow with the hours indexed.

    .venv/bin/python benchmarks/index_memory.py --files 4 --minutes 30
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from signals import synth_music  # noqa: E402


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    return 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=4)
    ap.add_argument("--minutes", type=float, default=30.0)
    args = ap.parse_args()
    sr = 22050
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "music"
        d.mkdir()
        for i in range(args.files):
            with sf.SoundFile(d / f"long{i}.flac", "w", sr, 1) as f:
                for k in range(int(args.minutes)):  # written a minute at a time
                    f.write(synth_music(1000 * i + k, 60.0, sr))
        cmd = [sys.executable, "-m", "bgmid.cli", "index", "--db", str(Path(tmp) / "db"), "--json", str(d)]
        t0 = time.time()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        samples = []
        while proc.poll() is None:
            samples.append((time.time() - t0, rss_mb(proc.pid)))
            time.sleep(0.2)
        out = proc.stdout.read()
    rss = np.array([s[1] for s in samples])
    hours = args.files * args.minutes / 60
    q = len(rss) // 4 or 1
    print(json.dumps({
        "hours_indexed": hours,
        "seconds": round(time.time() - t0, 1),
        "peak_rss_mb": round(float(rss.max()), 1),
        "peak_rss_mb_by_quarter_of_run": [round(float(rss[i:i + q].max()), 1) for i in range(0, len(rss), q)][:4],
        "index": json.loads(out.strip().splitlines()[-1])["index"],
    }, indent=1))


if __name__ == "__main__":
    main()
