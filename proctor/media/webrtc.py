"""Readers that drain aiortc's receive queues.

aiortc buffers received frames in an unbounded queue: if nobody pulls, memory grows
and analysis falls ever further behind. One reader task per track pulls every frame
as it arrives and hands it on at once; the sampler later takes the newest one.
(Same idea as aiortc's ``MediaRelay(buffered=False)``.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from proctor.media.clock import MediaClock
from proctor.media.taps import FrameTaps

log = logging.getLogger("proctor.media")

VideoHandler = Callable[[av.VideoFrame, float, float], None]  # frame, media time, arrival
AudioHandler = Callable[[av.AudioFrame, float], None]


class TrackReader:
    """Pulls one track until it ends; never blocks on what the handler does."""

    def __init__(self, session_id: str, track: MediaStreamTrack, clock: MediaClock,
                 on_video: VideoHandler | None = None,
                 on_audio: AudioHandler | None = None,
                 taps: FrameTaps | None = None,
                 accept: Callable[[av.VideoFrame], bool] | None = None) -> None:
        self.session_id = session_id
        self._accept = accept  # False: a video frame goes nowhere (bad shape)
        self._taps = taps  # proctors' live relays
        self.track = track
        self._clock = clock
        self._on_video = on_video
        self._on_audio = on_audio
        self.frames = 0
        self.task: asyncio.Task[None] | None = None

    def start(self) -> asyncio.Task[None]:
        name = f"{self.track.kind}-reader:{self.session_id}"
        self.task = asyncio.get_running_loop().create_task(self._run(), name=name)
        return self.task

    async def _run(self) -> None:
        try:
            while True:
                frame = await self.track.recv()
                self.frames += 1
                self._dispatch(frame)
        except MediaStreamError:
            log.info("session %s: %s track ended after %d frames", self.session_id,
                     self.track.kind, self.frames)
        finally:
            self._clock.forget(self)

    def _dispatch(self, frame: av.frame.Frame | av.Packet[Any]) -> None:
        pts = None
        if frame.pts is not None and frame.time_base is not None:
            pts = float(frame.pts * frame.time_base)
        media_time = self._clock.stamp(self, pts)  # refused frames still start the clock
        if (isinstance(frame, av.VideoFrame) and self._accept is not None
                and not self._accept(frame)):
            return
        try:
            if isinstance(frame, av.VideoFrame) and self._on_video is not None:
                self._on_video(frame, media_time, time.monotonic())
            elif isinstance(frame, av.AudioFrame) and self._on_audio is not None:
                self._on_audio(frame, media_time)
        except Exception:  # a bad frame must not stop the reader
            log.exception("session %s: handling a %s frame failed", self.session_id,
                          self.track.kind)
        if self._taps is not None and isinstance(frame, av.VideoFrame | av.AudioFrame):
            self._taps.emit(self.track.kind, frame)

    async def stop(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self.task, timeout=2.0)
