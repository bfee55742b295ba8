"""What keeps the review server safe to run: tokens, allowed roots, upload names and sizes, signed audio URLs.

* **Tokens.** Every ``/api`` call carries ``Authorization: Bearer TOKEN``; tokens are compared in constant time.
  A token file holds one token per line, optionally named (``alice s3cr3t``): the name is who the audit trail
  records. Without a token the server generates one and prints it.
* **Roots.** A client-given path is resolved with every symlink followed (``os.path.realpath``) and must then lie
  inside one of the allowed roots (the ``--data`` folders): ``../`` tricks, absolute paths elsewhere and symlinks
  that point outside are all refused the same way, before anything is opened.
* **Uploads.** A client's file name is never used as a path: uploads go to ``<data>/uploads/<random id>/`` under a
  sanitised name. Request bodies over the limit are refused with 413 as soon as the limit is passed (from the
  declared ``Content-Length``, or while the body streams in).
* **Audio URLs.** ``<audio>`` elements cannot send a header, so the API hands out audio URLs signed with a
  per-process secret (HMAC-SHA256 of the path and an expiry time): such a URL plays that one file until it
  expires, and reveals nothing about the token.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from fastapi import HTTPException

from bgmid.errors import BgmidError

__all__ = ["BodyLimit", "SECURITY_HEADERS", "SecurityHeaders", "TokenGate", "Tokens", "UrlSigner", "resolve_under",
           "safe_name"]


@dataclass(frozen=True)
class Tokens:
    """Bearer tokens and the names they go by in the audit trail."""

    by_token: dict[str, str]  #: token -> name

    @classmethod
    def single(cls, token: str, name: str = "token") -> Tokens:
        return cls({token: name})

    @classmethod
    def generate(cls) -> Tokens:
        return cls.single(secrets.token_urlsafe(24))

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> Tokens:
        """Lines ``TOKEN`` or ``NAME TOKEN``; blank lines and ``#`` comments skipped."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise BgmidError(f"--token-file {path}: cannot read it ({exc.strerror}).") from None
        out: dict[str, str] = {}
        for i, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) > 2:
                raise BgmidError(f"--token-file {path}, line {i}: write 'TOKEN' or 'NAME TOKEN'.")
            name, token = (parts[0], parts[1]) if len(parts) == 2 else (f"token{len(out) + 1}", parts[0])
            if len(token) < 8:
                raise BgmidError(f"--token-file {path}, line {i}: a token needs at least 8 characters.")
            out[token] = name
        if not out:
            raise BgmidError(f"--token-file {path}: no token in it.")
        return cls(out)

    def name_of(self, authorization: str | None) -> str | None:
        """The token's name for an ``Authorization`` header value, or None when it is missing or wrong."""
        if not authorization or not authorization.lower().startswith("bearer "):
            return None
        given = authorization[7:].strip().encode()
        found = None
        for token, name in self.by_token.items():  # every token compared, in constant time each
            if hmac.compare_digest(given, token.encode()):
                found = name
        return found


def resolve_under(path: str, roots: list[Path]) -> Path:
    """``path`` (absolute, or relative to the first root) with symlinks resolved, if it lies inside one of the
    ``roots``; otherwise a 403. The check is on the resolved path, so a symlink inside a root that points
    outside it is refused like ``../../etc/passwd``."""
    if not path or "\x00" in path:
        raise HTTPException(400, "give a path")
    p = Path(path)
    if not p.is_absolute():
        p = roots[0] / p
    real = Path(os.path.realpath(p))
    for root in roots:
        r = Path(os.path.realpath(root))
        if real == r or r in real.parents:
            return real
    raise HTTPException(403, f"{path}: outside the allowed data folders")


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(filename: str | None, default: str = "upload") -> str:
    """A client's file name reduced to a harmless one: its last component, ``[A-Za-z0-9._-]`` only, no leading
    dot, at most 100 characters (the extension kept, since it tells the decoder and the browser the format)."""
    base = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    base = _UNSAFE.sub("_", base).lstrip(".")
    if not base.strip("_"):
        return default
    stem, dot, ext = base.rpartition(".")
    if dot and len(ext) <= 8 and stem:
        return stem[: 100 - len(ext) - 1] + "." + ext
    return base[:100]


class UrlSigner:
    """Signed, expiring URLs for the audio endpoints (see the module docstring)."""

    def __init__(self, secret: bytes | None = None, lifetime_s: float = 12 * 3600):
        self.secret = secret or secrets.token_bytes(32)
        self.lifetime_s = lifetime_s

    def _sig(self, path: str, exp: int) -> str:
        return hmac.new(self.secret, f"{path}|{exp}".encode(), hashlib.sha256).hexdigest()[:32]

    def sign(self, path: str) -> str:
        exp = int(time.time() + self.lifetime_s)
        return f"{path}?exp={exp}&sig={self._sig(path, exp)}"

    def valid(self, path: str, exp: str | None, sig: str | None) -> bool:
        if not exp or not sig or not exp.isdigit() or int(exp) < time.time():
            return False
        return hmac.compare_digest(sig, self._sig(path, int(exp)))


class TokenGate:
    """ASGI middleware: ``/api`` requests without a valid token get 401 before their body is read, so nobody
    without a token can make the server receive an upload. The audio routes (``open_paths``, a regular
    expression) are left to their own check, which also accepts signed URLs."""

    def __init__(self, app, tokens: Tokens, open_paths: str):
        self.app = app
        self.tokens = tokens
        self.open_paths = re.compile(open_paths)

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "")
        if scope["type"] == "http" and path.startswith("/api/") and not self.open_paths.fullmatch(path):
            auth = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
            if self.tokens.name_of(auth) is None:
                return await _send_json(send, 401, "give 'Authorization: Bearer TOKEN' (printed when bgmid serve "
                                        "started)", [(b"www-authenticate", b"Bearer")])
        return await self.app(scope, receive, send)


#: Headers on every response. The CSP lets the pages load only what this server serves (no CDN, no inline
#: script), ``nosniff`` stops browsers from guessing types, ``no-referrer`` keeps signed audio URLs out of
#: Referer headers, ``frame-ancestors 'none'`` stops other sites from framing the review page.
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; "
                                 b"object-src 'none'; base-uri 'none'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]


class SecurityHeaders:
    """ASGI middleware adding :data:`SECURITY_HEADERS` to every response."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def with_headers(msg):
            if msg["type"] == "http.response.start":
                msg = {**msg, "headers": [*msg.get("headers", []), *SECURITY_HEADERS]}
            await send(msg)

        return await self.app(scope, receive, with_headers)


async def _send_json(send, status: int, detail: str, headers: list | None = None) -> None:
    data = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            (b"connection", b"close"), *(headers or [])]})
    await send({"type": "http.response.body", "body": data})


class PayloadTooLarge(HTTPException):
    """Raised while a body streams in past the limit (an HTTPException, so the framework passes it on)."""

    def __init__(self, limit: int):
        super().__init__(413, f"request body over the limit of {limit // 1_000_000} MB (--max-upload-mb)")


class BodyLimit:
    """ASGI middleware: 413 for request bodies over ``max_bytes``, by ``Content-Length`` before reading, or by
    counting while a body without one streams in."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._refuse(send)
        seen = 0
        started = False

        async def counted():
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max_bytes:
                    raise PayloadTooLarge(self.max_bytes)
            return msg

        async def watched(msg):
            nonlocal started
            started = started or msg["type"] == "http.response.start"
            await send(msg)

        try:
            await self.app(scope, counted, watched)
        except PayloadTooLarge:
            if not started:
                await self._refuse(send)

    async def _refuse(self, send) -> None:
        await _send_json(send, 413, PayloadTooLarge(self.max_bytes).detail)
