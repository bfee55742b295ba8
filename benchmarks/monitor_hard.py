"""Monitoring benchmark on programmes built the way real ones are, in five encodings (issue 13).

Programmes from :func:`bgmid.data.programmes.generate_hard_programme` (``bgmid data programme --hard``): cues of
one soundtrack back to back 0-3 s apart, a cross-fade, the same track twice with an edit, 3-5 s stings, a cue
with a featured (music-only) passage inside, a crowd/ambience scene. Each programme is monitored as WAV and, with
``--encodings``, as FLAC, MP3 (44.1 kHz), AAC/M4A and MP2 in MPEG-TS (48 kHz), against the corpus index (as
``benchmarks/monitor.py``: test music plus the train/val tracks as distractors).

Prints and writes as JSON (``--json``, default ``benchmarks/results/monitor_hard.json``): seconds-level F1 (all
cues and cues >= -10 dB), cue recall for cues >= 5 s, phantom cues (over every programme and encoding),
boundary error median, usage accuracy per cue and per part (each truth row: a featured passage inside a cue is
its own part), misplaced parts (a cue's offset run at a track position the truth does not have there), and
determinism (per encoding: programmes whose cue sheet names the same tracks in the same
order as the WAV's, and the largest in/out difference). Not a test: figures depend on the corpus and machine.

    python benchmarks/monitor_hard.py --programmes 3 --duration 300 --separator none
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from monitor import open_library  # noqa: E402

from bgmid.audio import load, resample  # noqa: E402
from bgmid.cuesheet import CueMetrics, evaluate, format_metrics, merge_truth, read_truth, same_track  # noqa: E402
from bgmid.data.corpus import default_root  # noqa: E402
from bgmid.data.transforms import encode_mono  # noqa: E402
from bgmid.monitor import Monitor, MonitorConfig  # noqa: E402
from bgmid.separation import resolve_separator  # noqa: E402

#: encoding name -> (extension, codec, container format, sample rate or None for the programme's, bit rate)
ENCODINGS = {
    "wav": ("wav", None, None, None, None),
    "flac": ("flac", "flac", None, None, None),
    "mp3": ("mp3", "libmp3lame", None, 44100, 128000),
    "m4a": ("m4a", "aac", "mp4", 48000, 128000),
    "ts": ("ts", "mp2", "mpegts", 48000, 192000),
}


def encoded(wav: Path, name: str) -> Path:
    """``wav`` in encoding ``name`` (written next to it once)."""
    ext, codec, fmt, rate, bitrate = ENCODINGS[name]
    if codec is None:
        return wav
    out = wav.with_suffix(f".{ext}")
    if not out.exists():
        x, sr = load(wav)
        if rate and rate != sr:
            x, sr = resample(x, sr, rate), rate
        encode_mono(out, np.clip(x, -1, 1), sr, codec, fmt, bitrate)
    return out


def part_usage(cues, truth) -> tuple[int, int]:
    """Per-part usage: each truth row (a featured passage inside a cue is its own row) against the usage of
    the detected part that covers most of it (a cue's ``usage_parts``, else the cue's usage)."""
    total = correct = 0
    for t in truth:
        if t.level_db is None and not t.music_only:
            continue
        best, best_ov = None, 0.0
        for c in cues:
            if not same_track(c, t):
                continue
            for a, b, usage in getattr(c, "usage_parts", None) or [(c.programme_start_s, c.programme_end_s, c.usage)]:
                ov = min(b, t.end_s) - max(a, t.start_s)
                if ov > best_ov:
                    best, best_ov = usage, ov
        if best is not None and best_ov >= 0.5 * t.duration_s:
            total += 1
            correct += int((best == "featured") == t.featured)
    return correct, total


def misplaced_parts(cues, truth) -> tuple[int, int, float]:
    """Detected cue parts (offset runs) whose track position matches no truth row of the track at that time
    (within 1 s at the part's middle): a loop/jump the programme does not have, or an equivalent position of
    a track whose own audio repeats (looped game music: in hard_300s_7000 track21's audio at 94.1 s and at
    222.1 s correlate 0.97) that the part does not list among its ``also_track_start_s`` (the index saw only
    the other copy align), so an upper bound. Returns (misplaced parts, parts, seconds)."""
    bad = n = 0
    secs = 0.0
    for c in cues:
        for p in c.parts or []:
            n += 1
            mid = 0.5 * (p.programme_start_s + p.programme_end_s)
            ok = any(same_track(c, t) and t.track_offset_s is not None and t.start_s - 1 <= mid <= t.end_s + 1
                     and abs(t.track_offset_s + (mid - t.start_s) - (start + (mid - p.programme_start_s))) < 1.0
                     for t in truth for start in [p.track_start_s, *getattr(p, "also_track_start_s", [])])
            if not ok:
                bad += 1
                secs += p.programme_end_s - p.programme_start_s
    return bad, n, secs


def missed_by_cause(cues, rows, duration_s: float, min_level_db: float = -10.0) -> Counter:
    """Missed seconds of truth cues at >= ``min_level_db`` (as :func:`~bgmid.cuesheet.evaluate` counts them on
    the joined truth) by where they lie: a cue found nowhere, a part of the cue quieter than ``min_level_db``
    (the background of a cue whose featured passage makes it count as loud), the fade-in or fade-out (plus
    0.5 s), the first or last 3 s of a cue without a long fade, or inside."""
    n = int(math.ceil(duration_s))
    sec = np.arange(n)

    def cov(a: float, b: float) -> np.ndarray:
        return (np.minimum(b, sec + 1) - np.maximum(a, sec)) >= 0.5

    out: Counter = Counter()
    for t in merge_truth(rows, MonitorConfig().loop_gap_s):
        if not (t.level_db is None or t.music_only or t.level_db >= min_level_db):
            continue
        found = [c for c in cues if same_track(c, t)]
        pred = np.zeros(n, bool)
        for c in found:
            pred |= cov(c.programme_start_s, c.programme_end_s)
        own = [r for r in rows if r.track == t.track and r.start_s >= t.start_s - 0.01 and r.end_s <= t.end_s + 0.01]
        lost = not any(c.programme_end_s > t.start_s and c.programme_start_s < t.end_s for c in found)
        for s_ in np.nonzero(cov(t.start_s, t.end_s) & ~pred)[0]:
            mid = s_ + 0.5
            r = next((r for r in own if r.start_s <= mid < r.end_s), own[0])
            if lost:
                k = "cue found nowhere"
            elif r.level_db is not None and r.level_db < min_level_db and not r.music_only:
                k = f"part below {min_level_db:g} dB in a louder cue"
            elif mid - t.start_s < own[0].fade_in_s + 0.5:
                k = "fade-in"
            elif t.end_s - mid < own[-1].fade_out_s + 0.5:
                k = "fade-out"
            elif mid - t.start_s < 3.0:
                k = "first 3 s"
            elif t.end_s - mid < 3.0:
                k = "last 3 s"
            else:
                k = "inside"
            out[k] += 1
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=None, help="corpus root (default ~/.cache/bgmid)")
    ap.add_argument("--work", type=Path, default=None, help="programmes (default ROOT/bench/monitor_hard)")
    ap.add_argument("--preset", default="p1")
    ap.add_argument("--index-splits", nargs="+", default=["train", "val", "test"])
    ap.add_argument("--programmes", type=int, default=3)
    ap.add_argument("--duration", type=float, default=300.0, help="seconds per programme (default 300)")
    ap.add_argument("--seed", type=int, default=7000, help="first programme's seed (default 7000)")
    ap.add_argument("--seeds", default=None,
                    help="comma-separated seeds instead of --seed/--programmes (e.g. 7200,7201: held-out ones)")
    ap.add_argument("--encodings", default="wav,flac,mp3,m4a,ts",
                    help="comma-separated, from " + ",".join(ENCODINGS) + " (default all; wav is the reference)")
    ap.add_argument("--separator", default="none", help="none, a model name or a checkpoint")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "monitor_hard.json")
    args = ap.parse_args(argv)
    encs = ["wav"] + [e for e in args.encodings.split(",") if e and e != "wav"]
    for e in encs:
        if e not in ENCODINGS:
            ap.error(f"--encodings: unknown {e!r}")
    seeds = ([int(v) for v in args.seeds.split(",")] if args.seeds
             else [args.seed + k for k in range(args.programmes)])
    args.programmes = len(seeds)
    root = args.root or default_root()
    work = args.work or root / "bench" / "monitor_hard"
    store = open_library(root, args.preset, args.index_splits)
    sep = resolve_separator(args.separator, args.device)
    tot: dict[str, dict[str, CueMetrics]] = {e: {"all": CueMetrics(), "m10": CueMetrics()} for e in encs}
    parts = {e: [0, 0] for e in encs}
    misplaced = {e: [0, 0, 0.0] for e in encs}
    missed = {e: Counter() for e in encs}
    same = {e: 0 for e in encs}
    max_diff = {e: 0.0 for e in encs}
    audio_s = wall_s = 0.0
    per_programme = []
    with store:
        mon = Monitor(store, sep, MonitorConfig(), separator_name=args.separator, alteration=None)
        for seed in seeds:
            wav = work / f"hard_{int(args.duration)}s_{seed}.wav"
            if not (wav.exists() and wav.with_suffix(".cues.csv").exists()):
                from bgmid.data.programmes import generate_hard_programme

                generate_hard_programme(root, duration_s=args.duration, seed=seed, out=wav)
            truth = read_truth(wav.with_suffix(".cues.csv"))
            ref = None
            for e in encs:
                t0 = time.perf_counter()
                res = mon.run(encoded(wav, e))
                wall = time.perf_counter() - t0
                audio_s, wall_s = audio_s + res.duration_s, wall_s + wall
                m_all = evaluate(res.cues, truth, res.duration_s, min_recall_cue_s=5.0)
                m_10 = evaluate(res.cues, truth, res.duration_s, min_level_db=-10.0, min_recall_cue_s=5.0)
                tot[e]["all"] += m_all
                tot[e]["m10"] += m_10
                c, n = part_usage(res.cues, truth)
                parts[e][0] += c
                parts[e][1] += n
                missed[e] += missed_by_cause(res.cues, truth, res.duration_s)
                for i, v in enumerate(misplaced_parts(res.cues, truth)):
                    misplaced[e][i] += v
                key = [(x.track_id, x.programme_start_s, x.programme_end_s) for x in res.cues]
                if ref is None:
                    ref = key
                if [t for t, *_ in key] == [t for t, *_ in ref]:
                    same[e] += 1
                    diffs = [max(abs(a[1] - b[1]), abs(a[2] - b[2])) for a, b in zip(key, ref, strict=True)]
                    max_diff[e] = max([max_diff[e], *diffs])
                else:
                    max_diff[e] = float("inf")
                print(f"{wav.stem} {e:4s}: {len(res.cues)} cues / {len(truth)} truth rows; F1 {m_all.f1:.3f} "
                      f"(>= -10 dB {m_10.f1:.3f}), cue recall {m_all.n_found_cues}/{m_all.n_truth_cues}, "
                      f"phantoms {m_all.phantom_cues}, {res.duration_s / wall:.0f}x", flush=True)
                per_programme.append({"programme": wav.name, "encoding": e, "cues": len(res.cues),
                                      "all": m_all.to_dict(), "ge_minus10db": m_10.to_dict()})
    speed = audio_s / wall_s if wall_s else float("inf")
    print(f"\nseparator {args.separator}, {args.programmes} programmes x {len(encs)} encodings, "
          f"{audio_s / 60:.0f} min audio, {speed:.0f}x real time")
    summary = {}
    for e in encs:
        print(format_metrics(tot[e]["all"], f"{e} all cues"))
        print(format_metrics(tot[e]["m10"], f"{e} cues >= -10 dB"))
        pu = parts[e][0] / parts[e][1] if parts[e][1] else float("nan")
        print(f"{e}: usage per part {parts[e][0]}/{parts[e][1]} = {pu:.0%}; same tracks as the WAV in "
              f"{same[e]}/{args.programmes} programmes, largest boundary difference {max_diff[e]:.2f} s; misplaced "
              f"parts {misplaced[e][0]}/{misplaced[e][1]} ({misplaced[e][2]:.1f} s)")
        print(f"{e}: missed seconds of cues >= -10 dB by cause: "
              + ", ".join(f"{k} {v}" for k, v in missed[e].most_common()))
        summary[e] = {"all": tot[e]["all"].to_dict(), "ge_minus10db": tot[e]["m10"].to_dict(),
                      "usage_per_part": round(pu, 4) if parts[e][1] else None, "usage_parts": parts[e][1],
                      "same_tracks_as_wav": same[e], "misplaced_parts": misplaced[e][0], "parts": misplaced[e][1],
                      "misplaced_s": round(misplaced[e][2], 1),
                      "missed_s_ge_minus10db_by_cause": dict(missed[e].most_common()),
                      "max_boundary_diff_s": None if max_diff[e] == float("inf") else round(max_diff[e], 3)}
    phantoms = sum(tot[e]["all"].phantom_cues for e in encs)
    print(f"phantom cues over all programmes and encodings: {phantoms}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "command": "python benchmarks/monitor_hard.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "separator": args.separator, "preset": args.preset, "programmes": args.programmes,
            "duration_s": args.duration, "seeds": seeds, "encodings": encs, "x_real_time": round(speed, 1),
            "phantoms_all_encodings": phantoms, "by_encoding": summary, "per_programme": per_programme,
        }, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
