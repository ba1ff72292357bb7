"""Candidate routes: enroll a face photo, erase everything about a candidate.

Enrollment keeps only the face embedding, sealed with AES-256-GCM (the photo itself is
never stored). Erasure removes the enrollment, every session with its flags, events
and clip rows, and the clip files on disk.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from proctor.config import PipelineConfig
from proctor.detectors.identity import EmbeddingResult, IdentityDetector
from proctor.enrollment import enrollment_cipher, seal_enrollment
from proctor.review import audit
from proctor.sessions import SessionService
from proctor.store.base import SessionStatus
from signaling.auth import Role
from signaling.errors import ApiError
from signaling.keys import CONFIG_KEY, SESSIONS_KEY, STORE_KEY
from signaling.routes import API, authenticate
from signaling.uploads import decode_upload_image, read_upload_bytes

log = logging.getLogger("proctor.candidates")
routes = web.RouteTableDef()

# Photos are larger than the JSON bodies server.max_body_bytes is meant for, so this
# route reads its body itself, up to this size (413 beyond).
MAX_PHOTO_BYTES = 10 * 1024 * 1024
PHOTO_FIELD = "photo"
MAX_CANDIDATE_ID = 200



def _candidate_id(request: web.Request) -> str:
    candidate_id = request.match_info["candidate_id"].strip()
    if not candidate_id or len(candidate_id) > MAX_CANDIDATE_ID:
        raise ApiError(400, "bad_request", f"candidate id must be 1–{MAX_CANDIDATE_ID} chars")
    return candidate_id


def _identity_detector(service: SessionService) -> IdentityDetector:
    for detector in service.detectors:
        if isinstance(detector, IdentityDetector):
            return detector
    raise ApiError(503, "identity_unavailable",
                   "face verification is switched off on this server (detectors.identity)")


# Enrollment ------------------------------------------------------------------------

@routes.post(f"{API}/candidates/{{candidate_id}}/enrollment")
async def enroll(request: web.Request) -> web.Response:
    """A photo (JPEG/PNG body, or multipart field 'photo') → the sealed embedding, for
    the caller's tenant's candidate of that id (candidate ids are per tenant)."""
    principal = await authenticate(request, Role.INTEGRATOR)
    candidate_id = _candidate_id(request)
    service = request.app[SESSIONS_KEY]
    detector = _identity_detector(service)
    data = await _read_photo(request)
    loop = asyncio.get_running_loop()
    result = await loop.run_in_executor(service.inference, _embed_photo, detector, data,
                                        request.app[CONFIG_KEY].pipeline)
    problem = result.problem(detector.config)
    if problem is not None or result.embedding is None:
        code, message = problem or ("no_face", "no face was found")
        raise ApiError(400, code, f"{message}: send a sharp, well-lit photo of one face")
    quality = result.quality(detector.config)
    record = seal_enrollment(enrollment_cipher(request.app[CONFIG_KEY]), candidate_id,
                             result.embedding, quality, principal.tenant)
    await request.app[STORE_KEY].save_enrollment(record)  # replaces an earlier one
    log.info("candidate %s enrolled (%s)", candidate_id, quality)
    return web.json_response({"candidate_id": candidate_id, "enrolled": True,
                              "quality": quality}, status=201)


def _embed_photo(detector: IdentityDetector, data: bytes,
                 limits: PipelineConfig) -> EmbeddingResult:
    """Runs in the inference pool: decoding a large photo costs as much as the model.
    A 400 (ApiError) for what is not an image or has a shape no camera makes."""
    return detector.embed(decode_upload_image(data, limits))


async def _read_photo(request: web.Request) -> bytes:
    data = await read_upload_bytes(request, (PHOTO_FIELD,), MAX_PHOTO_BYTES, "photo")
    if not data:
        raise ApiError(400, "not_an_image", "the photo is empty")
    return data


# Erasure ---------------------------------------------------------------------------

@routes.delete(f"{API}/candidates/{{candidate_id}}")
async def delete_candidate(request: web.Request) -> web.Response:
    """Erase the tenant's candidate: enrollment, sessions, flags, events, clips (rows and
    files). 404 for a candidate the tenant has no session or enrollment of."""
    principal = await authenticate(request, Role.INTEGRATOR)
    candidate_id, tenant = _candidate_id(request), principal.tenant
    service, store = request.app[SESSIONS_KEY], request.app[STORE_KEY]
    sessions = await store.list_candidate_sessions(candidate_id, tenant)
    if not sessions and await store.get_enrollment(candidate_id, tenant) is None:
        raise ApiError(404, "not_found", "no sessions or enrollment for this candidate")
    for record in sessions:
        if record.status == SessionStatus.LIVE:
            # Stop it first (on whichever node holds it): a running pipeline would keep
            # writing flags and clips for rows about to vanish. Ending also flushes the
            # clips it was writing.
            await service.end(await service.current(record))
    clips = await store.delete_candidate(candidate_id, tenant)
    enrollment = await store.delete_enrollment(candidate_id, tenant)
    await service.clips.remove(clips)
    # The audit keeps that it happened, by whom, and how much: no id of the candidate.
    await audit.record(store, "erasure", principal.actor, sessions=len(sessions),
                       clips=len(clips), enrollment=enrollment)
    log.info("candidate %s erased: %d sessions, %d clips, enrollment %s", candidate_id,
             len(sessions), len(clips), enrollment)
    return web.json_response({"candidate_id": candidate_id, "deleted": {
        "sessions": len(sessions), "clips": len(clips), "enrollment": enrollment}})
