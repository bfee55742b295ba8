"""Small pieces shared by the subcommands: common arguments and progress bars."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from tqdm import tqdm

from bgmid.separation.registry import resolve_separator  # noqa: F401  (moved to bgmid.separation)


def add_db_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--db",
        required=True,
        metavar="DIR",
        help="index folder (created by 'bgmid index'; embedded, no server needed)",
    )


def progress(total: int | None = None, desc: str = "", unit: str = "it", **kw) -> tqdm:
    """A progress bar on stderr for humans; silent when stderr is not a terminal (logs, pipes, CI)."""
    disable = not sys.stderr.isatty() and not os.environ.get("BGMID_PROGRESS")
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=disable, dynamic_ncols=True, **kw)


@contextmanager
def audio_warnings(command: str) -> Iterator[None]:
    """Show :class:`bgmid.audio.AudioWarning` (a truncated or damaged input) as one line on stderr,
    ``bgmid COMMAND: warning: ...``, as soon as it is raised; other warnings are shown as usual."""
    import warnings

    from bgmid.audio import AudioWarning

    with warnings.catch_warnings():
        warnings.simplefilter("always", AudioWarning)
        shown_before = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if issubclass(category, AudioWarning):
                print(f"bgmid {command}: warning: {message}", file=sys.stderr, flush=True)
            else:
                shown_before(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield
