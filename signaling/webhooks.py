"""Webhook routes: register, list, delete, and the deliveries log (SPEC "Webhooks").

A webhook belongs to the tenant of the API key that made it and hears of that tenant's
sessions; another tenant's webhooks answer 404, as if they did not exist. The secret is
shown once, in the 201 answer; lists never show it.
"""

from __future__ import annotations

import datetime
from typing import Any

from aiohttp import web

from proctor.outbound.addresses import AddressPolicy
from proctor.outbound.webhooks import PENDING, new_webhook, sealed
from proctor.store.base import AttemptRecord, DeliveryRecord, WebhookRecord
from signaling.auth import Principal, Role
from signaling.errors import ApiError
from signaling.keys import CONFIG_KEY, STORE_KEY, WEBHOOK_CIPHER_KEY
from signaling.routes import API, authenticate, json_body

routes = web.RouteTableDef()
DEFAULT_DELIVERIES, MAX_DELIVERIES = 50, 100


def _owner(principal: Principal) -> str:
    return principal.tenant


def _describe(webhook: WebhookRecord) -> dict[str, Any]:
    return {"webhook_id": webhook.webhook_id, "url": webhook.url, "events": webhook.events,
            "created_at": webhook.created_at}


async def _own_webhook(request: web.Request, principal: Principal) -> WebhookRecord:
    webhook = await request.app[STORE_KEY].get_webhook(request.match_info["webhook_id"])
    if webhook is None or webhook.owner != _owner(principal):
        raise ApiError(404, "not_found", "no such webhook")
    return webhook


@routes.post(f"{API}/webhooks")
async def create_webhook(request: web.Request) -> web.Response:
    """``{url, events?, secret?}`` → 201 with the secret, shown this once."""
    principal = await authenticate(request, Role.INTEGRATOR)
    policy = AddressPolicy(request.app[CONFIG_KEY].webhooks.allowed_networks)
    webhook = await new_webhook(_owner(principal), await json_body(request), policy)
    # Stored sealed; shown in the clear this once.
    await request.app[STORE_KEY].add_webhook(sealed(webhook, request.app[WEBHOOK_CIPHER_KEY]))
    return web.json_response({**_describe(webhook), "secret": webhook.secret}, status=201)


@routes.get(f"{API}/webhooks")
async def list_webhooks(request: web.Request) -> web.Response:
    principal = await authenticate(request, Role.INTEGRATOR)
    webhooks = await request.app[STORE_KEY].list_webhooks(_owner(principal))
    return web.json_response({"webhooks": [_describe(w) for w in webhooks]})


@routes.delete(f"{API}/webhooks/{{webhook_id}}")
async def delete_webhook(request: web.Request) -> web.Response:
    principal = await authenticate(request, Role.INTEGRATOR)
    webhook = await _own_webhook(request, principal)
    await request.app[STORE_KEY].delete_webhook(webhook.webhook_id)
    return web.json_response({"webhook_id": webhook.webhook_id, "deleted": True})


@routes.get(f"{API}/webhooks/{{webhook_id}}/deliveries")
async def list_deliveries(request: web.Request) -> web.Response:
    """Newest first, each with its attempts and, while pending, its next retry."""
    principal = await authenticate(request, Role.INTEGRATOR)
    webhook = await _own_webhook(request, principal)
    store = request.app[STORE_KEY]
    deliveries = await store.list_deliveries(webhook.webhook_id, _limit(request))
    return web.json_response({"webhook_id": webhook.webhook_id, "deliveries": [
        _delivery(d, await store.list_attempts(d.delivery_id)) for d in deliveries]})


def _limit(request: web.Request) -> int:
    raw = request.query.get("limit", str(DEFAULT_DELIVERIES))
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_DELIVERIES:
        raise ApiError(400, "bad_request", f"'limit' must be 1–{MAX_DELIVERIES}")
    return int(raw)


def _delivery(d: DeliveryRecord, attempts: list[AttemptRecord]) -> dict[str, Any]:
    return {
        "delivery_id": d.delivery_id, "event_id": d.event_id, "type": d.type,
        "session_id": d.session_id, "status": d.status, "created_at": d.created_at,
        "delivered_at": d.delivered_at, "attempt_count": d.attempts,
        "last_status_code": d.last_status_code, "last_error": d.last_error,
        "next_retry_at": _iso(d.next_attempt_at) if d.status == PENDING else None,
        "attempts": [{"at": a.at, "status_code": a.status_code, "error": a.error,
                      "duration_ms": a.duration_ms} for a in attempts],
    }


def _iso(epoch: float) -> str:
    moment = datetime.datetime.fromtimestamp(epoch, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
