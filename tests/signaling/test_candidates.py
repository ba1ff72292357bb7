"""Enrollment and erasure through the real app, store and face model, on real photos."""

from __future__ import annotations

import sqlite3
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import cv2
import numpy as np
import pytest
from aiohttp.test_utils import TestClient

from proctor.config import Config
from proctor.crypto import EmbeddingCipher, SealError
from proctor.detectors.identity import IdentityDetector, cosine
from proctor.enrollment import ENROLLMENT_KEY_FILE, enrollment_cipher, open_enrollment
from proctor.flags.model import Flag, FlagKind, Severity
from proctor.media.file import decode_image
from proctor.store.base import ClipRecord, EnrollmentRecord, EventRecord, Store
from signaling.app import create_app
from signaling.candidates import MAX_PHOTO_BYTES
from signaling.keys import SESSIONS_KEY, STORE_KEY
from tests.conftest import make_config
from tests.detectors.photos import face_recognition_photo
from tests.detectors.webcam import RgbImage, webcam_frame
from tests.peers import bearer

ENROLL = "/api/v1/candidates/{}/enrollment"


def encode(image: RgbImage, ext: str = ".jpg") -> bytes:
    ok, data = cv2.imencode(ext, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    assert ok
    return bytes(data.tobytes())


@pytest.fixture(scope="module")
def photos() -> dict[str, RgbImage]:
    return {name: face_recognition_photo(f"{name}.jpg") for name in ("obama", "biden")}


def identity(client: TestClient) -> IdentityDetector:
    found = [d for d in client.app[SESSIONS_KEY].detectors if isinstance(d, IdentityDetector)]
    assert found, "the identity detector should be on by default"
    return found[0]


async def enroll(client: TestClient, headers: dict[str, str], body: bytes,
                 content_type: str = "image/jpeg", candidate: str = "alice") -> Any:
    return await client.post(ENROLL.format(candidate), data=body,
                             headers={**headers, "Content-Type": content_type})


async def error_code(response: aiohttp.ClientResponse, status: int) -> str:
    assert response.status == status, await response.text()
    return str((await response.json())["error"]["code"])


async def test_enroll_a_real_photo(client: TestClient, api_headers: dict[str, str],
                                   photos: dict[str, RgbImage]) -> None:
    response = await enroll(client, api_headers, encode(photos["obama"]))
    assert response.status == 201, await response.text()
    body = await response.json()
    assert body["enrolled"] is True and body["candidate_id"] == "alice"
    quality = body["quality"]
    assert set(quality) == {"face_px", "sharpness", "score"}
    assert quality["face_px"] > 200 and quality["sharpness"] > 100
    assert 0.8 < quality["score"] <= 1.0


async def test_enroll_as_multipart_png(client: TestClient, api_headers: dict[str, str],
                                       photos: dict[str, RgbImage]) -> None:
    form = aiohttp.FormData()
    form.add_field("note", "fields other than 'photo' are ignored")
    form.add_field("photo", encode(photos["obama"], ".png"), filename="me.png",
                   content_type="image/png")
    response = await client.post(ENROLL.format("bob"), data=form, headers=api_headers)
    assert response.status == 201, await response.text()
    assert await client.app[STORE_KEY].get_enrollment("bob") is not None
    missing = aiohttp.FormData()
    missing.add_field("picture", encode(photos["obama"]), filename="me.jpg")
    assert await error_code(await client.post(ENROLL.format("bob"), data=missing,
                                              headers=api_headers), 400) == "bad_request"


async def test_photos_that_are_refused(client: TestClient, api_headers: dict[str, str],
                                       photos: dict[str, RgbImage]) -> None:
    obama, biden = photos["obama"], photos["biden"]
    obama_box = identity(client).embed(obama).box
    biden_box = identity(client).embed(biden).box
    assert obama_box is not None and biden_box is not None
    side_by_side = np.hstack([webcam_frame(obama, obama_box, face_px=150, size=(400, 480)),
                              webcam_frame(biden, biden_box, face_px=150, size=(400, 480))])
    tiny = cv2.resize(obama, None, fx=40 / obama_box[2], fy=40 / obama_box[2],
                      interpolation=cv2.INTER_AREA)
    blurred = cv2.GaussianBlur(obama, (0, 0), 6)
    cases = [
        (b"just some text, not a picture\n", "text/plain", "not_an_image"),
        (b"\xff\xd8\xff\xe0 truncated jpeg", "image/jpeg", "not_an_image"),
        (b"", "image/jpeg", "not_an_image"),
        (encode(np.ascontiguousarray(obama[650:, :])), "image/jpeg", "no_face"),  # his suit
        (encode(side_by_side), "image/jpeg", "several_faces"),
        (encode(tiny, ".png"), "image/png", "face_too_small"),
        (encode(blurred), "image/jpeg", "too_blurry"),
    ]
    for body, content_type, code in cases:
        response = await enroll(client, api_headers, body, content_type)
        assert await error_code(response, 400) == code
    assert await client.app[STORE_KEY].get_enrollment("alice") is None  # nothing kept


async def test_oversized_upload_is_413(client: TestClient, api_headers: dict[str, str]) -> None:
    big = b"\xff" * (MAX_PHOTO_BYTES + 1)
    assert await error_code(await enroll(client, api_headers, big), 413) == "too_large"

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: counted while read
        for _ in range(MAX_PHOTO_BYTES // (1 << 20) + 1):
            yield b"\x00" * (1 << 20)

    response = await client.post(ENROLL.format("alice"), data=chunked(),
                                 headers={**api_headers, "Content-Type": "image/jpeg"})
    assert await error_code(response, 413) == "too_large"


async def test_only_integrators_enroll_and_erase(client: TestClient,
                                                 api_headers: dict[str, str],
                                                 photos: dict[str, RgbImage]) -> None:
    assert (await client.post(ENROLL.format("alice"), data=b"x")).status == 401
    created = await client.post("/api/v1/sessions", json={"candidate_id": "alice"},
                                headers=api_headers)
    tokens = await created.json()
    for token in (tokens["candidate_token"], tokens["proctor_token"]):
        assert (await enroll(client, bearer(token), encode(photos["obama"]))).status == 403
        assert (await client.delete("/api/v1/candidates/alice",
                                    headers=bearer(token))).status == 403


async def test_stored_embedding_is_sealed_to_key_and_candidate(
        client: TestClient, api_headers: dict[str, str], config: Config,
        photos: dict[str, RgbImage]) -> None:
    photo = encode(photos["obama"])
    assert (await enroll(client, api_headers, photo)).status == 201
    expected = identity(client).embed(decode_image(photo)).embedding
    assert expected is not None
    raw = expected.astype("<f4").tobytes()

    database = b"".join(p.read_bytes() for p in config.data_dir.glob("proctor.db*"))
    assert raw[:16] not in database and raw[-16:] not in database
    record = await client.app[STORE_KEY].get_enrollment("alice")
    assert record is not None and raw[:16] not in record.ciphertext
    assert record.model == "sface-2021dec-int8bq"

    key_file = config.data_dir / ENROLLMENT_KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    opened = open_enrollment(enrollment_cipher(config), record)
    assert cosine(opened, expected) > 0.9999
    moved = EnrollmentRecord(candidate_id="mallory", ciphertext=record.ciphertext,
                             nonce=record.nonce, model=record.model,
                             created_at=record.created_at)
    with pytest.raises(SealError):
        open_enrollment(enrollment_cipher(config), moved)
    with pytest.raises(SealError):
        open_enrollment(EmbeddingCipher(b"some other server's key"), record)
    # What a live session of hers gets: the same embedding, decrypted.
    live = await client.app[SESSIONS_KEY].load_enrollment("alice")
    assert live is not None and cosine(live, expected) > 0.9999
    assert await client.app[SESSIONS_KEY].load_enrollment("nobody") is None


async def test_reenrolling_replaces(client: TestClient, api_headers: dict[str, str],
                                    photos: dict[str, RgbImage]) -> None:
    assert (await enroll(client, api_headers, encode(photos["obama"]))).status == 201
    assert (await enroll(client, api_headers, encode(photos["biden"]))).status == 201
    live = await client.app[SESSIONS_KEY].load_enrollment("alice")
    biden = identity(client).embed(photos["biden"]).embedding
    assert live is not None and biden is not None and cosine(live, biden) > 0.99


async def test_a_changed_key_means_no_identity_checks_not_a_crash(
        tmp_path: Path, aiohttp_client: Callable[..., Awaitable[TestClient]],
        api_headers: dict[str, str], photos: dict[str, RgbImage]) -> None:
    first = await aiohttp_client(create_app(make_config(tmp_path)))
    assert (await enroll(first, api_headers, encode(photos["obama"]))).status == 201
    await first.close()
    rotated = make_config(tmp_path, detectors={"identity": {"enrollment_key": "new key"}})
    second = await aiohttp_client(create_app(rotated))
    assert await second.app[SESSIONS_KEY].load_enrollment("alice") is None


async def test_enrollment_needs_the_identity_detector(
        tmp_path: Path, aiohttp_client: Callable[..., Awaitable[TestClient]],
        api_headers: dict[str, str], photos: dict[str, RgbImage]) -> None:
    config = make_config(tmp_path, detectors={"identity": {"enabled": False}})
    client = await aiohttp_client(create_app(config))
    response = await enroll(client, api_headers, encode(photos["obama"]))
    assert await error_code(response, 503) == "identity_unavailable"


async def _session_with_evidence(client: TestClient, headers: dict[str, str], store: Store,
                                 candidate: str, clips_dir: Path) -> tuple[str, list[Path]]:
    response = await client.post("/api/v1/sessions", json={"candidate_id": candidate},
                                 headers=headers)
    sid = str((await response.json())["session_id"])
    files = []
    for n in range(2):
        flag = Flag(session_id=sid, candidate_id=candidate, kind=FlagKind.FACE_ABSENT,
                    severity=Severity.MODERATE, start=float(n * 10), end=float(n * 10 + 4))
        await store.save_flag(flag)
        path = clips_dir / f"{flag.flag_id}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\x00\x00\x00\x18ftypmp42")
        files.append(path)
        await store.save_clip(ClipRecord(clip_id=flag.flag_id, session_id=sid,
                                         flag_id=flag.flag_id, path=str(path),
                                         start=flag.start, end=flag.start + 8,
                                         size_bytes=12, created_at=flag.created_at))
    await store.add_event(EventRecord(event_id=f"e-{sid}", session_id=sid, type="paste",
                                      client_time=None, media_time=1.0,
                                      received_at="2024-01-01T00:00:00.000000Z"))
    return sid, files


async def test_delete_candidate_erases_everything_of_theirs(
        client: TestClient, api_headers: dict[str, str], config: Config,
        photos: dict[str, RgbImage]) -> None:
    store = client.app[STORE_KEY]
    assert (await enroll(client, api_headers, encode(photos["obama"]))).status == 201
    assert (await enroll(client, api_headers, encode(photos["biden"]),
                         candidate="other")).status == 201
    mine = [await _session_with_evidence(client, api_headers, store, "alice",
                                         config.clips_dir) for _ in range(2)]
    theirs = await _session_with_evidence(client, api_headers, store, "other",
                                          config.clips_dir)

    response = await client.delete("/api/v1/candidates/alice", headers=api_headers)
    assert response.status == 200, await response.text()
    assert (await response.json()) == {"candidate_id": "alice", "deleted": {
        "sessions": 2, "clips": 4, "enrollment": True}}
    assert await store.get_enrollment("alice") is None
    for sid, files in mine:
        assert await store.get_session(sid) is None
        assert await store.list_flags(sid) == [] and await store.list_clips(sid) == []
        assert await store.list_events(sid) == []
        assert not any(path.exists() for path in files)
    with sqlite3.connect(config.data_dir / "proctor.db") as conn:
        rows = conn.execute("SELECT COUNT(*) FROM flags WHERE candidate_id = 'alice'")
        assert rows.fetchone()[0] == 0

    # Another candidate keeps everything.
    sid, files = theirs
    assert await store.get_session(sid) is not None and len(await store.list_flags(sid)) == 2
    assert all(path.exists() for path in files)
    assert await store.get_enrollment("other") is not None

    again = await client.delete("/api/v1/candidates/alice", headers=api_headers)
    assert again.status == 404  # nothing of theirs is left to erase
