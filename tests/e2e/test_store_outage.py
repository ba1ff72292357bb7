"""Nothing is lost when the database fails: a live session through a PostgreSQL outage.

A real aiortc candidate streams a real face (which then leaves) and real speech to a
server whose store is a private PostgreSQL server (tests/pgserver.py). The server is
stopped (``pg_ctl stop -m immediate``, like a crash) for ``OUTAGE_SECONDS`` (the issue's
60 s; ``STORE_OUTAGE_TEST_SECONDS`` shortens it for a quick run) while the face is
gone. Meanwhile analysis goes on: ``face_absent`` opens and rises on the candidate's
channel, telemetry is accepted, speech is transcribed, and ``/readyz`` answers 503
saying the store is away and how many records wait in the outbox (``/metrics`` too).
Once the server is back the outbox replays, and every flag, event and transcript row
is in the database exactly once; the session ends normally with a report that holds
them all; a webhook registered before the outage hears of every flag event that
happened during it, once each, stamped with when it happened. A second test shuts
``proctor serve`` down during an outage: the next start replays its outbox before it
finishes the session it held.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from proctor.transcript.wer import word_error_rate
from signaling.app import create_app
from tests.audio_media import concat, librivox_clips, noise
from tests.conftest import make_config
from tests.e2e.conftest import start_server, stop_server
from tests.e2e.remote import call, face_then_empty, peer, wait_until
from tests.media import empty_frame, face_frame
from tests.outbound.receiver import Receiver
from tests.peers import ClientPeer, RecordedAudioTrack, ScheduledVideoTrack, bearer, connect
from tests.pgserver import PrivatePostgres, new_schema, schema_url

OUTAGE_SECONDS = float(os.environ.get("STORE_OUTAGE_TEST_SECONDS", "60"))
FACE_SECONDS = 20.0  # the face leaves then: after the outage has begun
LATER_SPEECH_AT = 24.0  # a sentence spoken while the database is away
SESSION_SECONDS = OUTAGE_SECONDS + 240.0  # the media outlasts the test


@pytest.fixture(scope="module")
def private_pg() -> Iterator[PrivatePostgres]:
    with PrivatePostgres() as pg:
        yield pg


@pytest.fixture
async def outage_client(private_pg: PrivatePostgres, tmp_path: Path,
                        aiohttp_client: Callable[..., Awaitable[TestClient]]
                        ) -> tuple[TestClient, str]:
    schema = new_schema()
    # A light pipeline (no object detector, 3 fps) keeps a busy test machine from
    # deferring transcription, so speech during the outage is transcribed during it.
    config = make_config(tmp_path, store=schema_url(schema, private_pg.url),
                         outbox={"retry_seconds": 0.5}, pipeline={"analysis_fps": 3.0},
                         detectors={"objects": {"enabled": False}})
    return await aiohttp_client(create_app(config)), schema


def _media() -> tuple[ScheduledVideoTrack, RecordedAudioTrack, str, str]:
    (first, first_text), _, (later, later_text), *_ = librivox_clips()
    quiet_until_later = LATER_SPEECH_AT - len(first) / 16_000
    audio = concat(first, noise(quiet_until_later), later, noise(SESSION_SECONDS))
    video = ScheduledVideoTrack([(FACE_SECONDS, face_frame()), (SESSION_SECONDS, empty_frame())],
                                fps=10)
    return video, RecordedAudioTrack(audio), first_text, later_text


async def _get(client: TestClient, path: str, headers: dict[str, str],
               status: int = 200) -> Any:
    response = await client.get(path, headers=headers)
    assert response.status == status, f"GET {path}: {response.status} {await response.text()}"
    return await response.json()


async def _post_events(client: TestClient, sid: str, token: str, *types: str) -> None:
    now = time.time() * 1000
    response = await client.post(f"/api/v1/sessions/{sid}/events", headers=bearer(token),
                                 json={"events": [{"type": t, "time": now} for t in types],
                                       "sent_at": now})
    assert response.status == 202, await response.text()


async def _outbox_depth_metric(client: TestClient) -> float:
    text = await (await client.get("/metrics")).text()
    found = re.search(r"^proctor_store_outbox_depth (\S+)$", text, re.MULTILINE)
    assert found, "no proctor_store_outbox_depth in /metrics"
    return float(found.group(1))


def _last_states(peer: ClientPeer) -> dict[str, dict[str, Any]]:
    """Each flag the candidate heard of, in the last state it heard."""
    return {m["flag"]["flag_id"]: m["flag"] for m in peer.of_type("flag")}


async def _rows(url: str, schema: str, sql: str, *args: Any) -> list[Any]:
    conn = await asyncpg.connect(url, server_settings={"search_path": schema})
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def test_a_postgresql_outage_mid_session_loses_nothing(
        outage_client: tuple[TestClient, str], private_pg: PrivatePostgres,
        api_headers: dict[str, str]) -> None:
    client, schema = outage_client
    receiver = await Receiver().start()
    hook = await client.post("/api/v1/webhooks", json={"url": receiver.url,
                                                        "events": ["flag.opened", "flag.raised"]},
                             headers=api_headers)
    assert hook.status == 201, await hook.text()
    created = await (await client.post("/api/v1/sessions", json={"candidate_id": "c-outage"},
                                       headers=api_headers)).json()
    sid, token = created["session_id"], created["candidate_token"]
    video, audio, first_text, later_text = _media()
    candidate = await connect(client, f"/api/v1/sessions/{sid}/offer", token, "proctor",
                              track=video, audio=audio)
    await _post_events(client, sid, token, "tab_hidden", "tab_visible")
    # The first sentence said (media time 7.1 s) and the face still there.
    status = await candidate.wait_for(lambda m: m.get("type") == "status"
                                      and m["media_time"] >= 9.0, timeout=20)
    assert status["faces"] == 1 and status["media_time"] < FACE_SECONDS - 3, status

    await asyncio.to_thread(private_pg.stop)  # the database crashes
    down_at, down_wall = time.monotonic(), time.time()
    try:
        # Live analysis goes on: the face leaves, and the candidate hears of it.
        absent = await candidate.wait_for(lambda m: m.get("type") == "flag"
                                          and m["flag"]["kind"] == "face_absent",
                                          timeout=FACE_SECONDS + 15)
        await candidate.wait_for(lambda m: m.get("type") == "warning"
                                 and m["kind"] == "face_absent", timeout=5)
        await _post_events(client, sid, token, "window_blur", "window_focus")
        ready = await _get(client, "/readyz", {}, status=503)
        assert ready["ready"] is False
        assert ready["checks"]["store"].startswith("unavailable")
        assert ready["outbox"]["depth"] >= 3  # the flag and the two events, at least
        assert ready["checks"]["outbox"] == f"{ready['outbox']['depth']} records wait for the store"
        assert await _outbox_depth_metric(client) >= 3
        await candidate.wait_for(lambda m: m.get("type") == "flag"
                                 and m["flag"]["flag_id"] == absent["flag"]["flag_id"]
                                 and m["flag"]["severity"] == "high", timeout=15)
        await asyncio.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - down_at)))
        during = (await _get(client, "/readyz", {}, status=503))["outbox"]["depth"]
    finally:
        await asyncio.to_thread(private_pg.start)  # back, on the same port and data

    async def replayed() -> bool:
        response = await client.get("/readyz")
        body = await response.json()
        return response.status == 200 and body["outbox"]["depth"] == 0

    await wait_until(replayed, 60, "the outbox replayed and /readyz ready")
    up_wall = time.time()
    assert await _outbox_depth_metric(client) == 0
    heard = _last_states(candidate)
    ended = await client.post(f"/api/v1/sessions/{sid}/end", headers=api_headers)
    summary = await ended.json()
    assert ended.status == 200, summary
    await asyncio.sleep(0.3)  # the closing flag messages reach the candidate
    heard.update(_last_states(candidate))
    await candidate.pc.close()
    report_path = f"/api/v1/sessions/{sid}/report"

    async def transcript_complete() -> bool:  # a busy machine may defer it to the end
        return bool((await _get(client, report_path, api_headers))["transcript"]["complete"])

    await wait_until(transcript_complete, 120, "the report's transcript complete")

    # Every flag the candidate heard of is stored, once, in its last state.
    stored = {f["flag_id"]: f for f in
              (await _get(client, f"/api/v1/sessions/{sid}/flags", api_headers))["flags"]}
    assert set(stored) == set(heard) and absent["flag"]["flag_id"] in stored
    for flag_id, flag in stored.items():
        assert (flag["kind"], flag["severity"], flag["start"]) == (
            heard[flag_id]["kind"], heard[flag_id]["severity"], heard[flag_id]["start"])
        assert flag["end"] is not None
    assert stored[absent["flag"]["flag_id"]]["severity"] == "high"

    # The database itself: each row once.
    url = private_pg.url
    flag_rows = await _rows(url, schema, "SELECT flag_id FROM flags WHERE session_id = $1", sid)
    assert sorted(r["flag_id"] for r in flag_rows) == sorted(heard)
    events = await _rows(url, schema, "SELECT type FROM events WHERE session_id = $1 "
                         "ORDER BY received_at, event_id", sid)
    assert sorted(r["type"] for r in events) == sorted(
        ["tab_hidden", "tab_visible", "window_blur", "window_focus"])
    segments = await _rows(url, schema, "SELECT media_start, media_end, text FROM transcripts "
                           "WHERE session_id = $1 ORDER BY media_start", sid)
    spans = [(r["media_start"], r["media_end"]) for r in segments]
    assert len(spans) == len(set(spans)) >= 2  # the sentence said during the outage too
    later = " ".join(r["text"] for r in segments if r["media_start"] >= LATER_SPEECH_AT - 1)
    assert word_error_rate(later_text, later) < 0.35, later

    # The report is built from all of it.
    report = await _get(client, report_path, api_headers)
    assert {f["flag_id"] for f in report["flags"]} == set(stored)
    assert report["recommendation"] != "PASS"
    assert summary["status"] == "ended" and summary["recommendation"] == report["recommendation"]
    spoken = f"{first_text} {later_text}"  # both sentences, once each
    assert word_error_rate(spoken, report["transcript"]["text"]) < 0.35
    for flag in report["flags"]:  # every clip named is there to be played
        if flag["evidence"]["clip_id"]:
            response = await client.get(f"/api/v1/clips/{flag['evidence']['clip_id']}",
                                        headers=api_headers)
            assert response.status == 200
    assert during >= 3  # still waiting at the end of the outage: nothing was dropped

    # The flag events of the outage reached the webhook afterwards, once each, as they
    # were when they happened.
    try:
        await receiver.wait_for(2, timeout=30)  # face_absent opened, then raised
        await asyncio.sleep(0.5)
    finally:
        await receiver.close()
    outage_events = [r.event for r in receiver.received
                     if r.event["data"]["flag"]["flag_id"] == absent["flag"]["flag_id"]]
    assert sorted(e["type"] for e in outage_events) == ["flag.opened", "flag.raised"]
    event_ids = [r.event_id for r in receiver.received]
    assert len(event_ids) == len(set(event_ids))
    for event in outage_events:
        at = datetime.fromisoformat(event["created_at"].replace("Z", "+00:00")).timestamp()
        assert down_wall <= at <= up_wall, event


async def test_a_restart_replays_what_the_outbox_kept_before_finishing_the_session(
        private_pg: PrivatePostgres, tmp_path: Path) -> None:
    """``proctor serve`` shut down while PostgreSQL is away: the flags it raised meanwhile
    wait in its outbox, and the next start replays them before it finishes the session
    it held (interrupted), so its report has them."""
    schema = new_schema()
    api_key = secrets.token_urlsafe(24)
    settings = {"STORE": schema_url(schema, private_pg.url), "NODES__ID": "solo",
                "OUTBOX__RETRY_SECONDS": "0.5", "RTC__MAX_SESSIONS": "2",
                "DETECTORS__TRANSCRIPTION__ENABLED": "false",
                "DETECTORS__OBJECTS__ENABLED": "false"}
    server, process = start_server(tmp_path, api_key, **settings)
    async with aiohttp.ClientSession() as http:
        try:
            created = await call(http, server, "POST", "/api/v1/sessions",
                                 body={"candidate_id": "c-restart"}, status=201)
            sid = created["session_id"]
            candidate = await peer(http, server, f"/api/v1/sessions/{sid}/offer",
                                   created["candidate_token"], "proctor", face_then_empty())
            await candidate.wait_for(lambda m: m.get("type") == "status"
                                     and m["faces"] == 1, timeout=20)
            await asyncio.to_thread(private_pg.stop)
            absent = await candidate.wait_for(lambda m: m.get("type") == "flag"
                                              and m["flag"]["kind"] == "face_absent",
                                              timeout=20)
            ready = await call(http, server, "GET", "/readyz", status=503)
            assert ready["outbox"]["depth"] >= 1
        finally:
            await asyncio.to_thread(stop_server, process)  # SIGTERM: a clean shutdown
            await asyncio.to_thread(private_pg.start)
        assert process.returncode == 0, server.log_tail()  # it did not need killing
        assert "replayed at the next start" in server.log_tail(20_000)
        await candidate.pc.close()

        server, process = start_server(tmp_path, api_key, **settings)
        try:
            ready = await call(http, server, "GET", "/readyz")
            assert ready["outbox"]["depth"] == 0
            record = await call(http, server, "GET", f"/api/v1/sessions/{sid}")
            assert record["status"] == "interrupted"
            report = await call(http, server, "GET", f"/api/v1/sessions/{sid}/report")
            flags = {f["flag_id"]: f for f in report["flags"]}
            replayed = flags[absent["flag"]["flag_id"]]  # never stored before the restart
            assert replayed["kind"] == "face_absent" and replayed["end"] is not None
            assert replayed["end"] > replayed["start"]
            assert report["recommendation"] != "PASS"
            rows = await _rows(private_pg.url, schema,
                               "SELECT flag_id FROM flags WHERE session_id = $1", sid)
            assert sorted(r["flag_id"] for r in rows) == sorted(flags)
        finally:
            stop_server(process)
