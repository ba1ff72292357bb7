"""One exception for every refusal: the server's ``{"error": {code, message}}``, with
the HTTP status, or a request that got no answer at all."""

from __future__ import annotations

import json
from collections.abc import Mapping

MAX_MESSAGE_CHARS = 500  # of a non-JSON error body, kept as the message


class ProctorError(Exception):
    """The server refused: ``status`` (400, 401, 403, 404, 409, 413, 429, 503, ...),
    ``code`` (``not_found``, ``invalid_api_key``, ``not_ended``, ...) and ``message``
    in plain words. ``retry_after`` is the server's ``Retry-After`` in seconds, when
    it sent one (429 rate limited, 503 at capacity)."""

    def __init__(self, status: int, code: str, message: str,
                 retry_after: float | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after


class ProctorConnectionError(ProctorError):
    """No answer: the server could not be reached, or did not answer in time
    (``status`` 0, ``code`` ``unreachable`` or ``timeout``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(0, code, message)


def error_from_response(status: int, body: bytes,
                        headers: Mapping[str, str]) -> ProctorError:
    """The error a non-2xx answer carries; a body that is not the server's JSON shape
    (a proxy's page) still gives the status, with ``code`` ``http_<status>``."""
    code, message = f"http_{status}", body.decode("utf-8", "replace").strip()
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(error, dict):
        code = str(error.get("code") or code)
        message = str(error.get("message") or "")
    return ProctorError(status, code, message[:MAX_MESSAGE_CHARS] or f"HTTP {status}",
                        retry_after=_seconds(headers.get("Retry-After")))


def _seconds(value: str | None) -> float | None:
    """``Retry-After`` as seconds (the HTTP-date form is given as None)."""
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
