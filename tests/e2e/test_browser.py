"""A real headless Chromium against a real ``proctor serve``.

Chromium's fake camera plays real photos: a face for 2 s, then the room with nobody
in it. The candidate page (built on static/proctor.js) must show the ``face_absent``
flag the server raises and the server must have stored it; the proctor dashboard, in
another page of the same browser, must show the same alert.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Server

pytestmark = pytest.mark.browser

FLAG_TIMEOUT_MS = 30_000


@dataclass
class LiveSession:
    session_id: str
    candidate_token: str
    proctor_token: str
    candidate: Any  # the candidate's playwright Page
    console: list[str]  # what the pages logged, for failure messages


@pytest.fixture(scope="module")
def live_session(proctor_server: Server, browser: Any) -> Iterator[LiveSession]:
    """A session created through the API and started by the candidate page."""
    created = proctor_server.call("POST", "/api/v1/sessions", body={"candidate_id": "c1"})
    console: list[str] = []
    page = browser.new_page()
    page.on("console", lambda m: console.append(f"candidate {m.type}: {m.text}"))
    page.goto(f"{proctor_server.url}/static/candidate.html?session={created['session_id']}"
              f"&token={created['candidate_token']}&autostart=1")
    yield LiveSession(created["session_id"], created["candidate_token"],
                      created["proctor_token"], page, console)
    page.close()


def _wait_for(page: Any, selector: str, server: Server, session: LiveSession) -> Any:
    """The element, or a failure that says what the page and the server were doing."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        return page.wait_for_selector(selector, timeout=FLAG_TIMEOUT_MS)
    except PlaywrightTimeout:
        state = session.candidate.get_attribute("#state", "data-state")
        pytest.fail(f"no {selector} within {FLAG_TIMEOUT_MS / 1000} s; candidate state "
                    f"{state!r}\n" + "\n".join(session.console[-20:]) +
                    f"\n--- server log ---\n{server.log_tail()}")


def _screenshot(page: Any, name: str) -> None:
    """Set TEST_SCREENSHOTS=<folder> to look at the pages after a run."""
    folder = os.environ.get("TEST_SCREENSHOTS")
    if folder:
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def test_candidate_page_shows_the_flag_the_server_stored(
        proctor_server: Server, live_session: LiveSession) -> None:
    page = live_session.candidate
    flag = _wait_for(page, '#flags [data-flag-kind="face_absent"]', proctor_server,
                     live_session)
    assert flag.get_attribute("data-severity") in ("low", "moderate", "high", "warning")
    assert page.get_attribute("#state", "data-state") == "live"
    _screenshot(page, "candidate")

    # The page heard of the flag over the DataChannel; the store has it too.
    deadline = time.monotonic() + 5
    while True:
        flags = proctor_server.call(
            "GET", f"/api/v1/sessions/{live_session.session_id}/flags")["flags"]
        if any(f["kind"] == "face_absent" for f in flags) or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    assert "face_absent" in {f["kind"] for f in flags}


def test_dashboard_shows_the_same_alert(proctor_server: Server, browser: Any,
                                        live_session: LiveSession) -> None:
    page = browser.new_page()
    page.on("console", lambda m: live_session.console.append(f"dashboard {m.type}: {m.text}"))
    page.goto(f"{proctor_server.url}/static/dashboard.html?token={live_session.proctor_token}")
    selector = (f'#alerts [data-flag-kind="face_absent"]'
                f'[data-session-id="{live_session.session_id}"]')
    alert = _wait_for(page, selector, proctor_server, live_session)
    assert alert.get_attribute("data-severity") in ("low", "moderate", "high")
    assert page.get_attribute("#state", "data-state") == "live"
    card = page.locator(f'.session[data-session-id="{live_session.session_id}"] .status')
    assert card.text_content() == "live"
    _screenshot(page, "dashboard")
    page.close()
