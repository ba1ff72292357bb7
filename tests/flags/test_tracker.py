"""The flag tracker against every row of the shipped rule table.

Each level is driven at its threshold, just under and just over it, and held for
just under, exactly and just over its duration, at the default 5 fps analysis rate.
"""

from __future__ import annotations

import pytest

from proctor.config import load_config
from proctor.flags.model import FlagKind, Severity
from proctor.flags.rules import Level, PolicyError, Rule, apply_policy, rules_from_config
from proctor.flags.tracker import FlagChange, FlagEvent, FlagTracker

STEP = 0.1  # finer than the 5 fps default, so 0.5 s rules are exact
NUDGE = 0.01  # "just over/under" a threshold value
RULES = rules_from_config(load_config(env={}).flags.rules)
DURATION_RULES = [r for r in RULES if not r.instant]
LEVEL_CASES = [(r, lvl) for r in DURATION_RULES for lvl in r.levels]


def _case_id(case: tuple[Rule, Level]) -> str:
    return f"{case[0].kind}-{case[1].severity}"


def _quiet_value(level: Level) -> float:
    """A value far on the side where the condition does not hold."""
    return level.threshold - 100 if level.op in (">", ">=", "==") else level.threshold + 100


def _drive(rule: Rule, value: float, seconds: float, tail: float | None = None
           ) -> list[FlagEvent]:
    """Hold ``value`` from t=1.0 for ``seconds`` (inclusive samples), then go quiet long
    enough for the rule's gap to close the flag."""
    if tail is None:
        tail = max(2.0, (rule.gap_seconds or 0.0) + 1.0)
    tracker = FlagTracker("s1", "c1", (rule,))
    quiet = _quiet_value(rule.levels[0])
    events: list[FlagEvent] = []
    samples = round(seconds / STEP)
    t = 0.0
    for _ in range(round(1.0 / STEP)):  # one quiet second first
        events += tracker.update(t, {rule.signal: quiet})
        t = round(t + STEP, 6)
    for _ in range(samples + 1):
        events += tracker.update(t, {rule.signal: value})
        t = round(t + STEP, 6)
    for _ in range(round(tail / STEP)):
        events += tracker.update(t, {rule.signal: quiet})
        t = round(t + STEP, 6)
    return events


def _severities(events: list[FlagEvent]) -> set[Severity]:
    return {e.flag.severity for e in events}


def _value_at(level: Level, side: str) -> float:
    if side == "at":
        return level.threshold
    above = level.threshold + NUDGE
    below = level.threshold - NUDGE
    if side == "over":  # past the threshold in the direction that triggers
        return above if level.op in (">", ">=") else below
    return below if level.op in (">", ">=") else above


@pytest.mark.parametrize("case", LEVEL_CASES, ids=_case_id)
def test_value_threshold(case: tuple[Rule, Level]) -> None:
    rule, level = case
    hold = level.seconds + 1.0
    reaches = lambda value: level.severity in _severities(_drive(rule, value, hold))  # noqa: E731
    assert reaches(_value_at(level, "over"))
    assert not reaches(_value_at(level, "under"))
    assert reaches(level.threshold) == (level.op in (">=", "<=", "=="))


@pytest.mark.parametrize("case", LEVEL_CASES, ids=_case_id)
def test_duration_threshold(case: tuple[Rule, Level]) -> None:
    rule, level = case
    value = _value_at(level, "over")
    if level.seconds >= STEP:
        assert level.severity not in _severities(_drive(rule, value, level.seconds - STEP))
    assert level.severity in _severities(_drive(rule, value, level.seconds))
    assert level.severity in _severities(_drive(rule, value, level.seconds + STEP))


@pytest.mark.parametrize("rule", DURATION_RULES, ids=lambda r: str(r.kind))
def test_flag_times_open_raise_close(rule: Rule) -> None:
    top = rule.levels[-1]
    events = _drive(rule, _value_at(top, "over"), top.seconds + 1.0)
    changes = [e.change for e in events]
    assert changes[0] == FlagChange.OPENED and changes[-1] == FlagChange.CLOSED
    assert changes.count(FlagChange.OPENED) == 1 and changes.count(FlagChange.CLOSED) == 1
    opened, closed = events[0].flag, events[-1].flag
    assert opened.start == pytest.approx(1.0)  # the onset, not the moment it was decided
    assert opened.end is None
    assert closed.end == pytest.approx(1.0 + top.seconds + 1.0)
    assert closed.severity == top.severity
    assert len({e.flag.flag_id for e in events}) == 1
    ranks = [e.flag.severity.rank for e in events]
    assert ranks == sorted(ranks)  # severity only rises


def test_short_lapse_does_not_break_a_run() -> None:
    rule = next(r for r in RULES if r.kind == FlagKind.FACE_ABSENT)
    tracker = FlagTracker("s", "c", (rule,), gap_seconds=0.5)
    events: list[FlagEvent] = []
    for i in range(40):  # 4 s without a face, one frame at t=1.6 sees one
        t = round(i * STEP, 6)
        events += tracker.update(t, {"face_count": 1 if i == 16 else 0})
    assert [e.change for e in events] == [FlagChange.OPENED]
    assert events[0].flag.start == 0.0


def test_lapse_longer_than_gap_closes_and_restarts() -> None:
    rule = next(r for r in RULES if r.kind == FlagKind.FACE_ABSENT)
    tracker = FlagTracker("s", "c", (rule,), gap_seconds=0.5)
    events: list[FlagEvent] = []
    faces = [0] * 39 + [1] * 11 + [0] * 40
    for i, count in enumerate(faces):
        events += tracker.update(round(i * STEP, 6), {"face_count": count})
    assert [e.change for e in events] == [FlagChange.OPENED, FlagChange.CLOSED, FlagChange.OPENED]
    assert events[1].flag.end == pytest.approx(3.8)
    assert events[2].flag.start == pytest.approx(5.0)


def test_missing_signal_leaves_rule_alone() -> None:
    rule = next(r for r in RULES if r.kind == FlagKind.PHONE_DETECTED)
    tracker = FlagTracker("s", "c", (rule,))
    assert tracker.update(0.0, {"phone_confidence": 0.9}) == []
    assert tracker.update(5.0, {"face_count": 1}) == []
    events = tracker.update(5.2, {"phone_confidence": 0.9})
    assert [e.change for e in events] == [FlagChange.OPENED]


@pytest.mark.parametrize("kind", [FlagKind.PASTE, FlagKind.FULLSCREEN_EXIT])
def test_instant_rules_make_one_closed_flag_per_event(kind: FlagKind) -> None:
    rule = next(r for r in RULES if r.kind == kind)
    tracker = FlagTracker("s", "c", (rule,))
    events = tracker.update(7.5, {rule.signal: 1})
    assert [e.change for e in events] == [FlagChange.OPENED, FlagChange.CLOSED]
    assert events[-1].flag.start == events[-1].flag.end == 7.5
    assert tracker.update(8.0, {rule.signal: 0}) == []
    assert len(tracker.update(9.0, {rule.signal: 1})) == 2


def test_evidence_keeps_extreme_value_and_confidence() -> None:
    rule = next(r for r in RULES if r.kind == FlagKind.HEAD_TURNED)
    tracker = FlagTracker("s", "c", (rule,))
    events: list[FlagEvent] = []
    yaws = [40, 48.2, 41, 39] + [40] * 25 + [10] * 10
    for i, yaw in enumerate(yaws):
        events += tracker.update(i * STEP, {"abs_yaw": yaw}, {"abs_yaw": 0.9})
    closed = events[-1].flag
    assert closed.evidence.metrics == {"max_abs_yaw": 48.2}
    assert closed.confidence == pytest.approx(0.9)


def test_close_all_ends_open_flags_at_last_held_time() -> None:
    rule = next(r for r in RULES if r.kind == FlagKind.FACE_ABSENT)
    tracker = FlagTracker("s", "c", (rule,), with_clips=True)
    events: list[FlagEvent] = []
    for i in range(50):
        events += tracker.update(i * STEP, {"face_count": 0})
    assert events[0].flag.evidence.clip_id
    closing = tracker.close_all(10.0)
    assert closing[0].flag.end == pytest.approx(49 * STEP)
    assert closing[0].flag.evidence.clip_id == events[0].flag.evidence.clip_id
    assert tracker.open_flags == []


def test_policy_disables_and_overrides() -> None:
    rules = apply_policy(RULES, {"disable": ["gaze_away"],
                                 "rules": {"head_turned": {"moderate": {"threshold": 40}}}},
                         {"disable": ["face_absent"]})
    kinds = {r.kind for r in rules}
    assert FlagKind.GAZE_AWAY not in kinds and FlagKind.FACE_ABSENT not in kinds
    head = next(r for r in rules if r.kind == FlagKind.HEAD_TURNED)
    assert head.levels[0].threshold == 40 and head.levels[1].threshold == 45
    with pytest.raises(PolicyError):
        apply_policy(RULES, {"disable": ["no_such_kind"]})
    with pytest.raises(PolicyError):
        apply_policy(RULES, {"rules": {"head_turned": {"moderate": {"op": "<"}}}})


def test_a_rules_own_gap_bridges_a_slow_stage() -> None:
    """People are counted every 4 s; faces every 0.2 s see only one: the run holds."""
    rule = next(r for r in RULES if r.kind == FlagKind.MULTIPLE_FACES)
    assert rule.gap_seconds is not None and rule.gap_seconds > 4.0
    tracker = FlagTracker("s", "c", (rule,), gap_seconds=0.5)
    events: list[FlagEvent] = []
    for i in range(41):  # 8 s at 5 fps; a person count of 2 every 4 s
        t = round(i * 0.2, 6)
        signals = {"face_count": 1.0}
        if i % 20 == 0:
            signals["person_count"] = 2.0
        events += tracker.update(t, signals)
    assert [e.change for e in events] == [FlagChange.OPENED]
    assert events[0].flag.start == 0.0
    events = tracker.update(13.0, {"face_count": 1.0, "person_count": 1.0})
    assert [e.change for e in events] == [FlagChange.CLOSED]
    assert events[0].flag.end == pytest.approx(8.0)
