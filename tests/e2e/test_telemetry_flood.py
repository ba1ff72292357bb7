"""Finding 5 of issue 10: a flood of instant telemetry stays a handful of flags and
clips (merged, clips rate-limited), and the per-session event cap answers 429."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp.test_utils import TestClient

from proctor.config import Config
from signaling.keys import STORE_KEY
from tests.media import face_frame
from tests.peers import ScheduledVideoTrack, bearer, connect

STREAM_SECONDS = 8.0


async def test_five_posts_of_100_pastes_make_a_handful_of_flags_and_clips(
        client: TestClient, api_headers: dict[str, str], config: Config) -> None:
    created = await client.post("/api/v1/sessions", json={"candidate_id": "flood"},
                                headers=api_headers)
    session = await created.json()
    sid = session["session_id"]
    candidate = await connect(client, f"/api/v1/sessions/{sid}/offer",
                              session["candidate_token"], "proctor",
                              track=ScheduledVideoTrack([(STREAM_SECONDS, face_frame())],
                                                        duration=STREAM_SECONDS))
    await candidate.wait_for(lambda m: m.get("type") == "status" and m["faces"] == 1)
    token = bearer(session["candidate_token"])
    now_ms = 1_800_000_000_000
    for _ in range(5):
        events = [{"type": "paste", "time": now_ms} for _ in range(100)]
        response = await client.post(f"/api/v1/sessions/{sid}/events",
                                     json={"events": events, "sent_at": now_ms}, headers=token)
        assert response.status == 202
        await asyncio.sleep(0.2)
    await asyncio.sleep(3.0)  # past the clip's post-roll: it is written
    ended = await client.post(f"/api/v1/sessions/{sid}/end", headers=api_headers)
    assert ended.status == 200
    await candidate.pc.close()
    store = client.app[STORE_KEY]
    pastes = [f for f in await store.list_flags(sid) if f.kind == "paste"]
    assert 1 <= len(pastes) <= 3, pastes
    assert sum(f.evidence.metrics.get("count", 1) for f in pastes) == 500
    clips = await store.list_clips(sid)
    assert 1 <= len(clips) <= 2, clips
    files = list(Path(config.clips_dir).rglob("*.mp4"))
    assert 1 <= len(files) <= 2, files
    assert sum(p.stat().st_size for p in files) < 5_000_000
    assert len(await store.list_events(sid)) == 500  # every event is still kept


async def test_events_beyond_the_session_cap_answer_429(
        client: TestClient, api_headers: dict[str, str]) -> None:
    created = await client.post("/api/v1/sessions", json={"candidate_id": "cap"},
                                headers=api_headers)
    session = await created.json()
    path, token = f"/api/v1/sessions/{session['session_id']}/events", bearer(
        session["candidate_token"])
    events = [{"type": "paste", "time": 1} for _ in range(100)]
    statuses = []
    for _ in range(7):  # the default cap: 600 events a minute
        response = await client.post(path, json={"events": events}, headers=token)
        statuses.append(response.status)
    assert statuses == [202] * 6 + [429]
    assert int(response.headers["Retry-After"]) >= 1
    assert (await response.json())["error"]["code"] == "rate_limited"
