"""What the server answers, typed (SPEC "HTTP API", "Review, decision and audit",
"Webhooks", "Breaks").

Each result is the server's JSON object as it came, typed as a ``TypedDict``: at run
time a plain ``dict``, so a field a newer server adds is there too (read it with
``result.get("field")``), and nothing is lost converting. Fields a route sends only
some of the time are ``NotRequired``.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

SessionStatus = Literal["created", "live", "ended", "interrupted"]
Verdict = Literal["confirmed", "dismissed"]
Decision = Literal["pass", "fail"]
BreakAction = Literal["start", "end"]
Recommendation = Literal["PASS", "REVIEW", "FAIL"]
EventType = Literal["session.live", "session.ended", "session.interrupted", "flag.opened",
                    "flag.raised", "flag.closed", "report.ready", "flag.reviewed",
                    "decision.made"]


# Sessions --------------------------------------------------------------------------

class CreatedSession(TypedDict):
    """``POST /sessions``: hand ``session_id`` and ``candidate_token`` to the candidate's
    page, ``proctor_token`` to the proctor's dashboard or review page."""

    session_id: str
    candidate_token: str
    proctor_token: str
    expires_at: str  # ISO 8601, UTC: when the tokens stop opening a new connection


class SessionSummary(TypedDict):
    """``GET /sessions/{id}`` (with ``flag_counts``) and each item of ``GET /sessions``."""

    session_id: str
    candidate_id: str
    exam_id: str | None
    status: SessionStatus
    created_at: str
    started_at: str | None
    ended_at: str | None
    metadata: dict[str, Any]
    node: str | None
    flag_counts: NotRequired[dict[str, int]]  # kind → count; the single-session read only
    risk: NotRequired[float | None]  # live risk 0–100 while live; None once ended
    media_time: NotRequired[float]
    recommendation: NotRequired[Recommendation | None]
    integrity_score: NotRequired[float | None]
    pipeline: NotRequired[dict[str, Any] | None]


class EndedSession(TypedDict):
    """``POST /sessions/{id}/end`` (idempotent)."""

    session_id: str
    status: Literal["ended", "interrupted"]
    recommendation: Recommendation
    integrity_score: float


class ProctorToken(TypedDict):
    """``POST /proctor-tokens``: one token for several sessions, or whole exams."""

    proctor_token: str
    expires_at: str


# Flags, review and decision --------------------------------------------------------

class Review(TypedDict):
    verdict: Verdict
    note: str
    by: str  # the credential used: an API key's name, or proctor:<token id>
    at: str


class Evidence(TypedDict):
    clip_id: str | None  # download with download_clip()
    metrics: dict[str, Any]


class Flag(TypedDict):
    flag_id: str
    session_id: str
    candidate_id: str
    kind: str  # face_absent, multiple_faces, head_turned, ... (SPEC "Kinds")
    severity: Literal["low", "moderate", "high"]
    start: float  # media seconds from the session's start
    end: float | None  # None while the flag is open
    confidence: float
    evidence: Evidence
    source: str
    created_at: str
    review: NotRequired[Review | None]  # the latest review; None when pending


class DecisionRecord(TypedDict):
    decision: Decision
    note: str
    by: str
    at: str


class DecisionResult(TypedDict):
    """``POST /sessions/{id}/decision``."""

    session_id: str
    decision: DecisionRecord
    recommendation: Recommendation | None  # after review
    ai_recommendation: Recommendation | None  # before review


class Break(TypedDict):
    break_id: str
    start: float
    end: float | None
    reason: str
    by: str


BreakResult = TypedDict("BreakResult", {"break": Break})  # "break" is a keyword


class ReviewCounts(TypedDict):
    confirmed: int
    dismissed: int
    pending: int


class Report(TypedDict, total=False):
    """``GET /sessions/{id}/report``: the stored report with every review and the latest
    decision applied. The fields a client acts on are typed; the report holds more
    (``totals``, ``risk_curve``, ``pipeline``, ``transcript``, ...)."""

    session_id: str
    candidate_id: str
    exam_id: str | None
    started_at: str | None
    flags: list[Flag]
    totals: dict[str, Any]
    merged_flags: int
    metrics: dict[str, float | None]  # behavioural metrics, each 0–1 or None
    integrity_score: float
    integrity_band: str
    recommendation: Recommendation  # after review
    ai_integrity_score: float
    ai_recommendation: Recommendation  # before review
    reviewed: ReviewCounts
    decision: DecisionRecord | None
    breaks: list[Break]
    duration: float
    risk_curve: list[Any]
    pipeline: dict[str, Any]
    transcript: Any
    interrupted: dict[str, Any]  # only for a session whose node died
    note: str


class TranscriptSegment(TypedDict):
    start: float
    end: float
    text: str
    confidence: float


class Transcript(TypedDict):
    segments: list[TranscriptSegment]
    text: str


class AuditEntry(TypedDict):
    at: str
    actor: str
    action: str  # review, decision, end, break_start, break_end, erasure, ...
    details: dict[str, Any]


# Webhooks --------------------------------------------------------------------------

class Webhook(TypedDict):
    webhook_id: str
    url: str
    events: list[EventType]
    created_at: str


class CreatedWebhook(Webhook):
    secret: str  # shown this once: keep it to verify deliveries (verify_webhook)


class DeletedWebhook(TypedDict):
    webhook_id: str
    deleted: bool


class DeliveryAttempt(TypedDict):
    at: str
    status_code: int | None
    error: str | None
    duration_ms: float


class Delivery(TypedDict):
    delivery_id: str
    event_id: str
    type: EventType
    session_id: str | None
    status: str  # pending, delivered, failed
    created_at: str
    delivered_at: str | None
    attempt_count: int
    last_status_code: int | None
    last_error: str | None
    next_retry_at: str | None
    attempts: list[DeliveryAttempt]


class WebhookEvent(TypedDict):
    """The JSON body of one delivery (parse it after :func:`verify_webhook`)."""

    event_id: str  # receivers dedupe by it: deliveries are at least once
    type: EventType
    created_at: str
    session_id: str | None
    data: dict[str, Any]


# Candidates and nodes --------------------------------------------------------------

class EnrollmentQuality(TypedDict):
    face_px: float
    sharpness: float
    score: float


class Enrollment(TypedDict):
    candidate_id: str
    enrolled: bool
    quality: EnrollmentQuality


class ErasedCounts(TypedDict):
    sessions: int
    clips: int
    enrollment: bool


class Erasure(TypedDict):
    candidate_id: str
    deleted: ErasedCounts


class ProfileSession(TypedDict):
    session_id: str
    exam_id: str | None
    status: SessionStatus
    created_at: str
    ended_at: str | None
    recommendation: Recommendation | None
    ai_recommendation: Recommendation | None
    integrity_score: float | None
    decision: DecisionRecord | None
    flags: int


class KindCount(TypedDict):
    kind: str
    count: int


class CandidateProfile(TypedDict):
    candidate_id: str
    enrolled: bool
    sessions_total: int
    sessions_analysed: int
    sessions_flagged: int
    mean_integrity_score: float | None
    top_flag_kinds: list[KindCount]
    sessions: list[ProfileSession]


class Node(TypedDict):
    node_id: str
    address: str
    status: str  # up, left, dead
    alive: bool
    this_node: bool  # the node that answered
    started_at: str
    heartbeat_at: str
    heartbeat_age_seconds: float
    live_sessions: int
    capacity: int


# Interviews (SPEC "Answer scoring") --------------------------------------------------

KbKind = Literal["rubric", "reference"]


class Question(TypedDict):
    question_id: str
    text: str
    asked_at: float  # media seconds from the session's start, when it was asked


class KbDocumentAdded(TypedDict):
    """``POST /kb``: the stored document and its chunks."""

    doc_id: str
    kind: KbKind
    title: str
    role: str | None
    level: str | None
    topic: str | None
    model: str  # the embedding model of its vectors
    created_at: str
    chunks: int
    chunk_ids: list[str]


class KbScores(TypedDict):
    bm25: float
    vector: float  # cosine similarity
    fused: float  # reciprocal-rank fusion of the two rankings


class KbHit(TypedDict):
    doc_id: str
    chunk_id: str
    kind: KbKind
    title: str
    text: str
    role: str | None
    level: str | None
    topic: str | None
    scores: KbScores


class Criterion(TypedDict):
    name: str
    score: float  # 0-10
    reason: str


class Citation(TypedDict):
    doc_id: str
    chunk_id: str
    quote: str  # word for word from the chunk


class ScoredAnswer(TypedDict):
    question_id: str
    question: str
    asked_at: float
    answer: str  # the transcript between this question and the next
    answer_start: float | None
    answer_end: float | None
    words: int
    score: float  # 0-10
    criteria: list[Criterion]
    citations: list[Citation]
    scorer: str  # "local" or "llm:<model>"
    fallback: str | None  # why an LLM's score was not used
    dropped_claims: int  # LLM claims that cited no retrieved chunk


class AnswerScores(TypedDict):
    """``POST /sessions/{id}/score`` (and the report's ``answer_scoring``)."""

    session_id: str
    final_score: float  # the mean; an unanswered question counts 0
    answers: list[ScoredAnswer]
    scorer: str  # "local", "llm:<model>" or "mixed"
    dropped_claims: int
    fallbacks: int
    scored_at: str
    transcript_complete: bool
    recommendation: Recommendation
