"""A sharded catalogue: one index split by track into N shard indexes that answer as the single index does.

Layout of a sharded index folder::

    shards.json      {"format": 1, "shards": ["shard-000", ...], "preset": NAME}: written last, so a split
                     interrupted before it is not taken for an index
    shard-000/ ...   each a normal index folder (:mod:`bgmid.index.local`), which can live on its own machine

Why the answers are identical to the single index's:

* **One track-id space.** Track ids are global: splitting keeps every track's id, a new track gets the next id
  over all shards, and track ``t`` lives in shard ``t mod N`` (so a track is found without a directory, and
  adding tracks spreads them evenly; "adding a track goes to one shard").
* **One stop-word policy.** The limit comes from the whole catalogue's hash count
  (:func:`bgmid.index.base.stop_word_limit` of the summed ``n_hashes``: every track keeps its count), and a
  hash's postings are counted over all shards before it is compared with the limit (:meth:`LocalStore.find`
  per shard, summed, then :meth:`LocalStore.postings_of`), exactly as the single index sums over its segments.
  Every shard records the source's stop words, so the union is the source's. Shard compactions declare new stop
  words against the catalogue's size (``compact(stop_basis=...)``).
* The offset scorer does not depend on the order postings arrive in (:func:`bgmid.match.best_offsets` sorts).

Shards are opened together for writing (each shard's writer lock), so one writer at a time holds the whole
catalogue. ``bgmid stats`` and ``bgmid check`` cover every shard.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from bgmid.errors import BgmidError
from bgmid.fingerprint.presets import Preset
from bgmid.index.base import TrackMeta
from bgmid.index.local import LocalStore
from bgmid.index.postings import sorted_union
from bgmid.paths import shown

#: The file that makes a folder a sharded index.
SHARDS_FILE = "shards.json"


def is_sharded(path: str | os.PathLike) -> bool:
    return (Path(path) / SHARDS_FILE).is_file()


def shard_folders(path: str | os.PathLike) -> list[Path]:
    """The shard index folders of the sharded index at ``path``, in shard order."""
    root = Path(path)
    try:
        spec = json.loads((root / SHARDS_FILE).read_text())
        names = [str(n) for n in spec["shards"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BgmidError(f"{shown(root / SHARDS_FILE)}: unreadable shard list ({exc}).") from None
    if not names or any("/" in n or n.startswith(".") for n in names):
        raise BgmidError(f"{shown(root / SHARDS_FILE)}: names no valid shard folders.")
    return [root / n for n in names]


class ShardedStore:
    """N shard indexes behind the :class:`~bgmid.index.base.Store` protocol (see module docstring)."""

    def __init__(self, path: str | os.PathLike, preset: Preset | str | None = None, write: bool | None = None,
                 wait: bool = True, on_wait: Callable[[str], None] | None = None):
        self.path = Path(path)
        self.shards: list[LocalStore] = []
        try:
            for d in shard_folders(self.path):
                self.shards.append(LocalStore(d, preset=preset, write=write, wait=wait, on_wait=on_wait))
        except BaseException:
            self.close()
            raise
        self.preset = self.shards[0].preset
        if any(s.preset != self.preset for s in self.shards):
            self.close()
            raise BgmidError(f"{shown(self.path)}: its shards were built with different presets.")
        self.writable = bool(write)

    def shard_of(self, track_id: int) -> LocalStore:
        return self.shards[int(track_id) % len(self.shards)]

    # -- reading -------------------------------------------------------------------------------------------
    @property
    def n_hashes(self) -> int:
        return sum(s.n_hashes for s in self.shards)

    @property
    def n_postings(self) -> int:
        return sum(s.n_postings for s in self.shards)

    @property
    def stop_words(self) -> np.ndarray:
        return sorted_union([s.stop_words for s in self.shards])

    @property
    def snapshot(self) -> tuple[int, ...]:
        """Changes whenever a shard loads another state (see :attr:`LocalStore.snapshot`)."""
        return tuple(s.snapshot for s in self.shards)

    def keys(self) -> np.ndarray:
        """Every hash with postings stored in any shard (sorted uint32)."""
        return sorted_union([s.keys() for s in self.shards])

    @property
    def generation(self) -> int:
        """Commits over all shards (changes whenever any shard changes)."""
        return sum(s.generation for s in self.shards)

    def lookup(self, hashes: np.ndarray, max_postings: int | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """As :meth:`LocalStore.lookup` of the single index: counts summed over the shards decide the stop words."""
        q = np.asarray(hashes, dtype=np.uint32)
        found = [s.find(q) for s in self.shards]
        total = np.sum([t for _, t in found], axis=0)
        ok = total > 0
        if max_postings is not None:
            ok &= total <= max_postings
        stops = self.stop_words
        if stops.size:
            ok &= ~np.isin(q, stops)
        parts = [s.postings_of(f, ok) for s, (f, _) in zip(self.shards, found, strict=True)]
        return tuple(np.concatenate(p) for p in zip(*parts, strict=True))  # type: ignore[return-value]

    def tracks(self) -> list[TrackMeta]:
        return sorted((t for s in self.shards for t in s.tracks()), key=lambda t: t.track_id)

    def track(self, track_id: int) -> TrackMeta:
        return self.shard_of(track_id).track(track_id)

    def has_content(self, content_hash: str) -> bool:
        return any(s.has_content(content_hash) for s in self.shards)

    def stats(self) -> dict:
        per = [s.stats() for s in self.shards]
        total = {k: sum(p[k] for p in per) for k in ("tracks", "postings", "stored_postings", "segments", "bytes")}
        total["bytes"] += (self.path / SHARDS_FILE).stat().st_size
        return {"path": shown(self.path), "preset": self.preset.name, **total,
                "hours": round(sum(p["hours"] for p in per), 3), "stop_words": int(self.stop_words.size),
                "shards": len(self.shards), "tracks_per_shard": [p["tracks"] for p in per]}

    def refresh(self) -> None:
        for s in self.shards:
            s.refresh()

    # -- writing -------------------------------------------------------------------------------------------
    def add_track(self, meta: TrackMeta, hashes: np.ndarray, times: np.ndarray) -> int:
        """Store a track in one shard (``id mod N``) under the next id of the whole catalogue."""
        for s in self.shards:  # the same bytes are never indexed twice, in any shard
            row = s.db.execute("SELECT id FROM tracks WHERE content_hash = ? AND removed = 0 LIMIT 1",
                               (meta.content_hash,)).fetchone()
            if row is not None:
                meta.track_id = int(row[0])
                return meta.track_id
        tid = max(s.last_id for s in self.shards) + 1
        shard = self.shard_of(tid)
        # the catalogue's stop words (declared by any shard) are not stored in this one either
        shard._stops = np.union1d(shard.stop_words, self.stop_words)
        return shard.add_track(meta, hashes, times, track_id=tid)

    def remove(self, track_ids: Sequence[int]) -> int:
        by: dict[int, list[int]] = {}
        for t in track_ids:
            by.setdefault(int(t) % len(self.shards), []).append(int(t))
        return sum(self.shards[k].remove(ids) for k, ids in by.items())

    def compact(self, fan_in: int = 4, force: bool = False, **kw) -> int:
        basis = self.n_hashes
        return sum(s.compact(fan_in=fan_in, force=force, stop_basis=basis, **kw) for s in self.shards)

    def close(self) -> None:
        for s in self.shards:
            s.close()
        self.shards = []

    def __enter__(self) -> ShardedStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _write_spec(root: Path, names: list[str], preset: Preset, **extra) -> None:
    from bgmid.index.segment import write_durably

    write_durably(root / SHARDS_FILE, json.dumps({"format": 1, "shards": names, "preset": preset.name,
                                                  **extra}).encode())


def create_sharded(target: str | os.PathLike, n: int, preset: Preset | str | None = None) -> None:
    """A new, empty sharded index of ``n`` shards at ``target`` (a new or empty folder)."""
    from bgmid.fingerprint.presets import get_preset

    dst = Path(target)
    if n < 2:
        raise BgmidError("--shards must be at least 2.")
    if dst.exists() and any(dst.iterdir()):
        raise BgmidError(f"{shown(dst)}: not empty; a sharded index is created in a new folder.")
    p = get_preset(preset or "p1")
    names = [f"shard-{k:03d}" for k in range(n)]
    for nm in names:
        LocalStore(dst / nm, preset=p, create=True).close()
    _write_spec(dst, names, p)


def split_index(source: str | os.PathLike, target: str | os.PathLike, n: int,
                on_progress: Callable[[int, int], None] | None = None) -> dict:
    """Split the index at ``source`` by track into ``n`` shards at ``target`` (a new folder); the source is only
    read. Segment by segment (memory: one source segment's postings), each source segment's tracks become one
    segment in each shard. Returns the sharded index's stats."""
    src_path, dst = Path(source), Path(target)
    if n < 2:
        raise BgmidError("--shards must be at least 2.")
    if dst.exists() and any(dst.iterdir()):
        raise BgmidError(f"{shown(dst)}: not empty; split into a new folder.")
    names = [f"shard-{k:03d}" for k in range(n)]
    with LocalStore(src_path) as src:
        metas = {t.track_id: t for t in src.tracks()}
        if not metas:
            raise BgmidError(f"{shown(src_path)}: an empty index; nothing to split.")
        stops = src.stop_words
        shards = [LocalStore(dst / nm, preset=src.preset, create=True) for nm in names]
        try:
            placed: set[int] = set()
            for done, seg in enumerate(src._segments):
                h, t, tm = seg.postings()
                live = np.isin(t, np.fromiter(metas, np.int64, len(metas)))
                h, t, tm = h[live], t[live], tm[live]
                for k, shard in enumerate(shards):
                    sel = t % n == k
                    ids = sorted(set(np.unique(t[sel]).tolist()))
                    if ids:
                        shard.import_tracks([metas[i] for i in ids], h[sel], t[sel], tm[sel], stops=stops)
                        placed.update(ids)
                if on_progress is not None:
                    on_progress(done + 1, len(src._segments))
            for tid in sorted(set(metas) - placed):  # tracks none of whose hashes is stored (all stop words)
                k = tid % n
                shards[k].import_tracks([metas[tid]], np.zeros(0, np.uint32), np.zeros(0, np.int64),
                                        np.zeros(0, np.int64), stops=stops)
        finally:
            for s in shards:
                s.close()
    _write_spec(dst, names, src.preset, source=shown(src_path))
    with ShardedStore(dst) as sharded:
        return sharded.stats()


class _ShardServer:
    """One shard held open (memory-mapped) by a Ray actor: the two halves of a lookup, with the first half's
    per-segment positions kept between them under a token (several callers may interleave)."""

    def __init__(self, path: str):
        self.store = LocalStore(path)
        self._pending: dict[int, list] = {}
        self._next = 0

    def info(self) -> tuple[int, np.ndarray, dict]:
        return self.store.n_hashes, self.store.stop_words, self.store.preset.to_dict()

    def count(self, q: np.ndarray) -> tuple[int, np.ndarray]:
        found, total = self.store.find(q)
        self._next += 1
        self._pending[self._next] = found
        return self._next, total

    def postings(self, token: int, ok: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.store.postings_of(self._pending.pop(token), ok)

    def track(self, track_id: int) -> TrackMeta:
        return self.store.track(track_id)

    def tracks(self) -> list[TrackMeta]:
        return self.store.tracks()


class RayShardedStore:
    """A sharded index whose shards are held by Ray actors, one per shard (placed by Ray on any node that sees
    the shard's folder; ``resources`` are each actor's Ray options): a lookup fans out to all actors at once and
    merges as :class:`ShardedStore` does, so the answers are the same. Read-only (add tracks through
    ``bgmid index --db``, which opens the shards directly)."""

    def __init__(self, path: str | os.PathLike, resources: dict | None = None):
        from bgmid.cluster import require_ray
        from bgmid.fingerprint.presets import Preset

        self.ray = require_ray()
        self.path = Path(path)
        server = self.ray.remote(_ShardServer).options(**{"num_cpus": 0, **(resources or {})})
        self.actors = [server.remote(str(d)) for d in shard_folders(self.path)]
        infos = self.ray.get([a.info.remote() for a in self.actors])
        self.preset = Preset(**infos[0][2])
        self._n_hashes = sum(i[0] for i in infos)
        self._stops = np.unique(np.concatenate([i[1] for i in infos]))

    @property
    def n_hashes(self) -> int:
        return self._n_hashes

    def lookup(self, hashes: np.ndarray, max_postings: int | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        q = np.asarray(hashes, dtype=np.uint32)
        counted = self.ray.get([a.count.remote(q) for a in self.actors])
        total = np.sum([t for _, t in counted], axis=0)
        ok = total > 0
        if max_postings is not None:
            ok &= total <= max_postings
        if self._stops.size:
            ok &= ~np.isin(q, self._stops)
        parts = self.ray.get([a.postings.remote(tok, ok) for a, (tok, _) in zip(self.actors, counted, strict=True)])
        return tuple(np.concatenate(p) for p in zip(*parts, strict=True))  # type: ignore[return-value]

    def track(self, track_id: int) -> TrackMeta:
        return self.ray.get(self.actors[int(track_id) % len(self.actors)].track.remote(int(track_id)))

    def tracks(self) -> list[TrackMeta]:
        return sorted((t for ts in self.ray.get([a.tracks.remote() for a in self.actors]) for t in ts),
                      key=lambda t: t.track_id)

    def has_content(self, content_hash: str) -> bool:
        return any(t.content_hash == content_hash for t in self.tracks())

    def add_track(self, meta: TrackMeta, hashes: np.ndarray, times: np.ndarray) -> int:
        raise BgmidError(f"{shown(self.path)}: shard actors serve lookups only; add tracks with 'bgmid index'.")

    def remove(self, track_ids: Sequence[int]) -> int:
        raise BgmidError(f"{shown(self.path)}: shard actors serve lookups only; remove tracks with 'bgmid remove'.")

    def stats(self) -> dict:
        with ShardedStore(self.path) as s:
            return s.stats()

    def close(self) -> None:
        for a in self.actors:
            self.ray.kill(a)
        self.actors = []

    def __enter__(self) -> RayShardedStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
