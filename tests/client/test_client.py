"""The integrator client against the real app (real routes, real SQLite store), served
by aiohttp's test server on 127.0.0.1: every call goes over HTTP through the client.

Flags are written straight to the store (no media is needed to review them); sessions
are created, ended, reviewed and decided through the client.
"""

from __future__ import annotations

import inspect
import re
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import cv2
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from proctor.client import ProctorClient, ProctorConnectionError, ProctorError, SyncProctorClient
from proctor.config import Config
from proctor.flags.model import Evidence, Flag, FlagKind, Severity
from proctor.store.base import ClipRecord
from signaling.keys import STORE_KEY
from tests.conftest import API_KEY, make_config

AppClient = TestClient[web.Request, web.Application]
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


@pytest.fixture
def config(tmp_path: Path) -> Config:
    # The delivery worker polls often, so a webhook arrives within the test's patience.
    return make_config(tmp_path, webhooks={"retry_initial_seconds": 0.5,
                                           "poll_seconds": 0.1, "timeout_seconds": 2.0})


@pytest.fixture
async def proctor(client: AppClient) -> AsyncIterator[ProctorClient]:
    async with ProctorClient(str(client.make_url("")), API_KEY) as integrator:
        yield integrator


async def _flag(client: AppClient, session_id: str, kind: FlagKind, start: float,
                end: float, severity: Severity = Severity.HIGH) -> Flag:
    flag = Flag(session_id=session_id, candidate_id="alice", kind=kind, severity=severity,
                start=start, end=end, confidence=0.9,
                evidence=Evidence(metrics={"seconds": end - start}), source="test")
    await client.app[STORE_KEY].save_flag(flag)
    return flag


async def _raises(work: object, status: int, code: str | None = None) -> ProctorError:
    assert inspect.isawaitable(work)
    with pytest.raises(ProctorError) as caught:
        await work
    error = caught.value
    assert error.status == status, error
    if code is not None:
        assert error.code == code, error
    assert error.message and str(status) in str(error)
    return error


# Sessions --------------------------------------------------------------------------

async def test_session_lifecycle(proctor: ProctorClient) -> None:
    created = await proctor.create_session("alice", exam_id="math-101",
                                           metadata={"seat": 7})
    assert set(created) == {"session_id", "candidate_token", "proctor_token", "expires_at"}
    assert ISO_UTC.match(created["expires_at"]), created
    sid = created["session_id"]

    summary = await proctor.get_session(sid)
    assert (summary["session_id"], summary["candidate_id"], summary["exam_id"]) == (
        sid, "alice", "math-101")
    assert summary["status"] == "created" and summary["metadata"] == {"seat": 7}
    assert summary.get("flag_counts") == {}

    assert sid in [s["session_id"] for s in await proctor.list_sessions()]
    assert sid in [s["session_id"] for s in await proctor.list_sessions("created")]
    assert sid not in [s["session_id"] for s in await proctor.list_sessions("ended")]

    ended = await proctor.end_session(sid)
    assert ended["session_id"] == sid and ended["status"] == "ended"
    assert ended["recommendation"] in ("PASS", "REVIEW", "FAIL")
    assert (await proctor.end_session(sid))["status"] == "ended"  # idempotent
    assert (await proctor.get_session(sid))["status"] == "ended"
    assert sid in [s["session_id"] for s in await proctor.list_sessions("ended")]

    report = await proctor.get_report(sid)
    assert report["session_id"] == sid and report["candidate_id"] == "alice"
    assert report["recommendation"] == ended["recommendation"]
    assert report["reviewed"] == {"confirmed": 0, "dismissed": 0, "pending": 0}
    assert report["flags"] == [] and report["decision"] is None

    transcript = await proctor.get_transcript(sid)
    assert (transcript["segments"], transcript["text"]) == ([], "")
    assert await proctor.list_flags(sid) == []
    audit = await proctor.get_audit(sid)
    assert [e["action"] for e in audit] == ["end"]  # the second end changed nothing
    assert audit[0]["actor"] == "config" and set(audit[0]) == {"at", "actor", "action",
                                                                "details"}


async def test_errors_carry_the_servers_status_and_code(client: AppClient,
                                                        proctor: ProctorClient) -> None:
    await _raises(proctor.get_session("no-such-session"), 404, "not_found")
    await _raises(proctor.get_report("no-such-session"), 404, "not_found")
    await _raises(proctor.create_session("  "), 400, "bad_request")
    await _raises(proctor.list_sessions("sleeping"), 400, "bad_request")  # type: ignore[arg-type]
    sid = (await proctor.create_session("alice"))["session_id"]
    await _raises(proctor.get_report(sid), 409, "not_ended")
    await _raises(proctor.decide(sid, "pass"), 409, "not_finished")
    await _raises(proctor.review_flag(sid, "no-such-flag", "confirmed"), 404, "not_found")

    async with ProctorClient(proctor.base_url, "wrong-key") as stranger:
        await _raises(stranger.list_sessions(), 401, "invalid_api_key")
    # A proctor token opens its own session only, and no integrator route.
    other = await proctor.create_session("bob")
    watcher = proctor.with_credential(other["proctor_token"])
    assert (await watcher.get_session(other["session_id"]))["candidate_id"] == "bob"
    await _raises(watcher.get_session(sid), 403, "forbidden")
    await _raises(watcher.create_session("mallory"), 403, "forbidden")


async def test_no_answer_is_a_connection_error() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with ProctorClient(f"http://127.0.0.1:{port}", API_KEY, timeout=5) as nobody:
        with pytest.raises(ProctorConnectionError) as caught:
            await nobody.list_sessions()
    assert (caught.value.status, caught.value.code) == (0, "unreachable")
    with pytest.raises(ValueError):
        ProctorClient("127.0.0.1:8080", API_KEY)


async def test_ids_are_quoted_into_one_path_segment(proctor: ProctorClient) -> None:
    # An id with a slash or a query in it names a (missing) session; it does not reach
    # another route.
    await _raises(proctor.get_session("x/flags"), 404, "not_found")
    await _raises(proctor.get_session("x?status=live"), 404, "not_found")


# Proctor tokens, review, decision --------------------------------------------------

async def test_exam_proctor_token_covers_the_exam_only(proctor: ProctorClient) -> None:
    first = await proctor.create_session("alice", exam_id="exam-a")
    elsewhere = await proctor.create_session("bob", exam_id="exam-b")
    token = await proctor.create_proctor_token(exam_id="exam-a")
    assert ISO_UTC.match(token["expires_at"])
    later = await proctor.create_session("carol", exam_id="exam-a")  # made after the token
    dashboard = proctor.with_credential(token["proctor_token"])
    seen = {s["session_id"] for s in await dashboard.list_sessions()}
    assert seen == {first["session_id"], later["session_id"]}
    await _raises(dashboard.get_session(elsewhere["session_id"]), 403, "forbidden")

    pair = await proctor.create_proctor_token(sessions=[first["session_id"],
                                                        elsewhere["session_id"]])
    both = proctor.with_credential(pair["proctor_token"])
    assert {s["session_id"] for s in await both.list_sessions()} == {
        first["session_id"], elsewhere["session_id"]}
    await _raises(proctor.create_proctor_token(), 400, "bad_request")
    await _raises(proctor.create_proctor_token(sessions=["no-such-session"]), 404)


async def test_review_and_decide_as_a_proctor(client: AppClient,
                                              proctor: ProctorClient) -> None:
    created = await proctor.create_session("alice")
    sid = created["session_id"]
    absent = await _flag(client, sid, FlagKind.FACE_ABSENT, 10.0, 20.0)
    faces = await _flag(client, sid, FlagKind.MULTIPLE_FACES, 40.0, 42.0)
    await proctor.end_session(sid)
    before = await proctor.get_report(sid)
    assert (before["recommendation"], before["ai_recommendation"]) == ("FAIL", "FAIL")
    flags = await proctor.list_flags(sid)
    assert {f["flag_id"] for f in flags} == {absent.flag_id, faces.flag_id}
    assert [f.get("review") for f in flags] == [None, None]

    reviewer = proctor.with_credential(created["proctor_token"])
    reviewed = await reviewer.review_flag(sid, absent.flag_id, "dismissed",
                                          "a reflection, not a person")
    assert reviewed["flag_id"] == absent.flag_id and reviewed["kind"] == "face_absent"
    review = reviewed.get("review")
    assert review is not None and review["verdict"] == "dismissed"
    assert review["note"] == "a reflection, not a person"
    assert review["by"].startswith("proctor:")
    await reviewer.review_flag(sid, faces.flag_id, "dismissed")
    after = await reviewer.get_report(sid)
    assert (after["recommendation"], after["ai_recommendation"]) == ("PASS", "FAIL")
    assert after["reviewed"] == {"confirmed": 0, "dismissed": 2, "pending": 0}

    decided = await reviewer.decide(sid, "pass", "both flags were reflections")
    assert decided["session_id"] == sid and decided["decision"]["decision"] == "pass"
    assert decided["recommendation"] == "PASS" and decided["ai_recommendation"] == "FAIL"
    report = await proctor.get_report(sid)
    decision = report["decision"]
    assert decision is not None and decision["note"] == "both flags were reflections"
    await _raises(reviewer.decide(sid, "maybe"), 400, "bad_request")  # type: ignore[arg-type]

    audit = await proctor.get_audit(sid)
    assert [e["action"] for e in audit] == ["end", "review", "review", "decision"]
    assert {e["actor"] for e in audit[1:]} == {review["by"]}
    assert audit[1]["details"]["flag_id"] == absent.flag_id


# Webhooks --------------------------------------------------------------------------

async def test_webhooks_register_deliver_verify_delete(proctor: ProctorClient) -> None:
    from proctor.client import verify_webhook
    from tests.outbound.receiver import Receiver

    receiver = await Receiver().start()
    try:
        made = await proctor.create_webhook(receiver.url, events=["session.ended"])
        assert made["url"] == receiver.url and made["events"] == ["session.ended"]
        assert made["secret"]
        listed = await proctor.list_webhooks()
        assert [w["webhook_id"] for w in listed] == [made["webhook_id"]]
        assert "secret" not in listed[0]  # shown once, at creation

        sid = (await proctor.create_session("alice"))["session_id"]
        await proctor.end_session(sid)
        (delivery,) = await receiver.wait_for(1)
        assert verify_webhook(made["secret"], delivery.headers, delivery.body)
        assert not verify_webhook("another-secret", delivery.headers, delivery.body)
        event = delivery.event
        assert (event["type"], event["session_id"]) == ("session.ended", sid)

        log = await proctor.list_deliveries(made["webhook_id"])
        assert [d["event_id"] for d in log] == [event["event_id"]]
        assert len(await proctor.list_deliveries(made["webhook_id"], limit=1)) == 1
        await _raises(proctor.list_deliveries(made["webhook_id"], limit=0), 400)

        gone = await proctor.delete_webhook(made["webhook_id"])
        assert gone == {"webhook_id": made["webhook_id"], "deleted": True}
        assert await proctor.list_webhooks() == []
        await _raises(proctor.delete_webhook(made["webhook_id"]), 404, "not_found")
        await _raises(proctor.create_webhook("not a url"), 400)
    finally:
        await receiver.close()


# Candidates, nodes, clips ----------------------------------------------------------

async def test_enroll_profile_erase(proctor: ProctorClient) -> None:
    from tests.detectors.photos import face_recognition_photo

    photo = face_recognition_photo("obama.jpg")  # skips when the photos can't be had
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
    assert ok
    enrolled = await proctor.enroll_candidate("alice", bytes(jpeg.tobytes()))
    assert enrolled["candidate_id"] == "alice" and enrolled["enrolled"] is True
    assert 0 < enrolled["quality"]["score"] <= 1
    await _raises(proctor.enroll_candidate("alice", b"not an image"), 400, "not_an_image")

    sid = (await proctor.create_session("alice"))["session_id"]
    await proctor.end_session(sid)
    profile = await proctor.get_candidate("alice")
    assert profile["enrolled"] is True and profile["sessions_total"] == 1
    assert [s["session_id"] for s in profile["sessions"]] == [sid]

    erased = await proctor.erase_candidate("alice")
    assert erased == {"candidate_id": "alice",
                      "deleted": {"sessions": 1, "clips": 0, "enrollment": True}}
    await _raises(proctor.get_candidate("alice"), 404, "not_found")
    await _raises(proctor.get_session(sid), 404, "not_found")


async def test_nodes(proctor: ProctorClient) -> None:
    nodes = await proctor.list_nodes()
    assert len(nodes) == 1 and nodes[0]["this_node"] and nodes[0]["alive"]
    assert nodes[0]["capacity"] == 16  # tests/conftest.py's rtc.max_sessions


async def test_download_clip(client: AppClient, proctor: ProctorClient,
                             tmp_path: Path) -> None:
    sid = (await proctor.create_session("alice"))["session_id"]
    flag = await _flag(client, sid, FlagKind.PHONE_DETECTED, 3.0, 5.0)
    body = bytes(range(256)) * 40  # the bytes come back as stored, whatever they are
    path = tmp_path / "clip.mp4"
    path.write_bytes(body)
    await client.app[STORE_KEY].save_clip(ClipRecord(
        clip_id=flag.flag_id, session_id=sid, flag_id=flag.flag_id, path=str(path),
        start=1.0, end=7.0, size_bytes=len(body), created_at="2026-01-01T00:00:00Z"))
    assert await proctor.download_clip(flag.flag_id) == body
    await _raises(proctor.download_clip("no-such-clip"), 404, "not_found")


# The blocking client ---------------------------------------------------------------

def test_sync_client_wraps_every_call() -> None:
    calls = {name for name, member in inspect.getmembers(ProctorClient)
             if inspect.iscoroutinefunction(member) and not name.startswith("_")
             and name != "close"}
    wrapped = {name for name in calls if getattr(SyncProctorClient, name, None) is not None}
    assert calls == wrapped, f"not in SyncProctorClient: {sorted(calls - wrapped)}"
    for name in calls:
        blocking = getattr(SyncProctorClient, name)
        assert not inspect.iscoroutinefunction(blocking)
        assert blocking.__wrapped__ is getattr(ProctorClient, name)  # the one implementation
