"""Event buses: in-process (``memory``) and, for many nodes, Redis (``redis://``)."""

from __future__ import annotations

from proctor.bus.base import (
    BusUnavailable,
    EventBus,
    Message,
    Subscription,
    exam_topic,
    node_topic,
    reply_topic,
    session_topic,
)
from proctor.bus.memory import MemoryBus
from proctor.bus.redis import RedisBus

__all__ = ["BusUnavailable", "EventBus", "MemoryBus", "Message", "RedisBus", "Subscription",
           "exam_topic", "node_topic", "open_bus_from_url", "reply_topic", "session_topic"]


def open_bus_from_url(url: str, node_id: str | None = None) -> EventBus:
    """``memory`` or ``redis://`` / ``rediss://`` / ``unix://`` (a Redis URL). Without a
    node id, the bus makes up a random one."""
    if url == "memory":
        return MemoryBus(node_id=node_id)
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisBus(url, node_id=node_id)
    raise ValueError(f"bus {url!r}: use 'memory' or a redis:// URL")
