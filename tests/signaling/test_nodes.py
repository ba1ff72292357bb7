"""One app on PostgreSQL and Redis (the many-node backends): GET /nodes, and /readyz
telling the truth about the bus while its Redis is away and after it returns."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from signaling.app import create_app
from tests.conftest import make_config
from tests.pgserver import drop_schema, new_schema, schema_url
from tests.redisserver import PrivateRedis


@pytest.fixture
async def redis() -> AsyncIterator[PrivateRedis]:
    server = PrivateRedis()
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def deployed(tmp_path: Path, redis: PrivateRedis,
                   aiohttp_client: Callable[..., Awaitable[TestClient]]
                   ) -> AsyncIterator[TestClient]:
    schema = new_schema()
    config = make_config(tmp_path, store=schema_url(schema), bus=redis.url, clips="store",
                         nodes={"id": "node-under-test", "address": "http://node.test"})
    client = await aiohttp_client(create_app(config))
    try:
        yield client
    finally:
        await client.close()  # the app leaves the deployment before its schema goes
        await drop_schema(schema)


async def test_nodes_lists_this_node(deployed: TestClient,
                                     api_headers: dict[str, str]) -> None:
    response = await deployed.get("/api/v1/nodes", headers=api_headers)
    assert response.status == 200, await response.text()
    (node,) = (await response.json())["nodes"]
    assert node["node_id"] == "node-under-test" and node["address"] == "http://node.test"
    assert node["status"] == "up" and node["alive"] and node["this_node"]
    assert node["capacity"] == 16 and node["live_sessions"] == 0
    assert (await deployed.get("/api/v1/nodes")).status == 401


async def test_readyz_checks_the_bus(deployed: TestClient, redis: PrivateRedis) -> None:
    ready = await deployed.get("/readyz")
    assert ready.status == 200 and (await ready.json())["checks"]["bus"] == "ok"
    redis.stop()
    down = await deployed.get("/readyz")
    assert down.status == 503
    assert (await down.json())["checks"]["bus"].startswith("unavailable")
    redis.start()
    for _ in range(50):  # the bus reconnects with backoff
        if (await deployed.get("/readyz")).status == 200:
            break
        await asyncio.sleep(0.2)
    assert (await (await deployed.get("/readyz")).json())["checks"]["bus"] == "ok"
