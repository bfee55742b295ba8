"""``bgmid serve``: the HTTP API and the cue-sheet review page (needs the ``serve`` extra)."""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
from pathlib import Path

from bgmid.cli.common import add_db_argument


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="HTTP API and review page for cue sheets",
        description=(
            "Serve the index over HTTP: identify uploaded clips, monitor programmes in background jobs, and "
            "review their cue sheets in the browser (listen to each cue beside its reference track, accept, "
            "reject, fix boundaries, add missed cues, export CSV/JSON). Every API call needs the bearer token; "
            "every edit is kept in an audit trail. State lives in DATA/bgmid-serve.sqlite. See docs/serve.md."
        ),
        epilog="Example: bgmid serve --db lib/ --data /srv/bgmid --token-file tokens.txt; then open "
        "http://127.0.0.1:8000/ and enter the token.",
    )
    add_db_argument(p)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 opens it to the "
                   "network, put it behind a TLS proxy then)")
    p.add_argument("--port", type=int, default=8000, metavar="PORT", help="TCP port (default %(default)s)")
    tok = p.add_mutually_exclusive_group()
    tok.add_argument("--token", metavar="T", help="the bearer token clients must send (at least 8 characters; "
                     "default: a random one, printed at start)")
    tok.add_argument("--token-file", metavar="F",
                     help="tokens, one per line, 'TOKEN' or 'NAME TOKEN' (NAME is who the audit trail records)")
    p.add_argument("--data", action="append", metavar="DIR",
                   help="data folder: uploads, generated files and the state file go in the first; monitor "
                   "'path's must lie inside one of them (repeat for more read-only roots; default ./bgmid-data)")
    p.add_argument("--max-upload-mb", type=float, default=500.0, metavar="N",
                   help="largest request body in MB (10^6 bytes); larger uploads get HTTP 413 (default %(default)s)")
    p.add_argument("--workers", type=int, default=1, metavar="N", help="monitor jobs run at once (default %(default)s)")
    p.add_argument("--pool", choices=("process", "thread"), default="process",
                   help="run jobs in worker processes (default: isolated, parallel) or threads")
    p.add_argument("--cors-origin", action="append", default=[], metavar="URL",
                   help="allow browser pages from this origin to call the API (default: none, CORS off)")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    from bgmid.errors import BgmidError

    missing = [m for m in ("fastapi", "uvicorn", "multipart") if importlib.util.find_spec(m) is None]
    if missing:
        raise BgmidError(f"bgmid serve needs {', '.join(missing)}: pip install 'bgmid[serve]'")
    import uvicorn

    from bgmid.index import open_index
    from bgmid.serve.app import ServeConfig, create_app
    from bgmid.serve.security import Tokens

    if not os.path.isdir(args.db):
        raise BgmidError(f"--db {args.db}: no index there (create it with 'bgmid index --db {args.db} MUSIC').")
    with open_index(args.db) as store:  # fails now, with its own message, if it is not a readable index
        n_tracks = store.stats()["tracks"]
    if args.token is not None and len(args.token) < 8:
        raise BgmidError("--token: use at least 8 characters.")
    if args.token:
        tokens, shown_token = Tokens.single(args.token), None
    elif args.token_file:
        tokens, shown_token = Tokens.from_file(args.token_file), None
    else:
        tokens = Tokens.generate()
        shown_token = next(iter(tokens.by_token))
    data = [Path(d) for d in (args.data or ["bgmid-data"])]
    for d in data[1:]:
        if not d.is_dir():
            raise BgmidError(f"--data {d}: no such folder.")
    # the server's temporary files (the multipart parser spools uploads over 1 MB) stay under --data too
    tmp = data[0] / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    os.environ["TMPDIR"] = str(tmp.resolve())
    tempfile.tempdir = None  # re-read TMPDIR
    config = ServeConfig(db=Path(args.db), data=data, tokens=tokens, max_upload_mb=args.max_upload_mb,
                         workers=max(1, args.workers), pool=args.pool, cors_origins=args.cors_origin)
    app = create_app(config)
    print(f"bgmid serve: {n_tracks} tracks in {args.db}; data in {data[0]}; http://{args.host}:{args.port}/",
          file=sys.stderr, flush=True)
    if shown_token:
        print(f"bgmid serve: token (give it to the review page or send 'Authorization: Bearer ...'): {shown_token}",
              file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
