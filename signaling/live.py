"""Live sessions: one aiortc peer and one pipeline per candidate, plus proctor watchers.

The hub owns what every session shares (detectors, thread pools, store, bus,
metrics) and each :class:`LiveSession` owns its peer, track readers, pipeline,
evidence recorder and candidate DataChannel. Flags reach the store before anyone
hears of them (:class:`SessionOutlet`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
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

from proctor.bus import EventBus, Message, session_topic
from proctor.capacity import (
    RETRY_AFTER_SECONDS,
    CapacityPlan,
    CpuMeter,
    LoadRegulator,
    plan_capacity,
    usable_cores,
)
from proctor.config import Config
from proctor.detectors.base import Detector
from proctor.detectors.identity import Embedding
from proctor.enrollment import load_enrollment
from proctor.evidence import EvidenceRecorder
from proctor.flags.messages import CANDIDATE_MESSAGES
from proctor.flags.model import utc_now_iso
from proctor.flags.rules import Rule, apply_policy, rules_from_config
from proctor.flags.tracker import FlagChange, FlagEvent
from proctor.media.clock import MediaClock
from proctor.media.webrtc import TrackReader
from proctor.metrics import Metrics
from proctor.pipeline.session import SessionPipeline
from proctor.report import build_report
from proctor.store.base import (
    ClipRecord,
    SessionRecord,
    SessionStatus,
    Store,
    TranscriptSegment,
)
from proctor.threads import named_pool
from proctor.transcript import transcript_document
from proctor.transcript.worker import SpeechToText, TranscriptWorker
from signaling.channels import ChannelSender, error_message, parse_message
from signaling.errors import ApiError

log = logging.getLogger("proctor.live")

TRANSCRIPT_WAIT_SECONDS = 10.0  # how long POST /end waits for the transcript to catch up
TRANSCRIPT_CATCH_UP_SECONDS = 3600.0  # after that it finishes in the background

REGULATE_SECONDS = 2.0  # how often the load regulator looks at the sessions' lag

CANDIDATE_CHANNEL = "proctor"
ALERTS_CHANNEL = "alerts"


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


def decision_delay(rules: tuple[Rule, ...], config: Config) -> float:
    """The longest a flag's onset can precede the moment the tracker opens it."""
    first_levels = [min(level.seconds for level in rule.levels) for rule in rules]
    return max(first_levels, default=0.0) + config.flags.gap_seconds


def _ended(record: SessionRecord) -> Message:
    return {"type": "session", "session_id": record.session_id, "status": "ended"}


class SessionOutlet:
    """The pipeline's sink: store first, then the candidate's channel and the bus."""

    def __init__(self, session: LiveSession, hub: SessionHub) -> None:
        self._session = session
        self._hub = hub

    async def flag_event(self, event: FlagEvent) -> None:
        flag = event.flag
        await self._hub.store.save_flag(flag)
        wire = flag.to_dict()
        self._session.channel.send({"type": "flag", "flag": wire})
        if event.change in (FlagChange.OPENED, FlagChange.RAISED):
            self._session.channel.send({"type": "warning", "kind": str(flag.kind),
                                        "severity": str(flag.severity),
                                        "message": CANDIDATE_MESSAGES[flag.kind]})
        await self._hub.bus.publish(session_topic(flag.session_id),
                                    {"type": "flag", "session_id": flag.session_id,
                                     "flag": wire})

    async def status(self, status: dict[str, Any]) -> None:
        self._session.channel.send(status)
        await self._hub.bus.publish(session_topic(self._session.session_id), status)


@dataclass
class LiveSession:
    record: SessionRecord
    clock: MediaClock
    channel: ChannelSender
    pipeline: SessionPipeline | None = None
    pc: RTCPeerConnection | None = None
    readers: list[TrackReader] = field(default_factory=list)
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def session_id(self) -> str:
        return self.record.session_id


class SessionHub:
    def __init__(self, config: Config, store: Store, bus: EventBus, metrics: Metrics,
                 detectors: list[Detector], transcriber: SpeechToText | None = None) -> None:
        self.config = config
        self.transcriber = transcriber  # None: transcription off
        self.store = store
        self.bus = bus
        self.metrics = metrics
        self.detectors = detectors
        self.rules = rules_from_config(config.flags.rules)
        self.inference = named_pool(config.pipeline.workers, "infer")
        self.encoding = named_pool(config.pipeline.workers, "evidence")
        self.sessions: dict[str, LiveSession] = {}
        # The session limit: rtc.max_sessions, or one until plan_capacity() has measured.
        limit = config.rtc.max_sessions
        self.capacity = CapacityPlan(limit or 1, "config" if limit else "unmeasured")
        self.cpu = CpuMeter(usable_cores())
        self.regulator = LoadRegulator(config)  # the SPEC's degradation order under overload
        self._regulating: asyncio.Task[None] | None = None
        self._admitting: set[str] = set()  # given a slot, not yet in self.sessions
        self.watchers: set[RTCPeerConnection] = set()
        self._locks: dict[str, asyncio.Lock] = {}
        self._background: set[asyncio.Task[Any]] = set()  # transcripts finishing after /end

    # Candidate peers --------------------------------------------------------------

    async def connect_candidate(self, record: SessionRecord, sdp: str,
                                sdp_type: str) -> RTCSessionDescription:
        if record.status == SessionStatus.ENDED:
            raise ApiError(409, "session_ended", "this session has ended")
        check_offer(sdp, sdp_type)
        async with self._lock(record.session_id):
            if record.status == SessionStatus.ENDED:  # type: ignore[comparison-overlap]
                # it ended while we waited for the lock
                raise ApiError(409, "session_ended", "this session has ended")
            session = self.sessions.get(record.session_id)
            if session is None:  # a reconnect of a session live here is always admitted
                self._admit(record.session_id)
            try:
                pc = RTCPeerConnection(rtc_configuration(self.config))
                session = session or await self._go_live(record)
                self._wire_peer(session, pc)
                answer = await answer_offer(pc, sdp, sdp_type)
                await self._replace_peer(session, pc)
                return answer
            finally:
                self._admitting.discard(record.session_id)

    def live_count(self) -> int:
        """Sessions holding a slot: live here, or on their way (admitted, going live).
        A slot is freed when the session leaves ``sessions``: at its end (POST /end, or
        shutdown). A session whose peer dropped keeps its slot for its reconnect."""
        return len(self.sessions) + len(self._admitting)

    def _admit(self, session_id: str) -> None:
        """Give a new session a slot, or refuse it (503) with nothing stored or changed."""
        limit = self.capacity.max_sessions
        if self.live_count() >= limit:
            self.metrics.offers_refused.inc()
            log.info("session %s refused: at capacity (%d live)", session_id, limit)
            plural = "" if limit == 1 else "s"
            raise ApiError(503, "at_capacity",
                           f"This server is full: it is already running its limit of {limit}"
                           f" live session{plural}. Please try again in"
                           f" {RETRY_AFTER_SECONDS} s.",
                           headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
        self._admitting.add(session_id)

    async def plan_capacity(self) -> None:
        """At start-up: this node's session limit, configured or measured (logged), and
        the load regulator that degrades in the stated order under transient overload."""
        self.capacity = await plan_capacity(self.config, self.detectors, self.inference)
        self.metrics.sessions_capacity.set(self.capacity.max_sessions)
        if self._regulating is None:
            self._regulating = asyncio.get_running_loop().create_task(
                self._regulate(), name="load-regulator")

    async def _regulate(self) -> None:
        while True:
            await asyncio.sleep(REGULATE_SECONDS)
            try:
                pipelines = [s.pipeline for s in self.sessions.values() if s.pipeline]
                level = self.regulator.step(time.monotonic(), pipelines)
                self.metrics.degradation_level.set(int(level))
            except Exception:
                log.exception("load regulation failed")

    async def load_enrollment(self, candidate_id: str) -> Embedding | None:
        """The candidate's decrypted face embedding, or None (not enrolled, or unusable)."""
        return await load_enrollment(self.store, self.config, candidate_id)

    async def _go_live(self, record: SessionRecord) -> LiveSession:
        session = LiveSession(record=record, clock=MediaClock(),
                              channel=ChannelSender(CANDIDATE_CHANNEL, self.metrics))

        rules = apply_policy(self.rules, record.policy, record.accommodations)
        enrollment = await self.load_enrollment(record.candidate_id)
        evidence = EvidenceRecorder(record.session_id, self.config.evidence,
                                    self.config.clips_dir, self.encoding, self._clip_written,
                                    lookback_seconds=decision_delay(rules, self.config))
        session.pipeline = SessionPipeline(
            session_id=record.session_id, candidate_id=record.candidate_id,
            config=self.config, detectors=self.detectors, executor=self.inference,
            rules=rules, sink=SessionOutlet(session, self), metrics=self.metrics,
            clock=session.clock, evidence=evidence, enrollment=enrollment,
            transcript=self._transcript_worker(record.session_id))
        self.regulator.join(session.pipeline)
        session.pipeline.start()
        self.sessions[record.session_id] = session
        self.metrics.sessions_live.set(len(self.sessions))
        record.status, record.started_at = SessionStatus.LIVE, utc_now_iso()
        await self.store.update_session(record.session_id, status=SessionStatus.LIVE,
                                        started_at=record.started_at)
        await self.bus.publish(session_topic(record.session_id),
                               {"type": "session", "session_id": record.session_id,
                                "status": "live"})
        log.info("session %s live", record.session_id)
        return session

    def _wire_peer(self, session: LiveSession, pc: RTCPeerConnection) -> None:
        sid = session.session_id

        @pc.on("datachannel")
        def on_datachannel(channel: RTCDataChannel) -> None:
            if channel.label != CANDIDATE_CHANNEL:
                log.info("session %s: ignoring channel %r", sid, channel.label)
                return
            session.channel.attach(channel)
            channel.on("message", lambda raw: self._on_candidate_message(session, raw))

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
            if session.pc is pc and session.pipeline is not None:
                session.pipeline.media_connected = pc.connectionState == "connected"
            if pc.connectionState == "failed":
                await pc.close()

        asyncio.get_running_loop().call_later(
            self.config.rtc.connect_timeout_seconds,
            lambda: asyncio.ensure_future(self._close_if_unconnected(sid, pc)))

    async def _close_if_unconnected(self, session_id: str, pc: RTCPeerConnection) -> None:
        if pc.connectionState not in ("connected", "closed"):
            log.warning("session %s: peer did not connect in time; closing it", session_id)
            await pc.close()

    async def _replace_peer(self, session: LiveSession, pc: RTCPeerConnection) -> None:
        """A reconnect brings a new peer; the pipeline and its flags carry on."""
        old, session.pc = session.pc, pc
        if old is not None:
            await old.close()

    def _on_candidate_message(self, session: LiveSession, raw: str | bytes) -> None:
        try:
            message = parse_message(raw)
        except ValueError as exc:
            session.channel.send(error_message(str(exc)))
            return
        if message["type"] == "ping":
            session.channel.send({"type": "pong", "media_time": round(session.clock.now(), 3)})
        elif message["type"] != "event":
            session.channel.send(error_message(f"unknown message type {message['type']!r}"))
        # Telemetry events arrive over HTTP (POST /events), where they are stored first.

    # Telemetry --------------------------------------------------------------------

    def media_time_of(self, session_id: str, age_seconds: float) -> float | None:
        session = self.sessions.get(session_id)
        if session is None:
            return None
        # An event before the first frame starts the session's clock (media time 0 is
        # the first thing the session knew of): it still gets its place and its flag.
        session.clock.start()
        return max(0.0, session.clock.now() - max(0.0, age_seconds))

    async def record_event(self, session_id: str, event_type: str, media_time: float) -> None:
        session = self.sessions.get(session_id)
        if session is not None and session.pipeline is not None:
            await session.pipeline.record_event(event_type, media_time)

    # Ending -----------------------------------------------------------------------

    async def end(self, record: SessionRecord) -> dict[str, Any]:
        """Close open flags, finish clips, build and store the report. Idempotent."""
        async with self._lock(record.session_id):
            if record.status == SessionStatus.ENDED and record.report is not None:
                return record.report
            session = self.sessions.pop(record.session_id, None)
            self.metrics.sessions_live.set(len(self.sessions))
            stats: dict[str, Any] = {}
            transcript_done = True
            if session is not None:
                stats = await self._stop(session, _ended(record))
                transcript_done = await self._finish_transcript(session)
            flags = await self.store.list_flags(record.session_id)
            report = build_report(record, flags, stats, self.config.scoring)
            report["transcript"] = transcript_document(
                await self.store.list_transcript(record.session_id))
            report["transcript"]["complete"] = transcript_done
            record.status, record.ended_at, record.report = (SessionStatus.ENDED, utc_now_iso(),
                                                             report)
            await self.store.update_session(record.session_id, status=SessionStatus.ENDED,
                                            ended_at=record.ended_at, report=report)
            await self.bus.publish(session_topic(record.session_id), _ended(record))
            log.info("session %s ended: %s", record.session_id, report["recommendation"])
            return report

    async def _stop(self, session: LiveSession, farewell: Message) -> dict[str, Any]:
        """Stop the media, close the flags (announced), say goodbye, close the peer."""
        assert session.pipeline is not None
        for reader in session.readers:
            await reader.stop()
        await session.pipeline.aclose()
        stats = session.pipeline.stats()
        stats["focus"] = session.pipeline.focus()
        session.channel.send(farewell)
        if session.pc is not None:
            await asyncio.sleep(0.1)  # let the final flag and "ended" messages leave
            await session.pc.close()
        session.ended.set()
        return stats

    # Transcript --------------------------------------------------------------------

    def _transcript_worker(self, session_id: str) -> TranscriptWorker | None:
        if self.transcriber is None:
            return None
        settings = self.config.detectors.transcription
        return TranscriptWorker(session_id, self.transcriber, self._transcript_segment,
                                max_queue_seconds=settings.max_queue_seconds)

    async def _transcript_segment(self, segment: TranscriptSegment) -> None:
        await self.store.add_transcript_segment(segment)
        await self.bus.publish(session_topic(segment.session_id),
                               {"type": "transcript", "session_id": segment.session_id,
                                "segment": segment.to_dict()})

    async def _finish_transcript(self, session: LiveSession) -> bool:
        """Wait a little for the transcript to catch up; if it is further behind, it
        finishes in the background and the stored report is completed then."""
        worker = session.pipeline.transcript if session.pipeline is not None else None
        if worker is None:
            return True
        drain = asyncio.get_running_loop().create_task(
            worker.drain(TRANSCRIPT_CATCH_UP_SECONDS),
            name=f"transcript-drain:{session.session_id}")
        done, _ = await asyncio.wait({drain}, timeout=TRANSCRIPT_WAIT_SECONDS)
        if done:
            return True
        self._background.add(drain)
        drain.add_done_callback(self._background.discard)
        drain.add_done_callback(
            lambda task: None if task.cancelled() else self._complete_report(session.record))
        return False

    def _complete_report(self, record: SessionRecord) -> None:
        task = asyncio.get_running_loop().create_task(
            self._store_transcript(record), name=f"report-transcript:{record.session_id}")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _store_transcript(self, record: SessionRecord) -> None:
        if record.report is None:
            return
        transcript = transcript_document(await self.store.list_transcript(record.session_id))
        record.report["transcript"] = {**transcript, "complete": True}
        await self.store.update_session(record.session_id, report=record.report)

    async def _clip_written(self, clip: ClipRecord) -> None:
        await self.store.save_clip(clip)
        self.metrics.clips_written.inc()
        await self.bus.publish(session_topic(clip.session_id),
                               {"type": "clip", "session_id": clip.session_id,
                                "clip_id": clip.clip_id, "flag_id": clip.flag_id})

    def _lock(self, session_id: str) -> asyncio.Lock:
        return self._locks.setdefault(session_id, asyncio.Lock())

    # Proctor watchers -------------------------------------------------------------

    async def connect_watcher(self, session_ids: list[str], sdp: str,
                              sdp_type: str) -> RTCSessionDescription:
        pc = RTCPeerConnection(rtc_configuration(self.config))
        self.watchers.add(pc)
        watcher = _Watcher(self, pc, session_ids)

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
            return await answer_offer(pc, sdp, sdp_type)
        except ApiError:
            self.watchers.discard(pc)
            raise

    # Shutdown ---------------------------------------------------------------------

    async def close(self) -> None:
        """Server shutdown: end every live session (flushing clips), close watchers."""
        for session in list(self.sessions.values()):
            try:
                await self.end(session.record)
            except Exception:
                log.exception("session %s: ending at shutdown failed", session.session_id)
        for pc in list(self.watchers):
            await pc.close()
        for task in list(self._background):  # transcripts still catching up are cut short
            task.cancel()
        if self._background:
            await asyncio.wait(self._background, timeout=5)
        if self._regulating is not None:
            self._regulating.cancel()
        self.inference.shutdown(wait=True, cancel_futures=True)
        self.encoding.shutdown(wait=True)


class _Watcher:
    """Forwards the bus messages of the watched sessions to one ``alerts`` channel."""

    def __init__(self, hub: SessionHub, pc: RTCPeerConnection, session_ids: list[str]) -> None:
        self._hub = hub
        self._pc = pc
        self._session_ids = session_ids
        self._sender = ChannelSender(ALERTS_CHANNEL, hub.metrics)
        self._subscription = hub.bus.subscribe([session_topic(s) for s in session_ids])
        self._task: asyncio.Task[None] | None = None

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
        for session_id in self._session_ids:
            record = await self._hub.store.get_session(session_id)
            if record is None:
                continue
            self._sender.send({"type": "session", "session_id": session_id,
                               "status": str(record.status)})
            for flag in await self._hub.store.list_flags(session_id):
                self._sender.send({"type": "flag", "session_id": session_id,
                                   "flag": flag.to_dict()})

    def stop(self) -> None:
        self._subscription.close()
        if self._task is not None:
            self._task.cancel()
