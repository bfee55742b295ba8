"""The embedded default index: a directory with SQLite metadata and memory-mapped, compressed posting segments.

Layout of an index directory::

    meta.sqlite              tracks (id, title, path, duration, content hash, ...), segment list, preset
    segments/<name>/         one immutable segment, written once, then only ever deleted whole:
        kdir.npy, klow.npy   the sorted unique hashes as a two-level directory (about 1 byte a hash)
        bitpos.npy           where each hash's posting list starts in the bit stream
        width.npy            bits per gap in each list (uint8)
        words.npy            the bit stream (uint64): see :mod:`bgmid.index.postings`
        base.npy             int64 cumulative frames of the segment's tracks: posting value = base[track] + frame
        tids.npy             int64 local track number -> global track id
        stops.npy            uint32 stop-word hashes whose postings were dropped (see STOP_FACTOR)

Why this shape:

* **Compact.** A posting costs the bits of its gap to the previous posting of the same hash (~19 bits on
  the corpus, 22 at most for 15 hours of ``p1``), a hash about 6 bytes (directory byte, list start, width),
  and stop words are not stored at all: queries skip them anyway. There is no global cap on tracks or track
  length (unlike audfprint's bit-packed table): the value width grows with the segment.
* **Fast, vectorised lookup.** A binary search of all query hashes at once in each segment's directory, then
  one vectorised decode of the posting lists; memory-mapped, so opening an index reads almost nothing.
* **Crash safe.** Every track is written as a new segment directory under a temporary name, renamed into
  place and only then recorded in SQLite, inside the transaction that also records the track. A kill at any
  point leaves either the committed state or an orphan directory that the next open deletes, so an
  interrupted ``bgmid index`` loses at most the track in progress and a re-run resumes (already indexed files
  are recognised by content hash). Small segments are merged (:meth:`LocalStore.compact`) the same way.

Stop words: when segments are merged, hashes with more postings than the index's stop-word limit
(:func:`bgmid.index.base.stop_word_limit`, from the index size at that moment) lose their postings and are
listed in ``stops.npy``; later writes drop them too, and a hash once a stop word stays one (its postings are
gone). New stop words are only declared once the index holds enough hashes for the relative rule to be above
its floor (~45 tracks of ``p1``), so what is dropped depends on the music, hardly on the order it was indexed
in (the limit and every hash's count grow together). Query-time skipping compares each hash's count summed over
all segments with the caller's ``max_postings``, so the answer does not depend on how the index happens to be
split into segments.
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
from bgmid.index.base import STOP_FLOOR, TrackMeta, stop_word_limit
from bgmid.index.postings import PostingLists, encode

#: On-disk format. 1: uncompressed CSR postings (bgmid < 0.2); 2: compressed lists and stop words.
FORMAT_VERSION = 2

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
    value_bits INTEGER NOT NULL,
    created_at REAL NOT NULL
);
"""


#: Tiered compaction does not build segments larger than this many postings (~24 hours of p1 music; a merge
#: of that size peaks at ~1 GB): memory stays bounded however large the library grows.
MAX_MERGE_POSTINGS = 2**23

#: Frames per block of the value -> track look-up table (256 frames of p1 = 6 s; more in huge segments).
_LUT_SHIFT = 8

_SEGMENT_ARRAYS = ("kdir", "klow", "bitpos", "width", "words", "base", "tids", "stops")


class _Segment:
    """One immutable, memory-mapped posting segment."""

    def __init__(self, path: Path, value_bits: int, n_postings: int):
        self.path = path
        # Only the bit stream is memory-mapped (one open file per segment: an unmerged index of thousands of
        # tracks must not run out of file descriptors); the directory arrays (~6 bytes a hash) are read whole.
        # A plain ndarray view of the map: indexing a np.memmap subclass costs more than the lookup itself.
        a = {n: np.load(path / f"{n}.npy", mmap_mode="r" if n == "words" else None) for n in _SEGMENT_ARRAYS}
        a["words"] = np.asarray(a["words"])
        self.lists = PostingLists(a["kdir"], a["klow"], a["bitpos"], a["width"], a["words"], value_bits)
        self.base = np.array(a["base"])
        self.tids = np.array(a["tids"])
        self.stops = np.array(a["stops"])
        self.n_postings = n_postings  #: stored postings, as recorded in SQLite when the segment was written
        # value >> _LUT_SHIFT -> the track holding the start of that block of frames (a first guess that
        # split() corrects by stepping over the few track starts inside the block)
        end = int(self.base[-1])
        self._shift = max(_LUT_SHIFT, int(end).bit_length() - 20)  # at most ~2^20 entries, whatever the size
        blocks = np.arange(0, end + 1, 1 << self._shift)
        self._lut = (np.searchsorted(self.base, blocks, side="right") - 1).astype(np.int32)

    def split(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posting values -> (global track id, frame)."""
        local = self._lut[values >> self._shift].astype(np.int64)
        while True:  # tracks shorter than a block are rare: one or two passes (values < base[-1], always)
            step = values >= self.base[local + 1]
            if not step.any():
                break
            local += step
        return self.tids[local], values - self.base[local]

    def postings(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All stored postings as (hash, track_id, time); used when merging segments."""
        k = np.arange(self.lists.n_keys, dtype=np.int64)
        counts = self.lists.counts(k)
        h = np.repeat(self.lists.keys, counts)
        tid, t = self.split(self.lists.decode(k, counts))
        return h, tid, t


def _write_segment(
    root: Path, hashes: np.ndarray, track_ids: np.ndarray, times: np.ndarray,
    drop: np.ndarray | None = None, stops: np.ndarray | None = None,
) -> tuple[str, int, int]:
    """Write postings as a new segment directory atomically; return (name, value_bits, stored postings).

    Postings whose hash is in ``drop`` (the index's stop words) are not stored; ``stops`` (the stop words
    this segment introduces or inherits from the segments it replaces) is recorded with the segment.
    """
    hashes = np.asarray(hashes, dtype=np.uint32)
    times = np.asarray(times, dtype=np.int64)
    track_ids = np.asarray(track_ids, dtype=np.int64)
    stops = np.unique(np.asarray([] if stops is None else stops, dtype=np.uint32))
    drop = np.asarray([] if drop is None else drop, dtype=np.uint32)
    if times.size and times.min() < 0:
        raise ValueError("posting times must be >= 0 frames")
    if drop.size:
        keep = ~np.isin(hashes, drop)
        hashes, times, track_ids = hashes[keep], times[keep], track_ids[keep]
    tids, local = np.unique(track_ids, return_inverse=True)
    length = np.zeros(tids.size, np.int64)
    np.maximum.at(length, local, times + 1)
    base = np.concatenate([[0], np.cumsum(length)]).astype(np.int64)
    lists = encode(hashes, base[local] + times)
    name = f"seg-{time.time_ns():x}-{uuid.uuid4().hex[:8]}"
    tmp = root / f"tmp-{name}"
    tmp.mkdir(parents=True)
    arrays = {"kdir": lists.kdir, "klow": lists.klow, "bitpos": lists.bitpos, "width": lists.width,
              "words": lists.words, "base": base, "tids": tids, "stops": stops}
    for fname in _SEGMENT_ARRAYS:
        with open(tmp / f"{fname}.npy", "wb") as fh:
            np.save(fh, arrays[fname])
            fh.flush()
            os.fsync(fh.fileno())
    os.replace(tmp, root / name)
    _fsync_dir(root)  # the rename itself must survive a power cut before the row that names it is committed
    return name, lists.value_bits, int(lists.counts(np.arange(lists.n_keys)).sum())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # platforms without directory handles (Windows): the rename is as durable as it gets
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _over_limit(hashes: np.ndarray, limit: int) -> np.ndarray:
    """Hashes occurring more than ``limit`` times."""
    u, c = np.unique(np.asarray(hashes, dtype=np.uint32), return_counts=True)
    return u[c > limit]


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
            version = int(stored.get("format_version", "1"))
            if version != FORMAT_VERSION:
                self.db.close()
                raise BgmidError(
                    f"{self.path}: index format {version} was written by another bgmid version (this one reads "
                    f"format {FORMAT_VERSION}). Rebuild it: 'bgmid index --db NEW_FOLDER MUSIC...' (the music "
                    f"files are listed by 'bgmid stats'), or delete the folder and index again."
                )
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
        """(Re)open the segment list, the removed tracks and the stop words from the committed state."""
        rows = self.db.execute("SELECT name, value_bits, n_postings FROM segments ORDER BY created_at").fetchall()
        self._segments = [_Segment(self.seg_root / n, int(b), int(c)) for n, b, c in rows]
        removed = self.db.execute("SELECT id FROM tracks WHERE removed = 1").fetchall()
        self._removed = np.array(sorted(r[0] for r in removed), dtype=np.int64)
        stops = [seg.stops for seg in self._segments]
        self._stops = np.unique(np.concatenate(stops)) if stops else np.zeros(0, np.uint32)
        self._n_hashes = int(
            self.db.execute("SELECT COALESCE(SUM(n_hashes), 0) FROM tracks WHERE removed = 0").fetchone()[0]
        )
        self._meta_cache: dict[int, TrackMeta] = {}

    @property
    def n_postings(self) -> int:
        """Postings stored in all live segments (including those of removed tracks not yet compacted away)."""
        return sum(seg.n_postings for seg in self._segments)

    @property
    def n_hashes(self) -> int:
        """Hashes extracted from the live tracks, stored or dropped as stop words."""
        return self._n_hashes

    @property
    def stop_words(self) -> np.ndarray:
        """Hashes whose postings are not stored (sorted uint32)."""
        return self._stops

    def lookup(
        self, hashes: np.ndarray, max_postings: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All postings of ``hashes``: (query_row, track_id, track_time in frames), int64 arrays.

        Skips stop words and hashes with more than ``max_postings`` postings summed over all segments.
        """
        q = np.asarray(hashes, dtype=np.uint32)
        empty = np.zeros(0, np.int64)
        if not self._segments or q.size == 0:
            return empty, empty, empty
        found = [seg.lists.find(q) for seg in self._segments]
        total = np.sum([c for _, c in found], axis=0)
        ok = total > 0
        if max_postings is not None:
            ok &= total <= max_postings
        if self._stops.size:
            ok &= ~np.isin(q, self._stops)
        parts = []
        for seg, (k, c) in zip(self._segments, found, strict=True):
            rows = np.nonzero(ok & (k >= 0))[0]
            if rows.size == 0:
                continue
            values = seg.lists.decode(k[rows], c[rows])
            tid, t = seg.split(values)
            parts.append((np.repeat(rows, c[rows]), tid, t))
        if not parts:
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
        n, hours, hashes = self.db.execute(
            "SELECT COUNT(*), COALESCE(SUM(duration_s), 0) / 3600.0, COALESCE(SUM(n_hashes), 0) "
            "FROM tracks WHERE removed = 0"
        ).fetchone()
        size = sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())
        return {
            "path": str(self.path),
            "preset": self.preset.name,
            "tracks": int(n),
            "hours": round(float(hours), 3),
            "postings": int(hashes),
            "stored_postings": self.n_postings,
            "stop_words": int(self._stops.size),
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
            name, vbits, stored = _write_segment(self.seg_root, hashes, np.full(hashes.size, tid), times,
                                                 drop=self._stops)
            self.db.execute("INSERT INTO segments VALUES (?, ?, ?, ?)", (name, stored, vbits, time.time()))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        seg = _Segment(self.seg_root / name, vbits, stored)
        self._segments.append(seg)
        self._stops = np.union1d(self._stops, seg.stops)
        self._n_hashes += int(hashes.size)
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

    def compact(self, fan_in: int = 4, force: bool = False, max_postings: int = MAX_MERGE_POSTINGS) -> int:
        """Merge small segments so lookups touch few files; drop postings of removed tracks.

        Log-structured tiers: segments are grouped by size class (powers of ``fan_in``); when a class holds
        ``fan_in`` segments they are merged into one of the next class, so each posting is rewritten only
        O(log n) times. A merge decodes its segments in memory, so tiers stop at ``max_postings`` postings:
        indexing a library of any size needs bounded memory, and a big library ends as a few big segments
        (a lookup costs one binary search more per segment). ``force`` merges everything into one segment
        whatever its size (memory grows with the index). Returns the number of segments merged.
        """
        merged = 0
        while True:
            rows = self.db.execute("SELECT name, n_postings, value_bits FROM segments ORDER BY n_postings").fetchall()
            if force:
                holds_removed = any(np.isin(seg.tids, self._removed).any() for seg in self._segments)
                victims = rows if (len(rows) > 1 or (rows and holds_removed)) else []
            else:
                tiers: dict[int, list] = {}
                for r in rows:
                    tiers.setdefault(int(np.log(max(r[1], 1)) / np.log(fan_in)), []).append(r)
                victims = next((v[:fan_in] for _, v in sorted(tiers.items())
                                if len(v) >= fan_in and sum(r[1] for r in v[:fan_in]) <= max_postings), [])
            if not victims:
                if merged:
                    self._checkpoint()
                return merged
            self._merge(victims)
            merged += len(victims)
            if force:
                self._checkpoint()
                return merged

    def _merge(self, victims: list) -> None:
        segs = [_Segment(self.seg_root / n, int(b), int(c)) for n, c, b in victims]
        parts = [s.postings() for s in segs]
        h, t, tm = (np.concatenate(p) for p in zip(*parts, strict=True))
        if self._removed.size:
            live = ~np.isin(t, self._removed)
            h, t, tm = h[live], t[live], tm[live]
        limit = stop_word_limit(self._n_hashes, self.preset)
        # new stop words only once the index is big enough for the relative rule (not the floor) to decide:
        # while it is small, the floor would condemn hashes that a grown index keeps
        new_stops = _over_limit(h, limit) if limit > STOP_FLOOR else np.zeros(0, np.uint32)
        inherited = np.concatenate([s.stops for s in segs])
        # the new segment is written while holding the write lock, so no other process's orphan cleanup can
        # take it for debris, and the victims are checked to be still there (another process may have merged
        # them meanwhile: then this merge is dropped rather than duplicating their postings)
        self.db.execute("BEGIN IMMEDIATE")
        name = None
        try:
            names = [n for n, _, _ in victims]
            still = self.db.execute(
                f"SELECT COUNT(*) FROM segments WHERE name IN ({','.join('?' * len(names))})", names
            ).fetchone()[0]
            if still != len(names):
                self.db.execute("ROLLBACK")
                self.refresh()
                return
            name, vbits, stored = _write_segment(self.seg_root, h, t, tm, drop=np.union1d(self._stops, new_stops),
                                                 stops=np.union1d(inherited, new_stops))
            self.db.executemany("DELETE FROM segments WHERE name = ?", [(n,) for n in names])
            self.db.execute("INSERT INTO segments VALUES (?, ?, ?, ?)", (name, stored, vbits, time.time()))
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            if name is not None:
                shutil.rmtree(self.seg_root / name, ignore_errors=True)
            raise
        del segs, parts
        self._segments = []
        for n, _, _ in victims:
            shutil.rmtree(self.seg_root / n, ignore_errors=True)
        self.refresh()

    def _cleanup_orphans(self) -> None:
        """Delete segment directories that no committed row refers to (left by a kill mid-write).

        Segments are only ever written under SQLite's write lock (see :meth:`add_track`, :meth:`_merge`), so
        taking that lock guarantees no other process is half-way through one; if another process holds it,
        the cleanup is skipped rather than waited for (a reader must not stall behind an indexer).
        """
        self.db.execute("PRAGMA busy_timeout = 0")
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:
            return  # someone is writing: its files are not debris, and it will clean up itself
        finally:
            self.db.execute("PRAGMA busy_timeout = 60000")
        try:
            live = {r[0] for r in self.db.execute("SELECT name FROM segments").fetchall()}
            for d in self.seg_root.iterdir():
                if d.name not in live:
                    shutil.rmtree(d, ignore_errors=True)
        finally:
            self.db.execute("COMMIT")

    def _checkpoint(self) -> None:
        """Fold SQLite's write-ahead log back into meta.sqlite (it grows to ~4 MB while indexing); skipped at
        once, not waited for, when another process is using the index."""
        try:
            self.db.execute("PRAGMA busy_timeout = 0")
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error:
            pass  # another process reads the index: a later checkpoint will do it
        finally:
            self.db.execute("PRAGMA busy_timeout = 60000")

    def close(self) -> None:
        self._segments = []
        self._checkpoint()
        self.db.close()

    def __enter__(self) -> LocalStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_index(path: str | os.PathLike, preset: Preset | str | None = None, create: bool = False) -> LocalStore:
    """Open the index at ``path`` (create it with ``create=True``; ``preset`` is fixed at creation)."""
    return LocalStore(path, preset=preset, create=create)
