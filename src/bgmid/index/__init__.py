"""Fingerprint storage: the :class:`Store` interface and the embedded on-disk default."""

from bgmid.index.base import Store, TrackMeta
from bgmid.index.local import LocalStore, open_index

__all__ = ["LocalStore", "Store", "TrackMeta", "open_index"]
