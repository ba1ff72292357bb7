"""The rule table: which signal, compared how, for how long, makes which flag.

Rows come from ``flags.rules`` in the config; a session's policy may switch kinds off
or change thresholds. Detectors only publish signals; they never decide flags.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from proctor.config import LevelRule, RuleConfig
from proctor.flags.model import SEVERITIES, FlagKind, Severity

_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
}


class PolicyError(ValueError):
    """A session policy names an unknown kind or a malformed override."""


@dataclass(frozen=True)
class Level:
    severity: Severity
    op: str
    threshold: float
    seconds: float

    def holds(self, value: float) -> bool:
        return _COMPARE[self.op](value, self.threshold)


@dataclass(frozen=True)
class Rule:
    kind: FlagKind
    signals: tuple[str, ...]
    levels: tuple[Level, ...]  # ordered low → high
    instant: bool = False
    # A lapse shorter than this keeps a run going; None: the tracker's default. A rule
    # fed by a stage that samples slowly (people every 2 s) needs a longer one.
    gap_seconds: float | None = None

    @property
    def signal(self) -> str:
        """The main signal: it names the rule's evidence metric."""
        return self.signals[0]

    def value(self, signals: Mapping[str, float]) -> float | None:
        """The value this sample gives the rule, or None when none of its signals is here."""
        present = [signals[name] for name in self.signals if name in signals]
        if not present:
            return None
        return max(present) if self.tracks_maximum else min(present)

    @property
    def tracks_maximum(self) -> bool:
        """Whether the evidence keeps the largest value seen (">" rules) or the smallest."""
        return self.levels[0].op in (">", ">=", "==")


def rule_from_config(row: RuleConfig) -> Rule:
    levels = []
    for severity in SEVERITIES:
        level: LevelRule | None = getattr(row, severity.value)
        if level is not None:
            levels.append(Level(severity, level.op or row.op, level.threshold, level.seconds))
    return Rule(kind=FlagKind(row.kind), signals=row.signal, levels=tuple(levels),
                instant=row.instant, gap_seconds=row.gap_seconds)


def rules_from_config(rows: Iterable[RuleConfig]) -> tuple[Rule, ...]:
    return tuple(rule_from_config(row) for row in rows)


# What a declared break pauses (SPEC "Breaks and accommodations"): the presence rules
# and the audio kinds. Telemetry (tabs, paste) and phones keep counting.
BREAK_KINDS: frozenset[FlagKind] = frozenset({
    FlagKind.FACE_ABSENT, FlagKind.MULTIPLE_FACES, FlagKind.HEAD_TURNED, FlagKind.GAZE_AWAY,
    FlagKind.IDENTITY_MISMATCH, FlagKind.CAMERA_BLOCKED, FlagKind.VIDEO_LOST,
    FlagKind.MULTIPLE_SPEAKERS, FlagKind.WHISPERING, FlagKind.AUDIO_LOST,
})


def apply_policy(rules: tuple[Rule, ...], policy: Mapping[str, Any] | None,
                 accommodations: Mapping[str, Any] | None = None) -> tuple[Rule, ...]:
    """A session's rules: ``policy.disable`` / ``accommodations.disable`` switch kinds off,
    ``policy.rules.<kind>.<severity>.{threshold,seconds}`` change a level, and
    ``accommodations.relax.<kind>`` multiplies that kind's durations.
    """
    policy = policy or {}
    accommodations = accommodations or {}
    disabled = {_kind(k) for k in [*_kinds(policy, "policy"),
                                   *_kinds(accommodations, "accommodations")]}
    overrides = policy.get("rules", {})
    if not isinstance(overrides, Mapping):
        raise PolicyError("policy.rules must be an object keyed by flag kind")
    known = {rule.kind for rule in rules}
    for kind in overrides:
        if _kind(kind) not in known:
            raise PolicyError(f"policy.rules.{kind}: no rule for this kind")
    relax = _relax_factors(accommodations.get("relax", {}))
    return tuple(_relaxed(_override(rule, overrides.get(str(rule.kind), {})),
                          relax.get(rule.kind, 1.0))
                 for rule in rules if rule.kind not in disabled)


def _relax_factors(raw: Any) -> dict[FlagKind, float]:
    """``accommodations.relax``: {kind: factor ≥ 1} multiplying that kind's durations."""
    if not isinstance(raw, Mapping):
        raise PolicyError("accommodations.relax must be an object {kind: factor}")
    factors: dict[FlagKind, float] = {}
    for kind, factor in raw.items():
        if isinstance(factor, bool) or not isinstance(factor, int | float) \
                or not 1.0 <= float(factor) <= 100.0:
            raise PolicyError(f"accommodations.relax.{kind}: a factor from 1 to 100")
        factors[_kind(kind)] = float(factor)
    return factors


def _relaxed(rule: Rule, factor: float) -> Rule:
    """A rule whose levels need ``factor`` times as long (instant kinds have no duration)."""
    if factor == 1.0 or rule.instant:
        return rule
    return replace(rule, levels=tuple(replace(level, seconds=level.seconds * factor)
                                      for level in rule.levels))


def _kinds(section: Mapping[str, Any], name: str) -> list[Any]:
    listed = section.get("disable", [])
    if not isinstance(listed, list):
        raise PolicyError(f"{name}.disable must be a list of flag kinds")
    return listed


def _kind(name: Any) -> FlagKind:
    try:
        return FlagKind(name)
    except ValueError as exc:
        raise PolicyError(f"unknown flag kind {name!r}") from exc


def _override(rule: Rule, changes: Any) -> Rule:
    if not changes:
        return rule
    if not isinstance(changes, Mapping):
        raise PolicyError(f"policy.rules.{rule.kind}: an object keyed by severity")
    levels = []
    for level in rule.levels:
        change = changes.get(str(level.severity), {})
        if not isinstance(change, Mapping) or set(change) - {"threshold", "seconds"}:
            raise PolicyError(f"policy.rules.{rule.kind}.{level.severity}: "
                              "only threshold and seconds may change")
        try:
            threshold = float(change.get("threshold", level.threshold))
            seconds = float(change.get("seconds", level.seconds))
        except (TypeError, ValueError) as exc:
            raise PolicyError(f"policy.rules.{rule.kind}.{level.severity}: numbers only") from exc
        levels.append(replace(level, threshold=threshold, seconds=seconds))
    return replace(rule, levels=tuple(levels))
