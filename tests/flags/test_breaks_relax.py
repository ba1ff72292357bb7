"""Breaks pause the presence rules in the tracker; accommodations.relax stretches a
kind's durations (at, just under and just over the stretched threshold)."""

from __future__ import annotations

import pytest

from proctor.config import load_config
from proctor.flags.model import FlagKind
from proctor.flags.rules import BREAK_KINDS, PolicyError, apply_policy, rules_from_config
from proctor.flags.tracker import FlagChange, FlagTracker

RULES = rules_from_config(load_config(env={}).flags.rules)
FACE_ABSENT = next(r for r in RULES if r.kind == FlagKind.FACE_ABSENT)
STEP = 0.1


def _hold_absent(tracker: FlagTracker, start: float, seconds: float) -> list[FlagChange]:
    changes = []
    t = start
    while t <= start + seconds + 1e-9:
        changes += [e.change for e in tracker.update(round(t, 6), {"face_count": 0})]
        t += STEP
    return changes


def test_a_break_closes_open_presence_flags_and_holds_them() -> None:
    tracker = FlagTracker("s", "c", RULES)
    assert FlagChange.OPENED in _hold_absent(tracker, 0.0, 4.0)
    closed = tracker.pause(BREAK_KINDS, 4.2)
    assert [e.change for e in closed] == [FlagChange.CLOSED] and closed[0].flag.end == 4.2
    assert _hold_absent(tracker, 4.3, 30.0) == []  # 30 s away, on a break: nothing
    tracker.resume(BREAK_KINDS)
    first_level = min(level.seconds for level in FACE_ABSENT.levels)
    assert _hold_absent(tracker, 35.0, first_level - 0.3) == []  # runs start afresh
    assert FlagChange.OPENED in _hold_absent(tracker, 35.0 + first_level, 1.0)


def test_a_break_leaves_telemetry_rules_counting() -> None:
    tracker = FlagTracker("s", "c", RULES)
    tracker.pause(BREAK_KINDS, 0.0)
    events = tracker.update(1.0, {"paste": 1.0})
    assert [e.flag.kind for e in events] == [FlagKind.PASTE, FlagKind.PASTE]


@pytest.mark.parametrize(("held_for", "flags"), [(0.96, False), (1.0, True), (1.04, True)])
def test_relax_multiplies_durations(held_for: float, flags: bool) -> None:
    (relaxed,) = [r for r in apply_policy(RULES, {}, {"relax": {"face_absent": 2.5}})
                  if r.kind == FlagKind.FACE_ABSENT]
    plain = FACE_ABSENT.levels[0].seconds
    assert relaxed.levels[0].seconds == pytest.approx(plain * 2.5)
    tracker = FlagTracker("s", "c", (relaxed,))
    changes = _hold_absent(tracker, 0.0, round(plain * 2.5 * held_for, 1))
    assert (FlagChange.OPENED in changes) is flags


@pytest.mark.parametrize("relax", [{"face_absent": 0.5}, {"face_absent": "x"},
                                   {"not_a_kind": 2}, ["face_absent"]])
def test_bad_relax_is_refused(relax: object) -> None:
    with pytest.raises(PolicyError):
        apply_policy(RULES, {}, {"relax": relax})


def test_disable_must_be_a_list() -> None:
    with pytest.raises(PolicyError):
        apply_policy(RULES, {"disable": "face_absent"})
