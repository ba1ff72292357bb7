"""``ProctorClient``: the HTTP API for an integrator's backend, async, on aiohttp.

Every call is one request through :meth:`ProctorClient._call`; a refusal raises
:class:`~proctor.client.errors.ProctorError` with the server's status, code and
message. A route the client does not wrap yet is one short method on top of ``_call``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, cast
from urllib.parse import quote

import aiohttp

from proctor import __version__
from proctor.client.errors import ProctorConnectionError, ProctorError, error_from_response
from proctor.client.types import (
    AnswerScores,
    AuditEntry,
    BreakAction,
    BreakResult,
    CandidateProfile,
    CreatedSession,
    CreatedWebhook,
    Decision,
    DecisionResult,
    DeletedWebhook,
    Delivery,
    EndedSession,
    Enrollment,
    Erasure,
    EventType,
    Flag,
    KbDocumentAdded,
    KbHit,
    KbKind,
    Node,
    ProctorToken,
    Question,
    Report,
    SessionStatus,
    SessionSummary,
    Transcript,
    Verdict,
    Webhook,
)

API_PREFIX = "/api/v1"
DEFAULT_TIMEOUT_SECONDS = 30.0
USER_AGENT = f"proctor-client/{__version__}"

Query = Mapping[str, str]


def _segment(value: str) -> str:
    """One path segment: an id with a ``/`` or ``?`` in it stays one segment."""
    if not value:
        raise ValueError("an id must not be empty")
    return quote(value, safe="")


def _image_type(photo: bytes) -> str:
    if photo.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if photo.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    return "application/octet-stream"  # the server decodes it, or answers 400


class _Connection:
    """The base URL and the HTTP session, shared by a client and those it derives
    (:meth:`ProctorClient.with_credential`). The session is made on first use, inside
    the event loop that uses it."""

    def __init__(self, base_url: str, timeout: float,
                 session: aiohttp.ClientSession | None) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must be an http:// or https:// URL, not {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self._session = session
        self._owns_session = session is None
        self._closed = False

    def http(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("this Proctor client is closed")
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout,
                                                  headers={"User-Agent": USER_AGENT})
        return self._session

    async def close(self) -> None:
        self._closed = True
        if self._owns_session and self._session is not None:
            await self._session.close()
        self._session = None


class ProctorClient:
    """The Proctor HTTP API.

    ``credential`` is an integrator's API key, or a proctor token (from
    :meth:`create_session` or :meth:`create_proctor_token`) for the calls a proctor
    may make: reading sessions, reviews, decisions, breaks. Use it as
    ``async with ProctorClient(url, key) as proctor: ...`` or call :meth:`close`.
    ``session`` lends an aiohttp session of the caller's (not closed by the client).
    """

    def __init__(self, base_url: str, credential: str, *,
                 timeout: float = DEFAULT_TIMEOUT_SECONDS,
                 session: aiohttp.ClientSession | None = None) -> None:
        self._connection = _Connection(base_url, timeout, session)
        self._credential = credential
        self._owns_connection = True

    @property
    def base_url(self) -> str:
        return self._connection.base_url

    def with_credential(self, credential: str) -> ProctorClient:
        """A client for the same server with another credential (a proctor token),
        sharing this one's connections; closing it closes nothing, closing this one
        closes both."""
        derived = ProctorClient.__new__(ProctorClient)
        derived._connection = self._connection
        derived._credential = credential
        derived._owns_connection = False
        return derived

    async def close(self) -> None:
        if self._owns_connection:
            await self._connection.close()

    async def __aenter__(self) -> ProctorClient:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        trace: TracebackType | None) -> None:
        await self.close()

    # The one request path ----------------------------------------------------------

    async def _send(self, method: str, path: str, *, body: Any = None,
                    query: Query | None = None, data: bytes | None = None,
                    content_type: str | None = None) -> bytes:
        """The answer's body, for a 2xx; ProctorError otherwise."""
        headers = {"Authorization": f"Bearer {self._credential}"}
        if body is not None:
            data, content_type = json.dumps(body).encode(), "application/json"
        if content_type is not None:
            headers["Content-Type"] = content_type
        url = f"{self._connection.base_url}{API_PREFIX}{path}"
        try:
            async with self._connection.http().request(
                    method, url, data=data, params=query, headers=headers,
                    timeout=self._connection.timeout) as response:
                payload = await response.read()
                if response.status >= 300:
                    raise error_from_response(response.status, payload, response.headers)
                return payload
        except TimeoutError as exc:
            raise ProctorConnectionError(
                "timeout", f"{method} {path}: no answer within "
                f"{self._connection.timeout.total} s") from exc
        except aiohttp.ClientError as exc:
            raise ProctorConnectionError("unreachable", f"{method} {path}: {exc}") from exc

    async def _call(self, method: str, path: str, *, body: Any = None,
                    query: Query | None = None, data: bytes | None = None,
                    content_type: str | None = None) -> dict[str, Any]:
        """A JSON call: the answer's object."""
        payload = await self._send(method, path, body=body, query=query, data=data,
                                   content_type=content_type)
        try:
            parsed = json.loads(payload)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            raise ProctorError(200, "bad_response",
                               f"{method} {path}: the answer is not a JSON object")
        return parsed

    # Sessions ----------------------------------------------------------------------

    async def create_session(self, candidate_id: str, *, exam_id: str | None = None,
                             policy: Mapping[str, Any] | None = None,
                             accommodations: Mapping[str, Any] | None = None,
                             metadata: Mapping[str, Any] | None = None) -> CreatedSession:
        """A new session; its candidate and proctor tokens. ``accommodations``:
        ``{disable: [kinds], relax: {kind: factor}, ...}`` (SPEC "Breaks and
        accommodations"); ``policy`` overrides rule thresholds, ``breaks`` limits."""
        body: dict[str, Any] = {"candidate_id": candidate_id}
        for key, value in (("exam_id", exam_id), ("policy", policy),
                           ("accommodations", accommodations), ("metadata", metadata)):
            if value is not None:
                body[key] = value if isinstance(value, str) else dict(value)
        return cast(CreatedSession, await self._call("POST", "/sessions", body=body))

    async def get_session(self, session_id: str) -> SessionSummary:
        """Status, times, live risk (while live), flag counts, the recommendation."""
        return cast(SessionSummary,
                    await self._call("GET", f"/sessions/{_segment(session_id)}"))

    async def list_sessions(self, status: SessionStatus | None = None) -> list[SessionSummary]:
        """The sessions the credential covers (the newest 500), optionally of one status."""
        found = await self._call("GET", "/sessions",
                                 query=None if status is None else {"status": status})
        return cast(list[SessionSummary], found["sessions"])

    async def end_session(self, session_id: str) -> EndedSession:
        """End it (idempotent): closes open flags, finishes clips, builds the report."""
        return cast(EndedSession,
                    await self._call("POST", f"/sessions/{_segment(session_id)}/end"))

    async def list_flags(self, session_id: str) -> list[Flag]:
        """The session's flags, each with its latest ``review`` (None while pending)."""
        found = await self._call("GET", f"/sessions/{_segment(session_id)}/flags")
        return cast(list[Flag], found["flags"])

    async def get_report(self, session_id: str) -> Report:
        """The report, with every review and the latest decision applied; a session not
        ended yet raises ProctorError 409 ``not_ended``."""
        return cast(Report, await self._call("GET", f"/sessions/{_segment(session_id)}/report"))

    async def get_transcript(self, session_id: str) -> Transcript:
        """The timed transcript so far (a live session's grows as it is transcribed)."""
        return cast(Transcript,
                    await self._call("GET", f"/sessions/{_segment(session_id)}/transcript"))

    async def get_audit(self, session_id: str) -> list[AuditEntry]:
        """Who did what and when (reviews, decisions, ends, breaks), oldest first."""
        found = await self._call("GET", f"/sessions/{_segment(session_id)}/audit")
        return cast(list[AuditEntry], found["entries"])

    async def declare_break(self, session_id: str, action: BreakAction,
                            reason: str | None = None) -> BreakResult:
        """Start or end a declared break (a proctor token; 409 beyond the policy's
        limits or when the session is not live)."""
        body: dict[str, Any] = {"action": action}
        if reason is not None:
            body["reason"] = reason
        return cast(BreakResult, await self._call(
            "POST", f"/sessions/{_segment(session_id)}/break", body=body))

    # Proctor tokens ----------------------------------------------------------------

    async def create_proctor_token(self, *, sessions: Sequence[str] | None = None,
                                   exam_id: str | None = None,
                                   exams: Sequence[str] | None = None) -> ProctorToken:
        """One proctor token for ``sessions``, or for every session of ``exam_id`` /
        ``exams`` (also those created later)."""
        body: dict[str, Any] = {}
        if sessions is not None:
            body["sessions"] = list(sessions)
        if exam_id is not None:
            body["exam_id"] = exam_id
        if exams is not None:
            body["exams"] = list(exams)
        return cast(ProctorToken, await self._call("POST", "/proctor-tokens", body=body))

    # Review and decision -----------------------------------------------------------

    async def review_flag(self, session_id: str, flag_id: str, verdict: Verdict,
                          note: str | None = None) -> Flag:
        """A reviewer's verdict on one flag; the flag with its ``review``. The report's
        ``recommendation`` follows it (``ai_recommendation`` keeps the machine's)."""
        body: dict[str, Any] = {"verdict": verdict}
        if note is not None:
            body["note"] = note
        return cast(Flag, await self._call(
            "POST", f"/sessions/{_segment(session_id)}/flags/{_segment(flag_id)}/review",
            body=body))

    async def decide(self, session_id: str, decision: Decision,
                     note: str | None = None) -> DecisionResult:
        """A person's decision on an ended session (409 ``not_finished`` before); a
        later one supersedes, the audit keeps every one."""
        body: dict[str, Any] = {"decision": decision}
        if note is not None:
            body["note"] = note
        return cast(DecisionResult, await self._call(
            "POST", f"/sessions/{_segment(session_id)}/decision", body=body))

    # Webhooks ----------------------------------------------------------------------

    async def create_webhook(self, url: str, *, events: Sequence[EventType] | None = None,
                             secret: str | None = None) -> CreatedWebhook:
        """Register ``url`` for ``events`` (default all); the answer's ``secret`` (made
        when not given) is shown this once: keep it for :func:`verify_webhook`."""
        body: dict[str, Any] = {"url": url}
        if events is not None:
            body["events"] = list(events)
        if secret is not None:
            body["secret"] = secret
        return cast(CreatedWebhook, await self._call("POST", "/webhooks", body=body))

    async def list_webhooks(self) -> list[Webhook]:
        found = await self._call("GET", "/webhooks")
        return cast(list[Webhook], found["webhooks"])

    async def delete_webhook(self, webhook_id: str) -> DeletedWebhook:
        return cast(DeletedWebhook,
                    await self._call("DELETE", f"/webhooks/{_segment(webhook_id)}"))

    async def list_deliveries(self, webhook_id: str, limit: int | None = None) -> list[Delivery]:
        """The webhook's deliveries, newest first, each with its attempts and next retry."""
        found = await self._call("GET", f"/webhooks/{_segment(webhook_id)}/deliveries",
                                 query=None if limit is None else {"limit": str(limit)})
        return cast(list[Delivery], found["deliveries"])

    # Candidates --------------------------------------------------------------------

    async def get_candidate(self, candidate_id: str) -> CandidateProfile:
        """The candidate across sessions (404 when there is no session nor enrollment)."""
        return cast(CandidateProfile,
                    await self._call("GET", f"/candidates/{_segment(candidate_id)}"))

    async def enroll_candidate(self, candidate_id: str, photo: bytes,
                               content_type: str | None = None) -> Enrollment:
        """Enroll a photo (JPEG or PNG bytes; the type is read from them unless given)
        for identity checks; a photo with no usable face raises ProctorError 400."""
        return cast(Enrollment, await self._call(
            "POST", f"/candidates/{_segment(candidate_id)}/enrollment", data=bytes(photo),
            content_type=content_type or _image_type(photo)))

    async def erase_candidate(self, candidate_id: str) -> Erasure:
        """Erase the candidate: enrollment, sessions, flags, clips, transcripts."""
        return cast(Erasure, await self._call("DELETE", f"/candidates/{_segment(candidate_id)}"))

    # Deployment and evidence -------------------------------------------------------

    async def list_nodes(self) -> list[Node]:
        """The deployment's nodes: heartbeats, live sessions, capacity."""
        found = await self._call("GET", "/nodes")
        return cast(list[Node], found["nodes"])

    async def download_clip(self, clip_id: str) -> bytes:
        """An evidence clip's bytes (MP4: H.264 + AAC); ids are in each flag's
        ``evidence.clip_id``."""
        return await self._send("GET", f"/clips/{_segment(clip_id)}")

    # Interviews --------------------------------------------------------------------

    async def post_questions(self, session_id: str,
                             questions: Sequence[Question]) -> list[Question]:
        """Record when questions were asked (media seconds); the session's questions."""
        found = await self._call("POST", f"/sessions/{_segment(session_id)}/questions",
                                 body={"questions": [dict(q) for q in questions]})
        return cast(list[Question], found["questions"])

    async def score_answers(self, session_id: str, *,
                            question_ids: Sequence[str] | None = None,
                            role: str | None = None, level: str | None = None,
                            topic: str | None = None) -> AnswerScores:
        """Score a finished session's answers against the knowledge base (idempotent)."""
        body: dict[str, Any] = {k: v for k, v in (("role", role), ("level", level),
                                                  ("topic", topic)) if v is not None}
        if question_ids is not None:
            body["question_ids"] = list(question_ids)
        return cast(AnswerScores, await self._call(
            "POST", f"/sessions/{_segment(session_id)}/score", body=body))

    async def add_kb_document(self, kind: KbKind, text: str, *, title: str | None = None,
                              role: str | None = None, level: str | None = None,
                              topic: str | None = None) -> KbDocumentAdded:
        """Add a rubric or reference document to the tenant's knowledge base."""
        body: dict[str, Any] = {"kind": kind, "text": text}
        for key, value in (("title", title), ("role", role), ("level", level),
                           ("topic", topic)):
            if value is not None:
                body[key] = value
        return cast(KbDocumentAdded, await self._call("POST", "/kb", body=body))

    async def search_kb(self, query: str, *, kind: KbKind | None = None,
                        role: str | None = None, level: str | None = None,
                        topic: str | None = None, limit: int | None = None) -> list[KbHit]:
        """Hybrid search (BM25 + vectors, fused by reciprocal rank) of the knowledge base."""
        params = {"q": query, **{k: v for k, v in (("kind", kind), ("role", role),
                                                   ("level", level), ("topic", topic))
                                 if v is not None}}
        if limit is not None:
            params["limit"] = str(limit)
        found = await self._call("GET", "/kb/search", query=params)
        return cast(list[KbHit], found["hits"])


__all__ = ["ProctorClient"]
