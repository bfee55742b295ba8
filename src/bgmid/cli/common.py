"""Small pieces shared by the subcommands: common arguments and progress bars."""

from __future__ import annotations

import argparse
import os
import sys

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
