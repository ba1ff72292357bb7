"""The access log, without credentials: ``?token=`` values (in the request line and in a
Referer, since review links carry them) are replaced before the line is written."""

from __future__ import annotations

import re
from collections.abc import Iterable

from aiohttp.web_log import AccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

_TOKEN = re.compile(r"((?:^|[?&;])token=)[^&\s\"#]*", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with every ``token=`` query value replaced."""
    return _TOKEN.sub(r"\1[redacted]", text)


class RedactingAccessLogger(AccessLogger):
    def _format_line(self, request: BaseRequest, response: StreamResponse,
                     time: float) -> Iterable[tuple[str | tuple[str, str], str]]:
        return [(key, redact(value) if isinstance(value, str) else value)
                for key, value in super()._format_line(request, response, time)]
