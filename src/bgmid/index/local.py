"""The embedded default index: a directory with SQLite metadata and memory-mapped posting segments.

Layout of an index directory::

    meta.sqlite              tracks (id, title, path, duration, content hash, ...), segment list, preset
    segments/<name>/         one immutable segment, written once, then only ever deleted whole:
        keys.npy             uint32, sorted unique hashes                          (U,)
        starts.npy           uint32/uint64 offsets into vals, CSR style             (U+1,)
        vals.npy             uint32/uint64 postings: (local track << time_bits) | frame
        tids.npy             int64 local track number -> global track id

Why this shape:

* **Compact.** A posting costs 4 bytes (8 only when a segment holds so many tracks or frames that 32 bits do
  not suffice: there is no global cap on tracks or track length, unlike audfprint's bit-packed table), and
  each distinct hash once more 8 bytes for key and offset.
* **Fast, vectorised lookup.** ``np.searchsorted`` of all query hashes in each segment's keys, then one
  gather of the posting ranges; memory-mapped, so opening an index reads almost nothing.
* **Crash safe.** Every track is written as a new segment directory under a temporary name, renamed into
  place and only then recorded in SQLite, inside the transaction that also records the track. A kill at any
  point leaves either the committed state or an orphan directory that the next open deletes, so an
  interrupted ``bgmid index`` loses at most the track in progress and a re-run resumes (already indexed files
  are recognised by content hash). Small segments are merged (:meth:`LocalStore.compact`) the same way.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bgmid.errors import BgmidError
from bgmid.fingerprint.presets import Preset, get_preset
from bgmid.index.base import TrackMeta

FORMAT_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS info (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tracks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    title TEXT NOT NULL,
    path TEXT NOT NULL,
    duration_s REAL NOT NULL,
    content_hash TEXT NOT NULL,
    n_hashes INTEGER NOT NULL,
    extra TEXT NOT NULL DEFAULT '{}',
    removed INTEGER NOT NULL DEFAULT 0,
    added_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS tracks_content ON tracks (content_hash);
CREATE TABLE IF NOT EXISTS segments (
    name TEXT PRIMARY KEY,
    n_postings INTEGER NOT NULL,
    time_bits INTEGER NOT NULL,
    created_at REAL NOT NULL
);
"""


def _bits(n: int) -> int:
    """Bits needed to store values 0..n-1 (at least 1)."""
    return max(1, int(n - 1).bit_length())


class _Segment:
    """One immutable, memory-mapped posting segment."""

    def __init__(self, path: Path, time_bits: int):
        self.path = path
        self.keys = np.load(path / "keys.npy", mmap_mode="r")
        self.starts = np.load(path / "starts.npy", mmap_mode="r")
        self.vals = np.load(path / "vals.npy", mmap_mode="r")
        self.tids = np.load(path / "tids.npy")
        self.time_bits = time_bits
        self.n_postings = int(self.vals.shape[0])

    def lookup(self, q: np.ndarray, max_postings: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        keys = self.keys
        if keys.shape[0] == 0:
            empty = np.zeros(0, np.int64)
            return empty, empty, empty
        idx = np.searchsorted(keys, q)
        idx_c = np.minimum(idx, keys.shape[0] - 1)
        found = np.asarray(keys[idx_c]) == q
        rows = np.nonzero(found)[0]
        lo = np.asarray(self.starts[idx_c[rows]], dtype=np.int64)
        hi = np.asarray(self.starts[idx_c[rows] + 1], dtype=np.int64)
        count = hi - lo
        if max_postings is not None:
            keep = count <= max_postings
            rows, lo, count = rows[keep], lo[keep], count[keep]
        total = int(count.sum())
        if total == 0:
            empty = np.zeros(0, np.int64)
            return empty, empty, empty
        run_start = np.cumsum(count) - count
        pos = np.arange(total, dtype=np.int64) - np.repeat(run_start - lo, count)
        v = np.asarray(self.vals[pos]).astype(np.int64)
        mask = (1 << self.time_bits) - 1
        return np.repeat(rows, count), self.tids[v >> self.time_bits], v & mask

    def postings(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All postings as (hash, track_id, time); used when merging segments."""
        counts = np.diff(np.asarray(self.starts, dtype=np.int64))
        h = np.repeat(np.asarray(self.keys), counts)
        v = np.asarray(self.vals).astype(np.int64)
        mask = (1 << self.time_bits) - 1
        return h, self.tids[v >> self.time_bits], v & mask


def _write_segment(root: Path, hashes: np.ndarray, track_ids: np.ndarray, times: np.ndarray) -> tuple[str, int]:
    """Write postings as a new segment directory atomically; return (name, time_bits)."""
    hashes = np.asarray(hashes, dtype=np.uint32)
    times = np.asarray(times, dtype=np.int64)
    if times.size and times.min() < 0:
        raise ValueError("posting times must be >= 0 frames")
    tids, local = np.unique(np.asarray(track_ids, dtype=np.int64), return_inverse=True)
    time_bits = _bits(int(times.max()) + 1 if times.size else 1)
    track_bits = _bits(max(1, tids.size))
    if time_bits + track_bits > 64:
        raise ValueError("segment too large to pack; split it")
    vdtype = np.uint32 if time_bits + track_bits <= 32 else np.uint64
    order = np.lexsort((times, local, hashes))
    h = hashes[order]
    vals = ((local[order].astype(np.uint64) << np.uint64(time_bits)) | times[order].astype(np.uint64)).astype(vdtype)
    keys, first = np.unique(h, return_index=True)
    sdtype = np.uint32 if h.size < 2**32 else np.uint64
    starts = np.append(first, h.size).astype(sdtype)
    name = f"seg-{time.time_ns():x}-{uuid.uuid4().hex[:8]}"
    tmp = root / f"tmp-{name}"
    tmp.mkdir(parents=True)
    for fname, arr in (("keys", keys), ("starts", starts), ("vals", vals), ("tids", tids)):
        with open(tmp / f"{fname}.npy", "wb") as fh:
            np.save(fh, arr)
            fh.flush()
            os.fsync(fh.fileno())
    os.replace(tmp, root / name)
    return name, time_bits


class LocalStore:
    """The embedded index (see module docstring). Use :func:`open_index` to get one."""

    def __init__(self, path: str | os.PathLike, preset: Preset | str | None = None, create: bool = False):
        self.path = Path(path)
        meta = self.path / "meta.sqlite"
        if not meta.exists():
            if not create:
                raise BgmidError(
                    f"{self.path}: no bgmid index here. Create one with 'bgmid index --db {self.path} MUSIC...'."
                )
            self.path.mkdir(parents=True, exist_ok=True)
        self.seg_root = self.path / "segments"
        self.seg_root.mkdir(exist_ok=True)
        self.db = sqlite3.connect(str(meta), timeout=60.0, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(_SCHEMA)
        stored = dict(self.db.execute("SELECT key, value FROM info").fetchall())
        if "preset" in stored:
            stored_preset = Preset(**json.loads(stored["preset"]))
            if preset is not None and get_preset(preset) != stored_preset:
                raise BgmidError(
                    f"{self.path}: index was built with preset {stored_preset.name!r}, not "
                    f"{get_preset(preset).name!r}. Use another --db folder for a different preset."
                )
            self.preset = stored_preset
        else:
            self.preset = get_preset(preset or "p1")
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute("INSERT OR REPLACE INTO info VALUES ('preset', ?)", (json.dumps(self.preset.to_dict()),))
            self.db.execute("INSERT OR REPLACE INTO info VALUES ('format_version', ?)", (str(FORMAT_VERSION),))
            self.db.execute("COMMIT")
        self._cleanup_orphans()
        self.refresh()

    # -- reading -------------------------------------------------------------------------------------------
    def refresh(self) -> None:
        """(Re)open the segment list and the set of removed tracks from the committed state."""
        rows = self.db.execute("SELECT name, time_bits FROM segments ORDER BY created_at").fetchall()
        self._segments = [_Segment(self.seg_root / n, int(b)) for n, b in rows]
        removed = self.db.execute("SELECT id FROM tracks WHERE removed = 1").fetchall()
        self._removed = np.array(sorted(r[0] for r in removed), dtype=np.int64)
        self._meta_cache: dict[int, TrackMeta] = {}

    @property
    def n_postings(self) -> int:
        """Postings in all live segments (including those of removed tracks not yet compacted away)."""
        return sum(seg.n_postings for seg in self._segments)

    def lookup(
        self, hashes: np.ndarray, max_postings: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All postings of ``hashes``: (query_row, track_id, track_time in frames), int64 arrays.

        ``max_postings`` skips hashes that occur more often than that in one segment (stop words).
        """
        q = np.asarray(hashes, dtype=np.uint32)
        parts = [seg.lookup(q, max_postings) for seg in self._segments]
        if not parts:
            empty = np.zeros(0, np.int64)
            return empty, empty, empty
        rows, tids, times = (np.concatenate(p) for p in zip(*parts, strict=True))
        if self._removed.size:
            live = ~np.isin(tids, self._removed)
            rows, tids, times = rows[live], tids[live], times[live]
        return rows, tids, times

    def _row_to_meta(self, row) -> TrackMeta:
        tid, title, path, dur, chash, nh, extra = row
        return TrackMeta(title, path, float(dur), chash, int(nh), json.loads(extra), int(tid))

    def tracks(self) -> list[TrackMeta]:
        rows = self.db.execute(
            "SELECT id, title, path, duration_s, content_hash, n_hashes, extra FROM tracks "
            "WHERE removed = 0 ORDER BY id"
        ).fetchall()
        return [self._row_to_meta(r) for r in rows]

    def track(self, track_id: int) -> TrackMeta:
        tid = int(track_id)
        if tid not in self._meta_cache:
            row = self.db.execute(
                "SELECT id, title, path, duration_s, content_hash, n_hashes, extra FROM tracks WHERE id = ?",
                (tid,),
            ).fetchone()
            if row is None:
                raise KeyError(tid)
            self._meta_cache[tid] = self._row_to_meta(row)
        return self._meta_cache[tid]

    def has_content(self, content_hash: str) -> bool:
        row = self.db.execute(
            "SELECT 1 FROM tracks WHERE content_hash = ? AND removed = 0 LIMIT 1", (content_hash,)
        ).fetchone()
        return row is not None

    def stats(self) -> dict:
        n, hours, postings = self.db.execute(
            "SELECT COUNT(*), COALESCE(SUM(duration_s), 0) / 3600.0, COALESCE(SUM(n_hashes), 0) "
            "FROM tracks WHERE removed = 0"
        ).fetchone()
        size = sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())
        return {
            "path": str(self.path),
            "preset": self.preset.name,
            "tracks": int(n),
            "hours": round(float(hours), 3),
            "postings": int(postings),
            "segments": len(self._segments),
            "bytes": int(size),
        }

    # -- writing -------------------------------------------------------------------------------------------
    def add_track(self, meta: TrackMeta, hashes: np.ndarray, times: np.ndarray) -> int:
        """Store one track durably (its own segment, committed with its metadata row); return its id."""
        hashes = np.asarray(hashes, dtype=np.uint32)
        times = np.asarray(times, dtype=np.int64)
        self.db.execute("BEGIN IMMEDIATE")
        try:
            cur = self.db.execute(
                "INSERT INTO tracks (title, path, duration_s, content_hash, n_hashes, extra, added_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (meta.title, meta.path, float(meta.duration_s), meta.content_hash, int(hashes.size),
                 json.dumps(meta.extra), time.time()),
            )
            tid = int(cur.lastrowid)
            name, tbits = _write_segment(self.seg_root, hashes, np.full(hashes.size, tid), times)
            self.db.execute(
                "INSERT INTO segments VALUES (?, ?, ?, ?)", (name, int(hashes.size), tbits, time.time())
            )
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self._segments.append(_Segment(self.seg_root / name, tbits))
        meta.track_id, meta.n_hashes = tid, int(hashes.size)
        return tid

    def remove(self, track_ids: Sequence[int]) -> int:
        """Mark tracks removed (their postings vanish from lookups at once, from disk at the next compaction)."""
        ids = [int(t) for t in track_ids]
        self.db.execute("BEGIN IMMEDIATE")
        cur = self.db.executemany("UPDATE tracks SET removed = 1 WHERE id = ? AND removed = 0", [(i,) for i in ids])
        n = cur.rowcount
        self.db.execute("COMMIT")
        self.refresh()
        return max(0, n)

    def compact(self, fan_in: int = 4, force: bool = False) -> int:
        """Merge small segments so lookups touch few files; drop postings of removed tracks.

        Log-structured tiers: segments are grouped by size class (powers of ``fan_in``); when a class holds
        ``fan_in`` segments they are merged into one of the next class, so each posting is rewritten only
        O(log n) times. ``force`` merges everything into one segment. Returns the number of segments merged.
        """
        merged = 0
        while True:
            rows = self.db.execute("SELECT name, n_postings, time_bits FROM segments ORDER BY n_postings").fetchall()
            if force:
                victims = rows if (len(rows) > 1 or (rows and self._removed.size)) else []
            else:
                tiers: dict[int, list] = {}
                for r in rows:
                    tiers.setdefault(int(np.log(max(r[1], 1)) / np.log(fan_in)), []).append(r)
                victims = next((v for _, v in sorted(tiers.items()) if len(v) >= fan_in), [])
            if not victims:
                return merged
            self._merge(victims)
            merged += len(victims)
            if force:
                return merged

    def _merge(self, victims: list) -> None:
        segs = [_Segment(self.seg_root / n, int(b)) for n, _, b in victims]
        parts = [s.postings() for s in segs]
        h, t, tm = (np.concatenate(p) for p in zip(*parts, strict=True))
        if self._removed.size:
            live = ~np.isin(t, self._removed)
            h, t, tm = h[live], t[live], tm[live]
        name, tbits = _write_segment(self.seg_root, h, t, tm)
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.executemany("DELETE FROM segments WHERE name = ?", [(n,) for n, _, _ in victims])
            self.db.execute("INSERT INTO segments VALUES (?, ?, ?, ?)", (name, int(h.size), tbits, time.time()))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            shutil.rmtree(self.seg_root / name, ignore_errors=True)
            raise
        del segs, parts
        self._segments = []
        for n, _, _ in victims:
            shutil.rmtree(self.seg_root / n, ignore_errors=True)
        self.refresh()

    def _cleanup_orphans(self) -> None:
        """Delete segment directories that no committed row refers to (left by a kill mid-write)."""
        live = {r[0] for r in self.db.execute("SELECT name FROM segments").fetchall()}
        for d in self.seg_root.iterdir():
            if d.name not in live:
                shutil.rmtree(d, ignore_errors=True)

    def close(self) -> None:
        self._segments = []
        self.db.close()

    def __enter__(self) -> LocalStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_index(path: str | os.PathLike, preset: Preset | str | None = None, create: bool = False) -> LocalStore:
    """Open the index at ``path`` (create it with ``create=True``; ``preset`` is fixed at creation)."""
    return LocalStore(path, preset=preset, create=create)
