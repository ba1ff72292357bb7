"""The outlet and the delivery worker on a real SQLite store and a real receiver."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from proctor.config import WebhooksConfig
from proctor.outbound import EVENT_TYPES
from proctor.outbound.addresses import AddressPolicy
from proctor.outbound.delivery import DeliveryWorker, next_state, retry_delay
from proctor.outbound.signing import verify_signature
from proctor.outbound.webhooks import WebhookOutlet, new_webhook, sealed, webhook_cipher
from proctor.store.base import DeliveryRecord, SessionRecord, Store, WebhookRecord
from proctor.store.outbox import StoreOutbox
from proctor.store.sqlite import SqliteStore
from tests.outbound.receiver import Receiver, fail_first

FAST = WebhooksConfig(timeout_seconds=1.0, retry_initial_seconds=0.2, retry_max_seconds=1.0,
                      poll_seconds=0.05, lease_seconds=5.0, concurrency=4,
                      allowed_networks=("127.0.0.0/8",))  # the receivers are on loopback
CIPHER = webhook_cipher(b"delivery-test-server-secret")


def session(owner: str | None = "k1", session_id: str = "s1") -> SessionRecord:
    # ``owner`` is the tenant here: webhooks hear of their tenant's sessions.
    return SessionRecord(session_id=session_id, candidate_id="c1",
                         created_at="2024-01-01T00:00:00.000000Z", api_key_id=owner,
                         tenant=owner or "nobody")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = SqliteStore(tmp_path / "proctor.db")
    await s.open()
    yield s
    await s.close()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.close()


@pytest.fixture
async def worker(store: Store) -> AsyncIterator[DeliveryWorker]:
    w = DeliveryWorker(store, FAST, CIPHER)
    await w.start()
    yield w
    await w.close()


async def register(store: Store, url: str, owner: str = "k1",
                   events: list[str] | None = None) -> WebhookRecord:
    """A webhook stored as the app stores it (secret sealed); returned in the clear."""
    webhook = await new_webhook(owner, {"url": url, "events": events},
                                AddressPolicy(FAST.allowed_networks))
    await store.add_webhook(sealed(webhook, CIPHER))
    return webhook


async def settled(store: Store, webhook_id: str, timeout: float = 10.0) -> DeliveryRecord:
    """The webhook's one delivery once it is no longer pending."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        [delivery] = await store.list_deliveries(webhook_id)
        if delivery.status != "pending":
            return delivery
        await asyncio.sleep(0.05)
    raise AssertionError(f"still pending after {timeout} s: {delivery}")


# The schedule -----------------------------------------------------------------------

def test_backoff_doubles_from_the_initial_delay_up_to_the_cap() -> None:
    config = WebhooksConfig()
    assert [retry_delay(n, config) for n in range(1, 11)] == [
        10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600]
    assert retry_delay(10_000, config) == 3600


def test_after_an_attempt_delivered_retry_or_give_up() -> None:
    config = WebhooksConfig()
    created = "2024-01-01T00:00:00.000000Z"
    start = 1_704_067_200.0  # that moment, in unix seconds
    pending = DeliveryRecord(delivery_id="d1", webhook_id="w1", event_id="e1",
                             type="session.ended", session_id="s1", body="{}",
                             status="pending", attempts=0, next_attempt_at=start,
                             created_at=created, lease_until=start + 30)

    ok = next_state(pending, 204, None, config, now=start + 1)
    assert (ok.status, ok.attempts, ok.lease_until, ok.last_status_code) == (
        "delivered", 1, None, 204)
    assert ok.delivered_at is not None

    retry = next_state(replace(pending, attempts=2), 500, "HTTP 500", config, now=start + 60)
    assert (retry.status, retry.attempts, retry.next_attempt_at) == ("pending", 3, start + 100)
    assert (retry.last_status_code, retry.last_error) == (500, "HTTP 500")

    late = next_state(replace(pending, attempts=30), None, "refused", config,
                      now=start + 86_400 - 100)  # the next wait would pass the 24 h
    assert late.status == "failed"


# The outlet --------------------------------------------------------------------------

async def test_emit_stores_one_delivery_per_interested_webhook_of_the_owner(
        store: Store) -> None:
    everything = await register(store, "https://a.test/hook")
    ended_only = await register(store, "https://b.test/hook", events=["session.ended"])
    flags_only = await register(store, "https://c.test/hook", events=["flag.opened"])
    other_key = await register(store, "https://d.test/hook", owner="k2")
    wakes: list[int] = []
    outlet = WebhookOutlet(store, wake=lambda: wakes.append(1))

    await outlet.emit("session.ended", session(), {"status": "ended"})

    stored = {w.webhook_id: await store.list_deliveries(w.webhook_id)
              for w in (everything, ended_only, flags_only, other_key)}
    assert [len(stored[w.webhook_id]) for w in (everything, ended_only, flags_only,
                                                 other_key)] == [1, 1, 0, 0]
    first, second = stored[everything.webhook_id][0], stored[ended_only.webhook_id][0]
    assert first.event_id == second.event_id and first.body == second.body  # one event
    assert (first.status, first.attempts, first.type) == ("pending", 0, "session.ended")
    assert wakes == [1]
    assert set(everything.events) == set(EVENT_TYPES)  # default: all of them


async def test_emit_without_listeners_stores_nothing_and_wakes_nobody(store: Store) -> None:
    webhook = await register(store, "https://a.test/hook")
    wakes: list[int] = []
    outlet = WebhookOutlet(store, wake=lambda: wakes.append(1))
    await outlet.emit("session.ended", session(owner=None), {})  # made by no API key
    await outlet.emit("session.ended", session(owner="k9"), {})
    assert await store.list_deliveries(webhook.webhook_id) == [] and wakes == []


async def test_emit_on_a_broken_store_logs_and_never_raises(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    closed = SqliteStore(tmp_path / "closed.db")  # never opened: every call fails
    with caplog.at_level(logging.ERROR, logger="proctor.webhooks"):
        await WebhookOutlet(closed).emit("flag.opened", session(), {"flag": {}})
    assert "could not store flag.opened of session s1" in caplog.text


# The worker --------------------------------------------------------------------------

async def test_a_refused_delivery_is_retried_signed_until_delivered(
        store: Store, worker: DeliveryWorker) -> None:
    receiver = await Receiver(fail_first).start()
    try:
        webhook = await register(store, receiver.url)
        await WebhookOutlet(store, worker.wake).emit("report.ready", session(),
                                                     {"report": {"score": 1}})
        first, retry = await receiver.wait_for(2)
        delivery = await settled(store, webhook.webhook_id)
    finally:
        await receiver.close()
    assert first.body == retry.body and first.event_id == retry.event_id
    assert retry.at - first.at >= FAST.retry_initial_seconds * 0.9
    for request in (first, retry):
        assert verify_signature(webhook.secret, request.headers, request.body)
        assert request.headers["Content-Type"] == "application/json"
        assert request.headers["Proctor-Event-Id"] == request.event_id
    assert set(first.event) == {"event_id", "type", "created_at", "session_id", "data"}
    assert (first.event["type"], first.event["session_id"], first.event["data"]) == (
        "report.ready", "s1", {"report": {"score": 1}})
    assert (delivery.status, delivery.attempts, delivery.lease_until) == ("delivered", 2, None)
    attempts = await store.list_attempts(delivery.delivery_id)
    assert [a.status_code for a in attempts] == [500, 200]
    assert attempts[0].error == "HTTP 500: try again" and attempts[1].error is None


async def test_silence_and_refused_connections_are_failed_attempts(
        store: Store, tmp_path: Path) -> None:
    # Retries on a short leash: each delivery gives up after its first attempt.
    config = replace(FAST, timeout_seconds=0.3, lease_seconds=2.0, give_up_after_seconds=0.1)
    slow = await Receiver(delay_seconds=2.0).start()
    gone = await Receiver().start()
    gone_url = gone.url
    await gone.close()  # nothing listens there any more
    worker = DeliveryWorker(store, config, CIPHER)
    await worker.start()
    try:
        silent = await register(store, slow.url)
        refused = await register(store, gone_url)
        await WebhookOutlet(store, worker.wake).emit("session.live", session(), {})
        timed_out = await settled(store, silent.webhook_id)
        unreachable = await settled(store, refused.webhook_id)
    finally:
        await worker.close()
        await slow.close()
    assert (timed_out.status, timed_out.attempts, timed_out.last_status_code) == (
        "failed", 1, None)
    assert timed_out.last_error == "no answer within 0.3 s"
    assert unreachable.status == "failed"
    assert unreachable.last_error is not None and "Connect" in unreachable.last_error
    [attempt] = await store.list_attempts(timed_out.delivery_id)
    assert 250 <= attempt.duration_ms < 1500


async def test_at_most_concurrency_deliveries_are_in_flight(store: Store) -> None:
    receiver = await Receiver(delay_seconds=0.2).start()
    worker = DeliveryWorker(store, FAST, CIPHER)  # concurrency 4
    await worker.start()
    try:
        await register(store, receiver.url)
        outlet = WebhookOutlet(store, worker.wake)
        for n in range(12):
            await outlet.emit("flag.opened", session(session_id=f"s{n}"), {})
        received = await receiver.wait_for(12)
    finally:
        await worker.close()
        await receiver.close()
    assert receiver.max_in_flight == FAST.concurrency
    assert len({r.event_id for r in received}) == 12


async def test_a_retry_goes_out_when_due_not_at_the_next_poll(store: Store) -> None:
    config = replace(FAST, poll_seconds=5.0, retry_initial_seconds=0.3)
    receiver = await Receiver(fail_first).start()
    worker = DeliveryWorker(store, config, CIPHER)
    await worker.start()
    try:
        await register(store, receiver.url)
        await WebhookOutlet(store, worker.wake).emit("flag.closed", session(), {})
        first, retry = await receiver.wait_for(2, timeout=3.0)
    finally:
        await worker.close()
        await receiver.close()
    assert 0.28 <= retry.at - first.at < 1.5  # the worker's own timer, not the 5 s poll


async def test_deleting_a_webhook_stops_its_retries(store: Store,
                                                    worker: DeliveryWorker) -> None:
    receiver = await Receiver(lambda request, earlier: 503).start()
    try:
        webhook = await register(store, receiver.url)
        await WebhookOutlet(store, worker.wake).emit("flag.raised", session(), {})
        await receiver.wait_for(1)
        assert await store.delete_webhook(webhook.webhook_id)
        await asyncio.sleep(4 * FAST.retry_initial_seconds)
    finally:
        await receiver.close()
    assert len(receiver.received) == 1
    assert await store.list_deliveries(webhook.webhook_id) == []


async def test_an_event_waits_out_a_store_outage_in_the_outbox(tmp_path: Path) -> None:
    """The store away when the event happens, and the process restarted before it is
    back: the event's deliveries are stored on replay, as the event was (id, time)."""
    path = tmp_path / "p.db"
    store = SqliteStore(path)
    await store.open()
    webhook = await register(store, "https://a.test/hook")
    await store.close()  # the store goes away
    outbox = StoreOutbox(store, tmp_path / "outbox.db")
    outlet = WebhookOutlet(store)
    outlet.queue_through(outbox)
    await outbox.open()
    await outlet.emit("flag.opened", session(), {"flag": {"kind": "face_absent"}})
    assert outbox.depth == 1
    await outbox.close()  # ... and the node restarts while it is away

    await store.open()
    wakes: list[int] = []
    try:
        outbox = StoreOutbox(store, tmp_path / "outbox.db")
        WebhookOutlet(store, wake=lambda: wakes.append(1)).queue_through(outbox)
        await outbox.open()
        await outbox.flush()
        await outbox.close()
        [delivery] = await store.list_deliveries(webhook.webhook_id)
    finally:
        await store.close()
    body = json.loads(delivery.body)
    assert (delivery.type, body["type"], body["data"]) == (
        "flag.opened", "flag.opened", {"flag": {"kind": "face_absent"}})
    assert delivery.created_at == body["created_at"] and delivery.event_id == body["event_id"]
    assert wakes == [1] and outbox.depth == 0
