"""Small pieces shared by the subcommands: common arguments and progress bars."""

from __future__ import annotations

import argparse
import os
import sys

from tqdm import tqdm


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


def resolve_separator(name: str, device: str = "cpu", command: str = "monitor"):
    """A separator from a CLI name; ``None`` for 'none' (and for 'auto' when no weights are installed)."""
    from bgmid.errors import BgmidError

    if name.lower() == "none":
        return None
    try:
        from bgmid.separation import DEFAULT_MODEL, load_separator
    except ImportError as exc:  # torch missing or separation not installed
        if name == "auto":
            return None
        raise BgmidError(f"separator '{name}' needs bgmid.separation (torch): {exc}. Use --separator none.") from exc
    if name == "auto":
        from bgmid.separation.registry import shipped_weights

        if not shipped_weights(DEFAULT_MODEL).exists():
            print(
                f"bgmid {command}: no weights for the default separator '{DEFAULT_MODEL}' are installed; "
                "matching the raw mix only (--separator none).", file=sys.stderr,
            )
            return None
        name = DEFAULT_MODEL
    return load_separator(name, device=device)
