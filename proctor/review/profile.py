"""A candidate across sessions: how many were analysed and flagged, the mean integrity,
the most common flags, and each session's recommendation and decision.

Every figure follows the reviews: a dismissed flag flags nothing and counts for no kind.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from proctor.config import ScoringConfig
from proctor.report import is_dismissed
from proctor.review.reports import current_report, latest_reviews
from proctor.store.base import DEFAULT_TENANT, SessionRecord, SessionStatus, Store

FINISHED = (SessionStatus.ENDED, SessionStatus.INTERRUPTED)
TOP_KINDS = 5


async def candidate_profile(store: Store, candidate_id: str, config: ScoringConfig,
                            tenant: str = DEFAULT_TENANT) -> dict[str, Any] | None:
    """The tenant's candidate's profile, or None for one with neither sessions nor an
    enrollment (in that tenant: candidate ids are per tenant)."""
    sessions = await store.list_candidate_sessions(candidate_id, tenant)  # newest first
    enrolled = await store.get_enrollment(candidate_id, tenant) is not None
    if not sessions and not enrolled:
        return None
    summaries: list[dict[str, Any]] = []
    kinds: Counter[str] = Counter()
    for record in sessions:
        summary, flagged = await _session_summary(store, record, config)
        summaries.append(summary)
        if record.status in FINISHED:
            kinds.update(flagged)
    analysed = [s for s in summaries if s["status"] in FINISHED]
    scores = [s["integrity_score"] for s in analysed if s["integrity_score"] is not None]
    return {
        "candidate_id": candidate_id,
        "enrolled": enrolled,
        "sessions_total": len(sessions),
        "sessions_analysed": len(analysed),
        "sessions_flagged": sum(1 for s in analysed if s["flags"] > 0),
        "mean_integrity_score": round(sum(scores) / len(scores), 4) if scores else None,
        "top_flag_kinds": [{"kind": k, "count": n} for k, n in kinds.most_common(TOP_KINDS)],
        "sessions": summaries,
    }


async def _session_summary(store: Store, record: SessionRecord,
                           config: ScoringConfig) -> tuple[dict[str, Any], list[str]]:
    """One session's status, verdicts and decision; and the kinds of its flags that no
    one dismissed."""
    reviews = latest_reviews(await store.list_reviews(record.session_id))
    kept = [f for f in await store.list_flags(record.session_id)
            if not is_dismissed(reviews.get(f.flag_id))]
    report = await current_report(store, record, config) or {}
    summary = {
        "session_id": record.session_id, "exam_id": record.exam_id,
        "status": str(record.status), "created_at": record.created_at,
        "ended_at": record.ended_at,
        "recommendation": report.get("recommendation"),
        "ai_recommendation": report.get("ai_recommendation"),
        "integrity_score": report.get("integrity_score"),
        "decision": report.get("decision"),
        "flags": len(kept),
    }
    return summary, [str(f.kind) for f in kept]
