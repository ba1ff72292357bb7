"""Reports rebuilt from reviews: one definition for the machine's verdict and the reviewed
one, over a real SQLite store; the live-risk curve against SPEC's weights and half-life."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from proctor.config import ScoringConfig
from proctor.flags.model import Flag, FlagKind, Severity
from proctor.flags.scoring import live_risk, risk_curve
from proctor.report import build_report
from proctor.review.reports import current_report, latest_reviews, refresh_report
from proctor.store import Store, open_store_from_url
from proctor.store.base import ReviewRecord, SessionRecord, SessionStatus

SCORING = ScoringConfig()


def _flag(flag_id: str, kind: FlagKind, severity: Severity, start: float,
          end: float | None) -> Flag:
    return Flag(session_id="s1", candidate_id="c1", kind=kind, severity=severity,
                start=start, end=end, flag_id=flag_id)


def _review(flag_id: str, verdict: str, at: str) -> ReviewRecord:
    return ReviewRecord(review_id=f"{flag_id}-{at}", flag_id=flag_id, session_id="s1",
                        verdict=verdict, note="", actor="config", created_at=at)


RECORD = SessionRecord(session_id="s1", candidate_id="c1", created_at="2026-01-01T00:00Z")
HIGHS = [_flag("a", FlagKind.FACE_ABSENT, Severity.HIGH, 10.0, 20.0),
         _flag("b", FlagKind.PHONE_DETECTED, Severity.HIGH, 30.0, 33.0),
         _flag("c", FlagKind.GAZE_AWAY, Severity.MODERATE, 50.0, 54.0)]


def test_without_reviews_the_machine_and_the_reviewed_verdicts_agree() -> None:
    report = build_report(RECORD, HIGHS, {"focus": 0.9}, SCORING)
    assert report["recommendation"] == report["ai_recommendation"] == "FAIL"
    assert report["integrity_score"] == report["ai_integrity_score"]
    assert report["reviewed"] == {"confirmed": 0, "dismissed": 0, "pending": 3}
    assert report["decision"] is None and report["breaks"] == []
    assert all(f["review"] is None for f in report["flags"])
    assert report["duration"] == 54.0 and report["risk_curve"][-1][0] == 54.0
    analysed_file = build_report(RECORD, HIGHS, {"media_seconds": 90.5}, SCORING)
    assert analysed_file["duration"] == 90.5  # a file's analysis counted its media


def test_dismissed_flags_count_for_no_rule_and_no_penalty() -> None:
    reviews = latest_reviews([_review("a", "dismissed", "1"), _review("b", "confirmed", "2")])
    report = build_report(RECORD, HIGHS, {"focus": 0.9}, SCORING, reviews=reviews)
    assert (report["ai_recommendation"], report["recommendation"]) == ("FAIL", "REVIEW")
    # 0.7 × 0.9 + 0.3 × (1 − 0.10 − 0.05): the dismissed high flag costs nothing.
    assert report["integrity_score"] == round(0.7 * 0.9 + 0.3 * (1 - 0.15), 4)
    assert report["ai_integrity_score"] == round(0.7 * 0.9 + 0.3 * (1 - 0.25), 4)
    assert report["reviewed"] == {"confirmed": 1, "dismissed": 1, "pending": 1}
    assert report["totals"]["face_absent"]["count"] == 1  # the machine's findings stay
    assert [f["review"]["verdict"] if f["review"] else None for f in report["flags"]] == [
        "dismissed", "confirmed", None]


def test_the_latest_review_counts() -> None:
    reviews = latest_reviews([_review("a", "dismissed", "1"), _review("a", "confirmed", "2"),
                              _review("b", "dismissed", "3")])
    assert {k: r.verdict for k, r in reviews.items()} == {"a": "confirmed", "b": "dismissed"}
    report = build_report(RECORD, HIGHS, {}, SCORING, reviews=reviews)
    assert report["recommendation"] == "REVIEW"


def test_an_interrupted_session_is_never_a_pass() -> None:
    report = build_report(RECORD, [], {}, SCORING, interrupted=True)
    assert report["recommendation"] == report["ai_recommendation"] == "REVIEW"


def test_the_risk_curve_follows_live_risk() -> None:
    flags = HIGHS[:1]
    curve = risk_curve(flags, 20.0 + 120.0, SCORING)
    times = [t for t, _ in curve]
    assert times[:3] == [0.0, 2.0, 4.0] and times[-1] == 140.0
    risk = dict((t, r) for t, r in curve)
    assert risk[8.0] == 0.0 and risk[10.0] == 35.0 and risk[20.0] == 35.0
    assert risk[140.0] == 17.5  # one half-life after the flag closed
    assert all(risk[t] == live_risk(flags, t, SCORING) for t in (12.0, 60.0, 100.0))
    open_flag = [_flag("o", FlagKind.VIDEO_LOST, Severity.LOW, 1.0, None)]
    assert risk_curve(open_flag, 3.0, SCORING) == [[0.0, 0.0], [2.0, 5.0], [3.0, 5.0]]
    assert risk_curve([], 0.0, SCORING) == [[0.0, 0.0]]
    long = risk_curve(flags, 36_000.0, SCORING)  # ten hours: the step widens
    assert len(long) <= 1001 and long[-1][0] == 36_000.0


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = open_store_from_url(f"sqlite:///{tmp_path}/proctor.db")
    await s.open()
    yield s
    await s.close()


async def test_a_stored_report_keeps_its_measurements_when_rebuilt(store: Store) -> None:
    await store.create_session(RECORD)
    for flag in HIGHS:
        await store.save_flag(flag)
    stats: dict[str, Any] = {"focus": 0.8, "frames_received": 300, "analysis_lag_p95": 0.04}
    machine = build_report(RECORD, HIGHS, stats, SCORING)
    machine["transcript"] = {"segments": [], "text": "", "complete": True}
    machine["interrupted"] = {"at_media_time": 60.0, "node": "n1"}
    record = SessionRecord(**{**RECORD.__dict__, "status": SessionStatus.INTERRUPTED,
                              "report": machine})
    await store.update_session("s1", status=SessionStatus.INTERRUPTED, report=machine)
    for flag_id in ("a", "b", "c"):
        await store.add_review(_review(flag_id, "dismissed", f"2026-01-01T00:0{flag_id}"))

    rebuilt = await refresh_report(store, record, SCORING)
    assert rebuilt is not None
    assert rebuilt["recommendation"] == "REVIEW"  # no flag left, but it was interrupted
    assert rebuilt["ai_recommendation"] == "FAIL"
    assert rebuilt["metrics"] == machine["metrics"] and rebuilt["metrics"]["focus"] == 0.8
    assert rebuilt["pipeline"] == machine["pipeline"] == {"frames_received": 300,
                                                          "analysis_lag_p95": 0.04}
    assert rebuilt["transcript"] == machine["transcript"]
    assert rebuilt["interrupted"] == machine["interrupted"]
    stored = await store.get_session("s1")
    assert stored is not None and stored.report == rebuilt
    # Rebuilding again changes nothing: the rebuilt report is as good an input.
    assert await current_report(store, stored, SCORING) == rebuilt
    unended = SessionRecord(session_id="s1", candidate_id="c1")
    assert await current_report(store, unended, SCORING) is None
