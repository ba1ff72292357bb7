"""Webhook routes and deliveries through the real app, a real SQLite store and a real
receiver on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from proctor.config import Config
from proctor.crypto import SealError
from proctor.outbound import EVENT_TYPES
from proctor.outbound.signing import verify_signature
from proctor.store import ApiKeyRecord
from signaling.auth import hash_api_key, new_api_key
from signaling.keys import STORE_KEY, WEBHOOK_CIPHER_KEY
from tests.conftest import make_config
from tests.outbound.receiver import Receiver, fail_first
from tests.peers import bearer

FAST_WEBHOOKS = {"retry_initial_seconds": 0.5, "poll_seconds": 0.1, "timeout_seconds": 2.0}


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return make_config(tmp_path, webhooks=FAST_WEBHOOKS)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.close()


async def register(client: TestClient, headers: dict[str, str], url: str,
                   **body: Any) -> dict[str, Any]:
    response = await client.post("/api/v1/webhooks", json={"url": url, **body},
                                 headers=headers)
    assert response.status == 201, await response.text()
    return dict(await response.json())


async def deliveries(client: TestClient, headers: dict[str, str],
                     webhook_id: str) -> list[dict[str, Any]]:
    response = await client.get(f"/api/v1/webhooks/{webhook_id}/deliveries", headers=headers)
    assert response.status == 200, await response.text()
    return list((await response.json())["deliveries"])


async def log_until(client: TestClient, headers: dict[str, str], webhook_id: str,
                    done: Any, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The deliveries log once ``done(log)`` holds."""
    deadline = time.monotonic() + timeout
    while not done(log := await deliveries(client, headers, webhook_id)):
        assert time.monotonic() < deadline, f"deliveries log never settled: {log}"
        await asyncio.sleep(0.02)
    return log


async def new_session(client: TestClient, headers: dict[str, str]) -> str:
    response = await client.post("/api/v1/sessions", json={"candidate_id": "c1"},
                                 headers=headers)
    assert response.status == 201, await response.text()
    return str((await response.json())["session_id"])


async def second_key(client: TestClient) -> dict[str, str]:
    key = new_api_key()
    await client.app[STORE_KEY].add_api_key(ApiKeyRecord("k2", "other", hash_api_key(key),
                                                         "2026-01-01T00:00:00Z",
                                                         tenant="other"))
    return bearer(key)


async def expect_error(response: Any, status: int) -> None:
    assert response.status == status, await response.text()
    assert (await response.json())["error"]["message"]


# Registering -------------------------------------------------------------------------

async def test_register_list_and_delete(client: TestClient,
                                        api_headers: dict[str, str]) -> None:
    made = await register(client, api_headers, "https://hooks.example.test/proctor")
    assert set(made) == {"webhook_id", "url", "events", "secret", "created_at"}
    assert made["events"] == list(EVENT_TYPES)  # default: every event
    assert made["secret"].startswith("whsec_") and len(made["secret"]) >= 40
    own = await register(client, api_headers, "http://127.0.0.1:9/x",
                         events=["report.ready", "session.ended", "report.ready"],
                         secret="my-own-secret-of-enough-length")
    assert own["events"] == ["session.ended", "report.ready"]
    assert own["secret"] == "my-own-secret-of-enough-length"

    listed = await (await client.get("/api/v1/webhooks", headers=api_headers)).json()
    assert [w["webhook_id"] for w in listed["webhooks"]] == [made["webhook_id"],
                                                             own["webhook_id"]]
    assert all("secret" not in w for w in listed["webhooks"])  # shown once, at creation

    deleted = await client.delete(f"/api/v1/webhooks/{made['webhook_id']}",
                                  headers=api_headers)
    assert (await deleted.json()) == {"webhook_id": made["webhook_id"], "deleted": True}
    await expect_error(await client.delete(f"/api/v1/webhooks/{made['webhook_id']}",
                                           headers=api_headers), 404)
    listed = await (await client.get("/api/v1/webhooks", headers=api_headers)).json()
    assert [w["webhook_id"] for w in listed["webhooks"]] == [own["webhook_id"]]
    spec = await (await client.get("/api/v1/openapi.json")).json()
    assert {"/webhooks", "/webhooks/{webhook_id}", "/webhooks/{webhook_id}/deliveries"} <= set(
        spec["paths"])


async def test_bad_input_is_400(client: TestClient, api_headers: dict[str, str]) -> None:
    for body in ({}, {"url": 5}, {"url": ""}, {"url": "ftp://example.test/x"},
                 {"url": "file:///etc/passwd"}, {"url": "http://"}, {"url": "example.test"},
                 {"url": "javascript:alert(1)"}, {"url": "https://a.test/" + "x" * 3000},
                 {"url": "https://a.test/", "events": ["session.exploded"]},
                 {"url": "https://a.test/", "events": []},
                 {"url": "https://a.test/", "events": "session.ended"},
                 {"url": "https://a.test/", "secret": "short"},
                 {"url": "https://a.test/", "secret": 12345678901234567890}):
        await expect_error(await client.post("/api/v1/webhooks", json=body,
                                             headers=api_headers), 400)
    await expect_error(await client.post("/api/v1/webhooks", data=b"{nope",
                                         headers=api_headers), 400)
    listed = await (await client.get("/api/v1/webhooks", headers=api_headers)).json()
    assert listed == {"webhooks": []}  # nothing was stored
    made = await register(client, api_headers, "https://a.test/")
    for limit in ("0", "101", "ten"):
        await expect_error(await client.get(
            f"/api/v1/webhooks/{made['webhook_id']}/deliveries?limit={limit}",
            headers=api_headers), 400)


async def test_only_integrators_and_only_their_own(client: TestClient,
                                                   api_headers: dict[str, str]) -> None:
    made = await register(client, api_headers, "https://a.test/hook")
    other = await second_key(client)
    path = f"/api/v1/webhooks/{made['webhook_id']}"
    await expect_error(await client.delete(path, headers=other), 404)
    await expect_error(await client.get(f"{path}/deliveries", headers=other), 404)
    assert (await (await client.get("/api/v1/webhooks", headers=other)).json()) == {
        "webhooks": []}
    await expect_error(await client.get("/api/v1/webhooks"), 401)
    created = await (await client.post("/api/v1/sessions", json={"candidate_id": "c"},
                                       headers=api_headers)).json()
    await expect_error(await client.get("/api/v1/webhooks",
                                        headers=bearer(created["proctor_token"])), 403)
    assert (await client.get(f"{path}/deliveries", headers=api_headers)).status == 200


# Deliveries --------------------------------------------------------------------------

async def test_a_refused_delivery_is_retried_and_logged(client: TestClient,
                                                        api_headers: dict[str, str]) -> None:
    receiver = await Receiver(fail_first).start()
    try:
        hook = await register(client, api_headers, receiver.url, events=["session.ended"])
        session_id = await new_session(client, api_headers)
        assert (await client.post(f"/api/v1/sessions/{session_id}/end",
                                  headers=api_headers)).status == 200
        await receiver.wait_for(1)
        # Between the attempts the log says when the retry is due.
        [waiting] = await log_until(client, api_headers, hook["webhook_id"],
                                    lambda log: log and log[0]["attempt_count"] == 1)
        first, retry = await receiver.wait_for(2)
        [done] = await log_until(client, api_headers, hook["webhook_id"],
                                 lambda log: log[0]["status"] != "pending")
    finally:
        await receiver.close()

    assert waiting["status"] == "pending" and waiting["next_retry_at"] is not None
    assert waiting["last_status_code"] == 500
    assert (first.status, retry.status) == (500, 200)
    assert first.event_id == retry.event_id == done["event_id"]
    assert retry.at - first.at >= 0.45  # webhooks.retry_initial_seconds
    for request in (first, retry):
        assert verify_signature(hook["secret"], request.headers, request.body)
        assert not verify_signature("whsec_not-the-secret-at-all", request.headers,
                                    request.body)
    assert retry.event["type"] == "session.ended" and retry.event["session_id"] == session_id
    assert (done["status"], done["attempt_count"], done["next_retry_at"]) == (
        "delivered", 2, None)
    assert [a["status_code"] for a in done["attempts"]] == [500, 200]
    assert done["attempts"][0]["error"].startswith("HTTP 500")
    assert all(set(a) == {"at", "status_code", "error", "duration_ms"}
               for a in done["attempts"])


async def test_ending_a_session_sends_session_ended_and_report_ready(
        client: TestClient, api_headers: dict[str, str], receiver: Receiver) -> None:
    hook = await register(client, api_headers, receiver.url)
    other = await register(client, await second_key(client), receiver.url)
    session_id = await new_session(client, api_headers)
    ended = await client.post(f"/api/v1/sessions/{session_id}/end", headers=api_headers)
    report = await ended.json()

    received = await receiver.wait_for(2)
    await asyncio.sleep(0.3)  # nothing else comes: the other key's webhook hears nothing
    assert sorted(r.event["type"] for r in receiver.received) == ["report.ready",
                                                                 "session.ended"]
    for request in received:
        assert verify_signature(hook["secret"], request.headers, request.body)
        assert not verify_signature(other["secret"], request.headers, request.body)
        assert request.event["session_id"] == session_id
    [ready] = receiver.of_type("report.ready")
    assert ready.event["data"]["report"]["recommendation"] == report["recommendation"]
    assert receiver.of_type("session.ended")[0].event["data"] == {"status": "ended"}
    log = await deliveries(client, api_headers, hook["webhook_id"])
    assert sorted(d["status"] for d in log) == ["delivered", "delivered"]


async def test_the_secret_is_sealed_at_rest_and_still_signs(
        client: TestClient, api_headers: dict[str, str], receiver: Receiver) -> None:
    secret = "s" * 32
    made = await register(client, api_headers, receiver.url, secret=secret,
                          events=["session.ended"])
    stored = await client.app[STORE_KEY].get_webhook(made["webhook_id"])
    assert stored is not None
    assert stored.secret.startswith("sealed:v1:") and secret not in stored.secret
    # A sealed secret copied onto another webhook's row does not open there.
    other = await register(client, api_headers, "https://elsewhere.example.test/")
    with pytest.raises(SealError):
        client.app[WEBHOOK_CIPHER_KEY].open(other["webhook_id"], stored.secret)
    session_id = await new_session(client, api_headers)
    assert (await client.post(f"/api/v1/sessions/{session_id}/end",
                              headers=api_headers)).status == 200
    [request] = await receiver.wait_for(1)
    assert verify_signature(secret, request.headers, request.body)
