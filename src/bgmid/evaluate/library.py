"""The corpus's reference library: its music tracks fingerprinted once into a cached index.

The one place corpus tracks are indexed: ``bgmid evaluate``, ``bgmid demo`` and the benchmarks
(``identification.py``, ``query_tuning.py``, ``monitor.py``) all call :func:`build_corpus_index` /
:func:`open_corpus_index`.

Why a cache: an index of the demo corpus takes minutes to build on two cores, and every evaluation and benchmark
needs the same one. The index lives under ``ROOT/index/<preset>-<key>/`` where the key hashes the preset's
parameters, the list of indexed item ids, the metadata layout and any decoys, so a change of either builds a new
index and an unchanged corpus reuses the old one. Building is resumable: tracks are committed one by one and
skipped on a re-run (the store's content hash is the corpus item id, also in ``extra["item_id"]``, where cue
sheets look for it).

Indexed by default: every ``music`` item except split ``ooi`` (out-of-index music is the negatives' pool), as in
the paper's identification DB, which held the separation dataset's songs plus many more; ``items`` names another
list. ``fill_to`` pads the index with *decoys* up to that many tracks, for timing at a larger library size: real
tracks' landmarks with every hash XOR-ed by a random constant (same hash statistics and posting counts, different
content), so no decoy can match a real query by its content.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bgmid.data.corpus import CACHE_RATES, default_root, load_item, load_manifest, manifest_sha256
from bgmid.data.corpus import items as manifest_items
from bgmid.errors import BgmidError
from bgmid.fingerprint import Preset, fingerprint, get_preset
from bgmid.index import LocalStore, TrackMeta, open_index
from bgmid.index.local import FORMAT_VERSION

__all__ = ["ItemPrint", "build_corpus_index", "fingerprint_items", "indexed_items", "open_corpus_index",
           "resolve_preset"]

#: Bump when what a cached index holds changes other than through the preset, the items or the format.
#: 2: ``extra["item_id"]``.
META_VERSION = 2
#: Decoys are committed in runs of this many tracks, each run merged into the tiers.
_DECOY_RUN = 50


def resolve_preset(spec: str | Preset) -> Preset:
    """A preset from a name (``p2``) or a variant spec ``BASE:field=value,...`` (``p2:density=30,fanout=8``).

    Why variants: presets tuned for separated audio (denser peaks, more pairs) can be measured before anyone
    adds them to :data:`bgmid.fingerprint.PRESETS`; the variant's name is the spec, so its index is its own.
    """
    if isinstance(spec, Preset):
        return spec
    base, _, rest = spec.partition(":")
    p = get_preset(base)
    if not rest:
        return p
    kinds = {k: type(v) for k, v in p.to_dict().items()}
    changes: dict = {"name": spec}
    for part in rest.split(","):
        key, _, val = part.partition("=")
        key = key.strip()
        if key not in kinds or key == "name" or not val:
            raise BgmidError(f"preset spec {spec!r}: {part!r} is not FIELD=VALUE with a field of {base} "
                             f"({', '.join(k for k in kinds if k != 'name')})")
        t = kinds[key]
        changes[key] = None if val == "none" else (float(val) if t in (float, type(None)) else t(val))
    return p.with_(**changes)


def indexed_items(manifest: dict) -> list[dict]:
    """Manifest records that belong in the reference index: all music except the ``ooi`` split, sorted by id."""
    return sorted((r for r in manifest_items(manifest, "music") if r["split"] != "ooi"), key=lambda r: r["id"])


def _index_key(preset: Preset, ids: list[str], fill_to: int = 0, decoy_seed: int = 0) -> str:
    h = hashlib.sha256(json.dumps(preset.to_dict(), sort_keys=True).encode())
    h.update("\n".join(ids).encode())
    h.update(f"format {FORMAT_VERSION}".encode())  # a new on-disk format rebuilds the cached index
    h.update(f"meta {META_VERSION}".encode())
    if fill_to:
        h.update(f"decoys to {fill_to} seed {decoy_seed}".encode())
    return h.hexdigest()[:12]


def _source_rate(preset: Preset) -> int:
    """Cache rate to resample from: the preset's own rate when cached, else the lowest cached rate above it."""
    if preset.sample_rate in CACHE_RATES:
        return preset.sample_rate
    above = [r for r in CACHE_RATES if r >= preset.sample_rate]
    return min(above) if above else max(CACHE_RATES)


@dataclass
class ItemPrint:
    """One corpus item's fingerprint at the preset's rate."""

    item_id: str
    hashes: np.ndarray
    times: np.ndarray
    duration_s: float
    cpu_s: float  #: resampling + fingerprinting, one core


def _fingerprint_item(args: tuple[str, str, Preset]) -> ItemPrint:
    """Worker: fingerprint one corpus item from its int16 cache."""
    from bgmid.audio import resample

    root, item_id, preset = args
    sr = _source_rate(preset)
    x = np.asarray(load_item(root, item_id, sr), dtype=np.float32) * (1.0 / 32768.0)
    t0 = time.process_time()
    if sr != preset.sample_rate:
        x = resample(x, sr, preset.sample_rate)
    lm = fingerprint(x, preset)
    return ItemPrint(item_id, lm.hashes, lm.times, x.size / preset.sample_rate, time.process_time() - t0)


def fingerprint_items(root: str | os.PathLike, ids: Sequence[str], preset: str | Preset, jobs: int = 1
                      ) -> Iterator[ItemPrint]:
    """Fingerprints of corpus items ``ids`` in order, ``jobs`` worker processes (what the index holds)."""
    p = resolve_preset(preset)
    work = [(str(root), i, p) for i in ids]
    pool = ProcessPoolExecutor(max_workers=jobs) if jobs > 1 and len(work) > 1 else None
    try:
        yield from (pool.map(_fingerprint_item, work, chunksize=1) if pool else map(_fingerprint_item, work))
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)


def _track_meta(r: dict, duration_s: float) -> TrackMeta:
    return TrackMeta(r.get("title") or r["id"], r.get("orig_path", ""), duration_s, r["id"],
                     extra={"item_id": r["id"], "package": r.get("package", ""), "split": r.get("split", "")})


def _add_tracks(store: LocalStore, root: Path, recs: list[dict], p: Preset, jobs: int,
                log: Callable[[str], None] | None) -> tuple[float, float, list[ItemPrint]]:
    """Index the records not in ``store`` yet; return (CPU s, audio s, their fingerprints)."""
    todo = [r for r in recs if not store.has_content(r["id"])]
    if log and todo:
        log(f"indexing {len(todo)} of {len(recs)} corpus tracks with preset {p.name} into {store.path} "
            f"({jobs} job(s))")
    t0, cpu, audio_s, prints = time.time(), 0.0, 0.0, []
    for k, (r, fp) in enumerate(zip(todo, fingerprint_items(root, [r["id"] for r in todo], p, jobs)), 1):
        store.add_track(_track_meta(r, fp.duration_s), fp.hashes, fp.times)
        cpu, audio_s = cpu + fp.cpu_s, audio_s + fp.duration_s
        prints.append(fp)
        if log and (k % 25 == 0 or k == len(todo)):
            log(f"  {k}/{len(todo)} tracks, {time.time() - t0:.0f} s")
    return cpu, audio_s, prints


def _add_decoys(store: LocalStore, root: Path, recs: list[dict], p: Preset, fill_to: int, seed: int, jobs: int,
                prints: list[ItemPrint], log: Callable[[str], None] | None) -> None:
    """Pad ``store`` with decoys (see the module docstring) up to ``fill_to`` tracks; decoy ``k`` is real track
    ``k mod n`` (in ``recs`` order) with its hashes XOR-ed by the ``k``-th draw of ``seed``'s generator."""
    n_fill = max(0, fill_to - len(recs))
    todo = [k for k in range(n_fill) if not store.has_content(f"decoy{k}")]
    if not todo:
        return
    have = {fp.item_id: fp for fp in prints}
    missing = [r["id"] for r in recs if r["id"] not in have]
    have.update((fp.item_id, fp) for fp in fingerprint_items(root, missing, p, jobs))
    xors = np.random.default_rng(seed).integers(1, 2**20, size=n_fill)
    if log:
        log(f"adding {len(todo)} decoys to {store.path} (index padded to {fill_to} tracks)")
    for j, k in enumerate(todo, 1):
        fp = have[recs[k % len(recs)]["id"]]
        store.add_track(TrackMeta(f"decoy{k}", "", 0.0, f"decoy{k}"), fp.hashes ^ np.uint32(xors[k]), fp.times)
        if j % _DECOY_RUN == 0:
            store.compact()


def build_corpus_index(
    root: str | os.PathLike | None = None,
    preset: str | Preset = "p1",
    db_dir: str | os.PathLike | None = None,
    jobs: int = 1,
    log: Callable[[str], None] | None = print,
    items: Sequence[str] | None = None,
    fill_to: int = 0,
    decoy_seed: int = 0,
) -> Path:
    """Index the corpus's music for ``preset`` (or reuse the cached index); return the index folder.

    ``db_dir`` overrides where the index goes (default ``ROOT/index/<preset>-<key>``). ``jobs`` worker processes
    fingerprint in parallel. ``items`` names the item ids to index (default :func:`indexed_items`); ``fill_to``
    pads with decoys up to that many tracks (see the module docstring). A finished index has ``built.json``
    (tracks, hours, CPU seconds, x real time of the real tracks) next to it; an unfinished one is completed on
    the next call.
    """
    root = Path(root) if root else default_root()
    p = resolve_preset(preset)
    recs = _records(root, load_manifest(root), items)
    ids = [r["id"] for r in recs]
    safe = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in p.name)
    tag = f"{safe}-fill{fill_to}" if fill_to else safe
    db = Path(db_dir) if db_dir else root / "index" / f"{tag}-{_index_key(p, ids, fill_to, decoy_seed)}"
    done = db / "built.json"
    if done.exists():
        return db
    with open_index(db, preset=p, create=True) as store:
        cpu, audio_s, prints = _add_tracks(store, root, recs, p, jobs, log)
        if fill_to:
            store.compact(force=True)  # the real tracks first, as one segment (as without decoys)
            _add_decoys(store, root, recs, p, fill_to, decoy_seed, jobs, prints, log)
        store.compact(force=True)
        st = store.stats()
        info = {
            "preset": p.to_dict(), "tracks": st["tracks"], "hours": st["hours"], "postings": st["postings"],
            "bytes": st["bytes"], "manifest_sha256": manifest_sha256(root),
            "fingerprint_cpu_s": round(cpu, 2),
            "fingerprint_x_realtime_one_core": round(audio_s / cpu, 1) if cpu > 0 else None,
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        if fill_to:
            info["decoys"] = {"fill_to": fill_to, "seed": decoy_seed, "real_tracks": len(recs)}
    tmp = done.with_suffix(".tmp")
    tmp.write_text(json.dumps(info, indent=1))
    os.replace(tmp, done)
    return db


def _records(root: Path, manifest: dict, ids: Sequence[str] | None) -> list[dict]:
    """The manifest records to index, sorted by id (an index is a set of tracks: the same set is the same cached
    index whatever order it was named in): ``ids``, or :func:`indexed_items`."""
    if ids is None:
        recs = indexed_items(manifest)
    else:
        by_id = {r["id"]: r for r in manifest["items"]}
        unknown = [i for i in ids if i not in by_id]
        if unknown:
            raise BgmidError(f"corpus items not in the manifest: {', '.join(unknown[:5])}"
                             f"{' ...' if len(unknown) > 5 else ''}")
        recs = [by_id[i] for i in sorted(set(ids))]
    if not recs:
        raise BgmidError(f"{root}: the corpus has no indexable music (all music is 'ooi' or none was fetched).")
    return recs


def open_corpus_index(
    root: str | os.PathLike | None = None, preset: str | Preset = "p1", jobs: int = 1,
    log: Callable[[str], None] | None = print, items: Sequence[str] | None = None, fill_to: int = 0,
    decoy_seed: int = 0,
) -> tuple[LocalStore, dict]:
    """Build (if needed) and open the corpus index for ``preset``; returns the store and its ``built.json``.
    Options as :func:`build_corpus_index`."""
    db = build_corpus_index(root, preset, jobs=jobs, log=log, items=items, fill_to=fill_to, decoy_seed=decoy_seed)
    info = json.loads((db / "built.json").read_text())
    return open_index(db, preset=resolve_preset(preset)), info
