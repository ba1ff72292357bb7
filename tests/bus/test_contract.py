"""What every bus does, checked on memory and on Redis alike."""

from __future__ import annotations

import asyncio

import pytest

from tests.bus.conftest import BusFactory, Collector, flag, status


async def test_publish_reaches_subscribers_of_the_topic(make_bus: BusFactory,
                                                        prefix: str) -> None:
    bus = await make_bus()
    one, other = f"{prefix}:session:a", f"{prefix}:session:b"
    both = Collector(await bus.subscribe([one, other]))
    only_one = Collector(await bus.subscribe([one]))
    await bus.publish(one, flag("a", 1))
    await bus.publish(other, flag("b", 2))
    await bus.publish(f"{prefix}:session:nobody", flag("c", 3))
    assert [m["flag"]["n"] for m in await both.wait_for(2)] == [1, 2]
    assert [m["flag"]["n"] for m in await only_one.wait_for(1)] == [1]
    await asyncio.sleep(0.2)  # nothing else comes
    assert len(both.messages) == 2 and len(only_one.messages) == 1
    await bus.ping()


async def test_close_stops_delivery(make_bus: BusFactory, prefix: str) -> None:
    bus = await make_bus()
    topic = f"{prefix}:session:a"
    closing = Collector(await bus.subscribe([topic]))
    staying = Collector(await bus.subscribe([topic]))
    await bus.publish(topic, flag("a", 1))
    await closing.wait_for(1)
    closing.sub.close()
    await asyncio.wait_for(closing.task, 1)  # the iteration ends
    await bus.publish(topic, flag("a", 2))
    await staying.wait_for(2)
    assert len(closing.messages) == 1
    await bus.close()
    await asyncio.wait_for(staying.task, 3)  # closing the bus ends every subscription


async def test_full_queue_drops_status_ticks_first(make_bus: BusFactory,
                                                   prefix: str) -> None:
    bus = await make_bus(queue_size=3)
    topic = f"{prefix}:session:a"
    sub = await bus.subscribe([topic])
    for message in (status("a", 0), flag("a", 1), status("a", 2), flag("a", 3),
                    flag("a", 4), flag("a", 5)):
        await bus.publish(topic, message)  # nobody reads yet
    assert sub.dropped == 3
    reader = Collector(sub)
    assert [m["flag"]["n"] for m in await reader.wait_for(3)] == [3, 4, 5]
    await reader.stop()


async def test_junk_is_refused_at_publish(make_bus: BusFactory, prefix: str) -> None:
    bus = await make_bus()
    topic = f"{prefix}:session:a"
    reader = Collector(await bus.subscribe([topic]))
    for junk in ({"type": "gossip"}, {"no": "type"}, {"type": "flag", "session_id": "a"}):
        with pytest.raises(ValueError):
            await bus.publish(topic, junk)
    await bus.publish(topic, flag("a"))
    assert len(await reader.wait_for(1)) == 1
