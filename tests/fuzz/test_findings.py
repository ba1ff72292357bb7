"""What the fuzzers found, one regression test each, against the real app.

Each test sends the smallest request (or input) that used to fail, and asserts the
answer the fix gives; each fails on the code before its fix.
"""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import numpy as np
import pytest
from aiohttp.test_utils import TestClient
from aiortc import RTCPeerConnection
from PIL import Image

from proctor.config import ConfigError, load_config
from signaling.auth import TokenSigner
from signaling.errors import ApiError
from tests.media import face_frame
from tests.peers import bearer

UPLOADS = ["/api/v1/candidates/c1/enrollment", "/api/v1/analyze/frame",
           "/api/v1/analyze/video"]


async def _error(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status == status, await response.text()
    body = dict(await response.json())
    assert set(body["error"]) == {"code", "message"} and body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code, body
    return body


@pytest.mark.parametrize("path", UPLOADS)
async def test_multipart_part_header_with_a_control_character_is_400(
        client: TestClient[Any, Any], api_headers: dict[str, str], path: str) -> None:
    """Finding 1: a form field named with a control character (``\\x13``) made aiohttp's
    part parser raise InvalidHeader, which no upload route caught: 500."""
    boundary = "b0undary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"x\x13\"\r\n\r\n"
            f"data\r\n--{boundary}--\r\n").encode()
    response = await client.post(path, data=body, headers={
        **api_headers, "Content-Type": f"multipart/form-data; boundary={boundary}"})
    await _error(response, 400, "bad_request")


@pytest.mark.parametrize("token", ["abc.é", "abc.\x80", "x.☃y"])
def test_a_non_ascii_token_is_refused_cleanly(token: str) -> None:
    """Finding 2: ``hmac.compare_digest`` raises TypeError for non-ASCII strings, so
    TokenSigner.verify raised it instead of refusing the token."""
    with pytest.raises(ApiError) as refused:
        TokenSigner(b"secret", 60).verify(token)
    assert (refused.value.status, refused.value.code) == (401, "invalid_token")


@pytest.mark.parametrize("claims", [
    '{"r": "proctor", "s": [], "e": Infinity}',  # int(inf): OverflowError
    '{"r": "proctor", "s": 5, "e": 9999999999}',  # iterating an int: TypeError
    '{"r": "proctor", "s": [], "e": 1e999}',
    "[" * 5000 + "]" * 5000,  # RecursionError in json.loads
])
def test_malformed_signed_claims_are_refused_cleanly(claims: str) -> None:
    """Finding 3: claims under a valid signature were trusted to be well formed; an
    infinite expiry or a non-list of sessions raised past the 401 (a 500 per request
    for every holder of such a token)."""
    signer = TokenSigner(b"secret", 60)
    payload = base64.urlsafe_b64encode(claims.encode()).rstrip(b"=").decode()
    with pytest.raises(ApiError) as refused:
        signer.verify(f"{payload}.{signer._sign(payload)}")
    assert (refused.value.status, refused.value.code) == (401, "invalid_token")


@pytest.mark.parametrize("value", ["[", "a: b: c", "*alias", "'open", "\x08"])
def test_an_env_override_that_is_not_yaml_names_its_key(value: str) -> None:
    """Finding 4: a ``PROCTOR_*`` value YAML cannot parse raised yaml's own error, not a
    ConfigError naming the key (the server died with a parser traceback)."""
    with pytest.raises(ConfigError) as refused:
        load_config(env={"PROCTOR_SERVER__PORT": value})
    assert refused.value.key == "server.port"
    assert "PROCTOR_SERVER__PORT" in str(refused.value)


@pytest.mark.parametrize("value", [".nan", ".inf"])
def test_a_non_finite_number_is_refused(value: str) -> None:
    """Finding 5: ``.nan`` loaded as a number: NaN passes every "must be positive"
    check, so nodes.heartbeat_seconds=.nan started a server that never heartbeats."""
    with pytest.raises(ConfigError) as refused:
        load_config(env={"PROCTOR_NODES__HEARTBEAT_SECONDS": value})
    assert refused.value.key == "nodes.heartbeat_seconds"


def _png_with_a_nameless_chunk() -> bytes:
    """A real PNG whose second IDAT chunk's type bytes are zero (Pillow opens it, and
    fails only while decoding the pixels)."""
    buffer = io.BytesIO()
    Image.fromarray(face_frame(320, 240)).save(buffer, format="PNG")
    data = buffer.getvalue()
    second = data.index(b"IDAT", data.index(b"IDAT") + 4)
    return data[:second] + bytes(4) + data[second + 4:]


@pytest.mark.parametrize("path", UPLOADS[:2])
async def test_a_png_with_a_broken_chunk_is_400(client: TestClient[Any, Any],
                                               api_headers: dict[str, str], path: str) -> None:
    """Finding 6: Pillow reports a PNG chunk it cannot read as SyntaxError, which
    decode_image did not catch: enrollment and /analyze/frame answered 500."""
    response = await client.post(path, data=_png_with_a_nameless_chunk(),
                                 headers={**api_headers, "Content-Type": "image/png"})
    await _error(response, 400, "not_an_image")


async def test_an_offer_bundling_a_missing_mid_is_400_and_starts_nothing(
        client: TestClient[Any, Any], api_headers: dict[str, str]) -> None:
    """Finding 7: a BUNDLE group whose first mid names no section made aiortc build a
    peer without its SCTP transport; closing that peer raised AttributeError past the
    400 (a 500, with the throwaway peer's sockets left open)."""
    created = await client.post("/api/v1/sessions", json={"candidate_id": "c-bundle"},
                                headers=api_headers)
    session = await created.json()
    pc = RTCPeerConnection()
    pc.createDataChannel("proctor")
    await pc.setLocalDescription(await pc.createOffer())
    assert pc.localDescription is not None
    sdp = pc.localDescription.sdp.replace("a=group:BUNDLE 0", "a=group:BUNDLE 1 0")
    await pc.close()
    sid = session["session_id"]
    response = await client.post(f"/api/v1/sessions/{sid}/offer",
                                 json={"sdp": sdp, "type": "offer"},
                                 headers=bearer(session["candidate_token"]))
    await _error(response, 400, "bad_sdp")
    status = await (await client.get(f"/api/v1/sessions/{sid}", headers=api_headers)).json()
    assert status["status"] == "created"


@pytest.mark.parametrize(("width", "height"), [(1, 1), (1, 3), (3, 1)])
async def test_a_one_pixel_wide_frame_is_answered_in_json(
        client: TestClient[Any, Any], api_headers: dict[str, str], width: int,
        height: int) -> None:
    """Finding 8: the camera stage's edge density of an image one pixel wide or high
    was the mean of no pairs, NaN, and /analyze/frame answered a bare ``NaN``: not JSON,
    which a browser's parser refuses."""
    buffer = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), 100, np.uint8)).save(buffer, format="PNG")
    response = await client.post("/api/v1/analyze/frame", data=buffer.getvalue(),
                                 headers={**api_headers, "Content-Type": "image/png"})
    assert response.status == 200, await response.text()

    def refuse(name: str) -> None:
        raise AssertionError(f"{name} in the answer")

    body = json.loads(await response.text(), parse_constant=refuse)
    assert body["detectors"]["camera"]["details"]["edge_density"] == 0.0
