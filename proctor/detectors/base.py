"""The one contract every detector follows.

A :class:`Detector` loads its model once per process; each session gets its own
:class:`DetectorStream` from it, which takes samples and returns typed observations.
Streams run in the inference thread pool, never on the event loop. Adding a detector
is one module and one line in ``registry.py``. (The shape follows livekit-agents'
``VAD`` / ``VADStream``.)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

RgbImage = npt.NDArray[np.uint8]  # height × width × 3, RGB


@dataclass(frozen=True)
class VideoSample:
    """One frame picked for analysis, with the media time it was captured at.

    ``earlier`` holds what the stages before this one saw in the same frame (the
    pipeline appends as it goes), so a costly stage can cascade on a cheap one: the
    face mesh skips a frame with no face, identity skips while one face stays in view.
    """

    session_id: str
    media_time: float
    image: RgbImage
    earlier: list[Observation] = field(default_factory=list)

    def seen_by(self, detector: str) -> Observation | None:
        """This frame's observation from an earlier stage, if it ran."""
        return next((o for o in self.earlier if o.detector == detector), None)


AUDIO_RATE = 16_000  # every audio stage sees 16 kHz mono float32 in [-1, 1]


@dataclass(frozen=True)
class AudioSample:
    """A contiguous piece of the session's audio, resampled to 16 kHz mono.

    ``media_time`` is the media time of the first sample; chunks arrive in order and
    without overlap, so a stream may keep state (VAD context, speaker windows).
    """

    session_id: str
    media_time: float
    samples: npt.NDArray[np.float32]

    @property
    def duration(self) -> float:
        return len(self.samples) / AUDIO_RATE


@dataclass(frozen=True)
class StreamContext:
    """What a detector may know about the session it serves."""

    session_id: str
    candidate_id: str
    # The candidate's enrolled face embedding (decrypted), when they enrolled.
    enrollment: npt.NDArray[np.float32] | None = None
    # How much the candidate's lips moved between two media times (share of video frames
    # with the mouth moving; None when the video cannot tell): audio stages use it to
    # tell the candidate's speech from someone else's. Called from worker threads.
    lip_movement: Callable[[float, float], float | None] | None = None


@dataclass
class Observation:
    """What one detector saw in one sample.

    ``signals`` feed the flag tracker's rule table by name; ``confidences`` give the
    detector's confidence in a signal; ``details`` is for people (boxes, scores).
    """

    session_id: str
    media_time: float
    detector: str
    signals: dict[str, float] = field(default_factory=dict)
    confidences: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    processing_ms: float = 0.0


class DetectorStream:
    """A session's view of a detector. Not shared between sessions or threads at once.

    Video detectors implement :meth:`process`; audio detectors (``Detector.media ==
    "audio"``) implement :meth:`process_audio` and leave ``process`` to the default.
    """

    def process_audio(self, sample: AudioSample) -> list[Observation]:
        """Observations for a chunk of audio, each at its own media time (often several
        per chunk: one per VAD window), in time order."""
        return []

    def finish_audio(self) -> list[Observation]:
        """The audio has ended (session over, file done): report what is still open."""
        return []

    def process(self, sample: VideoSample) -> Observation | None:
        """What this sample shows, or None when the stream skips it (a detector may run
        below the analysis rate: its rules wait for its next reading)."""
        return None

    def set_rate(self, fps: float) -> None:
        """Run at most ``fps`` times a second (the load governor lowers a costly stage's
        rate under overload, then restores it)."""

    def close(self) -> None:
        """Release per-session resources."""


class Detector(ABC):
    """A model loaded once per process, handing out per-session streams."""

    name: str
    source: str  # "<model>@<version>", copied into the flags this detector backs
    media: str = "video"  # or "audio": which samples the pipeline hands its streams
    # A heavy stage costs tens of milliseconds a frame. At most one runs per analysed
    # frame: a later heavy stage skips the frame an earlier one used (its rules wait a
    # frame), which keeps every frame's cost bounded.
    heavy: bool = False

    @abstractmethod
    def stream(self, context: StreamContext) -> DetectorStream: ...

    def close(self) -> None:  # noqa: B027 - most detectors hold nothing to release
        """Release the process-wide model."""
