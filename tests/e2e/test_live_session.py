"""The live path end to end, in one process, with real parts only.

A real aiortc client peer streams video built from real photos (a face, then no face,
then two faces) to the real app; the real MediaPipe model watches it. Flags must
arrive on the candidate's ``proctor`` channel and the proctor's ``alerts`` channel with
the right kind, severity and media times, be in the store, and have clips that decode
and cover the flag with its padding.
"""

from __future__ import annotations

import asyncio
import io
from typing import Any

import av
import pytest
from aiohttp.test_utils import TestClient

from proctor.config import Config
from signaling.keys import STORE_KEY
from tests.media import empty_frame, face_frame, two_faces_frame
from tests.peers import ScheduledVideoTrack, bearer, connect

# The schedule, in media seconds: what the camera shows until when.
# After two people, 6 s of one face: multiple_faces closes once people have been counted
# again (its gap_seconds, 4.5 s) and the video still flows.
FACE_UNTIL, EMPTY_UNTIL, FACE_AGAIN_UNTIL, TWO_UNTIL, STREAM_SECONDS = 2.0, 6.6, 8.0, 10.6, 16.6
# Analysis samples the newest frame at 5 fps: a flag starts at the first analysed frame
# of its scene and ends at the last one, so it lies inside the scene, within a few
# analysis slots (more on a loaded machine) of its edges.
EDGE_SLACK = 0.8


def _within_scene(flag: dict[str, Any], scene_start: float, scene_end: float) -> None:
    assert scene_start - 0.05 <= flag["start"] <= scene_start + EDGE_SLACK, flag
    assert scene_end - EDGE_SLACK <= flag["end"] <= scene_end + 0.05, flag


async def _create_session(client: TestClient, api_headers: dict[str, str]) -> dict[str, Any]:
    response = await client.post("/api/v1/sessions", json={"candidate_id": "cand-1"},
                                 headers=api_headers)
    assert response.status == 201
    return dict(await response.json())


def _flag_messages(messages: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [m["flag"] for m in messages if m.get("type") == "flag" and m["flag"]["kind"] == kind]


async def test_flags_reach_both_channels_store_and_clips(
        client: TestClient, api_headers: dict[str, str], config: Config) -> None:
    session = await _create_session(client, api_headers)
    sid = session["session_id"]
    watcher = await connect(client, "/api/v1/watch/offer", session["proctor_token"], "alerts")
    schedule = [(FACE_UNTIL, face_frame()), (EMPTY_UNTIL, empty_frame()),
                (FACE_AGAIN_UNTIL, face_frame()), (TWO_UNTIL, two_faces_frame()),
                (STREAM_SECONDS, face_frame())]
    track = ScheduledVideoTrack(schedule, duration=STREAM_SECONDS)
    candidate = await connect(client, f"/api/v1/sessions/{sid}/offer",
                              session["candidate_token"], "proctor", track=track)

    closed = lambda kind: lambda m: (m.get("type") == "flag"  # noqa: E731
                                     and m["flag"]["kind"] == kind and m["flag"]["end"])
    await candidate.wait_for(closed("multiple_faces"), timeout=STREAM_SECONDS + 5)
    await watcher.wait_for(closed("multiple_faces"), timeout=5)
    await candidate.wait_for(lambda m: m.get("type") == "status" and m["faces"] == 1)
    await candidate.wait_for(lambda m: m.get("type") == "status"  # the whole recording is in
                             and m["media_time"] >= STREAM_SECONDS - 0.3, timeout=5)

    response = await client.post(f"/api/v1/sessions/{sid}/end", headers=api_headers)
    assert response.status == 200
    assert (await client.post(f"/api/v1/sessions/{sid}/end", headers=api_headers)).status == 200

    absent = _flag_messages(candidate.messages, "face_absent")
    assert absent[0]["severity"] == "moderate" and absent[0]["end"] is None  # opened live
    _within_scene(absent[-1], FACE_UNTIL, EMPTY_UNTIL)
    assert {f["severity"] for f in absent} == {"moderate"}  # 4.6 s: never the 8 s high
    multiple = _flag_messages(candidate.messages, "multiple_faces")
    assert {f["severity"] for f in multiple} == {"high"}
    _within_scene(multiple[-1], FACE_AGAIN_UNTIL, TWO_UNTIL)
    assert {w["kind"] for w in candidate.of_type("warning")} >= {"face_absent",
                                                                 "multiple_faces"}

    # The proctor saw the same flags, tagged with the session.
    for kind, sent in (("face_absent", absent), ("multiple_faces", multiple)):
        seen = _flag_messages(watcher.messages, kind)
        assert seen and all(m["session_id"] == sid for m in watcher.of_type("flag"))
        assert seen[-1] == sent[-1]

    stored = (await (await client.get(f"/api/v1/sessions/{sid}/flags",
                                      headers=api_headers)).json())["flags"]
    assert sorted(f["kind"] for f in stored) == ["face_absent", "multiple_faces"], stored
    for flag in stored:
        live = absent[-1] if flag["kind"] == "face_absent" else multiple[-1]
        assert flag.pop("review") is None  # nobody has reviewed it yet
        assert flag == live
        await _check_clip(client, session["proctor_token"], flag, config)
    await candidate.pc.close()
    await watcher.pc.close()


async def _check_clip(client: TestClient, token: str, flag: dict[str, Any],
                      config: Config) -> None:
    clip_id = flag["evidence"]["clip_id"]
    response = await client.get(f"/api/v1/clips/{clip_id}", headers=bearer(token))
    assert response.status == 200
    assert response.headers["Content-Type"] == "video/mp4"
    with av.open(io.BytesIO(await response.read())) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        frames = list(container.decode(video=0))
    assert frames[0].format.name == "yuv420p"
    record = await client.app[STORE_KEY].get_clip(clip_id)
    assert record is not None and record.flag_id == flag["flag_id"]
    pre, post = config.evidence.pre_seconds, config.evidence.post_seconds
    assert record.start <= max(0.0, flag["start"] - pre) + 0.1
    assert record.end >= min(flag["end"] + post, STREAM_SECONDS) - 0.2
    decoded_span = float(frames[-1].time - frames[0].time)
    assert decoded_span == pytest.approx(record.end - record.start, abs=0.15)


async def test_junk_on_the_candidate_channel_gets_an_error(
        client: TestClient, api_headers: dict[str, str]) -> None:
    session = await _create_session(client, api_headers)
    candidate = await connect(client, f"/api/v1/sessions/{session['session_id']}/offer",
                              session["candidate_token"], "proctor",
                              track=ScheduledVideoTrack([(1.0, face_frame())], duration=3))
    channel = candidate.channel  # type: ignore[attr-defined]
    for junk in ("not json", "[1, 2]", '{"no": "type"}', '{"type": "nonsense"}'):
        channel.send(junk)
    channel.send(b"\x00\x01")
    errors = []
    for _ in range(60):
        errors = candidate.of_type("error")
        if len(errors) == 5:
            break
        await asyncio.sleep(0.05)
    assert len(errors) == 5
    assert all(e["error"]["code"] == "bad_message" for e in errors)
    channel.send('{"type": "ping"}')
    await candidate.wait_for(lambda m: m.get("type") == "pong")
    await candidate.pc.close()


async def test_browser_telemetry_becomes_flags(client: TestClient,
                                               api_headers: dict[str, str]) -> None:
    session = await _create_session(client, api_headers)
    sid = session["session_id"]
    candidate = await connect(client, f"/api/v1/sessions/{sid}/offer",
                              session["candidate_token"], "proctor",
                              track=ScheduledVideoTrack([(8.0, face_frame())], duration=8))
    await candidate.wait_for(lambda m: m.get("type") == "status" and m["faces"] == 1)
    events_path, token = f"/api/v1/sessions/{sid}/events", bearer(session["candidate_token"])

    async def send(*types: str) -> None:
        now_ms = 1_800_000_000_000
        events = [{"type": t, "time": now_ms} for t in types]
        response = await client.post(events_path, json={"events": events, "sent_at": now_ms},
                                     headers=token)
        assert response.status == 202

    await send("paste", "tab_hidden")
    await asyncio.sleep(1.5)
    await send("tab_visible")
    hidden = await candidate.wait_for(lambda m: m.get("type") == "flag"
                                      and m["flag"]["kind"] == "tab_hidden"
                                      and m["flag"]["end"] is not None)
    assert hidden["flag"]["severity"] == "moderate"  # hidden 1.5 s: under the 10 s high
    assert hidden["flag"]["end"] - hidden["flag"]["start"] == pytest.approx(1.5, abs=0.3)
    pasted = await candidate.wait_for(lambda m: m.get("type") == "flag"
                                      and m["flag"]["kind"] == "paste"
                                      and m["flag"]["end"] is not None)
    assert pasted["flag"]["start"] == pasted["flag"]["end"]
    assert pasted["flag"]["source"] == "browser-telemetry"
    await client.post(f"/api/v1/sessions/{sid}/end", headers=api_headers)
    kinds = {f["kind"] for f in (await (await client.get(
        f"/api/v1/sessions/{sid}/flags", headers=api_headers)).json())["flags"]}
    assert kinds == {"paste", "tab_hidden"}
    await candidate.pc.close()
