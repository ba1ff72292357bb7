"""Live risk, the integrity score and the recommendation, as SPEC defines them.

All of it is advice for a person: the recommendation is recomputed when a reviewer
confirms or dismisses flags, and the decision is theirs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from proctor.config import ScoringConfig, SeverityNumbers
from proctor.flags.model import Flag, FlagKind, Severity

CLEAN_AT = 0.85
REVIEW_AT = 0.70


class Recommendation(StrEnum):
    PASS = "PASS"
    REVIEW = "REVIEW"
    FAIL = "FAIL"


def _by_severity(numbers: SeverityNumbers, severity: Severity) -> float:
    return float(getattr(numbers, severity.value))


def live_risk(flags: Iterable[Flag], now: float, config: ScoringConfig) -> float:
    """0–100: each flag adds its severity's weight, halving every half-life after it
    closed; an open flag keeps its full weight."""
    total = 0.0
    for flag in flags:
        age = 0.0 if flag.end is None else max(0.0, now - flag.end)
        decay = 0.5 ** (age / config.risk_half_life_seconds)
        total += _by_severity(config.risk_weights, flag.severity) * decay
    return round(min(100.0, total), 1)


@dataclass(frozen=True)
class MergedFlag:
    kind: FlagKind
    severity: Severity
    start: float
    end: float
    count: int


def merge_flags(flags: Iterable[Flag], gap_seconds: float) -> list[MergedFlag]:
    """Flags of one kind closer than ``gap_seconds`` count once, at their worst severity,
    so a flickering condition is not punished many times over."""
    merged: list[MergedFlag] = []
    last: dict[FlagKind, int] = {}
    for flag in sorted(flags, key=lambda f: (f.start, f.kind)):
        end = flag.end if flag.end is not None else flag.start
        index = last.get(flag.kind)
        if index is not None and flag.start - merged[index].end < gap_seconds:
            prev = merged[index]
            worst = max(prev.severity, flag.severity, key=lambda s: s.rank)
            merged[index] = MergedFlag(flag.kind, worst, prev.start, max(prev.end, end),
                                       prev.count + 1)
        else:
            last[flag.kind] = len(merged)
            merged.append(MergedFlag(flag.kind, flag.severity, flag.start, end, 1))
    return merged


def integrity_score(metrics: Mapping[str, float], merged: Iterable[MergedFlag],
                    config: ScoringConfig) -> float:
    """0.7 × mean of the behavioural metrics + 0.3 × (1 − flag penalties).

    Metrics a session could not measure (no audio, say) are left out of the mean;
    with none at all the mean counts as 1, so the flags alone decide."""
    values = [v for v in metrics.values() if v is not None]
    mean = sum(values) / len(values) if values else 1.0
    penalty = sum(_by_severity(config.flag_penalties, m.severity) for m in merged)
    return round(0.7 * mean + 0.3 * (1.0 - min(1.0, penalty)), 4)


def integrity_band(score: float) -> str:
    if score >= CLEAN_AT:
        return "clean"
    return "review" if score >= REVIEW_AT else "flag"


def recommend(merged: Iterable[MergedFlag]) -> Recommendation:
    """PASS: no high flag and at most 2 moderate. FAIL: 2 or more high. Else REVIEW."""
    severities = [m.severity for m in merged]
    highs = severities.count(Severity.HIGH)
    if highs >= 2:
        return Recommendation.FAIL
    if highs == 0 and severities.count(Severity.MODERATE) <= 2:
        return Recommendation.PASS
    return Recommendation.REVIEW


def with_answer_score(advice: Recommendation, final_score: float | None,
                      pass_score: float) -> Recommendation:
    """Once interview answers were scored, PASS also needs ``final_score`` of at least
    ``pass_score`` (SPEC: 7/10); below it a person must look (REVIEW). The flags alone
    decide FAIL."""
    if advice == Recommendation.PASS and final_score is not None and final_score < pass_score:
        return Recommendation.REVIEW
    return advice


RISK_CURVE_STEP_SECONDS = 2.0
RISK_CURVE_MAX_POINTS = 1000


def risk_curve(flags: Iterable[Flag], until: float, config: ScoringConfig,
               step: float = RISK_CURVE_STEP_SECONDS,
               max_points: int = RISK_CURVE_MAX_POINTS) -> list[list[float]]:
    """The live risk as it was over the session: ``[[media seconds, risk], ...]`` every
    ``step`` seconds (wider for a long session, so at most about ``max_points``), ending
    at ``until``. A flag counts from its start, at full weight until it closed."""
    ordered = sorted(flags, key=lambda f: f.start)
    until = max(0.0, until)
    step = max(step, until / max_points)
    times = [i * step for i in range(int(until // step) + 1)]
    if not times or times[-1] < until:
        times.append(until)
    curve = []
    for t in times:
        seen = [f for f in ordered if f.start <= t]
        curve.append([round(t, 2), live_risk(seen, t, config)])
    return curve
