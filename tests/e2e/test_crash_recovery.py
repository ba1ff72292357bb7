"""A single node killed with SIGKILL mid-session, then started again on its embedded
defaults (SQLite, memory bus): the session it held is ``interrupted`` at once, its open
flags are closed at the last stored media time, and the report builds."""

from __future__ import annotations

import asyncio
import secrets
import signal
from pathlib import Path

import aiohttp

from tests.e2e.conftest import SOLO_NODE, start_server, stop_server
from tests.e2e.remote import call, face_then_empty, live_candidate, wait_until


async def test_a_killed_node_finishes_its_sessions_when_it_comes_back(tmp_path: Path) -> None:
    api_key = secrets.token_urlsafe(24)
    server, process = start_server(tmp_path, api_key, **SOLO_NODE)
    async with aiohttp.ClientSession() as http:
        try:
            sid, candidate = await live_candidate(http, server, face_then_empty())

            async def face_absent_open() -> bool:
                flags = (await call(http, server, "GET", f"/api/v1/sessions/{sid}/flags"))
                return any(f["kind"] == "face_absent" and f["end"] is None
                           for f in flags["flags"])

            await wait_until(face_absent_open, 30, "an open face_absent flag")
            await asyncio.sleep(1.5)  # a heartbeat stores the media time past the flag's start
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()
        await candidate.pc.close()

        server, process = start_server(tmp_path, api_key, **SOLO_NODE)
        try:
            record = await call(http, server, "GET", f"/api/v1/sessions/{sid}")
            assert record["status"] == "interrupted"
            report = await call(http, server, "GET", f"/api/v1/sessions/{sid}/report")
            assert report["recommendation"] != "PASS"
            absent = [f for f in report["flags"] if f["kind"] == "face_absent"]
            assert absent and all(f["end"] is not None for f in report["flags"])
            # Closed where the media stopped: after it opened, not at media time 0.
            assert absent[0]["end"] > absent[0]["start"]
            assert report["interrupted"]["at_media_time"] >= absent[0]["end"]
            for flag in report["flags"]:  # a flag names a clip only if it can be played
                if flag["evidence"]["clip_id"]:
                    await call(http, server, "GET", f"/api/v1/clips/{flag['evidence']['clip_id']}")
            ended = await call(http, server, "POST", f"/api/v1/sessions/{sid}/end")
            assert ended["status"] == "interrupted"  # ending it again changes nothing
        finally:
            stop_server(process)
