"""WebRTC for sessions: the candidate's peer and the proctors' watcher peers.

This module only translates: SDP offers become aiortc peers, tracks become the engine's
track readers, DataChannels become bounded senders. The session itself (going live,
admission, ownership, ending) belongs to :class:`~proctor.sessions.SessionService`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
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

from proctor.config import Config
from proctor.media.webrtc import TrackReader
from proctor.sessions import LiveSession, SessionEnded, SessionService
from proctor.sessions.service import FINISHED
from proctor.store.base import SessionRecord
from signaling.channels import ChannelSender, error_message, parse_message
from signaling.errors import ApiError
from signaling.relay import LiveRelay
from signaling.watchers import Watcher, WatchScope, wire_watcher

log = logging.getLogger("proctor.peers")

CANDIDATE_CHANNEL = "proctor"
OFFER_ACTION = "offer"  # a candidate's offer routed to the node that owns its session
RELAY_ACTION = "relay"  # a watcher's offer for a live picture, routed to the media's node


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
    except Exception as exc:  # aiortc's parser asserts, indexes and converts blindly
        raise ApiError(400, "bad_sdp", f"the SDP offer could not be parsed: {_words(exc)}"
                       ) from exc
    if not parsed.media:
        raise ApiError(400, "bad_sdp", "the SDP offer has no media or data section")
    _check_bundle(parsed)


def _check_bundle(parsed: SessionDescription) -> None:
    """Every mid a BUNDLE group names must be a section's: aiortc takes the group's
    first mid as the transport's owner, and for a mid no section has it leaves the
    peer half built, so that even closing it raised (a 500, and the peer's sockets left
    open; found by tests/fuzz/test_media_fuzz.py)."""
    mids = {media.rtp.muxId for media in parsed.media}
    for group in parsed.group:
        missing = [str(mid) for mid in group.items if mid not in mids]
        if group.semantic == "BUNDLE" and missing:
            raise ApiError(400, "bad_sdp", f"the BUNDLE group names mids no section has: "
                           f"{', '.join(missing)[:100]}")


async def answer_offer(pc: RTCPeerConnection, sdp: str, sdp_type: str,
                       before_answer: Callable[[RTCPeerConnection], None] | None = None
                       ) -> RTCSessionDescription:
    """Apply the browser's offer and produce our answer; bad SDP is the caller's 400.
    ``before_answer`` may add our tracks to the offer's transceivers."""
    check_offer(sdp, sdp_type)
    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        if before_answer is not None:
            before_answer(pc)
        await pc.setLocalDescription(await pc.createAnswer())
    except Exception as exc:  # whatever aiortc raises for an offer it cannot use
        await pc.close()
        raise ApiError(400, "bad_sdp", f"the SDP offer could not be used: {_words(exc)}"
                       ) from exc
    description = pc.localDescription
    assert description is not None
    return description


async def probe_offer(sdp: str, config: Config) -> None:
    """Apply the offer to a throwaway peer, so that an offer which parses but cannot be
    used is a 400 before the session goes live (nothing stored, announced or started)."""
    pc = RTCPeerConnection(rtc_configuration(config))
    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        await pc.createAnswer()
    except Exception as exc:
        raise ApiError(400, "bad_sdp", f"the SDP offer could not be used: {_words(exc)}"
                       ) from exc
    finally:
        await pc.close()


def _words(exc: Exception) -> str:
    return (str(exc) or type(exc).__name__)[:200]


class Peers:
    """Every peer this node holds: one per connected candidate, one per watcher."""

    def __init__(self, service: SessionService) -> None:
        self._service = service
        self._config = service.config
        self.watchers: set[RTCPeerConnection] = set()
        service.serve(OFFER_ACTION, self._routed_offer)
        service.serve(RELAY_ACTION, self._routed_relay)

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

        if record.session_id not in self._service.sessions:  # not live here yet
            await probe_offer(sdp, self._config)
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
                reader = TrackReader(sid, track, session.clock, on_audio=pipeline.offer_audio,
                                     taps=session.taps)
            else:
                reader = TrackReader(sid, track, session.clock, on_video=pipeline.offer_video,
                                     taps=session.taps, accept=pipeline.accepts_frame)
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

    async def watcher_offer(self, scope: WatchScope, wanted: list[str], video: str | None,
                            sdp: str, sdp_type: str) -> dict[str, str]:
        """A watcher's answer, from the node that holds ``video``'s media when a live
        picture is asked for (routed there over the bus), else from this node."""
        check_offer(sdp, sdp_type)
        if video is not None:
            record = await self._service.store.get_session(video)
            owner = record.owner_node if record is not None else None
            if owner and owner != self._service.node_id and video not in self._service.sessions:
                args = {"sdp": sdp, "type": sdp_type, "sessions": wanted, "video": video,
                        "scope": scope.to_dict()}
                result = await self._service.on_owner(owner, RELAY_ACTION, video, args)
                return {k: str(v) for k, v in result.items()}
        answer = await self.connect_watcher(scope, wanted, video, sdp, sdp_type)
        return {"sdp": answer.sdp, "type": answer.type}

    async def _routed_relay(self, session_id: str, args: dict[str, Any]) -> dict[str, Any]:
        answer = await self.connect_watcher(
            WatchScope.from_dict(dict(args.get("scope") or {})),
            [str(s) for s in args.get("sessions", [])], session_id,
            str(args.get("sdp", "")), str(args.get("type", "")))
        return {"sdp": answer.sdp, "type": answer.type}

    async def connect_watcher(self, scope: WatchScope, wanted: list[str], video: str | None,
                              sdp: str, sdp_type: str) -> RTCSessionDescription:
        pc = RTCPeerConnection(rtc_configuration(self._config))
        self.watchers.add(pc)
        relay = LiveRelay() if video is not None else None
        watcher = Watcher(self._service, pc, scope, set(wanted), relay)
        wire_watcher(pc, watcher, self.watchers.discard)

        def add_relay(peer: RTCPeerConnection) -> None:
            if relay is not None:
                peer.addTrack(relay.video)
                peer.addTrack(relay.audio)

        try:
            await watcher.subscribe()  # before the answer: nothing published is missed
            answer = await answer_offer(pc, sdp, sdp_type, before_answer=add_relay)
        except ApiError:
            await watcher.stop()
            self.watchers.discard(pc)
            raise
        if relay is not None and video is not None:
            relay.switch(self._service.sessions.get(video))
        return answer

    async def close(self) -> None:
        for pc in list(self.watchers):
            await pc.close()


async def _close_if_unconnected(session_id: str, pc: RTCPeerConnection) -> None:
    if pc.connectionState not in ("connected", "closed"):
        log.warning("session %s: peer did not connect in time; closing it", session_id)
        await pc.close()


def _on_candidate_message(session: LiveSession, sender: ChannelSender,
                          raw: str | bytes) -> None:
    """Never raises: an exception in a DataChannel handler would end the peer."""
    try:
        _answer_candidate(session, sender, parse_message(raw))
    except ValueError as exc:
        sender.send(error_message(str(exc)))
    except Exception:
        log.exception("session %s: handling a channel message failed", session.session_id)
        sender.send(error_message("the message could not be handled"))


def _answer_candidate(session: LiveSession, sender: ChannelSender,
                      message: dict[str, Any]) -> None:
    if message["type"] == "ping":
        sender.send({"type": "pong", "media_time": round(session.clock.now(), 3)})
    elif message["type"] != "event":
        sender.send(error_message(f"unknown message type {message['type']!r}"))
    # Telemetry events arrive over HTTP (POST /events), where they are stored first.
