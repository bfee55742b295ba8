"""``bgmid batch``: an archive of programmes in, one cue sheet per programme out, on a process pool or Ray."""

from __future__ import annotations

import argparse
import json
import os
import sys

from bgmid.cli.common import progress
from bgmid.cli.monitor import add_monitor_options, monitor_settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "batch",
        help="monitor an archive of programmes in parallel (process pool or Ray cluster), resumably",
        description=(
            "Monitor many programmes (files, folders walked recursively, or list files) with the options of "
            "'bgmid monitor', several at once: one programme per worker, the index opened once per worker. "
            "Each programme gets OUT/<name>.json and OUT/<name>.csv, the same cue sheet 'bgmid monitor "
            "--out' writes for it alone. Resumable: a programme already done with the same bytes, options and "
            "index is skipped; a failed one (an error, or its worker killed) is tried again --retries times "
            "and then reported, and the batch goes on. The exit status is 1 if any programme failed."
        ),
        epilog=(
            "Without --ray the workers are processes on this machine. With --ray local an embedded Ray cluster "
            "is started here; with --ray ADDRESS (e.g. ray://head:10001, or 'auto' on a cluster node) the "
            "programmes run on the cluster's nodes, which must see the index folder and the programmes at the "
            "same paths (a shared folder) and have bgmid installed. With a separator on Ray, separation is a "
            "stage of its own: one actor per GPU holding the model (--device cuda implied) where the cluster has "
            "GPUs, else one CPU actor per worker, fed block by block by the programmes' CPU tasks (decoding, "
            "fingerprinting, matching). "
            "Ray is optional: pip install 'bgmid[cluster]'. "
            "Example: bgmid batch --db lib/ --out sheets/ --workers 2 archive/ @more.txt"
        ),
    )
    add_monitor_options(p)
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the cue sheets (created if needed)")
    p.add_argument(
        "--ray", metavar="local|ADDRESS", default=None,
        help="run on Ray: 'local' (an embedded cluster on this machine) or a cluster address (default: a local "
        "process pool, no Ray needed)",
    )
    p.add_argument(
        "--workers", type=int, default=None,
        help="programmes in flight at once (default: the CPU cores here, or the cluster's CPUs with --ray)",
    )
    p.add_argument("--retries", type=int, default=2,
                   help="times a failed programme is tried again before it is reported (default %(default)s)")
    p.add_argument("--list", action="append", default=[], metavar="FILE",
                   help="a file listing programmes, one path a line (relative to the file; # comments); "
                   "the same as @FILE among the inputs; may be repeated")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="programme files, folders, or @LIST files")
    p.set_defaults(func=cmd_batch)


def cmd_batch(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from bgmid.batch import BatchJob, LocalPool, concrete, expand_inputs, run_batch
    from bgmid.errors import BgmidError
    from bgmid.index import open_index
    from bgmid.paths import shown

    if args.workers is not None and args.workers < 1:
        raise BgmidError("--workers must be at least 1.")
    if args.retries < 0:
        raise BgmidError("--retries must be 0 or more.")
    paths = expand_inputs(args.inputs, args.list)
    if not paths:
        raise BgmidError("no programmes: name files, folders or @LIST files (or --list FILE).")
    config, options, alteration = monitor_settings(args)
    with open_index(args.db, preset=args.preset):  # a missing or wrong index fails here, before any worker
        pass
    job = concrete(BatchJob(db=os.path.abspath(args.db), separator=args.separator, device=args.device,
                            preset=args.preset, config=config, options=options, alteration=alteration))
    from contextlib import nullcontext

    session, head = nullcontext(None), None
    if args.ray is not None:
        import importlib.util

        from bgmid.batch import HeadStart
        from bgmid.cluster import ray_session, require_ray

        if args.ray == "local" and importlib.util.find_spec("ray") is not None:  # (found, not imported yet)
            head = HeadStart(job, paths, args.out)  # the driver monitors programmes while the cluster starts
        require_ray()
        session = ray_session(args.ray, num_cpus=args.workers if args.ray == "local" else None)
    with session as ray:
        if ray is None:
            workers = args.workers or os.cpu_count() or 1
            executor, engine = LocalPool(workers), "local"
        else:
            from bgmid.cluster import RayExecutor, separator_stage

            workers = args.workers or int(ray.cluster_resources().get("CPU", 1))
            resources: dict = {"num_cpus": 1}
            if job.separator != "none":  # separation on its own actors (GPUs where there are), the rest on CPUs
                stage, resources = separator_stage(ray, job.separator, job.device, config.separator_threads,
                                                   workers)
                job = replace(job, stage=stage)
            executor, engine = RayExecutor(ray, resources), "ray"
        bar = progress(desc="batch", unit="s")

        def on_start(total_s: float, n: int) -> None:
            bar.reset(total=round(total_s, 1) or None)
            bar.set_postfix_str(f"{n} programmes to do")

        def on_progress(o) -> None:
            if o.status == "failed":
                print(f"bgmid batch: failed after {o.attempts} attempts: {shown(o.path)}: {o.error}",
                      file=sys.stderr)
            if o.status == "done":
                bar.update(round(o.duration_s, 1))
                bar.set_postfix_str(shown(o.name)[-30:])

        try:
            with bar:
                report = run_batch(job, paths, args.out, executor, workers, retries=args.retries,
                                   on_progress=on_progress, on_start=on_start, engine=engine,
                                   started=head)
        finally:
            executor.shutdown(wait=False, cancel_futures=True)
            if job.stage is not None:
                from bgmid.cluster import stop_stage

                stop_stage(ray, job.stage)
    s = report.summary()
    if args.json:
        print(json.dumps(s))
    else:
        print(f"{s['programmes']} programmes: {s['done']} done, {s['skipped']} already done, {s['failed']} failed; "
              f"{s['hours']:.2f} h monitored, {s['cues']} cues, {s['retries']} retries, in {s['wall_s']} s "
              f"({s['x_real_time']}x real time, {s['workers']} {engine} workers); cue sheets in {shown(args.out)}")
    return 1 if s["failed"] else 0
