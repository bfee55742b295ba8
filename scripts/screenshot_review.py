#!/usr/bin/env python3
"""Take docs/review-page.png: the review page on a laptop-sized window (1280x800) showing a real programme.

Starts ``bgmid serve``'s app on 127.0.0.1 (a fresh data folder in /tmp, the programme's folder as a second,
read-only data root), runs a monitor job on the programme through the API, opens the page in Debian's Chromium
with Playwright, reviews a little (accepts the first cue, rejects one, selects one and plays it for a moment so
the playhead and the reference player show) and saves the screenshot.

Defaults: a 600 s benchmark programme of the demo corpus with its truth (``bgmid demo`` /
``benchmarks/monitor.py`` make them) and, without ``--db``, a small index built in /tmp from the corpus's decoded
tracks (the programme's tracks plus ``--distractors`` other test-split tracks, written as FLAC files so the
reference player has files to play: the benchmark indexes are built from arrays and name no playable file).

    python scripts/screenshot_review.py [--db DIR] [--programme WAV] [--truth CSV] [--out docs/review-page.png]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the test suite's server and browser helpers

CACHE = Path.home() / ".cache" / "bgmid"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", default=None, help="index folder (default: built from the corpus, see above)")
    ap.add_argument("--distractors", type=int, default=12, help="extra corpus tracks in the built index")
    ap.add_argument("--programme", default=str(CACHE / "bench/monitor/programmes/prog_600s_0.wav"))
    ap.add_argument("--truth", default=None, help="truth CSV (default: the programme's .cues.csv if present)")
    ap.add_argument("--separator", default="auto", help="separator for the job (default auto)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "review-page.png"))
    args = ap.parse_args()

    prog = Path(args.programme)
    truth = Path(args.truth) if args.truth else prog.with_suffix(".cues.csv")
    work = Path(tempfile.mkdtemp(prefix="bgmid-serve-shot-"))  # removed at the end
    try:
        shoot(args, prog, truth, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"screenshot: {args.out}", file=sys.stderr)
    return 0


def shoot(args: argparse.Namespace, prog: Path, truth: Path, work: Path) -> None:
    import httpx
    from serve_browser import browser_page, running

    from bgmid.serve.app import ServeConfig, create_app
    from bgmid.serve.security import Tokens

    token = "screenshot-token"
    data = work / "data"
    db = Path(args.db) if args.db else corpus_index(work, truth, args.distractors)
    app = create_app(ServeConfig(db=db, data=[data, prog.parent], tokens=Tokens({token: "demo"}),
                                 pool="thread"))
    auth = {"Authorization": f"Bearer {token}"}
    with running(app) as base, browser_page(1280, 800) as page:
        files = {"truth": (truth.name, truth.read_bytes(), "text/csv")} if truth.exists() else None
        r = httpx.post(f"{base}/api/monitor", headers=auth, data={"path": str(prog), "separator": args.separator},
                       files=files, timeout=60)
        r.raise_for_status()
        t0 = time.time()
        while (job := httpx.get(f"{base}/api/jobs/{r.json()['job']}", headers=auth).json())["status"] not in (
                "done", "failed"):
            time.sleep(1)
        if job["status"] != "done":
            raise SystemExit(f"monitor job failed: {job['error']}")
        pid = job["programme_id"]
        cues = httpx.get(f"{base}/api/programmes/{pid}", headers=auth).json()["cues"]
        print(f"monitored {prog.name} in {time.time() - t0:.0f} s: {len(cues)} cues", file=sys.stderr)
        page.goto(base + "/")
        page.fill("#token", token)
        page.click("#login button")
        page.fill("#reviewer", "reviewer")
        page.locator("#programmes li").first.click()
        rows = page.locator("#cues tbody tr")
        rows.first.wait_for()
        page.keyboard.press("a")  # accept the first cue
        page.wait_for_function("() => state.programme.cues[0].status === 'accepted'")
        if len(cues) > 3:
            page.evaluate("select(3)")
            page.keyboard.press("r")  # reject one
            page.wait_for_function("() => state.programme.cues[3].status === 'rejected'")
        pick = min(2, len(cues) - 1)
        rows.nth(pick).click()  # plays the cue in both players
        page.wait_for_function(
            f"() => document.getElementById('prog-audio').currentTime > "
            f"state.programme.cues[{pick}].programme_start_s + 1",
            timeout=20_000)
        page.keyboard.press("p")
        page.wait_for_timeout(300)
        page.screenshot(path=args.out)


def corpus_index(work: Path, truth: Path, distractors: int) -> Path:
    """An index of the truth's tracks and ``distractors`` other test-split tracks, from the corpus's decoded
    16 kHz arrays written out as FLAC files named by title."""
    import json

    import numpy as np
    import soundfile as sf

    from bgmid.cuesheet import read_truth
    from bgmid.index import open_index
    from bgmid.index.build import index_paths

    items = json.loads((CACHE / "manifest.json").read_text())["items"]
    wanted = {t.track for t in read_truth(truth)}
    music = sorted((i for i in items if i["kind"] == "music" and i["split"] == "test"), key=lambda i: i["id"])
    chosen = [i for i in music if i["id"] in wanted] + [i for i in music if i["id"] not in wanted][:distractors]
    folder = work / "music"
    folder.mkdir(parents=True, exist_ok=True)
    for it in chosen:
        x = np.load(CACHE / "audio" / "16000" / f"{it['id']}.npy").astype(np.float32) / 32768
        name = folder / f"{it['title']}.flac"
        sf.write(name if not name.exists() else folder / f"{it['title']}-{it['id'][:6]}.flac", x, 16000)
    db = work / "lib"
    with open_index(db, preset="p1", create=True) as store:
        index_paths(store, [folder])
    print(f"indexed {len(chosen)} corpus tracks in {db}", file=sys.stderr)
    return db


if __name__ == "__main__":
    sys.exit(main())
