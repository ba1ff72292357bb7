"""A proctor's live picture: ``POST /watch/offer`` with ``video`` relays the candidate's
video and sound to the watcher's peer; ``{"type": "watch"}`` switches sessions; an exam
token also covers sessions created after the watcher connected."""

from __future__ import annotations

import json
from typing import Any

from aiohttp.test_utils import TestClient

from tests.e2e.remote import first_video_frame
from tests.media import HEIGHT, WIDTH, face_frame
from tests.peers import ClientPeer, ScheduledVideoTrack, bearer, connect, open_peer, poster


async def _session(client: TestClient, api_headers: dict[str, str],
                   exam_id: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"candidate_id": "c-video"}
    if exam_id:
        body["exam_id"] = exam_id
    response = await client.post("/api/v1/sessions", json=body, headers=api_headers)
    assert response.status == 201
    return dict(await response.json())


async def _watch_with_video(client: TestClient, token: str, video: str) -> ClientPeer:
    return await open_peer(poster(client, "/api/v1/watch/offer", token), "alerts",
                           body={"video": video}, receive=True)


async def test_a_watcher_sees_the_candidate_live(client: TestClient,
                                                 api_headers: dict[str, str]) -> None:
    exam = "exam-live-video"
    first = await _session(client, api_headers, exam)
    token_response = await client.post("/api/v1/proctor-tokens", headers=api_headers,
                                       json={"exam_id": exam})
    assert token_response.status == 201
    exam_token = (await token_response.json())["proctor_token"]
    candidate = await connect(client, f"/api/v1/sessions/{first['session_id']}/offer",
                              first["candidate_token"], "proctor",
                              track=ScheduledVideoTrack([(60.0, face_frame())], fps=10))
    watcher = await _watch_with_video(client, exam_token, first["session_id"])
    frame = await first_video_frame(watcher.tracks)
    assert (frame.width, frame.height) == (WIDTH, HEIGHT)

    # A session of the exam created after the watcher connected is watched too, and the
    # picture switches to it once it is live.
    later = await _session(client, api_headers, exam)
    await watcher.wait_for(lambda m: m.get("type") == "session"
                           and m["session_id"] == later["session_id"], timeout=5)
    second = await connect(client, f"/api/v1/sessions/{later['session_id']}/offer",
                           later["candidate_token"], "proctor",
                           track=ScheduledVideoTrack([(60.0, face_frame())], fps=10))
    await watcher.wait_for(lambda m: m.get("type") == "status"
                           and m.get("session_id") == later["session_id"], timeout=10)
    watcher.channel.send(json.dumps({"type": "watch", "video": later["session_id"]}))  # type: ignore[attr-defined]
    switched = await watcher.wait_for(lambda m: m.get("type") == "watch", timeout=5)
    assert switched["status"] == "relaying"
    other = await _session(client, api_headers)  # not in the exam
    watcher.channel.send(json.dumps({"type": "watch", "video": other["session_id"]}))  # type: ignore[attr-defined]
    await watcher.wait_for(lambda m: m.get("type") == "error", timeout=5)

    # A token that does not cover a session cannot ask for its picture.
    denied = await client.post("/api/v1/watch/offer", headers=bearer(first["proctor_token"]),
                               json={"sdp": "v=0", "type": "offer",
                                     "video": later["session_id"]})
    assert denied.status == 403
    for peer in (candidate, second, watcher):
        await peer.pc.close()
