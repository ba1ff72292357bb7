"""Reports recomputed from a person's reviews and decision, beside the machine's verdict.

A stored report keeps what only the running session could measure (behavioural metrics,
pipeline counters, the transcript, an interruption); everything that follows from the
flags is rebuilt here from the store (flags, latest reviews, latest decision, breaks)
with :func:`proctor.report.build_report`, so the machine's report and the reviewed one
share one definition.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from proctor.config import ScoringConfig
from proctor.flags.scoring import Recommendation, with_answer_score
from proctor.report import BEHAVIOURAL_METRICS, build_report, flag_with_review
from proctor.review.answers import answer_section
from proctor.store.base import ReviewRecord, SessionRecord, Store


def latest_reviews(reviews: Iterable[ReviewRecord]) -> dict[str, ReviewRecord]:
    """The latest review of each flag, by flag id (``reviews`` oldest first)."""
    return {review.flag_id: review for review in reviews}


def machine_stats(report: dict[str, Any]) -> dict[str, Any]:
    """The measurements a report was built from: its pipeline counters and metrics."""
    metrics = report.get("metrics") or {}
    return {**(report.get("pipeline") or {}),
            **{name: metrics.get(name) for name in BEHAVIOURAL_METRICS}}


async def current_report(store: Store, record: SessionRecord,
                         config: ScoringConfig) -> dict[str, Any] | None:
    """The session's report with every review and the latest decision applied; None
    before the session has a report (it is built when the session ends)."""
    stored = record.report
    if stored is None:
        return None
    sid = record.session_id
    decisions = await store.list_decisions(sid)
    rebuilt = build_report(record, await store.list_flags(sid), machine_stats(stored), config,
                           reviews=latest_reviews(await store.list_reviews(sid)),
                           decision=decisions[-1] if decisions else None,
                           breaks=await store.list_breaks(sid),
                           interrupted="interrupted" in stored)
    # Interview answers, when scored (proctor/review/interviews.py): their section, and
    # the PASS rule's answer-score condition on both recommendations.
    answers = answer_section(await store.list_answer_scores(sid))
    if answers is not None:
        rebuilt["answer_scoring"] = answers
        for key in ("recommendation", "ai_recommendation"):
            rebuilt[key] = str(with_answer_score(Recommendation(rebuilt[key]),
                                                 answers["final_score"],
                                                 config.answers.pass_score))
    return {**stored, **rebuilt}


async def refresh_report(store: Store, record: SessionRecord,
                         config: ScoringConfig) -> dict[str, Any] | None:
    """Recompute the report and store it (and on ``record``); None without a report."""
    report = await current_report(store, record, config)
    if report is not None:
        record.report = report
        await store.update_session(record.session_id, report=report)
    return report


async def reviewed_flags(store: Store, session_id: str) -> list[dict[str, Any]]:
    """The session's flags in the API's shape, each with its latest ``review``."""
    reviews = latest_reviews(await store.list_reviews(session_id))
    return [flag_with_review(f, reviews.get(f.flag_id))
            for f in await store.list_flags(session_id)]
