"""Content hashes of files, defined once.

Which algorithm is used where: the evaluation names weights files and fixed sets by sha256 (reports and caches
record them); the index names tracks by sha1 of the file's bytes (kept for compatibility with existing
indexes). Both read the file in ``chunk``-byte blocks, so a large file never sits in memory.
"""

from __future__ import annotations

import hashlib
import os

__all__ = ["file_digest"]


def file_digest(path: str | os.PathLike, algorithm: str = "sha256", chunk: int = 1 << 20) -> str:
    """Hex digest of the bytes of ``path`` with ``algorithm`` (any name :func:`hashlib.new` knows)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
