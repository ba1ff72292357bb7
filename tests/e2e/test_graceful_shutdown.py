"""SIGTERM on a node with a live session: it drains (refuses new sessions), ends the
session cleanly (``ended``, not ``interrupted``), closes its flags and writes their
clips, and exits within ``server.shutdown_seconds``. Started again, nothing is left to
recover: the report and every clip it names are there."""

from __future__ import annotations

import asyncio
import secrets
import signal
import subprocess
from pathlib import Path

import aiohttp

from tests.e2e.conftest import SOLO_NODE, start_server, stop_server
from tests.e2e.remote import call, face_then_empty, live_candidate, wait_until

SHUTDOWN_SECONDS = 20


async def test_sigterm_ends_live_sessions_cleanly(tmp_path: Path) -> None:
    api_key = secrets.token_urlsafe(24)
    settings = {**SOLO_NODE, "SERVER__SHUTDOWN_SECONDS": str(SHUTDOWN_SECONDS)}
    server, process = start_server(tmp_path, api_key, **settings)
    async with aiohttp.ClientSession() as http:
        try:
            sid, candidate = await live_candidate(http, server, face_then_empty())

            async def face_absent_open() -> bool:
                flags = (await call(http, server, "GET", f"/api/v1/sessions/{sid}/flags"))
                return any(f["kind"] == "face_absent" and f["end"] is None
                           for f in flags["flags"])

            await wait_until(face_absent_open, 30, "an open face_absent flag")
            process.send_signal(signal.SIGTERM)
            # The candidate hears that the session ended before the node goes.
            await candidate.wait_for(lambda m: m.get("type") == "session"
                                     and m.get("status") == "ended", timeout=SHUTDOWN_SECONDS)
            # Bounded: the node is gone within its shutdown budget (and aiohttp's own
            # 10 s for requests in flight), not killed.
            returncode = await asyncio.to_thread(process.wait, SHUTDOWN_SECONDS + 15)
            assert returncode == 0, server.log_tail()
        except subprocess.TimeoutExpired:
            raise AssertionError("SIGTERM did not stop the node in time\n"
                                 + server.log_tail()) from None
        finally:
            stop_server(process)
            await candidate.pc.close()
        log = server.log.read_text()  # the first run's (a start writes it anew)
        assert "draining: new sessions are refused" in log
        assert "did not end within" not in log and "1 live sessions ended in" in log

        server, process = start_server(tmp_path, api_key, **settings)
        try:
            record = await call(http, server, "GET", f"/api/v1/sessions/{sid}")
            assert record["status"] == "ended"  # ended at shutdown, not interrupted
            report = await call(http, server, "GET", f"/api/v1/sessions/{sid}/report")
            assert "interrupted" not in report or not report["interrupted"]
            absent = [f for f in report["flags"] if f["kind"] == "face_absent"]
            assert absent and all(f["end"] is not None for f in report["flags"])
            assert absent[0]["evidence"]["clip_id"], absent[0]
            for flag in report["flags"]:
                if flag["evidence"]["clip_id"]:
                    clip = await call(http, server, "GET",
                                      f"/api/v1/clips/{flag['evidence']['clip_id']}")
                    assert clip[4:8] == b"ftyp" and len(clip) > 1000
        finally:
            stop_server(process)
