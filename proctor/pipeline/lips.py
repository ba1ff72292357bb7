"""How much the candidate's lips moved over a stretch of media time.

The landmarks stage reports ``mouth_open`` (inner-lip gap over face height) for every
analysed frame where the mouth can be seen (a face large, bright and unhidden enough:
``landmarks.mouth_measurable``). Speech makes it jump from frame to frame; a listening
face keeps it within the mesh's jitter. The speaker stage asks, for each 1.6 s audio
window, what share of the frame-to-frame steps moved the mouth: 0 means the
candidate's lips were still for the whole window, which supports (never makes on its
own) a doubtful voice being someone else's. A frame without ``mouth_open`` makes the
window unknown (None), not still.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque

HISTORY_SECONDS = 30.0
MIN_FRAMES = 4  # fewer analysed frames than this in a window: the video cannot tell
# A change in mouth opening larger than this between two analysed frames is movement.
# Mesh jitter on a still mouth stays under ~0.005; syllables move it by 0.02-0.1.
MOVEMENT_STEP = 0.015


class LipHistory:
    """Written on the event loop, read from audio worker threads."""

    def __init__(self) -> None:
        self._frames: deque[tuple[float, float | None]] = deque()
        self._lock = threading.Lock()

    def add(self, media_time: float, mouth_open: float | None) -> None:
        """``mouth_open`` None: no face, or a mouth that cannot be seen, in this frame
        (nothing can be said about the lips)."""
        with self._lock:
            self._frames.append((media_time, mouth_open))
            while self._frames and self._frames[0][0] < media_time - HISTORY_SECONDS:
                self._frames.popleft()

    def movement(self, start: float, end: float) -> float | None:
        """Share of steps between analysed frames in [start, end] that moved the mouth."""
        with self._lock:
            window = [m for t, m in self._frames if start <= t <= end]
        values = [m for m in window if m is not None]
        if len(window) < MIN_FRAMES or len(values) < len(window):
            return None  # too few frames, or the face was lost: no verdict from the lips
        steps = [abs(b - a) for a, b in itertools.pairwise(values)]
        return float(sum(step > MOVEMENT_STEP for step in steps)) / len(steps)
