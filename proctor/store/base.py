"""The Store contract: every persistence call the server makes goes through it.

Two implementations satisfy it with the same semantics, orderings and record shapes:
SQLite (``sqlite.py``, one node) and PostgreSQL (``postgres.py``, any number of nodes
sharing one database). Both run every query through ``sql.py`` and the same migrations
(``migrations.py``); the contract suite in ``tests/store/`` runs on both.

Records are plain dataclasses; JSON-shaped fields are dicts. Implementations raise
:class:`StoreUnavailable` when the database cannot be reached, so the HTTP layer can
answer 503 instead of losing a write silently, and :class:`StoreIntegrityError` when a
write breaks a key (a duplicate id, a row for an unknown session): that is the caller's
bug, not an outage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from proctor.flags.model import Flag


class StoreUnavailable(RuntimeError):
    """The database could not be reached or refused the operation."""


class StoreIntegrityError(RuntimeError):
    """A write broke a primary or foreign key: the caller's bug, never a 503.

    The driver's own exception (sqlite3.IntegrityError, asyncpg's
    IntegrityConstraintViolationError) is its ``__cause__``.
    """


class SessionStatus(StrEnum):
    CREATED = "created"
    LIVE = "live"
    ENDED = "ended"
    # A live session whose owner node died: finished like ENDED, but by another node's
    # recovery rather than by an /end call.
    INTERRUPTED = "interrupted"


# The tenant of config keys (auth.api_keys) and of every row made before tenants existed.
DEFAULT_TENANT = "default"


class NodeStatus(StrEnum):
    UP = "up"  # heartbeating
    LEFT = "left"  # shut down cleanly, after handing back its sessions
    DEAD = "dead"  # stopped heartbeating; claimed by a survivor (claim_stale_nodes)


@dataclass
class ApiKeyRecord:
    key_id: str
    name: str
    key_hash: str  # sha256 hex of the key; the key itself is never stored
    created_at: str
    revoked: bool = False
    tenant: str = DEFAULT_TENANT  # everything the key makes belongs to its tenant


@dataclass
class SessionRecord:
    session_id: str
    candidate_id: str
    exam_id: str | None = None
    status: SessionStatus = SessionStatus.CREATED
    policy: dict[str, Any] = field(default_factory=dict)
    accommodations: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: str = ""
    started_at: str | None = None
    ended_at: str | None = None
    report: dict[str, Any] | None = None
    api_key_id: str | None = None
    owner_node: str | None = None  # the node whose process holds the session's media
    media_time: float | None = None  # the last media time the owner stored (media seconds)
    tenant: str = DEFAULT_TENANT  # the tenant of the key that made it; others get 404


@dataclass
class NodeRecord:
    """One ``proctor serve`` process of a deployment, as its heartbeats describe it."""

    node_id: str
    address: str  # where other nodes reach its API
    started_at: str  # ISO time
    heartbeat_at: float  # unix seconds of the last heartbeat: compared across nodes
    live_sessions: int = 0
    capacity: int = 0
    status: str = NodeStatus.UP  # a NodeStatus; reads return NodeStatus members


@dataclass
class ClipRecord:
    clip_id: str
    session_id: str
    flag_id: str | None
    path: str  # where the MP4 lies, as the clip writer wrote it
    start: float  # media seconds covered by the clip
    end: float
    size_bytes: int
    created_at: str
    content_type: str = "video/mp4"


@dataclass
class EventRecord:
    """Browser telemetry reported by the candidate's page."""

    event_id: str
    session_id: str
    type: str  # tab_hidden, tab_visible, window_blur, window_focus, fullscreen_exit, paste, copy
    client_time: float | None  # the browser's epoch milliseconds / 1000, as sent
    media_time: float | None  # where it falls in the session's media time, when known
    received_at: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class EnrollmentRecord:
    """A candidate's enrolled face embedding, sealed (AES-256-GCM, see proctor/crypto.py).

    The store never sees the embedding itself: only the ciphertext, whose associated
    data is the candidate id, so it opens for this candidate's row and no other.
    """

    candidate_id: str
    ciphertext: bytes
    nonce: bytes
    model: str  # the embedding model: another model's embeddings are not comparable
    created_at: str
    quality: dict[str, Any] = field(default_factory=dict)  # face_px, sharpness, score
    tenant: str = DEFAULT_TENANT  # candidate ids are per tenant: (tenant, candidate_id)


@dataclass
class TranscriptSegment:
    """A timed piece of the session's transcript (proctor/transcript/)."""

    segment_id: str
    session_id: str
    start: float  # media seconds, like a flag's
    end: float
    text: str
    confidence: float  # 0-1: the mean word probability times the chance it is speech
    language: str = ""  # ISO 639-1 code the model transcribed in
    created_at: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The API's shape: media times to the centisecond."""
        return {"start": round(self.start, 2), "end": round(self.end, 2), "text": self.text,
                "confidence": round(self.confidence, 3)}


@dataclass
class ReviewRecord:
    """A person's verdict on one flag; the latest per flag counts, every one is kept."""

    review_id: str
    flag_id: str
    session_id: str
    verdict: str  # "confirmed" | "dismissed"
    note: str
    actor: str  # the credential's name: an API key's name, or proctor:<token id>
    created_at: str

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "note": self.note, "by": self.actor,
                "at": self.created_at}


@dataclass
class DecisionRecord:
    """A person's decision on a session; a later one supersedes, every one is kept."""

    decision_id: str
    session_id: str
    decision: str  # "pass" | "fail"
    note: str
    actor: str
    created_at: str

    def to_dict(self) -> dict[str, Any]:
        return {"decision": self.decision, "note": self.note, "by": self.actor,
                "at": self.created_at}


@dataclass
class BreakRecord:
    """A declared break, in media seconds; media_end is None while it lasts."""

    break_id: str
    session_id: str
    media_start: float
    media_end: float | None
    reason: str
    actor: str
    created_at: str

    def to_dict(self) -> dict[str, Any]:
        return {"break_id": self.break_id, "start": round(self.media_start, 3),
                "end": None if self.media_end is None else round(self.media_end, 3),
                "reason": self.reason, "by": self.actor}


@dataclass
class AuditEntry:
    """One line of a session's append-only audit: who did what, when."""

    entry_id: str
    session_id: str | None
    candidate_id: str | None
    at: str
    actor: str
    action: str  # review, decision, end, break_start, break_end, erasure, ...
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"at": self.at, "actor": self.actor, "action": self.action,
                "details": self.details}


@dataclass
class WebhookRecord:
    webhook_id: str
    owner: str  # the tenant that made it: it hears of that tenant's sessions
    url: str
    events: list[str]  # event types; all of them when made without a list
    secret: str  # the HMAC key, shown once at creation
    created_at: str
    active: bool = True


@dataclass
class DeliveryRecord:
    """One event for one webhook, stored before it is attempted (at least once)."""

    delivery_id: str
    webhook_id: str
    event_id: str
    type: str
    session_id: str | None
    body: str  # the exact JSON bytes signed and sent, as text
    status: str  # "pending" | "delivered" | "failed" (gave up)
    attempts: int
    next_attempt_at: float  # unix seconds
    created_at: str
    lease_until: float | None = None  # a node is attempting it until then
    last_status_code: int | None = None
    last_error: str | None = None
    delivered_at: str | None = None


@dataclass
class AttemptRecord:
    attempt_id: str
    delivery_id: str
    at: str
    status_code: int | None  # None: no HTTP answer (refused, timed out)
    error: str | None
    duration_ms: float


@dataclass
class KbDocument:
    """A knowledge-base document of one tenant: a rubric or a reference text."""

    doc_id: str
    tenant: str
    kind: str  # "rubric" | "reference"
    text: str
    title: str = ""
    role: str | None = None  # None: applies to every role (likewise level, topic)
    level: str | None = None
    topic: str | None = None
    model: str = ""  # the embedding model its chunks' vectors come from
    created_at: str = ""


@dataclass
class KbChunk:
    """A piece of a document with its sentence embedding (float32 little-endian bytes).

    Reads (``list_kb_chunks``) also fill in the document's fields the retrieval filters
    on and shows with each hit; writes take them from the document."""

    chunk_id: str
    doc_id: str
    seq: int  # its place in the document, from 0
    text: str
    vector: bytes
    tenant: str = DEFAULT_TENANT
    kind: str = ""
    title: str = ""
    role: str | None = None
    level: str | None = None
    topic: str | None = None


@dataclass
class QuestionRecord:
    """An interview question and when it was asked, in the session's media seconds."""

    session_id: str
    question_id: str
    text: str
    asked_at: float
    created_at: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"question_id": self.question_id, "text": self.text,
                "asked_at": round(self.asked_at, 3)}


@dataclass
class AnswerScoreRecord:
    """One scored answer: ``result`` is its API shape (score, criteria, citations)."""

    session_id: str
    question_id: str
    score: float  # 0-10
    scorer: str  # "local" or "llm:<model>"
    result: dict[str, Any]
    created_at: str


class Store(Protocol):
    async def open(self) -> None:
        """Connect and apply pending migrations."""

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise StoreUnavailable unless a trivial query succeeds."""

    async def schema_version(self) -> int: ...

    # API keys
    async def add_api_key(self, record: ApiKeyRecord) -> None: ...

    async def find_api_key(self, key_hash: str) -> ApiKeyRecord | None:
        """The unrevoked key with this hash, if any."""

    async def list_api_keys(self) -> list[ApiKeyRecord]:
        """Every key, revoked ones too, oldest first."""

    async def revoke_api_key(self, name: str) -> int:
        """Revoke every unrevoked key with this name; how many were revoked."""

    # Sessions
    async def create_session(self, record: SessionRecord) -> None: ...

    async def get_session(self, session_id: str) -> SessionRecord | None: ...

    async def list_sessions(self, status: SessionStatus | None = None,
                            limit: int = 100,
                            tenant: str | None = None) -> list[SessionRecord]:
        """Newest first; only ``tenant``'s when given (None: every tenant's)."""

    async def update_session(self, session_id: str, **fields: Any) -> None:
        """Set any of: status, started_at, ended_at, report, owner_node, media_time.

        Any other field name raises ValueError; an unknown session id changes nothing.
        """

    async def delete_session(self, session_id: str) -> list[ClipRecord]:
        """Delete the session with its flags, clips, events and transcript.

        Returns the clip records deleted, so the caller can remove their files.
        """

    async def delete_candidate(self, candidate_id: str,
                               tenant: str = DEFAULT_TENANT) -> list[ClipRecord]:
        """Delete every session of this candidate, as delete_session does, in one go.

        Returns the clip records deleted, so the caller can remove their files.
        """

    async def list_candidate_sessions(self, candidate_id: str,
                                      tenant: str = DEFAULT_TENANT) -> list[SessionRecord]:
        """Every session of this candidate (of ``tenant``), newest first."""

    async def list_owned_sessions(
        self, node_id: str, status: SessionStatus | None = SessionStatus.LIVE
    ) -> list[SessionRecord]:
        """The sessions whose owner_node is ``node_id`` (with ``status``; None: any),
        newest first."""

    # Nodes (many-node deployments): every node heartbeats its own row.
    async def heartbeat_node(self, record: NodeRecord) -> None:
        """Insert the node's row, or replace every field of it."""

    async def list_nodes(self) -> list[NodeRecord]:
        """Every node ever seen, by node_id."""

    async def set_node_status(self, node_id: str, status: NodeStatus) -> None:
        """Set one node's status (ValueError for an unknown status); unknown ids: no-op."""

    async def claim_stale_nodes(self, stale_before: float) -> list[str]:
        """Mark "dead" every "up" node whose heartbeat_at < stale_before, atomically.

        Returns the ids this call changed, sorted: when two survivors race, each dead
        node is claimed (and so recovered) by exactly one of them.
        """

    # Enrollments: one per (tenant, candidate); saving again replaces it.
    async def save_enrollment(self, record: EnrollmentRecord) -> None: ...

    async def get_enrollment(self, candidate_id: str,
                             tenant: str = DEFAULT_TENANT) -> EnrollmentRecord | None: ...

    async def delete_enrollment(self, candidate_id: str, tenant: str = DEFAULT_TENANT) -> bool:
        """Delete the candidate's enrollment; False when there was none."""

    # Flags: save_flag inserts or replaces by flag_id (a flag rises and closes in place).
    async def save_flag(self, flag: Flag) -> None: ...

    async def get_flag(self, flag_id: str) -> Flag | None: ...

    async def list_flags(self, session_id: str) -> list[Flag]: ...

    # Clips
    async def save_clip(self, record: ClipRecord) -> None: ...

    async def get_clip(self, clip_id: str) -> ClipRecord | None: ...

    async def list_clips(self, session_id: str) -> list[ClipRecord]: ...

    # Clip bytes, for ``clips: store``: the MP4 itself (a few MB) in the database, so
    # every node can serve it. Deleting the session deletes them (ON DELETE CASCADE).
    async def save_clip_data(self, clip_id: str, session_id: str, data: bytes) -> None:
        """Insert, or replace the bytes already saved under clip_id."""

    async def get_clip_data(self, clip_id: str) -> bytes | None: ...

    async def delete_clip_data(self, clip_id: str) -> None: ...

    # Reviews, decisions, breaks and the audit (proctor/review/): append-only rows.
    async def add_review(self, record: ReviewRecord) -> None: ...

    async def list_reviews(self, session_id: str) -> list[ReviewRecord]:
        """Every review of the session's flags, oldest first."""

    async def add_decision(self, record: DecisionRecord) -> None: ...

    async def list_decisions(self, session_id: str) -> list[DecisionRecord]:
        """Oldest first; the last one is the session's decision."""

    async def save_break(self, record: BreakRecord) -> None:
        """Insert, or replace by break_id (a break starts, then ends in place)."""

    async def list_breaks(self, session_id: str) -> list[BreakRecord]:
        """By media start."""

    async def add_audit(self, entry: AuditEntry) -> None: ...

    async def list_audit(self, session_id: str) -> list[AuditEntry]:
        """The session's entries, oldest first (by at, then entry_id)."""

    # Webhooks (proctor/outbound/)
    async def add_webhook(self, record: WebhookRecord) -> None: ...

    async def get_webhook(self, webhook_id: str) -> WebhookRecord | None: ...

    async def list_webhooks(self, owner: str | None = None) -> list[WebhookRecord]:
        """Active webhooks (of the tenant ``owner``; None: all), oldest first."""

    async def delete_webhook(self, webhook_id: str) -> bool:
        """Delete it with its deliveries; False when there was none."""

    async def add_deliveries(self, records: list[DeliveryRecord]) -> None:
        """Store deliveries (one transaction) before any is attempted."""

    async def claim_due_deliveries(self, now: float, lease_seconds: float,
                                   limit: int) -> list[DeliveryRecord]:
        """Atomically lease up to ``limit`` pending deliveries due by ``now`` whose lease
        is free or expired (lease_until = now + lease_seconds), oldest due first: two
        nodes never claim the same delivery at once."""

    async def finish_attempt(self, delivery: DeliveryRecord, attempt: AttemptRecord) -> None:
        """Record an attempt and the delivery's new state (status, attempts,
        next_attempt_at, last_*, delivered_at; lease released), in one transaction."""

    async def list_deliveries(self, webhook_id: str, limit: int = 100) -> list[DeliveryRecord]:
        """Newest first."""

    async def list_attempts(self, delivery_id: str) -> list[AttemptRecord]:
        """Oldest first."""

    # Browser telemetry
    async def add_event(self, record: EventRecord) -> None: ...

    async def list_events(self, session_id: str) -> list[EventRecord]: ...

    # Transcript
    async def add_transcript_segment(self, segment: TranscriptSegment) -> None: ...

    async def list_transcript(self, session_id: str) -> list[TranscriptSegment]:
        """The session's transcript segments by media start."""

    # Interviews: the knowledge base, questions, answer scores (proctor/store/kb_sql.py)
    async def add_kb_document(self, document: KbDocument, chunks: list[KbChunk]) -> None:
        """Store a document and its chunks in one transaction."""

    async def get_kb_document(self, doc_id: str, tenant: str) -> KbDocument | None:
        """The tenant's document (None for another tenant's)."""

    async def list_kb_documents(self, tenant: str, limit: int = 100) -> list[KbDocument]:
        """The tenant's documents, newest first."""

    async def delete_kb_document(self, doc_id: str, tenant: str) -> bool:
        """Delete it with its chunks; False when the tenant has no such document."""

    async def list_kb_chunks(self, tenant: str, kind: str | None = None,
                             role: str | None = None, level: str | None = None,
                             topic: str | None = None) -> list[KbChunk]:
        """The tenant's chunks with their documents' fields, by document then seq. A
        role, level or topic filter keeps documents with that value and those that
        leave it unset (general ones); kind is matched exactly."""

    async def save_questions(self, records: list[QuestionRecord]) -> None:
        """Insert, or replace by (session_id, question_id), in one transaction."""

    async def list_questions(self, session_id: str) -> list[QuestionRecord]:
        """The session's questions by asked_at."""

    async def replace_answer_scores(self, session_id: str,
                                    records: list[AnswerScoreRecord]) -> None:
        """The session's answer scores become ``records`` (one transaction)."""

    async def list_answer_scores(self, session_id: str) -> list[AnswerScoreRecord]:
        """By question_id."""

    # Retention (proctor/store/retention_sql.py)
    async def purge_expired(self, before: dict[str, str], dry_run: bool = False,
                            ) -> tuple[dict[str, int], list[ClipRecord]]:
        """Remove clips, sessions, enrollments and transcript segments older than
        ``before[kind]`` (ISO cutoffs; empty or missing: keep), never a live session's;
        the counts per kind and the clips removed (for their files). ``dry_run``: the
        same answer, nothing removed."""
