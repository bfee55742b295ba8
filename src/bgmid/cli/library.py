"""``bgmid index`` / ``identify`` / ``stats`` / ``remove``: build a music-library index and query it."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from bgmid.cli.common import add_db_argument, progress
from bgmid.fingerprint.presets import DEFAULT_PRESET, PRESETS, QueryOptions
from bgmid.pipeline import STREAM_QUERY_S


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
        epilog="Example: bgmid index --db lib/ --jobs 2 ~/Music/soundtracks",
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
    p.add_argument(
        "--ray", metavar="local|ADDRESS", default=None,
        help="fingerprint on Ray: 'local' (an embedded cluster here, --jobs CPUs, default all) or a cluster "
        "address whose nodes see the files at the same paths; this process alone writes the index. Needs "
        "pip install 'bgmid[cluster]'",
    )
    p.add_argument(
        "--shards", type=int, default=None, metavar="N",
        help="create --db as a new sharded catalogue of N shard indexes (track t in shard t mod N; queries "
        "answer as one index would). To split an existing index: 'bgmid shard'",
    )
    p.add_argument("--json", action="store_true", help="print a JSON summary instead of text")
    p.add_argument(
        "--no-wait", action="store_true",
        help="fail at once if another bgmid process is writing this index (default: wait for it; one writer "
        "at a time, readers are never blocked)",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="audio files or folders")
    p.set_defaults(func=cmd_index)

    p = sub.add_parser(
        "shard",
        help="split an index by track into N shard indexes that answer as the single index does",
        description=(
            "Split the index --db by track into --shards N shard indexes in the new folder --out (track t goes "
            "to shard t mod N; track ids, metadata and the stop-word policy are kept, so match, identify, "
            "monitor and batch give the same results on --out as on --db). Each shard is a normal index "
            "folder; --out opens as one index everywhere --db is accepted. The source is only read."
        ),
        epilog="Example: bgmid shard --db lib/ --out lib4/ --shards 4",
    )
    add_db_argument(p)
    p.add_argument("--out", required=True, metavar="DIR", help="new folder for the sharded index")
    p.add_argument("--shards", type=int, required=True, metavar="N", help="number of shards (>= 2)")
    p.add_argument("--json", action="store_true", help="print the sharded index's stats as JSON")
    p.set_defaults(func=cmd_shard)

    p = sub.add_parser(
        "identify",
        help="identify the music in query files",
        description=(
            "Identify which indexed track plays in each query file and where (track offset in seconds). "
            "A query with no indexed music gives no match rather than a guess. Queries longer than "
            f"{STREAM_QUERY_S:.0f} s are streamed in blocks (memory does not grow with their length). Unreadable "
            "queries are named on stderr and make the exit status 1; a truncated one is matched on what could "
            "be read, with a warning."
        ),
        epilog="Example: bgmid identify --db lib/ --top 3 clip.wav other.mp3",
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
        "--no-alterations", action="store_true",
        help="match the music only as indexed. By default, a query that does not match as it is is searched "
        "for speed (+-6 %%: the PAL speed-up is +4.2 %%), tempo (+-5 %%, pitch kept) and pitch (+-2 semitones, "
        "tempo kept) changes, reported as speed/tempo/pitch_semitones (about 5-8x the time of a plain query "
        "when it runs; queries longer than 60 s are matched as they are)",
    )
    p.add_argument(
        "--separator", default="auto", metavar="NAME|PATH|none",
        help="remove the dialogue first and fuse the votes of the separated music with the unprocessed query "
        "(model name, checkpoint .pt, or 'none'). Default 'auto': the shipped default model when installed",
    )
    p.add_argument("queries", nargs="+", metavar="QUERY", help="audio files to identify")
    p.set_defaults(func=cmd_identify)

    p = sub.add_parser(
        "stats", help="size of an index",
        description="Tracks, hours of music, postings and size on disk (JSON: 'bytes' in bytes). Reads only.",
        epilog="Example: bgmid stats --db lib/ --json",
    )
    add_db_argument(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser(
        "check",
        help="verify an index byte for byte; --repair fixes it without losing healthy tracks",
        description=(
            "Verify every file of the index: each segment against its checksums and structure, each track row "
            "of meta.sqlite against its checksum, and the two against each other. Names every damaged file "
            "and the tracks it holds; changes nothing (exit status 0 healthy, 1 damaged). With --repair (one "
            "writer at a time): damaged segments and the old metadata are moved to DIR/quarantine/<time>/ "
            "(nothing is deleted), the metadata is rebuilt from the healthy segments (each carries its tracks' "
            "records), and tracks that only damaged segments held are re-indexed from their audio files where "
            "these still exist; the rest are listed. Also upgrades an index of format 2 in place."
        ),
        epilog="Example: bgmid check --db lib/; if it reports damage: bgmid check --db lib/ --repair",
    )
    add_db_argument(p)
    p.add_argument("--repair", action="store_true", help="repair what the check finds (see above)")
    p.add_argument("--no-reindex", action="store_true",
                   help="with --repair: do not re-index affected tracks from their files, only list them")
    p.add_argument("--no-wait", action="store_true", help="with --repair: fail at once if another writer is busy")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser(
        "remove",
        help="remove tracks from an index",
        description="Remove tracks by id (see 'bgmid identify --json') or by file path; postings are dropped.",
        epilog="Example: bgmid remove --db lib/ 17 ~/Music/soundtracks/theme.flac",
    )
    add_db_argument(p)
    p.add_argument("--no-wait", action="store_true", help="fail at once if another writer is busy (default: wait)")
    p.add_argument("tracks", nargs="+", metavar="ID_OR_PATH", help="track ids or the paths they were indexed from")
    p.set_defaults(func=cmd_remove)


def cmd_index(args: argparse.Namespace) -> int:
    from bgmid.audio import iter_audio_files
    from bgmid.errors import BgmidError
    from bgmid.index import open_index
    from bgmid.index.build import index_paths
    from bgmid.paths import shown

    t0 = time.time()
    for p in args.paths:
        if not os.path.lexists(p):
            raise BgmidError(f"{shown(p)}: no such file or folder. Check the path.")
    total = sum(1 for _ in iter_audio_files(args.paths))
    if total == 0:
        raise BgmidError(
            f"no audio files under {', '.join(shown(p) for p in args.paths)} (looked for "
            "WAV, FLAC, OGG, Opus, MP3, AAC/M4A, MP4/MKV/TS and extensionless files); nothing was indexed."
        )
    if args.shards is not None:
        from bgmid.index.shard import create_sharded, is_sharded

        if not is_sharded(args.db):
            if os.path.isdir(args.db) and os.listdir(args.db):
                raise BgmidError(f"{shown(args.db)}: already an index (or not empty); --shards creates a new "
                                 f"catalogue. Split an index with 'bgmid shard --db {shown(args.db)} --out NEW "
                                 f"--shards {args.shards}'.")
            create_sharded(args.db, args.shards, args.preset)
    from contextlib import nullcontext

    session = nullcontext(None)
    if args.ray is not None:
        from bgmid.cluster import ray_session

        session = ray_session(args.ray, num_cpus=args.jobs if args.ray == "local" and args.jobs > 1 else None)
    with session as ray, open_index(args.db, preset=args.preset, create=True, wait=not args.no_wait) as store:
        executor, jobs = None, max(1, args.jobs)
        if ray is not None:
            from bgmid.cluster import RayExecutor

            executor = RayExecutor(ray, {"num_cpus": 1})
            jobs = args.jobs if args.jobs > 1 else max(1, int(ray.cluster_resources().get("CPU", 1)))
        bar = progress(total=total, desc="indexing", unit="file")

        def on_progress(path: str, status: str) -> None:
            bar.update(1)
            bar.set_postfix_str(status, refresh=False)

        report = index_paths(store, args.paths, jobs=jobs, on_progress=on_progress, executor=executor)
        bar.close()
        stats = store.stats()
    for _, reason in report.failed:
        print(f"bgmid index: skipped: {reason}", file=sys.stderr)
    for _, msg in report.warnings:
        print(f"bgmid index: warning: {msg}", file=sys.stderr)
    summary = {
        "added": len(report.added),
        "skipped_already_indexed": len(report.skipped),
        "failed": [shown(p) for p, _ in report.failed],
        "warnings": [msg for _, msg in report.warnings],
        "seconds": round(time.time() - t0, 2),
        "index": stats,
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"added {summary['added']}, already indexed {summary['skipped_already_indexed']}, "
            f"failed {len(report.failed)} in {summary['seconds']} s; index now {stats['tracks']} tracks, "
            f"{stats['hours']} h, {stats['postings']} postings, {human_bytes(stats['bytes'])}"
        )
    return 1 if report.failed else 0


def cmd_shard(args: argparse.Namespace) -> int:
    from bgmid.index.shard import split_index

    bar = progress(desc="splitting", unit="segment")

    def on_progress(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    stats = split_index(args.db, args.out, args.shards, on_progress=on_progress)
    bar.close()
    if args.json:
        print(json.dumps(stats))
    else:
        print(f"{stats['tracks']} tracks in {stats['shards']} shards ({', '.join(map(str, stats['tracks_per_shard']))}"
              f" tracks), {human_bytes(stats['bytes'])}: {args.out}")
    return 0


def query_options(args: argparse.Namespace) -> QueryOptions:
    """The query options ``identify``'s arguments ask for (also what ``bgmid serve`` uses, from its defaults)."""
    return QueryOptions(shifts=max(1, args.shifts), min_aligned=args.min_aligned,
                        refine_phases=max(1, args.refine_phases), alterations=not args.no_alterations)


def identify_object(name: str, matches: list, error: str | None = None) -> dict:
    """One query's ``identify --json`` object (the JSON contract, see README)."""
    obj = {"query": name, "matches": [m.to_dict() for m in matches]}
    if error is not None:
        obj["error"] = error
    return obj


def cmd_identify(args: argparse.Namespace) -> int:
    from bgmid.audio import AudioError
    from bgmid.cli.common import audio_warnings, resolve_separator
    from bgmid.index import open_index
    from bgmid.paths import shown
    from bgmid.pipeline import QueryPipeline

    status = 0
    separator = resolve_separator(args.separator, command="identify")
    top = max(1, args.top)
    with open_index(args.db) as store, audio_warnings("identify"):
        pipeline = QueryPipeline(store, separator, options=query_options(args))
        for q in args.queries:
            name = shown(q)
            try:
                matches = pipeline.identify_file(q, top=top)
            except AudioError as exc:
                print(f"bgmid identify: {exc}", file=sys.stderr)
                status = 1
                if args.json:
                    print(json.dumps(identify_object(name, [], error=str(exc))), flush=True)
                continue
            if args.json:
                print(json.dumps(identify_object(name, matches)), flush=True)
            elif not matches:
                print(f"{name}: no match", flush=True)
            else:
                for m in matches:
                    print(
                        f"{name}: {m.title} (track {m.track_id}) at {m.track_offset_s:.2f} s in the track; "
                        f"query {m.query_start_s:.1f}-{m.query_end_s:.1f} s, {m.score} aligned hashes, "
                        f"confidence {m.confidence:.2f}{_alteration_text(m)}", flush=True,
                    )
    return status


def _alteration_text(m) -> str:
    """', aired 4.17 % faster' and the like, or '' for music aired as indexed."""
    parts = []
    if abs(m.speed - 1) > 1e-6:
        parts.append(f"speed {100 * (m.speed - 1):+.2f} %")
    if abs(m.tempo - 1) > 1e-6:
        parts.append(f"tempo {100 * (m.tempo - 1):+.2f} %")
    if abs(m.pitch_semitones) > 1e-6:
        parts.append(f"pitch {m.pitch_semitones:+.2f} semitones")
    return f"; aired with {', '.join(parts)}" if parts else ""


def human_bytes(n: int) -> str:
    """1234567 -> '1.2 MB' (decimal units, as disk sizes are sold)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"  # pragma: no cover


def cmd_stats(args: argparse.Namespace) -> int:
    from bgmid.index import open_index

    with open_index(args.db) as store:
        s = store.stats()
    if args.json:
        print(json.dumps(s))
    else:
        units = {"hours": "h", "bytes": None}
        for k, v in s.items():
            if k == "bytes":
                print(f"{'size on disk':>16}: {human_bytes(v)} ({v:,} bytes)")
            else:
                print(f"{k:>16}: {v}{' ' + units[k] if units.get(k) else ''}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from bgmid.index.check import check_index, repair_index

    if not args.repair:
        rep = check_index(args.db)
        if args.json:
            print(json.dumps(rep.to_dict()))
        else:
            print(f"{rep.path}: {rep.tracks} tracks ({rep.healthy_tracks} healthy), {rep.segments} segments "
                  f"({rep.healthy_segments} healthy)")
            for f in rep.findings:
                held = f"; tracks {', '.join(map(str, f.tracks[:20]))}" if f.tracks else ""
                print(f"  DAMAGED {f.file}: {f.problem}{held}")
            print("healthy" if rep.healthy else f"run 'bgmid check --db {args.db} --repair' to repair it")
        return 0 if rep.healthy else 1
    bar = progress(desc="re-indexing", unit="file")
    rep = repair_index(args.db, reindex=not args.no_reindex, wait=not args.no_wait,
                       on_progress=lambda path, status: bar.update(1))
    bar.close()
    after = check_index(args.db)
    if args.json:
        print(json.dumps({**rep.to_dict(), "healthy_after": after.healthy}))
    else:
        if not rep.quarantined and not rep.reindexed and not rep.unrecoverable:
            print(f"{rep.path}: healthy, nothing to repair ({rep.kept_tracks} tracks)")
        else:
            print(f"{rep.path}: kept {rep.kept_tracks} healthy tracks; re-indexed {len(rep.reindexed)}; "
                  f"moved {len(rep.quarantined)} files/folders to {rep.quarantine}")
            for u in rep.unrecoverable:
                print(f"  NOT RECOVERED track {u['track_id']} ({u['title']}): {u['why']}")
        print("healthy now" if after.healthy else "still damaged: " + "; ".join(f.problem for f in after.findings))
    return 0 if after.healthy and not rep.unrecoverable else 1


def cmd_remove(args: argparse.Namespace) -> int:
    import os

    from bgmid.errors import BgmidError
    from bgmid.index import open_index

    with open_index(args.db, write=True, wait=not args.no_wait) as store:
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
