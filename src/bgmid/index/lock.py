"""One writer at a time: an exclusive lock on the index folder, held for a whole writing session.

Two ``bgmid index`` runs on one ``--db`` used to interleave: both checked "already indexed?" before either
committed, so files were indexed twice, and one's compaction merged segments the other was deleting. Now a
writer (``index``, ``remove``, ``check --repair``) takes ``DIR/write.lock`` with ``flock`` for as long as it
writes; a second writer waits (saying who holds it) or, with ``--no-wait``, fails at once. Readers never take
it: segments are immutable and SQLite's WAL gives them a consistent snapshot while a writer works.

``flock`` locks are released by the kernel when the holder dies (even by ``kill -9``), so a stale lock file
is never a problem. (They are advisory and local: on NFS, run writers from one machine.)
"""

from __future__ import annotations

import fcntl
import os
import sys
from collections.abc import Callable
from pathlib import Path

from bgmid.errors import BgmidError
from bgmid.paths import shown

LOCK_NAME = "write.lock"


class WriterLock:
    """The index folder's writer lock (see module docstring)."""

    def __init__(self, index: Path, wait: bool = True, on_wait: Callable[[str], None] | None = None):
        self.path = Path(index) / LOCK_NAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self.holder()
            who = f"another {holder[1]} (pid {holder[0]})" if holder else "another bgmid writer"
            if not wait:
                os.close(self._fd)
                raise BgmidError(
                    f"{who} is writing {shown(index)}; try again when it has finished (or leave out --no-wait "
                    "to wait for it)."
                ) from None
            msg = f"{who} is writing {shown(index)}; waiting..."
            (on_wait or (lambda m: print(m, file=sys.stderr, flush=True)))(msg)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()} {_command()}\n".encode(), 0)

    def holder(self) -> tuple[int, str] | None:
        """(pid, command) written by the current holder (for messages only; the lock itself is the kernel's)."""
        try:
            pid, *cmd = self.path.read_text().split()
            return int(pid), " ".join(cmd) or "bgmid writer"
        except (OSError, ValueError):
            return None

    def release(self) -> None:
        if self._fd is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                self._fd = None


def _command() -> str:
    """What this process is, for the other writer's message: 'bgmid index', 'bgmid remove', ..."""
    args = [a for a in sys.argv[1:] if not a.startswith("-")]
    prog = os.path.basename(sys.argv[0]) if sys.argv else ""
    if args and (prog == "bgmid" or prog == "__main__.py" or prog.endswith("cli")):
        return f"bgmid {args[0]}"
    return "bgmid writer"


def writer_active(index: Path) -> bool:
    """Whether some process holds the writer lock right now (a cheap, non-blocking probe that creates
    nothing: readers use it to tell a writer's work in progress from damage)."""
    try:
        fd = os.open(Path(index) / LOCK_NAME, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
