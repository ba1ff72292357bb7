"""A session's media clock: seconds since the session's first frame.

Each track stamps frames in its own RTP clock, starting at a random value, and a
reconnect brings new tracks. Every track is anchored once, at its first frame, to the
session clock; after that its own timestamps decide, so jitter in arrival does not
move media time. Time only moves forward: a stream that jumps back is re-anchored.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class MediaClock:
    def __init__(self, now: Callable[[], float] = time.monotonic) -> None:
        self._now = now
        self._origin: float | None = None  # wall time of media time 0
        self._anchors: dict[object, float] = {}  # track -> offset added to its pts
        self._last: dict[object, float] = {}

    @property
    def started(self) -> bool:
        return self._origin is not None

    def start(self) -> None:
        """Media time 0 is now (otherwise: the first frame's arrival)."""
        if self._origin is None:
            self._origin = self._now()

    def now(self) -> float:
        """Media time corresponding to this instant (0 before the first frame)."""
        if self._origin is None:
            return 0.0
        return self._now() - self._origin

    def stamp(self, track: object, pts_seconds: float | None) -> float:
        """Media time of a frame from ``track`` carrying ``pts_seconds``."""
        if self._origin is None:
            self._origin = self._now()
        if pts_seconds is None:
            return self.now()
        anchor = self._anchors.get(track)
        if anchor is None or pts_seconds + anchor < self._last.get(track, 0.0) - 1.0:
            anchor = self.now() - pts_seconds
            self._anchors[track] = anchor
        media_time = max(pts_seconds + anchor, self._last.get(track, 0.0))
        self._last[track] = media_time
        return media_time

    def forget(self, track: object) -> None:
        self._anchors.pop(track, None)
        self._last.pop(track, None)
