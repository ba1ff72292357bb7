"""Bus test helpers: a collector that reads a subscription in the background, a bus
factory over memory and the shared Redis (127.0.0.1:6379), and a private redis-server."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from proctor.bus import MemoryBus, Message, RedisBus, Subscription
from proctor.bus.base import EventBus
from tests.redisserver import PrivateRedis, answers_ping, redis_server_binary

SHARED_REDIS = "redis://127.0.0.1:6379/0"


class Collector:
    """Reads a subscription like a watcher does (one task, ``async for``) and keeps
    what arrived, so a test can wait for messages or check that none came."""

    def __init__(self, sub: Subscription) -> None:
        self.sub = sub
        self.messages: list[Message] = []
        self._arrived = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(self._run(), name="collector")

    async def _run(self) -> None:
        async for message in self.sub:
            self.messages.append(message)
            self._arrived.set()

    async def wait_for(self, count: int, timeout: float = 3.0) -> list[Message]:
        """Wait until ``count`` messages arrived (fails the test after ``timeout``)."""
        async def enough() -> None:
            while len(self.messages) < count:
                self._arrived.clear()
                await self._arrived.wait()
        await asyncio.wait_for(enough(), timeout)
        return self.messages

    async def wait_until(self, predicate: Callable[[Message], bool],
                         timeout: float = 3.0) -> Message:
        async def found() -> Message:
            while True:
                for message in self.messages:
                    if predicate(message):
                        return message
                self._arrived.clear()
                await self._arrived.wait()
        return await asyncio.wait_for(found(), timeout)

    async def stop(self) -> None:
        self.sub.close()
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


def flag(session_id: str, n: int = 0) -> Message:
    return {"type": "flag", "session_id": session_id, "flag": {"flag_id": f"f{n}", "n": n}}


def status(session_id: str, n: int = 0) -> Message:
    return {"type": "status", "session_id": session_id, "risk": 0.1, "n": n}


@pytest.fixture
def prefix() -> str:
    """Topics unique to one test: the shared Redis may serve other tests at once."""
    return f"test-{uuid.uuid4().hex[:10]}"


def require_shared_redis() -> None:
    if not answers_ping("127.0.0.1", 6379):
        pytest.skip("no Redis at 127.0.0.1:6379")


BusFactory = Callable[..., Any]


@pytest.fixture
async def redis_buses() -> AsyncIterator[BusFactory]:
    """Started RedisBus instances on the shared Redis, closed after the test."""
    require_shared_redis()
    buses: list[RedisBus] = []

    async def make(url: str = SHARED_REDIS, **kwargs: Any) -> RedisBus:
        bus = RedisBus(url, **kwargs)
        buses.append(bus)
        await bus.start()
        return bus

    yield make
    for bus in buses:
        await bus.close()


@pytest.fixture(params=["memory", "redis"])
async def make_bus(request: pytest.FixtureRequest) -> AsyncIterator[BusFactory]:
    """The contract both buses keep: the same test against each."""
    if request.param == "redis":
        require_shared_redis()
    buses: list[EventBus] = []

    async def make(**kwargs: Any) -> EventBus:
        bus: EventBus = (MemoryBus(**kwargs) if request.param == "memory"
                         else RedisBus(SHARED_REDIS, **kwargs))
        buses.append(bus)
        await bus.start()
        return bus

    yield make
    for bus in buses:
        await bus.close()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A redis-server of the test's own, not started: the test starts and stops it."""
    if redis_server_binary() is None:
        pytest.skip("no redis-server binary")
    server = PrivateRedis(tmp_path / "redis")
    yield server
    server.stop()
