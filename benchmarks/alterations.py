"""Music as broadcasters air it (issue 12): identification under speed, tempo, pitch and processing changes.

Uses the fixed sets of ``bgmid data mix --conditions all`` (the test split's clips, music altered before it is
mixed with speech; see docs/data.md) and the corpus index of ``bgmid.evaluate.library``. Each clip is
identified through the query pipeline ``bgmid identify`` runs (:class:`bgmid.pipeline.QueryPipeline`; with
``--separator NAME`` the clip is separated once and the votes of the mix and the music estimate are fused, as
``identify --separator``) twice: with today's unaltered matching (``QueryOptions(alterations=False)``, the
"before") and with the alteration search (the default). Times are of identification alone (separation is
reported apart). A clip counts as found when the top match is its track with the track offset within 0.2 s of the
truth, or within 0.2 s of a place of the track that holds the same music (looped game music:
:mod:`bgmid.evaluate.repeats`, the criterion of every other figure, with the same 0.2 s); ``strict`` counts
offsets within 0.2 s of the truth only; ``found_or_same_music_in_another_track`` also counts a top match naming
another track that holds the same music at the reported place (:meth:`RepeatCheck.elsewhere`: the corpus holds
one piece twice, colobot's ``music008`` and its extended version ``Infinite``). The estimate's error is the
relative error of its time and frequency factors.

Times are a long-running process's: the compiled loops of :mod:`bgmid.kernels` are loaded before the first
set (a process loads them after its 32nd search; ``--kernels numpy`` measures the numpy code that serves until
then, and a one-off ``bgmid identify``).

    .venv/bin/bgmid data mix --splits test --sr 16000 --clips 100 --conditions all
    .venv/bin/python benchmarks/alterations.py --clips 100 --out benchmarks/results/alterations-p1.json
    .venv/bin/python benchmarks/alterations.py --clips 60 --separator unet \\
        --out benchmarks/results/alterations-p1-unet.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from bgmid.alterations import Alteration
from bgmid.data.corpus import default_root
from bgmid.data.mixing import load_fixed_set
from bgmid.evaluate.library import open_corpus_index
from bgmid.evaluate.repeats import RepeatCheck
from bgmid.fingerprint.presets import QueryOptions
from bgmid.kernels import compiled
from bgmid.pipeline import QueryPipeline
from bgmid.separation.registry import resolve_separator

POSITIVE = ["test_0dB", "test_-10dB", "test_-20dB", "test_music",
            "test_0dB_speed+4.2", "test_-10dB_speed+4.2", "test_-10dB_speed-4", "test_0dB_speed-4",
            "test_-10dB_speed+6", "test_-10dB_speed-6", "test_-10dB_tempo+3", "test_-10dB_tempo-3",
            "test_-10dB_tempo+5", "test_-10dB_tempo-5", "test_-10dB_pitch+1", "test_-10dB_pitch-1",
            "test_-10dB_pitch+2", "test_-10dB_pitch-2", "test_-10dB_broadcast", "test_-10dB_aac64",
            "test_-10dB_short5"]
NEGATIVE = ["test_speech", "test_speech_broadcast", "test_ooi", "test_ooi_-10dB"]


def run_set(pipeline: QueryPipeline, item_of: dict, clips, stems: list[dict], repeat: RepeatCheck) -> dict:
    found, strict, errs, ms, matched, elsewhere = 0, 0, [], [], 0, 0
    for c, st in zip(clips, stems, strict=True):
        t0 = time.perf_counter()
        res = pipeline.identify_stems(st)
        ms.append(1000 * (time.perf_counter() - t0))
        if not res:
            continue
        matched += 1
        top = res[0]
        item, true_s = c.meta.get("music_track_id"), float(c.meta["track_offset_s"])
        if item_of.get(top.track_id) != item:
            # another track holding the same music (an edit and its extended version): counted apart
            other = item_of.get(top.track_id)
            elsewhere += bool(item and other) and repeat.elsewhere(item, true_s, other, top.track_offset_s)
            continue
        exact = abs(top.track_offset_s - true_s) <= 0.2
        strict += exact
        if exact or repeat(item, true_s, top.track_offset_s):
            found += 1
            got = Alteration(top.speed, top.tempo, top.pitch_semitones)
            true = Alteration(c.speed, c.tempo, c.pitch_semitones)
            errs.append(max(abs(got.freq_factor / true.freq_factor - 1), abs(got.time_factor / true.time_factor - 1)))
    n = len(clips)
    return {"clips": n, "found": round(found / max(n, 1), 4), "strict": round(strict / max(n, 1), 4),
            "found_or_same_music_in_another_track": round((found + elsewhere) / max(n, 1), 4),
            "matched": round(matched / max(n, 1), 4),
            "factor_error_median": round(float(np.median(errs)), 5) if errs else None,
            "factor_error_max": round(float(np.max(errs)), 5) if errs else None,
            "ms_median": round(float(np.median(ms)), 1), "ms_p90": round(float(np.percentile(ms, 90)), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=str(default_root()))
    ap.add_argument("--preset", default="p1")
    ap.add_argument("--clips", type=int, default=100, help="clips per set (first N)")
    ap.add_argument("--sets", nargs="*", default=None, help="sets to run (default: all of them)")
    ap.add_argument("--separator", default="none", help="separator fused with the mix (none, unet, a .pt path)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for the separator")
    ap.add_argument("--out", default=None, help="write the JSON report here")
    ap.add_argument("--kernels", choices=["compiled", "numpy"], default="compiled",
                    help="the search's loops: compiled (loaded first, as a long-running process has them) or numpy "
                         "(a process's first 32 searches, a one-off identify)")
    args = ap.parse_args()
    if args.kernels == "numpy":
        os.environ["BGMID_KERNELS"] = "numpy"
    elif compiled(wait=True) is None:
        print("numba is not installed: the search runs on numpy")
    sr = 16000
    store, info = open_corpus_index(args.root, args.preset, log=None)
    item_of = {t.track_id: t.extra.get("item_id") for t in store.tracks()}
    sep = resolve_separator(args.separator, command="benchmarks/alterations.py")
    before = QueryPipeline(store, sep, options=QueryOptions(alterations=False), threads=args.threads)
    after = QueryPipeline(store, sep, options=QueryOptions(), threads=args.threads)
    report = {"preset": args.preset, "tracks": len(item_of), "separator": before.separator_name, "sets": {}}
    for name in args.sets or POSITIVE + NEGATIVE:
        try:
            clips = load_fixed_set(args.root, name, sr, limit=args.clips)
        except Exception as exc:  # a set that was not built
            print(f"{name}: skipped ({exc})")
            continue
        # a repeat counts within the same 0.2 s as the true place
        rep = RepeatCheck(args.root, float(clips[0].meta.get("clip_s", 12.0)) if clips else 12.0, tolerance_s=0.2)
        t0 = time.perf_counter()
        stems = [after.stems(c.mix, sr) for c in clips]  # separated once for both runs
        sep_s = time.perf_counter() - t0
        row = {"before": run_set(before, item_of, clips, stems, rep),
               "after": run_set(after, item_of, clips, stems, rep),
               "separation_s_per_clip": round(sep_s / max(1, len(clips)), 3)}
        report["sets"][name] = row
        key = "matched" if name in NEGATIVE else "found"
        also = "" if name in NEGATIVE else \
            f" ({row['after']['found_or_same_music_in_another_track']:.3f} with another track's copy)"
        print(f"{name:28s} {key} {row['before'][key]:.3f} -> {row['after'][key]:.3f}{also}   "
              f"ms {row['before']['ms_median']} -> {row['after']['ms_median']}   "
              f"factor err {row['after']['factor_error_median']}", flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
