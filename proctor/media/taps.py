"""Taps on a session's received media: who else wants each frame as it arrives.

A proctor's live picture is fed from here. A tap is called on the event loop with every
decoded frame of its kind and must not block; it gets the frame itself (shared with the
analysis), so a tap that keeps a frame keeps a copy.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import av

log = logging.getLogger("proctor.media")

Tap = Callable[[av.VideoFrame | av.AudioFrame], None]


class FrameTaps:
    def __init__(self) -> None:
        self._taps: dict[str, set[Tap]] = {"video": set(), "audio": set()}

    def add(self, kind: str, tap: Tap) -> None:
        self._taps[kind].add(tap)

    def remove(self, kind: str, tap: Tap) -> None:
        self._taps[kind].discard(tap)

    def emit(self, kind: str, frame: av.VideoFrame | av.AudioFrame) -> None:
        for tap in list(self._taps.get(kind, ())):
            try:
                tap(frame)
            except Exception:  # a watcher's trouble must never stop the candidate's media
                log.exception("a %s tap failed", kind)

    def count(self, kind: str) -> int:
        return len(self._taps[kind])
