"""CORS for integrators: ``proctor.js`` runs on their pages and calls this API.

Only origins listed in ``server.cors_origins`` (``"*"`` for any) are answered; the
pages served by ``proctor serve`` are same-origin and need none. Credentials travel
in the Authorization header, never in cookies, so no ``Allow-Credentials``.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Middleware

from signaling.errors import Handler

ALLOW_METHODS = "GET, POST, DELETE, OPTIONS"
ALLOW_HEADERS = "Authorization, Content-Type"
MAX_AGE = "600"
EXPOSE_HEADERS = "Retry-After"  # a full node's 503 says when to try again


def cors_middleware(origins: tuple[str, ...]) -> Middleware:
    allowed = frozenset(origins)

    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin is None or not (origin in allowed or "*" in allowed):
            return await handler(request)
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            response: web.StreamResponse = web.Response(status=204)
            response.headers.update({"Access-Control-Allow-Methods": ALLOW_METHODS,
                                     "Access-Control-Allow-Headers": ALLOW_HEADERS,
                                     "Access-Control-Max-Age": MAX_AGE})
        else:
            response = await handler(request)
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
        response.headers["Vary"] = "Origin"
        return response

    return cors
