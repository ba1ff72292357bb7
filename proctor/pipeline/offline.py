"""Recorded files and single images through the same stages and the same tracker.

``analyze_video`` drives a :class:`SessionPipeline` as fast as frames can be decoded
(decoding runs a few frames ahead on its own thread), so a recording is judged by
exactly the rules a live session is. ``analyze_image`` runs every stage once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt

from proctor.config import Config
from proctor.detectors.base import Detector, StreamContext, VideoSample
from proctor.flags.model import Flag, new_id, utc_now_iso
from proctor.flags.rules import rules_from_config
from proctor.flags.tracker import FlagEvent
from proctor.media.clock import MediaClock
from proctor.media.file import Prefetcher, probe_video, sample_media
from proctor.metrics import Metrics
from proctor.pipeline.session import SessionPipeline
from proctor.report import build_report
from proctor.store.base import SessionRecord, SessionStatus, TranscriptSegment
from proctor.transcript import transcript_document
from proctor.transcript.model import load_transcriber
from proctor.transcript.worker import TranscriptWorker

Progress = Callable[[float, float], None]  # (media seconds done, total seconds or 0)
TRANSCRIPT_TIMEOUT_SECONDS = 3600.0


class _CollectingSink:
    """Keeps each flag's latest state; a file has nobody to announce to."""

    def __init__(self) -> None:
        self.flags: dict[str, Flag] = {}
        self.transcript: list[TranscriptSegment] = []

    async def flag_event(self, event: FlagEvent) -> None:
        self.flags[event.flag.flag_id] = event.flag

    async def transcript_segment(self, segment: TranscriptSegment) -> None:
        self.transcript.append(segment)

    async def status(self, status: dict[str, Any]) -> None:
        return None


async def analyze_video(path: Path, config: Config, detectors: list[Detector], *,
                        candidate_id: str = "offline",
                        enrollment: npt.NDArray[np.float32] | None = None,
                        progress: Progress | None = None,
                        executor: Executor | None = None) -> dict[str, Any]:
    """The report for a recording (raises MediaError for what is not a video)."""
    info = probe_video(path, config.pipeline)
    record = SessionRecord(session_id=new_id(), candidate_id=candidate_id,
                           status=SessionStatus.ENDED, created_at=utc_now_iso(),
                           started_at=utc_now_iso(),
                           metadata={"source": path.name, "width": info.width,
                                     "height": info.height})
    sink = _CollectingSink()
    transcriber = await asyncio.to_thread(load_transcriber, config.detectors.transcription,
                                          config.data_dir)
    transcript = (TranscriptWorker(record.session_id, transcriber, sink.transcript_segment)
                  if transcriber is not None else None)
    own_pool = executor is None
    pool = executor or ThreadPoolExecutor(1, thread_name_prefix="proctor-offline")
    pipeline = SessionPipeline(
        session_id=record.session_id, candidate_id=candidate_id, config=config,
        detectors=detectors, executor=pool, rules=rules_from_config(config.flags.rules),
        sink=sink, metrics=Metrics(), clock=MediaClock(), enrollment=enrollment,
        transcript=transcript)
    started = time.monotonic()
    try:
        last = await _run(pipeline, path, config, progress, info.duration or 0.0)
        await pipeline.aclose(end_time=last)
        if pipeline.transcript is not None:
            await pipeline.transcript.drain(timeout=TRANSCRIPT_TIMEOUT_SECONDS)
    finally:
        if own_pool:
            pool.shutdown(wait=False)
    wall = time.monotonic() - started
    stats: dict[str, Any] = {**pipeline.stats(), **pipeline.behavioural_metrics(),
                             "media_seconds": round(last, 2), "wall_seconds": round(wall, 2),
                             "speed": round(last / wall, 1) if wall > 0 else None}
    flags = sorted(sink.flags.values(), key=lambda f: (f.start, f.kind))
    report = build_report(record, flags, stats, config.scoring)
    report["transcript"] = transcript_document(sink.transcript)
    return report


async def _run(pipeline: SessionPipeline, path: Path, config: Config,
               progress: Progress | None, total: float) -> float:
    loop = asyncio.get_running_loop()
    media = Prefetcher(sample_media(path, config.pipeline.analysis_fps))
    last = 0.0
    try:
        while batch := await loop.run_in_executor(None, media.next_batch):
            for frame, media_time in batch:
                if isinstance(frame, av.AudioFrame):
                    pipeline.offer_audio(frame, media_time)
                    continue
                # Audio first: flags are judged on everything up to this frame.
                await pipeline.audio.drain()
                last = max(last, media_time)
                await pipeline.analyse_frame(frame, media_time)
                if progress is not None:
                    progress(last, total)
    finally:
        media.close()
    return last


def analyze_image(image: npt.NDArray[np.uint8], detectors: list[Detector], *,
                  candidate_id: str = "image",
                  enrollment: npt.NDArray[np.float32] | None = None) -> dict[str, Any]:
    """Every stage once on one image (call from a worker thread)."""
    started = time.perf_counter()
    context = StreamContext("image", candidate_id, enrollment)
    sample = VideoSample("image", 0.0, image)
    results: dict[str, Any] = {}
    signals: dict[str, float] = {}
    for detector in detectors:
        stream = detector.stream(context)
        try:
            observation = stream.process(sample)
        finally:
            stream.close()
        if observation is None:
            continue
        sample.earlier.append(observation)
        signals.update(observation.signals)
        results[detector.name] = {"signals": observation.signals,
                                  "details": observation.details,
                                  "processing_ms": round(observation.processing_ms, 2),
                                  "source": detector.source}
    faces = results.get("faces", {}).get("details", {}).get("faces", [])
    return {"width": int(image.shape[1]), "height": int(image.shape[0]), "faces": faces,
            "signals": signals, "detectors": results,
            "processing_ms": round((time.perf_counter() - started) * 1000, 2)}
