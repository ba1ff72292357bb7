"""The live audio path: a node that falls behind catches up instead of dropping audio."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import av
import numpy as np

from proctor.config import load_config
from proctor.detectors.base import Observation, StreamContext
from proctor.detectors.voice import VoiceDetector
from proctor.pipeline.audio import MAX_BATCH_SECONDS, AudioPath
from tests.audio_media import librivox_clips
from tests.evidence.test_audio import RATE, webrtc_frame

FRAME_SAMPLES = 960  # 20 ms, what an Opus decoder hands over
CHUNK_SECONDS = 0.1


class CountingExecutor(ThreadPoolExecutor):
    """A real one-thread pool that counts the jobs it is given."""

    def __init__(self) -> None:
        super().__init__(1)
        self.jobs = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.jobs += 1
        return super().submit(fn, *args, **kwargs)


def webrtc_frames(seconds: float) -> list[tuple[av.AudioFrame, float]]:
    """Real speech as the track reader hands it over: 48 kHz stereo s16, 20 ms frames."""
    speech, _ = librivox_clips()[0]
    at_48k = np.clip(np.repeat(speech[: round(seconds * 16_000)], 3), -1, 1)  # 16 -> 48 kHz
    return [(webrtc_frame(at_48k[start:start + FRAME_SAMPLES]), start / RATE)
            for start in range(0, len(at_48k) - FRAME_SAMPLES + 1, FRAME_SAMPLES)]


async def run_path(frames: list[tuple[av.AudioFrame, float]], drain_every: int | None,
                   ) -> tuple[AudioPath, CountingExecutor, list[Observation]]:
    """Push every frame, draining after each ``drain_every`` frames (None: only at the
    end, as a node that fell behind finds its queue)."""
    detector = VoiceDetector(load_config(env={}).detectors.voice)
    executor = CountingExecutor()
    seen: list[Observation] = []

    async def sink(observations: list[Observation]) -> None:
        seen.extend(observations)

    stream = detector.stream(StreamContext("s1", "c1"))
    path = AudioPath("s1", CHUNK_SECONDS, [("voice", stream)], executor, sink)
    try:
        for index, (frame, media_time) in enumerate(frames, 1):
            path.push(frame, media_time)
            if drain_every is not None and index % drain_every == 0:
                await path.drain()
        await path.drain()
    finally:
        executor.shutdown()
    return path, executor, seen


def _summary(observations: list[Observation]) -> list[tuple[float, dict[str, float]]]:
    return [(round(o.media_time, 3), o.signals) for o in observations]


async def test_a_backlog_is_analysed_in_few_jobs_and_none_of_it_is_lost() -> None:
    frames = webrtc_frames(3.0)
    behind, behind_jobs, late = await run_path(frames, drain_every=None)
    live, live_jobs, prompt = await run_path(frames, drain_every=5)  # 5 frames = 0.1 s

    # Kept up: one job per 0.1 s chunk. Fell 3 s behind: one job per second of backlog.
    assert live_jobs.jobs == 30
    assert behind_jobs.jobs == round(3.0 / MAX_BATCH_SECONDS)
    # Nothing dropped, every sample analysed, and the verdicts are the same.
    assert behind.chunks_dropped == live.chunks_dropped == 0
    assert behind.chunks_analysed >= behind_jobs.jobs
    assert behind.newest_media_time is not None and live.newest_media_time is not None
    assert abs(behind.newest_media_time - 3.0) < 0.01
    assert abs(live.newest_media_time - 3.0) < 0.01
    assert any(o.signals.get("speech") == 1.0 for o in late)
    assert _summary(late) == _summary(prompt)

