"""Review routes: a verdict per flag, a decision per session, the audit, the candidate
profile. The logic lives in :mod:`proctor.review`; these handlers authenticate, read
the body and answer."""

from __future__ import annotations

from aiohttp import web

from proctor.review import audit
from proctor.review.profile import candidate_profile
from proctor.review.review import Reviews
from signaling.auth import Role
from signaling.errors import ApiError
from signaling.keys import CONFIG_KEY, SESSIONS_KEY, STORE_KEY
from signaling.routes import API, authenticate, json_body, session_for

routes = web.RouteTableDef()
MAX_CANDIDATE_ID = 200


def _reviews(request: web.Request) -> Reviews:
    app = request.app
    return Reviews(app[STORE_KEY], app[SESSIONS_KEY].outlet, app[CONFIG_KEY].scoring)


@routes.post(f"{API}/sessions/{{session_id}}/flags/{{flag_id}}/review")
async def review_flag(request: web.Request) -> web.Response:
    """``{verdict: confirmed|dismissed, note?}`` → the flag with its ``review``."""
    principal = await authenticate(request, Role.INTEGRATOR, Role.PROCTOR)
    record = await session_for(request, principal)
    body = await json_body(request)
    flag = await _reviews(request).review_flag(record, request.match_info["flag_id"],
                                               body.get("verdict"), body.get("note"),
                                               principal.actor)
    return web.json_response(flag)


@routes.post(f"{API}/sessions/{{session_id}}/decision")
async def decide(request: web.Request) -> web.Response:
    """``{decision: pass|fail, note?}`` on a finished session (409 before)."""
    principal = await authenticate(request, Role.INTEGRATOR, Role.PROCTOR)
    record = await session_for(request, principal)
    body = await json_body(request)
    result = await _reviews(request).decide(record, body.get("decision"), body.get("note"),
                                            principal.actor)
    return web.json_response(result)


@routes.get(f"{API}/sessions/{{session_id}}/audit")
async def session_audit(request: web.Request) -> web.Response:
    """``{entries: [{at, actor, action, details}]}``, oldest first."""
    principal = await authenticate(request, Role.INTEGRATOR, Role.PROCTOR)
    record = await session_for(request, principal)
    return web.json_response({"session_id": record.session_id,
                              "entries": await audit.entries(request.app[STORE_KEY],
                                                             record.session_id)})


@routes.get(f"{API}/candidates/{{candidate_id}}")
async def profile(request: web.Request) -> web.Response:
    """The tenant's candidate across sessions (404 for one with no session and no
    enrollment in the caller's tenant)."""
    principal = await authenticate(request, Role.INTEGRATOR)
    candidate_id = request.match_info["candidate_id"].strip()
    if not candidate_id or len(candidate_id) > MAX_CANDIDATE_ID:
        raise ApiError(400, "bad_request", f"candidate id must be 1–{MAX_CANDIDATE_ID} chars")
    found = await candidate_profile(request.app[STORE_KEY], candidate_id,
                                    request.app[CONFIG_KEY].scoring, principal.tenant)
    if found is None:
        raise ApiError(404, "not_found", "no sessions or enrollment for this candidate")
    return web.json_response(found)
