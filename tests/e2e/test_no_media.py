"""A candidate whose peer connects, with a camera and a microphone track, but never sends
one frame of either: losing the media from the start raises ``video_lost`` and
``audio_lost`` by the same rule and thresholds as media that stopped (SPEC: video ≥ 3 s
moderate, ≥ 10 s high; audio ≥ 5 s moderate, ≥ 15 s high), on the candidate's channel
and in the store."""

from __future__ import annotations

import asyncio
from typing import Any

import av
from aiohttp.test_utils import TestClient
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack

from tests.peers import ClientPeer, connect


class NeverVideoTrack(VideoStreamTrack):
    """A negotiated track whose source never produces a frame (a dead camera)."""

    async def recv(self) -> av.VideoFrame:
        await asyncio.Event().wait()  # waits until the peer closes and cancels it
        raise AssertionError("unreachable")


class NeverAudioTrack(AudioStreamTrack):
    """A microphone track that never produces a frame."""

    async def recv(self) -> av.AudioFrame:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


def _opened(kind: str, severity: str) -> Any:
    return lambda m: (m.get("type") == "flag" and m["flag"]["kind"] == kind
                      and m["flag"]["severity"] == severity)


async def test_media_that_never_arrives_is_lost_media(client: TestClient,
                                                      api_headers: dict[str, str]) -> None:
    created = await (await client.post("/api/v1/sessions", json={"candidate_id": "c-dead"},
                                       headers=api_headers)).json()
    sid = created["session_id"]
    candidate: ClientPeer = await connect(
        client, f"/api/v1/sessions/{sid}/offer", created["candidate_token"], "proctor",
        track=NeverVideoTrack(), audio=NeverAudioTrack())
    try:
        video = await candidate.wait_for(_opened("video_lost", "moderate"), timeout=15)
        assert video["flag"]["end"] is None and video["flag"]["source"] == "peer-connection"
        warning = await candidate.wait_for(lambda m: m.get("type") == "warning"
                                           and m["kind"] == "video_lost", timeout=5)
        assert warning["severity"] == "moderate"
        audio = await candidate.wait_for(_opened("audio_lost", "moderate"), timeout=15)
        # The same thresholds: it rises to high after 10 s (video) and 15 s (audio).
        high_video = await candidate.wait_for(_opened("video_lost", "high"), timeout=20)
        high_audio = await candidate.wait_for(_opened("audio_lost", "high"), timeout=20)
        assert high_video["flag"]["flag_id"] == video["flag"]["flag_id"]
        assert high_audio["flag"]["flag_id"] == audio["flag"]["flag_id"]
        status = await candidate.wait_for(lambda m: m.get("type") == "status"
                                          and "video_lost" in m["open_flags"], timeout=5)
        assert status["faces"] is None  # no frame was ever analysed
    finally:
        await candidate.pc.close()

    flags = (await (await client.get(f"/api/v1/sessions/{sid}/flags",
                                     headers=api_headers)).json())["flags"]
    stored = {f["kind"]: f for f in flags}
    assert stored["video_lost"]["flag_id"] == video["flag"]["flag_id"]
    assert stored["video_lost"]["severity"] == "high"
    assert stored["audio_lost"]["severity"] == "high"
    # Lost from the start: media time 0 is when the video timeout (1 s) lapsed with no
    # frame since going live; audio is lost once its own timeout (2 s) lapsed too, as
    # the next status tick (1 s) sees.
    assert stored["video_lost"]["start"] == 0.0
    assert 0.0 <= stored["audio_lost"]["start"] < 3.0
    ended = await client.post(f"/api/v1/sessions/{sid}/end", headers=api_headers)
    report = await ended.json()
    assert ended.status == 200, report
    kinds = {f["kind"] for f in (await (await client.get(
        f"/api/v1/sessions/{sid}/report", headers=api_headers)).json())["flags"]}
    assert {"video_lost", "audio_lost"} <= kinds
    assert report["recommendation"] != "PASS"
