"""Deliveries outlive the node that stored them, and many nodes send each event once.

Real apps (create_app) on a SQLite file or one shared PostgreSQL schema, a real receiver
on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from proctor.outbound.addresses import AddressPolicy
from proctor.outbound.signing import verify_signature
from proctor.outbound.webhooks import deliveries_for, new_webhook, sealed, webhook_cipher
from proctor.store.base import SessionRecord, Store, WebhookRecord
from proctor.store.sqlite import SqliteStore
from signaling.app import create_app
from signaling.keys import SESSIONS_KEY, STORE_KEY
from tests.conftest import make_config
from tests.outbound.receiver import Receiver, fail_first
from tests.pgserver import drop_schema, new_schema, schema_url

AppClient = Callable[..., Awaitable[TestClient]]
FAST = {"poll_seconds": 0.05, "timeout_seconds": 2.0, "lease_seconds": 5.0}
# Every node of a deployment shares the server secret; webhook secrets are sealed with it.
SERVER_SECRET = "durability-test-server-secret"
AUTH = {"token_secret": SERVER_SECRET}
CIPHER = webhook_cipher(SERVER_SECRET.encode())


def session(session_id: str = "s1") -> SessionRecord:
    # Sessions made with the configured API key belong to "default", as its webhooks do.
    return SessionRecord(session_id=session_id, candidate_id="c1",
                         created_at="2024-01-01T00:00:00.000000Z", api_key_id="config")


async def emit(client: TestClient, event_type: str, session_id: str = "s1") -> None:
    await client.app[SESSIONS_KEY].outlet.emit(event_type, session(session_id),
                                               {"n": session_id})


async def register(store: Store, url: str) -> WebhookRecord:
    """A webhook stored as the app stores it (secret sealed); returned in the clear."""
    webhook = await new_webhook("default", {"url": url},  # the tenant of config keys
                                AddressPolicy(["127.0.0.0/8"]))
    await store.add_webhook(sealed(webhook, CIPHER))
    return webhook


async def attempts_recorded(store: Store, webhook_id: str, count: int,
                            timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        [delivery] = await store.list_deliveries(webhook_id)
        if delivery.attempts >= count:
            return
        assert time.monotonic() < deadline, f"attempt {count} never recorded: {delivery}"
        await asyncio.sleep(0.02)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver(fail_first).start()
    yield r
    await r.close()


async def test_a_restart_mid_retry_still_delivers(tmp_path: Path, aiohttp_client: AppClient,
                                                  receiver: Receiver) -> None:
    # The retry is due 1 s after the refusal: app 1 is long gone by then.
    config = make_config(tmp_path, auth=AUTH,
                         webhooks={**FAST, "retry_initial_seconds": 1.0})
    first_app = await aiohttp_client(create_app(config))
    webhook = await register(first_app.app[STORE_KEY], receiver.url)
    await emit(first_app, "session.ended")
    [refused] = await receiver.wait_for(1)
    await attempts_recorded(first_app.app[STORE_KEY], webhook.webhook_id, 1)
    await first_app.close()
    assert len(receiver.received) == 1

    second_app = await aiohttp_client(create_app(config))  # same database file
    _, retry = await receiver.wait_for(2)
    await attempts_recorded(second_app.app[STORE_KEY], webhook.webhook_id, 2)
    [delivery] = await second_app.app[STORE_KEY].list_deliveries(webhook.webhook_id)
    assert (refused.status, retry.status) == (500, 200)
    assert retry.event_id == refused.event_id and retry.body == refused.body
    assert verify_signature(webhook.secret, retry.headers, retry.body)
    assert (delivery.status, delivery.attempts) == ("delivered", 2)


async def test_a_node_dying_mid_attempt_leaves_it_to_another(
        tmp_path: Path, aiohttp_client: AppClient) -> None:
    receiver = await Receiver().start()
    config = make_config(tmp_path, auth=AUTH, webhooks=FAST)
    dead = SqliteStore(tmp_path / "data" / "proctor.db")  # the app's database
    await dead.open()
    try:
        webhook = await register(dead, receiver.url)
        await dead.add_deliveries(deliveries_for([webhook], "flag.opened", "s1", {}))
        # A node claims it and dies before sending: its lease (1 s) must lapse first.
        [claimed] = await dead.claim_due_deliveries(time.time(), 1.0, 10)
        leased_until = claimed.lease_until
        assert leased_until is not None
        await aiohttp_client(create_app(config))
        [request] = await receiver.wait_for(1)
        await asyncio.sleep(0.3)
    finally:
        await dead.close()
        await receiver.close()
    assert request.wall >= leased_until - 0.01  # not before the dead node's lease lapsed
    assert len(receiver.received) == 1 and request.event_id == claimed.event_id


# Many nodes --------------------------------------------------------------------------

@pytest.fixture
async def pg_schema() -> AsyncIterator[str]:
    schema = new_schema()
    yield schema
    await drop_schema(schema)  # after the apps (set up later, so closed earlier)


async def test_two_nodes_send_each_event_once(tmp_path: Path, aiohttp_client: AppClient,
                                              pg_schema: str) -> None:
    receiver = await Receiver().start()
    nodes: list[TestClient] = []
    for node_id in ("n1", "n2"):
        config = make_config(tmp_path / node_id, store=schema_url(pg_schema), auth=AUTH,
                             nodes={"id": node_id}, webhooks={**FAST, "concurrency": 4})
        nodes.append(await aiohttp_client(create_app(config)))
    store = nodes[0].app[STORE_KEY]
    webhook = await register(store, receiver.url)
    try:
        # Stored ahead, due at one moment: both nodes' polls find them at once and race.
        due = time.time() + 0.3
        ahead = [replace(d, next_attempt_at=due) for n in range(40)
                 for d in deliveries_for([webhook], "flag.raised", f"ahead-{n}", {})]
        await store.add_deliveries(ahead)
        # And events as they happen on either node, each stored by that node alone.
        await asyncio.gather(*(emit(nodes[n % 2], "flag.opened", f"live-{n}")
                               for n in range(40)))
        await receiver.wait_for(80, timeout=20.0)
        await asyncio.sleep(0.5)  # any duplicate would have arrived by now
        log = await store.list_deliveries(webhook.webhook_id, limit=100)
    finally:
        for node in nodes:  # before the schema goes
            await node.close()
        await receiver.close()
    event_ids = [r.event_id for r in receiver.received]
    assert len(event_ids) == 80 and len(set(event_ids)) == 80  # each once, none twice
    assert set(event_ids) == {d.event_id for d in log} and len(log) == 80
    assert {d.status for d in log} == {"delivered"} and {d.attempts for d in log} == {1}
