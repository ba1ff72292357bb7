"""Interview routes: questions, the tenant's knowledge base, answer scoring.

The logic lives in :mod:`proctor.review.interviews` and :mod:`proctor.kb`; these
handlers authenticate, check the body and answer. Every knowledge-base call is of the
caller's tenant: another tenant's document answers 404 and never shows in a search;
another tenant's session answers 404 (signaling/routes.py ``visible``).
"""

from __future__ import annotations

import math
from typing import Any

from aiohttp import web

from proctor.flags.model import utc_now_iso
from proctor.kb.embeddings import get_embedder
from proctor.kb.index import MAX_LIMIT, DocKind, Filters, KnowledgeBase, SearchMode
from proctor.models import ModelMissing
from proctor.review.interviews import Interviews
from proctor.store.base import KbDocument, QuestionRecord
from signaling.auth import Role
from signaling.errors import ApiError
from signaling.keys import CONFIG_KEY, STORE_KEY
from signaling.routes import API, authenticate, json_body, session_for

routes = web.RouteTableDef()
MAX_QUESTIONS = 200  # per post
MAX_QUESTION_CHARS = 4000
MAX_ID = 200
MAX_LABEL = 100  # role, level, topic
MAX_TITLE = 200
MAX_QUERY_CHARS = 2000


async def _kb(request: web.Request) -> KnowledgeBase:
    answers = request.app[CONFIG_KEY].scoring.answers
    try:
        embedder = await get_embedder()
    except ModelMissing as exc:
        raise ApiError(503, "model_unavailable", str(exc)) from exc
    return KnowledgeBase(request.app[STORE_KEY], embedder, answers.chunk_words,
                         answers.max_document_bytes)


async def _interviews(request: web.Request) -> Interviews:
    return Interviews(request.app[STORE_KEY], await _kb(request), request.app[CONFIG_KEY].scoring)


# -- bodies --------------------------------------------------------------------------

def _storable(value: str, key: str) -> str:
    """Text both stores keep as sent: UTF-8 (no lone surrogates) without NUL characters
    (which PostgreSQL's text refuses); anything else is the client's error, not a 500."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ApiError(400, "bad_request", f"'{key}' is not valid Unicode text") from exc
    if "\x00" in value:
        raise ApiError(400, "bad_request", f"'{key}' must not contain NUL characters")
    return value


def _label(body: Any, key: str, limit: int = MAX_LABEL) -> str | None:
    """An optional short string (stripped; empty counts as absent)."""
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value.strip()) > limit:
        raise ApiError(400, "bad_request", f"'{key}' must be a string of at most {limit} chars")
    return _storable(value.strip(), key) or None


def _question(session_id: str, item: Any, index: int) -> QuestionRecord:
    where = f"questions[{index}]"
    if not isinstance(item, dict):
        raise ApiError(400, "bad_request", f"{where} must be an object")
    qid, text, asked_at = item.get("question_id"), item.get("text"), item.get("asked_at")
    if not isinstance(qid, str) or not qid.strip() or len(qid.strip()) > MAX_ID:
        raise ApiError(400, "bad_request", f"{where}.question_id must be 1 to {MAX_ID} chars")
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_QUESTION_CHARS:
        raise ApiError(400, "bad_request",
                       f"{where}.text must be 1 to {MAX_QUESTION_CHARS} characters")
    if isinstance(asked_at, bool) or not isinstance(asked_at, int | float) or not (
            math.isfinite(asked_at) and asked_at >= 0):
        raise ApiError(400, "bad_request",
                       f"{where}.asked_at must be media seconds from the session's start (≥ 0)")
    _storable(qid, f"{where}.question_id")
    _storable(text, f"{where}.text")
    return QuestionRecord(session_id=session_id, question_id=qid.strip(), text=text.strip(),
                          asked_at=float(asked_at), created_at=utc_now_iso())


def _questions(session_id: str, body: dict[str, Any]) -> list[QuestionRecord]:
    items = body.get("questions")
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_QUESTIONS:
        raise ApiError(400, "bad_request",
                       f"expected {{questions: [{{question_id, text, asked_at}}]}} with 1 to "
                       f"{MAX_QUESTIONS} questions")
    return [_question(session_id, item, i) for i, item in enumerate(items)]


def _filters(source: Any, kind: DocKind | None = None) -> Filters:
    return Filters(kind=kind, role=_label(source, "role"), level=_label(source, "level"),
                   topic=_label(source, "topic"))


def _kind(value: Any, required: bool) -> DocKind | None:
    if value is None and not required:
        return None
    try:
        return DocKind(value)
    except ValueError as exc:
        raise ApiError(400, "bad_request", "'kind' must be rubric or reference") from exc


def _limit(raw: str | None) -> int:
    if raw is None:
        return 5
    try:
        limit = int(raw)
    except ValueError as exc:
        raise ApiError(400, "bad_request", f"limit must be 1 to {MAX_LIMIT}") from exc
    if not 1 <= limit <= MAX_LIMIT:
        raise ApiError(400, "bad_request", f"limit must be 1 to {MAX_LIMIT}")
    return limit


def _document(document: KbDocument, chunks: int | None = None) -> dict[str, Any]:
    d = document
    out: dict[str, Any] = {"doc_id": d.doc_id, "kind": d.kind, "title": d.title, "role": d.role,
                           "level": d.level, "topic": d.topic, "model": d.model,
                           "created_at": d.created_at}
    if chunks is not None:
        out["chunks"] = chunks
    return out


# -- questions and scoring -----------------------------------------------------------

@routes.post(f"{API}/sessions/{{session_id}}/questions")
async def post_questions(request: web.Request) -> web.Response:
    """``{questions: [{question_id, text, asked_at}]}`` → the session's questions."""
    principal = await authenticate(request, Role.INTEGRATOR)
    record = await session_for(request, principal)
    posted = _questions(record.session_id, await json_body(request))
    merged = await (await _interviews(request)).add_questions(record, posted)
    return web.json_response({"session_id": record.session_id,
                              "questions": [q.to_dict() for q in merged]})


@routes.get(f"{API}/sessions/{{session_id}}/questions")
async def get_questions(request: web.Request) -> web.Response:
    principal = await authenticate(request, Role.INTEGRATOR, Role.PROCTOR)
    record = await session_for(request, principal)
    questions = await request.app[STORE_KEY].list_questions(record.session_id)
    return web.json_response({"session_id": record.session_id,
                              "questions": [q.to_dict() for q in questions]})


@routes.post(f"{API}/sessions/{{session_id}}/score")
async def score(request: web.Request) -> web.Response:
    """``{question_ids?, role?, level?, topic?}`` (all optional; role, level and topic
    default to the session's metadata) → every answer's score and ``final_score``."""
    principal = await authenticate(request, Role.INTEGRATOR)
    record = await session_for(request, principal)
    body = await json_body(request) if request.body_exists else {}
    ids = body.get("question_ids")
    if ids is not None and (not isinstance(ids, list) or not all(
            isinstance(i, str) for i in ids)):
        raise ApiError(400, "bad_request", "'question_ids' must be a list of strings")
    filters = _filters({**{k: v for k, v in record.metadata.items()
                           if k in ("role", "level", "topic") and isinstance(v, str)},
                        **{k: v for k, v in body.items() if k in ("role", "level", "topic")}})
    result = await (await _interviews(request)).score(record, principal.actor, ids, filters)
    return web.json_response(result)


# -- the knowledge base --------------------------------------------------------------

@routes.post(f"{API}/kb")
async def add_document(request: web.Request) -> web.Response:
    """``{kind: rubric|reference, text, title?, role?, level?, topic?}`` → 201 with its
    doc_id and chunk count (400 empty, 413 over ``scoring.answers.max_document_bytes``)."""
    principal = await authenticate(request, Role.INTEGRATOR)
    body = await json_body(request)
    kind = _kind(body.get("kind"), required=True)
    text = body.get("text")
    if not isinstance(text, str):
        raise ApiError(400, "bad_request", "'text' must be a string")
    _storable(text, "text")
    filters = _filters(body)
    document, chunks = await (await _kb(request)).add(
        principal.tenant, kind or DocKind.RUBRIC, text, _label(body, "title", MAX_TITLE) or "",
        filters.role, filters.level, filters.topic)
    return web.json_response({**_document(document, len(chunks)),
                              "chunk_ids": [c.chunk_id for c in chunks]}, status=201)


@routes.get(f"{API}/kb")
async def list_documents(request: web.Request) -> web.Response:
    principal = await authenticate(request, Role.INTEGRATOR)
    documents = await request.app[STORE_KEY].list_kb_documents(principal.tenant,
                                                               _limit(request.query.get("limit")))
    return web.json_response({"documents": [_document(d) for d in documents]})


@routes.get(f"{API}/kb/search")
async def search(request: web.Request) -> web.Response:
    """``?q=...`` (and kind, role, level, topic, limit 1-50, mode hybrid|bm25|vector)."""
    principal = await authenticate(request, Role.INTEGRATOR)
    query = request.query.get("q", "").strip()
    if not query or len(query) > MAX_QUERY_CHARS:
        raise ApiError(400, "bad_request", f"'q' must be 1 to {MAX_QUERY_CHARS} characters")
    _storable(query, "q")
    try:
        mode = SearchMode(request.query.get("mode", SearchMode.HYBRID))
    except ValueError as exc:
        raise ApiError(400, "bad_request", "mode must be hybrid, bm25 or vector") from exc
    filters = _filters(request.query, _kind(request.query.get("kind"), required=False))
    hits = await (await _kb(request)).search(principal.tenant, query, filters,
                                             _limit(request.query.get("limit")), mode)
    return web.json_response({"query": query, "mode": str(mode),
                              "hits": [h.to_dict() for h in hits]})


@routes.get(f"{API}/kb/{{doc_id}}")
async def get_document(request: web.Request) -> web.Response:
    principal = await authenticate(request, Role.INTEGRATOR)
    document = await request.app[STORE_KEY].get_kb_document(request.match_info["doc_id"],
                                                            principal.tenant)
    if document is None:
        raise ApiError(404, "not_found", "no such document")
    return web.json_response({**_document(document), "text": document.text})


@routes.delete(f"{API}/kb/{{doc_id}}")
async def delete_document(request: web.Request) -> web.Response:
    principal = await authenticate(request, Role.INTEGRATOR)
    if not await request.app[STORE_KEY].delete_kb_document(request.match_info["doc_id"],
                                                           principal.tenant):
        raise ApiError(404, "not_found", "no such document")
    return web.json_response({"doc_id": request.match_info["doc_id"], "deleted": True})
