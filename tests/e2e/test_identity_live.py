"""Identity end to end: enroll a real photo, stream real faces over WebRTC, erase.

Two live sessions of one enrolled candidate (obama.jpg): one camera shows Biden, the
other another photo of Obama. Only the first may get ``identity_mismatch``; erasing the
candidate while both are live ends them and leaves nothing behind.
"""

from __future__ import annotations

import asyncio
from typing import Any

import cv2
from aiohttp.test_utils import TestClient

from proctor.config import Config
from proctor.detectors.identity import IdentityDetector
from signaling.keys import SESSIONS_KEY, STORE_KEY
from tests.detectors.photos import face_recognition_photo
from tests.detectors.webcam import RgbImage, webcam_frame
from tests.peers import ScheduledVideoTrack, connect

STREAM_SECONDS = 8.0


def _camera(client: TestClient, name: str) -> RgbImage:
    photo = face_recognition_photo(name)
    detector = next(d for d in client.app[SESSIONS_KEY].detectors
                    if isinstance(d, IdentityDetector))
    box = detector.embed(photo).box
    assert box is not None
    return webcam_frame(photo, box, face_px=170)


async def _live(client: TestClient, api_headers: dict[str, str],
                image: RgbImage) -> tuple[str, Any]:
    response = await client.post("/api/v1/sessions", json={"candidate_id": "alice"},
                                 headers=api_headers)
    session = await response.json()
    track = ScheduledVideoTrack([(STREAM_SECONDS, image)], duration=STREAM_SECONDS)
    peer = await connect(client, f"/api/v1/sessions/{session['session_id']}/offer",
                         session["candidate_token"], "proctor", track=track)
    return session["session_id"], peer


async def test_impostor_is_flagged_the_candidate_is_not_then_erased(
        client: TestClient, api_headers: dict[str, str], config: Config) -> None:
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(face_recognition_photo("obama.jpg"),
                                                 cv2.COLOR_RGB2BGR))
    assert ok
    enrolled = await client.post("/api/v1/candidates/alice/enrollment", data=jpeg.tobytes(),
                                 headers={**api_headers, "Content-Type": "image/jpeg"})
    assert enrolled.status == 201, await enrolled.text()

    impostor_sid, impostor = await _live(client, api_headers, _camera(client, "biden.jpg"))
    honest_sid, honest = await _live(client, api_headers, _camera(client, "obama2.jpg"))

    # moderate after 3 s of mismatch: checks at 0, 2 s (each held 1 s) → about 3 s in.
    flag = (await impostor.wait_for(
        lambda m: m.get("type") == "flag" and m["flag"]["kind"] == "identity_mismatch",
        timeout=STREAM_SECONDS))["flag"]
    assert flag["severity"] == "moderate" and flag["start"] < 1.0
    assert flag["source"].startswith("sface-2021dec-int8bq@")
    assert flag["evidence"]["metrics"] == {"max_identity_mismatch": 1.0}
    warning = await impostor.wait_for(lambda m: m.get("type") == "warning"
                                      and m["kind"] == "identity_mismatch")
    assert warning["message"]

    status = await honest.wait_for(lambda m: m.get("type") == "status"
                                   and "identity_similarity" in m["signals"])
    assert status["signals"]["identity_mismatch"] == 0.0
    assert status["signals"]["identity_similarity"] >= (
        config.detectors.identity.match_threshold)
    await asyncio.sleep(1.0)
    assert not [m for m in honest.messages if m.get("type") == "flag"
                and m["flag"]["kind"] == "identity_mismatch"]

    # Erasure while both sessions are live: they end, and nothing of theirs remains.
    response = await client.delete("/api/v1/candidates/alice", headers=api_headers)
    assert response.status == 200, await response.text()
    deleted = (await response.json())["deleted"]
    assert deleted["sessions"] == 2 and deleted["enrollment"] is True
    store = client.app[STORE_KEY]
    for sid in (impostor_sid, honest_sid):
        assert sid not in client.app[SESSIONS_KEY].sessions
        assert await store.get_session(sid) is None and await store.list_flags(sid) == []
        assert await store.list_clips(sid) == []
    assert not list(config.clips_dir.glob("*.mp4"))
    await impostor.pc.close()
    await honest.pc.close()
