"""One generic flag tracker, driven by the rule table and fed media timestamps.

For every rule and level the tracker follows the current *run*: the time the level's
condition first held and the last time it held. A lapse shorter than ``gap_seconds``
does not break a run (debounce). A flag opens when some level's run has lasted its
``seconds``; its start is the run's onset, not the moment it was decided. Severity
only rises while the flag is open. The flag closes when every level's run has ended,
and its end is the last time any level held. Time is whatever the caller passes:
media seconds, so a 30 s scenario runs in microseconds and a file replays identically.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from proctor.flags.model import Flag, FlagKind, Severity, new_id
from proctor.flags.rules import Level, Rule

# Float media times (n × 0.2 s) land a hair under a whole-second threshold.
_EPSILON = 1e-6
# A merged instant flag spans at most this long; a longer burst makes another flag.
MAX_MERGED_SECONDS = 60.0


class FlagChange(StrEnum):
    OPENED = "opened"
    RAISED = "raised"
    CLOSED = "closed"


@dataclass(frozen=True)
class FlagEvent:
    change: FlagChange
    flag: Flag  # a snapshot: later changes to the live flag do not alter it


@dataclass
class _Run:
    onset: float | None = None
    last_held: float | None = None

    def feed(self, t: float, holds: bool, gap: float) -> None:
        if holds:
            if self.onset is None:
                self.onset = t
            self.last_held = t
        elif self.last_held is not None and t - self.last_held >= gap - _EPSILON:
            self.onset = self.last_held = None

    @property
    def active(self) -> bool:
        return self.onset is not None

    def lasted(self, seconds: float) -> bool:
        if self.onset is None or self.last_held is None:
            return False
        return self.last_held - self.onset >= seconds - _EPSILON


@dataclass
class _RuleState:
    rule: Rule
    runs: list[_Run] = field(default_factory=list)
    flag: Flag | None = None
    extreme: float | None = None  # largest (or smallest) signal value during the flag
    latest: float = float("-inf")  # newest media time fed to this rule
    confidence: float = 0.0
    merged: Flag | None = None  # an instant rule's last flag, which later events join
    merged_dirty: bool = False  # events joined it since it was last announced
    last_clip_at: float | None = None  # when an instant rule's last clip began

    def __post_init__(self) -> None:
        self.runs = [_Run() for _ in self.rule.levels]


class FlagTracker:
    """Turns signal samples into opened, raised and closed flags."""

    def __init__(self, session_id: str, candidate_id: str, rules: tuple[Rule, ...],
                 gap_seconds: float = 0.5,
                 source_for: Callable[[Rule], str] | None = None,
                 with_clips: bool = False, instant_merge_seconds: float = 0.0,
                 instant_clip_seconds: float = 0.0) -> None:
        self.session_id = session_id
        # Instant kinds: an event this soon after the last joins its flag; one clip per
        # kind this often at most (0, 0: a flag and a clip per event).
        self.instant_merge_seconds = instant_merge_seconds
        self.instant_clip_seconds = instant_clip_seconds
        self.with_clips = with_clips  # give each flag a clip id up front, for live evidence
        self.candidate_id = candidate_id
        self.gap_seconds = gap_seconds
        self._source_for = source_for or (lambda rule: "")
        self._states = {rule.kind: _RuleState(rule) for rule in rules}
        self._paused: frozenset[FlagKind] = frozenset()  # kinds a declared break holds

    @property
    def open_flags(self) -> list[Flag]:
        return [s.flag for s in self._states.values() if s.flag is not None]

    def update(self, t: float, signals: Mapping[str, float],
               confidences: Mapping[str, float] | None = None) -> list[FlagEvent]:
        """Feed one sample at media time ``t``. Rules whose signal is absent are untouched.

        Samples come from several places (frames, audio chunks, status ticks, browser
        events) and may arrive a hair out of order; time never runs backwards for a rule."""
        events: list[FlagEvent] = self._flush_merged(t)
        for state in self._states.values():
            value = state.rule.value(signals)
            if value is None or state.rule.kind in self._paused:
                continue
            t = state.latest = max(t, state.latest)
            confidence = (confidences or {}).get(state.rule.signal, 1.0)
            if state.rule.instant:
                events += self._instant(state, t, value, confidence)
            else:
                events += self._step(state, t, value, confidence)
        return events

    def pause(self, kinds: frozenset[FlagKind], t: float) -> list[FlagEvent]:
        """A break from media time ``t``: these kinds' open flags close at ``t`` and the
        kinds see nothing until :meth:`resume` (their runs start afresh after it)."""
        self._paused = self._paused | kinds
        events = []
        for kind in kinds:
            state = self._states.get(kind)
            if state is None:
                continue
            if state.flag is not None:
                events.append(self._close(state, max(t, state.flag.start)))
            state.runs = [_Run() for _ in state.rule.levels]
            state.extreme, state.confidence = None, 0.0
        return events

    def resume(self, kinds: frozenset[FlagKind]) -> None:
        self._paused = self._paused - kinds

    @property
    def paused(self) -> frozenset[FlagKind]:
        return self._paused

    def close_all(self, t: float) -> list[FlagEvent]:
        """Session over: close every open flag at its last held time (or ``t``)."""
        events = self._flush_merged(float("inf"))
        for state in self._states.values():
            if state.flag is not None:
                held = [r.last_held for r in state.runs if r.last_held is not None]
                events.append(self._close(state, max(held) if held else t))
        return events

    def _step(self, state: _RuleState, t: float, value: float,
              confidence: float) -> list[FlagEvent]:
        # A run that ends now forgets its times; the flag's end is the last time held.
        last_held = max((r.last_held for r in state.runs if r.last_held is not None),
                        default=None)
        gap = state.rule.gap_seconds if state.rule.gap_seconds is not None else self.gap_seconds
        for level, run in zip(state.rule.levels, state.runs, strict=True):
            run.feed(t, level.holds(value), gap)
        if level_holds_any(state.rule.levels, value):
            self._note(state, value, confidence)
        elif state.flag is None and not any(run.active for run in state.runs):
            state.extreme, state.confidence = None, 0.0  # evidence covers the current run only
        reached = self._highest_reached(state)
        if state.flag is None:
            if reached is None:
                return []
            return [self._open(state, reached, value, confidence)]
        if not any(run.active for run in state.runs):
            return [self._close(state, last_held if last_held is not None else t)]
        if reached is not None and reached.severity.rank > state.flag.severity.rank:
            state.flag.severity = reached.severity
            return [FlagEvent(FlagChange.RAISED, self._snapshot(state))]
        return []

    def _instant(self, state: _RuleState, t: float, value: float,
                 confidence: float) -> list[FlagEvent]:
        held = [level for level in state.rule.levels if level.holds(value)]
        if not held:
            return []
        if self._joins(state, t):
            return self._merge(state, t)
        finished = self._finish_merged(state)  # a burst longer than a merged flag spans
        opened = self._open_at(state, held[-1].severity, t, value, confidence)
        opened.flag.evidence.clip_id = self._limit_clip(state, t)
        closed = self._close(state, t)
        if self.instant_merge_seconds > 0:
            state.merged, state.merged_dirty = copy.deepcopy(closed.flag), False
        return [*finished, opened, closed]

    def _joins(self, state: _RuleState, t: float) -> bool:
        """Whether an instant event at ``t`` joins the rule's last flag."""
        merged = state.merged
        return (merged is not None and merged.end is not None
                and t - merged.end <= self.instant_merge_seconds + _EPSILON
                and t - merged.start <= MAX_MERGED_SECONDS)

    def _merge(self, state: _RuleState, t: float) -> list[FlagEvent]:
        """Count the event in the last flag; it is announced again once events stop."""
        assert state.merged is not None
        metrics = state.merged.evidence.metrics
        metrics["count"] = metrics.get("count", 1.0) + 1
        state.merged.end = t
        state.merged_dirty = True
        return []

    def _flush_merged(self, t: float) -> list[FlagEvent]:
        """The merged flags whose merge window has passed by ``t``, as updated CLOSED
        events (their end and count grew); each is then final."""
        events = []
        for state in self._states.values():
            merged = state.merged
            if merged is not None and merged.end is not None and (
                    t - merged.end > self.instant_merge_seconds + _EPSILON):
                events += self._finish_merged(state)
        return events

    @staticmethod
    def _finish_merged(state: _RuleState) -> list[FlagEvent]:
        """Stop merging into the rule's last flag; announce it if events joined it."""
        merged, dirty = state.merged, state.merged_dirty
        state.merged, state.merged_dirty = None, False
        if merged is None or not dirty:
            return []
        return [FlagEvent(FlagChange.CLOSED, copy.deepcopy(merged))]

    def _limit_clip(self, state: _RuleState, t: float) -> str | None:
        """The new instant flag's clip id: at most one clip per kind per
        ``instant_clip_seconds``; a flag in between has none."""
        assert state.flag is not None
        last = state.last_clip_at
        if state.flag.evidence.clip_id is not None and (
                last is None or t - last >= self.instant_clip_seconds - _EPSILON):
            state.last_clip_at = t
        else:
            state.flag.evidence.clip_id = None
        return state.flag.evidence.clip_id

    def _highest_reached(self, state: _RuleState) -> Level | None:
        reached = [level for level, run in zip(state.rule.levels, state.runs, strict=True)
                   if run.lasted(level.seconds)]
        return reached[-1] if reached else None

    def _open(self, state: _RuleState, level: Level, value: float,
              confidence: float) -> FlagEvent:
        onsets = [r.onset for r in state.runs if r.onset is not None]
        return self._open_at(state, level.severity, min(onsets), value, confidence)

    def _open_at(self, state: _RuleState, severity: Severity, start: float, value: float,
                 confidence: float) -> FlagEvent:
        state.flag = Flag(session_id=self.session_id, candidate_id=self.candidate_id,
                          kind=state.rule.kind, severity=severity, start=start,
                          source=self._source_for(state.rule))
        if self.with_clips:
            state.flag.evidence.clip_id = new_id()
        self._note(state, value, confidence)
        return FlagEvent(FlagChange.OPENED, self._snapshot(state))

    def _note(self, state: _RuleState, value: float, confidence: float) -> None:
        """Keep the evidence figures from the run's onset: extreme value, best confidence."""
        if state.extreme is None:
            state.extreme = value
        elif state.rule.tracks_maximum:
            state.extreme = max(state.extreme, value)
        else:
            state.extreme = min(state.extreme, value)
        state.confidence = max(state.confidence, confidence)
        if state.flag is None:
            return
        prefix = "max" if state.rule.tracks_maximum else "min"
        state.flag.evidence.metrics[f"{prefix}_{state.rule.signal}"] = round(state.extreme, 4)
        state.flag.confidence = state.confidence

    def _close(self, state: _RuleState, end: float) -> FlagEvent:
        assert state.flag is not None
        state.flag.end = max(end, state.flag.start)
        snapshot = self._snapshot(state)
        state.flag = None
        state.runs = [_Run() for _ in state.rule.levels]
        state.extreme, state.confidence = None, 0.0
        return FlagEvent(FlagChange.CLOSED, snapshot)

    @staticmethod
    def _snapshot(state: _RuleState) -> Flag:
        assert state.flag is not None
        return copy.deepcopy(state.flag)


def level_holds_any(levels: tuple[Level, ...], value: float) -> bool:
    return any(level.holds(value) for level in levels)
