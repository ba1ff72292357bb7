"""JSON errors: every failure is ``{"error": {"code", "message"}}`` with the right status."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from proctor.errors import ServiceError
from proctor.store.base import StoreUnavailable

log = logging.getLogger("proctor.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(ServiceError):
    """A refusal made by the HTTP layer itself (bad input, authentication)."""


def error_response(status: int, code: str, message: str,
                   headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status,
                             headers=headers)


_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 409: "conflict", 413: "too_large",
               415: "unsupported_media_type", 429: "rate_limited"}


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ServiceError as exc:  # the HTTP layer's own, and the engine's
        return error_response(exc.status, exc.code, exc.message, exc.headers)
    except StoreUnavailable as exc:
        log.error("store unavailable during %s %s: %s", request.method, request.path, exc)
        return error_response(503, "store_unavailable",
                              "the database is unavailable; nothing was saved, try again")
    except web.HTTPRequestEntityTooLarge:
        return error_response(413, "too_large", "the request body is too large")
    except HttpProcessingError as exc:
        # aiohttp's parser refusing what a handler reads after the request line, e.g. a
        # multipart part whose headers hold a control character (found by the fuzzer):
        # the client's malformed message, not the server's fault.
        status = exc.code if 400 <= exc.code < 500 else 400
        return error_response(status, _HTTP_CODES.get(status, "bad_request"),
                              f"the request could not be read: {exc.message}"[:300])
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "error")
        return error_response(exc.status, code, exc.reason or code)
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(500, "internal", "internal server error")
