"""The effects set: the short sound-effect and ambience files of the game packages, which the music corpus drops.

Why: a real scene's non-music stem has footsteps, doors, engines, explosions and room tone as well as voices;
the game packages the corpus is built from ship hundreds of such files next to their music (files under 60 s
are dropped as "sound effects" by :mod:`bgmid.data.corpus`). ``bgmid data effects`` converts them into a set of
its own, ``ROOT/effects/`` (``effects.json`` and ``audio/<rate>/<id>.npy``, int16 mono at 16,000 and 22,050 Hz),
beside the corpus and without touching its manifest (so checkpoints' corpus hashes stay valid). Items get a
split (train / val / test, 80 / 10 / 10 by hashed id) so test scenes use effects training never heard.

Only the packages' sound folders are read (never their music or voice folders): a jingle in the effects stem
would teach the separator to remove music. Files of 0.1-20 s are kept.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bgmid.data.corpus import (
    CACHE_RATES,
    Source,
    _copy_licence,
    _find_deb,
    _jobs_for,
    _run_jobs,
    _unit,
    default_root,
    download_deb,
    unpack_deb,
)
from bgmid.errors import BgmidError

#: Packages and their sound-effect folders (fnmatch patterns on the path inside the package).
EFFECT_SOURCES: dict[str, Source] = {
    s.package: s
    for s in [
        Source("hedgewars-data", "effects", include=("*/Data/Sounds/*",), exclude=("*/voices/*",),
               min_duration_s=0.1),
        Source("blobwars-data", "effects", include=("*/blobwars/sound/*",), min_duration_s=0.1),
        Source("colobot-common-sounds", "effects", include=("*/colobot/sounds/*",), min_duration_s=0.1),
        Source("marsshooter-data", "effects", include=("*/marsshooter/audio/*",),
               exclude=("*/announcer/*", "*/music/*"), min_duration_s=0.1),
    ]
}
#: Effects longer than this (s) are left out: loops of that length are mostly music beds.
MAX_EFFECT_S = 20.0
#: Split fractions (train, val, test) by hashed item id.
EFFECT_FRACTIONS = (0.8, 0.1, 0.1)


def effects_root(root: str | os.PathLike | None = None) -> Path:
    """``ROOT/effects``: where the effects set lives."""
    return (Path(root) if root else default_root()) / "effects"


def _split(item_id: str, seed: int = 0) -> str:
    u = _unit(seed, f"effect:{item_id}")
    return "train" if u < EFFECT_FRACTIONS[0] else "val" if u < EFFECT_FRACTIONS[0] + EFFECT_FRACTIONS[1] else "test"


def fetch_effects(root: str | os.PathLike | None = None, packages: list[str] | None = None, workers: int = 1,
                  seed: int = 0, log: Callable[[str], None] = print) -> dict:
    """Build ``ROOT/effects/`` from the packages' ``.deb`` files (``ROOT/debs``, downloaded when missing), one
    package at a time (resumable: a package's finished records are kept in ``effects/items/PKG.json``).
    Returns the set's manifest ``{"items": [...], "summary": {...}}``."""
    root = Path(root) if root else default_root()
    out = effects_root(root)
    (out / "items").mkdir(parents=True, exist_ok=True)
    (out / "work").mkdir(parents=True, exist_ok=True)
    names = list(EFFECT_SOURCES) if packages is None else packages
    for name in names:
        if name not in EFFECT_SOURCES:
            raise BgmidError(f"unknown effects package '{name}'. Known: {', '.join(EFFECT_SOURCES)}.")
        done = out / "items" / f"{name}.json"
        if done.exists():
            continue
        t0 = time.time()
        src = EFFECT_SOURCES[name]
        deb = _find_deb(root / "debs", name) or download_deb(name, root / "debs", log)
        tree = out / "work" / name
        shutil.rmtree(tree, ignore_errors=True)
        log(f"  unpacking {deb.name}")
        unpack_deb(deb, tree)
        licence = _copy_licence(tree, name, out)
        recs = _run_jobs(_jobs_for(src, tree, out), out / "items" / f"{name}.partial.jsonl", workers, log)
        for r in recs:
            r["licence"] = licence
            if "drop" not in r and r["duration_s"] > MAX_EFFECT_S:
                r["drop"] = f"long ({r['duration_s']:.1f} s > {MAX_EFFECT_S:g} s)"
        tmp = done.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"package": name, "items": recs}))
        os.replace(tmp, done)
        (out / "items" / f"{name}.partial.jsonl").unlink(missing_ok=True)
        shutil.rmtree(tree, ignore_errors=True)
        kept = sum(1 for r in recs if "drop" not in r)
        log(f"  {name} [effects]: kept {kept}/{len(recs)} files, {time.time() - t0:.0f} s")
    shutil.rmtree(out / "work", ignore_errors=True)
    return build_effects_manifest(root, seed)


def build_effects_manifest(root: str | os.PathLike | None = None, seed: int = 0) -> dict:
    """Merge ``effects/items/*.json`` into ``effects/effects.json`` (duplicates by content once, splits)."""
    out = effects_root(root)
    items: dict[str, dict] = {}
    for p in sorted((out / "items").glob("*.json")):
        for r in json.loads(p.read_text())["items"]:
            if "drop" not in r and r["id"] not in items:
                items[r["id"]] = {k: r.get(k, "") for k in ("id", "package", "orig_path", "title", "licence",
                                                             "duration_s", "orig_sr", "bandwidth_hz", "rms_dbfs")}
                items[r["id"]]["split"] = _split(r["id"], seed)
    recs = sorted(items.values(), key=lambda r: (r["package"], r["orig_path"]))
    summary: dict = {}
    for r in recs:
        s = summary.setdefault(r["split"], {"items": 0, "seconds": 0.0})
        s["items"] += 1
        s["seconds"] = round(s["seconds"] + r["duration_s"], 3)
    man = {"version": 1, "cache_rates": list(CACHE_RATES), "max_effect_s": MAX_EFFECT_S, "summary": summary,
           "packages": sorted({r["package"] for r in recs}), "items": recs}
    tmp = out / "effects.json.tmp"
    tmp.write_text(json.dumps(man, indent=1))
    os.replace(tmp, out / "effects.json")
    return man


def has_effects(root: str | os.PathLike | None = None) -> bool:
    return (effects_root(root) / "effects.json").exists()


def load_effects(root: str | os.PathLike | None, split: str, sample_rate: int) -> list[np.ndarray]:
    """Float32 effects of ``split`` at ``sample_rate`` Hz (read from the nearest stored rate at or above it and
    resampled in memory when it is not stored; the whole set is a few MB)."""
    from bgmid.audio import resample

    out = effects_root(root)
    if not (out / "effects.json").exists():
        raise BgmidError(f"{out / 'effects.json'}: no effects set. Build it with 'bgmid data effects'.")
    man = json.loads((out / "effects.json").read_text())
    stored = [r for r in CACHE_RATES if r >= sample_rate] or [max(CACHE_RATES)]
    src_rate = sample_rate if sample_rate in CACHE_RATES else min(stored)
    xs = []
    for r in man["items"]:
        if r["split"] != split:
            continue
        x = np.load(out / "audio" / str(src_rate) / f"{r['id']}.npy").astype(np.float32) / 32768.0
        xs.append(resample(x, src_rate, sample_rate) if src_rate != sample_rate else x)
    return xs
