"""The live-session service: the one thing signaling/ calls for a session's lifecycle.

It owns what every session on this node shares (detectors, thread pools, rules,
capacity and the load regulator) and the sessions live here. A session lives on one
node, its owner, recorded in the store; a call for a session owned elsewhere is routed
to its owner over the bus (:mod:`proctor.sessions.control`), so every node answers the
same. Sessions whose owner died are finished by a survivor (:mod:`.recovery`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict
from typing import Any

from proctor.bus import EventBus, exam_topic, session_topic
from proctor.capacity import (
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
from proctor.errors import ServiceError
from proctor.evidence import EvidenceRecorder
from proctor.evidence.storage import ClipStorage, clip_storage
from proctor.flags.model import utc_now_iso
from proctor.flags.rules import PolicyError, Rule, apply_policy, rules_from_config
from proctor.media.clock import MediaClock
from proctor.metrics import Metrics
from proctor.outbound import EventOutlet, NoOutlet
from proctor.pipeline.session import SessionPipeline
from proctor.report import build_report
from proctor.review import audit
from proctor.review.reports import current_report
from proctor.sessions.breaks import ACTIONS, BreakLimits, end_break, start_break
from proctor.sessions.control import ControlRouter
from proctor.sessions.live import CandidateLink, LiveSession, SessionOutlet, session_message
from proctor.sessions.nodes import NodeRegistry, is_alive, node_identity
from proctor.sessions.recovery import finish_orphan
from proctor.store.base import (
    DEFAULT_TENANT,
    BreakRecord,
    ClipRecord,
    EventRecord,
    NodeRecord,
    SessionRecord,
    SessionStatus,
    Store,
    StoreUnavailable,
    TranscriptSegment,
)
from proctor.store.outbox import StoreOutbox
from proctor.threads import named_pool
from proctor.transcript import transcript_document
from proctor.transcript.worker import SpeechToText, TranscriptWorker

log = logging.getLogger("proctor.sessions")

TRANSCRIPT_WAIT_SECONDS = 10.0  # how long ending waits for the transcript to catch up
TRANSCRIPT_CATCH_UP_SECONDS = 3600.0  # after that it finishes in the background
REGULATE_SECONDS = 2.0  # how often the load regulator looks at the sessions' lag
SUMMARY_TIMEOUT_SECONDS = 2.0  # a live summary is a nicety: never wait long for it

FINISHED = (SessionStatus.ENDED, SessionStatus.INTERRUPTED)


class SessionEnded(ServiceError):
    def __init__(self) -> None:
        super().__init__(409, "session_ended", "this session has ended")


class TryLater(ServiceError):
    """503: this node starts no new session now; ``retry_after`` seconds says when to
    come back (the Retry-After header, and the message's last words)."""

    def __init__(self, code: str, message: str, retry_after: int) -> None:
        super().__init__(503, code, f"{message} Please try again in {retry_after} s.",
                         headers={"Retry-After": str(retry_after)})


class AtCapacity(TryLater):
    def __init__(self, limit: int, retry_after: int) -> None:
        plural = "" if limit == 1 else "s"
        super().__init__("at_capacity",
                         f"This server is full: it is already running its limit of {limit}"
                         f" live session{plural}.", retry_after)


def decision_delay(rules: tuple[Rule, ...], config: Config) -> float:
    """The longest a flag's onset can precede the moment the tracker opens it."""
    first_levels = [min(level.seconds for level in rule.levels) for rule in rules]
    return max(first_levels, default=0.0) + config.flags.gap_seconds


class SessionService:
    def __init__(self, config: Config, store: Store, bus: EventBus, metrics: Metrics,
                 detectors: list[Detector], transcriber: SpeechToText | None = None,
                 outlet: EventOutlet | None = None) -> None:
        self.config = config
        self.outlet: EventOutlet = outlet or NoOutlet()  # webhooks hear of what happens
        self.transcriber = transcriber  # None: transcription off
        self.store = store
        self.bus = bus
        self.metrics = metrics
        self.detectors = detectors
        self._retry_after = config.rtc.retry_after_seconds  # every refused offer's Retry-After
        self.rules = rules_from_config(config.flags.rules)
        self.clips: ClipStorage = clip_storage(store, config.clips_in_store)
        # Live sessions' flags, events, transcript and clips: through a local outbox
        # while the store is away, so analysis goes on and nothing is lost.
        self.outbox = StoreOutbox(store, config.outbox_path, clips=self.clips,
                                  max_records=config.outbox.max_records,
                                  retry_seconds=config.outbox.retry_seconds,
                                  on_depth=metrics.outbox_depth.set,
                                  on_replayed=metrics.outbox_replayed.inc)
        self.inference = named_pool(config.pipeline.workers, "infer")
        self.encoding = named_pool(config.pipeline.workers, "evidence")
        self.sessions: dict[str, LiveSession] = {}
        # The session limit: rtc.max_sessions, or one until plan_capacity() has measured.
        limit = config.rtc.max_sessions
        self.capacity = CapacityPlan(limit or 1, "config" if limit else "unmeasured")
        self.cpu = CpuMeter(usable_cores())
        self.regulator = LoadRegulator(config)  # the SPEC's degradation order under overload
        self.node_id, address = node_identity(config)
        self.router = ControlRouter(bus, self.node_id, config.nodes.request_timeout_seconds)
        self.nodes = NodeRegistry(config, store, self.node_id, address,
                                  live_media_times=self._live_media_times,
                                  capacity=self.room,
                                  finish_dead_node=self._finish_dead_node)
        self.draining = False  # shutting down: no new session is admitted (see drain())
        self._regulating: asyncio.Task[None] | None = None
        self._admitting: set[str] = set()  # given a slot, not yet in self.sessions
        self._locks: dict[str, asyncio.Lock] = {}
        self._background: set[asyncio.Task[Any]] = set()  # transcripts finishing after end
        self._serve_control()

    # Start and stop ----------------------------------------------------------------

    async def start(self) -> None:
        """Measure capacity, join the deployment, and finish what a crash left behind."""
        self.capacity = await plan_capacity(self.config, self.detectors, self.inference)
        self.metrics.sessions_capacity.set(self.capacity.max_sessions)
        await self.router.start()
        await self._replay_outbox()
        await self._finish_own_orphans()
        await self.nodes.start()
        self._regulating = asyncio.get_running_loop().create_task(
            self._regulate(), name="load-regulator")

    async def close(self) -> None:
        """Shutdown (SIGTERM): drain, end every live session (flushing clips) within
        ``server.shutdown_seconds``, leave the deployment."""
        await self.drain()
        started = time.monotonic()
        ending = {asyncio.get_running_loop().create_task(
            self._end_at_shutdown(session), name=f"shutdown-end:{session.session_id}")
            for session in list(self.sessions.values())}
        if ending:
            _, late = await asyncio.wait(ending, timeout=self.config.server.shutdown_seconds)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
                log.error("%d sessions did not end within %.0f s of the shutdown; the next "
                          "start finishes them as interrupted", len(late),
                          self.config.server.shutdown_seconds)
            for session in list(self.sessions.values()):  # cut short: stop their media
                await self._stop_quietly(session)
            log.info("shutdown: %d live sessions ended in %.1f s", len(ending) - len(late),
                     time.monotonic() - started)
        for task in list(self._background):  # transcripts still catching up are cut short
            task.cancel()
        if self._background:
            await asyncio.wait(self._background, timeout=5)
        if self._regulating is not None:
            self._regulating.cancel()
        await self.nodes.close()
        await self.router.close()
        await self.outbox.close()  # what the store did not take is replayed at next start
        self.inference.shutdown(wait=True, cancel_futures=True)
        self.encoding.shutdown(wait=True)

    async def drain(self) -> None:
        """Refuse new sessions from now on, and tell the other nodes at once (a heartbeat
        with no room) so that they place none here. Live sessions and their reconnects
        go on until they are ended."""
        if self.draining:
            return
        self.draining = True
        log.info("node %s draining: new sessions are refused", self.node_id)
        try:
            await self.nodes.beat()
        except StoreUnavailable as exc:
            log.warning("draining: the other nodes learn of it at the next beat: %s", exc)

    async def _end_at_shutdown(self, session: LiveSession) -> None:
        try:
            await self.end(session.record, actor="shutdown")
        except StoreUnavailable as exc:
            # Its flags close into the outbox; at the next start they are replayed
            # and the session is finished as interrupted, with all of them.
            log.error("session %s: cannot end at shutdown, the store is away: %s",
                      session.session_id, exc)
            await self._stop_quietly(session)
        except Exception:
            log.exception("session %s: ending at shutdown failed", session.session_id)

    # Creating ----------------------------------------------------------------------

    def check_policy(self, record: SessionRecord) -> None:
        """Refuse (400) a policy or accommodations the rules cannot apply."""
        try:
            apply_policy(self.rules, record.policy, record.accommodations)
            BreakLimits.from_policy(record.policy)
        except (PolicyError, ValueError) as exc:
            raise ServiceError(400, "bad_policy", str(exc)) from exc

    async def create(self, record: SessionRecord) -> None:
        self.check_policy(record)
        await self.store.create_session(record)
        await self._announce_to_exam(record, "created")

    async def _announce_to_exam(self, record: SessionRecord, status: str) -> None:
        if record.exam_id:
            await self.bus.publish(exam_topic(record.exam_id, record.tenant), {
                **session_message(record.session_id, status), "exam_id": record.exam_id,
                "candidate_id": record.candidate_id})

    async def current(self, record: SessionRecord) -> SessionRecord:
        """The freshest view of a session: this node's live record, or the stored one."""
        live = self.sessions.get(record.session_id)
        return live.record if live is not None else record

    # Going live --------------------------------------------------------------------

    def room(self) -> int:
        """The session limit this node offers the deployment: none while draining."""
        return 0 if self.draining else self.capacity.max_sessions

    def accepting(self) -> bool:
        """Would a new session's offer be admitted here now?"""
        return self.live_count() < self.room() and not self.outbox.full

    def live_count(self) -> int:
        """Sessions holding a slot: live here, or on their way (admitted, going live).
        A slot is freed when the session leaves ``sessions``: at its end (POST /end, or
        shutdown). A session whose peer dropped keeps its slot for its reconnect. One slot
        per session: going live it enters ``sessions`` before it leaves ``_admitting``."""
        return len(self._admitting.union(self.sessions))

    async def offer_target(self, record: SessionRecord) -> str:
        """The node a candidate's offer must reach: the owner of a session live
        somewhere, else this node if it has room, else the live node with most room.
        Raises SessionEnded, or AtCapacity when no node has room."""
        if record.status in FINISHED:
            raise SessionEnded()
        if record.session_id in self.sessions:
            return self.node_id
        stored = await self.store.get_session(record.session_id)
        owner = stored.owner_node if stored is not None else None
        nodes = await self.nodes.alive()
        if owner and owner != self.node_id and any(n.node_id == owner for n in nodes):
            return owner
        if self.live_count() < self.room():
            return self.node_id
        spare = _most_room(n for n in nodes if n.node_id != self.node_id)
        if spare is None:
            self._refuse(record.session_id)
        assert spare is not None
        return spare.node_id

    @asynccontextmanager
    async def connecting(self, record: SessionRecord,
                         channel: Callable[[], CandidateLink]) -> AsyncIterator[LiveSession]:
        """Hold the session's lock while a candidate's peer is wired to it: the session,
        live here (gone live now if it was not, when there is room)."""
        if record.status in FINISHED:
            raise SessionEnded()
        async with self._lock(record.session_id):
            if record.status in FINISHED:  # it ended while we waited for the lock
                raise SessionEnded()
            session = self.sessions.get(record.session_id)
            if session is None:  # a reconnect of a session live here is always admitted
                self._admit(record.session_id)
                try:
                    session = await self._go_live(record, channel())
                finally:
                    # Live now (its slot is its place in ``sessions``) or failed: either
                    # way no longer on its way, so it must not count twice while the
                    # caller builds its answer.
                    self._admitting.discard(record.session_id)
            yield session

    def _admit(self, session_id: str) -> None:
        """Give a new session a slot, or refuse it (503) with nothing stored or changed."""
        if self.live_count() >= self.room():
            self._refuse(session_id)
        if self.outbox.full:
            raise TryLater("store_backlog",
                           f"This server holds {self.outbox.depth} records the database "
                           "has not taken yet; it starts no new session until it has.",
                           self._retry_after)
        self._admitting.add(session_id)

    def _refuse(self, session_id: str) -> None:
        self.metrics.offers_refused.inc()
        if self.draining:
            log.info("session %s refused: this node is draining", session_id)
            raise TryLater("draining",
                           "This server is shutting down and starts no new session.",
                           self._retry_after)
        limit = self.capacity.max_sessions
        log.info("session %s refused: at capacity (%d live)", session_id, limit)
        raise AtCapacity(limit, self._retry_after)

    async def _go_live(self, record: SessionRecord, channel: CandidateLink) -> LiveSession:
        session = LiveSession(record=record, clock=MediaClock(), channel=channel)
        rules = apply_policy(self.rules, record.policy, record.accommodations)
        enrollment = await self.load_enrollment(record.candidate_id, record.tenant)
        evidence = EvidenceRecorder(record.session_id, self.config.evidence,
                                    self.config.clips_dir, self.encoding, self._clip_written,
                                    lookback_seconds=decision_delay(rules, self.config))
        session.pipeline = SessionPipeline(
            session_id=record.session_id, candidate_id=record.candidate_id,
            config=self.config, detectors=self.detectors, executor=self.inference,
            rules=rules, sink=SessionOutlet(session, self.outbox, self.bus, self.outlet),
            metrics=self.metrics, clock=session.clock, evidence=evidence,
            enrollment=enrollment, transcript=self._transcript_worker(record.session_id))
        self.regulator.join(session.pipeline)
        session.pipeline.start()
        self.sessions[record.session_id] = session
        self.metrics.sessions_live.set(len(self.sessions))
        record.status, record.started_at = SessionStatus.LIVE, utc_now_iso()
        record.owner_node = self.node_id
        await self.store.update_session(record.session_id, status=SessionStatus.LIVE,
                                        started_at=record.started_at,
                                        owner_node=self.node_id)
        await self.bus.publish(session_topic(record.session_id),
                               session_message(record.session_id, "live"))
        await self._announce_to_exam(record, "live")
        await self.outlet.emit("session.live", record, {"node": self.node_id})
        log.info("session %s live on node %s", record.session_id, self.node_id)
        return session

    async def load_enrollment(self, candidate_id: str,
                              tenant: str = DEFAULT_TENANT) -> Embedding | None:
        """The candidate's decrypted face embedding (of ``tenant``: candidate ids are per
        tenant), or None (not enrolled, or unusable)."""
        return await load_enrollment(self.store, self.config, candidate_id, tenant)

    # Live state --------------------------------------------------------------------

    async def live_summary(self, record: SessionRecord) -> dict[str, Any]:
        """Live risk, media time and counters, from whichever node holds the session
        ({} when it is not live, or its owner does not answer at once)."""
        live = self.sessions.get(record.session_id)
        if live is not None:
            return live.live_summary()
        owner = record.owner_node
        if record.status != SessionStatus.LIVE or not owner or owner == self.node_id:
            return {}
        try:
            return await self.router.request(owner, "summary", record.session_id,
                                             timeout_seconds=SUMMARY_TIMEOUT_SECONDS)
        except ServiceError:
            return {}

    # Telemetry ---------------------------------------------------------------------

    async def record_events(self, record: SessionRecord,
                            events: list[tuple[EventRecord, float]]) -> None:
        """Store browser telemetry and feed it to the session's flag tracker, on its
        owner. Each event comes with its age (seconds before now, by the browser)."""
        if record.status in FINISHED:
            raise SessionEnded()
        owner = record.owner_node
        if record.session_id in self.sessions or not owner or owner == self.node_id:
            await self._record_events_here(record.session_id, events)
            return
        wire = [{"event": asdict(event), "age": age} for event, age in events]
        try:
            await self.router.request(owner, "event", record.session_id, {"events": wire})
        except ServiceError as exc:
            if exc.status != 503:
                raise
            # The owner is away: keep the events (nothing is lost), without media time.
            for event, _ in events:
                await self.outbox.add_event(event)

    async def _record_events_here(self, session_id: str,
                                  events: list[tuple[EventRecord, float]]) -> None:
        session = self.sessions.get(session_id)
        for event, age in events:
            event.media_time = _media_time_of(session, age)
            await self.outbox.add_event(event)
            if session is not None and session.pipeline is not None \
                    and event.media_time is not None:
                await session.pipeline.record_event(event.type, event.media_time)

    # Breaks ------------------------------------------------------------------------

    async def declare_break(self, record: SessionRecord, action: str, actor: str,
                            reason: str = "") -> dict[str, Any]:
        """Start or end a declared break, on the session's owner: ``{break: {...}}``."""
        if action not in ACTIONS:
            raise ServiceError(400, "bad_request", "action must be 'start' or 'end'")
        if record.status != SessionStatus.LIVE:
            raise ServiceError(409, "not_live", "a break needs a live session")
        owner = record.owner_node
        if record.session_id not in self.sessions and owner and owner != self.node_id:
            return await self.router.request(owner, "break", record.session_id,
                                             {"action": action, "actor": actor,
                                              "reason": reason})
        return await self._break_here(record.session_id, action, actor, reason)

    async def _break_here(self, session_id: str, action: str, actor: str,
                          reason: str) -> dict[str, Any]:
        session = self.sessions.get(session_id)
        if session is None or session.pipeline is None:
            raise ServiceError(409, "not_live", "the session's media is not live")
        session.on_break_end = lambda done: self._announce_break(session, done, "policy")
        if action == "start":
            taken = await start_break(session, self.store, actor, reason)
        else:
            taken = await end_break(session, self.store, actor)
        await self._announce_break(session, taken, actor)
        return {"break": taken.to_dict()}

    async def _announce_break(self, session: LiveSession, taken: BreakRecord,
                              actor: str) -> None:
        action = "break_start" if taken.media_end is None else "break_end"
        await audit.record(self.store, action, actor, session.record, **taken.to_dict())
        message = {"type": "break", "session_id": session.session_id,
                   "break": taken.to_dict()}
        session.channel.send(message)
        await self.bus.publish(session_topic(session.session_id), message)

    async def _control_break(self, session_id: str, args: dict[str, Any]) -> dict[str, Any]:
        return await self._break_here(session_id, str(args.get("action")),
                                      str(args.get("actor")), str(args.get("reason", "")))

    # Ending ------------------------------------------------------------------------

    async def end(self, record: SessionRecord, actor: str = "system") -> dict[str, Any]:
        """Close open flags, finish clips, build and store the report, on whichever node
        holds the session. Idempotent: an ended session answers its stored report."""
        if record.status in FINISHED and record.report is not None:
            return record.report
        owner = record.owner_node
        remote = record.session_id not in self.sessions and owner and owner != self.node_id
        if remote and owner and await self._node_alive(owner):
            result = await self.router.request(owner, "end", record.session_id,
                                               {"actor": actor})
            return dict(result["report"])
        return await self._end_here(record, actor)

    async def _end_here(self, record: SessionRecord, actor: str = "system") -> dict[str, Any]:
        async with self._lock(record.session_id):
            await self.outbox.flush()  # the store away: 503 now, before anything stops
            stored = await self.store.get_session(record.session_id)
            if stored is not None and stored.status in FINISHED and stored.report is not None:
                return stored.report  # ended meanwhile (on its owner, or by recovery)
            session = self.sessions.pop(record.session_id, None)
            if session is None and record.status == SessionStatus.LIVE:
                # Live on no node any more (its owner died): finish it from the store.
                return await finish_orphan(self.store, self.bus, self.outlet, self.config,
                                           stored or record, SessionStatus.ENDED)
            self.metrics.sessions_live.set(len(self.sessions))
            stats: dict[str, Any] = {}
            transcript_done = True
            if session is not None:
                stats = await self._stop(session)
                await self.outbox.flush()  # the flags closed just now, if they queued
                await self._forget_unwritten_clips(record)
                transcript_done = await self._finish_transcript(session)
            if session is not None and session.current_break is not None:
                await end_break(session, self.store, actor)  # a break ends with the session
            flags = await self.store.list_flags(record.session_id)
            machine = build_report(record, flags, stats, self.config.scoring)
            machine["transcript"] = {**transcript_document(
                await self.store.list_transcript(record.session_id)),
                "complete": transcript_done}
            record.status, record.ended_at, record.report = (SessionStatus.ENDED, utc_now_iso(),
                                                             machine)
            # With the reviews made while it was live, its breaks and any decision.
            report = await current_report(self.store, record, self.config.scoring) or machine
            record.report = report
            await self.store.update_session(record.session_id, status=SessionStatus.ENDED,
                                            ended_at=record.ended_at, report=report)
            await self.bus.publish(session_topic(record.session_id),
                                   session_message(record.session_id, "ended"))
            await audit.record(self.store, "end", actor, record,
                               recommendation=report["recommendation"])
            await self.outlet.emit("session.ended", record, {"status": "ended"})
            await self.outlet.emit("report.ready", record, {"report": report})
            log.info("session %s ended: %s", record.session_id, report["recommendation"])
            return report

    async def _forget_unwritten_clips(self, record: SessionRecord) -> None:
        """Every reference resolves: a flag whose clip could not be cut (no media in its
        window: a microphone-only session's ``audio_lost``) names none, not a clip that
        never comes."""
        written = {clip.clip_id for clip in await self.store.list_clips(record.session_id)}
        for flag in await self.store.list_flags(record.session_id):
            if flag.evidence.clip_id and flag.evidence.clip_id not in written:
                log.info("session %s: flag %s has no clip (no media in its window)",
                         record.session_id, flag.flag_id)
                flag.evidence.clip_id = None
                await self.store.save_flag(flag)

    async def _stop(self, session: LiveSession) -> dict[str, Any]:
        """Stop the media, close the flags (announced), say goodbye, close the peer."""
        assert session.pipeline is not None
        for reader in session.readers:
            await reader.stop()
        await session.pipeline.aclose()
        stats = session.pipeline.stats()
        stats.update(session.pipeline.behavioural_metrics())
        session.channel.send(session_message(session.session_id, "ended"))
        if session.peer is not None:
            await asyncio.sleep(0.1)  # let the final flag and "ended" messages leave
            await session.peer.close()
        session.ended.set()
        return stats

    async def _stop_quietly(self, session: LiveSession) -> None:
        self.sessions.pop(session.session_id, None)
        try:
            await self._stop(session)
        except Exception:
            log.exception("session %s: stopping at shutdown failed", session.session_id)

    # Dead nodes and crashes --------------------------------------------------------

    async def _finish_dead_node(self, node_id: str) -> None:
        for record in await self.store.list_owned_sessions(node_id, SessionStatus.LIVE):
            try:
                await finish_orphan(self.store, self.bus, self.outlet, self.config, record)
            except Exception:
                log.exception("session %s of dead node %s: could not finish it",
                              record.session_id, node_id)

    async def _replay_outbox(self) -> None:
        """Replay what an earlier run left in the outbox, then keep replaying in the
        background: first, so the sessions finished next get every flag in their report."""
        await self.outbox.open()
        try:
            await self.outbox.flush()
        except StoreUnavailable as exc:
            log.error("outbox: %d record(s) wait for the store (%s)", self.outbox.depth, exc)
        self.outbox.start()

    async def _finish_own_orphans(self) -> None:
        """Sessions this node id held when its process last stopped without ending them
        (a crash): their media is gone, so they are interrupted now."""
        await self._finish_dead_node(self.node_id)

    async def _node_alive(self, node_id: str) -> bool:
        return any(n.node_id == node_id and is_alive(n, self.config)
                   for n in await self.nodes.every())

    def _live_media_times(self) -> dict[str, float]:
        return {sid: round(s.clock.now(), 3) for sid, s in self.sessions.items()}

    # Requests from other nodes -----------------------------------------------------

    def _serve_control(self) -> None:
        self.router.handle("end", self._control_end)
        self.router.handle("event", self._control_events)
        self.router.handle("summary", self._control_summary)
        self.router.handle("break", self._control_break)

    async def _owned_record(self, session_id: str) -> SessionRecord:
        live = self.sessions.get(session_id)
        if live is not None:
            return live.record
        record = await self.store.get_session(session_id)
        if record is None:
            raise ServiceError(404, "not_found", "no such session")
        return record

    async def _control_end(self, session_id: str, args: dict[str, Any]) -> dict[str, Any]:
        return {"report": await self._end_here(await self._owned_record(session_id),
                                               str(args.get("actor", "system")))}

    async def _control_events(self, session_id: str, args: dict[str, Any]) -> dict[str, Any]:
        events = [(EventRecord(**item["event"]), float(item["age"]))
                  for item in args.get("events", [])]
        await self._record_events_here(session_id, events)
        return {"accepted": len(events)}

    async def _control_summary(self, session_id: str, args: dict[str, Any]) -> dict[str, Any]:
        live = self.sessions.get(session_id)
        return live.live_summary() if live is not None else {}

    def serve(self, action: str,
              handler: Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]) -> None:
        """Let signaling/ serve an action for sessions owned here (e.g. a routed offer)."""
        self.router.handle(action, handler)

    async def on_owner(self, node_id: str, action: str, session_id: str,
                       args: dict[str, Any]) -> dict[str, Any]:
        return await self.router.request(node_id, action, session_id, args)

    # Transcript --------------------------------------------------------------------

    def _transcript_worker(self, session_id: str) -> TranscriptWorker | None:
        if self.transcriber is None:
            return None
        settings = self.config.detectors.transcription
        return TranscriptWorker(session_id, self.transcriber, self._transcript_segment,
                                max_queue_seconds=settings.max_queue_seconds)

    async def _transcript_segment(self, segment: TranscriptSegment) -> None:
        await self.outbox.add_transcript_segment(segment)
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
        self._track(drain)
        drain.add_done_callback(
            lambda task: None if task.cancelled() else self._track(
                asyncio.get_running_loop().create_task(
                    self._store_transcript(session.record),
                    name=f"report-transcript:{session.session_id}")))
        return False

    async def _store_transcript(self, record: SessionRecord) -> None:
        if record.report is None:
            return
        await self.outbox.flush()  # segments written while the store was away, first
        transcript = transcript_document(await self.store.list_transcript(record.session_id))
        # The stored report, not the one built at the end: a review or a scoring may have
        # refreshed it while the transcript was being finished.
        fresh = await self.store.get_session(record.session_id)
        report = dict(fresh.report if fresh is not None and fresh.report else record.report)
        report["transcript"] = {**transcript, "complete": True}
        record.report = report
        await self.store.update_session(record.session_id, report=report)

    def _track(self, task: asyncio.Task[Any]) -> None:
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # Clips and load ----------------------------------------------------------------

    async def _clip_written(self, clip: ClipRecord) -> None:
        clip = await self.outbox.save_clip(clip)  # kept (clips: store) and recorded
        self.metrics.clips_written.inc()
        await self.bus.publish(session_topic(clip.session_id),
                               {"type": "clip", "session_id": clip.session_id,
                                "clip_id": clip.clip_id, "flag_id": clip.flag_id})

    async def _regulate(self) -> None:
        while True:
            await asyncio.sleep(REGULATE_SECONDS)
            try:
                pipelines = [s.pipeline for s in self.sessions.values() if s.pipeline]
                level = self.regulator.step(time.monotonic(), pipelines)
                self.metrics.degradation_level.set(int(level))
            except Exception:
                log.exception("load regulation failed")

    def _lock(self, session_id: str) -> asyncio.Lock:
        return self._locks.setdefault(session_id, asyncio.Lock())


def _media_time_of(session: LiveSession | None, age_seconds: float) -> float | None:
    if session is None:
        return None
    # An event before the first frame starts the session's clock (media time 0 is the
    # first thing the session knew of): it still gets its place and its flag.
    session.clock.start()
    return max(0.0, session.clock.now() - max(0.0, age_seconds))


def _most_room(nodes: Any) -> NodeRecord | None:
    roomy = [n for n in nodes if n.live_sessions < n.capacity]
    return max(roomy, key=lambda n: n.capacity - n.live_sessions, default=None)
