"""``bgmid check``: verify every byte of an index, and repair it without losing a healthy track.

:func:`check_index` only reads. It opens SQLite read-only, verifies each track row's checksum, reads every
segment in full against its manifest (:func:`bgmid.index.segment.verify_segment`) and compares the two
views: tracks without postings, postings of unknown tracks, listed segments that are missing, segments the
metadata has lost.

:func:`repair_index` (under the writer lock) rebuilds the metadata from the healthy segments' manifests
(they carry every track's record), quarantines damaged segments and the old metadata into
``DIR/quarantine/<time>/`` (nothing is deleted), and re-indexes the tracks that only damaged segments held,
from their original files where those still exist; those it cannot re-index are listed.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from bgmid.errors import BgmidError
from bgmid.index.lock import WriterLock
from bgmid.index.segment import MANIFEST, IndexDamaged, digest_bytes, valid_name, verify_segment
from bgmid.paths import from_stored, shown

QUARANTINE = "quarantine"


@dataclass
class Finding:
    """One problem: which file, what is wrong, which tracks it concerns."""

    file: str
    problem: str
    tracks: list[int] = field(default_factory=list)


@dataclass
class CheckReport:
    path: str
    tracks: int = 0  #: live tracks the metadata lists
    healthy_tracks: int = 0  #: live tracks whose postings are in healthy, listed segments
    segments: int = 0
    healthy_segments: int = 0
    findings: list[Finding] = field(default_factory=list)
    metadata_ok: bool = True

    @property
    def healthy(self) -> bool:
        return not self.findings

    def to_dict(self) -> dict:
        return {**asdict(self), "healthy": self.healthy}


@dataclass
class _Meta:
    """What could be read of meta.sqlite."""

    preset: dict | None = None
    version: int = 0
    generation: int = 0
    rows: dict[int, dict] = field(default_factory=dict)  #: track id -> record (as in a manifest) + removed
    segments: dict[str, str | None] = field(default_factory=dict)  #: name -> manifest checksum
    problems: list[Finding] = field(default_factory=list)


def _read_meta(index: Path) -> _Meta:
    from bgmid.index.local import row_checksum

    out = _Meta()
    f = index / "meta.sqlite"
    if not f.exists() or f.stat().st_size == 0:
        out.problems.append(Finding(shown(f), "missing or empty"))
        return out
    try:
        db = sqlite3.connect("file:" + f.resolve().as_posix() + "?mode=ro", uri=True)
        db.text_factory = lambda b: b.decode("utf-8", errors="surrogateescape")
        try:
            ok = db.execute("PRAGMA quick_check").fetchone()[0]
            if ok != "ok":
                out.problems.append(Finding(shown(f), f"SQLite integrity: {ok}"))
            info = dict(db.execute("SELECT key, value FROM info").fetchall())
            out.preset = json.loads(info["preset"]) if "preset" in info else None
            out.version = int(info.get("format_version", 0))
            out.generation = int(info.get("generation", 0))
            if out.preset is None:
                out.problems.append(Finding(shown(f), "holds no index information (preset, format)"))
            cols = {r[1] for r in db.execute("PRAGMA table_info(tracks)")}
            has_sum = "row_sum" in cols
            for r in db.execute("SELECT id, title, path, duration_s, content_hash, n_hashes, extra, removed"
                                + (", row_sum" if has_sum else "") + " FROM tracks"):
                tid, title, path, dur, chash, nh, extra, removed = r[:8]
                path = from_stored(path)
                if has_sum and r[8] and r[8] != row_checksum(tid, title, path, dur, chash, nh, extra, removed):
                    out.problems.append(Finding(shown(f), f"the row of track {tid} fails its checksum", [tid]))
                    continue
                try:
                    tags = json.loads(extra)
                except ValueError:
                    tags = {}
                out.rows[int(tid)] = {"id": int(tid), "title": title, "path": path, "duration_s": float(dur),
                                      "content_hash": chash, "n_hashes": int(nh), "extra": tags,
                                      "removed": int(removed)}
            scols = {r[1] for r in db.execute("PRAGMA table_info(segments)")}
            q = "SELECT name, " + ("checksum" if "checksum" in scols else "NULL") + " FROM segments"
            for name, cs in db.execute(q):
                if not valid_name(name):
                    out.problems.append(Finding(shown(f), f"segment name {name!r} is not one bgmid writes"))
                    continue
                out.segments[name] = cs
        finally:
            db.close()
    except (sqlite3.DatabaseError, ValueError, KeyError) as exc:
        out.problems.append(Finding(shown(f), f"unreadable: {exc}"))
    return out


def _segment_tracks(path: Path) -> list[int]:
    """Best effort: the tracks a (possibly damaged) segment holds, from its manifest or its tids array."""
    try:
        return [int(t["id"]) for t in json.loads((path / MANIFEST).read_bytes())["tracks"]]
    except Exception:
        try:
            return [int(t) for t in np.load(path / "tids.npy", allow_pickle=False).tolist()]
        except Exception:
            return []


def _scan(index: Path) -> tuple[_Meta, dict[str, dict], dict[str, Finding]]:
    """Read everything: (metadata, healthy segments' manifests by name, damaged segments' findings)."""
    meta = _read_meta(index)
    root = index / "segments"
    on_disk = sorted(d.name for d in root.iterdir() if valid_name(d.name)) if root.is_dir() else []
    healthy: dict[str, dict] = {}
    damaged: dict[str, Finding] = {}
    for name in on_disk:
        try:
            healthy[name] = verify_segment(index, root / name, meta.segments.get(name))
        except IndexDamaged as exc:
            damaged[name] = Finding(shown(exc.file), exc.reason, exc.tracks or _segment_tracks(root / name))
    return meta, healthy, damaged


def check_index(path: str | os.PathLike) -> CheckReport:
    """Verify the index at ``path`` completely, changing nothing (see module docstring). A sharded index
    (:mod:`bgmid.index.shard`) is checked shard by shard, in one report."""
    from bgmid.index.shard import is_sharded, shard_folders

    index = Path(path)
    if not index.is_dir():
        raise BgmidError(f"{shown(index)}: no such index folder.")
    if is_sharded(index):
        reps = [check_index(d) for d in shard_folders(index)]
        return CheckReport(shown(index), tracks=sum(r.tracks for r in reps),
                           healthy_tracks=sum(r.healthy_tracks for r in reps), segments=sum(r.segments for r in reps),
                           healthy_segments=sum(r.healthy_segments for r in reps),
                           findings=[f for r in reps for f in r.findings], metadata_ok=all(r.metadata_ok for r in reps))
    if _read_meta(index).version == 2:
        return CheckReport(shown(index), findings=[Finding(shown(index / "meta.sqlite"), "format 2 (no checksums "
                                                           "to verify): upgrade it with --repair")])
    meta, healthy, damaged = _scan(index)
    rep = CheckReport(shown(index), findings=list(meta.problems), metadata_ok=not meta.problems)
    live = {t for t, r in meta.rows.items() if not r["removed"]}
    rep.tracks, rep.segments = len(live), len(meta.segments)
    rep.findings += damaged.values()
    held: set[int] = set()
    for name in meta.segments:
        if name in healthy:
            held |= {int(t["id"]) for t in healthy[name]["tracks"]}
            rep.healthy_segments += 1
        elif name not in damaged:
            rep.findings.append(Finding(shown(index / "segments" / name), "listed in meta.sqlite but missing"))
    rep.healthy_tracks = len(live & held)
    lost = sorted(live - held)
    if lost:
        rep.findings.append(Finding(shown(index / "meta.sqlite"), "live tracks without postings in a healthy "
                                    "segment", lost))
    listed_held = held
    for name, m in healthy.items():
        if name in meta.segments:
            continue
        ids = {int(t["id"]) for t in m["tracks"]}
        unknown = ids - listed_held - {t for t, r in meta.rows.items() if r["removed"]}
        fresh = int(m.get("generation", 0)) == meta.generation + 1 and not ids & set(meta.rows)
        if unknown and not fresh:
            rep.findings.append(Finding(shown(index / "segments" / name), "healthy segment holding tracks the "
                                        "metadata does not list (lost or older metadata)", sorted(unknown)))
    return rep


@dataclass
class RepairReport:
    path: str
    quarantined: list[str] = field(default_factory=list)  #: files and folders moved to the quarantine
    kept_tracks: int = 0
    reindexed: list[str] = field(default_factory=list)  #: paths re-indexed from their audio
    unrecoverable: list[dict] = field(default_factory=list)  #: {track_id, title, path, why}
    quarantine: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _write_meta(target: Path, preset: dict, generation: int, records: dict[int, dict],
                segments: dict[str, dict]) -> None:
    from bgmid.index.local import _SCHEMA, FORMAT_VERSION, row_checksum
    from bgmid.paths import to_stored

    if target.exists():
        target.unlink()
    db = sqlite3.connect(str(target), isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=DELETE")
        db.executescript(_SCHEMA)
        db.execute("BEGIN")
        for k, v in (("preset", json.dumps(preset)), ("format_version", str(FORMAT_VERSION)),
                     ("generation", str(generation))):
            db.execute("INSERT INTO info VALUES (?, ?)", (k, v))
        for tid, r in sorted(records.items()):
            extra = json.dumps(r.get("extra", {}))
            rs = row_checksum(tid, r["title"], r["path"], r["duration_s"], r["content_hash"], r["n_hashes"], extra,
                              r.get("removed", 0))
            db.execute("INSERT INTO tracks (id, title, path, duration_s, content_hash, n_hashes, extra, removed, "
                       "added_at, row_sum) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (tid, r["title"], to_stored(r["path"]), r["duration_s"], r["content_hash"], r["n_hashes"],
                        extra, r.get("removed", 0), time.time(), rs))
        for name, m in segments.items():
            db.execute("INSERT INTO segments (name, n_postings, value_bits, created_at, checksum, generation) "
                       "VALUES (?, ?, ?, ?, ?, ?)", (name, int(m["n_postings"]), int(m["value_bits"]),
                                                     float(m.get("written_at", 0.0)), m["_checksum"],
                                                     int(m.get("generation", 0))))
        db.execute("COMMIT")
    finally:
        db.close()
    with open(target, "rb") as fh:
        os.fsync(fh.fileno())


def _choose_segments(healthy: dict[str, dict]) -> tuple[dict[str, dict], list[str]]:
    """Healthy segments to keep: newest generation first, each track from one segment only. Returns (kept,
    partly overlapping ones to quarantine); segments whose tracks are all held by newer ones are debris
    that the writer's next open deletes."""
    kept: dict[str, dict] = {}
    overlap: list[str] = []
    held: set[int] = set()
    for name, m in sorted(healthy.items(), key=lambda kv: (-int(kv[1].get("generation", 0)), kv[0])):
        ids = {int(t["id"]) for t in m["tracks"]}
        if ids and ids <= held:
            continue
        if ids & held:
            overlap.append(name)
            continue
        kept[name] = m
        held |= ids
    return kept, overlap


def repair_index(path: str | os.PathLike, reindex: bool = True, wait: bool = True,
                 on_progress: Callable[[str, str], None] | None = None) -> RepairReport:
    """Repair the index at ``path`` (see module docstring); returns what was kept, moved and re-indexed. A
    sharded index is repaired shard by shard."""
    from bgmid.index.local import REMOVED_FILE, LocalStore
    from bgmid.index.shard import is_sharded, shard_folders

    index = Path(path)
    if not index.is_dir():
        raise BgmidError(f"{shown(index)}: no such index folder.")
    if is_sharded(index):
        reps = [repair_index(d, reindex, wait, on_progress) for d in shard_folders(index)]
        return RepairReport(shown(index), quarantined=[q for r in reps for q in r.quarantined],
                            kept_tracks=sum(r.kept_tracks for r in reps),
                            reindexed=[x for r in reps for x in r.reindexed],
                            unrecoverable=[u for r in reps for u in r.unrecoverable],
                            quarantine=next((r.quarantine for r in reps if r.quarantine), None))
    lock = WriterLock(index, wait=wait)
    try:
        rep = RepairReport(shown(index))
        if _read_meta(index).version == 2:
            LocalStore(index, lock=lock).close()  # the upgrade writes manifests and checksums
        if check_index(index).healthy:
            LocalStore(index, lock=lock).close()  # nothing to repair (a writer's open removes debris)
            rep.kept_tracks = len(_read_meta(index).rows)
            return rep
        meta, healthy, damaged = _scan(index)
        kept, overlap = _choose_segments(healthy)
        preset = meta.preset or next((m.get("preset") for m in kept.values() if m.get("preset")), None)
        if preset is None:
            raise BgmidError(f"{shown(index)}: neither meta.sqlite nor any segment says which preset this index "
                             "uses; nothing can be recovered here. Index the music again into a new folder.")
        removed: set[int] = {t for t, r in meta.rows.items() if r["removed"]}
        try:
            removed |= set(json.loads((index / REMOVED_FILE).read_text()))
        except (OSError, ValueError):
            pass
        records: dict[int, dict] = {}
        for name, m in kept.items():
            m["_checksum"] = digest_bytes((index / "segments" / name / MANIFEST).read_bytes())
            for t in m["tracks"]:
                r = {k: t[k] for k in ("title", "duration_s", "content_hash", "n_hashes", "extra")}
                r["path"] = from_stored(bytes.fromhex(t["path_hex"]))
                r["removed"] = int(int(t["id"]) in removed)
                records[int(t["id"])] = r
        # tracks known from the metadata or a damaged manifest that no kept segment holds
        known: dict[int, dict] = {t: r for t, r in meta.rows.items() if not r["removed"]}
        for name in list(damaged) + overlap:
            for tid in damaged[name].tracks if name in damaged else []:
                known.setdefault(tid, {"title": f"track {tid}", "path": None})
        affected = {t: r for t, r in known.items() if t not in records and t not in removed}
        for t in removed - set(records):
            if t in meta.rows:
                records[t] = {**meta.rows[t], "removed": 1}
        generation = max([meta.generation] + [int(m.get("generation", 0)) for m in healthy.values()]) + 1
        stamp = time.strftime("%Y%m%dT%H%M%S")
        qdir = index / QUARANTINE / stamp
        qdir.mkdir(parents=True, exist_ok=True)
        rep.quarantine = shown(qdir)
        new = index / "meta.sqlite.rebuild"
        _write_meta(new, preset, generation, records, kept)
        for name in list(damaged) + overlap:
            shutil.move(str(index / "segments" / name), str(qdir / name))
            rep.quarantined.append(shown(qdir / name))
        for suffix in ("", "-wal", "-shm", "-journal"):
            f = index / f"meta.sqlite{suffix}"
            if f.exists():
                shutil.move(str(f), str(qdir / f.name))
                rep.quarantined.append(shown(qdir / f.name))
        os.replace(new, index / "meta.sqlite")
        rep.kept_tracks = sum(1 for r in records.values() if not r["removed"])
        _reindex(index, lock, affected, rep, reindex, on_progress)
        return rep
    finally:
        lock.release()


def _reindex(index: Path, lock: WriterLock, affected: dict[int, dict], rep: RepairReport, reindex: bool,
             on_progress: Callable[[str, str], None] | None) -> None:
    """Re-index the tracks that only damaged segments held, from their files where they still exist."""
    from bgmid.index.build import index_paths
    from bgmid.index.local import LocalStore

    todo = []
    for tid, r in sorted(affected.items()):
        p = r.get("path")
        why = None
        if not reindex:
            why = "re-indexing not asked for (--no-reindex)"
        elif p is None:
            why = "its path is not known any more (the metadata was lost with its segment)"
        elif not os.path.isfile(p):
            why = f"{shown(p)} no longer exists"
        if why:
            rep.unrecoverable.append({"track_id": tid, "title": r.get("title"), "path": shown(p) if p else None,
                                      "why": why})
        else:
            todo.append((tid, r, p))
    with LocalStore(index, lock=lock) as store:
        if not todo:
            return
        result = index_paths(store, [p for _, _, p in todo], on_progress=on_progress)
        failed = dict(result.failed)
        for tid, r, p in todo:
            if p in failed:
                rep.unrecoverable.append({"track_id": tid, "title": r.get("title"), "path": shown(p),
                                          "why": failed[p]})
            else:
                rep.reindexed.append(shown(p))


def upgrade_format2(store) -> None:
    """Upgrade an index of format 2 in place, under the writer lock: checksummed manifests for every
    segment, row checksums, a commit generation. Nothing is re-fingerprinted."""
    from bgmid.index.base import TrackMeta
    from bgmid.index.local import FORMAT_VERSION, row_checksum
    from bgmid.index.segment import ARRAYS, digest_file, manifest_bytes, track_record, write_durably

    db = store.db
    tcols = {r[1] for r in db.execute("PRAGMA table_info(tracks)")}
    scols = {r[1] for r in db.execute("PRAGMA table_info(segments)")}
    db.execute("BEGIN IMMEDIATE")
    try:
        if "row_sum" not in tcols:
            db.execute("ALTER TABLE tracks ADD COLUMN row_sum TEXT NOT NULL DEFAULT ''")
        if "checksum" not in scols:
            db.execute("ALTER TABLE segments ADD COLUMN checksum TEXT")
        if "generation" not in scols:
            db.execute("ALTER TABLE segments ADD COLUMN generation INTEGER NOT NULL DEFAULT 0")
        rows = db.execute("SELECT id, title, path, duration_s, content_hash, n_hashes, extra, removed FROM tracks")
        metas = {}
        for tid, title, path, dur, chash, nh, extra, removed in rows.fetchall():
            path = from_stored(path)
            db.execute("UPDATE tracks SET row_sum = ? WHERE id = ?",
                       (row_checksum(tid, title, path, dur, chash, nh, extra, removed), tid))
            metas[tid] = TrackMeta(title, path, dur, chash, nh, json.loads(extra), tid)
        listed = {r[0]: r[1:] for r in db.execute("SELECT name, n_postings, value_bits FROM segments")}
        for d in store.seg_root.iterdir():  # format 2's own rule for debris: folders no row names
            if d.name not in listed:
                shutil.rmtree(d, ignore_errors=True)
        for name, (n_postings, value_bits) in listed.items():
            if not valid_name(name):
                raise IndexDamaged(store.path, store.meta_path, f"segment name {name!r} is not one bgmid writes")
            seg = store.seg_root / name
            tids = np.load(seg / "tids.npy").tolist()
            files = {a: {"size": (seg / f"{a}.npy").stat().st_size, "blake2b": digest_file(seg / f"{a}.npy")}
                     for a in ARRAYS}
            data = manifest_bytes(name, 0, store.preset.to_dict(), value_bits, n_postings, files,
                                  [track_record(metas[t]) for t in tids if t in metas])
            tmp = seg / (MANIFEST + ".tmp")
            write_durably(tmp, data)
            os.replace(tmp, seg / MANIFEST)
            db.execute("UPDATE segments SET checksum = ? WHERE name = ?", (digest_bytes(data), name))
        db.execute("INSERT OR REPLACE INTO info VALUES ('format_version', ?)", (str(FORMAT_VERSION),))
        db.execute("INSERT OR REPLACE INTO info VALUES ('generation', '1')")
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
