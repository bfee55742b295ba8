"""The review page in a real browser (Playwright + Debian's Chromium) against a real server on 127.0.0.1: sign in,
upload a programme and run its monitor job, play a cue (programme and reference audio served by range
requests), reject one, edit a boundary, add a cue, export CSV and JSON and check the files. Skipped, saying why,
when Chromium or Playwright is missing (``make install`` installs Chromium as root)."""

import csv
import json

import pytest
from serve_browser import browser_page, chromium_path, running
from serve_helpers import CUES, TOKEN, make_app, write_programme

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("playwright", reason="playwright is not installed (pip install -e '.[dev]')")
if chromium_path() is None:
    pytest.skip("chromium is not installed (apt-get install chromium, or make install as root)",
                allow_module_level=True)


def test_review_page_end_to_end(built_index, tmp_path):
    wav, truth = write_programme(tmp_path / "in")
    app = make_app(built_index, tmp_path / "data")
    with running(app) as base, browser_page() as page:
        requests, audio, errors = [], [], []
        page.on("request", lambda r: requests.append(r.url))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)
        page.on("response", lambda r: audio.append((r.url, r.status, r.request.headers.get("range")))
                if "/audio" in r.url else None)
        page.goto(base + "/")
        page.fill("#token", TOKEN)
        page.click("#login button")
        page.fill("#reviewer", "carol")
        page.dispatch_event("#reviewer", "change")
        # upload and monitor
        page.set_input_files("#upload-file", str(wav))
        page.set_input_files("#upload-truth", str(truth))
        page.select_option("#upload-separator", "none")
        page.click("#upload button")
        rows = page.locator("#cues tbody tr")
        rows.nth(len(CUES) - 1).wait_for(timeout=60_000)
        assert rows.count() == len(CUES)
        assert page.locator("#timeline rect.cue").count() == len(CUES)
        assert page.locator("#timeline rect.truth").count() == len(CUES)
        assert page.locator("#timeline polygon.mix").count() == 1
        page.locator("#jobs li.done").wait_for()
        assert page.inner_text("#jobs") == "show.wav: done"
        titles = [rows.nth(i).locator("td").nth(4).inner_text() for i in range(len(CUES))]
        assert titles == [f"track{i:02d}" for i, *_ in CUES]

        # play cue 2: the programme from its in point, the reference track from the matched offset
        rows.nth(1).click()
        tin = float(page.evaluate("state.programme.cues[1].programme_start_s"))
        tref = float(page.evaluate("state.programme.cues[1].track_start_s"))
        for player, t in (("prog-audio", tin), ("ref-audio", tref)):
            page.wait_for_function(f"() => document.getElementById('{player}').currentTime > {t + 0.3}",
                                   timeout=20_000)
        assert abs(page.evaluate("document.getElementById('ref-audio').currentTime") - tref) < 5
        assert any("/api/programmes/" in u and s == 206 for u, s, _ in audio), audio
        assert any("/api/tracks/" in u and s == 206 for u, s, _ in audio), audio
        page.keyboard.press("p")  # pause both
        page.wait_for_function("() => document.getElementById('prog-audio').paused")

        # reject cue 1 with the keyboard (k: previous, r: reject)
        page.keyboard.press("k")
        assert page.evaluate("state.selected") == 0
        page.keyboard.press("r")
        page.locator("#cues tbody tr.rejected").wait_for()
        assert rows.nth(0).locator(".badge").inner_text() == "rejected"
        # accept cue 3 (j j a) and move cue 2's in point with the editor
        page.keyboard.press("j")
        page.keyboard.press("j")
        page.keyboard.press("a")
        page.wait_for_function("() => state.programme.cues[2].status === 'accepted'")
        rows.nth(1).click()
        page.fill("#edit-in", "00:00:28.500")
        page.click("#edit-save")
        page.wait_for_function("() => state.programme.cues[1].tc_in === '00:00:28.500'")
        assert rows.nth(1).locator("td").nth(2).inner_text() == "00:00:28.500"
        # add a cue the detector missed
        page.fill("#add-in", "71")
        page.fill("#add-out", "00:01:14.000")
        page.fill("#add-track", "track01")  # a title (the list offers "track01 [id]")
        page.click("#add button")
        rows.nth(len(CUES)).wait_for()
        page.locator("#audit-box summary").click()
        assert page.locator("#audit li").count() == 4
        assert "carol" in page.locator("#audit li").first.inner_text()

        # export: the reviewed cue sheet as the browser saves it
        with page.expect_download() as dl:
            page.click("#export-csv")
        path = dl.value.path()
        with open(path, newline="") as f:
            exported = list(csv.DictReader(f))
        assert dl.value.suggested_filename == "show.cues.csv"
        assert [r["title"] for r in exported] == ["track03", "track05", "track01"]
        assert exported[0]["tc_in"] == "00:00:28.500" and exported[0]["programme_start_s"] == "28.5"
        assert [r["seq"] for r in exported] == ["1", "2", "3"]
        with page.expect_download() as dl:
            page.click("#export-json")
        doc = json.loads(open(dl.value.path()).read())
        assert [c["title"] for c in doc["cues"]] == ["track03", "track05", "track01"]
        assert doc["cues"][2]["tc_out"] == "00:01:14.000"

        # everything came from this server; the token is in sessionStorage, not in any URL
        assert requests and all(u.startswith(base) or u.startswith("blob:") for u in requests), requests
        assert not any(TOKEN in u for u in requests)
        assert errors == [], errors  # no script error, nothing the Content-Security-Policy blocked
        assert page.evaluate("sessionStorage.getItem('bgmid-token')") == TOKEN
        # a reload keeps the session: no second sign-in
        page.reload()
        page.locator("#programmes li").first.wait_for()
        assert page.locator("#login").is_hidden()
        # the API page renders the OpenAPI description by itself
        page.goto(base + "/docs")
        page.locator(".op").nth(10).wait_for()
        assert "/api/programmes/{pid}/cues/{n}" in page.inner_text("#ops")
        assert errors == [], errors
