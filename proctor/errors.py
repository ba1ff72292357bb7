"""Errors the engine raises for its callers to translate (HTTP status, code, words).

The engine knows nothing of HTTP, but a session that has ended, a node that is full or an
owner node that cannot be reached each have one right answer for a client; carrying the
status here means signaling/ maps them all in one place.
"""

from __future__ import annotations

from collections.abc import Mapping


class ServiceError(Exception):
    """A refusal fit to show a client: ``status`` (HTTP-like), a stable ``code``, words."""

    def __init__(self, status: int, code: str, message: str,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})  # e.g. Retry-After on a 503
