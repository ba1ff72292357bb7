"""Event buses: in-process (``memory``) and, for many nodes, Redis."""

from __future__ import annotations

from proctor.bus.base import EventBus, Message, Subscription, session_topic
from proctor.bus.memory import MemoryBus

__all__ = ["EventBus", "MemoryBus", "Message", "Subscription", "open_bus_from_url",
           "session_topic"]


def open_bus_from_url(url: str) -> EventBus:
    if url == "memory":
        return MemoryBus()
    raise ValueError(f"bus {url!r} is not available yet: use 'memory'")
