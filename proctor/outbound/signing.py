"""Webhook signatures: ``Proctor-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>``.

The MAC covers ``"<t>.<raw body>"`` under the webhook's secret, so a receiver can tell
the body came from this server and unaltered, and, with the timestamp, that it is not an
old request replayed. Receivers (and the integrator client) call :func:`verify_signature`
on the raw bytes they received, before parsing them.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping

SIGNATURE_HEADER = "Proctor-Signature"
EVENT_ID_HEADER = "Proctor-Event-Id"
SCHEME = "v1"
DEFAULT_TOLERANCE_SECONDS = 300


def compute_signature(secret: str, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``"<timestamp>.<body>"`` under ``secret``."""
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signature_header(secret: str, body: bytes, now: float | None = None) -> str:
    """The ``Proctor-Signature`` value for ``body``, timestamped now."""
    timestamp = int(time.time() if now is None else now)
    return f"t={timestamp},{SCHEME}={compute_signature(secret, timestamp, body)}"


def verify_signature(secret: str, headers: Mapping[str, str], body: bytes,
                     tolerance_seconds: float = DEFAULT_TOLERANCE_SECONDS,
                     now: float | None = None) -> bool:
    """True when ``headers`` carry a valid, fresh signature of ``body`` under ``secret``.

    Constant-time comparison; a timestamp more than ``tolerance_seconds`` away from
    ``now`` is refused (a replay). Several ``v1=`` values are accepted, any may match
    (room for a receiver rotating secrets).
    """
    value = _header(headers, SIGNATURE_HEADER)
    if value is None:
        return False
    timestamp, candidates = _parse(value)
    if timestamp is None or not candidates:
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance_seconds:
        return False
    expected = compute_signature(secret, timestamp, body)
    # Check every candidate (no early exit): the time taken says nothing of which matched.
    matches = [hmac.compare_digest(expected, c) for c in candidates]
    return any(matches)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive, whether ``headers`` is aiohttp's CIMultiDict or a plain dict."""
    value = headers.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    return next((v for k, v in headers.items() if k.lower() == lowered), None)


def _parse(value: str) -> tuple[int | None, list[str]]:
    timestamp: int | None = None
    candidates: list[str] = []
    for part in value.split(","):
        key, _, item = part.strip().partition("=")
        if key == "t" and item.isdigit():
            timestamp = int(item)
        elif key == SCHEME and item:
            candidates.append(item)
    return timestamp, candidates
