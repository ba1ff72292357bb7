"""The clip being written when the node is killed (SIGKILL) is not lost: started again,
the node recovers it from its journal, the flag names it, and ``GET /clips/{id}`` serves
a browser-shaped MP4 (H.264, avcC, faststart) covering the flag up to the kill; and a
recovered clip plays in Chromium."""

from __future__ import annotations

import functools
import http.server
import io
import itertools
import secrets
import signal
import sqlite3
import threading
from pathlib import Path
from typing import Any

import aiohttp
import av
import pytest

from proctor.evidence.recorder import recover_clip
from tests.e2e.conftest import SOLO_NODE, start_server, stop_server
from tests.e2e.remote import call, empty_room, live_candidate, wait_until
from tests.evidence.test_audio import CONFIG
from tests.evidence.test_clip_journal import crash_while_recording

PAGE_TIMEOUT_MS = 20_000

RECORDED_PAST_FLAG = 6.0  # media seconds the flag's clip records before the kill
# What a crash may cost the clip: the fragment being filled (a keyframe a second) and
# the encoder's batch and queue, which trail the media clock under load.
CRASH_LOSS = 4.0
FIRST_FRAME = 0.001  # media time of the first frame, at most (one 90 kHz tick)


def decoded_frames(mp4: bytes) -> list[float]:
    """Clip times of every frame; asserts the stream is the H.264 a browser plays."""
    with av.open(io.BytesIO(mp4), "r") as container:
        video = container.streams.video[0]
        assert video.codec_context.name == "h264"
        assert video.codec_context.pix_fmt == "yuv420p"
        assert (video.codec_context.extradata or b"")[:1] == b"\x01", "an avcC record"
        return [float(frame.time or 0.0) for frame in container.decode(video)]


def stored_span(db: Path, clip_id: str) -> tuple[float, float]:
    """The clip's media times as the store holds them (read-only)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        row = conn.execute("SELECT media_start, media_end FROM clips WHERE clip_id = ?",
                           (clip_id,)).fetchone()
    assert row is not None, f"clip {clip_id} not stored"
    return float(row[0]), float(row[1])


async def test_the_clip_open_at_a_crash_is_recovered_and_served(tmp_path: Path) -> None:
    api_key = secrets.token_urlsafe(24)
    server, process = start_server(tmp_path, api_key, **SOLO_NODE)
    async with aiohttp.ClientSession() as http:
        try:
            sid, candidate = await live_candidate(http, server, empty_room())

            async def open_absent() -> dict[str, Any] | None:
                flags = await call(http, server, "GET", f"/api/v1/sessions/{sid}/flags")
                return next((f for f in flags["flags"] if f["kind"] == "face_absent"
                             and f["end"] is None and f["evidence"]["clip_id"]), None)

            flag = await wait_until(open_absent, 30, "an open face_absent flag with a clip")

            async def recorded_past_flag() -> bool:
                record = await call(http, server, "GET", f"/api/v1/sessions/{sid}")
                media_time = float(record["media_time"] or 0)
                return media_time >= float(flag["start"]) + RECORDED_PAST_FLAG

            await wait_until(recorded_past_flag, 30, "media time past the flag")
            assert await open_absent(), "the flag (and its clip) still open at the kill"
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()
        await candidate.pc.close()
        # Killed: no clip was finished, so only the journal holds it.
        clips_dir = tmp_path / "data" / "clips"
        assert not (clips_dir / f"{flag['evidence']['clip_id']}.mp4").exists()

        server, process = start_server(tmp_path, api_key, **SOLO_NODE)
        try:
            report = await call(http, server, "GET", f"/api/v1/sessions/{sid}/report")
            absent = next(f for f in report["flags"] if f["flag_id"] == flag["flag_id"])
            assert absent["end"] is not None
            clip_id = absent["evidence"]["clip_id"]
            assert clip_id == flag["evidence"]["clip_id"], "the flag keeps its clip"
            mp4 = await call(http, server, "GET", f"/api/v1/clips/{clip_id}")
            assert isinstance(mp4, bytes)
            assert mp4.find(b"moov") < mp4.find(b"mdat"), "faststart, as browsers stream it"
            times = decoded_frames(mp4)
            start, end = stored_span(tmp_path / "data" / "proctor.db", clip_id)
            # It covers the flag's onset (with the lead-in) and what was recorded after,
            # less at most what the crash could cost ...
            # (From the session's first frame, a clock tick after media time 0, when the
            # flag opened then.)
            assert start <= max(flag["start"], FIRST_FRAME)
            assert end >= flag["start"] + RECORDED_PAST_FLAG - CRASH_LOSS
            # ... frame after frame (5 fps evidence: no holes) from clip time 0.
            assert times[0] == 0.0
            assert abs(times[-1] - (end - start)) < 0.01
            assert max(b - a for a, b in itertools.pairwise(times)) < 0.5
        finally:
            stop_server(process)


@pytest.mark.browser
def test_a_recovered_clip_plays_in_chromium(tmp_path: Path, browser: Any) -> None:
    crash_while_recording(tmp_path)  # a real SIGKILL mid-clip (H.264 + AAC)
    record = recover_clip(tmp_path, "clip-k", "sess-k", "flag-k", CONFIG)
    assert record is not None
    (tmp_path / "index.html").write_text(
        '<video id="clip" src="clip-k.mp4" muted playsinline></video>')
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    files = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=files.serve_forever, daemon=True).start()
    try:
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{files.server_address[1]}/index.html")
        page.wait_for_function("(() => { const v = document.querySelector('#clip');"
                               " return v.readyState >= 2 && v.videoWidth > 0; })()",
                               timeout=PAGE_TIMEOUT_MS)
        duration = page.evaluate("document.querySelector('#clip').duration")
        assert abs(duration - (record.end - record.start)) < 0.5, duration
        page.evaluate("document.querySelector('#clip').play()")
        page.wait_for_function("document.querySelector('#clip').currentTime > 0.5",
                               timeout=PAGE_TIMEOUT_MS)
        assert page.evaluate("document.querySelector('#clip').error") is None
    finally:
        files.shutdown()
        files.server_close()
