"""Fuzzing what carries media: SDP offers, the candidate's DataChannel, uploads.

- Mutated and garbage SDP offers to ``/sessions/{id}/offer`` get a 4xx JSON error, and
  a session whose offer was refused does not go live.
- hypothesis-made junk on the ``proctor`` DataChannel of a real aiortc peer (text,
  JSON of any shape, known types with junk fields, binary) gets one answer per message
  and never ends the peer; the session stays live and keeps analysing. (The three
  hand-picked cases of tests/e2e/test_hostile_peers.py are a subset of these.)
- Mutated JPEG, PNG and MP4 files, raw and in multipart forms, to enrollment,
  ``/analyze/frame`` and ``/analyze/video``: 2xx or 4xx, never 5xx; each video job
  the server accepts ends done or failed with a media error, never an internal one.

``FUZZ_EXAMPLES`` (default 20) scales the examples of each suite.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from aiortc import RTCPeerConnection
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from signaling.analysis import JOBS_KEY
from signaling.keys import SESSIONS_KEY
from tests.fuzz.conftest import (
    CASES,
    AppThread,
    frames_analysed,
    streaming_candidate,
    strict_json,
)
from tests.media import face_frame
from tests.peers import ClientPeer, ScheduledVideoTrack
from tests.videos import write_video

SCALE = int(os.environ.get("FUZZ_EXAMPLES", "20")) / 20
API = "/api/v1"
DERANDOMIZE = os.environ.get("FUZZ_RANDOM") != "1"


def _settings(examples: int) -> settings:
    return settings(max_examples=max(1, round(examples * SCALE)), deadline=None,
                    database=None, derandomize=DERANDOMIZE,
                    suppress_health_check=list(HealthCheck))


@dataclass
class Api:
    server: AppThread
    http: requests.Session

    def request(self, method: str, path: str, token: str | None = None,
                **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {token or self.server.api_key}",
                   **kwargs.pop("headers", {})}
        return self.http.request(method, self.server.url + API + path, headers=headers,
                                 timeout=60, **kwargs)

    def session(self, candidate_id: str) -> dict[str, Any]:
        response = self.request("POST", "/sessions", json={"candidate_id": candidate_id})
        assert response.status_code == 201, response.text
        return dict(response.json())

    def status(self, sid: str) -> str:
        return str(self.request("GET", f"/sessions/{sid}").json()["status"])


@pytest.fixture(scope="module")
def api(app_thread: AppThread) -> Iterator[Api]:
    with requests.Session() as http:
        yield Api(app_thread, http)


def _refusal(response: requests.Response) -> str:
    """The error code of a 4xx JSON answer (fails on anything else)."""
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    body = response.json()
    assert set(body["error"]) == {"code", "message"} and body["error"]["message"]
    return str(body["error"]["code"])


# SDP offers ----------------------------------------------------------------------------

async def _real_offer() -> str:
    """What a browser sends: a DataChannel and a video track, ICE candidates included."""
    pc = RTCPeerConnection()
    pc.createDataChannel("proctor")
    pc.addTrack(ScheduledVideoTrack([(1.0, face_frame(160, 120))]))
    await pc.setLocalDescription(await pc.createOffer())
    assert pc.localDescription is not None
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


BAD_LINES = ["a=", "m=video 0 RTP/AVP 9999999999", "a=rtpmap:96 VP8/-1",
             "a=rtpmap:x", "a=fingerprint:sha-256 zz", "a=ssrc:abc cname:x",
             "a=candidate:junk", "c=IN IP4 999.1.1.1", "a=sctp-port:-5",
             "a=max-message-size:1e99", "a=mid:", "a=group:BUNDLE x y z",
             "m=application 9 UDP/DTLS/SCTP webrtc-datachannel", "a=setup:nonsense",
             "a=ice-ufrag:", "a=rtcp-fb:96 x", "a=extmap:99999 urn:x", "a=msid:",
             "a=fmtp:96 x=" + "9" * 400, "m=audio 1 RTP/SAVPF", "m=" + "x" * 5000,
             "a=ssrc-group:FID 1", "a=rtcp:abc", "o=- x y IN IP4", "t=", "v=1"]


def _mutate(lines: list[str], draw: Any) -> list[str]:
    index = draw(st.integers(0, len(lines) - 1))
    kind = draw(st.sampled_from(["drop", "replace", "insert", "value", "duplicate",
                                 "truncate", "swap"]))
    if kind == "drop":
        return lines[:index] + lines[index + 1:]
    if kind == "replace":
        return [*lines[:index], draw(st.sampled_from(BAD_LINES) | st.text(max_size=80)),
                *lines[index + 1:]]
    if kind == "insert":
        return [*lines[:index], draw(st.sampled_from(BAD_LINES)), *lines[index:]]
    if kind == "value":  # keep the attribute, replace what follows its first ':' or '='
        head = lines[index].split(":", 1)[0] if ":" in lines[index] else lines[index][:2]
        junk = draw(st.text(max_size=40) | st.integers().map(str))
        return [*lines[:index], f"{head}:{junk}", *lines[index + 1:]]
    if kind == "duplicate":
        return [*lines[:index], lines[index], *lines[index:]]
    if kind == "truncate":
        return lines[:index]
    other = draw(st.integers(0, len(lines) - 1))
    swapped = list(lines)
    swapped[index], swapped[other] = swapped[other], swapped[index]
    return swapped


@st.composite
def offers(draw: Any, seed: str) -> tuple[str, str]:
    """A mutated real offer (1–4 mutations), or garbage; and a type, mostly 'offer'."""
    sdp_type = draw(st.sampled_from(["offer"] * 6 + ["answer", "pranswer", "", "OFFER"]))
    if draw(st.integers(0, 9)) == 0:
        return draw(st.text(min_size=1, max_size=300)), sdp_type
    lines = seed.rstrip("\r\n").split("\r\n")
    for _ in range(draw(st.integers(1, 4))):
        lines = _mutate(lines, draw) or ["v=0"]
    sep = draw(st.sampled_from(["\r\n"] * 4 + ["\n", "\r"]))
    return sep.join(lines) + sep, sdp_type


def test_mutated_sdp_offers_are_refused_and_leave_the_session_unstarted(
        api: Api) -> None:
    seed = api.server.run(_real_offer())
    assert api.server.app is not None
    service = api.server.app[SESSIONS_KEY]
    outcomes: dict[str, int] = {}

    @_settings(150)
    @given(offers(seed))
    def offer(sdp_and_type: tuple[str, str]) -> None:
        CASES["media: SDP offers"] += 1
        sdp, sdp_type = sdp_and_type
        session = api.session("c-sdp")
        sid = session["session_id"]
        response = api.request("POST", f"/sessions/{sid}/offer", session["candidate_token"],
                               json={"sdp": sdp, "type": sdp_type})
        if response.status_code == 200:  # a mutation the offer survives (a dropped a=)
            assert response.json()["type"] == "answer"
            outcomes["usable"] = outcomes.get("usable", 0) + 1
            assert api.request("POST", f"/sessions/{sid}/end").status_code == 200
            return
        code = _refusal(response)
        outcomes[code] = outcomes.get(code, 0) + 1
        assert api.status(sid) == "created", "a refused offer started the session"
        assert sid not in service.sessions

    offer()
    print("SDP outcomes:", outcomes)
    assert outcomes.get("bad_sdp", 0) > outcomes.get("usable", 0)


# The candidate's DataChannel ----------------------------------------------------------

# Text a browser can send: UTF-8 has no lone surrogates (the client could not encode one).
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=200)
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | TEXT,
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(TEXT, inner, max_size=4),
                    max_leaves=20)
TYPES = st.sampled_from(["event", "ping", "watch", "flag", "status", "offer", "", "🙂"])
MESSAGES = st.one_of(
    TEXT,
    JSON.map(json.dumps),
    st.builds(lambda t, extra: json.dumps({**extra, "type": t}),
              TYPES | JSON, st.dictionaries(TEXT, JSON, max_size=4)),
    st.sampled_from(["[" * 30_000, "{" * 100 + "}" * 100, '{"type": ' + "9" * 5000 + "}",
                     '{"type": "ping"' + ", " * 10 + "}", "\x00", "x" * 65_000, "x" * 70_000]),
    st.binary(max_size=2000),
)


def _parsed(message: str | bytes) -> Any:
    """The message as the server's parser takes it, or None where it refuses it."""
    if isinstance(message, bytes) or len(message) > 64 * 1024:
        return None
    try:
        return json.loads(message)
    except (ValueError, RecursionError):
        return None


def _answers(message: str | bytes) -> tuple[int, int]:
    """What the server sends back for ``message``: (answers, of which pongs). None for
    a well-formed ``event`` (telemetry goes over HTTP); the pong for a ping; an error
    for all else."""
    parsed = _parsed(message)
    kind = parsed.get("type") if isinstance(parsed, dict) else None
    if kind == "event":
        return 0, 0
    return 1, int(kind == "ping")


class ErrorLog(logging.Handler):
    """Records the server's logged exceptions while junk is handled."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def _send_and_sync(peer: ClientPeer, batch: list[str | bytes], pings: int) -> int:
    """Send ``batch`` (holding ``pings`` pings), then a ping of our own; the channel is
    ordered, so once all those pongs are back every answer to the batch is too. The
    number of answers to the batch."""
    before, pongs = len(peer.messages), len(peer.of_type("pong"))
    for message in batch:
        peer.channel.send(message)  # type: ignore[attr-defined]
    peer.channel.send('{"type": "ping"}')  # type: ignore[attr-defined]
    for _ in range(400):
        if len(peer.of_type("pong")) >= pongs + pings + 1:
            break
        await asyncio.sleep(0.025)
    else:
        raise AssertionError("no pong: the channel stopped answering")
    received = peer.messages[before:]
    return len([m for m in received if m.get("type") in ("error", "pong")]) - 1


def test_junk_on_the_datachannel_never_ends_the_peer(api: Api) -> None:
    session = api.session("c-channel")
    sid = session["session_id"]
    peer = api.server.run(streaming_candidate(api.server, sid, session["candidate_token"]))
    analysed = frames_analysed(api.server, sid)
    errors = ErrorLog()
    logging.getLogger("proctor").addHandler(errors)
    try:
        @_settings(80)
        @given(st.lists(MESSAGES, min_size=1, max_size=5))
        def junk(batch: list[str | bytes]) -> None:
            CASES["media: DataChannel messages"] += len(batch)
            expected = [_answers(m) for m in batch]
            answers = api.server.run(_send_and_sync(peer, batch,
                                                    sum(p for _, p in expected)))
            assert answers == sum(a for a, _ in expected), batch
            assert peer.pc.connectionState == "connected"

        junk()
    finally:
        logging.getLogger("proctor").removeHandler(errors)
    assert not errors.records, [r.getMessage() for r in errors.records]
    media_time = peer.of_type("status")[-1]["media_time"]
    api.server.run(peer.wait_for(lambda m: m.get("type") == "status"
                                 and m["media_time"] > media_time + 1, timeout=10))
    assert frames_analysed(api.server, sid) > analysed
    assert api.status(sid) == "live"
    api.server.run(peer.pc.close())


# Uploads -------------------------------------------------------------------------------

def _image(fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(face_frame(320, 240)).save(buffer, format=fmt)
    return buffer.getvalue()


@st.composite
def mutated(draw: Any, seed: bytes) -> bytes:
    """``seed`` with 1–3 byte-level mutations: flips, cuts, inserts, repeats, and a
    header field (PNG size, MP4 box size) set to an extreme."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 3))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        kind = draw(st.sampled_from(["flip", "cut", "insert", "repeat", "field", "zero"]))
        if kind == "flip":
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "cut":
            del data[at:at + draw(st.integers(1, 4096))]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        elif kind == "repeat":
            data[at:at] = data[at:at + draw(st.integers(1, 512))] * draw(st.integers(2, 8))
        elif kind == "zero":
            data[at:at + 64] = bytes(len(data[at:at + 64]))
        else:
            value = draw(st.sampled_from([0, 1, 0x7FFF_FFFF, 0xFFFF_FFFF, 65_535, 100_000]))
            data[at:at + 4] = struct.pack(">I", value)[:len(data[at:at + 4])]
    return bytes(data)


UPLOAD_ROUTES = [("/candidates/c-upload/enrollment", "photo"), ("/analyze/frame", "image"),
                 ("/analyze/video", "video")]


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    video = write_video(tmp_path_factory.mktemp("seed") / "seed.mp4",
                        [(1.0, face_frame(160, 120))], fps=5)
    return {"jpeg": _image("JPEG"), "png": _image("PNG"), "mp4": video.read_bytes()}


def _post_upload(api: Api, path: str, field: str, data: bytes, media: str,
                 multipart: bool) -> requests.Response:
    if multipart:
        return api.request("POST", path, files={field: ("upload", data, media)})
    return api.request("POST", path, data=data, headers={"Content-Type": media})


@pytest.mark.parametrize(("path", "field"), UPLOAD_ROUTES)
def test_mutated_uploads_are_answered_without_5xx(api: Api, seeds: dict[str, bytes],
                                                   path: str, field: str) -> None:
    kinds = ["mp4", "mp4", "jpeg"] if field == "video" else ["jpeg", "png", "mp4"]
    statuses: dict[int, int] = {}

    @_settings(40)
    @given(st.sampled_from(kinds).flatmap(lambda k: st.tuples(st.just(k),
                                                              mutated(seeds[k]))),
           st.sampled_from(["image/jpeg", "image/png", "video/mp4",
                            "application/octet-stream"]), st.booleans())
    def upload(kind_and_data: tuple[str, bytes], media: str, multipart: bool) -> None:
        CASES[f"media: uploads {path}"] += 1
        response = _post_upload(api, path, field, kind_and_data[1], media, multipart)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        strict_json(response.content)  # every answer here is JSON, and JSON proper
        if response.status_code >= 300:
            _refusal(response)

    upload()
    print(path, statuses)
    healthy = _post_upload(api, "/analyze/frame", "image", seeds["jpeg"], "image/jpeg",
                           False)
    assert healthy.status_code == 200, healthy.text  # the server still analyses
    if field == "video":
        _jobs_end_cleanly(api)


def _jobs_end_cleanly(api: Api) -> None:
    """Every accepted video job ends done, or failed for its media: never 'internal'."""
    assert api.server.app is not None
    jobs = api.server.app[JOBS_KEY].jobs
    for _ in range(600):
        if all(j.status in ("done", "failed") for j in jobs.values()):
            break
        api.server.run(asyncio.sleep(0.2))
    unfinished = [j.job_id for j in jobs.values() if j.status not in ("done", "failed")]
    assert not unfinished, f"jobs still running after 120 s: {unfinished}"
    internal = [j.error for j in jobs.values() if (j.error or "").startswith("internal")]
    assert not internal, internal


def test_the_fuzzed_server_still_serves(api: Api, tmp_path: Path) -> None:
    """After all the above, the same process answers its probes and creates sessions."""
    assert api.http.get(api.server.url + "/healthz", timeout=10).status_code == 200
    assert api.session("c-after")["session_id"]
    assert tmp_path.exists()
