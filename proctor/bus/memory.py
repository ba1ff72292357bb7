"""The in-process event bus (``bus: memory``): one node, no services needed."""

from __future__ import annotations

import asyncio
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Iterable

from proctor.bus.base import Message

DEFAULT_QUEUE = 1000


class MemorySubscription:
    """A bounded queue. Overflow: drop the oldest status tick, else the oldest message
    (every flag is in the store, so a proctor who fell that far behind can reload)."""

    def __init__(self, bus: MemoryBus, topics: frozenset[str], maxlen: int) -> None:
        self._bus = bus
        self.topics = topics
        self._maxlen = maxlen
        self._queue: deque[Message] = deque()
        self._ready = asyncio.Event()
        self._closed = False
        self._dropped = 0

    @property
    def dropped(self) -> int:
        return self._dropped

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
        self._closed = True
        self._bus.unsubscribe(self)
        self._ready.set()

    async def __aiter__(self) -> AsyncIterator[Message]:
        while not self._closed:
            while self._queue:
                yield self._queue.popleft()
            self._ready.clear()
            await self._ready.wait()


class MemoryBus:
    def __init__(self, queue_size: int = DEFAULT_QUEUE) -> None:
        self._queue_size = queue_size
        self._subscribers: dict[str, set[MemorySubscription]] = defaultdict(set)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        for subs in list(self._subscribers.values()):
            for sub in list(subs):
                sub.close()

    async def publish(self, topic: str, message: Message) -> None:
        for sub in list(self._subscribers.get(topic, ())):
            sub.put(message)

    def subscribe(self, topics: Iterable[str]) -> MemorySubscription:
        sub = MemorySubscription(self, frozenset(topics), self._queue_size)
        for topic in sub.topics:
            self._subscribers[topic].add(sub)
        return sub

    def unsubscribe(self, sub: MemorySubscription) -> None:
        for topic in sub.topics:
            self._subscribers[topic].discard(sub)
            if not self._subscribers[topic]:
                del self._subscribers[topic]
