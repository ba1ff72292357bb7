"""Review, decision, audit and the candidate profile through the real app and SQLite store.

Flags are written straight to the store (no media needed to review them); sessions are
created and ended through the API, so the report under review is the service's own.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from proctor.config import Config
from proctor.flags.model import Evidence, Flag, FlagKind, Severity
from proctor.outbound import NoOutlet
from proctor.store.base import BreakRecord, EnrollmentRecord, SessionRecord, SessionStatus
from signaling.keys import SESSIONS_KEY, SIGNER_KEY, STORE_KEY
from tests.peers import bearer

API = "/api/v1"


class RecordingOutlet(NoOutlet):
    """The real do-nothing outlet, remembering what it was told."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []

    async def emit(self, event_type: str, session: SessionRecord,
                   data: dict[str, Any]) -> None:
        self.events.append((event_type, session.session_id, data))


async def _session(client: TestClient, headers: dict[str, str],
                   candidate_id: str = "c1") -> dict[str, Any]:
    response = await client.post(f"{API}/sessions", json={"candidate_id": candidate_id},
                                 headers=headers)
    assert response.status == 201, await response.text()
    return dict(await response.json())


async def _flag(client: TestClient, session_id: str, kind: FlagKind, severity: Severity,
                start: float, end: float) -> Flag:
    flag = Flag(session_id=session_id, candidate_id="c1", kind=kind, severity=severity,
                start=start, end=end, confidence=0.9,
                evidence=Evidence(metrics={"seconds": end - start}), source="test")
    await client.app[STORE_KEY].save_flag(flag)
    return flag


async def _two_high_flags(client: TestClient, session_id: str) -> list[Flag]:
    return [await _flag(client, session_id, FlagKind.FACE_ABSENT, Severity.HIGH, 10.0, 20.0),
            await _flag(client, session_id, FlagKind.MULTIPLE_FACES, Severity.HIGH, 40.0, 42.0)]


async def _json(response: Any, status: int = 200) -> Any:
    assert response.status == status, await response.text()
    return await response.json()


async def _error(response: Any, status: int, code: str | None = None) -> None:
    body = await _json(response, status)
    assert set(body["error"]) == {"code", "message"} and body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code


async def _review(client: TestClient, headers: dict[str, str], session_id: str,
                  flag_id: str, verdict: str, note: str | None = None) -> Any:
    body: dict[str, Any] = {"verdict": verdict}
    if note is not None:
        body["note"] = note
    return await client.post(f"{API}/sessions/{session_id}/flags/{flag_id}/review",
                             json=body, headers=headers)


async def _report(client: TestClient, headers: dict[str, str], session_id: str) -> Any:
    return await _json(await client.get(f"{API}/sessions/{session_id}/report",
                                        headers=headers))


async def _end(client: TestClient, headers: dict[str, str], session_id: str) -> None:
    await _json(await client.post(f"{API}/sessions/{session_id}/end", headers=headers))


async def test_dismissing_both_high_flags_turns_fail_into_pass(
        client: TestClient, api_headers: dict[str, str]) -> None:
    sid = (await _session(client, api_headers))["session_id"]
    first, second = await _two_high_flags(client, sid)
    await _end(client, api_headers, sid)
    before = await _report(client, api_headers, sid)
    assert (before["recommendation"], before["ai_recommendation"]) == ("FAIL", "FAIL")
    assert before["reviewed"] == {"confirmed": 0, "dismissed": 0, "pending": 2}
    assert before["decision"] is None and [f["review"] for f in before["flags"]] == [None] * 2

    flag = await _json(await _review(client, api_headers, sid, first.flag_id, "dismissed",
                                     "a reflection, not a person"))
    assert flag["flag_id"] == first.flag_id and flag["kind"] == "face_absent"
    assert set(flag["review"]) == {"verdict", "note", "by", "at"}
    assert flag["review"]["verdict"] == "dismissed" and flag["review"]["by"] == "config"
    assert flag["review"]["note"] == "a reflection, not a person"
    middle = await _report(client, api_headers, sid)
    assert (middle["recommendation"], middle["ai_recommendation"]) == ("REVIEW", "FAIL")

    await _json(await _review(client, api_headers, sid, second.flag_id, "dismissed"))
    after = await _report(client, api_headers, sid)
    assert (after["recommendation"], after["ai_recommendation"]) == ("PASS", "FAIL")
    assert after["reviewed"] == {"confirmed": 0, "dismissed": 2, "pending": 0}
    assert after["integrity_score"] > after["ai_integrity_score"]
    assert after["merged_flags"] == 0 and len(after["flags"]) == 2  # kept, marked dismissed
    assert after["metrics"] == before["metrics"] and after["pipeline"] == before["pipeline"]
    assert after["transcript"] == before["transcript"]
    # The recomputed report is the stored one, so listings show it too.
    stored = await client.app[STORE_KEY].get_session(sid)
    assert stored is not None and stored.report is not None
    assert stored.report["recommendation"] == "PASS"
    summary = await _json(await client.get(f"{API}/sessions/{sid}", headers=api_headers))
    assert summary["recommendation"] == "PASS"
    flags = (await _json(await client.get(f"{API}/sessions/{sid}/flags",
                                          headers=api_headers)))["flags"]
    assert [f["review"]["verdict"] for f in flags] == ["dismissed", "dismissed"]


async def test_a_flag_reviewed_again_counts_its_latest_and_the_audit_keeps_all(
        client: TestClient, api_headers: dict[str, str]) -> None:
    created = await _session(client, api_headers)
    sid, proctor = created["session_id"], bearer(created["proctor_token"])
    token_id = client.app[SIGNER_KEY].verify(created["proctor_token"]).token_id
    first, second = await _two_high_flags(client, sid)
    # Reviews are allowed while the session has not ended; the report follows at the end.
    await _json(await _review(client, proctor, sid, first.flag_id, "dismissed", "glare"))
    await _end(client, api_headers, sid)
    assert (await _report(client, proctor, sid))["recommendation"] == "REVIEW"
    again = await _json(await _review(client, api_headers, sid, first.flag_id, "confirmed",
                                      "looked again: nobody there"))
    assert again["review"]["verdict"] == "confirmed"
    await _json(await _review(client, proctor, sid, second.flag_id, "confirmed"))
    report = await _report(client, api_headers, sid)
    assert report["recommendation"] == "FAIL"
    assert report["reviewed"] == {"confirmed": 2, "dismissed": 0, "pending": 0}

    audit = await _json(await client.get(f"{API}/sessions/{sid}/audit", headers=proctor))
    entries = audit["entries"]
    assert all(set(e) == {"at", "actor", "action", "details"} for e in entries)
    assert [e["at"] for e in entries] == sorted(e["at"] for e in entries)  # oldest first
    reviews = [e for e in entries if e["action"] == "review"]
    assert [(e["actor"], e["details"]["flag_id"], e["details"]["verdict"]) for e in reviews] == [
        (f"proctor:{token_id}", first.flag_id, "dismissed"),
        ("config", first.flag_id, "confirmed"),
        (f"proctor:{token_id}", second.flag_id, "confirmed")]
    assert reviews[0]["details"]["note"] == "glare"
    assert reviews[0]["details"]["kind"] == "face_absent"


async def test_decisions_need_a_finished_session_and_the_latest_counts(
        client: TestClient, api_headers: dict[str, str]) -> None:
    created = await _session(client, api_headers)
    sid, proctor = created["session_id"], bearer(created["proctor_token"])
    path = f"{API}/sessions/{sid}/decision"
    await _error(await client.post(path, json={"decision": "pass"}, headers=api_headers),
                 409, "not_finished")  # created, not started
    await client.app[STORE_KEY].update_session(sid, status=SessionStatus.LIVE)
    await _error(await client.post(path, json={"decision": "pass"}, headers=proctor), 409)
    await client.app[STORE_KEY].update_session(sid, status=SessionStatus.CREATED)
    await _two_high_flags(client, sid)
    await _end(client, api_headers, sid)

    failed = await _json(await client.post(path, json={"decision": "fail", "note": "seen"},
                                           headers=proctor))
    assert failed["decision"]["decision"] == "fail" and failed["decision"]["note"] == "seen"
    assert failed["recommendation"] == "FAIL"
    passed = await _json(await client.post(path, json={"decision": "pass"},
                                           headers=api_headers))
    assert set(passed["decision"]) == {"decision", "note", "by", "at"}
    report = await _report(client, api_headers, sid)
    assert report["decision"] == passed["decision"]  # the later one supersedes
    assert report["decision"]["by"] == "config" and report["decision"]["note"] == ""
    assert report["recommendation"] == "FAIL"  # advice stays the machine's and reviewers'
    entries = (await _json(await client.get(f"{API}/sessions/{sid}/audit",
                                            headers=api_headers)))["entries"]
    decisions = [e["details"]["decision"] for e in entries if e["action"] == "decision"]
    assert decisions == ["fail", "pass"]


async def test_review_and_decision_refuse_bad_input_and_foreign_scope(
        client: TestClient, api_headers: dict[str, str]) -> None:
    mine, other = await _session(client, api_headers), await _session(client, api_headers)
    sid, proctor = mine["session_id"], bearer(mine["proctor_token"])
    flag = await _flag(client, sid, FlagKind.GAZE_AWAY, Severity.MODERATE, 5.0, 9.0)
    foreign = await _flag(client, other["session_id"], FlagKind.GAZE_AWAY, Severity.LOW, 1, 2)
    await _error(await _review(client, proctor, sid, "no-such-flag", "confirmed"), 404)
    await _error(await _review(client, proctor, sid, foreign.flag_id, "confirmed"), 404,
                 "not_found")  # a flag of another session is none of this one's
    await _error(await _review(client, proctor, other["session_id"], foreign.flag_id,
                               "confirmed"), 403, "forbidden")  # not covered by the token
    await _error(await _review(client, bearer(mine["candidate_token"]), sid, flag.flag_id,
                               "dismissed"), 403)
    for verdict in ("maybe", "CONFIRMED", ""):
        await _error(await _review(client, proctor, sid, flag.flag_id, verdict), 400)
    review_path = f"{API}/sessions/{sid}/flags/{flag.flag_id}/review"
    for body in ({}, {"verdict": "confirmed", "note": 5}, {"verdict": ["confirmed"]}):
        await _error(await client.post(review_path, json=body, headers=proctor), 400)
    await _error(await client.post(review_path, data=b"{nope", headers=proctor), 400)
    await _error(await _review(client, proctor, sid, flag.flag_id, "confirmed", "x" * 2001),
                 400)
    longest = await _json(await _review(client, proctor, sid, flag.flag_id, "confirmed",
                                        "x" * 2000))
    assert len(longest["review"]["note"]) == 2000
    await _end(client, api_headers, sid)
    decision = f"{API}/sessions/{sid}/decision"
    for body in ({}, {"decision": "maybe"}, {"decision": "pass", "note": "x" * 2001}):
        await _error(await client.post(decision, json=body, headers=proctor), 400)
    await _error(await client.post(f"{API}/sessions/{other['session_id']}/decision",
                                   json={"decision": "pass"}, headers=proctor), 403)
    await _error(await client.get(f"{API}/sessions/{other['session_id']}/audit",
                                  headers=proctor), 403)
    await _error(await client.get(f"{API}/sessions/nope/audit", headers=api_headers), 404)
    await _error(await client.get(f"{API}/candidates/c1", headers=proctor), 403)


async def test_reviews_and_decisions_are_announced(client: TestClient,
                                                   api_headers: dict[str, str]) -> None:
    outlet = RecordingOutlet()
    client.app[SESSIONS_KEY].outlet = outlet
    sid = (await _session(client, api_headers))["session_id"]
    flag = await _flag(client, sid, FlagKind.PASTE, Severity.LOW, 3.0, 3.0)
    await _end(client, api_headers, sid)
    reviewed = await _json(await _review(client, api_headers, sid, flag.flag_id, "confirmed"))
    decided = await _json(await client.post(f"{API}/sessions/{sid}/decision",
                                            json={"decision": "pass"}, headers=api_headers))
    mine = [(t, data) for t, s, data in outlet.events
            if s == sid and t in ("flag.reviewed", "decision.made")]
    assert mine == [("flag.reviewed", {"flag": reviewed, "review": reviewed["review"]}),
                    ("decision.made", {"decision": decided["decision"]})]


async def test_the_report_carries_the_risk_curve_breaks_and_a_review_link(
        client: TestClient, api_headers: dict[str, str]) -> None:
    created = await _session(client, api_headers)
    sid = created["session_id"]
    await _flag(client, sid, FlagKind.FACE_ABSENT, Severity.HIGH, 10.0, 20.0)
    await client.app[STORE_KEY].save_break(BreakRecord(
        "b1", sid, media_start=30.0, media_end=50.0, reason="water", actor="config",
        created_at="2026-01-01T00:00:00.000000Z"))
    await _end(client, api_headers, sid)
    report = await _report(client, api_headers, sid)
    assert report["breaks"] == [{"break_id": "b1", "start": 30.0, "end": 50.0,
                                 "reason": "water", "by": "config"}]
    assert report["duration"] == 50.0
    curve = report["risk_curve"]
    assert curve[0] == [0.0, 0.0] and curve[-1][0] == 50.0
    assert [t for t, _ in curve][:3] == [0.0, 2.0, 4.0]
    assert dict((t, r) for t, r in curve)[12.0] == 35.0  # a high flag's full weight, open
    assert 0 < curve[-1][1] < 35.0  # decaying after it closed

    token = created["proctor_token"]
    page = await client.get(f"{API}/sessions/{sid}/report?format=html&token={token}")
    html = await page.text()
    assert page.status == 200
    assert f"/static/review.html?session={sid}&amp;token={token}" in html
    assert "pending 1" in html
    review_page = await client.get("/static/review.html")
    assert review_page.status == 200 and "<svg" in await review_page.text()
    dashboard = await (await client.get("/static/dashboard.html")).text()
    assert "review.html?session=" in dashboard  # each session's card links to its review
    spec = await _json(await client.get(f"{API}/openapi.json"))
    assert "post" in spec["paths"]["/sessions/{session_id}/flags/{flag_id}/review"]
    assert "get" in spec["paths"]["/candidates/{candidate_id}"]


async def test_candidate_profile_across_sessions(client: TestClient,
                                                 api_headers: dict[str, str]) -> None:
    first = (await _session(client, api_headers, "alice"))["session_id"]
    second = (await _session(client, api_headers, "alice"))["session_id"]
    third = (await _session(client, api_headers, "alice"))["session_id"]
    high = await _flag(client, first, FlagKind.PHONE_DETECTED, Severity.HIGH, 5.0, 8.0)
    await _flag(client, first, FlagKind.GAZE_AWAY, Severity.MODERATE, 30.0, 34.0)
    lone = await _flag(client, second, FlagKind.GAZE_AWAY, Severity.LOW, 3.0, 4.0)
    for sid in (first, second):
        await _end(client, api_headers, sid)
    await _json(await _review(client, api_headers, second, lone.flag_id, "dismissed"))
    await _json(await _review(client, api_headers, first, high.flag_id, "confirmed"))
    await _json(await client.post(f"{API}/sessions/{first}/decision",
                                  json={"decision": "fail"}, headers=api_headers))

    profile = await _json(await client.get(f"{API}/candidates/alice", headers=api_headers))
    assert profile["candidate_id"] == "alice" and profile["enrolled"] is False
    assert (profile["sessions_total"], profile["sessions_analysed"],
            profile["sessions_flagged"]) == (3, 2, 1)
    assert profile["top_flag_kinds"] == [{"kind": "phone_detected", "count": 1},
                                         {"kind": "gaze_away", "count": 1}]
    by_id = {s["session_id"]: s for s in profile["sessions"]}
    assert [s["session_id"] for s in profile["sessions"]] == [third, second, first]
    assert by_id[first]["recommendation"] == "REVIEW"
    assert by_id[first]["decision"]["decision"] == "fail"
    assert by_id[second]["recommendation"] == "PASS" and by_id[second]["decision"] is None
    assert by_id[third]["status"] == "created" and by_id[third]["recommendation"] is None
    assert set(by_id[first]) >= {"session_id", "status", "created_at", "recommendation"}
    scores = [by_id[first]["integrity_score"], by_id[second]["integrity_score"]]
    assert profile["mean_integrity_score"] == round(sum(scores) / 2, 4)

    await _error(await client.get(f"{API}/candidates/nobody", headers=api_headers), 404)
    await client.app[STORE_KEY].save_enrollment(EnrollmentRecord(
        "bob", b"sealed", bytes(12), "model", "2026-01-01T00:00:00.000000Z"))
    enrolled = await _json(await client.get(f"{API}/candidates/bob", headers=api_headers))
    assert enrolled["enrolled"] is True and enrolled["sessions_analysed"] == 0
    assert enrolled["mean_integrity_score"] is None and enrolled["sessions"] == []


async def test_erasure_leaves_an_audit_entry_without_the_candidate(
        client: TestClient, api_headers: dict[str, str], config: Config) -> None:
    sid = (await _session(client, api_headers, "carol@example.org"))["session_id"]
    await _flag(client, sid, FlagKind.PASTE, Severity.LOW, 3.0, 3.0)
    await _end(client, api_headers, sid)
    erased = await client.delete(f"{API}/candidates/carol@example.org", headers=api_headers)
    await _json(erased)
    db = Path(config.store.removeprefix("sqlite:///"))
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT session_id, candidate_id, actor, details FROM audit "
                            "WHERE action = 'erasure'").fetchall()
    assert len(rows) == 1
    session_id, candidate_id, actor, details = rows[0]
    assert (session_id, candidate_id, actor) == (None, None, "config")
    assert "carol" not in details and '"sessions":1' in details and '"clips":0' in details
