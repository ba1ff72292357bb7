"""The OpenAPI 3.1 document served at ``/api/v1/openapi.json``, built from data.

Three tables, read top to bottom:

- ``SCHEMAS``: every shape the API takes or gives, once (``components/schemas``);
  other shapes point at them with :func:`ref`.
- ``ROUTES``: one :class:`Route` per operation: who may call it, its query, its body,
  its success status and shape, and the error statuses beyond the common ones.
- The error statuses every route shares are derived (:func:`_error_statuses`): 401,
  403, 429 and 503 for every authenticated call, 400 and 413 for a body, 400 for a
  query, 404 for a path with an id. Each answers ``{error: {code, message}}``.

``tests/fuzz/test_openapi_fuzz.py`` runs schemathesis against this document and the
real app: a route that answers a status or shape missing here fails there.
To add a route, add its shapes to ``SCHEMAS`` and a ``Route`` at the end of ``ROUTES``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from proctor.outbound import EVENT_TYPES
from proctor.pipeline.session import TELEMETRY_TYPES
from proctor.store.base import SessionStatus

Schema = dict[str, Any]

MAX_ID = 200  # signaling/routes.py MAX_ID, candidates.py MAX_CANDIDATE_ID


# Building blocks ---------------------------------------------------------------------

def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(required: dict[str, Schema], optional: dict[str, Schema] | None = None,
        description: str = "") -> Schema:
    """An object with these properties (others allowed: answers may grow)."""
    schema: Schema = {"type": "object", "properties": {**required, **(optional or {})},
                      "required": list(required)}
    if description:
        schema["description"] = description
    return schema


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def array(items: Schema, **limits: int) -> Schema:
    return {"type": "array", "items": items, **limits}


def enum(*values: str) -> Schema:
    return {"type": "string", "enum": list(values)}


STR: Schema = {"type": "string"}
INT: Schema = {"type": "integer"}
NUM: Schema = {"type": "number"}
BOOL: Schema = {"type": "boolean"}
ANY_OBJ: Schema = {"type": "object"}
TIME: Schema = {"type": "string", "description": "ISO 8601, UTC"}
BINARY: Schema = {"type": "string", "format": "binary"}
ID: Schema = ref("Id")


# Shapes ------------------------------------------------------------------------------

SCHEMAS: dict[str, Schema] = {
    "Error": obj({"error": obj({"code": STR, "message": STR})},
                 description="Every 4xx and 5xx answer"),
    "Id": {"type": "string", "minLength": 1, "maxLength": MAX_ID},
    "SessionStatus": enum(*(s.value for s in SessionStatus)),
    # Sessions
    "SessionCreate": obj({"candidate_id": ID}, {
        "exam_id": ID, "policy": ANY_OBJ, "metadata": ANY_OBJ,
        "accommodations": obj({}, {"disable": array(STR),
                                   "relax": {"type": "object",
                                             "additionalProperties": {"type": "number",
                                                                      "minimum": 1}},
                                   "extra_time_seconds": NUM, "notes": STR})}),
    "SessionCreated": obj({"session_id": STR, "candidate_token": STR, "proctor_token": STR,
                           "expires_at": TIME}),
    "SessionSummary": obj({
        "session_id": STR, "candidate_id": STR, "exam_id": nullable(STR),
        "status": ref("SessionStatus"), "created_at": TIME, "started_at": nullable(TIME),
        "ended_at": nullable(TIME), "metadata": ANY_OBJ, "node": nullable(STR)}, {
        "risk": nullable(NUM), "media_time": NUM, "pipeline": nullable(ANY_OBJ),
        "recommendation": nullable(STR), "integrity_score": nullable(NUM)}),
    "Session": {"allOf": [ref("SessionSummary"), obj({"flag_counts": {
        "type": "object", "additionalProperties": INT}})]},
    "SessionList": obj({"sessions": array(ref("SessionSummary"))}),
    "SessionEnded": obj({"session_id": STR, "status": enum("ended", "interrupted"),
                         "recommendation": STR, "integrity_score": NUM}),
    "IceServers": obj({"ice_servers": array(obj(
        {"urls": {"anyOf": [STR, array(STR)]}}, {"username": STR, "credential": STR}))}),
    "SdpOffer": obj({"sdp": {"type": "string", "minLength": 1}, "type": enum("offer")}),
    "WatchOffer": {"allOf": [ref("SdpOffer"), obj({}, {"sessions": array(ID),
                                                       "video": ID})]},
    "SdpAnswer": obj({"sdp": STR, "type": enum("answer")}),
    "TelemetryEvent": obj({"type": enum(*sorted(TELEMETRY_TYPES))},
                          {"time": {"type": "number", "description": "epoch milliseconds"}}),
    "Telemetry": obj({"events": array(ref("TelemetryEvent"), minItems=1, maxItems=100)},
                     {"sent_at": {"type": "number", "description": "epoch milliseconds"}}),
    "Accepted": obj({"accepted": INT}),
    "BreakRequest": obj({"action": enum("start", "end")}, {"reason": STR}),
    "Break": obj({"break_id": STR, "start": NUM, "end": nullable(NUM), "reason": STR,
                  "by": STR}),
    "BreakResult": obj({"break": ref("Break")}),
    # Flags, review, reports
    "Flag": obj({
        "flag_id": STR, "session_id": STR, "candidate_id": STR, "kind": STR,
        "severity": enum("low", "moderate", "high"), "start": NUM, "end": nullable(NUM),
        "confidence": NUM, "evidence": obj({"clip_id": nullable(STR), "metrics": ANY_OBJ}),
        "source": STR, "created_at": TIME}, {"review": nullable(ref("Review"))}),
    "FlagList": obj({"flags": array(ref("Flag"))}),
    "Review": obj({"verdict": enum("confirmed", "dismissed"), "note": STR, "by": STR,
                   "at": TIME}),
    "ReviewRequest": obj({"verdict": enum("confirmed", "dismissed")}, {"note": STR}),
    "Decision": obj({"decision": enum("pass", "fail"), "note": STR, "by": STR, "at": TIME}),
    "DecisionRequest": obj({"decision": enum("pass", "fail")}, {"note": STR}),
    "DecisionResult": obj({"session_id": STR, "decision": ref("Decision"),
                           "recommendation": nullable(STR),
                           "ai_recommendation": nullable(STR)}),
    "Report": obj({"session_id": STR, "candidate_id": STR, "flags": array(ref("Flag")),
                   "integrity_score": NUM, "recommendation": STR,
                   "ai_recommendation": STR, "decision": nullable(ref("Decision")),
                   "breaks": array(ref("Break")), "duration": NUM},
                  description="See SPEC 'Scores and recommendation'"),
    "Transcript": obj({"segments": array(obj({"start": NUM, "end": NUM, "text": STR,
                                              "confidence": NUM})), "text": STR}),
    "Audit": obj({"session_id": STR, "entries": array(obj({
        "at": TIME, "actor": STR, "action": STR, "details": ANY_OBJ}))}),
    "ProctorTokenRequest": obj({}, {"sessions": array(ID), "exam_id": ID,
                                    "exams": array(ID)}),
    "ProctorToken": obj({"proctor_token": STR, "expires_at": TIME}),
    # Candidates and offline analysis
    "Enrolled": obj({"candidate_id": STR, "enrolled": BOOL, "quality": obj(
        {"face_px": NUM, "sharpness": NUM, "score": NUM})}),
    "CandidateProfile": obj({
        "candidate_id": STR, "enrolled": BOOL, "sessions_total": INT,
        "sessions_analysed": INT, "sessions_flagged": INT,
        "mean_integrity_score": nullable(NUM),
        "top_flag_kinds": array(obj({"kind": STR, "count": INT})),
        "sessions": array(obj({
            "session_id": STR, "exam_id": nullable(STR), "status": ref("SessionStatus"),
            "created_at": TIME, "ended_at": nullable(TIME),
            "recommendation": nullable(STR), "ai_recommendation": nullable(STR),
            "integrity_score": nullable(NUM), "decision": nullable(ref("Decision")),
            "flags": INT}))}),
    "CandidateErased": obj({"candidate_id": STR, "deleted": obj(
        {"sessions": INT, "clips": INT, "enrollment": BOOL})}),
    "FrameAnalysis": obj({"width": INT, "height": INT, "faces": array(ANY_OBJ),
                          "signals": ANY_OBJ, "detectors": ANY_OBJ, "processing_ms": NUM}),
    "JobCreated": obj({"job_id": STR, "status": enum("queued")}),
    "Job": obj({"job_id": STR, "status": enum("queued", "running", "done", "failed"),
                "filename": STR, "progress": NUM, "created_at": TIME,
                "report": nullable(ANY_OBJ), "error": nullable(STR)}),
    "NodeList": obj({"nodes": array(obj({
        "node_id": STR, "address": STR, "status": STR, "alive": BOOL, "this_node": BOOL,
        "started_at": TIME, "heartbeat_at": TIME, "heartbeat_age_seconds": NUM,
        "live_sessions": INT, "capacity": nullable(INT)}))}),
    # Webhooks
    "WebhookCreate": obj({"url": {"type": "string", "format": "uri", "maxLength": 2048}}, {
        "events": array(enum(*EVENT_TYPES), minItems=1),
        "secret": {"type": "string", "minLength": 16, "maxLength": 256}}),
    "Webhook": obj({"webhook_id": STR, "url": STR, "events": array(STR),
                    "created_at": TIME}),
    "WebhookCreated": {"allOf": [ref("Webhook"), obj({"secret": STR})]},
    "WebhookList": obj({"webhooks": array(ref("Webhook"))}),
    "WebhookDeleted": obj({"webhook_id": STR, "deleted": BOOL}),
    "DeliveryList": obj({"webhook_id": STR, "deliveries": array(obj({
        "delivery_id": STR, "event_id": STR, "type": STR, "session_id": nullable(STR),
        "status": STR, "created_at": TIME, "delivered_at": nullable(TIME),
        "attempt_count": INT, "last_status_code": nullable(INT),
        "last_error": nullable(STR), "next_retry_at": nullable(TIME),
        "attempts": array(obj({"at": TIME, "status_code": nullable(INT),
                               "error": nullable(STR),
                               "duration_ms": nullable(NUM)}))}))}),
    # Interviews: knowledge base, questions, answer scores (signaling/interview.py)
    "KbKind": enum("rubric", "reference"),
    "KbDocumentCreate": obj({"kind": ref("KbKind"), "text": {"type": "string", "minLength": 1}},
                            {"title": STR, "role": STR, "level": STR, "topic": STR}),
    "KbDocument": obj({"doc_id": STR, "kind": ref("KbKind"), "title": STR,
                       "role": nullable(STR), "level": nullable(STR), "topic": nullable(STR),
                       "model": STR, "created_at": TIME}),
    "KbDocumentCreated": {"allOf": [ref("KbDocument"), obj({"chunks": INT,
                                                            "chunk_ids": array(STR)})]},
    "KbDocumentText": {"allOf": [ref("KbDocument"), obj({"text": STR})]},
    "KbDocumentList": obj({"documents": array(ref("KbDocument"))}),
    "KbDeleted": obj({"doc_id": STR, "deleted": BOOL}),
    "KbHit": obj({"doc_id": STR, "chunk_id": STR, "kind": ref("KbKind"), "title": STR,
                  "text": STR, "role": nullable(STR), "level": nullable(STR),
                  "topic": nullable(STR),
                  "scores": obj({"bm25": NUM, "vector": NUM, "fused": NUM})}),
    "KbSearch": obj({"query": STR, "mode": enum("hybrid", "bm25", "vector"),
                     "hits": array(ref("KbHit"))}),
    "QuestionPost": obj({"question_id": ID,
                         "text": {"type": "string", "minLength": 1, "maxLength": 4000},
                         "asked_at": {"type": "number", "minimum": 0,
                                      "description": "media seconds from the session's start"}}),
    "QuestionsPost": obj({"questions": array(ref("QuestionPost"), minItems=1, maxItems=200)}),
    "QuestionList": obj({"session_id": STR, "questions": array(obj(
        {"question_id": STR, "text": STR, "asked_at": NUM}))}),
    "ScoreRequest": obj({}, {"question_ids": array(STR), "role": STR, "level": STR,
                             "topic": STR}),
    "ScoredAnswer": obj({
        "question_id": STR, "question": STR, "asked_at": NUM, "answer": STR,
        "answer_start": nullable(NUM), "answer_end": nullable(NUM), "words": INT,
        "score": NUM, "criteria": array(obj({"name": STR, "score": NUM, "reason": STR})),
        "citations": array(obj({"doc_id": STR, "chunk_id": STR, "quote": STR})),
        "scorer": STR, "fallback": nullable(STR), "dropped_claims": INT}),
    "AnswerScores": obj({"session_id": STR, "final_score": NUM,
                         "answers": array(ref("ScoredAnswer")), "scorer": STR,
                         "dropped_claims": INT, "fallbacks": INT, "scored_at": TIME,
                         "transcript_complete": BOOL, "recommendation": nullable(STR)}),
}


# Request bodies, query parameters ------------------------------------------------------

@dataclass(frozen=True)
class Upload:
    """A file as the raw body, or as one field of a multipart form."""

    field: str
    media_types: tuple[str, ...]

    def content(self) -> Schema:
        raw = {media: {"schema": BINARY} for media in self.media_types}
        form = {"schema": obj({self.field: BINARY})}
        return {**raw, "multipart/form-data": form}


IMAGE = ("image/jpeg", "image/png", "application/octet-stream")
PHOTO = Upload("photo", IMAGE)
FRAME = Upload("image", IMAGE)
VIDEO = Upload("video", ("video/mp4", "video/webm", "application/octet-stream"))

Body = str | Upload  # a component's name (JSON), or an upload


@dataclass(frozen=True)
class Query:
    name: str
    schema: Schema
    description: str = ""


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # under /api/v1
    who: tuple[str, ...]  # roles: integrator, candidate, proctor
    summary: str
    status: int  # success
    answer: str | None  # the success body's component (JSON); None: see media
    body: Body | None = None
    query: tuple[Query, ...] = ()
    errors: tuple[int, ...] = ()  # statuses beyond the derived ones (409, 503, ...)
    media: tuple[tuple[str, Schema], ...] = ()  # non-JSON success bodies


KEY, CAND, PROC = "integrator", "candidate", "proctor"  # KEY: an API key
ANY = (KEY, CAND, PROC)
TOKEN_QUERY = Query("token", STR, "the credential, for links that cannot send a header")
KB_LIMIT: Schema = {"type": "integer", "minimum": 1, "maximum": 50}
# What the app's own code answers with 409 or 503 (see proctor/sessions/service.py).
ENDED, FULL = 409, 503

ROUTES: tuple[Route, ...] = (
    Route("post", "/sessions", (KEY,), "Create a session; returns candidate and proctor tokens", 201, "SessionCreated", "SessionCreate"),
    Route("get", "/sessions", (KEY, PROC), "List sessions", 200, "SessionList", query=(Query("status", ref("SessionStatus")),)),
    Route("get", "/sessions/{session_id}", (KEY, PROC), "Status, times, live risk, flag counts", 200, "Session"),
    Route("get", "/sessions/{session_id}/rtc-config", (CAND,), "ICE servers for the candidate's peer", 200, "IceServers"),
    Route("post", "/sessions/{session_id}/offer", (CAND,), "SDP offer in, SDP answer out; 503 with Retry-After when the node is full", 200, "SdpAnswer", "SdpOffer", errors=(ENDED, FULL)),
    Route("post", "/sessions/{session_id}/events", (CAND,), "Browser telemetry", 202, "Accepted", "Telemetry", errors=(ENDED,)),
    Route("post", "/sessions/{session_id}/end", (KEY, CAND), "End the session (idempotent); builds the report", 200, "SessionEnded"),
    Route("post", "/sessions/{session_id}/break", (CAND, PROC), "A declared break; pauses the presence rules; 409 beyond the policy's limits or when not live", 200, "BreakResult", "BreakRequest", errors=(409,)),
    Route("get", "/sessions/{session_id}/flags", (KEY, PROC), "The session's flags, each with its latest review", 200, "FlagList"),
    Route("get", "/sessions/{session_id}/report", (KEY, PROC), "The report (after the session ended); ?format=html a page", 200, "Report", query=(Query("format", enum("json", "html")), TOKEN_QUERY), errors=(409,), media=(("text/html", STR),)),
    Route("get", "/sessions/{session_id}/transcript", (KEY, PROC), "Timed transcript", 200, "Transcript"),
    Route("post", "/sessions/{session_id}/flags/{flag_id}/review", (KEY, PROC), "A verdict on one flag; the report is recomputed", 200, "Flag", "ReviewRequest"),
    Route("post", "/sessions/{session_id}/decision", (KEY, PROC), "A person's decision on a finished session; 409 before it has finished", 200, "DecisionResult", "DecisionRequest", errors=(409,)),
    Route("get", "/sessions/{session_id}/audit", (KEY, PROC), "Who did what and when, oldest first", 200, "Audit"),
    Route("get", "/clips/{clip_id}", (KEY, PROC), "An evidence clip (MP4, H.264)", 200, None, query=(TOKEN_QUERY,), media=(("video/mp4", BINARY),)),
    Route("post", "/watch/offer", (PROC,), "A peer whose 'alerts' DataChannel carries the sessions' flags; with 'video' the live picture", 200, "SdpAnswer", "WatchOffer", errors=(FULL,)),
    Route("post", "/proctor-tokens", (KEY,), "A proctor token covering several sessions or whole exams", 201, "ProctorToken", "ProctorTokenRequest", errors=(404,)),
    Route("get", "/rtc-config", ANY, "ICE servers for a dashboard's peer", 200, "IceServers"),
    Route("post", "/candidates/{candidate_id}/enrollment", (KEY,), "Enroll a candidate's photo; 503 when face verification is off", 201, "Enrolled", PHOTO, errors=(503,)),
    Route("get", "/candidates/{candidate_id}", (KEY,), "The candidate across sessions", 200, "CandidateProfile"),
    Route("delete", "/candidates/{candidate_id}", (KEY,), "Erase a candidate's enrollment, sessions, flags, clips", 200, "CandidateErased"),
    Route("post", "/analyze/frame", (KEY,), "One image → faces, head pose, gaze, objects, identity (?candidate_id=), processing_ms", 200, "FrameAnalysis", FRAME, query=(Query("candidate_id", ID),), errors=(404,)),
    Route("post", "/analyze/video", (KEY,), "Upload a video → a job", 202, "JobCreated", VIDEO),
    Route("get", "/jobs/{job_id}", (KEY,), "A job's progress, then its report", 200, "Job"),
    Route("get", "/nodes", (KEY,), "The deployment's nodes", 200, "NodeList"),
    Route("post", "/webhooks", (KEY,), "Register a webhook (the secret shown once)", 201, "WebhookCreated", "WebhookCreate"),
    Route("get", "/webhooks", (KEY,), "The caller's webhooks (without their secrets)", 200, "WebhookList"),
    Route("delete", "/webhooks/{webhook_id}", (KEY,), "Delete a webhook with its deliveries", 200, "WebhookDeleted"),
    Route("get", "/webhooks/{webhook_id}/deliveries", (KEY,), "Deliveries, newest first", 200, "DeliveryList", query=(Query("limit", {"type": "integer", "minimum": 1, "maximum": 100}),)),
    Route("post", "/kb", (KEY,), "Add a rubric or reference document to the tenant's knowledge base (chunked, embedded)", 201, "KbDocumentCreated", "KbDocumentCreate"),
    Route("get", "/kb", (KEY,), "The tenant's documents, newest first", 200, "KbDocumentList", query=(Query("limit", KB_LIMIT),)),
    Route("get", "/kb/search", (KEY,), "Hybrid search (BM25 + vectors, fused by reciprocal rank) of the knowledge base", 200, "KbSearch", query=(Query("q", STR, "the query (required)"), Query("kind", ref("KbKind")), Query("role", STR), Query("level", STR), Query("topic", STR), Query("limit", KB_LIMIT), Query("mode", enum("hybrid", "bm25", "vector")))),
    Route("get", "/kb/{doc_id}", (KEY,), "One document with its text", 200, "KbDocumentText"),
    Route("delete", "/kb/{doc_id}", (KEY,), "Delete a document with its chunks", 200, "KbDeleted"),
    Route("post", "/sessions/{session_id}/questions", (KEY,), "Interview questions with the media time each was asked", 200, "QuestionList", "QuestionsPost"),
    Route("get", "/sessions/{session_id}/questions", (KEY, PROC), "The session's interview questions", 200, "QuestionList"),
    Route("post", "/sessions/{session_id}/score", (KEY,), "Score a finished session's answers against the knowledge base (idempotent); 409 while live or without questions", 200, "AnswerScores", "ScoreRequest", errors=(409,)),
)


# The document ------------------------------------------------------------------------

SECURITY = {
    KEY: {"type": "http", "scheme": "bearer", "description": "An integrator's API key"},
    CAND: {"type": "http", "scheme": "bearer", "bearerFormat": "token",
        "description": "A candidate token (one session), from POST /sessions"},
    PROC: {"type": "http", "scheme": "bearer", "bearerFormat": "token",
        "description": "A proctor token (sessions or exams), from POST /sessions or "
                       "POST /proctor-tokens"},
}
ERROR_WORDS = {400: "bad input", 401: "no valid credential", 403: "not this caller's",
               404: "no such object (or another tenant's)", 409: "wrong state",
               413: "too large", 429: "rate limited (Retry-After)",
               503: "not available now (Retry-After)"}
_PARAM = re.compile(r"{(\w+)}")


def _error_statuses(route: Route) -> list[int]:
    statuses = {401, 403, 429, 503, *route.errors}  # 503: the store is unavailable
    if route.body is not None:
        statuses |= {400, 413}
    if route.query:
        statuses.add(400)
    if _PARAM.search(route.path):
        statuses |= {400, 404}  # 400: an id that is no id (empty, too long)
    return sorted(statuses)


def _parameters(route: Route) -> list[Schema]:
    path = [{"name": name, "in": "path", "required": True, "schema": ID}
            for name in _PARAM.findall(route.path)]
    query = [{"name": q.name, "in": "query", "required": False, "schema": q.schema,
              **({"description": q.description} if q.description else {})}
             for q in route.query]
    return path + query


def _request_body(body: Body) -> Schema:
    if isinstance(body, Upload):
        return {"required": True, "content": body.content()}
    return {"required": True, "content": {"application/json": {"schema": ref(body)}}}


def _success(route: Route) -> Schema:
    content = {media: {"schema": schema} for media, schema in route.media}
    if route.answer is not None:
        content = {"application/json": {"schema": ref(route.answer)}, **content}
    return {"description": "success", "content": content}


def _operation_id(route: Route) -> str:
    """post_sessions_session_id_offer: the method and the path's words."""
    words = re.findall(r"\w+", route.path.replace("-", "_"))
    return "_".join([route.method, *words])


def _operation(route: Route) -> Schema:
    responses = {str(route.status): _success(route)}
    for status in _error_statuses(route):
        responses[str(status)] = {"$ref": f"#/components/responses/E{status}"}
    operation: Schema = {
        "operationId": _operation_id(route),
        "summary": route.summary,
        "description": f"Called by: {', '.join(route.who)}.",
        "security": [{role: []} for role in route.who],
        "parameters": _parameters(route),
        "responses": responses,
    }
    if route.body is not None:
        operation["requestBody"] = _request_body(route.body)
    return operation


def _error_responses() -> Schema:
    retry = {"Retry-After": {"schema": INT, "required": False,
                             "description": "seconds to wait"}}
    return {f"E{status}": {"description": words,
                           "content": {"application/json": {"schema": ref("Error")}},
                           **({"headers": retry} if status in (429, 503) else {})}
            for status, words in ERROR_WORDS.items()}


def openapi_document() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        paths.setdefault(route.path, {})[route.method] = _operation(route)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Proctor API", "version": "1"},
        "servers": [{"url": "/api/v1"}],
        "paths": paths,
        "components": {"securitySchemes": SECURITY, "schemas": SCHEMAS,
                       "responses": _error_responses()},
    }
