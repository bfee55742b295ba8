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
        manifest.json        checksums of the files above, the records of the tracks held, the commit
                             generation, the preset (see :mod:`bgmid.index.segment`)
    write.lock               the writer lock (:mod:`bgmid.index.lock`): one writer at a time
    removed.json             ids of removed tracks (so metadata rebuilt from segments keeps them removed)
    quarantine/<time>/       what ``bgmid check --repair`` set aside (damaged segments, old metadata)

Why this shape:

* **Compact.** A posting costs the bits of its gap to the previous posting of the same hash (~19 bits on
  the corpus, 22 at most for 15 hours of ``p1``), a hash about 6 bytes (directory byte, list start, width),
  and stop words are not stored at all: queries skip them anyway. There is no global cap on tracks or track
  length (unlike audfprint's bit-packed table): the value width grows with the segment.
* **Fast, vectorised lookup.** A binary search of all query hashes at once in each segment's directory, then
  one vectorised decode of the posting lists; memory-mapped, so opening an index reads almost nothing.
* **Crash safe.** Every track is written as a new segment directory under a temporary name, renamed into
  place and only then recorded in SQLite, inside the transaction that also records the track. A kill at any
  point leaves either the committed state or debris that the next *writer* removes (readers never delete
  anything), so an interrupted ``bgmid index`` loses at most the track in progress and a re-run resumes
  (already indexed files are recognised by content hash, checked again under the writer lock). Small
  segments are merged (:meth:`LocalStore.compact`) the same way.
* **Never trusted blindly.** Segments are checksummed and self-describing; opening one verifies it, and a
  segment folder that holds tracks the metadata does not know proves the metadata stale: nothing is deleted,
  and every command says to run ``bgmid check --repair`` (:mod:`bgmid.index.check`), which rebuilds the
  metadata from the segments. Segment names in the metadata must match the one pattern the index writes.

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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from bgmid.errors import BgmidError
from bgmid.fingerprint.presets import Preset, get_preset
from bgmid.index.base import STOP_FLOOR, TrackMeta, stop_word_limit
from bgmid.index.lock import WriterLock, writer_active
from bgmid.index.postings import sorted_union
from bgmid.index.segment import (
    IndexDamaged,
    Segment,
    digest_bytes,
    read_manifest,
    segment_dir,
    track_record,
    valid_name,
    write_durably,
    write_segment,
)
from bgmid.paths import from_stored, shown, to_stored

#: On-disk format. 1: uncompressed CSR postings (bgmid < 0.2); 2: compressed lists and stop words;
#: 3: checksummed, self-describing segments (manifests), row checksums, commit generations, writer lock.
FORMAT_VERSION = 3

_SCHEMA = """
CREATE TABLE IF NOT EXISTS info (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tracks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    title TEXT NOT NULL,
    path BLOB NOT NULL,
    duration_s REAL NOT NULL,
    content_hash TEXT NOT NULL,
    n_hashes INTEGER NOT NULL,
    extra TEXT NOT NULL DEFAULT '{}',
    removed INTEGER NOT NULL DEFAULT 0,
    added_at REAL NOT NULL,
    row_sum TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS tracks_content ON tracks (content_hash);
CREATE TABLE IF NOT EXISTS segments (
    name TEXT PRIMARY KEY,
    n_postings INTEGER NOT NULL,
    value_bits INTEGER NOT NULL,
    created_at REAL NOT NULL,
    checksum TEXT,
    generation INTEGER NOT NULL DEFAULT 0
);
"""

_TRACK_COLS = "id, title, path, duration_s, content_hash, n_hashes, extra, removed, row_sum"

#: Tiered compaction does not build segments larger than this many postings (~24 hours of p1 music; a merge
#: of that size peaks at ~1 GB): memory stays bounded however large the library grows.
MAX_MERGE_POSTINGS = 2**23

#: Where removals are also recorded, so metadata rebuilt from the segments does not bring removed tracks back.
REMOVED_FILE = "removed.json"


def row_checksum(tid: int, title: str, path: str, duration_s: float, content_hash: str, n_hashes: int,
                 extra: str, removed: int) -> str:
    """Digest of one track row's fields (what ``bgmid check`` and every metadata read verify)."""
    fields = [int(tid), title, to_stored(path).hex(), round(float(duration_s), 6), content_hash, int(n_hashes),
              extra, int(removed)]
    return digest_bytes(json.dumps(fields).encode())


def _over_limit(hashes: np.ndarray, limit: int) -> np.ndarray:
    """Hashes occurring more than ``limit`` times."""
    u, c = np.unique(np.asarray(hashes, dtype=np.uint32), return_counts=True)
    return u[c > limit]


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write_durably(tmp, data)
    os.replace(tmp, path)


def segment_names(seg_root: Path) -> list[str]:
    """Names of the segment folders on disk that have the one name pattern the index writes."""
    try:
        return sorted(d.name for d in seg_root.iterdir() if valid_name(d.name))
    except FileNotFoundError:
        return []


def delete_segment(seg_root: Path, name: str) -> None:
    """Delete segment folder ``name`` so that a kill at any moment leaves either the whole folder (debris the
    next writer recognises by its manifest) or a ``tmp-`` folder (an incomplete write, ignored by readers and
    removed by the next writer), never a segment folder without its manifest: renamed first (atomic), then
    removed."""
    src, dst = seg_root / name, seg_root / f"tmp-{name}"
    try:
        os.replace(src, dst)
    except FileNotFoundError:
        return
    shutil.rmtree(dst, ignore_errors=True)


class LocalStore:
    """The embedded index (see module docstring). Use :func:`open_index` to get one.

    Opened for reading (the default) it changes nothing on disk: SQLite is opened read-only and nothing is
    cleaned up. Opened for writing (``write=True``, implied by ``create=True``) it first takes the folder's
    writer lock (:class:`~bgmid.index.lock.WriterLock`); only a writer removes debris of interrupted writes,
    and only after the metadata has been verified.
    """

    def __init__(self, path: str | os.PathLike, preset: Preset | str | None = None, create: bool = False,
                 write: bool | None = None, wait: bool = True, on_wait: Callable[[str], None] | None = None,
                 lock: WriterLock | None = None):
        self.path = Path(path)
        self.meta_path = self.path / "meta.sqlite"
        self.seg_root = self.path / "segments"
        self.writable = bool(create or write or lock is not None)
        self._segments: list[Segment] = []
        self.snapshot = 0  #: changes whenever the state read changes (refresh(), add_track())
        self.db: sqlite3.Connection | None = None
        self._own_lock = lock is None
        self._lock: WriterLock | None = None
        if self.writable and not self.meta_path.exists() and not create:
            raise BgmidError(f"{shown(self.path)}: no bgmid index here. Create one with "
                             f"'bgmid index --db {shown(self.path)} MUSIC...'.")
        if self.writable:
            self._lock = lock or WriterLock(self.path, wait=wait, on_wait=on_wait)
        try:
            self._open(preset, create)
        except sqlite3.DatabaseError as exc:
            self._close_quietly()
            raise IndexDamaged(self.path, self.meta_path, f"SQLite: {exc}") from None
        except BaseException:
            self._close_quietly()
            raise

    # -- opening -------------------------------------------------------------------------------------------
    def _open(self, preset: Preset | str | None, create: bool) -> None:
        exists = self.meta_path.exists() and self.meta_path.stat().st_size > 0
        on_disk = segment_names(self.seg_root)
        if not exists:
            if on_disk:
                raise IndexDamaged(self.path, self.meta_path, f"missing or empty while {len(on_disk)} segment "
                                   "folders hold postings")
            if not create:
                raise BgmidError(f"{shown(self.path)}: no bgmid index here. Create one with "
                                 f"'bgmid index --db {shown(self.path)} MUSIC...'.")
            self.path.mkdir(parents=True, exist_ok=True)
        if self.writable:
            self.seg_root.mkdir(exist_ok=True)
            self.db = sqlite3.connect(str(self.meta_path), timeout=60.0, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
        else:
            uri = "file:" + self.meta_path.resolve().as_posix().replace("?", "%3f").replace("#", "%23") + "?mode=ro"
            self.db = sqlite3.connect(uri, uri=True, timeout=60.0, isolation_level=None)
        self.db.text_factory = lambda b: b.decode("utf-8", errors="surrogateescape")
        tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        stored = dict(self.db.execute("SELECT key, value FROM info").fetchall()) if "info" in tables else {}
        if "preset" not in stored:
            if exists or tables:
                raise IndexDamaged(self.path, self.meta_path, "holds no index information (preset, format)")
            self._initialise(preset)
        else:
            self._check_preset_and_version(stored, preset)
        self.refresh()
        if self.writable:
            self._cleanup_orphans()
        else:
            self._check_orphans()

    def _initialise(self, preset: Preset | str | None) -> None:
        self.preset = get_preset(preset or "p1")
        self.db.executescript(_SCHEMA)
        self.db.execute("BEGIN IMMEDIATE")
        for k, v in (("preset", json.dumps(self.preset.to_dict())), ("format_version", str(FORMAT_VERSION)),
                     ("generation", "0")):
            self.db.execute("INSERT OR REPLACE INTO info VALUES (?, ?)", (k, v))
        self.db.execute("COMMIT")

    def _check_preset_and_version(self, stored: dict, preset: Preset | str | None) -> None:
        try:
            stored_preset = Preset(**json.loads(stored["preset"]))
        except (ValueError, TypeError) as exc:
            raise IndexDamaged(self.path, self.meta_path, f"unreadable preset: {exc}") from None
        if preset is not None and get_preset(preset) != stored_preset:
            raise BgmidError(
                f"{shown(self.path)}: index was built with preset {stored_preset.name!r}, not "
                f"{get_preset(preset).name!r}. Use another --db folder for a different preset."
            )
        self.preset = stored_preset
        version = int(stored.get("format_version", "1"))
        if version == 2:
            if not self.writable:
                raise BgmidError(
                    f"{shown(self.path)}: index format 2 predates checksums. Upgrade it once in place (nothing is "
                    f"re-fingerprinted): 'bgmid check --db {shown(self.path)} --repair'."
                )
            from bgmid.index.check import upgrade_format2

            upgrade_format2(self)
        elif version != FORMAT_VERSION:
            raise BgmidError(
                f"{shown(self.path)}: index format {version} was written by another bgmid version (this one "
                f"reads format {FORMAT_VERSION}). Rebuild it: 'bgmid index --db NEW_FOLDER MUSIC...' (the music "
                f"files are listed by 'bgmid stats'), or delete the folder and index again."
            )

    # -- reading -------------------------------------------------------------------------------------------
    @property
    def generation(self) -> int:
        """Commits made to this index so far (segments record the generation they were committed in)."""
        row = self.db.execute("SELECT value FROM info WHERE key = 'generation'").fetchone()
        return int(row[0]) if row else 0

    def refresh(self) -> None:
        """(Re)open the segment list, the removed tracks and the stop words from the committed state.

        A reader racing a writer's merge may find a segment of its snapshot already deleted: it re-reads the
        snapshot (a few times) before calling that damage.
        """
        for attempt in range(5):
            self.db.execute("BEGIN")
            try:
                rows = self.db.execute(
                    "SELECT name, value_bits, n_postings, checksum FROM segments ORDER BY created_at").fetchall()
                removed = self.db.execute("SELECT id FROM tracks WHERE removed = 1").fetchall()
                n_hashes = self.db.execute(
                    "SELECT COALESCE(SUM(n_hashes), 0) FROM tracks WHERE removed = 0").fetchone()[0]
            finally:
                self.db.execute("COMMIT")
            try:
                self._segments = [Segment(self.path, segment_dir(self.path, self.seg_root, n), int(b), int(c), cs)
                                  for n, b, c, cs in rows]
                break
            except IndexDamaged as exc:
                if attempt == 4 or "missing" not in exc.reason or not writer_active(self.path):
                    raise
                time.sleep(0.05 * (attempt + 1))
        self._removed = np.array(sorted(r[0] for r in removed), dtype=np.int64)
        stops = [seg.stops for seg in self._segments]
        self._stops = np.unique(np.concatenate(stops)) if stops else np.zeros(0, np.uint32)
        self._n_hashes = int(n_hashes)
        self._meta_cache: dict[int, TrackMeta] = {}
        self.snapshot += 1

    @property
    def n_postings(self) -> int:
        """Postings stored in all live segments (including those of removed tracks not yet compacted away)."""
        return sum(seg.n_postings for seg in self._segments)

    @property
    def n_hashes(self) -> int:
        """Hashes extracted from the live tracks, stored or dropped as stop words."""
        return self._n_hashes

    def keys(self) -> np.ndarray:
        """Every hash with postings stored in a live segment (sorted uint32): the whole key space of the index,
        for readers that load all rare postings at once (:class:`bgmid.alterations.RareTable`)."""
        return sorted_union([seg.lists.keys for seg in self._segments])

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
        found, total = self.find(q)
        ok = total > 0
        if max_postings is not None:
            ok &= total <= max_postings
        if self._stops.size:
            ok &= ~np.isin(q, self._stops)
        return self.postings_of(found, ok)

    def find(self, q: np.ndarray) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray]:
        """Where each query hash's list is in each segment (``(key, count)`` per segment) and its postings in
        all segments together: the first half of :meth:`lookup`, which a sharded index
        (:class:`bgmid.index.shard.ShardedStore`) sums over its shards before it applies the stop-word rule."""
        q = np.asarray(q, dtype=np.uint32)
        found = [seg.lists.find(q) for seg in self._segments]
        total = np.sum([c for _, c in found], axis=0) if found else np.zeros(q.size, np.int64)
        return found, np.asarray(total, np.int64)

    def postings_of(self, found: list[tuple[np.ndarray, np.ndarray]], ok: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The postings of the query hashes where ``ok`` (from :meth:`find`), removed tracks left out."""
        empty = np.zeros(0, np.int64)
        parts = []
        for seg, (k, c) in zip(self._segments, found, strict=True):
            rows = np.nonzero(ok & (k >= 0))[0]
            if rows.size == 0:
                continue
            try:
                values = seg.lists.decode(k[rows], c[rows])
                if values.size and (values.min() < 0 or values.max() >= seg.base[-1]):
                    raise ValueError("posting outside the segment's time line")
                tid, t = seg.split(values)
            except (IndexError, ValueError) as exc:  # only a damaged bit stream gets here
                raise IndexDamaged(self.path, seg.path / "words.npy", str(exc), seg.tids.tolist()) from None
            parts.append((np.repeat(rows, c[rows]), tid, t))
        if not parts:
            return empty, empty, empty
        rows, tids, times = (np.concatenate(p) for p in zip(*parts, strict=True))
        if self._removed.size:
            live = ~np.isin(tids, self._removed)
            rows, tids, times = rows[live], tids[live], times[live]
        return rows, tids, times

    def _row_to_meta(self, row) -> TrackMeta:
        tid, title, path, dur, chash, nh, extra, removed, row_sum = row
        path = from_stored(path)
        if row_sum and row_sum != row_checksum(tid, title, path, dur, chash, nh, extra, removed):
            raise IndexDamaged(self.path, self.meta_path, f"the row of track {tid} fails its checksum", [tid])
        try:
            tags = json.loads(extra)
        except ValueError:
            raise IndexDamaged(self.path, self.meta_path, f"the tags of track {tid} are not JSON", [tid]) from None
        return TrackMeta(title, path, float(dur), chash, int(nh), tags, int(tid))

    def tracks(self) -> list[TrackMeta]:
        rows = self.db.execute(f"SELECT {_TRACK_COLS} FROM tracks WHERE removed = 0 ORDER BY id").fetchall()
        return [self._row_to_meta(r) for r in rows]

    def track(self, track_id: int) -> TrackMeta:
        tid = int(track_id)
        if tid not in self._meta_cache:
            row = self.db.execute(f"SELECT {_TRACK_COLS} FROM tracks WHERE id = ?", (tid,)).fetchone()
            if row is None:
                raise IndexDamaged(self.path, self.meta_path, f"postings of track {tid} but no track row", [tid])
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
            "path": shown(self.path),
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
    def _require_writer(self) -> None:
        if not self.writable:
            raise BgmidError(f"{shown(self.path)}: opened for reading; open it with write=True to change it.")

    def _commit_generation(self) -> int:
        """Inside a write transaction: the next generation, recorded (it commits with the transaction)."""
        g = self.generation + 1
        self.db.execute("INSERT OR REPLACE INTO info VALUES ('generation', ?)", (str(g),))
        return g

    def _track_records(self, ids: Sequence[int]) -> list[dict]:
        out = []
        for tid in ids:
            row = self.db.execute(f"SELECT {_TRACK_COLS} FROM tracks WHERE id = ?", (int(tid),)).fetchone()
            if row is None:
                raise IndexDamaged(self.path, self.meta_path, f"postings of track {tid} but no track row", [tid])
            out.append(track_record(self._row_to_meta(row)))
        return out

    def add_track(self, meta: TrackMeta, hashes: np.ndarray, times: np.ndarray, track_id: int | None = None) -> int:
        """Store one track durably (its own segment, committed with its metadata row); return its id.

        The "already indexed?" check is repeated inside the write transaction: a file whose bytes are
        already indexed is never stored twice (its existing id is returned). ``track_id``: the id to give it
        (a sharded index allocates ids over all its shards); default the next one.
        """
        self._require_writer()
        hashes = np.asarray(hashes, dtype=np.uint32)
        times = np.asarray(times, dtype=np.int64)
        extra = json.dumps(meta.extra)
        with self._write_transaction():
            dup = self.db.execute("SELECT id FROM tracks WHERE content_hash = ? AND removed = 0 LIMIT 1",
                                  (meta.content_hash,)).fetchone()
            if dup is not None:
                self.db.execute("ROLLBACK")
                meta.track_id = int(dup[0])
                return meta.track_id
            g = self._commit_generation()
            cur = self.db.execute(
                "INSERT INTO tracks (id, title, path, duration_s, content_hash, n_hashes, extra, added_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (track_id, meta.title, to_stored(meta.path), float(meta.duration_s), meta.content_hash,
                 int(hashes.size), extra, time.time()),
            )
            tid = int(cur.lastrowid)
            meta.track_id, meta.n_hashes = tid, int(hashes.size)
            self.db.execute("UPDATE tracks SET row_sum = ? WHERE id = ?", (row_checksum(
                tid, meta.title, meta.path, meta.duration_s, meta.content_hash, int(hashes.size), extra, 0), tid))
            w = write_segment(self.seg_root, hashes, np.full(hashes.size, tid), times, tracks=[track_record(meta)],
                              generation=g, preset=self.preset.to_dict(), drop=self._stops)
            self._insert_segment(w, g)
        seg = Segment(self.path, self.seg_root / w.name, w.value_bits, w.n_postings, w.checksum)
        self._segments.append(seg)
        self._stops = np.union1d(self._stops, seg.stops)
        self._n_hashes += int(hashes.size)
        self.snapshot += 1
        return tid

    @contextmanager
    def _write_transaction(self) -> Iterator[None]:
        """One write transaction (``BEGIN IMMEDIATE``: the metadata is locked for the whole body), committed when
        the body ends, rolled back when it raises. A body that rolled back itself (``add_track`` finding the
        file already indexed) leaves nothing to commit."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
            if self.db.in_transaction:
                self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise

    def _insert_segment(self, w, generation: int) -> None:
        self.db.execute("INSERT INTO segments (name, n_postings, value_bits, created_at, checksum, generation) "
                        "VALUES (?, ?, ?, ?, ?, ?)", (w.name, w.n_postings, w.value_bits, time.time(), w.checksum,
                                                      generation))

    @property
    def last_id(self) -> int:
        """The highest track id this index ever gave (removed tracks included; 0 when empty)."""
        row = self.db.execute("SELECT COALESCE(MAX(id), 0) FROM tracks").fetchone()
        seq = self.db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'tracks'").fetchone()
        return max(int(row[0]), int(seq[0]) if seq else 0)

    def import_tracks(self, metas: Sequence[TrackMeta], hashes: np.ndarray, track_ids: np.ndarray,
                      times: np.ndarray, stops: np.ndarray | None = None) -> None:
        """Copy whole tracks from another index (splitting one into shards, :mod:`bgmid.index.shard`): their
        ids, metadata and hash counts kept (the counts set the stop-word limit), their stored postings as one
        new segment recording ``stops`` (the source's stop words), all committed in one transaction."""
        self._require_writer()
        with self._write_transaction():
            g = self._commit_generation()
            for m in metas:
                extra = json.dumps(m.extra)
                self.db.execute(
                    "INSERT INTO tracks (id, title, path, duration_s, content_hash, n_hashes, extra, added_at, "
                    "row_sum) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (int(m.track_id), m.title, to_stored(m.path), float(m.duration_s), m.content_hash,
                     int(m.n_hashes), extra, time.time(), row_checksum(m.track_id, m.title, m.path, m.duration_s,
                                                                     m.content_hash, int(m.n_hashes), extra, 0)))
            w = write_segment(self.seg_root, hashes, track_ids, times, tracks=[track_record(m) for m in metas],
                              generation=g, preset=self.preset.to_dict(), stops=stops)
            self._insert_segment(w, g)
        self.refresh()

    def remove(self, track_ids: Sequence[int]) -> int:
        """Mark tracks removed (their postings vanish from lookups at once, from disk at the next compaction)."""
        self._require_writer()
        ids = [int(t) for t in track_ids]
        with self._write_transaction():
            n = 0
            for tid in ids:
                row = self.db.execute(f"SELECT {_TRACK_COLS} FROM tracks WHERE id = ? AND removed = 0",
                                      (tid,)).fetchone()
                if row is None:
                    continue
                m = self._row_to_meta(row)
                rs = row_checksum(tid, m.title, m.path, m.duration_s, m.content_hash, m.n_hashes, row[6], 1)
                self.db.execute("UPDATE tracks SET removed = 1, row_sum = ? WHERE id = ?", (rs, tid))
                n += 1
            self._commit_generation()
            gone = [r[0] for r in self.db.execute("SELECT id FROM tracks WHERE removed = 1")]
            _atomic_write(self.path / REMOVED_FILE, json.dumps(sorted(gone)).encode())
        self.refresh()
        return n

    def compact(self, fan_in: int = 4, force: bool = False, max_postings: int = MAX_MERGE_POSTINGS,
                stop_basis: int | None = None) -> int:
        """Merge small segments so lookups touch few files; drop postings of removed tracks.

        Log-structured tiers: segments are grouped by size class (powers of ``fan_in``); when a class holds
        ``fan_in`` segments they are merged into one of the next class, so each posting is rewritten only
        O(log n) times. A merge decodes its segments in memory, so tiers stop at ``max_postings`` postings:
        indexing a library of any size needs bounded memory, and a big library ends as a few big segments
        (a lookup costs one binary search more per segment). ``force`` merges everything into one segment
        whatever its size (memory grows with the index). ``stop_basis``: the hashes the stop-word limit is
        computed from (default this index's; a shard passes its whole catalogue's). Returns the number of
        segments merged.
        """
        self._require_writer()
        merged = 0
        while True:
            rows = self.db.execute(
                "SELECT name, n_postings, value_bits, checksum FROM segments ORDER BY n_postings").fetchall()
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
            self._merge(victims, stop_basis)
            merged += len(victims)
            if force:
                self._checkpoint()
                return merged

    def _merge(self, victims: list, stop_basis: int | None = None) -> None:
        segs = [Segment(self.path, segment_dir(self.path, self.seg_root, n), int(b), int(c), cs)
                for n, c, b, cs in victims]
        parts = [s.postings() for s in segs]
        h, t, tm = (np.concatenate(p) for p in zip(*parts, strict=True))
        if self._removed.size:
            live = ~np.isin(t, self._removed)
            h, t, tm = h[live], t[live], tm[live]
        limit = stop_word_limit(self._n_hashes if stop_basis is None else stop_basis, self.preset)
        # new stop words only once the index is big enough for the relative rule (not the floor) to decide:
        # while it is small, the floor would condemn hashes that a grown index keeps
        new_stops = _over_limit(h, limit) if limit > STOP_FLOOR else np.zeros(0, np.uint32)
        inherited = np.concatenate([s.stops for s in segs])
        name = None
        try:
            with self._write_transaction():
                g = self._commit_generation()
                w = write_segment(self.seg_root, h, t, tm, tracks=self._track_records(np.unique(t).tolist()),
                                  generation=g, preset=self.preset.to_dict(),
                                  drop=np.union1d(self._stops, new_stops), stops=np.union1d(inherited, new_stops))
                name = w.name
                self.db.executemany("DELETE FROM segments WHERE name = ?", [(n,) for n, *_ in victims])
                self._insert_segment(w, g)
        except BaseException:
            if name is not None:
                delete_segment(self.seg_root, name)
            raise
        del segs, parts
        self._segments = []
        for n, *_ in victims:
            delete_segment(self.seg_root, n)
        self.refresh()

    # -- debris and damage ---------------------------------------------------------------------------------
    def classify_orphans(self) -> dict[str, list[str]]:
        """Segment folders on disk that the metadata does not list, by what they are (nothing is changed).

        ``debris``: left by an interrupted write (a merge's victims or output whose tracks live on in listed
        segments, a track whose commit never happened, removed tracks), safe for a writer to delete;
        ``stale``: healthy segments holding tracks the metadata does not know (the metadata was lost or
        replaced by an older copy); ``damaged``: folders with no readable manifest.
        """
        listed = {seg.name for seg in self._segments}
        out: dict[str, list[str]] = {"debris": [], "stale": [], "damaged": []}
        unlisted = [n for n in segment_names(self.seg_root) if n not in listed]
        if not unlisted:
            return out  # the common case: nothing to read (every reader's open passes here)
        live_tids = set(np.concatenate([s.tids for s in self._segments]).tolist()) if self._segments else set()
        removed = set(self._removed.tolist())
        known = {r[0] for r in self.db.execute("SELECT id FROM tracks")}
        g = self.generation
        for name in unlisted:
            try:
                m = read_manifest(self.path, self.seg_root / name)
                held = {int(t["id"]) for t in m["tracks"]}
                gen = int(m.get("generation", 0))
            except (IndexDamaged, KeyError, TypeError, ValueError):
                out["damaged"].append(name)
                continue
            if held <= live_tids | removed or (gen == g + 1 and not held & known):
                out["debris"].append(name)
            else:
                out["stale"].append(name)
        return out

    def _orphan_damage(self, orphans: dict[str, list[str]]) -> IndexDamaged | None:
        if orphans["stale"]:
            return IndexDamaged(self.path, self.meta_path, f"older than the segments: {len(orphans['stale'])} "
                                "healthy segment folders hold tracks it does not list (lost or replaced metadata)")
        if orphans["damaged"]:
            return IndexDamaged(self.path, self.seg_root / orphans["damaged"][0], "segment folder without a "
                                "readable manifest")
        return None

    def _check_orphans(self) -> None:
        """Reader: refuse to answer from metadata that has lost segments (deleting nothing)."""
        if writer_active(self.path):
            return  # a writer's folders in flight look like orphans; it cleans up itself
        damage = self._orphan_damage(self.classify_orphans())
        if damage is not None:
            raise damage

    def _cleanup_orphans(self) -> None:
        """Writer (holding the lock): delete debris of interrupted writes, after verifying the metadata.

        Segment folders are only written under the writer lock, so a writer finds no one else's work in
        flight. ``tmp-*`` folders are incomplete writes. Folders that hold tracks the metadata does not know
        are evidence that the metadata is stale: they are never deleted, and writing stops until
        ``bgmid check --repair`` has rebuilt the metadata from them.
        """
        for d in self.seg_root.iterdir():
            if d.name.startswith("tmp-seg-") and valid_name(d.name[4:]):
                shutil.rmtree(d, ignore_errors=True)
        orphans = self.classify_orphans()
        damage = self._orphan_damage(orphans)
        if damage is not None:
            raise damage
        for name in orphans["debris"]:
            delete_segment(self.seg_root, name)

    def _checkpoint(self) -> None:
        """Fold SQLite's write-ahead log back into meta.sqlite (it grows to ~4 MB while indexing); skipped at
        once, not waited for, when another process is using the index."""
        if not self.writable or self.db is None:
            return
        try:
            self.db.execute("PRAGMA busy_timeout = 0")
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error:
            pass  # another process reads the index: a later checkpoint will do it
        finally:
            self.db.execute("PRAGMA busy_timeout = 60000")

    def _close_quietly(self) -> None:
        if self.db is not None:
            try:
                self.db.close()
            except sqlite3.Error:
                pass
            self.db = None
        if self._lock is not None and self._own_lock:
            self._lock.release()
        self._lock = None

    def close(self) -> None:
        self._segments = []
        if self.db is not None:
            self._checkpoint()
        self._close_quietly()

    def __enter__(self) -> LocalStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_index(path: str | os.PathLike, preset: Preset | str | None = None, create: bool = False,
               write: bool | None = None, wait: bool = True, on_wait: Callable[[str], None] | None = None,
               ) -> LocalStore:
    """Open the index at ``path``: for reading (the default: changes nothing on disk), or for writing with
    ``write=True`` (takes the writer lock; ``wait=False`` fails at once if another writer holds it) or
    ``create=True`` (creates the index if needed; ``preset`` is fixed at creation). A sharded index
    (:mod:`bgmid.index.shard`) opens as a :class:`~bgmid.index.shard.ShardedStore`, the same interface."""
    from bgmid.index.shard import ShardedStore, is_sharded

    if is_sharded(path):
        return ShardedStore(path, preset=preset, write=bool(create or write), wait=wait,  # type: ignore[return-value]
                            on_wait=on_wait)
    return LocalStore(path, preset=preset, create=create, write=write, wait=wait, on_wait=on_wait)
