"""Limits (issue 10, part 2): per address, per credential and per failed authentication,
each answered 429 with Retry-After and ``{error: {code: rate_limited}}``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from proctor.ratelimit import FailureWindow, TokenBucket, retry_after
from signaling.app import create_app
from tests.conftest import API_KEY, make_config

Client = Callable[..., Awaitable[TestClient]]
AUTH = {"Authorization": f"Bearer {API_KEY}"}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_refills_at_its_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(rate_per_second=2.0, burst=3, clock=clock)
    assert [bucket.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take("a") == pytest.approx(0.5)
    assert bucket.take("b") == 0.0  # keys are separate
    clock.now += 0.5
    assert bucket.take("a") == 0.0
    assert bucket.take("a", cost=2) == pytest.approx(1.0)
    assert bucket.take("a", cost=4) == float("inf")  # more than it can ever hold


def test_token_bucket_forgets_the_least_recent_key_beyond_its_bound() -> None:
    bucket = TokenBucket(1.0, 1, clock=Clock(), max_keys=2)
    for key in ("a", "b", "c"):
        bucket.take(key)
    assert bucket.take("a") == 0.0  # forgotten: a full bucket again
    assert bucket.take("c") > 0


def test_failure_window_blocks_until_the_oldest_failure_leaves() -> None:
    clock = Clock()
    window = FailureWindow(limit=2, window_seconds=10, clock=clock)
    window.fail("x")
    clock.now += 4
    window.fail("x")
    assert window.blocked_for("x") == pytest.approx(6)
    assert window.blocked_for("y") == 0
    clock.now += 6
    assert window.blocked_for("x") == 0


def test_retry_after_is_whole_seconds_within_an_hour() -> None:
    assert [retry_after(s) for s in (0.01, 1.0, 1.2, float("inf"))] == [1, 1, 2, 3600]


async def _app(tmp_path: Path, aiohttp_client: Client, **limits: Any) -> TestClient:
    return await aiohttp_client(create_app(make_config(tmp_path, limits=limits)))


def _assert_limited(response: Any, body: dict[str, Any]) -> None:
    assert response.status == 429
    assert int(response.headers["Retry-After"]) >= 1
    assert body["error"]["code"] == "rate_limited" and body["error"]["message"]


async def test_per_address_limit(tmp_path: Path, aiohttp_client: Client) -> None:
    client = await _app(tmp_path, aiohttp_client, address_burst=3,
                        address_requests_per_minute=1)
    statuses = [(await client.get("/api/v1/sessions", headers=AUTH)).status for _ in range(3)]
    assert statuses == [200, 200, 200]
    response = await client.get("/api/v1/sessions", headers=AUTH)
    _assert_limited(response, await response.json())
    assert int(response.headers["Retry-After"]) > 30  # one request a minute
    for path in ("/healthz", "/static/proctor.js"):  # not counted
        assert (await client.get(path)).status == 200


async def test_per_credential_limit(tmp_path: Path, aiohttp_client: Client) -> None:
    client = await _app(tmp_path, aiohttp_client, key_burst=2, key_requests_per_minute=1)
    for _ in range(2):
        assert (await client.get("/api/v1/sessions", headers=AUTH)).status == 200
    response = await client.get("/api/v1/sessions", headers=AUTH)
    _assert_limited(response, await response.json())
    other = {"Authorization": "Bearer another-key"}  # its own bucket: checked, refused 401
    assert (await client.get("/api/v1/sessions", headers=other)).status == 401


async def test_failed_authentications_lock_the_address_out(tmp_path: Path,
                                                           aiohttp_client: Client) -> None:
    client = await _app(tmp_path, aiohttp_client, failed_auth_max=3,
                        failed_auth_window_seconds=60)
    wrong = {"Authorization": "Bearer wrong-key"}
    for _ in range(3):
        assert (await client.get("/api/v1/sessions", headers=wrong)).status == 401
    # Now even the right key gets 429: the credential is not checked at all.
    response = await client.get("/api/v1/sessions", headers=AUTH)
    _assert_limited(response, await response.json())
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert (await client.get("/healthz")).status == 200  # probes always answer


async def test_a_trusted_proxy_names_the_client(tmp_path: Path,
                                                aiohttp_client: Client) -> None:
    client = await _app(tmp_path, aiohttp_client, failed_auth_max=1,
                        trusted_proxies=["127.0.0.1"])
    wrong = {"Authorization": "Bearer wrong-key", "X-Forwarded-For": "198.51.100.7"}
    assert (await client.get("/api/v1/sessions", headers=wrong)).status == 401
    assert (await client.get("/api/v1/sessions", headers={
        **AUTH, "X-Forwarded-For": "198.51.100.7"})).status == 429
    assert (await client.get("/api/v1/sessions", headers={
        **AUTH, "X-Forwarded-For": "203.0.113.9"})).status == 200


async def test_limits_can_be_switched_off(tmp_path: Path, aiohttp_client: Client) -> None:
    client = await _app(tmp_path, aiohttp_client, enabled=False, failed_auth_max=1)
    wrong = {"Authorization": "Bearer wrong-key"}
    assert [(await client.get("/api/v1/sessions", headers=wrong)).status
            for _ in range(3)] == [401, 401, 401]
