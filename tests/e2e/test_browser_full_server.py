"""A full server, as a candidate's browser meets it: ``proctor serve`` with room for one
live session, a second candidate page opened beside the first.

The second page must say in plain words that the server is full and keep waiting at the
server's ``Retry-After`` pace (not fail, not give up after two minutes); once the first
session ends, it must go live on its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import Server, serve

pytestmark = pytest.mark.browser

LIVE_TIMEOUT_MS = 30_000
RETRY_AFTER_SECONDS = 5  # the page waits what the server says before it offers again


@pytest.fixture(scope="module")
def full_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from serve(tmp_path_factory.mktemp("full-server"), RTC__MAX_SESSIONS="1",
                     RTC__RETRY_AFTER_SECONDS=str(RETRY_AFTER_SECONDS))


def _candidate_page(server: Server, browser: Any) -> tuple[str, Any]:
    created = server.call("POST", "/api/v1/sessions", body={"candidate_id": "c"})
    page = browser.new_page()
    page.goto(f"{server.url}/static/candidate.html?session={created['session_id']}"
              f"&token={created['candidate_token']}&autostart=1")
    return created["session_id"], page


def test_a_full_server_is_waited_for_then_joined(full_server: Server, browser: Any) -> None:
    first_id, first = _candidate_page(full_server, browser)
    first.wait_for_selector('#state[data-state="live"]', timeout=LIVE_TIMEOUT_MS)

    second_id, second = _candidate_page(full_server, browser)
    second.wait_for_selector('#state[data-state="reconnecting"]', timeout=LIVE_TIMEOUT_MS)
    second.wait_for_function("document.querySelector('#reason').textContent.includes('full')",
                             timeout=LIVE_TIMEOUT_MS)
    assert "try again" in (second.text_content("#reason") or "")
    assert full_server.call("GET", f"/api/v1/sessions/{second_id}")["status"] == "created"

    full_server.call("POST", f"/api/v1/sessions/{first_id}/end", body={})
    first.wait_for_selector('#state[data-state="ended"]', timeout=LIVE_TIMEOUT_MS)
    # The next attempt comes after Retry-After, and this time there is room.
    second.wait_for_selector('#state[data-state="live"]',
                             timeout=(RETRY_AFTER_SECONDS + 15) * 1000)
    assert full_server.call("GET", f"/api/v1/sessions/{second_id}")["status"] == "live"
    second.close()
    first.close()
