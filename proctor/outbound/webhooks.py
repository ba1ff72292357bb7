"""Webhooks: registering them, and the outlet that turns events into stored deliveries.

:class:`WebhookOutlet` is the engine's :class:`~proctor.outbound.EventOutlet`: for each
event it writes one delivery per interested webhook (one ``add_deliveries`` call) and
only then wakes this node's :class:`~proctor.outbound.delivery.DeliveryWorker`. Nothing
is sent from ``emit`` itself, so a slow or broken receiver never holds up a session, and
only the node where the event happened stores it: each event goes out once per
deployment, not once per node.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from yarl import URL

from proctor.crypto import WEBHOOK_SECRET_INFO, TextCipher
from proctor.errors import ServiceError
from proctor.flags.model import new_id, utc_now_iso
from proctor.outbound import EVENT_TYPES
from proctor.outbound.addresses import AddressPolicy, AddressRefused
from proctor.store.base import (
    DeliveryRecord,
    SessionRecord,
    Store,
    StoreIntegrityError,
    StoreUnavailable,
    WebhookRecord,
)
from proctor.store.outbox import StoreOutbox

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


async def check_destination(url: str, policy: AddressPolicy) -> None:
    """Refuse a URL whose host is, or resolves only to, an address the policy refuses."""
    host = URL(url).host or ""
    try:
        await policy.check_name(host)
    except AddressRefused as exc:
        raise WebhookInputError(f"'url': {exc}") from exc


async def new_webhook(owner: str, body: dict[str, Any],
                      policy: AddressPolicy) -> WebhookRecord:
    """A webhook from a ``POST /webhooks`` body, checked."""
    url = check_url(body.get("url"))
    events, secret = check_events(body.get("events")), check_secret(body.get("secret"))
    await check_destination(url, policy)
    return WebhookRecord(webhook_id=new_id(), owner=owner, url=url, events=events,
                         secret=secret, created_at=utc_now_iso())


def webhook_cipher(server_secret: bytes) -> TextCipher:
    """Seals webhook secrets in the store under a key derived from the server's secret
    (``auth.token_secret``, which every node of a deployment shares)."""
    return TextCipher(server_secret, WEBHOOK_SECRET_INFO)


def sealed(webhook: WebhookRecord, cipher: TextCipher) -> WebhookRecord:
    """The record as the store keeps it: its secret sealed, bound to its id."""
    return replace(webhook, secret=cipher.seal(webhook.webhook_id, webhook.secret))


def opened(webhook: WebhookRecord, cipher: TextCipher) -> WebhookRecord:
    """The record with its secret in the clear, for signing; SealError if it won't open."""
    return replace(webhook, secret=cipher.open(webhook.webhook_id, webhook.secret))


# Emitting -----------------------------------------------------------------------------

WEBHOOK_EVENT = "webhook_event"  # the outbox's kind for events waiting for the store


@dataclass(frozen=True)
class OutboundEvent:
    """One event as its receivers will get it: id, time and body fixed when it happens,
    so an event that waited out a store outage is sent as it was then."""

    event_id: str
    type: str
    created_at: str
    tenant: str  # whose webhooks hear of it
    session_id: str | None
    body: str  # the JSON bytes that are signed and sent


def new_event(event_type: str, tenant: str, session_id: str | None,
              data: dict[str, Any]) -> OutboundEvent:
    event_id, created_at = new_id(), utc_now_iso()
    body = json.dumps({"event_id": event_id, "type": event_type, "created_at": created_at,
                       "session_id": session_id, "data": data},
                      # default=str: an odd value in data must not cost the event.
                      separators=(",", ":"), default=str)
    return OutboundEvent(event_id, event_type, created_at, tenant, session_id, body)


def deliveries_of(webhooks: Sequence[WebhookRecord],
                  event: OutboundEvent) -> list[DeliveryRecord]:
    """One delivery per webhook that wants the event; all carry the same event id and
    the same body bytes."""
    now = time.time()
    return [DeliveryRecord(delivery_id=new_id(), webhook_id=w.webhook_id,
                           event_id=event.event_id, type=event.type,
                           session_id=event.session_id, body=event.body, status=PENDING,
                           attempts=0, next_attempt_at=now, created_at=event.created_at)
            for w in webhooks if event.type in w.events]


def deliveries_for(webhooks: Sequence[WebhookRecord], event_type: str,
                   session_id: str | None, data: dict[str, Any]) -> list[DeliveryRecord]:
    """A new event's deliveries to ``webhooks`` (the tenant is theirs)."""
    return deliveries_of(webhooks, new_event(event_type, "", session_id, data))


class WebhookOutlet:
    """Stores one delivery per interested webhook, then wakes the delivery worker.

    With an outbox (:meth:`queue_through`), an event whose deliveries cannot be stored
    because the store is away waits there and is stored when it is back; without one
    it is lost, loudly."""

    def __init__(self, store: Store, wake: Callable[[], None] | None = None) -> None:
        self.store = store
        self._wake = wake or (lambda: None)
        self._outbox: StoreOutbox | None = None

    def queue_through(self, outbox: StoreOutbox) -> None:
        """Let events wait out a store outage in ``outbox`` (before it opens)."""
        outbox.handle(WEBHOOK_EVENT, self._store_payload)
        self._outbox = outbox

    async def emit(self, event_type: str, session: SessionRecord,
                   data: dict[str, Any]) -> None:
        # A webhook hears of the sessions of its own tenant.
        event = new_event(event_type, session.tenant, session.session_id, data)
        try:
            if self._outbox is not None:
                await self._outbox.add(WEBHOOK_EVENT, session.session_id,
                                       dataclasses.asdict(event))
            else:
                await self._store(event)
        except (StoreUnavailable, StoreIntegrityError):
            # Loudly: this event is lost to its webhooks. Never raised: the session's
            # flag and end paths must go on whatever happens to its listeners.
            log.exception("webhooks: could not store %s of session %s; its receivers "
                          "will not hear of it", event_type, session.session_id)

    async def _store_payload(self, payload: dict[str, Any]) -> None:
        await self._store(OutboundEvent(**payload))

    async def _store(self, event: OutboundEvent) -> None:
        """Store the event's deliveries and wake the worker. A webhook deleted between
        the list and the write breaks its foreign key: list again once, so the others
        still hear."""
        for last in (False, True):
            webhooks = await self.store.list_webhooks(event.tenant)
            records = deliveries_of(webhooks, event)
            try:
                await self.store.add_deliveries(records)
                break
            except StoreIntegrityError:
                if last:
                    raise
        if records:
            self._wake()
