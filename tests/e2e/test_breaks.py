"""Declared breaks on a live session, end to end with a real aiortc peer: a candidate who
leaves during a break raises no ``face_absent``; leaving after it does. The policy's
limits answer 409; breaks reach the proctor, the report and the audit."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import TestClient

from signaling.keys import STORE_KEY
from tests.media import empty_frame, face_frame
from tests.peers import ScheduledVideoTrack, bearer, connect

# Face until 1.5 s, then an empty room for 4 s (a break covers it), a face again, then
# the room empty from 8 s (no break: face_absent opens at about 11 s).
SCHEDULE = [(1.5, face_frame()), (5.5, empty_frame()), (8.0, face_frame()),
            (30.0, empty_frame())]


async def _session(client: TestClient, api_headers: dict[str, str],
                   policy: dict[str, Any]) -> dict[str, Any]:
    response = await client.post("/api/v1/sessions", headers=api_headers,
                                 json={"candidate_id": "c-break", "policy": policy})
    assert response.status == 201, await response.text()
    return dict(await response.json())


async def _break(client: TestClient, sid: str, token: str, action: str) -> Any:
    return await client.post(f"/api/v1/sessions/{sid}/break", headers=bearer(token),
                             json={"action": action, "reason": "restroom"})


def _kinds(messages: list[dict[str, Any]]) -> list[str]:
    return [m["flag"]["kind"] for m in messages if m.get("type") == "flag"]


async def test_a_break_pauses_presence_and_is_kept(client: TestClient,
                                                  api_headers: dict[str, str]) -> None:
    created = await _session(client, api_headers, {"breaks": {"max_count": 1}})
    sid, token = created["session_id"], created["candidate_token"]
    watcher = await connect(client, "/api/v1/watch/offer", created["proctor_token"], "alerts")
    candidate = await connect(client, f"/api/v1/sessions/{sid}/offer", token, "proctor",
                              track=ScheduledVideoTrack(SCHEDULE, fps=10))
    started = await _break(client, sid, token, "start")
    assert started.status == 200, await started.text()
    assert (await _break(client, sid, token, "start")).status == 409  # already on
    await candidate.wait_for(lambda m: m.get("type") == "status"
                             and m["media_time"] >= 7.0, timeout=15)
    assert "face_absent" not in _kinds(candidate.messages)  # 4 s away, on a break
    ended = await _break(client, sid, created["proctor_token"], "end")  # a proctor may end it
    assert ended.status == 200 and (await ended.json())["break"]["end"] is not None
    assert (await _break(client, sid, token, "start")).status == 409  # max_count 1
    await candidate.wait_for(lambda m: m.get("type") == "flag"
                             and m["flag"]["kind"] == "face_absent", timeout=15)
    await watcher.wait_for(lambda m: m.get("type") == "break", timeout=5)

    assert (await client.post(f"/api/v1/sessions/{sid}/end", headers=api_headers)).status == 200
    report = await (await client.get(f"/api/v1/sessions/{sid}/report",
                                     headers=api_headers)).json()
    (taken,) = report["breaks"]
    assert taken["reason"] == "restroom" and 0 <= taken["start"] < 2.0 < 7.0 <= taken["end"]
    absent = [f for f in report["flags"] if f["kind"] == "face_absent"]
    assert absent and all(f["start"] >= taken["end"] for f in absent)
    entries = await client.app[STORE_KEY].list_audit(sid)
    actions = [e.action for e in entries]
    assert actions[:2] == ["break_start", "break_end"] and actions[-1] == "end"
    assert entries[0].actor.startswith("candidate:") and entries[1].actor.startswith("proctor:")
    await candidate.pc.close()
    await watcher.pc.close()


async def test_break_limits_and_state(client: TestClient, api_headers: dict[str, str]) -> None:
    created = await _session(client, api_headers, {"breaks": {"max_seconds": 1}})
    sid, token = created["session_id"], created["candidate_token"]
    assert (await _break(client, sid, token, "start")).status == 409  # not live yet
    candidate = await connect(client, f"/api/v1/sessions/{sid}/offer", token, "proctor",
                              track=ScheduledVideoTrack([(30.0, face_frame())], fps=10))
    assert (await _break(client, sid, token, "end")).status == 409  # none on
    assert (await _break(client, sid, token, "start")).status == 200
    await candidate.wait_for(lambda m: m.get("type") == "break"
                             and m["break"]["end"] is not None, timeout=5)  # time is up
    assert (await _break(client, sid, token, "start")).status == 409  # allowance used
    bad = await client.post(f"/api/v1/sessions/{sid}/break", headers=bearer(token),
                            json={"action": "nap"})
    assert bad.status == 400
    refused = await client.post("/api/v1/sessions", headers=api_headers, json={
        "candidate_id": "x", "policy": {"breaks": {"max_count": -1}}})
    assert refused.status == 400
    await candidate.pc.close()
    await asyncio.sleep(0)
