"""Signatures: what a receiver checks before it trusts a delivery."""

from __future__ import annotations

from proctor.outbound.signing import compute_signature, signature_header, verify_signature

SECRET = "whsec_test-secret-0123456789"
BODY = b'{"event_id":"e1","type":"session.ended"}'
NOW = 1_700_000_000.0


def headers_for(body: bytes = BODY, secret: str = SECRET, at: float = NOW) -> dict[str, str]:
    return {"Proctor-Signature": signature_header(secret, body, now=at)}


def test_a_fresh_signature_of_the_same_bytes_verifies() -> None:
    header = headers_for()["Proctor-Signature"]
    assert header == f"t={int(NOW)},v1={compute_signature(SECRET, int(NOW), BODY)}"
    assert verify_signature(SECRET, headers_for(), BODY, now=NOW + 5)
    # Header names are case-insensitive, in a plain dict too.
    assert verify_signature(SECRET, {"proctor-signature": header}, BODY, now=NOW)


def test_wrong_secret_altered_body_or_missing_header_fail() -> None:
    assert not verify_signature("whsec_another-secret-000000", headers_for(), BODY, now=NOW)
    assert not verify_signature(SECRET, headers_for(), BODY + b" ", now=NOW)
    assert not verify_signature(SECRET, {}, BODY, now=NOW)


def test_stale_or_future_timestamps_are_replays() -> None:
    assert verify_signature(SECRET, headers_for(), BODY, now=NOW + 300)
    assert not verify_signature(SECRET, headers_for(), BODY, now=NOW + 301)
    assert not verify_signature(SECRET, headers_for(), BODY, now=NOW - 301)
    assert verify_signature(SECRET, headers_for(), BODY, tolerance_seconds=3600,
                            now=NOW + 3000)


def test_malformed_headers_fail_and_any_v1_may_match() -> None:
    good = compute_signature(SECRET, int(NOW), BODY)
    for value in ("", "garbage", f"v1={good}", f"t=abc,v1={good}", f"t={int(NOW)}",
                  f"t={int(NOW)},v0={good}"):
        assert not verify_signature(SECRET, {"Proctor-Signature": value}, BODY, now=NOW)
    both = {"Proctor-Signature": f"t={int(NOW)},v1={'0' * 64},v1={good}"}
    assert verify_signature(SECRET, both, BODY, now=NOW)
