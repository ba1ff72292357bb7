"""Every reference resolves: after a session ends, a flag that names a clip has a
playable clip behind it; a flag whose window held no video to cut a clip from (a
microphone-only session falling silent: ``audio_lost``) names none."""

from __future__ import annotations

from aiohttp.test_utils import TestClient

from tests.audio_media import noise
from tests.peers import RecordedAudioTrack, bearer, connect


async def test_no_flag_names_a_clip_that_never_comes(client: TestClient,
                                                     api_headers: dict[str, str]) -> None:
    response = await client.post("/api/v1/sessions", json={"candidate_id": "c-ref"},
                                 headers=api_headers)
    created = await response.json()
    sid = created["session_id"]
    # A microphone and no camera; after 0.5 s of noise it sends digital silence.
    candidate = await connect(client, f"/api/v1/sessions/{sid}/offer",
                              created["candidate_token"], "proctor",
                              audio=RecordedAudioTrack(noise(0.5, db=-30.0)))
    await candidate.wait_for(lambda m: m.get("type") == "flag"
                             and m["flag"]["kind"] == "audio_lost", timeout=20)
    assert (await client.post(f"/api/v1/sessions/{sid}/end", headers=api_headers)).status == 200
    flags = (await (await client.get(f"/api/v1/sessions/{sid}/flags",
                                     headers=api_headers)).json())["flags"]
    lost = [f for f in flags if f["kind"] == "audio_lost"]
    assert lost and lost[0]["evidence"]["clip_id"] is None  # no video: nothing to cut
    for flag in flags:
        clip_id = flag["evidence"]["clip_id"]
        if clip_id is not None:
            clip = await client.get(f"/api/v1/clips/{clip_id}",
                                    headers=bearer(created["proctor_token"]))
            assert clip.status == 200, (flag["kind"], await clip.text())
    await candidate.pc.close()
