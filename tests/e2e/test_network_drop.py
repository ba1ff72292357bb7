"""A candidate's network drops and comes back: the same session resumes. Media time
continues from where it was, the flags so far stay, and a gap shorter than the
``video_lost`` rule raises no flag; a longer one does. Two ways: the network goes away
under a peer that stays up (every packet dropped at a relay, then carried again), and
the candidate's page hangs up and offers again."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import TestClient

from tests.media import empty_frame, face_frame
from tests.peers import ClientPeer, ScheduledVideoTrack, connect, open_peer, poster
from tests.relay import UdpRelay

SHORT_CUT = 2.0  # under video_lost's 3 s rule
LONG_CUT = 9.0  # over it, under its 10 s high level: the "up to 10 s"


def _video(image: Any = None) -> ScheduledVideoTrack:
    return ScheduledVideoTrack([(3600.0, face_frame() if image is None else image)], fps=10)


async def _media_time(peer: ClientPeer, at_least: float) -> float:
    status = await peer.wait_for(lambda m: m.get("type") == "status"
                                 and m["media_time"] >= at_least, timeout=20)
    return float(status["media_time"])


def _kinds(peer: ClientPeer) -> set[str]:
    return {m["flag"]["kind"] for m in peer.messages if m.get("type") == "flag"}


async def _analysed(client: TestClient, sid: str, headers: dict[str, str]) -> int:
    summary = await (await client.get(f"/api/v1/sessions/{sid}", headers=headers)).json()
    assert summary["status"] == "live"
    return int(summary["pipeline"]["frames_analysed"])


async def _flags(client: TestClient, sid: str, headers: dict[str, str],
                 kind: str) -> list[dict[str, Any]]:
    flags = (await (await client.get(f"/api/v1/sessions/{sid}/flags",
                                     headers=headers)).json())["flags"]
    return [f for f in flags if f["kind"] == kind]


async def _cut(relay: UdpRelay, seconds: float) -> int:
    """No packet either way for ``seconds``; how many were dropped."""
    dropped = relay.dropped
    relay.cut()
    await asyncio.sleep(seconds)
    relay.cut(False)
    return relay.dropped - dropped


async def test_the_network_going_away_under_a_live_peer_resumes_it(
        client: TestClient, api_headers: dict[str, str]) -> None:
    created = await (await client.post("/api/v1/sessions", json={"candidate_id": "c-cut"},
                                       headers=api_headers)).json()
    sid, token = created["session_id"], created["candidate_token"]
    relay = UdpRelay()
    await relay.start()
    direct = poster(client, f"/api/v1/sessions/{sid}/offer", token)

    async def through_relay(offer: dict[str, Any]) -> dict[str, Any]:
        answer = await direct({**offer, "sdp": relay.offer(offer["sdp"])})
        return {**answer, "sdp": relay.answer(answer["sdp"])}

    peer = await open_peer(through_relay, "proctor", _video())
    try:
        before = await _media_time(peer, 3.0)
        assert await _cut(relay, SHORT_CUT) > 0
        analysed = await _analysed(client, sid, api_headers)
        await _media_time(peer, before + SHORT_CUT + 2.0)  # the same peer's channel again
        assert await _analysed(client, sid, api_headers) > analysed  # frames analysed again
        lost = await _flags(client, sid, api_headers, "video_lost")
        assert not lost, (before, [(f["start"], f["end"]) for f in lost])

        cut_at = await _media_time(peer, before + SHORT_CUT + 2.0)
        assert await _cut(relay, LONG_CUT) > 0
        await _media_time(peer, cut_at + LONG_CUT + 1.0)
        for _ in range(40):  # closed once frames arrive again
            lost = await _flags(client, sid, api_headers, "video_lost")
            if lost and lost[0]["end"] is not None:
                break
            await asyncio.sleep(0.25)
        assert len(lost) == 1 and lost[0]["severity"] == "moderate", lost
        assert cut_at <= lost[0]["start"] < lost[0]["end"] <= cut_at + LONG_CUT + 1.0
        assert peer.pc.connectionState == "connected"  # one peer throughout
        analysed = await _analysed(client, sid, api_headers)
        await _media_time(peer, cut_at + LONG_CUT + 2.5)
        assert await _analysed(client, sid, api_headers) > analysed
        assert "face_absent" not in _kinds(peer)
    finally:
        await peer.pc.close()
        relay.close()


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
