"""Two real ``proctor serve`` nodes on a PostgreSQL and a Redis this test owns.

The candidate's media reaches node A; a proctor watches from node B, where the flags
arrive through Redis; the session is ended on B (routed to its owner A) and its clips
are fetched from B (``clips: store``). Then A is killed with SIGKILL while a second
session is live on it, and B marks that session ``interrupted`` within 30 s.
"""

from __future__ import annotations

import secrets
import signal
import subprocess
import time
from collections.abc import Iterator

import aiohttp
import pytest

from tests.e2e.conftest import Server, start_server, stop_server
from tests.e2e.remote import (
    call,
    face_then_empty,
    first_video_frame,
    peer,
    video_watcher,
    wait_until,
)
from tests.pgserver import PrivatePostgres
from tests.redisserver import PrivateRedis

HEARTBEAT_SECONDS = "1"
DEAD_AFTER_SECONDS = "5"


@pytest.fixture(scope="module")
def backends(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    postgres = PrivatePostgres()
    redis = PrivateRedis(tmp_path_factory.mktemp("redis"))
    postgres.start()
    redis.start()
    try:
        yield postgres.url, redis.url
    finally:
        redis.stop()
        postgres.cleanup()


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory,
          backends: tuple[str, str]) -> Iterator[list[tuple[Server, subprocess.Popen[bytes]]]]:
    store_url, bus_url = backends
    api_key = secrets.token_urlsafe(24)
    shared = {"STORE": store_url, "BUS": bus_url, "CLIPS": "store",
              "AUTH__TOKEN_SECRET": secrets.token_hex(32),
              "NODES__HEARTBEAT_SECONDS": HEARTBEAT_SECONDS,
              "NODES__DEAD_AFTER_SECONDS": DEAD_AFTER_SECONDS,
              "RTC__MAX_SESSIONS": "4",
              "DETECTORS__TRANSCRIPTION__ENABLED": "false"}
    started = []
    try:
        for name in ("a", "b"):
            started.append(start_server(tmp_path_factory.mktemp(f"node-{name}"), api_key,
                                        NODES__ID=f"node-{name}", **shared))
        yield started
    finally:
        for _, process in started:
            stop_server(process)


async def test_two_nodes_one_deployment(
        nodes: list[tuple[Server, subprocess.Popen[bytes]]]) -> None:
    (a, a_process), (b, _) = nodes
    async with aiohttp.ClientSession() as http:
        listed = await call(http, b, "GET", "/api/v1/nodes")
        assert {n["node_id"] for n in listed["nodes"] if n["alive"]} == {"node-a", "node-b"}

        created = await call(http, a, "POST", "/api/v1/sessions",
                              body={"candidate_id": "cand-1"}, status=201)
        sid = created["session_id"]
        watcher = await peer(http, b, "/api/v1/watch/offer", created["proctor_token"],
                              "alerts")
        candidate = await peer(http, a, f"/api/v1/sessions/{sid}/offer",
                                created["candidate_token"], "proctor", face_then_empty())
        try:
            # The face leaves at 2 s: face_absent opens on A and reaches B's watcher.
            flag = await watcher.wait_for(
                lambda m: m.get("type") == "flag" and m["flag"]["kind"] == "face_absent",
                timeout=30)
            assert flag["session_id"] == sid
            summary = await call(http, b, "GET", f"/api/v1/sessions/{sid}")
            assert summary["status"] == "live" and summary["node"] == "node-a"
            assert summary["risk"] is not None  # asked of the owner, A, through the bus
            # Telemetry posted to B is fed to the owner's flag tracker on A.
            now_ms = time.time() * 1000
            await call(http, b, "POST", f"/api/v1/sessions/{sid}/events",
                       created["candidate_token"],
                       {"events": [{"type": "paste", "time": now_ms}], "sent_at": now_ms},
                       status=202)
            pasted = await watcher.wait_for(
                lambda m: m.get("type") == "flag" and m["flag"]["kind"] == "paste", timeout=10)
            assert pasted["flag"]["start"] > 0  # placed on A's media clock
            # A live picture asked of B is relayed by A, the media's node.
            viewer = await video_watcher(http, b, created["proctor_token"], sid)
            frame = await first_video_frame(viewer.tracks)
            assert frame.width == 640
            await viewer.pc.close()
            # Any node answers a candidate: a reconnect offered to B reaches A.
            again = await peer(http, b, f"/api/v1/sessions/{sid}/offer",
                                created["candidate_token"], "proctor", face_then_empty())
            await again.pc.close()
        finally:
            await candidate.pc.close()
        ended = await call(http, b, "POST", f"/api/v1/sessions/{sid}/end")
        assert ended["status"] == "ended"
        report = await call(http, b, "GET", f"/api/v1/sessions/{sid}/report")
        kinds = {f["kind"] for f in report["flags"]}
        assert "face_absent" in kinds, report["flags"]
        clip_ids = [f["evidence"]["clip_id"] for f in report["flags"] if f["evidence"]["clip_id"]]
        assert clip_ids
        clip = await call(http, b, "GET", f"/api/v1/clips/{clip_ids[0]}")
        assert clip[4:8] == b"ftyp"  # an MP4, read from the database by node B
        await watcher.wait_for(lambda m: m.get("type") == "session"
                               and m.get("status") == "ended", timeout=10)
        await watcher.pc.close()

        # A dies with a session live on it: B finishes it as interrupted.
        second = await call(http, a, "POST", "/api/v1/sessions",
                             body={"candidate_id": "cand-2"}, status=201)
        sid2 = second["session_id"]
        peer2 = await peer(http, a, f"/api/v1/sessions/{sid2}/offer",
                            second["candidate_token"], "proctor", face_then_empty())
        await wait_until(lambda: _flag_count(http, b, sid2), 30, "a flag from A")
        a_process.send_signal(signal.SIGKILL)
        a_process.wait()
        killed_at = time.monotonic()

        async def interrupted() -> bool:
            record = await call(http, b, "GET", f"/api/v1/sessions/{sid2}")
            return bool(record["status"] == "interrupted")

        await wait_until(interrupted, 30, "the dead node's session interrupted")
        took = time.monotonic() - killed_at
        assert took < 30
        await peer2.pc.close()
        report2 = await call(http, b, "GET", f"/api/v1/sessions/{sid2}/report")
        assert report2["interrupted"]["node"] == "node-a"
        assert report2["recommendation"] != "PASS"
        assert all(f["end"] is not None for f in report2["flags"])
        for flag in report2["flags"]:
            if flag["evidence"]["clip_id"]:
                await call(http, b, "GET", f"/api/v1/clips/{flag['evidence']['clip_id']}")
        listed = await call(http, b, "GET", "/api/v1/nodes")
        states = {n["node_id"]: n["status"] for n in listed["nodes"]}
        assert states == {"node-a": "dead", "node-b": "up"}


async def _flag_count(http: aiohttp.ClientSession, server: Server, sid: str) -> int:
    flags = await call(http, server, "GET", f"/api/v1/sessions/{sid}/flags")
    return len(flags["flags"])

