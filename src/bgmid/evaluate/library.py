"""The evaluation's reference library: every indexable music track of the corpus, fingerprinted once.

Why a cache: an index of the demo corpus takes minutes to build on two cores, and every evaluation (and the
identification benchmark) needs the same one. The index lives under ``ROOT/index/<preset>-<key>/`` where the key
hashes the preset's parameters and the list of indexed item ids, so a change of either builds a new index and an
unchanged corpus reuses the old one. Building is resumable: tracks are committed one by one and skipped on a re-run
(the store's content hash is the corpus item id).

Indexed: every ``music`` item except split ``ooi`` (out-of-index music is the negatives' pool), as in the paper's
identification DB, which held the separation dataset's songs plus many more.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from bgmid.data.corpus import CACHE_RATES, default_root, items, load_item, load_manifest
from bgmid.errors import BgmidError
from bgmid.fingerprint import Preset, fingerprint, get_preset
from bgmid.index import LocalStore, TrackMeta, open_index
from bgmid.index.local import FORMAT_VERSION

__all__ = ["build_corpus_index", "indexed_items", "manifest_sha256", "open_corpus_index", "resolve_preset"]


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


def manifest_sha256(root: str | os.PathLike | None = None) -> str:
    """sha256 of ``ROOT/manifest.json``: identifies the exact corpus (items, splits) a number came from."""
    p = (Path(root) if root else default_root()) / "manifest.json"
    if not p.exists():
        raise BgmidError(f"{p}: no corpus here. Run 'bgmid data fetch --root {p.parent}' first.")
    return hashlib.sha256(p.read_bytes()).hexdigest()


def indexed_items(manifest: dict) -> list[dict]:
    """Manifest records that belong in the reference index: all music except the ``ooi`` split, sorted by id."""
    return sorted((r for r in items(manifest, "music") if r["split"] != "ooi"), key=lambda r: r["id"])


def _index_key(preset: Preset, ids: list[str]) -> str:
    h = hashlib.sha256(json.dumps(preset.to_dict(), sort_keys=True).encode())
    h.update("\n".join(ids).encode())
    h.update(f"format {FORMAT_VERSION}".encode())  # a new on-disk format rebuilds the cached index
    return h.hexdigest()[:12]


def _source_rate(preset: Preset) -> int:
    """Cache rate to resample from: the preset's own rate when cached, else the lowest cached rate above it."""
    if preset.sample_rate in CACHE_RATES:
        return preset.sample_rate
    above = [r for r in CACHE_RATES if r >= preset.sample_rate]
    return min(above) if above else max(CACHE_RATES)


def _fingerprint_item(args: tuple[str, str, Preset]) -> tuple[str, np.ndarray, np.ndarray, float, float]:
    """Worker: fingerprint one corpus item from its int16 cache (returns hashes, times, seconds, CPU time)."""
    from bgmid.audio import resample

    root, item_id, preset = args
    sr = _source_rate(preset)
    x = np.asarray(load_item(root, item_id, sr), dtype=np.float32) * (1.0 / 32768.0)
    t0 = time.process_time()
    if sr != preset.sample_rate:
        x = resample(x, sr, preset.sample_rate)
    lm = fingerprint(x, preset)
    return item_id, lm.hashes, lm.times, x.size / preset.sample_rate, time.process_time() - t0


def build_corpus_index(
    root: str | os.PathLike | None = None,
    preset: str | Preset = "p1",
    db_dir: str | os.PathLike | None = None,
    jobs: int = 1,
    log: Callable[[str], None] | None = print,
) -> Path:
    """Index the corpus's music for ``preset`` (or reuse the cached index); return the index folder.

    ``db_dir`` overrides where the index goes (default ``ROOT/index/<preset>-<key>``). ``jobs`` worker processes
    fingerprint in parallel. A finished index has ``built.json`` (tracks, hours, CPU seconds, x real time) next to
    it; an unfinished one is completed on the next call.
    """
    root = Path(root) if root else default_root()
    p = resolve_preset(preset)
    recs = indexed_items(load_manifest(root))
    if not recs:
        raise BgmidError(f"{root}: the corpus has no indexable music (all music is 'ooi' or none was fetched).")
    ids = [r["id"] for r in recs]
    safe = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in p.name)
    db = Path(db_dir) if db_dir else root / "index" / f"{safe}-{_index_key(p, ids)}"
    done = db / "built.json"
    if done.exists():
        return db
    by_id = {r["id"]: r for r in recs}
    with open_index(db, preset=p, create=True) as store:
        todo = [i for i in ids if not store.has_content(i)]
        if log and todo:
            log(f"indexing {len(todo)} of {len(ids)} corpus tracks with preset {p.name} into {db} ({jobs} job(s))")
        t0 = time.time()
        cpu = audio_s = 0.0
        work = [(str(root), i, p) for i in todo]
        pool = ProcessPoolExecutor(max_workers=jobs) if jobs > 1 and len(work) > 1 else None
        try:
            results = pool.map(_fingerprint_item, work, chunksize=1) if pool else map(_fingerprint_item, work)
            for k, (item_id, h, t, dur, c) in enumerate(results, 1):
                r = by_id[item_id]
                store.add_track(TrackMeta(r.get("title") or item_id, r.get("orig_path", ""), dur, item_id,
                                          extra={"package": r.get("package", ""), "split": r.get("split", "")}),
                                h, t)
                cpu += c
                audio_s += dur
                if log and (k % 25 == 0 or k == len(work)):
                    log(f"  {k}/{len(work)} tracks, {time.time() - t0:.0f} s")
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
        store.compact(force=True)
        st = store.stats()
        info = {
            "preset": p.to_dict(), "tracks": st["tracks"], "hours": st["hours"], "postings": st["postings"],
            "bytes": st["bytes"], "manifest_sha256": manifest_sha256(root),
            "fingerprint_cpu_s": round(cpu, 2),
            "fingerprint_x_realtime_one_core": round(audio_s / cpu, 1) if cpu > 0 else None,
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
    tmp = done.with_suffix(".tmp")
    tmp.write_text(json.dumps(info, indent=1))
    os.replace(tmp, done)
    return db


def open_corpus_index(
    root: str | os.PathLike | None = None, preset: str | Preset = "p1", jobs: int = 1,
    log: Callable[[str], None] | None = print,
) -> tuple[LocalStore, dict]:
    """Build (if needed) and open the corpus index for ``preset``; returns the store and its ``built.json``."""
    db = build_corpus_index(root, preset, jobs=jobs, log=log)
    info = json.loads((db / "built.json").read_text())
    return open_index(db, preset=resolve_preset(preset)), info
