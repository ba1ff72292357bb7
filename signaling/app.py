"""``create_app(config)``: the whole server as one aiohttp application.

Each shared resource has one cleanup context, opened in order and closed in reverse:
store → bus, models and the session service (with this node's peers). Shutdown ends
every live session, which closes its flags and flushes its clips, and leaves the
deployment. (aiohttp ``examples/background_tasks.py``)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from proctor.bus import open_bus_from_url
from proctor.config import Config
from proctor.detectors.registry import build_detectors
from proctor.metrics import Metrics
from proctor.outbound.delivery import DeliveryWorker
from proctor.outbound.webhooks import WebhookOutlet, webhook_cipher
from proctor.retention import RetentionWorker
from proctor.sessions import SessionService
from proctor.sessions.nodes import node_identity
from proctor.store import open_store_from_url
from proctor.transcript.model import load_transcriber
from signaling.analysis import jobs_ctx
from signaling.analysis import routes as analysis_routes
from signaling.auth import TokenSigner, hash_api_key, load_or_create_secret
from signaling.candidates import routes as candidate_routes
from signaling.cors import cors_middleware
from signaling.errors import error_middleware
from signaling.ice import restrict_host_addresses
from signaling.interview import routes as interview_routes
from signaling.jitter import install_jitter_buffer
from signaling.keys import (
    CONFIG_API_KEYS,
    CONFIG_KEY,
    METRICS_KEY,
    PEERS_KEY,
    SESSIONS_KEY,
    SIGNER_KEY,
    STORE_KEY,
    WEBHOOK_CIPHER_KEY,
)
from signaling.limits import install_limits, limits_middleware
from signaling.openapi import openapi_document
from signaling.peers import Peers
from signaling.review import routes as review_routes
from signaling.routes import routes
from signaling.webhooks import routes as webhook_routes

log = logging.getLogger("proctor.app")


def static_dir() -> Path:
    """The pages and embed client: inside the installed package, or the repo's static/."""
    packaged = Path(__file__).with_name("static")
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "static"


def create_app(config: Config) -> web.Application:
    app = web.Application(client_max_size=config.server.max_body_bytes,
                          middlewares=[cors_middleware(config.server.cors_origins),
                                       limits_middleware, error_middleware])
    install_limits(app, config.limits)
    app[CONFIG_KEY] = config
    app[CONFIG_API_KEYS] = frozenset(hash_api_key(k) for k in config.auth.api_keys)
    app[METRICS_KEY] = Metrics()
    secret = load_or_create_secret(config.auth.token_secret, config.data_dir)
    app[SIGNER_KEY] = TokenSigner(secret, config.auth.proctor_token_seconds,
                                  config.auth.candidate_token_seconds)
    app[WEBHOOK_CIPHER_KEY] = webhook_cipher(secret)
    restrict_host_addresses(config.rtc.ice_host_addresses)
    install_jitter_buffer()
    app.cleanup_ctx.append(_store_ctx)
    app.cleanup_ctx.append(_sessions_ctx)
    app.cleanup_ctx.append(jobs_ctx)
    app.cleanup_ctx.append(_retention_ctx)
    app.add_routes(routes)
    app.add_routes(analysis_routes)
    app.add_routes(candidate_routes)
    app.add_routes(webhook_routes)
    app.add_routes(review_routes)
    app.add_routes(interview_routes)
    app.router.add_get("/api/v1/openapi.json", _openapi)
    app.router.add_get("/", _index)
    app.router.add_static("/static", static_dir(), show_index=False)
    return app


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    store = open_store_from_url(app[CONFIG_KEY].store)
    await store.open()
    app[STORE_KEY] = store
    yield
    await store.close()


async def _sessions_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG_KEY]
    bus = open_bus_from_url(config.bus, node_identity(config)[0])
    await bus.start()
    detectors = build_detectors(config.detectors)
    transcriber = await asyncio.to_thread(load_transcriber, config.detectors.transcription,
                                          config.data_dir)
    # Webhooks: events are stored as deliveries, then sent by this node's worker.
    deliveries = DeliveryWorker(app[STORE_KEY], config.webhooks, app[WEBHOOK_CIPHER_KEY])
    outlet = WebhookOutlet(app[STORE_KEY], wake=deliveries.wake)
    service = SessionService(config, app[STORE_KEY], bus, app[METRICS_KEY], detectors,
                             transcriber, outlet=outlet)
    outlet.queue_through(service.outbox)  # events wait out a store outage with the flags
    peers = Peers(service)
    await service.start()
    await deliveries.start()  # after: a failed start leaves no worker behind
    app[SESSIONS_KEY], app[PEERS_KEY] = service, peers
    yield
    await service.close()
    await deliveries.close()  # after the service: its last events are stored by then
    await peers.close()
    await bus.close()
    for detector in detectors:
        detector.close()


async def _retention_ctx(app: web.Application) -> AsyncIterator[None]:
    """The hourly purge (proctor/retention.py), on every node: deletes are idempotent."""
    worker = RetentionWorker(app[STORE_KEY], app[SESSIONS_KEY].clips, app[CONFIG_KEY].retention)
    worker.start()
    yield
    await worker.close()


async def _openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


async def _index(request: web.Request) -> web.Response:
    return web.json_response({
        "name": "proctor",
        "api": "/api/v1",
        "openapi": "/api/v1/openapi.json",
        "pages": {"candidate": "/static/candidate.html?session=ID&token=T",
                  "dashboard": "/static/dashboard.html?token=P"},
        "embed": "/static/proctor.js",
    })
