"""A real webhook receiver on 127.0.0.1 for the tests: it records what arrives and
answers as the test scripts it."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict


@dataclass
class Received:
    headers: CIMultiDict[str]
    body: bytes
    at: float  # time.monotonic() on arrival
    status: int  # what the receiver answered
    wall: float  # time.time() on arrival

    @property
    def event(self) -> dict[str, Any]:
        value = json.loads(self.body)
        assert isinstance(value, dict)
        return value

    @property
    def event_id(self) -> str:
        return str(self.event["event_id"])


# How to answer: given the request and how many earlier requests carried its event id.
Answer = Callable[[web.Request, int], int]


def always_ok(request: web.Request, earlier: int) -> int:
    return 200


def fail_first(request: web.Request, earlier: int) -> int:
    """500 to an event's first delivery, 200 to its retries."""
    return 500 if earlier == 0 else 200


class Receiver:
    def __init__(self, answer: Answer = always_ok, delay_seconds: float = 0.0) -> None:
        self.answer = answer
        self.delay_seconds = delay_seconds  # before answering (a slow receiver)
        self.received: list[Received] = []
        self.in_flight = 0
        self.max_in_flight = 0  # the most requests it was answering at once
        self._arrived = asyncio.Condition()
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._server = TestServer(app, host="127.0.0.1")

    @property
    def url(self) -> str:
        return str(self._server.make_url("/hook"))

    async def start(self) -> Receiver:
        await self._server.start_server()
        return self

    async def close(self) -> None:
        await self._server.close()

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        event_id = request.headers.get("Proctor-Event-Id")
        earlier = sum(1 for r in self.received if r.headers.get("Proctor-Event-Id") == event_id)
        status = self.answer(request, earlier)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay_seconds:
                await asyncio.sleep(self.delay_seconds)
        finally:
            self.in_flight -= 1
        async with self._arrived:
            self.received.append(Received(CIMultiDict(request.headers), body,
                                          time.monotonic(), status, time.time()))
            self._arrived.notify_all()
        return web.Response(status=status, text="ok" if status < 300 else "try again")

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """Until ``count`` requests have arrived (AssertionError after ``timeout``)."""
        async def enough() -> None:
            async with self._arrived:
                await self._arrived.wait_for(lambda: len(self.received) >= count)
        try:
            await asyncio.wait_for(enough(), timeout)
        except TimeoutError:
            raise AssertionError(f"{len(self.received)} of {count} deliveries arrived in "
                                 f"{timeout} s: {[r.event for r in self.received]}") from None
        return list(self.received)

    def of_type(self, event_type: str) -> list[Received]:
        return [r for r in self.received if r.event["type"] == event_type]
