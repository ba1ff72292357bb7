"""Declared breaks: while one lasts, the presence and audio rules are paused.

A break starts and ends on the session's owner node, at the owner's media time; it is
stored (``breaks``), audited, and announced on the bus so proctors see it. A policy may
limit breaks (``policy.breaks: {max_count, max_seconds}``: how many, and how many seconds
in all); a break that reaches the time limit ends by itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from proctor.errors import ServiceError
from proctor.flags.model import new_id, utc_now_iso
from proctor.sessions.live import LiveSession
from proctor.store.base import BreakRecord, Store

log = logging.getLogger("proctor.breaks")

ACTIONS = ("start", "end")
MAX_REASON = 500
# The timer that ends a break at its limit fires a few ms either side of it: what is
# left of an allowance below this is none.
TIME_SLACK_SECONDS = 0.1


@dataclass(frozen=True)
class BreakLimits:
    max_count: int | None = None
    max_seconds: float | None = None

    @classmethod
    def from_policy(cls, policy: Mapping[str, Any]) -> BreakLimits:
        """``policy.breaks``, or ValueError saying what is wrong with it."""
        raw = policy.get("breaks") or {}
        if not isinstance(raw, Mapping) or set(raw) - {"max_count", "max_seconds"}:
            raise ValueError("policy.breaks must be {max_count?, max_seconds?}")
        count, seconds = raw.get("max_count"), raw.get("max_seconds")
        if count is not None and (isinstance(count, bool) or not isinstance(count, int)
                                  or count < 0):
            raise ValueError("policy.breaks.max_count must be a whole number ≥ 0")
        if seconds is not None and (isinstance(seconds, bool)
                                    or not isinstance(seconds, int | float) or seconds <= 0):
            raise ValueError("policy.breaks.max_seconds must be a positive number")
        return cls(count, None if seconds is None else float(seconds))


class BreakConflict(ServiceError):
    def __init__(self, message: str) -> None:
        super().__init__(409, "break_refused", message)


def used_seconds(breaks: list[BreakRecord], now: float) -> float:
    return sum((b.media_end if b.media_end is not None else now) - b.media_start
               for b in breaks)


async def start_break(session: LiveSession, store: Store, actor: str,
                      reason: str) -> BreakRecord:
    pipeline = session.pipeline
    assert pipeline is not None
    if session.current_break is not None:
        raise BreakConflict("a break is already on")
    session.clock.start()  # a break before the first frame still has its place in time
    now = session.clock.now()
    taken = await store.list_breaks(session.session_id)
    limits = BreakLimits.from_policy(session.record.policy)
    if limits.max_count is not None and len(taken) >= limits.max_count:
        raise BreakConflict(f"this exam allows {limits.max_count} break(s); all are taken")
    left = None if limits.max_seconds is None else limits.max_seconds - used_seconds(taken, now)
    if left is not None and left <= TIME_SLACK_SECONDS:
        raise BreakConflict("this exam's break time is used up")
    record = BreakRecord(break_id=new_id(), session_id=session.session_id, media_start=now,
                         media_end=None, reason=reason[:MAX_REASON], actor=actor,
                         created_at=utc_now_iso())
    await store.save_break(record)
    session.current_break = record
    await pipeline.pause_presence(now)
    if left is not None:
        session.break_timer = asyncio.get_running_loop().call_later(
            left, lambda: asyncio.ensure_future(_time_up(session, store, record)))
    return record


async def end_break(session: LiveSession, store: Store, actor: str) -> BreakRecord:
    record = session.current_break
    if record is None or session.pipeline is None:
        raise BreakConflict("no break is on")
    record.media_end = session.clock.now()
    await store.save_break(record)
    session.current_break = None
    if session.break_timer is not None:
        session.break_timer.cancel()
        session.break_timer = None
    session.pipeline.resume_presence()
    return record


async def _time_up(session: LiveSession, store: Store, record: BreakRecord) -> None:
    if session.current_break is not record:
        return
    try:
        await end_break(session, store, "policy")
        if session.on_break_end is not None:
            await session.on_break_end(record)
    except Exception:
        log.exception("session %s: ending a break at its time limit failed",
                      session.session_id)
