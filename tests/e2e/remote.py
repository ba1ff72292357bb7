"""Real aiortc peers and JSON calls against running ``proctor serve`` processes."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiortc import RTCPeerConnection, RTCSessionDescription

from tests.e2e.conftest import Server
from tests.media import empty_frame, face_frame
from tests.peers import ClientPeer, ScheduledVideoTrack


async def call(http: aiohttp.ClientSession, server: Server, method: str, path: str,
               token: str | None = None, body: dict[str, Any] | None = None,
               status: int = 200) -> Any:
    async with http.request(method, server.url + path, json=body, headers={
            "Authorization": f"Bearer {token or server.api_key}"}) as response:
        raw = await response.read()
        assert response.status == status, f"{method} {path}: {response.status} {raw[:500]!r}"
        return json.loads(raw) if response.content_type == "application/json" else raw


async def peer(http: aiohttp.ClientSession, server: Server, path: str, token: str,
               label: str, track: ScheduledVideoTrack | None = None) -> ClientPeer:
    """A real aiortc peer whose offer goes to ``server`` (any node)."""
    pc = RTCPeerConnection()
    peer = ClientPeer(pc)
    channel = pc.createDataChannel(label)
    channel.on("message", lambda raw: peer.messages.append(json.loads(raw)))
    channel.on("open", peer.opened.set)
    if track is not None:
        pc.addTrack(track)
    await pc.setLocalDescription(await pc.createOffer())
    answer = await call(http, server, "POST", path, token,
                         {"sdp": pc.localDescription.sdp, "type": "offer"})
    await pc.setRemoteDescription(RTCSessionDescription(**answer))
    await asyncio.wait_for(peer.opened.wait(), timeout=15)
    return peer


def face_then_empty() -> ScheduledVideoTrack:
    return ScheduledVideoTrack([(2.0, face_frame()), (3600.0, empty_frame())], fps=10)


async def wait_until(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = await check()
        if result:
            return result
        await asyncio.sleep(0.5)
    raise AssertionError(f"{what}: not within {timeout} s")


async def video_watcher(http: aiohttp.ClientSession, server: Server, token: str,
                        video: str) -> tuple[ClientPeer, asyncio.Queue[Any]]:
    """A proctor's peer asking ``server`` for ``video``'s live picture."""
    async def post(offer: dict[str, Any]) -> dict[str, Any]:
        return dict(await call(http, server, "POST", "/api/v1/watch/offer", token, offer))

    return await video_watcher_via(post, video)


async def video_watcher_via(post: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]],
                            video: str) -> tuple[ClientPeer, asyncio.Queue[Any]]:
    """A proctor's peer whose watch offer (with ``video``) ``post`` delivers: the peer,
    and a queue of the tracks it receives."""
    pc = RTCPeerConnection()
    watcher = ClientPeer(pc)
    tracks: asyncio.Queue[Any] = asyncio.Queue()
    pc.on("track", tracks.put_nowait)
    channel = pc.createDataChannel("alerts")
    channel.on("message", lambda raw: watcher.messages.append(json.loads(raw)))
    channel.on("open", watcher.opened.set)
    pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("audio", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    answer = await post({"sdp": pc.localDescription.sdp, "type": "offer", "video": video})
    await pc.setRemoteDescription(RTCSessionDescription(**answer))
    await asyncio.wait_for(watcher.opened.wait(), timeout=15)
    watcher.channel = channel  # type: ignore[attr-defined]
    return watcher, tracks


async def first_video_frame(tracks: asyncio.Queue[Any]) -> Any:
    while True:
        track = await asyncio.wait_for(tracks.get(), timeout=15)
        if track.kind == "video":
            return await asyncio.wait_for(track.recv(), timeout=15)
