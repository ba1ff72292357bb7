"""Reviews, decisions, breaks and the audit in the Store, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import pytest

from proctor.store import Store, StoreIntegrityError
from proctor.store.base import AuditEntry, BreakRecord, DecisionRecord, ReviewRecord
from tests.store.factories import session


def _review(review_id: str, verdict: str = "confirmed", at: str = "2024-01-01T00:01:00.000000Z",
            flag_id: str = "f1", session_id: str = "s1") -> ReviewRecord:
    return ReviewRecord(review_id=review_id, flag_id=flag_id, session_id=session_id,
                        verdict=verdict, note=f"note {review_id} ✓", actor="config",
                        created_at=at)


def _decision(decision_id: str, decision: str, at: str) -> DecisionRecord:
    return DecisionRecord(decision_id=decision_id, session_id="s1", decision=decision,
                          note="", actor="proctor:abc", created_at=at)


def _entry(entry_id: str, at: str, session_id: str | None = "s1",
           action: str = "review") -> AuditEntry:
    return AuditEntry(entry_id=entry_id, session_id=session_id, candidate_id=None, at=at,
                      actor="config", action=action,
                      details={"flag_id": "f1", "nested": {"n": [1, 2.5, None]}})


async def test_reviews_are_kept_oldest_first_per_session(store: Store) -> None:
    await store.create_session(session("s1"))
    await store.create_session(session("s2"))
    later = _review("r2", "dismissed", at="2024-01-01T00:02:00.000000Z")
    earlier = _review("r1", at="2024-01-01T00:01:00.000000Z")
    same_time = _review("r0", at="2024-01-01T00:02:00.000000Z", flag_id="f2")
    for record in (later, earlier, same_time):
        await store.add_review(record)
    await store.add_review(_review("x1", session_id="s2"))
    # By time, then id: two reviews in the same microsecond still come in one order.
    assert await store.list_reviews("s1") == [earlier, same_time, later]
    assert [r.review_id for r in await store.list_reviews("s2")] == ["x1"]
    assert await store.list_reviews("nobody") == []
    assert later.to_dict() == {"verdict": "dismissed", "note": "note r2 ✓", "by": "config",
                               "at": "2024-01-01T00:02:00.000000Z"}


async def test_decisions_append_and_the_last_is_latest(store: Store) -> None:
    await store.create_session(session("s1"))
    first = _decision("d1", "fail", "2024-01-01T00:05:00.000000Z")
    second = _decision("d2", "pass", "2024-01-01T00:06:00.000000Z")
    await store.add_decision(second)
    await store.add_decision(first)
    assert await store.list_decisions("s1") == [first, second]
    with pytest.raises(StoreIntegrityError):
        await store.add_decision(first)  # appended, never replaced


async def test_a_break_starts_then_ends_in_place(store: Store) -> None:
    await store.create_session(session("s1"))
    second = BreakRecord("b2", "s1", media_start=90.0, media_end=None, reason="",
                         actor="candidate:t", created_at="2024-01-01T00:03:00.000000Z")
    first = BreakRecord("b1", "s1", media_start=30.25, media_end=None, reason="water",
                        actor="proctor:p", created_at="2024-01-01T00:02:00.000000Z")
    await store.save_break(second)
    await store.save_break(first)
    first.media_end = 75.5
    await store.save_break(first)
    assert await store.list_breaks("s1") == [first, second]
    assert first.to_dict() == {"break_id": "b1", "start": 30.25, "end": 75.5,
                               "reason": "water", "by": "proctor:p"}


async def test_audit_oldest_first_and_survives_erasure(store: Store) -> None:
    await store.create_session(session("s1"))
    entries = [_entry("e2", "2024-01-01T00:00:02.000000Z"),
               _entry("e1", "2024-01-01T00:00:01.000000Z", action="end"),
               _entry("e0", "2024-01-01T00:00:02.000000Z", action="decision")]
    for entry in entries:
        await store.add_audit(entry)
    await store.add_audit(_entry("e9", "2024-01-01T00:00:00.000000Z", session_id=None,
                                 action="erasure"))
    assert [e.entry_id for e in await store.list_audit("s1")] == ["e1", "e0", "e2"]
    assert (await store.list_audit("s1"))[-1] == entries[0]  # details round-trip
    # Erasing the session deletes its reviews, decisions and breaks, not its audit.
    await store.add_review(_review("r1"))
    await store.add_decision(_decision("d1", "pass", "2024-01-01T00:05:00.000000Z"))
    await store.save_break(BreakRecord("b1", "s1", 1.0, 2.0, "", "x", "2024-01-01T00:00Z"))
    await store.delete_session("s1")
    assert await store.list_reviews("s1") == []
    assert await store.list_decisions("s1") == []
    assert await store.list_breaks("s1") == []
    assert len(await store.list_audit("s1")) == 3


async def test_review_rows_need_their_session(store: Store) -> None:
    with pytest.raises(StoreIntegrityError):
        await store.add_review(_review("r1", session_id="no-such-session"))
    with pytest.raises(StoreIntegrityError):
        await store.save_break(BreakRecord("b1", "no-such-session", 1.0, None, "", "x", "t"))
    await store.add_audit(_entry("e1", "t", session_id="no-such-session"))  # no foreign key
    assert len(await store.list_audit("no-such-session")) == 1
