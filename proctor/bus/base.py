"""The event bus: how flags and status reach proctors, on this node or any other.

Messages are JSON-shaped dicts with a ``type`` (proctor/bus/messages.py lists the kinds)
on topics named ``session:<id>`` (alerts for watchers), ``node:<id>`` (control requests
for the node that owns a session) and ``reply:<id>`` (their answers). The in-process bus
serves one node; the Redis bus (``bus: redis://``) lets a proctor on any node watch a
session whose media lives on another. Every subscription has a bounded queue.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any, Protocol

Message = dict[str, Any]


def exam_topic(exam_id: str, tenant: str = "default") -> str:
    """Where an exam's new sessions are announced (created, live), so a proctor watching
    the whole exam also sees the sessions made after it started watching. Exam ids are
    per tenant, so the topic names both."""
    return f"exam:{tenant}:{exam_id}"


def session_topic(session_id: str) -> str:
    """Alerts, status ticks and lifecycle news of one session, for its watchers."""
    return f"session:{session_id}"


def node_topic(node_id: str) -> str:
    """Control requests (``type: control``) addressed to one node."""
    return f"node:{node_id}"


def reply_topic(node_id: str) -> str:
    """Answers (``type: reply``) to the control requests a node sent."""
    return f"reply:{node_id}"


class BusUnavailable(Exception):
    """The bus cannot reach its service (Redis does not answer); /readyz reports it."""


class Subscription(Protocol):
    def __aiter__(self) -> AsyncIterator[Message]:
        """Messages in publish order, until close() (or the bus closes)."""
        ...

    @property
    def dropped(self) -> int:
        """Messages lost to a full queue (status ticks go first)."""
        ...

    def close(self) -> None: ...


class EventBus(Protocol):
    node_id: str

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Return when the bus's service answers; raise BusUnavailable otherwise."""
        ...

    async def publish(self, topic: str, message: Mapping[str, Any]) -> None:
        """Deliver to every subscriber of ``topic``; never blocks on the network.

        Raises ValueError for a message that is not one of the known kinds."""
        ...

    async def subscribe(self, topics: Iterable[str]) -> Subscription:
        """Once this returns, every later publish on ``topics`` reaches the subscription
        (so: subscribe, then read a snapshot from the store, then forward)."""
        ...
