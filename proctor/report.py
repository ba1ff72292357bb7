"""A session's report: flags, totals, behavioural metrics, score and recommendation."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from proctor.config import ScoringConfig
from proctor.flags.model import Flag
from proctor.flags.scoring import (
    integrity_band,
    integrity_score,
    merge_flags,
    recommend,
)
from proctor.store.base import SessionRecord

# Metrics each detector family can measure; the ones a session had stay in the mean.
BEHAVIOURAL_METRICS = ("eye_contact", "environment_stability", "audio_consistency", "focus")


def build_report(record: SessionRecord, flags: Iterable[Flag], stats: Mapping[str, Any],
                 config: ScoringConfig) -> dict[str, Any]:
    flags = list(flags)
    merged = merge_flags(flags, config.merge_gap_seconds)
    metrics = {name: stats.get(name) for name in BEHAVIOURAL_METRICS}
    measured = {name: float(v) for name, v in metrics.items() if v is not None}
    score = integrity_score(measured, merged, config)
    return {
        "session_id": record.session_id,
        "candidate_id": record.candidate_id,
        "exam_id": record.exam_id,
        "started_at": record.started_at,
        "flags": [f.to_dict() for f in flags],
        "totals": _totals(flags),
        "merged_flags": len(merged),
        "metrics": metrics,
        "integrity_score": score,
        "integrity_band": integrity_band(score),
        "recommendation": str(recommend(merged)),
        "pipeline": {k: v for k, v in stats.items() if k not in BEHAVIOURAL_METRICS},
        "note": "advice for a reviewer; the decision is a person's",
    }


def _totals(flags: list[Flag]) -> dict[str, dict[str, Any]]:
    totals: dict[str, dict[str, Any]] = {}
    for kind, count in Counter(str(f.kind) for f in flags).items():
        of_kind = [f for f in flags if str(f.kind) == kind]
        totals[kind] = {
            "count": count,
            "seconds": round(sum((f.end or f.start) - f.start for f in of_kind), 2),
            "by_severity": dict(Counter(str(f.severity) for f in of_kind)),
        }
    return totals
