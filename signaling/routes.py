"""HTTP handlers under ``/api/v1`` (and the health and metrics endpoints)."""

from __future__ import annotations

import asyncio
import datetime
import hmac
import json
import re
import time
from typing import Any
from urllib.parse import quote

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from proctor.capacity import node_load
from proctor.config import Config
from proctor.flags.model import new_id, utc_now_iso
from proctor.pipeline.session import TELEMETRY_TYPES
from proctor.report_html import render_report_html
from proctor.review.reports import current_report, reviewed_flags
from proctor.sessions.nodes import describe_node
from proctor.store.base import DEFAULT_TENANT, EventRecord, SessionRecord, SessionStatus
from proctor.transcript import transcript_document
from signaling import safejson
from signaling.auth import Principal, Role, hash_api_key
from signaling.errors import ApiError
from signaling.keys import (
    CONFIG_API_KEYS,
    CONFIG_KEY,
    METRICS_KEY,
    PEERS_KEY,
    SESSIONS_KEY,
    SIGNER_KEY,
    STORE_KEY,
)
from signaling.limits import check_events
from signaling.watchers import WatchScope

routes = web.RouteTableDef()
API = "/api/v1"
MAX_EVENTS_PER_POST = 100
MAX_ID = 200
MAX_EPOCH_MS = 10**15  # epoch milliseconds: the year 33658
MAX_OBJECT_BYTES = 16 * 1024  # a session's metadata, policy or accommodations, as JSON
# A candidate token stops working this long after its session ended: the page may still
# end it again or read its last status, but a finished exam cannot be reconnected.
CANDIDATE_GRACE_SECONDS = 300
LOOPBACK = frozenset({"127.0.0.1", "::1", "::ffff:127.0.0.1"})


# Authentication --------------------------------------------------------------------

def _bearer(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return _ascii(value.strip())
    if _QUERY_TOKEN_PATH.fullmatch(request.path) and request.method == "GET" \
            and request.query.get("token"):
        return _ascii(request.query["token"])
    raise ApiError(401, "unauthorized", "send 'Authorization: Bearer <api key or token>'")


# Only links that cannot send a header take ``?token=``: a clip (video elements, download
# links) and the HTML report. The access log redacts it (signaling/accesslog.py).
_QUERY_TOKEN_PATH = re.compile(rf"{API}/(clips/[^/]+|sessions/[^/]+/report)")


def _ascii(credential: str) -> str:
    """Keys and tokens are ASCII; anything else is no credential of ours (not a 500)."""
    if not credential.isascii() or not credential.isprintable():
        raise ApiError(401, "invalid_credential", "the credential is not valid")
    return credential


async def authenticate(request: web.Request, *roles: Role) -> Principal:
    credential = _bearer(request)
    principal = await _principal(request, credential)
    if principal.role not in roles:
        raise ApiError(403, "forbidden", f"a {principal.role} may not call this")
    return principal


async def _principal(request: web.Request, credential: str) -> Principal:
    if "." in credential:  # tokens are payload.signature; API keys have no dot
        return request.app[SIGNER_KEY].verify(credential)
    digest = hash_api_key(credential)
    if digest in request.app[CONFIG_API_KEYS]:  # config keys are of the default tenant
        return Principal(Role.INTEGRATOR, key_id="config", key_name="config",
                         tenant=DEFAULT_TENANT)
    record = await request.app[STORE_KEY].find_api_key(digest)  # revoked: None, at once
    if record is None:
        raise ApiError(401, "invalid_api_key", "the API key is not valid")
    return Principal(Role.INTEGRATOR, key_id=record.key_id, key_name=record.name,
                     tenant=record.tenant)


def visible(principal: Principal, session_id: str,
            record: SessionRecord | None) -> SessionRecord:
    """The one tenant and scope check every route makes for a session it touches.

    Another tenant's session is answered as a missing one (404), so no key learns that
    it exists; a token asking for a session it does not name hears 403, as before."""
    if record is not None and principal.may_see(record):
        return record
    if not principal.names(session_id):
        raise ApiError(403, "forbidden", "this token does not cover that session")
    raise ApiError(404, "not_found", "no such session")


async def visible_session(request: web.Request, principal: Principal,
                          session_id: str) -> SessionRecord:
    # A session live on this node is known without asking the store (its record here is
    # the freshest anyway), so its telemetry is still taken while the store is away.
    live = request.app[SESSIONS_KEY].sessions.get(session_id)
    record = live.record if live is not None else \
        await request.app[STORE_KEY].get_session(session_id)
    return visible(principal, session_id, record)


async def session_for(request: web.Request, principal: Principal) -> SessionRecord:
    record = await visible_session(request, principal, request.match_info["session_id"])
    if principal.role == Role.CANDIDATE:
        _check_candidate_session(record, time.time())
    return await request.app[SESSIONS_KEY].current(record)


def _check_candidate_session(record: SessionRecord, now: float) -> None:
    """A candidate token lives as long as its session: 401 once it ended a while ago."""
    if record.status in (SessionStatus.LIVE, SessionStatus.CREATED) or not record.ended_at:
        return
    ended = datetime.datetime.fromisoformat(record.ended_at)  # the server's own ISO time
    if now - ended.timestamp() > CANDIDATE_GRACE_SECONDS:
        raise ApiError(401, "token_expired", "the session is over; its token has expired")


async def json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = safejson.loads(await request.text())
    except (ValueError, LookupError) as exc:  # not UTF-8, unknown charset, too deep...
        raise ApiError(400, "bad_json", f"the body must be JSON: {exc}"[:300]) from exc
    if not isinstance(body, dict):
        raise ApiError(400, "bad_json", "the body must be a JSON object")
    return body


def _optional_object(body: dict[str, Any], key: str) -> dict[str, Any]:
    value = body.get(key) or {}
    if not isinstance(value, dict):
        raise ApiError(400, "bad_request", f"'{key}' must be an object")
    if len(json.dumps(value, separators=(",", ":"))) > MAX_OBJECT_BYTES:
        raise ApiError(400, "bad_request", f"'{key}' is over {MAX_OBJECT_BYTES} bytes as JSON")
    return value


def _short_id(body: dict[str, Any], key: str, required: bool) -> str | None:
    """A stripped id of 1 to MAX_ID characters (None when optional and absent)."""
    value = body.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip() or len(value.strip()) > MAX_ID:
        raise ApiError(400, "bad_request",
                       f"'{key}' {'is required as' if required else 'must be'} a string "
                       f"of 1 to {MAX_ID} characters")
    return value.strip()


# Health ----------------------------------------------------------------------------

@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    checks: dict[str, str] = {}
    try:
        await request.app[STORE_KEY].ping()
        checks["store"] = "ok"
    except Exception as exc:
        checks["store"] = f"unavailable: {exc}"
    service = request.app[SESSIONS_KEY]
    try:
        await service.bus.ping()
        checks["bus"] = "ok"
    except Exception as exc:
        checks["bus"] = f"unavailable: {exc}"
    checks["models"] = ", ".join(f"{d.name}: {d.source}" for d in service.detectors) or "none"
    outbox = service.outbox.describe()
    checks["outbox"] = _outbox_check(outbox)
    ready = checks["store"] == "ok" and checks["bus"] == "ok" and not outbox["full"]
    capacity = _capacity(request)
    # Ready: it serves the API. Accepting: a new session's offer would be admitted.
    return web.json_response({"ready": ready, "accepting": capacity["accepting"],
                              "checks": checks, "capacity": capacity, "outbox": outbox},
                             status=200 if ready else 503)


def _outbox_check(outbox: dict[str, Any]) -> str:
    """Live sessions' writes the store has not taken yet (proctor/store/outbox.py)."""
    if outbox["full"]:
        return (f"full: {outbox['depth']} records wait for the store (bound "
                f"{outbox['max_records']}); new sessions are refused")
    if outbox["depth"]:
        return f"{outbox['depth']} records wait for the store"
    return "empty"


def _capacity(request: web.Request) -> dict[str, Any]:
    """Live sessions, the limit and the load; the capacity gauges are set from it."""
    service, gauges = request.app[SESSIONS_KEY], request.app[METRICS_KEY]
    limit, taken = service.capacity.max_sessions, service.live_count()
    cpu = service.cpu.share()
    load = node_load(taken, limit, cpu)
    gauges.sessions_capacity.set(limit)
    gauges.cpu_share.set(cpu)
    gauges.asyncio_tasks.set(len(asyncio.all_tasks()))
    gauges.load.set(load)
    return {"live_sessions": len(service.sessions), "max_sessions": limit,
            "accepting": service.accepting(), "draining": service.draining,
            "load": round(load, 3),
            "cpu_share": round(cpu, 3), **service.capacity.describe()}


def _metrics_allowed(remote: str | None, authorization: str, config: Config) -> bool:
    """Loopback callers, or those with ``Bearer <server.metrics_token>`` (when set)."""
    if remote in LOOPBACK:
        return True
    token = config.server.metrics_token
    return bool(token) and hmac.compare_digest(authorization.encode(errors="replace"),
                                               f"Bearer {token}".encode())


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    if not _metrics_allowed(request.remote, request.headers.get("Authorization", ""),
                            request.app[CONFIG_KEY]):
        raise ApiError(403, "forbidden",
                       "metrics are served to loopback, or with server.metrics_token")
    _capacity(request)  # the load gauges are read when scraped
    body = generate_latest(request.app[METRICS_KEY].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


# Nodes -----------------------------------------------------------------------------

@routes.get(f"{API}/nodes")
async def list_nodes(request: web.Request) -> web.Response:
    """The nodes of this deployment, with their heartbeats, live sessions and capacity."""
    await authenticate(request, Role.INTEGRATOR)
    service = request.app[SESSIONS_KEY]
    nodes = await service.nodes.every()
    return web.json_response({"nodes": [
        describe_node(n, request.app[CONFIG_KEY], service.node_id) for n in nodes]})


# Sessions --------------------------------------------------------------------------

@routes.post(f"{API}/sessions")
async def create_session(request: web.Request) -> web.Response:
    principal = await authenticate(request, Role.INTEGRATOR)
    body = await json_body(request)
    candidate_id = _short_id(body, "candidate_id", required=True)
    assert candidate_id is not None
    exam_id = _short_id(body, "exam_id", required=False)
    record = SessionRecord(
        session_id=new_id(), candidate_id=candidate_id, exam_id=exam_id,
        policy=_optional_object(body, "policy"),
        accommodations=_optional_object(body, "accommodations"),
        metadata=_optional_object(body, "metadata"), created_at=utc_now_iso(),
        api_key_id=principal.key_id, tenant=principal.tenant)
    await request.app[SESSIONS_KEY].create(record)
    signer = request.app[SIGNER_KEY]
    candidate_token, expires = signer.issue(Role.CANDIDATE, [record.session_id],
                                            tenant=principal.tenant)
    proctor_token, _ = signer.issue(Role.PROCTOR, [record.session_id],
                                    tenant=principal.tenant)
    return web.json_response({
        "session_id": record.session_id, "candidate_token": candidate_token,
        "proctor_token": proctor_token,
        "expires_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires)),
    }, status=201)


@routes.post(f"{API}/proctor-tokens")
async def create_proctor_token(request: web.Request) -> web.Response:
    """One proctor token covering several sessions, or whole exams (``exam_id`` or
    ``exams``: every session of them, also those created later), for a dashboard."""
    principal = await authenticate(request, Role.INTEGRATOR)
    body = await json_body(request)
    sessions = _id_list(body, "sessions")
    exams = _id_list(body, "exams") + _id_list({"exams": [body["exam_id"]]}
                                               if "exam_id" in body else {}, "exams")
    if not sessions and not exams:
        raise ApiError(400, "bad_request",
                       "give 'sessions' (a list of ids), 'exam_id' or 'exams'")
    for session_id in sessions:  # another tenant's session: 404, as a missing one
        await visible_session(request, principal, session_id)
    token, expires = request.app[SIGNER_KEY].issue(Role.PROCTOR, sessions, exams=exams,
                                                   tenant=principal.tenant)
    return web.json_response({"proctor_token": token, "expires_at": time.strftime(
        "%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires))}, status=201)


def _id_list(body: dict[str, Any], key: str) -> list[str]:
    value = body.get(key, [])
    if not isinstance(value, list) or not all(
            isinstance(v, str) and 0 < len(v) <= MAX_ID for v in value):
        raise ApiError(400, "bad_request", f"'{key}' must be a list of ids")
    return list(value)


@routes.get(f"{API}/sessions")
async def list_sessions(request: web.Request) -> web.Response:
    principal = await authenticate(request, Role.INTEGRATOR, Role.PROCTOR)
    status = request.query.get("status")
    if status is not None and status not in {s.value for s in SessionStatus}:
        raise ApiError(400, "bad_request", "status must be one of "
                       + ", ".join(s.value for s in SessionStatus))
    records = await request.app[STORE_KEY].list_sessions(
        SessionStatus(status) if status else None, limit=500, tenant=principal.tenant)
    shown = [r for r in records if principal.may_see(r)]
    return web.json_response({"sessions": [await _session_summary(request, r)
                                           for r in shown]})


@routes.get(f"{API}/sessions/{{session_id}}")
async def get_session(request: web.Request) -> web.Response:
    principal = await authenticate(request, Role.INTEGRATOR, Role.PROCTOR)
    record = await session_for(request, principal)
    flags = await request.app[STORE_KEY].list_flags(record.session_id)
    summary = await _session_summary(request, record)
    counts: dict[str, int] = {}
    for flag in flags:
        counts[str(flag.kind)] = counts.get(str(flag.kind), 0) + 1
    summary["flag_counts"] = counts
    return web.json_response(summary)


async def _session_summary(request: web.Request, record: SessionRecord) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "session_id": record.session_id, "candidate_id": record.candidate_id,
        "exam_id": record.exam_id, "status": str(record.status),
        "created_at": record.created_at, "started_at": record.started_at,
        "ended_at": record.ended_at, "metadata": record.metadata, "node": record.owner_node,
    }
    live = await request.app[SESSIONS_KEY].live_summary(record)
    if live:
        summary.update(live)
    elif record.report is not None:
        summary["risk"] = None
        summary["recommendation"] = record.report.get("recommendation")
        summary["integrity_score"] = record.report.get("integrity_score")
        summary["pipeline"] = record.report.get("pipeline")
    return summary


@routes.get(f"{API}/sessions/{{session_id}}/rtc-config")
async def session_rtc_config(request: web.Request) -> web.Response:
    principal = await authenticate(request, Role.CANDIDATE)
    await session_for(request, principal)
    return web.json_response(_ice_servers(request))


@routes.get(f"{API}/rtc-config")
async def rtc_config(request: web.Request) -> web.Response:
    await authenticate(request, Role.PROCTOR, Role.CANDIDATE, Role.INTEGRATOR)
    return web.json_response(_ice_servers(request))


def _ice_servers(request: web.Request) -> dict[str, Any]:
    servers = []
    for server in request.app[CONFIG_KEY].rtc.ice_servers:
        entry: dict[str, Any] = {"urls": server.urls}
        if server.username:
            entry.update(username=server.username, credential=server.credential)
        servers.append(entry)
    return {"ice_servers": servers}


def _sdp(body: dict[str, Any]) -> tuple[str, str]:
    sdp, sdp_type = body.get("sdp"), body.get("type")
    if not isinstance(sdp, str) or not sdp.strip() or not isinstance(sdp_type, str):
        raise ApiError(400, "bad_sdp", "expected {sdp: string, type: 'offer'}")
    return sdp, sdp_type


@routes.post(f"{API}/sessions/{{session_id}}/offer")
async def offer(request: web.Request) -> web.Response:
    principal = await authenticate(request, Role.CANDIDATE)
    record = await session_for(request, principal)
    sdp, sdp_type = _sdp(await json_body(request))
    return web.json_response(await request.app[PEERS_KEY].candidate_offer(record, sdp, sdp_type))


@routes.post(f"{API}/sessions/{{session_id}}/events")
async def events(request: web.Request) -> web.Response:
    """Browser telemetry. Each event is stored, then fed to the flag tracker."""
    principal = await authenticate(request, Role.CANDIDATE)
    record = await session_for(request, principal)
    body = await json_body(request)
    items = body.get("events", [body] if "type" in body else None)
    if not isinstance(items, list) or not items or len(items) > MAX_EVENTS_PER_POST:
        raise ApiError(400, "bad_request",
                       f"expected {{events: [{{type, time}}]}} with 1–{MAX_EVENTS_PER_POST}")
    parsed = [_event(record.session_id, item, body.get("sent_at")) for item in items]
    check_events(request, record.session_id, len(parsed))  # 429 beyond limits.events_*
    await request.app[SESSIONS_KEY].record_events(record, parsed)
    return web.json_response({"accepted": len(parsed)}, status=202)


def _epoch_ms(value: Any) -> float | None:
    """A finite time in epoch milliseconds (a 400-digit integer, 1e308 or a bool is not)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, int) and abs(value) > MAX_EPOCH_MS:
        return None  # before float(): a huge int would overflow there
    number = float(value)
    return number if abs(number) <= MAX_EPOCH_MS else None


def _event(session_id: str, item: Any, sent_at: Any) -> tuple[EventRecord, float]:
    """The record, and how long ago (seconds) the event happened by the browser's clock."""
    if not isinstance(item, dict) or item.get("type") not in TELEMETRY_TYPES:
        raise ApiError(400, "bad_event",
                       f"each event needs a type among {', '.join(sorted(TELEMETRY_TYPES))}")
    client_ms = _epoch_ms(item.get("time"))
    if item.get("time") is not None and client_ms is None:
        raise ApiError(400, "bad_event", "'time' must be epoch milliseconds")
    # The browser's clock may be off; only the difference between two of its readings
    # (when it happened, when it was sent) is trusted.
    age = 0.0
    sent_ms = _epoch_ms(sent_at)
    if client_ms is not None and sent_ms is not None:
        age = min(max(0.0, (sent_ms - client_ms) / 1000), 3600.0)
    detail = {k: v for k, v in item.items() if k not in ("type", "time")}
    record = EventRecord(event_id=new_id(), session_id=session_id, type=item["type"],
                         client_time=None if client_ms is None else client_ms / 1000,
                         media_time=None, received_at=utc_now_iso(), detail=detail)
    return record, age


@routes.post(f"{API}/sessions/{{session_id}}/end")
async def end_session(request: web.Request) -> web.Response:
    principal = await authenticate(request, Role.INTEGRATOR, Role.CANDIDATE)
    record = await session_for(request, principal)
    report = await request.app[SESSIONS_KEY].end(record, principal.actor)
    status = "interrupted" if "interrupted" in report else "ended"
    return web.json_response({"session_id": record.session_id, "status": status,
                              "recommendation": report["recommendation"],
                              "integrity_score": report["integrity_score"]})


@routes.post(f"{API}/sessions/{{session_id}}/break")
async def declare_break(request: web.Request) -> web.Response:
    """A declared break: ``{action: start|end, reason?}`` from the candidate or a proctor."""
    principal = await authenticate(request, Role.CANDIDATE, Role.PROCTOR)
    record = await session_for(request, principal)
    body = await json_body(request)
    action, reason = body.get("action"), body.get("reason", "")
    if action not in ("start", "end") or not isinstance(reason, str):
        raise ApiError(400, "bad_request", "expected {action: 'start'|'end', reason?: string}")
    result = await request.app[SESSIONS_KEY].declare_break(record, action, principal.actor,
                                                           reason)
    return web.json_response(result)


@routes.get(f"{API}/sessions/{{session_id}}/flags")
async def list_flags(request: web.Request) -> web.Response:
    principal = await authenticate(request, Role.INTEGRATOR, Role.PROCTOR)
    record = await session_for(request, principal)
    flags = await reviewed_flags(request.app[STORE_KEY], record.session_id)
    return web.json_response({"flags": flags})  # each with its latest review


@routes.get(f"{API}/sessions/{{session_id}}/transcript")
async def transcript(request: web.Request) -> web.Response:
    """Timed segments so far (a live session's transcript grows as the worker catches up)."""
    principal = await authenticate(request, Role.INTEGRATOR, Role.PROCTOR)
    record = await session_for(request, principal)
    segments = await request.app[STORE_KEY].list_transcript(record.session_id)
    return web.json_response(transcript_document(segments))


@routes.get(f"{API}/sessions/{{session_id}}/report")
async def report(request: web.Request) -> web.Response:
    principal = await authenticate(request, Role.INTEGRATOR, Role.PROCTOR)
    record = await session_for(request, principal)
    # Rebuilt from the stored report with every review and the latest decision applied.
    built = await current_report(request.app[STORE_KEY], record, request.app[CONFIG_KEY].scoring)
    if built is None:
        raise ApiError(409, "not_ended", "the report is built when the session ends")
    if request.query.get("format") == "html":
        token = request.query.get("token")
        query = f"?token={quote(token)}" if token else ""
        clip_url = f"{API}/clips/{{clip_id}}{query}"
        review_url = f"/static/review.html?session={quote(record.session_id)}" + (
            f"&token={quote(token)}" if token else "")
        return web.Response(text=render_report_html(built, clip_url, review_url),
                            content_type="text/html")
    return web.json_response(built)


@routes.get(f"{API}/clips/{{clip_id}}")
async def clip(request: web.Request) -> web.StreamResponse:
    principal = await authenticate(request, Role.INTEGRATOR, Role.PROCTOR)
    record = await request.app[STORE_KEY].get_clip(request.match_info["clip_id"])
    if record is None:
        raise ApiError(404, "not_found",
                       "no such clip (a flag's clip is written a few seconds after it closes)")
    await visible_session(request, principal, record.session_id)  # another tenant's: 404
    body = await request.app[SESSIONS_KEY].clips.read(record)
    if body is None:
        raise ApiError(404, "not_found", "the clip's file is gone (retention?)")
    headers = {"Content-Type": record.content_type, "Cache-Control": "private, max-age=3600"}
    if isinstance(body, bytes):
        return web.Response(body=body, headers=headers)
    return web.FileResponse(body, headers=headers)


# Proctors --------------------------------------------------------------------------

@routes.post(f"{API}/watch/offer")
async def watch_offer(request: web.Request) -> web.Response:
    """A watcher's peer: ``alerts`` for the sessions (default: all the token covers), and
    with ``video`` the live picture and sound of that session."""
    principal = await authenticate(request, Role.PROCTOR)
    body = await json_body(request)
    sdp, sdp_type = _sdp(body)
    wanted = body.get("sessions") or sorted(principal.sessions)
    if not isinstance(wanted, list) or not all(isinstance(s, str) for s in wanted):
        raise ApiError(400, "bad_request", "'sessions' must be a list of session ids")
    video = body.get("video")
    if video is not None and not isinstance(video, str):
        raise ApiError(400, "bad_request", "'video' must be a session id")
    for session_id in [*wanted, *([video] if video else [])]:
        await visible_session(request, principal, session_id)
    scope = WatchScope(principal.sessions, principal.exams, principal.tenant)
    answer = await request.app[PEERS_KEY].watcher_offer(scope, wanted, video, sdp, sdp_type)
    return web.json_response(answer)
