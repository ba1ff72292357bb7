"""verify_webhook on signatures made the way the server signs deliveries."""

from __future__ import annotations

import json
import time

from proctor.client import SIGNATURE_HEADER, verify_webhook
from proctor.outbound.signing import signature_header

SECRET = "whsec-test-secret"
BODY = json.dumps({"event_id": "e1", "type": "session.ended", "created_at":
                   "2026-01-01T00:00:00Z", "session_id": "s1", "data": {}},
                  separators=(",", ":")).encode()


def signed(body: bytes = BODY, secret: str = SECRET, at: float | None = None) -> dict[str, str]:
    return {SIGNATURE_HEADER: signature_header(secret, body, now=at),
            "Proctor-Event-Id": "e1"}


def test_a_signed_body_verifies() -> None:
    headers = signed()
    assert verify_webhook(SECRET, headers, BODY)
    assert verify_webhook(SECRET, headers, BODY.decode())  # the same text, as str
    # Header names are case-insensitive, whatever mapping the web framework gives.
    assert verify_webhook(SECRET, {"proctor-signature": headers[SIGNATURE_HEADER]}, BODY)


def test_a_tampered_body_does_not() -> None:
    headers = signed()
    assert not verify_webhook(SECRET, headers, BODY.replace(b"session.ended", b"session.live"))
    assert not verify_webhook(SECRET, headers, BODY + b" ")


def test_a_wrong_secret_does_not() -> None:
    assert not verify_webhook("another-secret", signed(), BODY)
    assert not verify_webhook(SECRET, signed(secret="another-secret"), BODY)


def test_a_stale_or_future_timestamp_does_not() -> None:
    now = time.time()
    assert not verify_webhook(SECRET, signed(at=now - 301), BODY)
    assert not verify_webhook(SECRET, signed(at=now + 301), BODY)
    assert verify_webhook(SECRET, signed(at=now - 290), BODY)
    assert verify_webhook(SECRET, signed(at=now - 3600), BODY, tolerance_seconds=7200)


def test_missing_or_garbled_headers_do_not() -> None:
    assert not verify_webhook(SECRET, {}, BODY)
    assert not verify_webhook(SECRET, {SIGNATURE_HEADER: "garbage"}, BODY)
    value = signed()[SIGNATURE_HEADER]
    timestamp = value.split(",")[0]
    assert not verify_webhook(SECRET, {SIGNATURE_HEADER: timestamp}, BODY)  # no v1
    assert not verify_webhook(SECRET, {SIGNATURE_HEADER: value.split(",")[1]}, BODY)  # no t
