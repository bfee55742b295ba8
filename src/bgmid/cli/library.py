"""``bgmid index`` / ``identify`` / ``stats`` / ``remove``: build a music-library index and query it."""

from __future__ import annotations

import argparse
import json
import sys
import time

from bgmid.cli.common import add_db_argument, progress
from bgmid.fingerprint.presets import DEFAULT_PRESET, PRESETS, QueryOptions


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "index",
        help="fingerprint music files into an index folder",
        description=(
            "Fingerprint audio files (any format: WAV, FLAC, OGG, Opus, MP3, AAC/M4A, MP4/MKV/MPEG-TS audio) "
            "into the index folder --db. Folders are walked recursively. Files already in the index (same "
            "bytes) are skipped, so an interrupted run resumes where it stopped. Unreadable files are reported "
            "by name and skipped; the exit status is 1 if any failed."
        ),
    )
    add_db_argument(p)
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=None,
        help=f"fingerprint preset, fixed when the index is created (default {DEFAULT_PRESET}: 11,025 Hz, "
        "n_fft 512, hop 256; p2: 16 kHz, n_fft 1024, hop 373)",
    )
    p.add_argument("--jobs", type=int, default=1, help="files fingerprinted in parallel (processes; default 1)")
    p.add_argument("--json", action="store_true", help="print a JSON summary instead of text")
    p.add_argument("paths", nargs="+", metavar="PATH", help="audio files or folders")
    p.set_defaults(func=cmd_index)

    p = sub.add_parser(
        "identify",
        help="identify the music in query files",
        description=(
            "Identify which indexed track plays in each query file and where (track offset in seconds). "
            "A query with no indexed music gives no match rather than a guess."
        ),
    )
    add_db_argument(p)
    p.add_argument("--json", action="store_true", help="one JSON object per query per line (see README)")
    p.add_argument("--top", type=int, default=1, help="report up to K matching tracks per query (default 1)")
    p.add_argument(
        "--shifts", type=int, default=QueryOptions.shifts,
        help="STFT analysis phases per query; more find more under noise, cost linear (default %(default)s)",
    )
    p.add_argument(
        "--refine-phases", type=int, default=QueryOptions.refine_phases,
        help="when the matched track repeats itself (loops, a steady beat) and aligns at several offsets, "
             "re-analyse the query at this many sub-hop phases to settle the offset; 1 turns it off "
             "(default %(default)s; costs nothing on unambiguous queries)",
    )
    p.add_argument(
        "--min-aligned", type=int, default=0,
        help="aligned hashes needed to report a match (default: the calibrated threshold)",
    )
    p.add_argument(
        "--separator", default="auto", metavar="NAME|PATH|none",
        help="remove the dialogue first and fuse the votes of the separated music with the unprocessed query "
        "(model name, checkpoint .pt, or 'none'). Default 'auto': the shipped default model when installed",
    )
    p.add_argument("queries", nargs="+", metavar="QUERY", help="audio files to identify")
    p.set_defaults(func=cmd_identify)

    p = sub.add_parser("stats", help="size of an index", description="Tracks, hours, postings and bytes on disk.")
    add_db_argument(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser(
        "remove",
        help="remove tracks from an index",
        description="Remove tracks by id (see 'bgmid identify --json') or by file path; postings are dropped.",
    )
    add_db_argument(p)
    p.add_argument("tracks", nargs="+", metavar="ID_OR_PATH", help="track ids or the paths they were indexed from")
    p.set_defaults(func=cmd_remove)


def cmd_index(args: argparse.Namespace) -> int:
    from bgmid.audio import iter_audio_files
    from bgmid.index import open_index
    from bgmid.index.build import index_paths

    t0 = time.time()
    with open_index(args.db, preset=args.preset, create=True) as store:
        total = sum(1 for _ in iter_audio_files(args.paths))
        bar = progress(total=total, desc="indexing", unit="file")

        def on_progress(path: str, status: str) -> None:
            bar.update(1)
            bar.set_postfix_str(status, refresh=False)

        report = index_paths(store, args.paths, jobs=max(1, args.jobs), on_progress=on_progress)
        bar.close()
        stats = store.stats()
    for _, reason in report.failed:
        print(f"bgmid index: skipped: {reason}", file=sys.stderr)
    summary = {
        "added": len(report.added),
        "skipped_already_indexed": len(report.skipped),
        "failed": [p for p, _ in report.failed],
        "seconds": round(time.time() - t0, 2),
        "index": stats,
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"added {summary['added']}, already indexed {summary['skipped_already_indexed']}, "
            f"failed {len(report.failed)} in {summary['seconds']} s; index now {stats['tracks']} tracks, "
            f"{stats['hours']} h, {stats['postings']} postings, {stats['bytes'] / 1e6:.1f} MB"
        )
    return 1 if report.failed else 0


def cmd_identify(args: argparse.Namespace) -> int:
    from bgmid.audio import AudioError, load, resample
    from bgmid.cli.common import resolve_separator
    from bgmid.index import open_index
    from bgmid.match import Matcher

    status = 0
    separator = resolve_separator(args.separator, command="identify")
    with open_index(args.db) as store:
        matcher = Matcher(store, QueryOptions(shifts=max(1, args.shifts), min_aligned=args.min_aligned,
                                              refine_phases=max(1, args.refine_phases)))
        for q in args.queries:
            try:
                x, sr = load(q)
            except AudioError as exc:
                print(f"bgmid identify: {exc}", file=sys.stderr)
                status = 1
                if args.json:
                    print(json.dumps({"query": q, "matches": [], "error": str(exc)}))
                continue
            if separator is not None:  # fusion: votes of the mix and of the separated music are pooled
                x = resample(x, sr, separator.sample_rate)
                sr = separator.sample_rate
                music, _ = separator.separate(x)
                matches = matcher.identify([x, music], sr, top=max(1, args.top))
            else:
                matches = matcher.identify(x, sr, top=max(1, args.top))
            if args.json:
                print(json.dumps({"query": q, "matches": [m.to_dict() for m in matches]}), flush=True)
            elif not matches:
                print(f"{q}: no match")
            else:
                for m in matches:
                    print(
                        f"{q}: {m.title} (track {m.track_id}) at {m.track_offset_s:.2f} s in the track; "
                        f"query {m.query_start_s:.1f}-{m.query_end_s:.1f} s, {m.score} aligned hashes, "
                        f"confidence {m.confidence:.2f}"
                    )
    return status


def cmd_stats(args: argparse.Namespace) -> int:
    from bgmid.index import open_index

    with open_index(args.db) as store:
        s = store.stats()
    if args.json:
        print(json.dumps(s))
    else:
        for k, v in s.items():
            print(f"{k:>16}: {v}")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    import os

    from bgmid.errors import BgmidError
    from bgmid.index import open_index

    with open_index(args.db) as store:
        by_path = {t.path: t.track_id for t in store.tracks()}
        ids = []
        for t in args.tracks:
            if t.isdigit():
                ids.append(int(t))
            elif os.path.abspath(t) in by_path:
                ids.append(by_path[os.path.abspath(t)])
            else:
                raise BgmidError(f"{t}: not a track id or an indexed path (see 'bgmid identify --json')")
        n = store.remove(ids)
        store.compact(force=True)
    print(f"removed {n} track(s)")
    return 0
