"""The append-only audit: who reviewed, decided, ended, paused or erased what, and when.

Actors are named by the credential used (an API key's name, or ``proctor:<token id>``).
Entries carry ids and verdicts, never a candidate's personal data: an erasure removes
the sessions and leaves its own entry with counts only.
"""

from __future__ import annotations

from typing import Any

from proctor.flags.model import new_id, utc_now_iso
from proctor.store.base import AuditEntry, SessionRecord, Store


async def record(store: Store, action: str, actor: str, session: SessionRecord | None = None,
                 candidate_id: str | None = None, **details: Any) -> AuditEntry:
    """Append one entry (``details`` must hold no personal data for an erasure)."""
    entry = AuditEntry(entry_id=new_id(), at=utc_now_iso(), actor=actor, action=action,
                       session_id=session.session_id if session else None,
                       candidate_id=candidate_id, details=details)
    await store.add_audit(entry)
    return entry


async def entries(store: Store, session_id: str) -> list[dict[str, Any]]:
    """The session's audit in the API's shape ``{at, actor, action, details}``, oldest
    first."""
    return [entry.to_dict() for entry in await store.list_audit(session_id)]
