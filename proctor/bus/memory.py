"""The in-process event bus (``bus: memory``): one node, no services needed.

``Fanout`` (topics → bounded subscription queues) is also the local half of the Redis bus.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any

from proctor.bus.base import Message
from proctor.bus.messages import validate

DEFAULT_QUEUE = 1000


class MemorySubscription:
    """A bounded queue. Overflow: drop the oldest status tick, else the oldest message
    (every flag is in the store, so a proctor who fell that far behind can reload)."""

    def __init__(self, fanout: Fanout, topics: frozenset[str], maxlen: int) -> None:
        self._fanout = fanout
        self.topics = topics
        self._maxlen = maxlen
        self._queue: deque[Message] = deque()
        self._ready = asyncio.Event()
        self._closed = False
        self._dropped = 0

    @property
    def dropped(self) -> int:
        return self._dropped

    @property
    def closed(self) -> bool:
        return self._closed

    def put(self, message: Message) -> None:
        if len(self._queue) >= self._maxlen:
            self._drop_one()
        self._queue.append(message)
        self._ready.set()

    def _drop_one(self) -> None:
        self._dropped += 1
        for index, queued in enumerate(self._queue):
            if queued.get("type") == "status":
                del self._queue[index]
                return
        self._queue.popleft()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._fanout.remove(self)
        self._ready.set()

    async def __aiter__(self) -> AsyncIterator[Message]:
        while not self._closed:
            while self._queue and not self._closed:
                yield self._queue.popleft()
            self._ready.clear()
            await self._ready.wait()


class Fanout:
    """Which local subscriptions want which topic. ``on_unwatched`` hears of topics that
    just lost their last subscriber (the Redis bus unsubscribes them)."""

    def __init__(self, queue_size: int = DEFAULT_QUEUE,
                 on_unwatched: Callable[[list[str]], None] | None = None) -> None:
        self._queue_size = queue_size
        self._on_unwatched = on_unwatched
        self._subscribers: dict[str, set[MemorySubscription]] = defaultdict(set)

    @property
    def topics(self) -> set[str]:
        return set(self._subscribers)

    def add(self, topics: Iterable[str]) -> MemorySubscription:
        sub = MemorySubscription(self, frozenset(topics), self._queue_size)
        for topic in sub.topics:
            self._subscribers[topic].add(sub)
        return sub

    def remove(self, sub: MemorySubscription) -> None:
        unwatched = []
        for topic in sub.topics:
            self._subscribers[topic].discard(sub)
            if not self._subscribers[topic]:
                del self._subscribers[topic]
                unwatched.append(topic)
        if unwatched and self._on_unwatched is not None:
            self._on_unwatched(unwatched)

    def deliver(self, topic: str, message: Message) -> None:
        for sub in list(self._subscribers.get(topic, ())):
            sub.put(message)

    def close_all(self) -> None:
        for subs in list(self._subscribers.values()):
            for sub in list(subs):
                sub.close()


class MemoryBus:
    def __init__(self, queue_size: int = DEFAULT_QUEUE, node_id: str | None = None) -> None:
        self.node_id = node_id or uuid.uuid4().hex[:12]
        self._fanout = Fanout(queue_size)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self._fanout.close_all()

    async def ping(self) -> None:
        return None  # nothing outside this process to reach

    async def publish(self, topic: str, message: Mapping[str, Any]) -> None:
        # Validated like on Redis, so a bad message fails the same way on one node.
        self._fanout.deliver(topic, validate(message))

    async def subscribe(self, topics: Iterable[str]) -> MemorySubscription:
        return self._fanout.add(topics)
