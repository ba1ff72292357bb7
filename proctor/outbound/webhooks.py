"""Webhooks: registering them, and the outlet that turns events into stored deliveries.

:class:`WebhookOutlet` is the engine's :class:`~proctor.outbound.EventOutlet`: for each
event it writes one delivery per interested webhook (one ``add_deliveries`` call) and
only then wakes this node's :class:`~proctor.outbound.delivery.DeliveryWorker`. Nothing
is sent from ``emit`` itself, so a slow or broken receiver never holds up a session, and
only the node where the event happened stores it: each event goes out once per
deployment, not once per node.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any

from yarl import URL

from proctor.errors import ServiceError
from proctor.flags.model import new_id, utc_now_iso
from proctor.outbound import EVENT_TYPES
from proctor.store.base import (
    DeliveryRecord,
    SessionRecord,
    Store,
    StoreIntegrityError,
    StoreUnavailable,
    WebhookRecord,
)

log = logging.getLogger("proctor.webhooks")

SECRET_PREFIX = "whsec_"
MAX_URL_LENGTH = 2048
MIN_SECRET_LENGTH = 16  # shorter ones are guessable
MAX_SECRET_LENGTH = 256
PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"


class WebhookInputError(ServiceError):
    def __init__(self, message: str) -> None:
        super().__init__(400, "bad_request", message)


# Registering --------------------------------------------------------------------------

def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def check_url(url: object) -> str:
    """An absolute http(s) URL with a host, or WebhookInputError."""
    if not isinstance(url, str) or not url.strip() or len(url) > MAX_URL_LENGTH:
        raise WebhookInputError(f"'url' must be an http(s) URL of at most "
                                f"{MAX_URL_LENGTH} characters")
    try:
        parsed = URL(url.strip())
    except ValueError as exc:
        raise WebhookInputError(f"'url' is not a URL: {exc}") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise WebhookInputError("'url' must be an http:// or https:// URL with a host")
    return str(parsed)


def check_events(events: object) -> list[str]:
    """The requested event types (default: all), each one the SPEC names."""
    if events is None:
        return list(EVENT_TYPES)
    if not isinstance(events, list) or not events or not all(
            isinstance(e, str) for e in events):
        raise WebhookInputError("'events' must be a non-empty list of event types")
    unknown = sorted(set(events) - set(EVENT_TYPES))
    if unknown:
        raise WebhookInputError(f"unknown event types {unknown}; known: "
                                f"{', '.join(EVENT_TYPES)}")
    return [e for e in EVENT_TYPES if e in events]  # deduplicated, in the SPEC's order


def check_secret(secret: object) -> str:
    """The integrator's own secret, or a new one when none was given."""
    if secret is None:
        return new_secret()
    if not isinstance(secret, str) or not (
            MIN_SECRET_LENGTH <= len(secret) <= MAX_SECRET_LENGTH):
        raise WebhookInputError(f"'secret' must be a string of {MIN_SECRET_LENGTH}–"
                                f"{MAX_SECRET_LENGTH} characters")
    return secret


def new_webhook(owner: str, body: dict[str, Any]) -> WebhookRecord:
    """A webhook from a ``POST /webhooks`` body, checked."""
    return WebhookRecord(webhook_id=new_id(), owner=owner, url=check_url(body.get("url")),
                         events=check_events(body.get("events")),
                         secret=check_secret(body.get("secret")), created_at=utc_now_iso())


# Emitting -----------------------------------------------------------------------------

def deliveries_for(webhooks: Sequence[WebhookRecord], event_type: str,
                   session_id: str | None, data: dict[str, Any]) -> list[DeliveryRecord]:
    """One delivery per webhook that wants ``event_type``; all carry the same event id
    and the same body bytes (those are what gets signed and sent)."""
    wanted = [w for w in webhooks if event_type in w.events]
    if not wanted:
        return []
    event_id, created_at = new_id(), utc_now_iso()
    body = json.dumps({"event_id": event_id, "type": event_type, "created_at": created_at,
                       "session_id": session_id, "data": data},
                      # default=str: an odd value in data must not cost the event.
                      separators=(",", ":"), default=str)
    now = time.time()
    return [DeliveryRecord(delivery_id=new_id(), webhook_id=w.webhook_id, event_id=event_id,
                           type=event_type, session_id=session_id, body=body, status=PENDING,
                           attempts=0, next_attempt_at=now, created_at=created_at)
            for w in wanted]


class WebhookOutlet:
    """Stores one delivery per interested webhook, then wakes the delivery worker."""

    def __init__(self, store: Store, wake: Callable[[], None] | None = None) -> None:
        self.store = store
        self._wake = wake or (lambda: None)

    async def emit(self, event_type: str, session: SessionRecord,
                   data: dict[str, Any]) -> None:
        # A webhook hears of the sessions of its own tenant.
        try:
            stored = await self._store(event_type, session, data)
        except (StoreUnavailable, StoreIntegrityError):
            # Loudly: this event is lost to its webhooks. Never raised: the session's
            # flag and end paths must go on whatever happens to its listeners.
            log.exception("webhooks: could not store %s of session %s; its receivers "
                          "will not hear of it", event_type, session.session_id)
            return
        if stored:
            self._wake()

    async def _store(self, event_type: str, session: SessionRecord,
                     data: dict[str, Any]) -> int:
        """Store the event's deliveries; how many. A webhook deleted between the list and
        the write breaks its foreign key: list again once, so the others still hear."""
        for last in (False, True):
            webhooks = await self.store.list_webhooks(session.tenant)
            records = deliveries_for(webhooks, event_type, session.session_id, data)
            try:
                await self.store.add_deliveries(records)
                return len(records)
            except StoreIntegrityError:
                if last:
                    raise
        return 0  # pragma: no cover - the loop returns or raises
