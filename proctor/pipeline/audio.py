"""A session's audio path: resample to 16 kHz mono, cut into chunks, run audio stages.

Unlike video, audio is not sampled: every chunk is analysed, in order, because voice
activity and speaker windows need continuous audio. Chunks queue up to a bound; when
analysis cannot keep up, the oldest chunk is dropped and counted (and the streams
see a gap, which they treat as a new start of speech).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor

import av
import numpy as np
import numpy.typing as npt

from proctor.detectors.base import AUDIO_RATE, AudioSample, DetectorStream, Observation

log = logging.getLogger("proctor.audio")

MAX_QUEUED_SECONDS = 10.0
# Analysed audio kept for cutting out speech segments (for the transcript). A segment
# longer than this keeps its last part.
RECENT_SECONDS = 60.0
RESYNC_SECONDS = 0.25  # a jump larger than this between packets restarts the timeline


class AudioChunker:
    """Turns decoded frames of any rate and layout into in-order 16 kHz mono chunks."""

    def __init__(self, session_id: str, chunk_seconds: float) -> None:
        self.session_id = session_id
        self._chunk = int(chunk_seconds * AUDIO_RATE)
        self._resampler = av.AudioResampler(format="flt", layout="mono", rate=AUDIO_RATE)
        self._buffer: list[npt.NDArray[np.float32]] = []
        self._buffered = 0
        self._start: float | None = None  # media time of the first buffered sample

    def push(self, frame: av.AudioFrame, media_time: float) -> list[AudioSample]:
        expected = None if self._start is None else self._start + self._buffered / AUDIO_RATE
        if expected is not None and abs(media_time - expected) > RESYNC_SECONDS:
            # Lost packets or a new track: what is buffered ends here.
            chunks = self.flush()
            self._start = media_time
        else:
            chunks = []
            if self._start is None:
                self._start = media_time
        for resampled in self._resampler.resample(frame):
            samples = resampled.to_ndarray().reshape(-1).astype(np.float32, copy=False)
            self._buffer.append(samples)
            self._buffered += len(samples)
        while self._buffered >= self._chunk:
            chunks.append(self._take(self._chunk))
        return chunks

    def flush(self) -> list[AudioSample]:
        """What is buffered, as a last (short) chunk."""
        return [self._take(self._buffered)] if self._buffered else []

    def _take(self, count: int) -> AudioSample:
        assert self._start is not None
        joined = np.concatenate(self._buffer) if len(self._buffer) > 1 else self._buffer[0]
        taken, rest = joined[:count], joined[count:]
        sample = AudioSample(self.session_id, self._start, taken)
        self._start += count / AUDIO_RATE
        self._buffer = [rest] if len(rest) else []
        self._buffered = len(rest)
        return sample


ObservationSink = Callable[[list[Observation]], Awaitable[None]]


class AudioPath:
    def __init__(self, session_id: str, chunk_seconds: float,
                 streams: list[tuple[str, DetectorStream]], executor: Executor,
                 on_observations: ObservationSink) -> None:
        self.session_id = session_id
        self._chunker = AudioChunker(session_id, chunk_seconds)
        self._streams = streams
        self._executor = executor
        self._on_observations = on_observations
        self._queue: deque[AudioSample] = deque(maxlen=int(MAX_QUEUED_SECONDS / chunk_seconds))
        self._recent: deque[AudioSample] = deque(maxlen=int(RECENT_SECONDS / chunk_seconds))
        self._ready = asyncio.Event()
        self.chunks_analysed = 0
        self.chunks_dropped = 0
        self.newest_media_time: float | None = None

    def push(self, frame: av.AudioFrame, media_time: float) -> None:
        """From the track reader, for every frame: cheap, never blocks."""
        for chunk in self._chunker.push(frame, media_time):
            if len(self._queue) == self._queue.maxlen:
                self.chunks_dropped += 1
                log.warning("session %s: audio analysis behind; dropping a chunk",
                            self.session_id)
            self._queue.append(chunk)
            self._ready.set()

    async def run(self) -> None:
        """The session's audio task: analyse chunks in order, forever."""
        while True:
            await self._ready.wait()
            self._ready.clear()
            await self.drain()

    async def drain(self) -> None:
        """Analyse every queued chunk now (the live task's step; files call it directly)."""
        loop = asyncio.get_running_loop()
        while self._queue:
            chunk = self._queue.popleft()
            observations = await loop.run_in_executor(self._executor, self._analyse, chunk)
            self.chunks_analysed += 1
            self.newest_media_time = chunk.media_time + chunk.duration
            self._recent.append(chunk)
            await self._on_observations(observations)

    async def finish(self) -> None:
        """The end of the audio: analyse the rest, then let stages report what is open."""
        for chunk in self._chunker.flush():
            self._queue.append(chunk)
        await self.drain()
        loop = asyncio.get_running_loop()
        observations: list[Observation] = []
        for _, stream in self._streams:
            observations += await loop.run_in_executor(self._executor, stream.finish_audio)
        await self._on_observations(sorted(observations, key=lambda o: o.media_time))

    def cut(self, start: float, end: float) -> tuple[npt.NDArray[np.float32], float] | None:
        """The analysed audio between two media times, and where it really starts."""
        pieces = [c for c in self._recent
                  if c.media_time < end and c.media_time + c.duration > start]
        if not pieces:
            return None
        joined = np.concatenate([c.samples for c in pieces])
        first = max(start, pieces[0].media_time)
        offset = round((first - pieces[0].media_time) * AUDIO_RATE)
        count = round((min(end, pieces[-1].media_time + pieces[-1].duration) - first)
                      * AUDIO_RATE)
        return joined[offset:offset + count], first

    def _analyse(self, chunk: AudioSample) -> list[Observation]:
        observations: list[Observation] = []
        for _, stream in self._streams:
            observations += stream.process_audio(chunk)
        observations.sort(key=lambda o: o.media_time)
        return observations
