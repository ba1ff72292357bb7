"""The event bus: how flags and status reach proctors, on this node or any other.

Messages are JSON-shaped dicts on topics named ``session:<id>``. The in-process bus
serves one node; the Redis bus (``bus: redis://``) lets a proctor on any node watch a
session whose media lives on another. Every subscription has a bounded queue.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any, Protocol

Message = dict[str, Any]


def session_topic(session_id: str) -> str:
    return f"session:{session_id}"


class Subscription(Protocol):
    def __aiter__(self) -> AsyncIterator[Message]: ...

    @property
    def dropped(self) -> int:
        """Messages lost to a full queue (status ticks go first)."""

    def close(self) -> None: ...


class EventBus(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def publish(self, topic: str, message: Message) -> None: ...

    def subscribe(self, topics: Iterable[str]) -> Subscription: ...
