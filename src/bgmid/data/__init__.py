"""Real music/speech corpus, the paper's mixing dataset, fixed test sets and long-form test programmes.

* :mod:`bgmid.data.corpus` builds the corpus from Debian packages (``bgmid data fetch``) into a cache of
  memory-mappable int16 arrays with a manifest and track-/speaker-disjoint splits.
* :mod:`bgmid.data.mixing` draws training mixtures on the fly (:class:`~bgmid.data.mixing.MixtureDataset`)
  and builds/loads the fixed 12 s test and validation sets (``bgmid data mix``).
* :mod:`bgmid.data.programmes` generates broadcast-like programmes with a ground-truth cue sheet.

Submodules are imported lazily so that ``import bgmid.data`` costs nothing (torch is only needed by the
training dataset).
"""

from __future__ import annotations

from bgmid.data.corpus import (
    CACHE_RATES,
    PRESETS,
    SPLITS,
    add_local,
    audio_path,
    build_manifest,
    default_root,
    ensure_rate,
    fetch,
    items,
    load_item,
    load_manifest,
)

__all__ = [
    "CACHE_RATES",
    "PRESETS",
    "SPLITS",
    "add_local",
    "audio_path",
    "build_manifest",
    "default_root",
    "ensure_rate",
    "fetch",
    "items",
    "load_item",
    "load_manifest",
]
