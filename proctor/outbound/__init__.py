"""Outbound events: what integrators hear of (webhooks; SPEC "Webhooks").

The engine announces each event once, on the node where it happens, through an
:class:`EventOutlet`; the webhook outlet stores one delivery per interested webhook
before any is attempted, so every event is sent once per deployment, not once per node.
"""

from __future__ import annotations

from typing import Any, Protocol

from proctor.store.base import SessionRecord

# Every event type, in the SPEC's words.
EVENT_TYPES: tuple[str, ...] = (
    "session.live", "session.ended", "session.interrupted", "flag.opened", "flag.raised",
    "flag.closed", "report.ready", "flag.reviewed", "decision.made",
)


class EventOutlet(Protocol):
    async def emit(self, event_type: str, session: SessionRecord,
                   data: dict[str, Any]) -> None:
        """Announce ``event_type`` about ``session``; must not raise for a receiver's
        failure (deliveries are retried on their own)."""


class NoOutlet:
    """Announces nothing (tests and tools that run the engine without webhooks)."""

    async def emit(self, event_type: str, session: SessionRecord,
                   data: dict[str, Any]) -> None:
        return None
