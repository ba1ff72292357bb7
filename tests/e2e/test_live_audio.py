"""Sound over a real aiortc peer: the transcript, and a muted microphone."""

from __future__ import annotations

from aiohttp.test_utils import TestClient

from proctor.transcript.wer import word_error_rate
from tests.audio_media import concat, librivox_clips, silence
from tests.media import empty_frame
from tests.peers import RecordedAudioTrack, ScheduledVideoTrack, connect

MUTED_SECONDS = 7.0


async def test_speech_is_transcribed_and_a_muted_mic_flagged(
        client: TestClient, api_headers: dict[str, str]) -> None:
    speech, reference = librivox_clips()[0]
    spoken = len(speech) / 16_000
    total = spoken + MUTED_SECONDS
    created = await (await client.post("/api/v1/sessions", json={"candidate_id": "voice"},
                                       headers=api_headers)).json()
    sid = created["session_id"]
    # An empty room on camera: no lips to judge, so the voice alone says who speaks.
    candidate = await connect(
        client, f"/api/v1/sessions/{sid}/offer", created["candidate_token"], "proctor",
        track=ScheduledVideoTrack([(total, empty_frame())], duration=total + 1),
        audio=RecordedAudioTrack(concat(speech, silence(MUTED_SECONDS))))
    lost = await candidate.wait_for(lambda m: m.get("type") == "flag"
                                    and m["flag"]["kind"] == "audio_lost", timeout=total + 8)
    assert lost["flag"]["start"] >= spoken - 0.5
    response = await client.post(f"/api/v1/sessions/{sid}/end", headers=api_headers)
    report_summary = await response.json()
    assert response.status == 200, report_summary
    transcript = await (await client.get(f"/api/v1/sessions/{sid}/transcript",
                                         headers=api_headers)).json()
    assert transcript["segments"] and transcript["segments"][0]["start"] < 1.5
    assert word_error_rate(reference, transcript["text"]) < 0.35
    report = await (await client.get(f"/api/v1/sessions/{sid}/report",
                                     headers=api_headers)).json()
    assert report["transcript"]["text"] == transcript["text"]
    kinds = {f["kind"] for f in report["flags"]}
    assert "multiple_speakers" not in kinds and "whispering" not in kinds
    await candidate.pc.close()
