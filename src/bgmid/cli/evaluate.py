"""``bgmid evaluate``: the paper's experiments on our corpus, written as a report folder."""

from __future__ import annotations

import argparse
import sys
import time


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="measure separators x fingerprint settings on the fixed test sets; write a report folder",
        description=(
            "Separation quality (BSS Eval, SI-SDR, SNR), identification rate after separation per separator x "
            "fingerprint preset x SNR, damage to clean music, false matches, cost, SDR-vs-identification rank "
            "correlation; writes README.md, CSV, PNG plots, run.json and best.json (the best configuration found: "
            "separator, preset, query options, threshold; apply them to identify/monitor by hand, they are not read "
            "automatically) to --out. Needs the corpus and fixed sets: 'bgmid data fetch' then "
            "'bgmid data mix'. Example: bgmid evaluate --out reports/quick --quick; the full run: "
            "bgmid evaluate --out reports/shipped --fusion"
        ),
    )
    p.add_argument("--out", required=True, help="report folder, e.g. reports/shipped")
    p.add_argument("--root", help="data root (default $BGMID_DATA or ~/.cache/bgmid)")
    p.add_argument("--models", nargs="+", metavar="MODEL",
                   help="separators: 'none' (unprocessed), registry names (unet, wave-unet, mmdensenet, "
                        "wave-densenet), pretrained names (spleeter, after 'bgmid models fetch spleeter') or "
                        "checkpoint paths; default: none + every trained model with shipped weights")
    p.add_argument("--presets", nargs="+", metavar="PRESET",
                   help="fingerprint presets (default p1 p2; with --quick p2)")
    p.add_argument("--split", default="test", help="which fixed sets: test or val (default %(default)s)")
    p.add_argument("--sets", nargs="+", metavar="SET",
                   help="fixed set names (default: every set of --split: SPLIT_0dB, SPLIT_-10dB, SPLIT_-20dB, "
                        "SPLIT_music, SPLIT_speech, SPLIT_ooi, SPLIT_ooi_0dB, SPLIT_ooi_-10dB)")
    p.add_argument("--conditions", nargs="+", metavar="NAME",
                   help="also evaluate the broadcast-condition sets of these conditions ('all', or names such as "
                        "speed+4.2 tempo-3 pitch+1 broadcast aac64 short5; built by 'bgmid data mix "
                        "--conditions ...'), with identify's own decision (alteration search): their own report "
                        "section")
    p.add_argument("--clips", type=int, help="first N clips of each set (default: all; 24 with --quick)")
    p.add_argument("--bss-clips", type=int, help="BSS Eval on the first N clips of each mixture set (default 50, "
                                                 "4 with --quick; about 1 s of CPU per clip)")
    p.add_argument("--fusion", action="store_true", help="also score separated + unprocessed vote fusion")
    p.add_argument("--grid", action="store_true",
                   help="score a grid of query options (density/fan-out factors, analysis shifts)")
    p.add_argument("--queries", nargs="+", metavar="SPEC",
                   help="query options to score, each d<density factor>-f<fan-out factor>-s<analysis shifts>, "
                   "e.g. d2-f2-s1 (default: identify's own, d2-f2-s1; --grid adds more)")
    p.add_argument("--thresholds", nargs="+", type=int, metavar="N",
                   help="match thresholds (aligned hashes) to score; the calibrated default is always added (default: "
                   "a built-in range of 5-50)")
    p.add_argument("--ratios", nargs="+", type=float, metavar="R",
                   help="runner-up ratios to score with every threshold (default 1 1.5 2; 1 = plain threshold)")
    p.add_argument("--quick", action="store_true",
                   help="a few dozen clips, one preset (p2), no -20 dB / out-of-index mixtures: a smoke test")
    p.add_argument("--ablations", nargs="+", choices=["frames", "hop"],
                   help="first train the U-Net ablation runs of paper Tables 3-4 (hours of CPU), then evaluate them")
    p.add_argument("--ablation-minutes", type=float, default=30.0,
                   help="training time per ablation run, minutes (default %(default)s)")
    p.add_argument("--ablation-config", default="lite", choices=["lite", "paper"],
                   help="network size of the ablation runs, as 'bgmid train --config' (default %(default)s)")
    p.add_argument("--ablation-out", default="runs/ablations",
                   help="folder the ablation runs are trained in (default %(default)s)")
    p.add_argument("--threads", type=int, default=2, help="torch threads for separation (default %(default)s)")
    p.add_argument("--jobs", type=int, default=2, help="processes for building the corpus index (default %(default)s)")
    p.add_argument("--no-cache", action="store_true", help="do not cache separated outputs under ROOT/eval_cache")
    p.add_argument("--title", help="report title (default: 'bgmid evaluation: <name of --out>')")
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from bgmid.cli.common import progress
    from bgmid.evaluate import EvalSettings, QuerySpec, default_sets, evaluate, write_report
    from bgmid.evaluate.identification import QUERY_GRID, train_ablations

    started = time.time()
    models = args.models
    if models is None:
        from bgmid.separation import available_models

        models = ["none", *available_models()]
    presets = args.presets or (["p2"] if args.quick else ["p1", "p2"])
    if args.sets:
        sets = args.sets
    elif args.quick:
        sets = [f"{args.split}_0dB", f"{args.split}_-10dB", f"{args.split}_music", f"{args.split}_speech",
                f"{args.split}_ooi"]
    else:
        sets = default_sets(args.split)
    if args.conditions:
        from bgmid.data.mixing import condition_set_names

        sets += [n for n in condition_set_names(args.split, args.conditions) if n not in sets]
    if args.queries:
        queries = [QuerySpec.parse(q).label for q in args.queries]
    elif args.grid:
        queries = [QuerySpec().label] + [q.label for q in QUERY_GRID if q != QuerySpec()]
    else:
        queries = [QuerySpec().label]
    settings = EvalSettings(
        root=args.root or "", models=list(models), presets=list(presets), sets=list(sets),
        clips=args.clips if args.clips is not None else (24 if args.quick else None), fusion=args.fusion,
        queries=queries, bss_clips=args.bss_clips if args.bss_clips is not None else (4 if args.quick else 50),
        threads=args.threads, jobs=args.jobs, cache=not args.no_cache,
    )
    if args.thresholds:
        settings.thresholds = sorted(set(args.thresholds))
    if args.ratios:
        settings.ratios = sorted(set(args.ratios))
    if args.ablations:
        settings.models += train_ablations(args.ablations, args.root, args.ablation_out, args.ablation_config,
                                           args.ablation_minutes, threads=args.threads,
                                           log=lambda m: print(m, file=sys.stderr))
    report = evaluate(settings, log=lambda m: print(m, file=sys.stderr), progress=progress)
    res = write_report(report, args.out, argv=["bgmid", *sys.argv[1:]] if sys.argv[0].endswith("bgmid") else None,
                       started=started, title=args.title)
    best = res["best"]
    print(f"report: {args.out}/README.md")
    if best:
        q = best["query_options"]
        sc = best["scores"]

        def pct(k: str) -> str:
            v = sc.get(k)
            return "–" if v is None else f"{100 * v:.1f}%"

        print(f"best: separator {best['separator'] or 'none'}{' + mix fusion' if best['fusion'] else ''}, preset "
              f"{best['preset']}, density x{q['density_factor']:g}, fan-out x{q['fanout_factor']:g}, shifts "
              f"{q['shifts']}, threshold {q['min_aligned']}: 0 dB {pct('0dB')}, -10 dB {pct('-10dB')}, clean "
              f"{pct('clean')}, false matches {pct('false_match')} (written to {args.out}/best.json)")
    return 0
