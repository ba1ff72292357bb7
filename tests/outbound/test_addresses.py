"""Where webhooks may go: the address policy, at registration and at delivery, through
the real app and a real receiver on loopback."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from proctor.config import ConfigError, WebhooksConfig, load_config
from proctor.outbound.addresses import AddressPolicy, AddressRefused
from proctor.outbound.delivery import DeliveryWorker
from proctor.outbound.webhooks import deliveries_for, new_webhook, sealed, webhook_cipher
from proctor.store.base import AttemptRecord, Store
from proctor.store.sqlite import SqliteStore
from signaling.app import create_app
from tests.conftest import make_config
from tests.outbound.receiver import Receiver
from tests.peers import bearer

REFUSED = ["127.0.0.1", "127.8.9.10", "10.1.2.3", "172.16.0.1", "192.168.1.1",
           "169.254.169.254",  # cloud metadata
           "0.0.0.0", "100.64.0.1", "224.0.0.1", "255.255.255.255",
           "::1", "fe80::1", "fc00::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::"]
CIPHER = webhook_cipher(b"addresses-test-server-secret")
PERMITTED = ["93.184.215.14", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"]


@pytest.mark.parametrize("address", REFUSED)
def test_private_loopback_and_reserved_addresses_are_refused(address: str) -> None:
    assert not AddressPolicy().permits(address)
    with pytest.raises(AddressRefused):
        AddressPolicy().check_literal(address)


@pytest.mark.parametrize("address", PERMITTED)
def test_public_addresses_are_permitted(address: str) -> None:
    assert AddressPolicy().permits(address)


def test_allowed_networks_open_exactly_those_networks() -> None:
    policy = AddressPolicy(["10.20.0.0/16", "fd00::/8"])
    assert policy.permits("10.20.3.4") and policy.permits("fd12::1")
    assert not policy.permits("10.21.0.1") and not policy.permits("127.0.0.1")
    assert AddressPolicy(["127.0.0.1"]).permits("127.0.0.1")  # a bare address: one host
    assert not AddressPolicy(["127.0.0.1"]).permits("127.0.0.2")


async def test_a_name_resolving_to_loopback_is_refused_and_an_unknown_name_waits() -> None:
    with pytest.raises(AddressRefused):
        await AddressPolicy().check_name("localhost")
    await AddressPolicy(["127.0.0.0/8"]).check_name("localhost")
    await AddressPolicy().check_name("receiver.example.test")  # checked when sent


def test_a_bad_network_fails_at_start_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"webhooks\.allowed_networks"):
        load_config(env={}, overrides={"webhooks": {"allowed_networks": ["10.0.0.0/33"]}})
    with pytest.raises(ConfigError, match=r"webhooks\.allowed_networks"):
        load_config(env={"PROCTOR_WEBHOOKS__ALLOWED_NETWORKS": "not-a-network"})


async def test_registering_a_private_destination_is_400_by_default(
        tmp_path: Path, aiohttp_client: object) -> None:
    config = make_config(tmp_path, webhooks={"allowed_networks": []})
    client: TestClient = await aiohttp_client(create_app(config))  # type: ignore[operator]
    headers = bearer(config.auth.api_keys[0])
    for url in ("http://127.0.0.1:9/x", "http://[::1]/x", "http://169.254.169.254/latest",
                "http://localhost:8080/admin", "http://10.0.0.5/hook",
                "http://[::ffff:127.0.0.1]/x"):
        response = await client.post("/api/v1/webhooks", json={"url": url}, headers=headers)
        assert response.status == 400, (url, await response.text())
        body = await response.json()
        assert "webhooks.allowed_networks" in body["error"]["message"]
    listed = await (await client.get("/api/v1/webhooks", headers=headers)).json()
    assert listed == {"webhooks": []}
    made = await client.post("/api/v1/webhooks", json={"url": "https://hooks.example.test/"},
                             headers=headers)
    assert made.status == 201


async def test_a_delivery_to_a_refused_address_is_not_sent(
        tmp_path: Path, aiohttp_client: object) -> None:
    """Registered while loopback was allowed, then the operator removed it: the next
    delivery is refused by the worker's own check and never reaches the receiver."""
    receiver = await Receiver().start()
    store = SqliteStore(tmp_path / "p.db")
    await store.open()
    try:
        for url in (receiver.url, receiver.url.replace("127.0.0.1", "localhost")):
            webhook = await new_webhook("t", {"url": url}, AddressPolicy(["127.0.0.0/8"]))
            await store.add_webhook(sealed(webhook, CIPHER))
            await store.add_deliveries(deliveries_for([webhook], "session.ended", None, {}))
        worker = DeliveryWorker(store, WebhooksConfig(retry_initial_seconds=60), CIPHER)
        await worker.start()
        try:
            for webhook in await store.list_webhooks("t"):
                attempts = await _first_attempts(store, webhook.webhook_id)
                assert attempts[0].status_code is None
                assert "allowed_networks" in (attempts[0].error or "")
        finally:
            await worker.close()
        assert receiver.received == []
    finally:
        await store.close()
        await receiver.close()


async def _first_attempts(store: Store, webhook_id: str) -> list[AttemptRecord]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        [delivery] = await store.list_deliveries(webhook_id)
        attempts = await store.list_attempts(delivery.delivery_id)
        if attempts:
            return list(attempts)
        await asyncio.sleep(0.05)
    raise AssertionError("no attempt was recorded")
