"""A session's report: flags, totals, behavioural metrics, score and recommendation.

The machine's verdict and the reviewed one come from one definition: the report is
built from every flag for ``ai_recommendation`` / ``ai_integrity_score``, and from the
flags a reviewer has not dismissed for ``recommendation`` / ``integrity_score``. Without
reviews the two agree. (``proctor.review.reports`` rebuilds a stored report this way
after each review or decision.)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from proctor.config import ScoringConfig
from proctor.flags.model import Flag
from proctor.flags.scoring import (
    MergedFlag,
    Recommendation,
    integrity_band,
    integrity_score,
    merge_flags,
    recommend,
    risk_curve,
)
from proctor.store.base import BreakRecord, DecisionRecord, ReviewRecord, SessionRecord

# Metrics each detector family can measure; the ones a session had stay in the mean.
BEHAVIOURAL_METRICS = ("eye_contact", "environment_stability", "audio_consistency", "focus")
CONFIRMED, DISMISSED = "confirmed", "dismissed"
VERDICTS = (CONFIRMED, DISMISSED)


@dataclass(frozen=True)
class Verdict:
    """What a set of flags comes to: merged, scored, recommended."""

    merged: list[MergedFlag]
    score: float
    recommendation: Recommendation


def verdict(flags: Iterable[Flag], metrics: Mapping[str, float], config: ScoringConfig,
            interrupted: bool = False) -> Verdict:
    merged = merge_flags(flags, config.merge_gap_seconds)
    advice = recommend(merged)
    if interrupted and advice == Recommendation.PASS:
        advice = Recommendation.REVIEW  # part of it was never analysed: a person must look
    return Verdict(merged, integrity_score(metrics, merged, config), advice)


def build_report(record: SessionRecord, flags: Iterable[Flag], stats: Mapping[str, Any],
                 config: ScoringConfig, *, reviews: Mapping[str, ReviewRecord] | None = None,
                 decision: DecisionRecord | None = None, breaks: Iterable[BreakRecord] = (),
                 interrupted: bool = False) -> dict[str, Any]:
    """``reviews``: the latest review of each flag, by flag id. ``interrupted``: part of
    the session was never analysed, so it is never a PASS."""
    flags, reviews, breaks = list(flags), reviews or {}, list(breaks)
    kept = [f for f in flags if not is_dismissed(reviews.get(f.flag_id))]
    metrics = {name: stats.get(name) for name in BEHAVIOURAL_METRICS}
    measured = {name: float(v) for name, v in metrics.items() if v is not None}
    machine = verdict(flags, measured, config, interrupted)
    reviewed = verdict(kept, measured, config, interrupted)
    duration = media_duration(record, flags, breaks, stats.get("media_seconds"))
    return {
        "session_id": record.session_id,
        "candidate_id": record.candidate_id,
        "exam_id": record.exam_id,
        "started_at": record.started_at,
        "flags": [flag_with_review(f, reviews.get(f.flag_id)) for f in flags],
        "totals": _totals(flags),
        "merged_flags": len(reviewed.merged),
        "metrics": metrics,
        "integrity_score": reviewed.score,
        "integrity_band": integrity_band(reviewed.score),
        "recommendation": str(reviewed.recommendation),
        "ai_integrity_score": machine.score,
        "ai_recommendation": str(machine.recommendation),
        "reviewed": review_counts(flags, reviews),
        "decision": None if decision is None else decision.to_dict(),
        "breaks": [b.to_dict() for b in breaks],
        "duration": round(duration, 2),
        "risk_curve": risk_curve(flags, duration, config),
        "pipeline": {k: v for k, v in stats.items() if k not in BEHAVIOURAL_METRICS},
        "note": "advice for a reviewer; the decision is a person's",
    }


def is_dismissed(review: ReviewRecord | None) -> bool:
    return review is not None and review.verdict == DISMISSED


def flag_with_review(flag: Flag, review: ReviewRecord | None) -> dict[str, Any]:
    """The flag's API shape, with its latest ``review`` (None until reviewed)."""
    return {**flag.to_dict(), "review": None if review is None else review.to_dict()}


def review_counts(flags: Iterable[Flag], reviews: Mapping[str, ReviewRecord]) -> dict[str, int]:
    counts = {CONFIRMED: 0, DISMISSED: 0, "pending": 0}
    for flag in flags:
        review = reviews.get(flag.flag_id)
        counts[review.verdict if review is not None else "pending"] += 1
    return counts


def media_duration(record: SessionRecord, flags: Iterable[Flag],
                   breaks: Iterable[BreakRecord] = (), measured: Any = None) -> float:
    """How far the session's media went, as far as its records (and ``measured``, the
    media seconds a file's analysis counted) tell."""
    ends = [record.media_time or 0.0, float(measured or 0.0)]
    ends += [max(f.start, f.end or f.start) for f in flags]
    ends += [max(b.media_start, b.media_end or b.media_start) for b in breaks]
    return max(ends)


def _totals(flags: list[Flag]) -> dict[str, dict[str, Any]]:
    """Per kind, the machine's findings (dismissed flags included)."""
    totals: dict[str, dict[str, Any]] = {}
    for kind, count in Counter(str(f.kind) for f in flags).items():
        of_kind = [f for f in flags if str(f.kind) == kind]
        totals[kind] = {
            "count": count,
            "seconds": round(sum((f.end or f.start) - f.start for f in of_kind), 2),
            "by_severity": dict(Counter(str(f.severity) for f in of_kind)),
        }
    return totals
