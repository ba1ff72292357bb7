"""Real aiortc peers and JSON calls against running ``proctor serve`` processes."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp

from tests.e2e.conftest import Server
from tests.media import empty_frame, face_frame
from tests.peers import ClientPeer, Poster, ScheduledVideoTrack, open_peer


async def call(http: aiohttp.ClientSession, server: Server, method: str, path: str,
               token: str | None = None, body: dict[str, Any] | None = None,
               status: int = 200) -> Any:
    async with http.request(method, server.url + path, json=body, headers={
            "Authorization": f"Bearer {token or server.api_key}"}) as response:
        raw = await response.read()
        assert response.status == status, f"{method} {path}: {response.status} {raw[:500]!r}"
        return json.loads(raw) if response.content_type == "application/json" else raw


def server_poster(http: aiohttp.ClientSession, server: Server, path: str,
                  token: str) -> Poster:
    """``post`` for :func:`tests.peers.open_peer` to a running ``server`` (any node)."""
    async def post(offer: dict[str, Any]) -> dict[str, Any]:
        return dict(await call(http, server, "POST", path, token, offer))

    return post


async def peer(http: aiohttp.ClientSession, server: Server, path: str, token: str,
               label: str, track: ScheduledVideoTrack | None = None) -> ClientPeer:
    """A real aiortc peer whose offer goes to ``server`` (any node)."""
    return await open_peer(server_poster(http, server, path, token), label, track,
                           timeout=15)


async def live_candidate(http: aiohttp.ClientSession, server: Server,
                         track: ScheduledVideoTrack) -> tuple[str, ClientPeer]:
    """A new session on ``server`` with a real candidate peer streaming ``track``."""
    created = await call(http, server, "POST", "/api/v1/sessions",
                         body={"candidate_id": "cand"}, status=201)
    sid = created["session_id"]
    return sid, await peer(http, server, f"/api/v1/sessions/{sid}/offer",
                           created["candidate_token"], "proctor", track)


def face_then_empty() -> ScheduledVideoTrack:
    return ScheduledVideoTrack([(2.0, face_frame()), (3600.0, empty_frame())], fps=10)


def empty_room() -> ScheduledVideoTrack:
    """Nobody in view from the first frame: ``face_absent`` opens 3 s in and stays open.
    (After :func:`face_then_empty`'s face, a loaded machine once saw one late frame read
    as a face, which closed the flag a test needed open.)"""
    return ScheduledVideoTrack([(3600.0, empty_frame())], fps=10)


async def wait_until(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = await check()
        if result:
            return result
        await asyncio.sleep(0.5)
    raise AssertionError(f"{what}: not within {timeout} s")


async def video_watcher(http: aiohttp.ClientSession, server: Server, token: str,
                        video: str) -> ClientPeer:
    """A proctor's peer asking ``server`` for ``video``'s live picture (in its tracks)."""
    return await open_peer(server_poster(http, server, "/api/v1/watch/offer", token),
                           "alerts", body={"video": video}, receive=True, timeout=15)


async def first_video_frame(tracks: asyncio.Queue[Any]) -> Any:
    while True:
        track = await asyncio.wait_for(tracks.get(), timeout=15)
        if track.kind == "video":
            return await asyncio.wait_for(track.recv(), timeout=15)
