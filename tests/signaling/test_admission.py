"""Admission at capacity, against the real app with real aiortc peers on loopback:
a full node answers a new session's offer 503 with Retry-After and changes nothing;
a reconnect is admitted; ending a session frees its slot. /readyz and /metrics say so."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from aiortc import RTCPeerConnection

from proctor.config import Config
from signaling.app import create_app
from signaling.channels import ChannelSender
from signaling.keys import SESSIONS_KEY, STORE_KEY
from tests.conftest import make_config
from tests.peers import ClientPeer, bearer, connect

ClientMaker = Callable[..., Awaitable[TestClient]]


@pytest.fixture
def one_slot(tmp_path: Path) -> Config:
    return make_config(tmp_path, rtc={"max_sessions": 1})


async def _session(client: TestClient, api_headers: dict[str, str]) -> dict[str, Any]:
    response = await client.post("/api/v1/sessions", json={"candidate_id": "cand"},
                                 headers=api_headers)
    assert response.status == 201
    return dict(await response.json())


async def _offer_sdp(pcs: list[RTCPeerConnection]) -> dict[str, str]:
    """A real browser-like offer (a DataChannel), from a peer that stays unanswered."""
    pc = RTCPeerConnection()
    pcs.append(pc)
    pc.createDataChannel("proctor")
    await pc.setLocalDescription(await pc.createOffer())
    return {"sdp": pc.localDescription.sdp, "type": "offer"}


async def _status(client: TestClient, session: dict[str, Any]) -> str:
    response = await client.get(f"/api/v1/sessions/{session['session_id']}",
                                headers=bearer(session["proctor_token"]))
    return str((await response.json())["status"])


async def _metric(client: TestClient, name: str) -> float:
    text = await (await client.get("/metrics")).text()
    line = next(line for line in text.splitlines() if line.startswith(name + " "))
    return float(line.split()[1])


async def _capacity(client: TestClient) -> dict[str, Any]:
    response = await client.get("/readyz")
    assert response.status == 200  # a full node is still ready: it serves the API
    body = dict(await response.json())
    assert body["accepting"] == body["capacity"]["accepting"]
    return body


async def test_a_full_node_refuses_new_sessions_until_one_ends(
        aiohttp_client: ClientMaker, one_slot: Config, api_headers: dict[str, str]) -> None:
    client = await aiohttp_client(create_app(one_slot))
    first, second = await _session(client, api_headers), await _session(client, api_headers)
    peers: list[ClientPeer] = []
    pcs: list[RTCPeerConnection] = []
    try:
        peers.append(await connect(client, f"/api/v1/sessions/{first['session_id']}/offer",
                                   first["candidate_token"], "proctor"))
        assert await _status(client, first) == "live"
        ready = await _capacity(client)
        assert ready["accepting"] is False
        assert {k: ready["capacity"][k] for k in ("live_sessions", "max_sessions")} == {
            "live_sessions": 1, "max_sessions": 1}
        assert ready["capacity"]["load"] >= 1.0 and ready["capacity"]["source"] == "config"

        # The second session's offer: 503, when to come back, plain words; nothing changed.
        before = await client.app[STORE_KEY].get_session(second["session_id"])
        refused = await client.post(f"/api/v1/sessions/{second['session_id']}/offer",
                                    json=await _offer_sdp(pcs),
                                    headers=bearer(second["candidate_token"]))
        assert refused.status == 503
        assert refused.headers["Retry-After"] == "30"  # rtc.retry_after_seconds' default
        error = (await refused.json())["error"]
        assert error["code"] == "at_capacity"
        assert error["message"].startswith("This server is full")
        assert "try again in 30 s" in error["message"]
        assert await client.app[STORE_KEY].get_session(second["session_id"]) == before
        assert await _status(client, second) == "created"
        assert second["session_id"] not in client.app[SESSIONS_KEY].sessions
        assert client.app[SESSIONS_KEY].live_count() == 1
        assert await _metric(client, "proctor_offers_refused_total") == 1.0

        # A reconnect of the live session is admitted even though the node is full.
        peers.append(await connect(client, f"/api/v1/sessions/{first['session_id']}/offer",
                                   first["candidate_token"], "proctor"))
        assert client.app[SESSIONS_KEY].live_count() == 1

        # Ending the first session frees its slot: the second one gets in.
        ended = await client.post(f"/api/v1/sessions/{first['session_id']}/end",
                                  headers=api_headers)
        assert ended.status == 200
        ready = await _capacity(client)
        assert ready["accepting"] is True and ready["capacity"]["live_sessions"] == 0
        assert await _metric(client, "proctor_sessions_live") == 0.0
        peers.append(await connect(client, f"/api/v1/sessions/{second['session_id']}/offer",
                                   second["candidate_token"], "proctor"))
        assert await _status(client, second) == "live"
        assert (await _capacity(client))["accepting"] is False
    finally:
        for pc in [p.pc for p in peers] + pcs:
            await pc.close()


async def test_simultaneous_offers_cannot_both_take_the_last_slot(
        aiohttp_client: ClientMaker, one_slot: Config, api_headers: dict[str, str]) -> None:
    client = await aiohttp_client(create_app(one_slot))
    sessions = [await _session(client, api_headers) for _ in range(2)]
    pcs: list[RTCPeerConnection] = []
    try:
        offers = [await _offer_sdp(pcs) for _ in sessions]
        responses = await asyncio.gather(*(
            client.post(f"/api/v1/sessions/{s['session_id']}/offer", json=offer,
                        headers=bearer(s["candidate_token"]))
            for s, offer in zip(sessions, offers, strict=True)))
        assert sorted(r.status for r in responses) == [200, 503]
        assert sorted([await _status(client, s) for s in sessions]) == ["created", "live"]
        assert len(client.app[SESSIONS_KEY].sessions) == 1
    finally:
        for pc in pcs:
            await pc.close()


async def test_simultaneous_offers_fill_every_slot_round_after_round(
        aiohttp_client: ClientMaker, tmp_path: Path, api_headers: dict[str, str]) -> None:
    """A session going live holds one slot, not two: while it is being stored, announced
    and answered it is live already and must not count again as one on its way (bench
    rounds met a node "full" one or two sessions early). Ending every session frees
    every slot for the next round."""
    client = await aiohttp_client(create_app(make_config(tmp_path, rtc={"max_sessions": 3})))
    service = client.app[SESSIONS_KEY]
    pcs: list[RTCPeerConnection] = []
    try:
        for offered, expected in ((4, [200, 200, 200, 503]), (3, [200, 200, 200])):
            sessions = [await _session(client, api_headers) for _ in range(offered)]
            offers = [await _offer_sdp(pcs) for _ in sessions]
            responses = await asyncio.gather(*(
                client.post(f"/api/v1/sessions/{s['session_id']}/offer", json=offer,
                            headers=bearer(s["candidate_token"]))
                for s, offer in zip(sessions, offers, strict=True)))
            assert sorted(r.status for r in responses) == expected
            assert (await _capacity(client))["capacity"]["live_sessions"] == 3
            for s in sessions:
                ended = await client.post(f"/api/v1/sessions/{s['session_id']}/end",
                                          headers=api_headers)
                assert ended.status == 200
            assert service.live_count() == 0
    finally:
        for pc in pcs:
            await pc.close()


async def test_a_session_going_live_holds_one_slot_not_two(
        aiohttp_client: ClientMaker, tmp_path: Path, api_headers: dict[str, str]) -> None:
    """Between going live and its answer's return (ICE gathering, the peer wired), the
    session is in the service's live sessions: it must not also hold a slot as one on its
    way, or a concurrent offer meets a full node one session early."""
    client = await aiohttp_client(create_app(make_config(tmp_path, rtc={"max_sessions": 2})))
    service = client.app[SESSIONS_KEY]
    session = await _session(client, api_headers)
    record = await client.app[STORE_KEY].get_session(session["session_id"])
    assert record is not None
    async with service.connecting(record, lambda: ChannelSender("proctor", service.metrics)):
        assert session["session_id"] in service.sessions
        assert service.live_count() == 1
        assert service.accepting() is True
    response = await client.post(f"/api/v1/sessions/{session['session_id']}/end",
                                 headers=api_headers)
    assert response.status == 200
    assert service.live_count() == 0


async def test_an_ended_session_is_409_not_503(
        aiohttp_client: ClientMaker, one_slot: Config, api_headers: dict[str, str]) -> None:
    client = await aiohttp_client(create_app(one_slot))
    live, done = await _session(client, api_headers), await _session(client, api_headers)
    assert (await client.post(f"/api/v1/sessions/{done['session_id']}/end",
                              headers=api_headers)).status == 200
    pcs: list[RTCPeerConnection] = []
    peer = await connect(client, f"/api/v1/sessions/{live['session_id']}/offer",
                         live["candidate_token"], "proctor")
    try:
        response = await client.post(f"/api/v1/sessions/{done['session_id']}/offer",
                                     json=await _offer_sdp(pcs),
                                     headers=bearer(done["candidate_token"]))
        assert response.status == 409 and "Retry-After" not in response.headers
    finally:
        for pc in [peer.pc, *pcs]:
            await pc.close()


async def test_auto_capacity_is_measured_and_reported(
        aiohttp_client: ClientMaker, tmp_path: Path) -> None:
    config = make_config(tmp_path, rtc={"max_sessions": "auto"})
    client = await aiohttp_client(create_app(config))
    ready = await _capacity(client)
    capacity = ready["capacity"]
    assert ready["ready"] is True and ready["accepting"] is True
    assert capacity["source"] == "measured" and capacity["max_sessions"] >= 1
    assert capacity["live_sessions"] == 0 and capacity["video_cores_per_session"] > 0
    assert capacity["usable_cores"] > 0 and 0 <= capacity["cpu_share"] <= capacity["load"]
    assert capacity["target_utilisation"] == config.rtc.target_utilisation
    assert capacity["overhead_cores_per_session"] == config.rtc.session_overhead_cores
    assert await _metric(client, "proctor_sessions_capacity") == capacity["max_sessions"]
    assert await _metric(client, "proctor_sessions_live") == 0.0
    assert await _metric(client, "proctor_load") >= 0.0
    assert await _metric(client, "proctor_cpu_share") >= 0.0


async def test_cors_pages_may_read_retry_after(
        aiohttp_client: ClientMaker, tmp_path: Path, api_headers: dict[str, str]) -> None:
    config = make_config(tmp_path, server={"cors_origins": ["https://exam.example.org"]})
    client = await aiohttp_client(create_app(config))
    response = await client.post("/api/v1/sessions", json={"candidate_id": "c"},
                                 headers={**api_headers, "Origin": "https://exam.example.org"})
    assert "Retry-After" in response.headers["Access-Control-Expose-Headers"]


async def test_a_draining_node_refuses_new_sessions_and_tells_the_others(
        aiohttp_client: ClientMaker, tmp_path: Path, api_headers: dict[str, str]) -> None:
    client = await aiohttp_client(create_app(make_config(tmp_path, rtc={"max_sessions": 4})))
    live, late = await _session(client, api_headers), await _session(client, api_headers)
    pcs: list[RTCPeerConnection] = []
    peers = [await connect(client, f"/api/v1/sessions/{live['session_id']}/offer",
                           live["candidate_token"], "proctor")]
    try:
        service = client.app[SESSIONS_KEY]
        await service.drain()  # what SIGTERM does first
        ready = await _capacity(client)
        assert ready["accepting"] is False and ready["capacity"]["draining"] is True
        # The heartbeat says at once that this node has no room.
        (node,) = await client.app[STORE_KEY].list_nodes()
        assert node.capacity == 0 and node.live_sessions == 1

        refused = await client.post(f"/api/v1/sessions/{late['session_id']}/offer",
                                    json=await _offer_sdp(pcs),
                                    headers=bearer(late["candidate_token"]))
        assert refused.status == 503
        assert refused.headers["Retry-After"] == "30"
        error = (await refused.json())["error"]
        assert error["code"] == "draining" and "shutting down" in error["message"]
        assert await _status(client, late) == "created"

        # The live session goes on: its reconnect is still taken.
        peers.append(await connect(client, f"/api/v1/sessions/{live['session_id']}/offer",
                                   live["candidate_token"], "proctor"))
        assert await _status(client, live) == "live"
    finally:
        for pc in [p.pc for p in peers] + pcs:
            await pc.close()
