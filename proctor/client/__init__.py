"""A typed Python client for integrators of the Proctor HTTP API.

```python
from proctor.client import ProctorClient, verify_webhook

async with ProctorClient("https://proctor.example.org", api_key) as proctor:
    created = await proctor.create_session("alice", exam_id="math-101")
    # created["candidate_token"] → the candidate's page; created["proctor_token"] → proctors
```

:class:`ProctorClient` is async (aiohttp); :class:`SyncProctorClient` has the same
methods, blocking. Refusals raise :class:`ProctorError` (``status``, ``code``,
``message``). Results are the server's JSON, typed (:mod:`proctor.client.types`).
:func:`verify_webhook` checks a delivery's signature.
"""

from __future__ import annotations

from proctor.client import types
from proctor.client.aio import ProctorClient
from proctor.client.errors import ProctorConnectionError, ProctorError
from proctor.client.sync import SyncProctorClient
from proctor.client.types import (
    AuditEntry,
    CandidateProfile,
    CreatedSession,
    CreatedWebhook,
    DecisionResult,
    Delivery,
    EndedSession,
    Enrollment,
    Erasure,
    Flag,
    Node,
    ProctorToken,
    Report,
    SessionSummary,
    Transcript,
    Webhook,
    WebhookEvent,
)
from proctor.client.webhooks import EVENT_ID_HEADER, SIGNATURE_HEADER, verify_webhook

__all__ = [
    "EVENT_ID_HEADER",
    "SIGNATURE_HEADER",
    "AuditEntry",
    "CandidateProfile",
    "CreatedSession",
    "CreatedWebhook",
    "DecisionResult",
    "Delivery",
    "EndedSession",
    "Enrollment",
    "Erasure",
    "Flag",
    "Node",
    "ProctorClient",
    "ProctorConnectionError",
    "ProctorError",
    "ProctorToken",
    "Report",
    "SessionSummary",
    "SyncProctorClient",
    "Transcript",
    "Webhook",
    "WebhookEvent",
    "types",
    "verify_webhook",
]
