"""The review page in a real headless Chromium against a real ``proctor serve``.

A real session first: Chromium's fake camera shows a face for 2 s, then the empty room
for 10 s, so the server raises ``face_absent`` and writes its H.264 clip. Once the flag
has closed and its clip is served, the session is ended. On the review page the clip must
play, and dismissing every flag must turn the recommendation to PASS while the machine's
(before review) stays as it was; the decision form records a decision.
"""

from __future__ import annotations

import os
import sqlite3
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Server, serve

pytestmark = pytest.mark.browser

FLAG_TIMEOUT_S = 90
PAGE_TIMEOUT_MS = 20_000


@dataclass
class EndedSession:
    session_id: str
    proctor_token: str
    flags: list[dict[str, Any]]


def _screenshot(page: Any, name: str) -> None:
    """Set TEST_SCREENSHOTS=<folder> to look at the page after a run."""
    folder = os.environ.get("TEST_SCREENSHOTS")
    if folder:
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


@pytest.fixture(scope="module")
def review_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from serve(tmp_path_factory.mktemp("review-server"))


def _clip_served(server: Server, clip_id: str) -> bool:
    request = urllib.request.Request(f"{server.url}/api/v1/clips/{clip_id}",
                                     headers={"Authorization": f"Bearer {server.api_key}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return bool(response.status == 200 and response.read(12)[4:8] == b"ftyp")
    except urllib.error.HTTPError:
        return False  # written a few seconds after its flag closes


def _closed_flag_with_clip(server: Server, session_id: str) -> bool:
    """A high face_absent flag (about 10 s away; a loaded machine may make an earlier one
    only moderate), closed, whose clip the server serves."""
    flags = server.call("GET", f"/api/v1/sessions/{session_id}/flags")["flags"]
    return any(f["kind"] == "face_absent" and f["severity"] == "high" and f["end"] is not None
               and f["evidence"]["clip_id"] and _clip_served(server, f["evidence"]["clip_id"])
               for f in flags)


@pytest.fixture(scope="module")
def ended_session(review_server: Server, browser: Any) -> EndedSession:
    created = review_server.call("POST", "/api/v1/sessions", body={"candidate_id": "c-rev"})
    sid = created["session_id"]
    candidate = browser.new_page()
    candidate.goto(f"{review_server.url}/static/candidate.html?session={sid}"
                   f"&token={created['candidate_token']}&autostart=1")
    deadline = time.monotonic() + FLAG_TIMEOUT_S
    while not _closed_flag_with_clip(review_server, sid):
        if time.monotonic() > deadline:
            pytest.fail(f"no closed high face_absent flag with a clip in {FLAG_TIMEOUT_S} s\n"
                        f"--- server log ---\n{review_server.log_tail()}")
        time.sleep(0.5)
    review_server.call("POST", f"/api/v1/sessions/{sid}/end", body={})
    candidate.close()
    flags = review_server.call("GET", f"/api/v1/sessions/{sid}/flags")["flags"]
    _add_transcript(review_server, sid, flags)
    return EndedSession(sid, created["proctor_token"], flags)


def _add_transcript(server: Server, session_id: str, flags: list[dict[str, Any]]) -> None:
    """The fake microphone only hisses: write a few timed segments into the server's own
    SQLite file, one of them spanning the start of the flag the page shows first (the
    first with a clip)."""
    start = next(f for f in flags if f["evidence"]["clip_id"])["start"]
    rows = [(f"t{i}", session_id, at, at + 1.0, text, 0.9, "en", "2026-01-01T00:00:00Z")
            for i, (at, text) in enumerate([(0.0, "hello, I am ready"),
                                            (start - 0.5, "just a moment please"),
                                            (start + 5.0, "back again")])]
    with sqlite3.connect(server.log.parent / "data" / "proctor.db", timeout=10) as conn:
        conn.executemany("INSERT INTO transcripts (segment_id, session_id, media_start, "
                         "media_end, text, confidence, language, created_at) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)


def test_the_review_page_plays_the_clip_and_dismissing_changes_the_advice(
        review_server: Server, browser: Any, ended_session: EndedSession) -> None:
    sid, flags = ended_session.session_id, ended_session.flags
    console: list[str] = []
    page = browser.new_page()
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    page.goto(f"{review_server.url}/static/review.html?session={sid}"
              f"&token={ended_session.proctor_token}")
    page.wait_for_selector("#ai-recommendation.PASS, #ai-recommendation.REVIEW, "
                           "#ai-recommendation.FAIL", timeout=PAGE_TIMEOUT_MS)
    before = page.text_content("#ai-recommendation")
    assert before in ("REVIEW", "FAIL"), (flags, console)  # one high flag at least
    assert page.text_content("#recommendation") == before
    assert page.locator("#flags tr").count() == len(flags)
    assert page.locator("#timeline .bar").count() == len(flags)
    assert page.locator("#timeline .risk").count() == 1

    # The first flag with a clip is selected: its H.264 MP4 decodes and plays.
    page.wait_for_function("(() => { const v = document.querySelector('#clip');"
                           " return v.readyState >= 2 && v.videoWidth > 0; })()",
                           timeout=PAGE_TIMEOUT_MS)
    page.evaluate("document.querySelector('#clip').play()")
    page.wait_for_function("document.querySelector('#clip').currentTime > 0",
                           timeout=PAGE_TIMEOUT_MS)
    # The page selects the first flag with a clip. On this media that is face_absent,
    # unless the phone stage fell for the astronaut's chest badge first (pinned by
    # tests/detectors/test_objects.py's strict xfail): the page is right either way.
    first = next(f for f in flags if f["evidence"]["clip_id"])
    assert page.get_attribute("#flags tr[aria-current='true']", "data-flag-id") \
        == first["flag_id"], flags
    assert any(f["kind"] == "face_absent" and f["evidence"]["clip_id"] for f in flags), flags
    # The transcript beside it, at the flag's time.
    page.wait_for_selector("#transcript li.current", timeout=PAGE_TIMEOUT_MS)
    assert page.locator("#transcript li").count() == 3
    assert "just a moment please" in (page.text_content("#transcript li.current") or "")
    _screenshot(page, "review-before")

    for flag in flags:  # dismiss each, by its own row's button, as a reviewer would
        row = f'#flags tr[data-flag-id="{flag["flag_id"]}"]'
        page.fill(f"{row} input.note-input", "not a real absence")
        page.click(f"{row} button.dismiss")
        page.wait_for_selector(f'{row}[data-verdict="dismissed"]', timeout=PAGE_TIMEOUT_MS)
    page.wait_for_selector("#recommendation.PASS", timeout=PAGE_TIMEOUT_MS)
    assert page.text_content("#ai-recommendation") == before  # the machine's, kept
    assert page.text_content("#count-dismissed") == str(len(flags))
    assert page.text_content("#count-pending") == "0"
    assert page.locator("#timeline .bar.dismissed").count() == len(flags)

    page.check('input[name="decision"][value="pass"]')
    page.fill("#decision-note", "reviewed the clip")
    page.click("#decide")
    page.wait_for_function("document.querySelector('#decision-shown').textContent"
                           ".startsWith('PASS')", timeout=PAGE_TIMEOUT_MS)
    page.wait_for_function("document.querySelectorAll('#audit li').length >= "
                           f"{len(flags) + 1}", timeout=PAGE_TIMEOUT_MS)
    assert not page.text_content("#reason"), console
    _screenshot(page, "review")
    page.close()

    report = review_server.call("GET", f"/api/v1/sessions/{sid}/report",
                                token=ended_session.proctor_token)
    assert (report["ai_recommendation"], report["recommendation"]) == (before, "PASS")
    assert report["decision"]["decision"] == "pass"
    assert report["decision"]["by"].startswith("proctor:")
    assert {f["review"]["note"] for f in report["flags"]} == {"not a real absence"}
