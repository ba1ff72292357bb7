"""A proctor's live picture and sound of one candidate, relayed from the owner node.

The candidate's decoded frames reach a :class:`RelayTrack` through the session's frame
taps. aiortc encodes whatever a sender's track returns, so each watcher's peer encodes
its own copy (VP8 at the watcher's bitrate); the candidate's stream is decoded only once,
for the analysis, and nothing is re-encoded for a watcher who watches nothing.

Video keeps only the newest frame (a slow proctor sees a lower frame rate, never a lag);
audio keeps 1 s and drops the oldest. Frames are copied (the analysis shares the
originals) and re-timed on the track's own clock, so switching sessions never sends a
timestamp backwards.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from collections import deque

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from proctor.sessions import LiveSession

VIDEO_CLOCK = 90_000
AUDIO_QUEUE_FRAMES = 50  # 1 s of 20 ms frames


class RelayTrack(MediaStreamTrack):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self._frames: deque[av.VideoFrame | av.AudioFrame] = deque(
            maxlen=1 if kind == "video" else AUDIO_QUEUE_FRAMES)
        self._ready = asyncio.Event()
        self._started = time.monotonic()
        self._samples = 0  # audio samples sent: the audio clock

    def push(self, frame: av.VideoFrame | av.AudioFrame) -> None:
        """A tap: keep a copy of the frame for the next recv."""
        self._frames.append(_copy(frame))
        self._ready.set()

    async def recv(self) -> av.VideoFrame | av.AudioFrame:
        while not self._frames:
            if self.readyState != "live":
                raise MediaStreamError
            self._ready.clear()
            await self._ready.wait()
        frame = self._frames.popleft()
        self._restamp(frame)
        return frame

    def _restamp(self, frame: av.VideoFrame | av.AudioFrame) -> None:
        if isinstance(frame, av.AudioFrame):
            frame.pts, frame.time_base = self._samples, fractions.Fraction(1, frame.sample_rate)
            self._samples += frame.samples
        else:
            frame.pts = round((time.monotonic() - self._started) * VIDEO_CLOCK)
            frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)

    def stop(self) -> None:
        super().stop()
        self._ready.set()


def _copy(frame: av.VideoFrame | av.AudioFrame) -> av.VideoFrame | av.AudioFrame:
    if isinstance(frame, av.VideoFrame):
        return av.VideoFrame.from_ndarray(frame.to_ndarray(), format=frame.format.name)
    copied = av.AudioFrame.from_ndarray(frame.to_ndarray(), format=frame.format.name,
                                        layout=frame.layout.name)
    copied.sample_rate = frame.sample_rate
    return copied


class LiveRelay:
    """One watcher's picture and sound, fed by whichever session it is switched to."""

    def __init__(self) -> None:
        self.video = RelayTrack("video")
        self.audio = RelayTrack("audio")
        self.session: LiveSession | None = None

    def switch(self, session: LiveSession | None) -> None:
        self.detach()
        if session is not None:
            session.taps.add("video", self.video.push)
            session.taps.add("audio", self.audio.push)
        self.session = session

    def detach(self) -> None:
        if self.session is not None:
            self.session.taps.remove("video", self.video.push)
            self.session.taps.remove("audio", self.audio.push)
            self.session = None

    def stop(self) -> None:
        self.detach()
        self.video.stop()
        self.audio.stop()
