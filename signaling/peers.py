"""WebRTC for sessions: the candidate's peer and the proctors' watcher peers.

This module only translates: SDP offers become aiortc peers, tracks become the engine's
track readers, DataChannels become bounded senders. The session itself (going live,
admission, ownership, ending) belongs to :class:`~proctor.sessions.SessionService`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiortc import (
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamTrack
from aiortc.sdp import SessionDescription

from proctor.bus import session_topic
from proctor.config import Config
from proctor.media.webrtc import TrackReader
from proctor.sessions import LiveSession, SessionEnded, SessionService
from proctor.sessions.service import FINISHED
from proctor.store.base import SessionRecord
from signaling.channels import ChannelSender, error_message, parse_message
from signaling.errors import ApiError

log = logging.getLogger("proctor.peers")

CANDIDATE_CHANNEL = "proctor"
ALERTS_CHANNEL = "alerts"
OFFER_ACTION = "offer"  # a candidate's offer routed to the node that owns its session


def rtc_configuration(config: Config) -> RTCConfiguration:
    servers = [RTCIceServer(urls=s.urls, username=s.username or None,
                            credential=s.credential or None) for s in config.rtc.ice_servers]
    return RTCConfiguration(iceServers=servers)


def check_offer(sdp: str, sdp_type: str) -> None:
    """Refuse what cannot be an offer before any state changes (400, nothing kept)."""
    if sdp_type != "offer":
        raise ApiError(400, "bad_sdp", "type must be 'offer'")
    try:
        parsed = SessionDescription.parse(sdp)
    except (ValueError, IndexError, KeyError, TypeError, AttributeError) as exc:
        raise ApiError(400, "bad_sdp", f"the SDP offer could not be parsed: {exc}") from exc
    if not parsed.media:
        raise ApiError(400, "bad_sdp", "the SDP offer has no media or data section")


async def answer_offer(pc: RTCPeerConnection, sdp: str, sdp_type: str) -> RTCSessionDescription:
    """Apply the browser's offer and produce our answer; bad SDP is the caller's 400."""
    check_offer(sdp, sdp_type)
    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
    except (ValueError, AttributeError, IndexError, KeyError, TypeError) as exc:
        await pc.close()
        raise ApiError(400, "bad_sdp", f"the SDP offer could not be used: {exc}") from exc
    description = pc.localDescription
    assert description is not None
    return description


class Peers:
    """Every peer this node holds: one per connected candidate, one per watcher."""

    def __init__(self, service: SessionService) -> None:
        self._service = service
        self._config = service.config
        self.watchers: set[RTCPeerConnection] = set()
        service.serve(OFFER_ACTION, self._routed_offer)

    # Candidates -------------------------------------------------------------------

    async def candidate_offer(self, record: SessionRecord, sdp: str,
                              sdp_type: str) -> dict[str, str]:
        """The answer to a candidate's offer, from the node that is to hold its media."""
        if record.status in FINISHED:
            raise SessionEnded()
        check_offer(sdp, sdp_type)
        target = await self._service.offer_target(record)
        if target != self._service.node_id:
            log.info("session %s: offer routed to node %s", record.session_id, target)
            return {k: str(v) for k, v in (await self._service.on_owner(
                target, OFFER_ACTION, record.session_id, {"sdp": sdp, "type": sdp_type})).items()}
        answer = await self.connect_candidate(record, sdp, sdp_type)
        return {"sdp": answer.sdp, "type": answer.type}

    async def _routed_offer(self, session_id: str, args: dict[str, Any]) -> dict[str, Any]:
        record = await self._service.store.get_session(session_id)
        if record is None:
            raise ApiError(404, "not_found", "no such session")
        record = await self._service.current(record)
        return await self.candidate_offer(record, str(args.get("sdp", "")),
                                          str(args.get("type", "")))

    async def connect_candidate(self, record: SessionRecord, sdp: str,
                                sdp_type: str) -> RTCSessionDescription:
        def channel() -> ChannelSender:
            return ChannelSender(CANDIDATE_CHANNEL, self._service.metrics)

        async with self._service.connecting(record, channel) as session:
            pc = RTCPeerConnection(rtc_configuration(self._config))
            self._wire_candidate(session, pc)
            answer = await answer_offer(pc, sdp, sdp_type)
            await self._replace_peer(session, pc)
            return answer

    def _wire_candidate(self, session: LiveSession, pc: RTCPeerConnection) -> None:
        sid = session.session_id
        sender = session.channel
        assert isinstance(sender, ChannelSender)

        @pc.on("datachannel")
        def on_datachannel(channel: RTCDataChannel) -> None:
            if channel.label != CANDIDATE_CHANNEL:
                log.info("session %s: ignoring channel %r", sid, channel.label)
                return
            sender.attach(channel)
            channel.on("message", lambda raw: _on_candidate_message(session, sender, raw))

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            pipeline = session.pipeline
            assert pipeline is not None
            if track.kind == "audio":
                pipeline.audio_expected = True
                reader = TrackReader(sid, track, session.clock, on_audio=pipeline.offer_audio)
            else:
                reader = TrackReader(sid, track, session.clock, on_video=pipeline.offer_video)
            session.readers.append(reader)
            reader.start()

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            log.info("session %s: peer %s", sid, pc.connectionState)
            if session.peer is pc and session.pipeline is not None:
                session.pipeline.media_connected = pc.connectionState == "connected"
            if pc.connectionState == "failed":
                await pc.close()

        asyncio.get_running_loop().call_later(
            self._config.rtc.connect_timeout_seconds,
            lambda: asyncio.ensure_future(_close_if_unconnected(sid, pc)))

    async def _replace_peer(self, session: LiveSession, pc: RTCPeerConnection) -> None:
        """A reconnect brings a new peer; the pipeline and its flags carry on."""
        old, session.peer = session.peer, pc
        if old is not None:
            await old.close()

    # Proctor watchers -------------------------------------------------------------

    async def connect_watcher(self, session_ids: list[str], sdp: str,
                              sdp_type: str) -> RTCSessionDescription:
        pc = RTCPeerConnection(rtc_configuration(self._config))
        self.watchers.add(pc)
        watcher = _Watcher(self._service, pc, session_ids)

        @pc.on("datachannel")
        def on_datachannel(channel: RTCDataChannel) -> None:
            if channel.label == ALERTS_CHANNEL:
                watcher.attach(channel)

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                watcher.stop()
                self.watchers.discard(pc)
                await pc.close()

        try:
            await watcher.subscribe()  # before the answer: nothing published is missed
            return await answer_offer(pc, sdp, sdp_type)
        except ApiError:
            watcher.stop()
            self.watchers.discard(pc)
            raise

    async def close(self) -> None:
        for pc in list(self.watchers):
            await pc.close()


async def _close_if_unconnected(session_id: str, pc: RTCPeerConnection) -> None:
    if pc.connectionState not in ("connected", "closed"):
        log.warning("session %s: peer did not connect in time; closing it", session_id)
        await pc.close()


def _on_candidate_message(session: LiveSession, sender: ChannelSender,
                          raw: str | bytes) -> None:
    try:
        message = parse_message(raw)
    except ValueError as exc:
        sender.send(error_message(str(exc)))
        return
    if message["type"] == "ping":
        sender.send({"type": "pong", "media_time": round(session.clock.now(), 3)})
    elif message["type"] != "event":
        sender.send(error_message(f"unknown message type {message['type']!r}"))
    # Telemetry events arrive over HTTP (POST /events), where they are stored first.


class _Watcher:
    """Forwards the bus messages of the watched sessions to one ``alerts`` channel.

    It subscribes before it reads the snapshot from the store, so a flag raised in
    between arrives twice at worst (flags carry their id), never not at all."""

    def __init__(self, service: SessionService, pc: RTCPeerConnection,
                 session_ids: list[str]) -> None:
        self._service = service
        self._pc = pc
        self._session_ids = session_ids
        self._sender = ChannelSender(ALERTS_CHANNEL, service.metrics)
        self._subscription: Any = None
        self._task: asyncio.Task[None] | None = None

    async def subscribe(self) -> None:
        self._subscription = await self._service.bus.subscribe(
            [session_topic(s) for s in self._session_ids])

    def attach(self, channel: RTCDataChannel) -> None:
        self._sender.attach(channel)
        channel.on("message", self._on_message)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._forward(), name=f"alerts:{id(self._pc):x}")

    def _on_message(self, raw: str | bytes) -> None:
        try:
            message = parse_message(raw)
        except ValueError as exc:
            self._sender.send(error_message(str(exc)))
            return
        if message["type"] == "ping":
            self._sender.send({"type": "pong", "time": time.time()})

    async def _forward(self) -> None:
        await self._send_snapshot()
        async for message in self._subscription:
            self._sender.send(message)

    async def _send_snapshot(self) -> None:
        """A proctor who joins late first gets each session's state and flags so far."""
        store = self._service.store
        for session_id in self._session_ids:
            record = await store.get_session(session_id)
            if record is None:
                continue
            self._sender.send({"type": "session", "session_id": session_id,
                               "status": str(record.status)})
            for flag in await store.list_flags(session_id):
                self._sender.send({"type": "flag", "session_id": session_id,
                                   "flag": flag.to_dict()})

    def stop(self) -> None:
        if self._subscription is not None:
            self._subscription.close()
        if self._task is not None:
            self._task.cancel()
