"""A person's word on a session: a verdict per flag, a decision per session.

Both are appended, never overwritten (the latest counts; the audit keeps every one),
announced to integrators (``flag.reviewed``, ``decision.made``) and folded into the
stored report at once (:mod:`proctor.review.reports`).
"""

from __future__ import annotations

from typing import Any

from proctor.config import ScoringConfig
from proctor.errors import ServiceError
from proctor.flags.model import new_id, utc_now_iso
from proctor.outbound import EventOutlet
from proctor.report import VERDICTS, flag_with_review
from proctor.review import audit
from proctor.review.reports import refresh_report
from proctor.store.base import (
    DecisionRecord,
    ReviewRecord,
    SessionRecord,
    SessionStatus,
    Store,
)

DECISIONS = ("pass", "fail")
MAX_NOTE_CHARS = 2000
FINISHED = (SessionStatus.ENDED, SessionStatus.INTERRUPTED)


def choice(name: str, value: Any, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ServiceError(400, "bad_request", f"'{name}' must be one of {', '.join(allowed)}")
    return value


def note_text(value: Any) -> str:
    """An optional note: a string of at most MAX_NOTE_CHARS characters."""
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > MAX_NOTE_CHARS:
        raise ServiceError(400, "bad_request",
                           f"'note' must be a string of at most {MAX_NOTE_CHARS} characters")
    return value


class Reviews:
    """Reviews and decisions over the store; ``outlet`` tells integrators of them."""

    def __init__(self, store: Store, outlet: EventOutlet, scoring: ScoringConfig) -> None:
        self.store = store
        self.outlet = outlet
        self.scoring = scoring

    async def review_flag(self, record: SessionRecord, flag_id: str, verdict: Any,
                          note: Any, actor: str) -> dict[str, Any]:
        """Record a verdict on one of the session's flags (live or ended); the flag with
        its ``review``. 404 for a flag of no session or of another one."""
        verdict, note = choice("verdict", verdict, VERDICTS), note_text(note)
        flag = await self.store.get_flag(flag_id)
        if flag is None or flag.session_id != record.session_id:
            raise ServiceError(404, "not_found", "no such flag in this session")
        review = ReviewRecord(review_id=new_id(), flag_id=flag.flag_id,
                              session_id=record.session_id, verdict=verdict, note=note,
                              actor=actor, created_at=utc_now_iso())
        await self.store.add_review(review)
        await audit.record(self.store, "review", actor, record, flag_id=flag.flag_id,
                           kind=str(flag.kind), severity=str(flag.severity),
                           verdict=verdict, note=note)
        await refresh_report(self.store, record, self.scoring)
        shown = flag_with_review(flag, review)
        await self.outlet.emit("flag.reviewed", record,
                               {"flag": shown, "review": review.to_dict()})
        return shown

    async def decide(self, record: SessionRecord, decision: Any, note: Any,
                     actor: str) -> dict[str, Any]:
        """Record a decision on a finished session (409 before it has finished)."""
        decision, note = choice("decision", decision, DECISIONS), note_text(note)
        if record.status not in FINISHED:
            raise ServiceError(409, "not_finished",
                               "a decision needs a finished session: end it first")
        made = DecisionRecord(decision_id=new_id(), session_id=record.session_id,
                              decision=decision, note=note, actor=actor,
                              created_at=utc_now_iso())
        await self.store.add_decision(made)
        report = await refresh_report(self.store, record, self.scoring) or {}
        await audit.record(self.store, "decision", actor, record, decision=decision,
                           note=note, recommendation=report.get("recommendation"))
        await self.outlet.emit("decision.made", record, {"decision": made.to_dict()})
        return {"session_id": record.session_id, "decision": made.to_dict(),
                "recommendation": report.get("recommendation"),
                "ai_recommendation": report.get("ai_recommendation")}
