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
from proctor.evidence.audio import Samples, downmix

log = logging.getLogger("proctor.audio")

MAX_QUEUED_SECONDS = 10.0
MAX_BATCH_SECONDS = 1.0  # a job catching up takes at most this much queued audio
# Analysed audio kept for cutting out speech segments (for the transcript). A segment
# longer than this keeps its last part.
RECENT_SECONDS = 60.0
RESYNC_SECONDS = 0.25  # a jump larger than this between packets restarts the timeline


class AudioChunker:
    """Turns decoded frames of any rate and layout into in-order 16 kHz mono chunks.

    Frames come in batches (:meth:`push_batch`): each run of frames without a jump in
    time is mixed down and resampled in one call, because a resampler call per 20 ms
    WebRTC frame cost more than the resampling itself.
    """

    def __init__(self, session_id: str, chunk_seconds: float) -> None:
        self.session_id = session_id
        self._chunk = int(chunk_seconds * AUDIO_RATE)
        self._resampler: av.AudioResampler | None = None
        self._resampler_rate = 0
        self._buffer: list[npt.NDArray[np.float32]] = []
        self._buffered = 0
        self._start: float | None = None  # media time of the first buffered sample
        self._input_end: float | None = None  # media time where the last input frame ended

    def push_batch(self, frames: list[tuple[av.AudioFrame, float]]) -> list[AudioSample]:
        chunks: list[AudioSample] = []
        run: list[Samples] = []
        rate = 0
        for frame, media_time in frames:
            jumped = (self._input_end is not None
                      and abs(media_time - self._input_end) > RESYNC_SECONDS)
            if jumped or (run and frame.sample_rate != rate):
                chunks += self._resample(run, rate)
                run = []
            if jumped:
                # Lost packets or a new track: what is buffered ends here.
                chunks += self.flush()
                self._start = media_time
            if self._start is None:
                self._start = media_time
            rate = frame.sample_rate
            run.append(downmix(frame))
            self._input_end = media_time + frame.samples / frame.sample_rate
        chunks += self._resample(run, rate)
        # A batch is about one chunk of input: what it yielded goes out now rather than
        # waiting for the next batch to make up a round chunk (streams take any length).
        return chunks + self.flush()

    def flush(self) -> list[AudioSample]:
        """What is buffered, as a last (short) chunk."""
        return [self._take(self._buffered)] if self._buffered else []

    def _resample(self, run: list[Samples], rate: int) -> list[AudioSample]:
        if not run:
            return []
        mono = np.concatenate(run) if len(run) > 1 else run[0]
        if rate == AUDIO_RATE:
            self._append(mono)
        else:
            if self._resampler is None or rate != self._resampler_rate:
                self._resampler = av.AudioResampler(format="flt", layout="mono",
                                                    rate=AUDIO_RATE)
                self._resampler_rate = rate
            frame = av.AudioFrame.from_ndarray(mono.reshape(1, -1), format="flt",
                                               layout="mono")
            frame.sample_rate = rate
            for resampled in self._resampler.resample(frame):
                self._append(resampled.to_ndarray().reshape(-1).astype(np.float32,
                                                                        copy=False))
        chunks = []
        while self._buffered >= 2 * self._chunk:  # a long batch (a backlog) in pieces
            chunks.append(self._take(self._chunk))
        return chunks

    def _append(self, samples: Samples) -> None:
        self._buffer.append(samples)
        self._buffered += len(samples)

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
    """Received frames are only gathered on the event loop; each ``chunk_seconds`` of them
    goes to the executor as one job, which resamples them and runs the stages."""

    def __init__(self, session_id: str, chunk_seconds: float,
                 streams: list[tuple[str, DetectorStream]], executor: Executor,
                 on_observations: ObservationSink) -> None:
        self.session_id = session_id
        self._chunker = AudioChunker(session_id, chunk_seconds)
        self._chunk_seconds = chunk_seconds
        self._streams = streams
        self._executor = executor
        self._on_observations = on_observations
        self._gathered: list[tuple[av.AudioFrame, float]] = []
        self._gathered_seconds = 0.0
        self._queue: deque[list[tuple[av.AudioFrame, float]]] = deque(
            maxlen=int(MAX_QUEUED_SECONDS / chunk_seconds))
        self._batch_chunks = max(1, round(MAX_BATCH_SECONDS / chunk_seconds))
        self._recent: deque[AudioSample] = deque(maxlen=int(RECENT_SECONDS / chunk_seconds))
        self._ready = asyncio.Event()
        self.chunks_analysed = 0
        self.chunks_dropped = 0
        self.newest_media_time: float | None = None

    def push(self, frame: av.AudioFrame, media_time: float) -> None:
        """From the track reader, for every frame: an append, never blocks."""
        self._gathered.append((frame, media_time))
        self._gathered_seconds += frame.samples / max(1, frame.sample_rate)
        if self._gathered_seconds >= self._chunk_seconds:
            self._enqueue()

    def _enqueue(self) -> None:
        if not self._gathered:
            return
        if len(self._queue) == self._queue.maxlen:
            self.chunks_dropped += 1
            log.warning("session %s: audio analysis behind; dropping a chunk",
                        self.session_id)
        self._queue.append(self._gathered)
        self._gathered, self._gathered_seconds = [], 0.0
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
            frames = self._catch_up()
            chunks, observations = await loop.run_in_executor(
                self._executor, self._analyse_frames, frames)
            self._absorb(chunks)
            await self._on_observations(observations)

    def _catch_up(self) -> list[tuple[av.AudioFrame, float]]:
        """The frames of the next job: every queued chunk, up to MAX_BATCH_SECONDS.

        Each job is a round trip through the shared executor, which also holds the video
        frames of every session. One job per 0.1 s chunk kept up only while that round
        trip stayed under 0.1 s: at 8 sessions it took ~0.2 s, so the audio fell behind
        until chunks were dropped (and multiple_speakers came seconds late). Joining what
        queued meanwhile makes each job as large as the lag needs, and costs nothing
        when the node keeps up (one chunk queued, one chunk per job)."""
        frames: list[tuple[av.AudioFrame, float]] = []
        for _ in range(self._batch_chunks):
            if not self._queue:
                break
            frames += self._queue.popleft()
        return frames

    def _absorb(self, chunks: list[AudioSample]) -> None:
        for chunk in chunks:
            self.chunks_analysed += 1
            self.newest_media_time = chunk.media_time + chunk.duration
            self._recent.append(chunk)

    async def finish(self) -> None:
        """The end of the audio: analyse the rest, then let stages report what is open."""
        self._enqueue()
        await self.drain()
        loop = asyncio.get_running_loop()
        last = self._chunker.flush()
        observations: list[Observation] = []
        for chunk in last:
            observations += await loop.run_in_executor(self._executor, self._analyse, chunk)
        self._absorb(last)
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

    def _analyse_frames(self, frames: list[tuple[av.AudioFrame, float]],
                        ) -> tuple[list[AudioSample], list[Observation]]:
        """Executor side: resample a batch of frames, then analyse its chunks in order."""
        chunks = self._chunker.push_batch(frames)
        observations: list[Observation] = []
        for chunk in chunks:
            observations += self._analyse(chunk)
        return chunks, observations

    def _analyse(self, chunk: AudioSample) -> list[Observation]:
        observations: list[Observation] = []
        for _, stream in self._streams:
            observations += stream.process_audio(chunk)
        observations.sort(key=lambda o: o.media_time)
        return observations
