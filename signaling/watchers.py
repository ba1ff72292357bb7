"""Proctor watchers: one peer per dashboard, an ``alerts`` DataChannel and, on request,
the live picture and sound of one candidate.

Alerts come from the bus, so a watcher on any node hears every watched session. The
live picture is relayed by the node that holds the candidate's media: a watch offer that
asks for the video of a session owned elsewhere is answered by its owner (routed over
the bus, like a candidate's reconnect), and a ``{"type": "watch", "video": id}`` message
switches the picture among the sessions this node holds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from aiortc import RTCDataChannel, RTCPeerConnection

from proctor.bus import Message, Subscription, exam_topic, session_topic
from proctor.sessions import SessionService
from proctor.store.base import DEFAULT_TENANT, SessionRecord
from proctor.tasks import BackgroundTasks
from signaling.channels import ChannelSender, error_message, parse_message
from signaling.relay import LiveRelay

log = logging.getLogger("proctor.watchers")

ALERTS_CHANNEL = "alerts"
SNAPSHOT_LIMIT = 500


@dataclass(frozen=True)
class WatchScope:
    """What a proctor token lets its holder watch: sessions, and whole exams."""

    sessions: frozenset[str] = frozenset()
    exams: frozenset[str] = frozenset()
    tenant: str = DEFAULT_TENANT  # exams, and so sessions, are the tenant's own

    def allows(self, record: SessionRecord) -> bool:
        return record.tenant == self.tenant and (
            record.session_id in self.sessions
            or (record.exam_id is not None and record.exam_id in self.exams))

    def to_dict(self) -> dict[str, Any]:
        return {"sessions": sorted(self.sessions), "exams": sorted(self.exams),
                "tenant": self.tenant}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> WatchScope:
        return cls(frozenset(map(str, raw.get("sessions", []))),
                   frozenset(map(str, raw.get("exams", []))),
                   str(raw.get("tenant", DEFAULT_TENANT)))


@dataclass
class Watcher:
    """Forwards the bus messages of the watched sessions to one ``alerts`` channel.

    It subscribes before it reads the snapshot from the store, so a flag raised in
    between arrives twice at worst (flags carry their id), never not at all."""

    service: SessionService
    pc: RTCPeerConnection
    scope: WatchScope
    watched: set[str]
    relay: LiveRelay | None = None
    sender: ChannelSender = field(init=False)
    _subscriptions: list[Subscription] = field(default_factory=list)
    _tasks: BackgroundTasks = field(init=False)
    _started: bool = False

    def __post_init__(self) -> None:
        self.sender = ChannelSender(ALERTS_CHANNEL, self.service.metrics)
        self._tasks = BackgroundTasks(f"{id(self.pc):x}")

    async def subscribe(self) -> None:
        """Before the answer: the watched sessions' topics and the exams' topics."""
        topics = [session_topic(s) for s in sorted(self.watched)]
        topics += [exam_topic(e, self.scope.tenant) for e in sorted(self.scope.exams)]
        if topics:
            self._subscriptions.append(await self.service.bus.subscribe(topics))

    def attach(self, channel: RTCDataChannel) -> None:
        self.sender.attach(channel)
        channel.on("message", self._on_message)
        if not self._started:
            self._started = True
            self._spawn(self._start(), "snapshot")

    async def _start(self) -> None:
        await self._send_snapshot()
        for subscription in list(self._subscriptions):
            self._spawn(self._forward(subscription), "forward")

    async def _forward(self, subscription: Subscription) -> None:
        async for message in subscription:
            if message.get("type") == "session" and message.get("exam_id"):
                await self._exam_session(message)
            self.sender.send(message)

    async def _exam_session(self, message: Message) -> None:
        """A session of a watched exam appeared: watch it too from now on."""
        session_id = str(message["session_id"])
        if session_id in self.watched:
            return
        self.watched.add(session_id)
        subscription = await self.service.bus.subscribe([session_topic(session_id)])
        self._subscriptions.append(subscription)
        self._spawn(self._forward(subscription), "forward")

    async def _send_snapshot(self) -> None:
        """A proctor who joins late first gets each session's state and flags so far."""
        store = self.service.store
        if self.scope.exams:
            for record in await store.list_sessions(limit=SNAPSHOT_LIMIT,
                                                    tenant=self.scope.tenant):
                if record.exam_id in self.scope.exams and record.session_id not in self.watched:
                    self.watched.add(record.session_id)
                    self._subscriptions.append(await self.service.bus.subscribe(
                        [session_topic(record.session_id)]))
        for session_id in sorted(self.watched):
            found = await store.get_session(session_id)
            if found is None:
                continue
            record = found
            self.sender.send({"type": "session", "session_id": session_id,
                              "status": str(record.status), "exam_id": record.exam_id,
                              "candidate_id": record.candidate_id, "node": record.owner_node})
            for flag in await store.list_flags(session_id):
                self.sender.send({"type": "flag", "session_id": session_id,
                                  "flag": flag.to_dict()})

    def _on_message(self, raw: str | bytes) -> None:
        """Never raises: an exception in a DataChannel handler would end the peer."""
        try:
            self._answer(parse_message(raw))
        except ValueError as exc:
            self.sender.send(error_message(str(exc)))
        except Exception:
            log.exception("watcher: handling a channel message failed")
            self.sender.send(error_message("the message could not be handled"))

    def _answer(self, message: dict[str, Any]) -> None:
        if message["type"] == "ping":
            self.sender.send({"type": "pong", "time": time.time()})
        elif message["type"] == "watch":
            self._spawn(self._switch(message.get("video")), "watch")
        else:
            self.sender.send(error_message(f"unknown message type {message['type']!r}"))

    async def _switch(self, session_id: Any) -> None:
        """Relay another session's picture, if this node holds its media."""
        reply: Message = {"type": "watch", "video": session_id}
        record = await self.service.store.get_session(str(session_id)) \
            if isinstance(session_id, str) else None
        if record is None or not self.scope.allows(record):
            self.sender.send(error_message("this token does not cover that session"))
            return
        live = self.service.sessions.get(record.session_id)
        if self.relay is None:
            reply["status"] = "no_video"  # offer again with "video" to get a picture
        elif live is not None:
            self.relay.switch(live)
            reply["status"] = "relaying"
        else:
            # Its media is on another node (reconnect with a new offer for this video:
            # it is routed there), or nowhere (not live).
            reply["status"] = "elsewhere" if record.owner_node else "not_live"
            reply["node"] = record.owner_node
        self.sender.send(reply)

    def _spawn(self, work: Coroutine[Any, Any, None], what: str) -> None:
        self._tasks.spawn(work, f"watcher-{what}")

    async def stop(self) -> None:
        for subscription in self._subscriptions:
            subscription.close()
        await self._tasks.stop()
        if self.relay is not None:
            self.relay.stop()


def wire_watcher(pc: RTCPeerConnection, watcher: Watcher,
                 on_closed: Callable[[RTCPeerConnection], None]) -> None:
    @pc.on("datachannel")
    def on_datachannel(channel: RTCDataChannel) -> None:
        if channel.label == ALERTS_CHANNEL:
            watcher.attach(channel)

    @pc.on("connectionstatechange")
    async def on_state() -> None:
        if pc.connectionState in ("failed", "closed"):
            await watcher.stop()
            on_closed(pc)
            await pc.close()
