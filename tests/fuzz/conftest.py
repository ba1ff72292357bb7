"""The fuzz suites' server: the real app on a loopback port, in a thread of its own.

schemathesis and hypothesis drive blocking clients (``requests``), so the app runs on
its own event loop in a background thread; aiortc peers that must stream next to the
abuse run on that same loop (:meth:`AppThread.run`). Each suite records how many cases
it ran in :data:`CASES`, printed at the end of the run for the README.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from aiohttp import web

from proctor.config import Config
from signaling.app import create_app
from signaling.keys import SESSIONS_KEY
from tests.conftest import API_KEY, make_config
from tests.media import face_frame
from tests.peers import ClientPeer, ScheduledVideoTrack, open_peer

T = TypeVar("T")
CASES: Counter[str] = Counter()  # "suite: what" → cases run


class AppThread:
    """``create_app(config)`` served on 127.0.0.1 from a background event loop."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.api_key = API_KEY
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="fuzz-app",
                                        daemon=True)
        self._runner: web.AppRunner | None = None
        self.app: web.Application | None = None
        self.url = ""

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 120) -> T:
        """Run ``coro`` on the app's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> None:
        self._thread.start()
        self.run(self._start())

    async def _start(self) -> None:
        self.app = create_app(self.config)
        self._runner = web.AppRunner(self.app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.Server)
        self.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    def stop(self) -> None:
        if self._runner is not None:
            self.run(self._runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=30)
        self.loop.close()


def _refuse_constant(name: str) -> None:
    raise AssertionError(f"the answer holds {name}, which is not JSON (RFC 8259)")


def strict_json(content: bytes) -> Any:
    """``content`` parsed as JSON proper: Python's parser takes NaN and Infinity, a
    browser's does not (and schemathesis' schema check passes them, as numbers)."""
    return json.loads(content, parse_constant=_refuse_constant)


def fuzz_config(root: Path) -> Config:
    """The test config, without request limits: a fuzzer is one fast client, and a 429
    would hide what the handler behind it answers."""
    return make_config(root, limits={"enabled": False})


@pytest.fixture(scope="module")
def app_thread(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppThread]:
    server = AppThread(fuzz_config(tmp_path_factory.mktemp("fuzz")))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not CASES:
        return
    terminalreporter.section("fuzz cases")
    for name, count in sorted(CASES.items()):
        terminalreporter.write_line(f"{count:6d}  {name}")
    suites: Counter[str] = Counter()
    for name, count in CASES.items():
        suites[name.split(":")[0]] += count
    for suite, count in sorted(suites.items()):
        terminalreporter.write_line(f"{count:6d}  total {suite}")


async def streaming_candidate(server: AppThread, sid: str, token: str,
                              seconds: float = 600.0) -> ClientPeer:
    """A real aiortc candidate streaming a face to the threaded app (run it on the app's
    loop with ``server.run``), once the server has seen the face."""
    async with aiohttp.ClientSession() as http:
        async def post(offer: dict[str, Any]) -> dict[str, Any]:
            async with http.post(f"{server.url}/api/v1/sessions/{sid}/offer", json=offer,
                                 headers={"Authorization": f"Bearer {token}"}) as answer:
                assert answer.status == 200, await answer.text()
                return dict(await answer.json())

        track = ScheduledVideoTrack([(seconds, face_frame())], duration=seconds)
        peer = await open_peer(post, "proctor", track, timeout=20)
    await peer.wait_for(lambda m: m.get("type") == "status" and m["faces"] == 1, timeout=20)
    return peer


def frames_analysed(server: AppThread, sid: str) -> int:
    """How many frames the live session ``sid`` has analysed so far."""
    assert server.app is not None
    pipeline = server.app[SESSIONS_KEY].sessions[sid].pipeline
    assert pipeline is not None
    return pipeline.frames_analysed
