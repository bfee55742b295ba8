"""``bgmid demo``: the main job end to end on an embedded default, from nothing.

fetch the small real corpus -> index its music -> generate a broadcast-like programme with dialogue over
music cues -> ``bgmid monitor`` it -> cue sheet, timeline plot and F1 against the programme's ground truth.
Every step is idempotent, so a second run reuses the corpus and the index.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="run the whole job on a small real corpus (what 'make demo' does)",
        description=(
            "Fetch the demo corpus (Debian packages of game music and voice acting, a few hundred MB, once), "
            "index its music, generate a programme with dialogue over music cues and write its cue sheet, "
            "timeline plot and seconds-level F1 against the ground truth. "
            "Example: bgmid demo --duration 300 --out demo/"
        ),
    )
    p.add_argument("--root", default=None, help="corpus folder (default $BGMID_DATA or ~/.cache/bgmid)")
    p.add_argument("--out", default="demo-output",
                   help="folder for programme, cue sheet and plot (default %(default)s)")
    p.add_argument("--duration", type=float, default=600.0, help="programme length, s (default %(default)s)")
    p.add_argument("--seed", type=int, default=1, help="programme seed (default %(default)s)")
    p.add_argument("--separator", default="auto", help="separator for monitoring (default: the shipped default)")
    p.add_argument("--preset", default="p1", help="fingerprint preset (default %(default)s)")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from bgmid.cli import main
    from bgmid.data.corpus import default_root, fetch
    from bgmid.data.programmes import generate_programme
    from bgmid.evaluate.library import build_corpus_index

    root = Path(args.root) if args.root else default_root()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"[1/4] corpus in {root} (downloaded once; re-runs skip what is done)", flush=True)
    fetch(root, preset="demo")
    print(f"[2/4] index of the corpus music with preset {args.preset}", flush=True)
    db = build_corpus_index(root, preset=args.preset, jobs=2)
    print("[3/4] generating a programme: dialogue over music cues from never-trained-on test tracks", flush=True)
    wav, truth = generate_programme(root, duration_s=args.duration, seed=args.seed, out=out / "programme.wav")
    print(f"[4/4] bgmid monitor {wav} (truth: {truth})", flush=True)
    return main([
        "monitor", "--db", str(db), "--separator", args.separator, "--truth", str(truth),
        "--out", str(out / "cuesheet.csv"), "--plot", str(out / "timeline.png"), str(wav),
    ])
