"""API keys and short-lived signed tokens.

An integrator's API key is compared by its SHA-256 hash; keys are never stored in the
clear. Candidate and proctor tokens are ``<payload>.<signature>``: base64url JSON
(role, tenant, session ids, expiry) signed with HMAC-SHA256 under the server's secret.
A candidate token names exactly one session; a proctor token names the sessions (or
exams) it may watch, of its tenant only. Neither opens anything else.

Every caller has a tenant: an API key's (config keys: ``default``), or the one signed
into its token. :meth:`Principal.may_see` is the one test of whether a caller may see a
session; objects of another tenant answer 404, as if they did not exist.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from proctor.crypto import load_or_create_secret as secret_file
from proctor.store.base import DEFAULT_TENANT, SessionRecord
from signaling import safejson
from signaling.errors import ApiError

API_KEY_PREFIX = "pk_"


class Role(StrEnum):
    INTEGRATOR = "integrator"
    CANDIDATE = "candidate"
    PROCTOR = "proctor"


@dataclass(frozen=True)
class Principal:
    """Who is calling: an integrator (any session its keys may see) or a token holder."""

    role: Role
    sessions: frozenset[str] = frozenset()
    key_id: str | None = None
    key_name: str | None = None  # the API key's name, for the audit
    token_id: str | None = None  # a token's own id, for the audit
    exams: frozenset[str] = frozenset()  # a proctor token may cover whole exams
    tenant: str = DEFAULT_TENANT  # whose objects this caller may see

    def names(self, session_id: str) -> bool:
        """Whether the credential itself names the session (integrators: any): such a
        caller hears 404 for one it may not see, others 403 (their scope is no secret)."""
        return self.role == Role.INTEGRATOR or session_id in self.sessions

    def may_see(self, record: SessionRecord) -> bool:
        """Only its tenant's sessions; of those integrators see all, a token its
        sessions and the sessions of its exams (also those created after the token)."""
        if record.tenant != self.tenant:
            return False
        return self.names(record.session_id) or (
            record.exam_id is not None and record.exam_id in self.exams)

    @property
    def actor(self) -> str:
        """How the audit names this caller: the API key's name, or role:token id."""
        if self.role == Role.INTEGRATOR:
            return self.key_name or self.key_id or "integrator"
        return f"{self.role}:{self.token_id or 'unknown'}"


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def load_or_create_secret(configured: str, data_dir: Path) -> bytes:
    """The configured secret, or one generated once and kept in the data directory so
    tokens survive a restart."""
    return secret_file(configured, data_dir / "token_secret")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenSigner:
    def __init__(self, secret: bytes, ttl_seconds: int,
                 candidate_seconds: int | None = None) -> None:
        self._secret = secret
        self.ttl_seconds = ttl_seconds  # proctor tokens (auth.token_seconds)
        # Candidate tokens last the longest session (auth.max_session_hours): a long
        # exam must be able to reconnect. Ending the session ends them (see routes).
        self.candidate_seconds = candidate_seconds or ttl_seconds

    def issue(self, role: Role, sessions: list[str], now: float | None = None,
              exams: list[str] | None = None,
              tenant: str = DEFAULT_TENANT) -> tuple[str, int]:
        """A token and its expiry (epoch seconds)."""
        lifetime = self.candidate_seconds if role == Role.CANDIDATE else self.ttl_seconds
        expires = int((time.time() if now is None else now) + lifetime)
        claims: dict[str, object] = {"r": str(role), "s": sessions, "e": expires,
                                     "i": secrets.token_hex(6), "t": tenant}
        if exams:
            claims["x"] = exams
        payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
        return f"{payload}.{self._sign(payload)}", expires

    def verify(self, token: str, now: float | None = None) -> Principal:
        payload, _, signature = token.partition(".")
        # compare_digest refuses non-ASCII strings with a TypeError: such a string is
        # no token of ours (found by tests/fuzz/test_properties.py).
        if not token.isascii() or not payload or not signature or not hmac.compare_digest(
                signature, self._sign(payload)):
            raise ApiError(401, "invalid_token", "the token is not valid")
        try:
            claims = safejson.loads(_unb64(payload).decode())
            role, sessions, expires = Role(claims["r"]), claims["s"], int(claims["e"])
            if not isinstance(sessions, list):
                raise TypeError("'s' is not a list")
            session_ids = frozenset(str(s) for s in sessions)
            exams = [str(e) for e in claims.get("x", [])]
            token_id = str(claims.get("i", ""))
            tenant = str(claims.get("t", DEFAULT_TENANT))  # older tokens: "default"
        except (ValueError, KeyError, TypeError, AttributeError, OverflowError) as exc:
            # OverflowError: an infinite expiry; even signed claims are checked, not
            # trusted to be well formed.
            raise ApiError(401, "invalid_token", "the token is not valid") from exc
        if expires < (time.time() if now is None else now):
            raise ApiError(401, "token_expired", "the token has expired")
        if role == Role.INTEGRATOR:  # integrators use API keys, never tokens
            raise ApiError(401, "invalid_token", "the token is not valid")
        return Principal(role=role, sessions=session_ids, token_id=token_id or None,
                         exams=frozenset(exams), tenant=tenant)

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._secret, payload.encode(), hashlib.sha256).digest())
