"""Reviews, decisions, breaks and the audit: the Store's queries for them, on both backends.

Reviews, decisions and audit entries are appended, never updated: the latest review of a
flag and the latest decision of a session count, and every one is kept. A break is the
one row changed in place (it starts, then ends).
"""

from __future__ import annotations

from typing import Any

from proctor.store.base import AuditEntry, BreakRecord, DecisionRecord, ReviewRecord
from proctor.store.sql_base import Row, SqlBase, dump, load_dict

_REVIEW_COLUMNS = "review_id, flag_id, session_id, verdict, note, actor, created_at"
_DECISION_COLUMNS = "decision_id, session_id, decision, note, actor, created_at"
_BREAK_COLUMNS = "break_id, session_id, media_start, media_end, reason, actor, created_at"
_AUDIT_COLUMNS = "entry_id, session_id, candidate_id, at, actor, action, details"


def _placeholders(columns: str) -> str:
    return ", ".join("?" for _ in columns.split(", "))


def _insert(table: str, columns: str) -> str:
    return f"INSERT INTO {table} ({columns}) VALUES ({_placeholders(columns)})"


# A break starts, then ends in place: saving it again overwrites all but its key.
_BREAK_UPSERT = (
    _insert("breaks", _BREAK_COLUMNS) + " ON CONFLICT (break_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _BREAK_COLUMNS.split(", ")[1:])
)


class ReviewQueries(SqlBase):
    """Mixed into :class:`~proctor.store.sql.SqlStore`."""

    # -- reviews -------------------------------------------------------------------

    async def add_review(self, record: ReviewRecord) -> None:
        r = record
        await self._execute(_insert("flag_reviews", _REVIEW_COLUMNS),
                            (r.review_id, r.flag_id, r.session_id, r.verdict, r.note,
                             r.actor, r.created_at))

    async def list_reviews(self, session_id: str) -> list[ReviewRecord]:
        """Every review of the session's flags, oldest first."""
        rows = await self._fetch_all(
            f"SELECT {_REVIEW_COLUMNS} FROM flag_reviews WHERE session_id = ? "
            "ORDER BY created_at, review_id", (session_id,))
        return [review_from_row(row) for row in rows]

    # -- decisions -----------------------------------------------------------------

    async def add_decision(self, record: DecisionRecord) -> None:
        d = record
        await self._execute(_insert("decisions", _DECISION_COLUMNS),
                            (d.decision_id, d.session_id, d.decision, d.note, d.actor,
                             d.created_at))

    async def list_decisions(self, session_id: str) -> list[DecisionRecord]:
        """Oldest first; the last one is the session's decision."""
        rows = await self._fetch_all(
            f"SELECT {_DECISION_COLUMNS} FROM decisions WHERE session_id = ? "
            "ORDER BY created_at, decision_id", (session_id,))
        return [decision_from_row(row) for row in rows]

    # -- breaks --------------------------------------------------------------------

    async def save_break(self, record: BreakRecord) -> None:
        """Insert, or replace by break_id (a break starts, then ends in place)."""
        b = record
        await self._execute(_BREAK_UPSERT,
                            (b.break_id, b.session_id, float(b.media_start),
                             None if b.media_end is None else float(b.media_end), b.reason,
                             b.actor, b.created_at))

    async def list_breaks(self, session_id: str) -> list[BreakRecord]:
        """By media start."""
        rows = await self._fetch_all(
            f"SELECT {_BREAK_COLUMNS} FROM breaks WHERE session_id = ? "
            "ORDER BY media_start, created_at, break_id", (session_id,))
        return [break_from_row(row) for row in rows]

    # -- audit ---------------------------------------------------------------------

    async def add_audit(self, entry: AuditEntry) -> None:
        e = entry
        await self._execute(_insert("audit", _AUDIT_COLUMNS),
                            (e.entry_id, e.session_id, e.candidate_id, e.at, e.actor,
                             e.action, dump(dict(e.details))))

    async def list_audit(self, session_id: str) -> list[AuditEntry]:
        """The session's entries, oldest first (by at, then entry_id)."""
        rows = await self._fetch_all(
            f"SELECT {_AUDIT_COLUMNS} FROM audit WHERE session_id = ? ORDER BY at, entry_id",
            (session_id,))
        return [audit_from_row(row) for row in rows]


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def review_from_row(row: Row) -> ReviewRecord:
    return ReviewRecord(review_id=row["review_id"], flag_id=row["flag_id"],
                        session_id=row["session_id"], verdict=row["verdict"],
                        note=row["note"], actor=row["actor"], created_at=row["created_at"])


def decision_from_row(row: Row) -> DecisionRecord:
    return DecisionRecord(decision_id=row["decision_id"], session_id=row["session_id"],
                          decision=row["decision"], note=row["note"], actor=row["actor"],
                          created_at=row["created_at"])


def break_from_row(row: Row) -> BreakRecord:
    return BreakRecord(break_id=row["break_id"], session_id=row["session_id"],
                       media_start=float(row["media_start"]),
                       media_end=_opt_float(row["media_end"]), reason=row["reason"],
                       actor=row["actor"], created_at=row["created_at"])


def audit_from_row(row: Row) -> AuditEntry:
    return AuditEntry(entry_id=row["entry_id"], session_id=row["session_id"],
                      candidate_id=row["candidate_id"], at=row["at"], actor=row["actor"],
                      action=row["action"], details=load_dict(row["details"]))
