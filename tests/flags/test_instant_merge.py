"""Instant kinds (paste, fullscreen_exit) merge and share clips (issue 10, finding 5)."""

from __future__ import annotations

from proctor.config import load_config
from proctor.flags.model import Flag
from proctor.flags.rules import rules_from_config
from proctor.flags.tracker import MAX_MERGED_SECONDS, FlagChange, FlagEvent, FlagTracker

RULES = rules_from_config(load_config(env={}).flags.rules)


def _tracker() -> FlagTracker:
    return FlagTracker("s", "c", RULES, with_clips=True, instant_merge_seconds=5.0,
                       instant_clip_seconds=30.0)


def _final(events: list[FlagEvent]) -> dict[str, Flag]:
    """Each flag's latest state, by id."""
    return {e.flag.flag_id: e.flag for e in events}


def test_a_burst_of_pastes_is_one_flag_with_a_count() -> None:
    tracker = _tracker()
    events = []
    for i in range(500):
        events += tracker.update(10.0 + i * 0.001, {"paste": 1.0})
    first = [e.change for e in events]
    assert first == [FlagChange.OPENED, FlagChange.CLOSED]  # the first, at once
    assert events[0].flag.start == events[1].flag.end
    events += tracker.update(20.0, {"face_count": 1.0})  # merge window over: announced
    flags = _final(events)
    [flag] = flags.values()
    assert flag.evidence.metrics["count"] == 500
    assert flag.end is not None and flag.end > flag.start
    assert flag.evidence.clip_id is not None


def test_close_all_announces_a_merged_flag_still_counting() -> None:
    tracker = _tracker()
    events = tracker.update(1.0, {"paste": 1.0}) + tracker.update(2.0, {"paste": 1.0})
    events += tracker.close_all(3.0)
    [flag] = _final(events).values()
    assert flag.evidence.metrics["count"] == 2 and flag.end == 2.0


def test_kinds_merge_separately_and_a_pause_starts_a_new_flag() -> None:
    tracker = _tracker()
    events = tracker.update(1.0, {"paste": 1.0}) + tracker.update(1.5, {"fullscreen_exit": 1.0})
    events += tracker.update(7.0, {"paste": 1.0})  # 6 s after the last paste: a new flag
    flags = list(_final(events).values())
    assert [str(f.kind) for f in flags] == ["paste", "fullscreen_exit", "paste"]
    # One clip per kind per 30 s: the second paste flag has none of its own.
    assert [f.evidence.clip_id is not None for f in flags] == [True, True, False]
    events = tracker.update(40.0, {"paste": 1.0})
    assert events[0].flag.evidence.clip_id is not None  # 39 s after the last clip


def test_a_continuous_flood_makes_one_flag_per_minute_at_most() -> None:
    tracker = _tracker()
    events = []
    for i in range(3600):  # a paste every second for an hour
        events += tracker.update(float(i), {"paste": 1.0})
    events += tracker.close_all(3600.0)
    flags = list(_final(events).values())
    assert len(flags) <= 3600 / MAX_MERGED_SECONDS + 1
    assert sum(f.evidence.metrics.get("count", 1) for f in flags) == 3600
    assert sum(f.evidence.clip_id is not None for f in flags) == len(flags)  # 1 per 60 s


def test_without_merging_every_event_is_its_own_flag() -> None:
    tracker = FlagTracker("s", "c", RULES)
    events = tracker.update(1.0, {"paste": 1.0}) + tracker.update(1.1, {"paste": 1.0})
    assert [e.change for e in events] == [FlagChange.OPENED, FlagChange.CLOSED] * 2
