"""The OpenAPI document served at ``/api/v1/openapi.json``, built from one route table."""

from __future__ import annotations

from typing import Any

# (method, path, who may call, summary, success status)
ROUTES: tuple[tuple[str, str, str, str, int], ...] = (
    ("post", "/sessions", "integrator", "Create a session; returns candidate and proctor tokens", 201),
    ("get", "/sessions", "integrator, proctor", "List sessions (?status=created|live|ended|interrupted)", 200),
    ("get", "/sessions/{session_id}", "integrator, proctor", "Status, times, live risk, flag counts", 200),
    ("get", "/sessions/{session_id}/rtc-config", "candidate", "ICE servers for the candidate's peer", 200),
    ("post", "/sessions/{session_id}/offer", "candidate", "SDP offer in, SDP answer out; 503 with Retry-After when the node is full", 200),
    ("post", "/sessions/{session_id}/events", "candidate", "Browser telemetry: {events:[{type,time}], sent_at}", 202),
    ("post", "/sessions/{session_id}/end", "integrator, candidate", "End the session (idempotent); builds the report", 200),
    ("post", "/sessions/{session_id}/break", "candidate, proctor", "A declared break: {action: start|end, reason?}; pauses the presence rules; 409 beyond the policy's limits", 200),
    ("get", "/sessions/{session_id}/flags", "integrator, proctor", "The session's flags", 200),
    ("get", "/sessions/{session_id}/report", "integrator, proctor", "The report (after the session ended)", 200),
    ("get", "/sessions/{session_id}/transcript", "integrator, proctor", "Timed transcript: {segments:[{start,end,text,confidence}], text}", 200),
    ("post", "/sessions/{session_id}/flags/{flag_id}/review", "integrator, proctor", "A verdict on one flag: {verdict: confirmed|dismissed, note?} → the flag with its review; the report is recomputed", 200),
    ("post", "/sessions/{session_id}/decision", "integrator, proctor", "A person's decision on a finished session: {decision: pass|fail, note?}; 409 before it has finished", 200),
    ("get", "/sessions/{session_id}/audit", "integrator, proctor", "Who did what and when: {entries: [{at, actor, action, details}]}, oldest first", 200),
    ("get", "/clips/{clip_id}", "integrator, proctor", "An evidence clip (MP4, H.264); ?token= accepted", 200),
    ("post", "/watch/offer", "proctor", "A peer whose 'alerts' DataChannel carries the sessions' flags", 200),
    ("post", "/proctor-tokens", "integrator", "A proctor token covering several sessions", 201),
    ("get", "/rtc-config", "any token", "ICE servers for a dashboard's peer", 200),
    ("post", "/candidates/{candidate_id}/enrollment", "integrator", "Enroll a candidate's photo (JPEG/PNG body or multipart 'photo')", 201),
    ("get", "/candidates/{candidate_id}", "integrator", "The candidate across sessions: analysed, flagged, mean integrity, top flag kinds, each session's recommendation and decision", 200),
    ("delete", "/candidates/{candidate_id}", "integrator", "Erase a candidate's enrollment, sessions, flags, clips", 200),
    ("post", "/analyze/frame", "integrator", "One image → faces, head pose, gaze, objects, identity (?candidate_id=), processing_ms", 200),
    ("post", "/analyze/video", "integrator", "Upload a video (body or multipart 'video') → a job", 202),
    ("get", "/jobs/{job_id}", "integrator", "A job's progress, then its report", 200),
    ("get", "/nodes", "integrator", "The deployment's nodes: id, address, live sessions, capacity, last heartbeat", 200),
    ("post", "/webhooks", "integrator", "Register a webhook: {url, events?, secret?} → {webhook_id, url, events, secret} (the secret shown once)", 201),
    ("get", "/webhooks", "integrator", "The caller's webhooks (without their secrets)", 200),
    ("delete", "/webhooks/{webhook_id}", "integrator", "Delete a webhook with its deliveries", 200),
    ("get", "/webhooks/{webhook_id}/deliveries", "integrator", "Deliveries, newest first (?limit=): status, attempts (at, status_code, error, duration_ms), next_retry_at", 200),
)


def openapi_document() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for method, path, who, summary, status in ROUTES:
        paths.setdefault(path, {})[method] = {
            "summary": summary,
            "description": f"Called by: {who}. Authorization: Bearer <api key or token>.",
            "security": [{"bearer": []}],
            "responses": {
                str(status): {"description": "success"},
                "default": {"description": "error",
                            "content": {"application/json": {
                                "schema": {"$ref": "#/components/schemas/Error"}}}},
            },
        }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Proctor API", "version": "1"},
        "servers": [{"url": "/api/v1"}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": {"type": "object", "properties": {"error": {
                "type": "object", "properties": {"code": {"type": "string"},
                                                 "message": {"type": "string"}}}}}},
        },
    }
