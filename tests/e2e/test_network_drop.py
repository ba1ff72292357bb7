"""A candidate's network drops and comes back: the same session resumes. Media time
continues from where it was, the flags so far stay, and a gap shorter than the
``video_lost`` rule raises no flag; a longer one does."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import TestClient

from tests.media import empty_frame, face_frame
from tests.peers import ClientPeer, ScheduledVideoTrack, connect


def _video(image: Any = None) -> ScheduledVideoTrack:
    return ScheduledVideoTrack([(3600.0, face_frame() if image is None else image)], fps=10)


async def _media_time(peer: ClientPeer, at_least: float) -> float:
    status = await peer.wait_for(lambda m: m.get("type") == "status"
                                 and m["media_time"] >= at_least, timeout=20)
    return float(status["media_time"])


def _kinds(peer: ClientPeer) -> set[str]:
    return {m["flag"]["kind"] for m in peer.messages if m.get("type") == "flag"}


async def test_a_short_drop_resumes_the_same_session(client: TestClient,
                                                     api_headers: dict[str, str]) -> None:
    created = await (await client.post("/api/v1/sessions", json={"candidate_id": "c-net"},
                                       headers=api_headers)).json()
    sid, token = created["session_id"], created["candidate_token"]
    offer = f"/api/v1/sessions/{sid}/offer"
    first = await connect(client, offer, token, "proctor", track=_video(empty_frame()))
    await first.wait_for(lambda m: m.get("type") == "flag"
                         and m["flag"]["kind"] == "face_absent", timeout=20)
    before = await _media_time(first, 4.0)
    await first.pc.close()  # the network goes: no packet for 2 s (video_lost needs 3 s)
    await asyncio.sleep(2.0)
    second = await connect(client, offer, token, "proctor", track=_video())
    after = await _media_time(second, before + 2.0)
    assert after >= before + 2.0  # the clock went on; it did not restart at 0
    await asyncio.sleep(1.0)
    assert "video_lost" not in _kinds(second)
    summary = await (await client.get(f"/api/v1/sessions/{sid}", headers=api_headers)).json()
    assert summary["status"] == "live" and summary["flag_counts"]["face_absent"] >= 1
    await second.pc.close()


async def test_a_long_drop_raises_video_lost(client: TestClient,
                                             api_headers: dict[str, str]) -> None:
    created = await (await client.post("/api/v1/sessions", json={"candidate_id": "c-net2"},
                                       headers=api_headers)).json()
    sid, token = created["session_id"], created["candidate_token"]
    offer = f"/api/v1/sessions/{sid}/offer"
    first = await connect(client, offer, token, "proctor", track=_video())
    await _media_time(first, 2.0)
    await first.pc.close()
    await asyncio.sleep(5.0)  # longer than the rule's 3 s
    second = await connect(client, offer, token, "proctor", track=_video())
    await _media_time(second, 8.0)
    flags = (await (await client.get(f"/api/v1/sessions/{sid}/flags",
                                     headers=api_headers)).json())["flags"]
    lost = [f for f in flags if f["kind"] == "video_lost"]
    assert lost and lost[0]["start"] >= 2.0
    await second.pc.close()
