"""Request limits as one aiohttp middleware (config ``limits.*``; SPEC "Tenants, tokens
and limits").

Per client address and per credential (an API key or a token, held as its SHA-256), a
token bucket; per address, a sliding window of failed authentications (401 answers):
once full, that address gets 429 before its credential is even checked. Every refusal
is 429 with ``Retry-After`` and ``{error: {code: "rate_limited", message}}``. Health,
readiness, metrics and static files are not counted against the buckets.

Counts are kept in this process: each node of a deployment limits on its own.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass

from aiohttp import web

from proctor.config import LimitsConfig
from proctor.ratelimit import FailureWindow, TokenBucket, retry_after
from signaling.errors import ApiError, Handler, error_response

# Not counted against the request buckets (probes, scrapers, the pages' files).
EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/"})
EXEMPT_PREFIXES = ("/static/",)
# Never refused, not even after failed authentications (probes must always answer).
PROBE_PATHS = frozenset({"/healthz", "/readyz"})


@dataclass
class Limiters:
    """One app's limiters."""

    addresses: TokenBucket
    keys: TokenBucket
    failures: FailureWindow
    events: TokenBucket
    trusted_proxies: frozenset[str]

    @classmethod
    def from_config(cls, config: LimitsConfig) -> Limiters:
        return cls(
            addresses=TokenBucket(config.address_requests_per_minute / 60, config.address_burst),
            keys=TokenBucket(config.key_requests_per_minute / 60, config.key_burst),
            failures=FailureWindow(config.failed_auth_max, config.failed_auth_window_seconds),
            events=TokenBucket(config.events_per_session_per_minute / 60,
                               config.events_per_session_per_minute),
            trusted_proxies=frozenset(_normal(a) for a in config.trusted_proxies))


LIMITS_KEY = web.AppKey("limits", Limiters)


def install_limits(app: web.Application, config: LimitsConfig) -> None:
    """Give the app its limiters (none when ``limits.enabled`` is false)."""
    if config.enabled:
        app[LIMITS_KEY] = Limiters.from_config(config)


@web.middleware
async def limits_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    limiters = request.app.get(LIMITS_KEY)
    if limiters is None or request.path in PROBE_PATHS:
        return await handler(request)
    address = client_address(request, limiters.trusted_proxies)
    blocked = limiters.failures.blocked_for(address)
    if blocked:
        return _refuse(blocked, "too many failed authentications from this address")
    if not _exempt(request.path):
        refusal = _take(limiters, address, _credential(request))
        if refusal is not None:
            return refusal
    response = await handler(request)
    if response.status == 401:
        limiters.failures.fail(address)
    return response


def _take(limiters: Limiters, address: str, credential: str | None) -> web.Response | None:
    wait = limiters.addresses.take(address)
    if wait:
        return _refuse(wait, "too many requests from this address")
    if credential is not None:
        wait = limiters.keys.take(credential)
        if wait:
            return _refuse(wait, "too many requests with this credential")
    return None


def check_events(request: web.Request, session_id: str, count: int) -> None:
    """Spend ``count`` of the session's telemetry allowance, or raise 429."""
    limiters = request.app.get(LIMITS_KEY)
    if limiters is None:
        return
    wait = limiters.events.take(session_id, count)
    if wait:
        seconds = retry_after(wait)
        raise ApiError(429, "rate_limited",
                       f"too many telemetry events for this session; retry in {seconds} s",
                       headers={"Retry-After": str(seconds)})


def _refuse(wait: float, why: str) -> web.Response:
    seconds = retry_after(wait)
    return error_response(429, "rate_limited", f"{why}; retry in {seconds} s",
                          headers={"Retry-After": str(seconds)})


def _exempt(path: str) -> bool:
    return path in EXEMPT_PATHS or path.startswith(EXEMPT_PREFIXES)


def _credential(request: web.Request) -> str | None:
    """The bearer credential's digest (never the credential itself), if one was sent."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    raw = value.strip() if scheme.lower() == "bearer" else ""
    raw = raw or request.query.get("token", "")
    if not raw:
        return None
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()


def client_address(request: web.Request, trusted_proxies: frozenset[str]) -> str:
    """The peer's address, or the last X-Forwarded-For hop when the peer is a trusted
    proxy."""
    peer = _normal(request.remote or "")
    if peer in trusted_proxies:
        hops = [h.strip() for h in request.headers.get("X-Forwarded-For", "").split(",")]
        hops = [h for h in hops if h]
        if hops:
            return _normal(hops[-1])
    return peer


def _normal(address: str) -> str:
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return address[:100]
