"""Receiving webhooks: check a delivery's ``Proctor-Signature`` before trusting it.

The signature is ``t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>``
(SPEC "Webhooks"); the check itself is the server's own,
:func:`proctor.outbound.signing.verify_signature`, so sender and receiver cannot drift.
"""

from __future__ import annotations

from collections.abc import Mapping

from proctor.outbound.signing import (
    DEFAULT_TOLERANCE_SECONDS,
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    verify_signature,
)


def verify_webhook(secret: str, headers: Mapping[str, str], body: bytes | str,
                   tolerance_seconds: float = DEFAULT_TOLERANCE_SECONDS) -> bool:
    """True when ``headers`` (any mapping; the header name is matched case-insensitively)
    carry a valid signature of ``body`` under the webhook's ``secret``, made within
    ``tolerance_seconds`` of now (an older one may be a replay).

    Pass the raw body exactly as received, before parsing it (a ``str`` is taken as
    its UTF-8 bytes). Deliveries come at least once: dedupe by ``event_id``.
    """
    raw = body.encode() if isinstance(body, str) else bytes(body)
    return verify_signature(secret, headers, raw, tolerance_seconds)


__all__ = ["EVENT_ID_HEADER", "SIGNATURE_HEADER", "verify_webhook"]
