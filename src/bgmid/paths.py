"""File names as the file system has them: stored losslessly, shown readably.

POSIX file names are bytes. Old archives and Samba shares hold names that are not valid UTF-8 (Latin-1 from
another era); Python decodes those bytes with ``surrogateescape`` into ``str`` values that cannot be encoded
back to UTF-8 (``UnicodeEncodeError: surrogates not allowed``) -- not into SQLite, JSON or a CSV file. So:

* the index stores a path as its exact bytes (:func:`to_stored` / :func:`from_stored`), so the file can be
  opened again (re-indexing on repair, the review app playing it) whatever its name;
* everything a person or another program reads shows it with U+FFFD for the undecodable bytes
  (:func:`shown`): lossy, but always valid UTF-8.
"""

from __future__ import annotations

import os

__all__ = ["from_stored", "shown", "to_stored"]


def to_stored(path: str | os.PathLike | bytes) -> bytes:
    """The exact bytes of ``path`` (what the kernel sees), for storage."""
    return os.fsencode(path)


def from_stored(value: bytes | str) -> str:
    """A stored path back as a ``str`` that ``open()`` accepts (undecodable bytes as surrogate escapes)."""
    return os.fsdecode(value) if isinstance(value, bytes | bytearray | memoryview) else str(value)


def shown(path: str | os.PathLike | bytes) -> str:
    """``path`` as valid UTF-8 text for messages, JSON and CSV: undecodable bytes become U+FFFD."""
    return os.fsencode(path).decode("utf-8", errors="replace")
