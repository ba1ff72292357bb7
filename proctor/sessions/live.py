"""A session live on this node: its media clock, pipeline and the candidate's channel.

The engine never touches WebRTC: the candidate's DataChannel reaches it as a
:class:`CandidateLink` (anything with ``send(message)``), and the peer's tracks feed the
pipeline through :class:`~proctor.media.webrtc.TrackReader`\\ s that signaling/ starts and
hands over. Flags reach the store before anyone hears of them (:class:`SessionOutlet`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from proctor.bus import EventBus, Message, session_topic
from proctor.flags.messages import CANDIDATE_MESSAGES
from proctor.flags.model import Flag
from proctor.flags.tracker import FlagChange, FlagEvent
from proctor.media.clock import MediaClock
from proctor.media.taps import FrameTaps
from proctor.media.webrtc import TrackReader
from proctor.outbound import EventOutlet
from proctor.pipeline.session import SessionPipeline
from proctor.store.base import BreakRecord, SessionRecord


class CandidateLink(Protocol):
    """The candidate's message channel (signaling's bounded DataChannel sender)."""

    def send(self, message: dict[str, Any]) -> bool: ...


class FlagStore(Protocol):
    """Where flags are kept: the store, or the outbox in front of it."""

    async def save_flag(self, flag: Flag) -> None: ...


class Peer(Protocol):
    """The candidate's current connection (an aiortc peer, to signaling/)."""

    async def close(self) -> None: ...


@dataclass
class LiveSession:
    record: SessionRecord
    clock: MediaClock
    channel: CandidateLink
    pipeline: SessionPipeline | None = None
    readers: list[TrackReader] = field(default_factory=list)
    peer: Peer | None = None  # the candidate's current connection; a reconnect replaces it
    current_break: BreakRecord | None = None  # a declared break on now
    break_timer: asyncio.TimerHandle | None = None  # ends it at the policy's time limit
    on_break_end: Callable[[BreakRecord], Awaitable[None]] | None = None  # announce it
    taps: FrameTaps = field(default_factory=FrameTaps)  # proctors' live video and sound
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def session_id(self) -> str:
        return self.record.session_id

    def live_summary(self) -> dict[str, Any]:
        """What only the owner knows: live risk, media time, pipeline counters."""
        if self.pipeline is None:
            return {}
        return {"risk": self.pipeline.risk(), "media_time": round(self.clock.now(), 2),
                "pipeline": self.pipeline.stats()}


class SessionOutlet:
    """The pipeline's sink: store first, then the candidate's channel and the bus."""

    def __init__(self, session: LiveSession, store: FlagStore, bus: EventBus,
                 outlet: EventOutlet) -> None:
        self._session = session
        self._store = store
        self._bus = bus
        self._outlet = outlet

    async def flag_event(self, event: FlagEvent) -> None:
        flag = event.flag
        await self._store.save_flag(flag)
        wire = flag.to_dict()
        self._session.channel.send({"type": "flag", "flag": wire})
        if event.change in (FlagChange.OPENED, FlagChange.RAISED):
            self._session.channel.send({"type": "warning", "kind": str(flag.kind),
                                        "severity": str(flag.severity),
                                        "message": CANDIDATE_MESSAGES[flag.kind]})
        await self._bus.publish(session_topic(flag.session_id),
                                {"type": "flag", "session_id": flag.session_id,
                                 "flag": wire})
        await self._outlet.emit(f"flag.{event.change}", self._session.record, {"flag": wire})

    async def status(self, status: dict[str, Any]) -> None:
        self._session.channel.send(status)
        await self._bus.publish(session_topic(self._session.session_id), status)


def session_message(session_id: str, status: str) -> Message:
    return {"type": "session", "session_id": session_id, "status": status}
