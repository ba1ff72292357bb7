"""A session's transcription, in the background, off the live path.

The voice-activity stage hands each stretch of speech to :meth:`TranscriptWorker.submit`
(on the event loop; it only appends to a queue). A background task takes speech from
the queue and runs Whisper on the transcriber's own single thread, which every session
shares (their batches take turns): never on the event loop and never in the shared
inference pool, so transcription cannot delay the live detectors. Finished segments
go, in media order, to the ``on_segment`` callback.

Batching: Whisper pads every call to a 30 s window, so short calls are dear: a 3 s
sentence took 0.5 s here, 23 s of conversation 1.0 s (tiny.en, 2 threads). Adjacent
pieces (at most ``max_gap_seconds`` apart) are joined,
with silence in the gaps so times stay exact, up to ``batch_max_seconds``; a short
batch waits up to ``hold_seconds`` for more speech unless the worker is draining.

Falling behind: with many sessions on few cores, speech can arrive faster than it is
transcribed. The worker does not skip anything; it keeps going, and whatever is still
queued when the session ends is transcribed by :meth:`TranscriptWorker.drain`, after
the session, so a report's transcript may complete a while after the session ended.
Memory stays bounded: beyond ``max_queue_seconds`` of queued speech (30 min, ~115 MB
of float32) the oldest speech is dropped, with a log line.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from contextlib import suppress
from dataclasses import dataclass
from itertools import islice
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from proctor.store.base import TranscriptSegment
from proctor.transcript.model import SAMPLE_RATE, Samples

log = logging.getLogger(__name__)

OnSegment = Callable[[TranscriptSegment], Awaitable[None]]

MAX_GAP_SECONDS = 2.0  # pieces further apart are different turns: transcribed apart
BATCH_TARGET_SECONDS = 15.0  # a batch this long goes at once
BATCH_MAX_SECONDS = 25.0  # never join past this: one batch stays inside one 30 s window
HOLD_SECONDS = 4.0  # wall time a short batch waits for more speech
BEHIND_LOG_SECONDS = 60.0  # queued speech beyond this is logged once as falling behind
DROP_LOG_INTERVAL = 60.0  # at most one drop line a minute per session


class SpeechToText(Protocol):
    """What the worker needs from a model (WhisperTranscriber, or a test's fake)."""

    @property
    def executor(self) -> Executor:
        """Where transcribe runs: one thread, never the event loop or the live pool."""

    def transcribe(self, samples: Samples, offset: float,
                   session_id: str = "") -> list[TranscriptSegment]: ...


# Queued speech is kept as 16-bit PCM, half the size of float32: under load a session's
# speech may wait here for many minutes (up to max_queue_seconds), and the audio came
# from 16-bit codecs anyway, so nothing is lost. A batch is turned back into float32.
PCM_SCALE = 32768.0


Pcm16 = npt.NDArray[np.int16]


def to_pcm16(samples: Samples) -> Pcm16:
    scaled = np.asarray(samples, dtype=np.float32).reshape(-1) * PCM_SCALE
    pcm: Pcm16 = np.clip(np.rint(scaled), -PCM_SCALE, PCM_SCALE - 1).astype(np.int16)
    return pcm


@dataclass
class _Speech:
    start: float  # media seconds of the first sample
    samples: Pcm16
    submitted: float  # loop time

    @property
    def duration(self) -> float:
        return len(self.samples) / SAMPLE_RATE

    @property
    def end(self) -> float:
        return self.start + self.duration


@dataclass
class _Batch:
    """Joined speech, as the model takes it."""

    start: float
    samples: Samples

    @property
    def duration(self) -> float:
        return len(self.samples) / SAMPLE_RATE


class TranscriptWorker:
    """One session's queue of speech and the task that transcribes it."""

    def __init__(self, session_id: str, transcriber: SpeechToText, on_segment: OnSegment,
                 *, max_queue_seconds: float = 1800.0, executor: Executor | None = None,
                 hold_seconds: float = HOLD_SECONDS,
                 max_gap_seconds: float = MAX_GAP_SECONDS,
                 batch_target_seconds: float = BATCH_TARGET_SECONDS,
                 batch_max_seconds: float = BATCH_MAX_SECONDS) -> None:
        self.session_id = session_id
        self._stt = transcriber
        self._on_segment = on_segment
        self._executor = executor or transcriber.executor
        self._max_queue = max_queue_seconds
        self._hold = hold_seconds
        self._max_gap = max_gap_seconds
        self._target = batch_target_seconds
        self._max_batch = batch_max_seconds
        self._queue: deque[_Speech] = deque()
        self._queued_samples = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._draining = False
        self._closed = False
        self.deferred = False  # under load: speech queues, and is transcribed after the session
        self._behind = False
        self._last_drop_log = -DROP_LOG_INTERVAL
        self.dropped_seconds = 0.0
        self.transcribed_seconds = 0.0
        self.segments = 0
        self.batches = 0

    # -- the event loop's side -------------------------------------------------------

    def submit(self, samples: Samples, media_start: float) -> None:
        """Queue one stretch of speech (16 kHz mono float32) that began at ``media_start``.

        Never blocks: a copy and an append. Call it from the event loop, in media order.
        """
        if self._closed or self._draining:
            log.debug("transcript %s: speech after the end ignored", self.session_id)
            return
        audio = to_pcm16(samples)  # a copy: callers reuse buffers
        if audio.size == 0:
            return
        loop = asyncio.get_running_loop()
        self._queue.append(_Speech(media_start, audio, loop.time()))
        self._queued_samples += audio.size
        self._enforce_cap(loop.time())
        self._note_backlog()
        if self._task is None:
            self._task = loop.create_task(self._run(), name=f"transcript-{self.session_id}")
        self._wake.set()

    @property
    def queued_seconds(self) -> float:
        """Speech waiting for transcription (not counting the batch in progress)."""
        return self._queued_samples / SAMPLE_RATE

    def stats(self) -> dict[str, Any]:
        return {"queued_seconds": round(self.queued_seconds, 2),
                "queued_bytes": sum(piece.samples.nbytes for piece in self._queue),
                "transcribed_seconds": round(self.transcribed_seconds, 2),
                "dropped_seconds": round(self.dropped_seconds, 2),
                "segments": self.segments, "batches": self.batches}

    def defer(self, deferred: bool) -> None:
        """The node is short of CPU (the first step of the degradation order): hold
        transcription back, queueing speech, until resumed or the session ends."""
        if deferred != self.deferred:
            self.deferred = deferred
            self._wake.set()

    async def drain(self, timeout: float) -> bool:
        """Transcribe everything queued (no more holding back), then stop.

        False when ``timeout`` seconds were not enough: what was left is dropped, logged.
        """
        self._draining = True
        self._wake.set()
        if self._task is None:
            self._closed = True
            return True
        try:
            # shield: on timeout the task is cancelled below, after its backlog is read.
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except TimeoutError:
            log.warning("transcript %s: drain timed out after %.0f s with %.1f s of speech "
                        "left untranscribed", self.session_id, timeout, self.queued_seconds)
            await self.close()
            return False
        self._closed = True
        return True

    async def close(self) -> None:
        """Stop now, discarding queued speech (drain first to keep it)."""
        self._closed = True
        self._queue.clear()
        self._queued_samples = 0
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task

    def _enforce_cap(self, now: float) -> None:
        max_samples = int(self._max_queue * SAMPLE_RATE)
        dropped = 0
        while self._queued_samples > max_samples:
            oldest = self._queue[0]
            excess = self._queued_samples - max_samples
            if excess >= oldest.samples.size:
                self._queue.popleft()
                cut = oldest.samples.size
            else:  # trim the oldest piece's head: its tail is the newer speech
                cut = excess
                oldest.samples = oldest.samples[cut:]
                oldest.start += cut / SAMPLE_RATE
            self._queued_samples -= cut
            dropped += cut
        if dropped:
            self.dropped_seconds += dropped / SAMPLE_RATE
            if now - self._last_drop_log >= DROP_LOG_INTERVAL:
                self._last_drop_log = now
                log.warning("transcript %s: over %.0f s of speech queued, oldest dropped "
                            "(%.1f s in all so far)", self.session_id, self._max_queue,
                            self.dropped_seconds)

    def _note_backlog(self) -> None:
        if not self._behind and self.queued_seconds > BEHIND_LOG_SECONDS:
            self._behind = True
            log.warning("transcript %s: %.0f s of speech queued, behind live; it keeps "
                        "going and catches up, after the session if need be",
                        self.session_id, self.queued_seconds)

    # -- the background task ---------------------------------------------------------

    async def _run(self) -> None:
        while (batch := await self._next_batch()) is not None:
            await self._transcribe(batch)

    async def _next_batch(self) -> _Batch | None:
        """The next batch once it is worth running; None when drained."""
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            if self.deferred and not self._draining:
                await self._wake.wait()  # resumed (defer(False)) or drained at the end
                continue
            if self._queue:
                wait = self._hold_left(loop.time())
                if wait <= 0:
                    return self._take_batch()
                with suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)
            elif self._draining:
                return None
            else:
                await self._wake.wait()

    def _joinable(self) -> int:
        """How many queued pieces, from the head, join into one batch."""
        first = self._queue[0]
        count, end = 1, first.end
        for piece in islice(self._queue, 1, None):
            gap = piece.start - end
            if not 0 <= gap <= self._max_gap or piece.end - first.start > self._max_batch:
                break
            count, end = count + 1, piece.end
        return count

    def _hold_left(self, now: float) -> float:
        """Seconds the head batch should still wait for more speech (<= 0: go now)."""
        if self._draining:
            return 0.0
        count = self._joinable()
        if count < len(self._queue):  # the next piece cannot join: the batch is complete
            return 0.0
        if self._queue[count - 1].end - self._queue[0].start >= self._target:
            return 0.0
        return self._queue[0].submitted + self._hold - now

    def _take_batch(self) -> _Batch:
        pieces = [self._queue.popleft() for _ in range(self._joinable())]
        self._queued_samples -= sum(p.samples.size for p in pieces)
        if self._behind and self.queued_seconds < BEHIND_LOG_SECONDS / 2:
            self._behind = False
            log.info("transcript %s: caught up", self.session_id)
        parts: list[Pcm16] = []
        for before, piece in zip([None, *pieces[:-1]], pieces, strict=True):
            if before is not None:  # silence for the gap, so Whisper's times stay media times
                gap = round((piece.start - before.end) * SAMPLE_RATE)
                parts.append(np.zeros(max(gap, 0), dtype=np.int16))
            parts.append(piece.samples)
        return _Batch(pieces[0].start, np.concatenate(parts).astype(np.float32) / PCM_SCALE)

    async def _transcribe(self, batch: _Batch) -> None:
        loop = asyncio.get_running_loop()
        try:
            segments = await loop.run_in_executor(
                self._executor, self._stt.transcribe, batch.samples, batch.start,
                self.session_id)
        except Exception:
            # One bad batch must not end the session's transcript: log it and go on.
            log.exception("transcript %s: batch at %.2f s failed", self.session_id,
                          batch.start)
            return
        self.batches += 1
        self.transcribed_seconds += batch.duration
        for segment in segments:
            await self._deliver(segment)

    async def _deliver(self, segment: TranscriptSegment) -> None:
        try:
            await self._on_segment(segment)
        except Exception:
            # A failed store write loses this segment, not the rest of the transcript.
            log.exception("transcript %s: on_segment failed at %.2f s", self.session_id,
                          segment.start)
            return
        self.segments += 1
