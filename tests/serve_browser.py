"""A real server and a real browser for the review-page test and the screenshot script: uvicorn on 127.0.0.1 on a
free port in a thread, Playwright driving Debian's Chromium (Playwright's own browser download is not used)."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


def chromium_path() -> str | None:
    """Debian's Chromium (``apt-get install chromium``), or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running(app, timeout_s: float = 20.0) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1 in a thread; yields its base URL and stops it after."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    end = time.monotonic() + timeout_s
    while not server.started:
        if time.monotonic() > end or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout_s)


@contextmanager
def browser_page(width: int = 1280, height: int = 800):
    """A Chromium page (headless, audio allowed to start without a gesture) with downloads enabled."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), headless=True,
                                    args=["--autoplay-policy=no-user-gesture-required", "--no-sandbox"])
        try:
            context = browser.new_context(viewport={"width": width, "height": height}, accept_downloads=True)
            yield context.new_page()
        finally:
            browser.close()
