"""The Redis bus between nodes: exactly-once delivery, subscribe races, junk on the wire,
unsubscribing, and outages of a real (private) redis-server."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from proctor.bus import BusUnavailable, RedisBus, open_bus_from_url
from proctor.bus.memory import MemoryBus
from tests.bus.conftest import SHARED_REDIS, BusFactory, Collector, flag, status
from tests.redisserver import PrivateRedis


async def wait_until_true(check: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def test_open_bus_from_url() -> None:
    assert isinstance(open_bus_from_url("memory"), MemoryBus)
    bus = open_bus_from_url("redis://127.0.0.1:6379/0", node_id="n1")
    assert isinstance(bus, RedisBus) and bus.node_id == "n1"
    assert open_bus_from_url("memory").node_id  # a random one by default
    with pytest.raises(ValueError):
        open_bus_from_url("kafka://x")


async def test_a_message_reaches_each_node_exactly_once(redis_buses: BusFactory,
                                                        prefix: str) -> None:
    a, b = await redis_buses(node_id="a"), await redis_buses(node_id="b")
    topic = f"{prefix}:session:s"
    on_a, on_b = Collector(await a.subscribe([topic])), Collector(await b.subscribe([topic]))
    await a.publish(topic, flag("s", 1))
    await b.publish(topic, flag("s", 2))
    # Each node hears its own at once and the other's a moment later: order across
    # publishers is not defined, order from one publisher is.
    assert sorted(m["flag"]["n"] for m in await on_a.wait_for(2)) == [1, 2]
    assert sorted(m["flag"]["n"] for m in await on_b.wait_for(2)) == [1, 2]
    await asyncio.sleep(0.3)  # no duplicate follows
    assert len(on_a.messages) == len(on_b.messages) == 2


async def test_publish_right_after_subscribe_returns_is_received(redis_buses: BusFactory,
                                                                 prefix: str) -> None:
    a, b = await redis_buses(node_id="a"), await redis_buses(node_id="b")
    readers = []
    for n in range(20):
        topic = f"{prefix}:session:{n}"
        readers.append(Collector(await b.subscribe([topic])))
        await a.publish(topic, flag(str(n), n))
    for n, reader in enumerate(readers):
        assert [m["flag"]["n"] for m in await reader.wait_for(1)] == [n]


async def test_unwanted_topics_are_unsubscribed(redis_buses: BusFactory,
                                                prefix: str) -> None:
    a, b = await redis_buses(), await redis_buses()
    topic = f"{prefix}:session:s"
    raw = Redis.from_url(SHARED_REDIS)
    try:
        first, second = await b.subscribe([topic]), await b.subscribe([topic])
        assert (await raw.pubsub_numsub(topic))[0][1] == 1  # one SUBSCRIBE per topic
        first.close()
        second.close()

        async def unsubscribed() -> None:
            while (await raw.pubsub_numsub(topic))[0][1] != 0:
                await asyncio.sleep(0.02)
        await asyncio.wait_for(unsubscribed(), 3)
        # Wanted again at once: the UNSUBSCRIBE cannot overtake the new SUBSCRIBE.
        again = Collector(await b.subscribe([topic]))
        again.sub.close()
        again = Collector(await b.subscribe([topic]))
        await a.publish(topic, flag("s", 7))
        assert [m["flag"]["n"] for m in await again.wait_for(1)] == [7]
    finally:
        await raw.aclose()


async def test_malformed_payloads_are_dropped(redis_buses: BusFactory, prefix: str) -> None:
    a, b = await redis_buses(), await redis_buses()
    topic = f"{prefix}:session:s"
    reader = Collector(await b.subscribe([topic]))
    raw = Redis.from_url(SHARED_REDIS)
    try:
        for junk in (b"junk", b"\xff\xfe", b'{"origin": "x", "message": {"type": "nope"}}',
                     b'{"message": {"type": "flag"}}'):
            await raw.publish(topic, junk)
    finally:
        await raw.aclose()
    await a.publish(topic, flag("s", 1))
    assert [m["flag"]["n"] for m in await reader.wait_for(1)] == [1]
    assert b.rejected == 4 and b.connected


# Outages, on a redis-server of the test's own ---------------------------------------


@pytest.fixture
async def nodes(private_redis: PrivateRedis) -> AsyncIterator[tuple[RedisBus, RedisBus]]:
    """Two nodes on a running private Redis; they retry often (cap 0.3 s)."""
    private_redis.start()
    a = RedisBus(private_redis.url, node_id="a", retry_cap=0.3)
    b = RedisBus(private_redis.url, node_id="b", retry_cap=0.3)
    await a.start()
    await b.start()
    yield a, b
    await a.close()
    await b.close()


async def test_an_outage_keeps_local_delivery_and_heals(private_redis: PrivateRedis,
                                                        nodes: tuple[RedisBus, RedisBus],
                                                        prefix: str) -> None:
    a, b = nodes
    topic = f"{prefix}:session:s"
    on_a, on_b = Collector(await a.subscribe([topic])), Collector(await b.subscribe([topic]))
    await a.publish(topic, flag("s", 0))
    await on_b.wait_for(1)

    private_redis.stop()
    await wait_until_true(lambda: not a.connected and not b.connected)
    started = time.monotonic()
    await a.publish(topic, flag("s", 1))
    await a.publish(topic, status("s", 2))
    assert time.monotonic() - started < 1.0
    assert [m["n"] if m["type"] == "status" else m["flag"]["n"]
            for m in await on_a.wait_for(3, timeout=1)] == [0, 1, 2]
    started = time.monotonic()
    with pytest.raises(BusUnavailable):
        await a.ping()
    assert time.monotonic() - started < 1.0

    private_redis.start()  # the same port
    for n in range(100, 200):  # until the readers are back and subscribed again
        await a.publish(topic, flag("s", n))
        if any(m["flag"]["n"] >= 100 for m in on_b.messages if m["type"] == "flag"):
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail("B never heard A again after Redis came back")
    await a.ping()
    await b.ping()
    assert not [m for m in on_b.messages if m["type"] == "status"]  # stale ticks not kept


async def test_messages_published_in_an_outage_go_out_when_redis_returns(
        private_redis: PrivateRedis, prefix: str) -> None:
    private_redis.start()
    # A retries only when woken (a ping that Redis answers); B retries quickly.
    a = RedisBus(private_redis.url, node_id="a", retry_first=60, retry_cap=60,
                 outbox_size=5)
    b = RedisBus(private_redis.url, node_id="b", retry_cap=0.3)
    await a.start()
    await b.start()
    try:
        topic = f"{prefix}:session:s"
        on_b = Collector(await b.subscribe([topic]))
        private_redis.stop()
        await wait_until_true(lambda: not a.connected and not b.connected)
        await a.publish(topic, flag("s", -1))
        await wait_until_true(lambda: not a.publishing)
        for n in range(8):
            await a.publish(topic, flag("s", n))
            await a.publish(topic, status("s", n))
        await asyncio.sleep(0.1)
        private_redis.start()
        await wait_until_true(lambda: b.connected)
        with pytest.raises(BusUnavailable, match="reconnecting"):
            await a.ping()  # Redis answers, A's reader is still away: it is woken
        await wait_until_true(lambda: a.connected)
        assert [m["flag"]["n"] for m in await on_b.wait_for(5)] == [3, 4, 5, 6, 7]
        assert a.outbox_dropped == 4  # -1, 0, 1, 2; status ticks are not even kept
        await asyncio.sleep(0.2)
        assert len(on_b.messages) == 5
    finally:
        await a.close()
        await b.close()


async def test_a_bus_started_while_redis_is_down_works_once_it_is_up(
        private_redis: PrivateRedis, prefix: str) -> None:
    topic = f"{prefix}:session:s"
    a = RedisBus(private_redis.url, node_id="a", retry_cap=0.3)
    started = time.monotonic()
    await a.start()  # nothing listens yet
    assert time.monotonic() - started < 1.0
    try:
        on_a = Collector(await a.subscribe([topic]))
        await a.publish(topic, flag("s", 1))
        await on_a.wait_for(1, timeout=1)  # local delivery regardless
        with pytest.raises(BusUnavailable):
            await a.ping()

        private_redis.start()
        b = RedisBus(private_redis.url, node_id="b", retry_cap=0.3)
        await b.start()
        on_b = Collector(await b.subscribe([topic]))
        await wait_until_true(lambda: a.connected)
        await a.ping()
        await b.publish(topic, flag("s", 2))
        await a.publish(topic, flag("s", 3))
        assert sorted(m["flag"]["n"] for m in await on_a.wait_for(3)) == [1, 2, 3]
        await on_b.wait_until(lambda m: m["flag"]["n"] == 3)
        # 1 may come too: A kept it for Redis, and B may have subscribed in time.
        assert {m["flag"]["n"] for m in on_b.messages} >= {2, 3}
        await b.close()
    finally:
        await a.close()


async def test_a_silent_redis_never_hangs_anyone(prefix: str) -> None:
    """A host that accepts connections and never answers (a vanished or frozen Redis):
    every call is bounded by the 2 s socket timeouts, publish by nothing at all."""
    topic = f"{prefix}:session:s"
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        bus = RedisBus(f"redis://127.0.0.1:{silent.getsockname()[1]}/0")
        started = time.monotonic()
        await bus.start()  # waits out the first attempt only
        assert time.monotonic() - started < 3
        started = time.monotonic()
        reader = Collector(await bus.subscribe([topic]))
        await bus.publish(topic, flag("s"))
        assert time.monotonic() - started < 0.5
        await reader.wait_for(1, timeout=1)
        started = time.monotonic()
        with pytest.raises(BusUnavailable):
            await bus.ping()
        assert time.monotonic() - started < 3
        started = time.monotonic()
        await bus.close()
        assert time.monotonic() - started < 1


async def test_a_subscribe_cancelled_while_waiting_leaves_nothing_behind(
        prefix: str) -> None:
    with socket.socket() as silent:  # a connection attempt hangs until the socket timeout
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        bus = RedisBus(f"redis://127.0.0.1:{silent.getsockname()[1]}/0")
        loop = asyncio.get_running_loop()
        starting = loop.create_task(bus.start())
        await asyncio.sleep(0.05)  # the first attempt is under way: subscribe waits on it
        waiting = loop.create_task(bus.subscribe([f"{prefix}:s"]))
        await asyncio.sleep(0.1)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert bus._fanout.topics == set()  # the half-made subscription was closed
        await starting
        await bus.close()
