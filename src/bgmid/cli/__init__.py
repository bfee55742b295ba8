"""The ``bgmid`` command line: one entry point, one module per subcommand group.

Each module in :data:`COMMANDS` exposes ``register(subparsers)`` which adds its subcommand(s) and sets
``func`` on the parser; the function receives the parsed namespace and returns an exit status. No signal
processing or model logic lives here: the CLI only parses arguments and calls the library.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from bgmid import __version__

#: Subcommand modules, in the order ``bgmid --help`` lists them.
COMMANDS = (
    "bgmid.cli.library",  # index, identify, stats, remove
    "bgmid.cli.separation",  # separate, train
    "bgmid.cli.data",  # data fetch, add, mix, programme, info
    "bgmid.cli.models",  # models fetch, list (pretrained weights)
    "bgmid.cli.evaluate",  # evaluate
    "bgmid.cli.monitor",  # monitor
    "bgmid.cli.batch",  # batch: many programmes on a process pool or Ray
    "bgmid.cli.demo",  # demo: the whole job end to end
    "bgmid.cli.serve",  # serve: HTTP API and review page
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bgmid",
        description=(
            "Find which music plays under speech in broadcast audio. Typical use: "
            "'bgmid index --db lib/ MUSIC_FOLDER' once, then 'bgmid identify --db lib/ clip.wav' "
            "or 'bgmid monitor --db lib/ programme.mp4 --out cues.csv'."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"bgmid {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from bgmid.errors import BgmidError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except BgmidError as exc:
        print(f"bgmid {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"bgmid {args.command}: interrupted; completed work is kept, re-run to resume.", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
