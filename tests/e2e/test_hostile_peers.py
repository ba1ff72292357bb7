"""A candidate cannot switch proctoring off (issue 10, finding 3), with real aiortc peers.

Junk on the ``proctor`` or ``alerts`` DataChannel gets an error message back and the peer
stays connected, the session live and analysing. A candidate who hangs up and does not
come back gets ``video_lost``, and the session does not end PASS.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
from aiohttp.test_utils import TestClient

from signaling.keys import SESSIONS_KEY
from tests.media import face_frame
from tests.peers import ClientPeer, ScheduledVideoTrack, connect

JUNK = ["[" * 30_000, '{"type": ' + "9" * 5000 + "}", "{" * 100 + "}" * 100]
# video_lost at 0.5 s (moderate) and 1.5 s (high) of silence, after the 1 s timeout.
FAST_VIDEO_LOST = {"rules": {"video_lost": {"moderate": {"seconds": 0.5},
                                            "high": {"seconds": 1.5}}}}


async def _start(client: TestClient, api_headers: dict[str, str], seconds: float,
                 policy: dict[str, Any] | None = None) -> tuple[dict[str, Any], ClientPeer]:
    response = await client.post("/api/v1/sessions", headers=api_headers,
                                 json={"candidate_id": "c-hostile", "policy": policy or {}})
    assert response.status == 201, await response.text()
    session = dict(await response.json())
    track = ScheduledVideoTrack([(seconds, face_frame())], duration=seconds)
    candidate = await connect(client, f"/api/v1/sessions/{session['session_id']}/offer",
                              session["candidate_token"], "proctor", track=track)
    await candidate.wait_for(lambda m: m.get("type") == "status" and m["faces"] == 1)
    return session, candidate


def _status_after(media_time: float) -> Any:
    return lambda m: m.get("type") == "status" and m["media_time"] > media_time


async def _junk_answered(peer: ClientPeer) -> None:
    for text in JUNK:
        errors = len(peer.of_type("error"))
        peer.channel.send(text)  # type: ignore[attr-defined]
        deadline = time.monotonic() + 5
        while len(peer.of_type("error")) == errors:
            assert time.monotonic() < deadline, f"no error for {text[:20]!r}"
            await asyncio.sleep(0.05)
    peer.channel.send('{"type": "ping"}')  # type: ignore[attr-defined]
    await peer.wait_for(lambda m: m.get("type") == "pong")
    assert peer.pc.connectionState == "connected"


async def test_junk_on_channels_never_ends_a_peer(client: TestClient,
                                                  api_headers: dict[str, str]) -> None:
    session, candidate = await _start(client, api_headers, seconds=12)
    sid = session["session_id"]
    watcher = await connect(client, "/api/v1/watch/offer", session["proctor_token"], "alerts")
    await _junk_answered(candidate)
    await _junk_answered(watcher)
    pipeline = client.app[SESSIONS_KEY].sessions[sid].pipeline
    assert pipeline is not None
    analysed = pipeline.frames_analysed
    now = candidate.of_type("status")[-1]["media_time"]
    await candidate.wait_for(_status_after(now + 2), timeout=6)  # still live and analysing
    assert pipeline.frames_analysed > analysed + 3
    got = await (await client.get(f"/api/v1/sessions/{sid}", headers=api_headers)).json()
    assert got["status"] == "live"
    assert candidate.pc.connectionState == "connected"
    assert watcher.pc.connectionState == "connected"
    await candidate.pc.close()
    await watcher.pc.close()


async def test_hanging_up_raises_video_lost_and_does_not_pass(
        client: TestClient, api_headers: dict[str, str]) -> None:
    session, candidate = await _start(client, api_headers, seconds=30, policy=FAST_VIDEO_LOST)
    sid = session["session_id"]
    watcher = await connect(client, "/api/v1/watch/offer", session["proctor_token"], "alerts")
    await candidate.wait_for(_status_after(1.5))
    await candidate.pc.close()  # hangs up, and does not come back
    high = await watcher.wait_for(lambda m: m.get("type") == "flag"
                                  and m["flag"]["kind"] == "video_lost"
                                  and m["flag"]["severity"] == "high", timeout=10)
    assert high["session_id"] == sid
    response = await client.post(f"/api/v1/sessions/{sid}/end", headers=api_headers)
    assert response.status == 200, await response.text()
    assert (await response.json())["recommendation"] != "PASS"
    flags = (await (await client.get(f"/api/v1/sessions/{sid}/flags",
                                     headers=api_headers)).json())["flags"]
    assert {(f["kind"], f["severity"]) for f in flags} >= {("video_lost", "high")}
    await watcher.pc.close()


async def test_refused_frame_shapes_are_dropped_and_counted(
        client: TestClient, api_headers: dict[str, str]) -> None:
    """A candidate sending 16×1024 frames: none is analysed, the session goes on and the
    silence of real video is video_lost (finding 1 over WebRTC)."""
    response = await client.post("/api/v1/sessions", headers=api_headers,
                                 json={"candidate_id": "c-strip", "policy": FAST_VIDEO_LOST})
    session = dict(await response.json())
    sid = session["session_id"]
    strip = np.full((1024, 16, 3), 128, np.uint8)
    track = ScheduledVideoTrack([(20, strip)], duration=20)
    candidate = await connect(client, f"/api/v1/sessions/{sid}/offer",
                              session["candidate_token"], "proctor", track=track)
    flag = await candidate.wait_for(lambda m: m.get("type") == "flag"
                                    and m["flag"]["kind"] == "video_lost", timeout=10)
    assert flag["flag"]["severity"] in ("moderate", "high")
    pipeline = client.app[SESSIONS_KEY].sessions[sid].pipeline
    assert pipeline is not None
    assert pipeline.frames_refused > 5 and pipeline.frames_analysed == 0
    assert pipeline.stats()["frames_refused"] == pipeline.frames_refused
    assert candidate.pc.connectionState == "connected"
    await candidate.pc.close()
