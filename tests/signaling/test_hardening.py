"""Hostile input through the real app: every case answers 4xx with ``{error}``, fast,
and the server keeps serving (issue 10, findings 1, 2 and 6)."""

from __future__ import annotations

import asyncio
import logging
import struct
import time
import zlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer

from proctor.config import Config
from signaling.accesslog import RedactingAccessLogger
from signaling.app import create_app
from tests.media import face_frame
from tests.peers import offer_sdp
from tests.signaling.test_analysis import _png
from tests.videos import write_video

FRAME = "/api/v1/analyze/frame"
SESSIONS = "/api/v1/sessions"


def png_header_only(width: int, height: int, rows: bytes = b"") -> bytes:
    """A valid PNG of ``width``×``height`` grey pixels; all-zero rows compress to a few kB."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))
    raw = rows or bytes(height * (width + 1))  # filter byte 0 and zero pixels per row
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9))
            + chunk(b"IEND", b""))


async def _error(response: Any, *statuses: int) -> str:
    assert response.status in statuses, (response.status, await response.text())
    return str((await response.json())["error"]["code"])


async def _healthy(client: TestClient, api_headers: dict[str, str]) -> None:
    response = await client.post(FRAME, data=_png(face_frame()),
                                 headers={**api_headers, "Content-Type": "image/png"})
    assert response.status == 200, await response.text()


async def _session(client: TestClient, api_headers: dict[str, str],
                   **body: Any) -> dict[str, Any]:
    response = await client.post(SESSIONS, json={"candidate_id": "cand-1", **body},
                                 headers=api_headers)
    assert response.status == 201, await response.text()
    return dict(await response.json())


# Images -------------------------------------------------------------------------------

async def test_tall_narrow_image_is_refused_fast(client: TestClient,
                                                 api_headers: dict[str, str]) -> None:
    started = time.monotonic()
    for _ in range(2):
        response = await client.post(FRAME, data=png_header_only(16, 4096),
                                     headers={**api_headers, "Content-Type": "image/png"})
        assert await _error(response, 400, 413) == "bad_image_shape"
    assert time.monotonic() - started < 5
    await _healthy(client, api_headers)


async def test_one_pixel_wide_bomb_is_refused(client: TestClient,
                                              api_headers: dict[str, str]) -> None:
    bomb = png_header_only(1, 39_000_000)
    assert len(bomb) < 200_000
    response = await client.post(FRAME, data=bomb,
                                 headers={**api_headers, "Content-Type": "image/png"})
    assert await _error(response, 400, 413) == "bad_image_shape"
    response = await client.post("/api/v1/candidates/alice/enrollment", data=bomb,
                                 headers={**api_headers, "Content-Type": "image/png"})
    assert await _error(response, 400, 413) == "bad_image_shape"
    await _healthy(client, api_headers)


async def test_huge_square_image_is_refused(client: TestClient,
                                            api_headers: dict[str, str]) -> None:
    response = await client.post(FRAME, data=png_header_only(20_000, 20_000),
                                 headers={**api_headers, "Content-Type": "image/png"})
    assert await _error(response, 400, 413) == "bad_image_shape"


# Requests that answered 500 -------------------------------------------------------------

@pytest.mark.parametrize("credential", ["\u00e9t\u00e9", "\u00e9.\u00e9", "a.\u00e9"])
async def test_non_ascii_credential(client: TestClient, credential: str) -> None:
    header = f"Bearer {credential}".encode().decode("latin-1")
    response = await client.get(SESSIONS, headers={"Authorization": header})
    assert await _error(response, 401) == "invalid_credential"


async def test_deep_and_huge_json(client: TestClient, api_headers: dict[str, str]) -> None:
    headers = {**api_headers, "Content-Type": "application/json"}
    for body in ("[" * 100_000 + "]" * 100_000, '{"candidate_id": ' + "9" * 5000 + "}",
                 '{"candidate_id": "c", "metadata": {"a": ' + "[" * 100_000 + "}}"):
        response = await client.post(SESSIONS, data=body, headers=headers)
        assert await _error(response, 400) == "bad_json"
    for content_type in ("application/json; charset=no-such", "application/json"):
        response = await client.post(SESSIONS, data=b'{"candidate_id": "\xff"}',
                                     headers={**api_headers, "Content-Type": content_type})
        assert await _error(response, 400) == "bad_json"


async def test_long_ids_and_metadata(client: TestClient, api_headers: dict[str, str]) -> None:
    for body in ({"candidate_id": "c" * 201}, {"candidate_id": "c", "exam_id": "e" * 201},
                 {"candidate_id": "c", "metadata": {"blob": "x" * 20_000}},
                 {"candidate_id": "c", "policy": {"p": "x" * 20_000}}):
        response = await client.post(SESSIONS, json=body, headers=api_headers)
        assert await _error(response, 400, 413) in ("bad_request", "too_large")
    await _session(client, api_headers, metadata={"note": "x" * 1000})
    for policy in ({"disable": "paste"}, {"disable": [[]]}, {"rules": {"video_lost": [1]}},
                   {"rules": {"video_lost": "x"}}, {"rules": []}):
        response = await client.post(SESSIONS, json={"candidate_id": "c", "policy": policy},
                                     headers=api_headers)
        assert response.status == 400, (policy, await response.text())


async def test_huge_event_time(client: TestClient, api_headers: dict[str, str]) -> None:
    session = await _session(client, api_headers)
    headers = {"Authorization": f"Bearer {session['candidate_token']}",
               "Content-Type": "application/json"}
    events = f"{SESSIONS}/{session['session_id']}/events"
    for body in ('{"type": "paste", "time": ' + "9" * 400 + "}",
                 '{"type": "paste", "time": 1e308, "sent_at": -1e308}',
                 '{"type": "paste", "time": true}'):
        response = await client.post(events, data=body, headers=headers)
        assert await _error(response, 400) == "bad_event"
    # A sent_at that is no time is ignored (the event's age is then unknown: 0).
    response = await client.post(events, headers=headers,
                                 data='{"type": "paste", "time": 1, "sent_at": 1' + "0" * 400 + "}")
    assert response.status == 202, await response.text()


async def test_multipart_without_boundary(client: TestClient,
                                          api_headers: dict[str, str]) -> None:
    for path in (FRAME, "/api/v1/analyze/video", "/api/v1/candidates/alice/enrollment"):
        response = await client.post(path, data=b"--x\r\n\r\nhello\r\n--x--\r\n",
                                     headers={**api_headers,
                                              "Content-Type": "multipart/form-data"})
        assert await _error(response, 400) == "bad_request"


async def test_video_error_names_no_server_path(client: TestClient, config: Any,
                                                api_headers: dict[str, str]) -> None:
    response = await client.post("/api/v1/analyze/video", data=b"not a video at all" * 50,
                                 headers={**api_headers, "Content-Type": "video/mp4"})
    assert await _error(response, 400) == "not_a_video"
    message = (await response.json())["error"]["message"]
    assert "/" not in message and str(config.data_dir) not in message and ".upload" not in message


# Offers -------------------------------------------------------------------------------

def _without(sdp: str, *prefixes: str) -> str:
    return "\r\n".join(line for line in sdp.split("\r\n") if not line.startswith(prefixes))


def _with_line(sdp: str, line: str) -> str:
    """``line`` added at the end of the first media section."""
    return sdp.rstrip("\r\n") + "\r\n" + line + "\r\n"


async def test_unusable_offers_are_refused_and_leave_the_session_waiting(
        client: TestClient, api_headers: dict[str, str]) -> None:
    session = await _session(client, api_headers)
    sid = session["session_id"]
    headers = {"Authorization": f"Bearer {session['candidate_token']}"}
    good = await offer_sdp()
    # These parse, but aiortc cannot apply them: once they turned the session live.
    no_ice = _without(good, "a=ice-ufrag", "a=ice-pwd")
    no_setup = _without(good, "a=setup")
    for sdp in (_with_line(good, "a=candidate:xx yy"), _with_line(good, "a=candidate:1"),
                no_ice, no_setup):
        response = await client.post(f"{SESSIONS}/{sid}/offer",
                                     json={"sdp": sdp, "type": "offer"}, headers=headers)
        assert await _error(response, 400) == "bad_sdp"
    got = await (await client.get(f"{SESSIONS}/{sid}", headers=api_headers)).json()
    assert got["status"] == "created", got


# Tokens in queries ----------------------------------------------------------------------

async def test_query_token_only_where_links_need_it(
        config: Config, aiohttp_client: Callable[..., Awaitable[TestClient]],
        api_headers: dict[str, str], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="aiohttp.access")  # before any connection
    # The access logger `proctor serve` runs with (proctor/cli.py).
    server = TestServer(create_app(config))
    await server.start_server(access_log_class=RedactingAccessLogger)
    client = await aiohttp_client(server)
    session = await _session(client, api_headers)
    token = session["proctor_token"]
    sid = session["session_id"]
    for path in (f"{SESSIONS}/{sid}", f"{SESSIONS}/{sid}/flags"):
        response = await client.get(path, params={"token": token})
        assert await _error(response, 401) == "unauthorized"
    response = await client.get(f"{SESSIONS}/{sid}/report", params={"token": token})
    assert await _error(response, 409) == "not_ended"  # the token was accepted there
    response = await client.get("/api/v1/clips/nope", params={"token": token})
    assert await _error(response, 404) == "not_found"
    await asyncio.sleep(0.05)
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name == "aiohttp.access")
    assert "/clips/nope" in logged and token not in logged


async def test_video_of_a_bad_shape_is_refused_before_decoding(
        client: TestClient, api_headers: dict[str, str], tmp_path: Path) -> None:
    video = write_video(tmp_path / "strip.mp4", [(1.0, np.zeros((1024, 16, 3), np.uint8))])
    response = await client.post("/api/v1/analyze/video", data=video.read_bytes(),
                                 headers={**api_headers, "Content-Type": "video/mp4"})
    assert await _error(response, 400) == "bad_video_shape"
    assert list((tmp_path / "data" / "uploads").glob("*")) == []  # nothing kept
