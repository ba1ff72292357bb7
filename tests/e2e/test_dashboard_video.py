"""The proctor dashboard in a real headless Chromium against a real ``proctor serve``:
a grid of the exam's sessions and the selected candidate's live picture.

A candidate page (Chromium's fake camera: a face, then the empty room) streams a session
of an exam; the dashboard, opened with a proctor token for the whole exam, must show its
card live, select it and play its picture in the ``<video>`` (relayed by the server over
the dashboard's own peer). A session created later for the same exam must appear as a
card, and selecting it once it streams must switch the picture to it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Server, serve

pytestmark = pytest.mark.browser

EXAM = "exam-video"
TIMEOUT_MS = 20_000


@dataclass
class Exam:
    server: Server
    browser: Any
    proctor_token: str
    first: str  # the session streaming from the start
    console: list[str] = field(default_factory=list)
    pages: list[Any] = field(default_factory=list)

    def session(self, candidate_id: str, exam_id: str = EXAM) -> tuple[str, str]:
        created = self.server.call("POST", "/api/v1/sessions",
                                   body={"candidate_id": candidate_id, "exam_id": exam_id})
        return str(created["session_id"]), str(created["candidate_token"])

    def candidate(self, session_id: str, token: str) -> Any:
        """The candidate's page, started at once (consent taken elsewhere)."""
        page = self.browser.new_page()
        page.on("console", lambda m: self.console.append(f"candidate {m.type}: {m.text}"))
        page.goto(f"{self.server.url}/static/candidate.html?session={session_id}"
                  f"&token={token}&autostart=1")
        self.pages.append(page)
        return page

    def wait(self, page: Any, predicate: str, arg: Any, what: str) -> None:
        """``page.wait_for_function``, failing with what the pages and the server said."""
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        try:
            page.wait_for_function(predicate, arg=arg, timeout=TIMEOUT_MS, polling=200)
        except PlaywrightTimeout:
            pytest.fail(f"{what}: not within {TIMEOUT_MS / 1000} s\n"
                        + "\n".join(self.console[-30:])
                        + f"\n--- server log ---\n{self.server.log_tail()}")


@pytest.fixture(scope="module")
def video_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from serve(tmp_path_factory.mktemp("dashboard-video"))


@pytest.fixture(scope="module")
def exam(video_server: Server, browser: Any) -> Iterator[Exam]:
    token = video_server.call("POST", "/api/v1/proctor-tokens",
                              body={"exam_id": EXAM})["proctor_token"]
    setup = Exam(video_server, browser, token, "")
    first, candidate_token = setup.session("cand-a")
    setup.first = first
    setup.candidate(first, candidate_token)
    yield setup
    for page in setup.pages:
        page.close()


@pytest.fixture(scope="module")
def dashboard(exam: Exam) -> Any:
    """The dashboard, opened once the first candidate streams."""
    exam.wait(exam.pages[0], "() => document.querySelector('#state').dataset.state === 'live'",
              None, "the first candidate's page live")
    page = exam.browser.new_page()
    page.on("console", lambda m: exam.console.append(f"dashboard {m.type}: {m.text}"))
    page.goto(f"{exam.server.url}/static/dashboard.html?token={exam.proctor_token}")
    exam.pages.append(page)
    return page


PLAYING = """(id) => {
  const v = document.querySelector('#live');
  return v.dataset.session === id && v.videoWidth > 0 && v.readyState >= 2 && !v.paused;
}"""
CARD_STATUS = """([id, status]) => {
  const card = document.querySelector(`.session[data-session-id="${id}"] .status`);
  return card !== null && card.textContent === status;
}"""


def test_the_live_session_is_selected_and_its_picture_plays(exam: Exam, dashboard: Any) -> None:
    exam.wait(dashboard, CARD_STATUS, [exam.first, "live"], "the first card live")
    card = dashboard.locator(f'.session[data-session-id="{exam.first}"]')
    assert "cand-a" in card.locator(".pick").text_content()
    assert card.locator(".review-link").get_attribute("href").startswith(
        f"review.html?session={exam.first}&token=")
    # Selected at load: the dashboard's peer was offered with "video" for it.
    exam.wait(dashboard, PLAYING, exam.first, "the first candidate's picture playing")
    assert card.get_attribute("class").split().count("selected") == 1
    assert dashboard.get_attribute("#state", "data-state") == "live"
    assert dashboard.locator("#picture-note").is_hidden()
    width = dashboard.evaluate("() => document.querySelector('#live').videoWidth")
    assert width > 0
    # Muted until the proctor asks for the sound.
    assert dashboard.evaluate("() => document.querySelector('#live').muted") is True
    dashboard.click("#sound")
    assert dashboard.evaluate("() => document.querySelector('#live').muted") is False
    assert dashboard.get_attribute("#sound", "aria-pressed") == "true"
    _screenshot(dashboard, "dashboard-video")


def test_a_later_session_of_the_exam_appears_and_can_be_watched(exam: Exam,
                                                                 dashboard: Any) -> None:
    exam.wait(dashboard, PLAYING, exam.first, "the first candidate's picture playing")
    second, candidate_token = exam.session("cand-b")
    # Created after the dashboard connected: it arrives as a "session" message.
    exam.wait(dashboard, CARD_STATUS, [second, "waiting"], "the later session's card")
    # The live one stays first, and selected.
    first_card = dashboard.evaluate("() => document.querySelector('#sessions .session')"
                                    ".dataset.sessionId")
    assert first_card == exam.first

    exam.candidate(second, candidate_token)
    exam.wait(dashboard, CARD_STATUS, [second, "live"], "the later session live")
    dashboard.click(f'.session[data-session-id="{second}"] .status')
    # Same node: {"type": "watch", "video": id} switches the relayed picture.
    exam.wait(dashboard, PLAYING, second, "the later candidate's picture playing")
    assert dashboard.get_attribute(f'.session[data-session-id="{second}"] .pick',
                                   "aria-pressed") == "true"
    assert dashboard.text_content("#selected-title") == "cand-b"

    # And back to the first one.
    dashboard.click(f'.session[data-session-id="{exam.first}"] .pick')
    exam.wait(dashboard, PLAYING, exam.first, "the first candidate's picture again")
    _screenshot(dashboard, "dashboard-two-sessions")


def test_a_dashboard_open_before_anyone_streams_gets_the_picture(exam: Exam) -> None:
    """Nothing live at load: no picture is asked for; the first session to go live is
    selected, and the page offers again with its ``video``."""
    token = exam.server.call("POST", "/api/v1/proctor-tokens",
                             body={"exam_id": "exam-later"})["proctor_token"]
    waiting, candidate_token = exam.session("cand-c", exam_id="exam-later")
    page = exam.browser.new_page()
    page.on("console", lambda m: exam.console.append(f"dashboard-2 {m.type}: {m.text}"))
    page.goto(f"{exam.server.url}/static/dashboard.html?token={token}")
    exam.pages.append(page)
    exam.wait(page, CARD_STATUS, [waiting, "waiting"], "the waiting session's card")
    assert page.evaluate("() => document.querySelector('#live').videoWidth") == 0

    exam.candidate(waiting, candidate_token)
    exam.wait(page, CARD_STATUS, [waiting, "live"], "the session live")
    exam.wait(page, PLAYING, waiting, "its picture playing")
    assert page.text_content("#selected-title") == "cand-c"


def _screenshot(page: Any, name: str) -> None:
    """Set TEST_SCREENSHOTS=<folder> to look at the page after a run."""
    folder = os.environ.get("TEST_SCREENSHOTS")
    if folder:
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)
