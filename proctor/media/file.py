"""Recorded files and single images as sources for the same pipeline.

A file is decoded with PyAV on its own thread and sampled by media time at the
analysis rate, so the stages see what a live session at that rate would have seen.
"""

from __future__ import annotations

import io
import queue
import struct
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
from PIL import Image, UnidentifiedImageError

from proctor.config import PipelineConfig
from proctor.media.limits import FrameShapeError, check_frame_shape, image_size

MAX_IMAGE_PIXELS = 40_000_000  # refuse decompression bombs


class MediaError(ValueError):
    """The input is not a video or image we can read."""


@dataclass(frozen=True)
class VideoInfo:
    duration: float | None  # seconds, when the container says
    width: int
    height: int
    has_audio: bool


def _reason(exc: av.FFmpegError) -> str:
    """FFmpeg's words without the file name (a server path)."""
    return str(exc.strerror or type(exc).__name__)


def probe_video(path: Path, limits: PipelineConfig | None = None) -> VideoInfo:
    """The container's duration and video shape; MediaError for what cannot be read,
    FrameShapeError for frames over ``limits`` (checked before any frame is decoded)."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaError("the file has no video stream")
            stream = container.streams.video[0]
            duration = None
            if container.duration is not None:
                duration = container.duration / av.time_base
            elif stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            width, height = stream.codec_context.width, stream.codec_context.height
            check_frame_shape(width, height, limits or PipelineConfig())
            return VideoInfo(duration, width, height, bool(container.streams.audio))
    except av.FFmpegError as exc:
        raise MediaError(f"not a video PyAV can open: {_reason(exc)}") from exc


MediaItem = tuple[av.VideoFrame | av.AudioFrame, float]


def sample_media(path: Path, fps: float) -> Iterator[MediaItem]:
    """Video frames at most ``fps`` times a second, and every audio frame, each with
    its media time (seconds from the file's first frame), in decoding order."""
    interval = 1.0 / fps
    next_due: float | None = None
    origin: float | None = None
    try:
        with av.open(str(path)) as container:
            video = container.streams.video[0]
            video.thread_type = "AUTO"  # frame threads: decoding keeps up with stages
            streams = [video, *container.streams.audio[:1]]
            for packet in container.demux(streams):
                for frame in packet.decode():
                    if not isinstance(frame, av.VideoFrame | av.AudioFrame) or frame.time is None:
                        continue
                    origin = frame.time if origin is None else origin
                    media_time = max(0.0, frame.time - origin)
                    if isinstance(frame, av.AudioFrame):
                        yield frame, media_time
                        continue
                    if next_due is not None and media_time < next_due - 1e-6:
                        continue
                    next_due = (media_time + interval if next_due is None
                                else max(next_due + interval, media_time + interval / 2))
                    yield frame, media_time
    except av.FFmpegError as exc:
        raise MediaError(f"decoding failed: {_reason(exc)}") from exc


class Prefetcher:
    """Runs a generator on its own thread, ``depth`` items ahead of the consumer, so
    decoding overlaps analysis on a second core."""

    _DONE = object()

    def __init__(self, items: Iterator[MediaItem], depth: int = 32) -> None:
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._items = items
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="proctor-decode", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for item in self._items:
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
        except BaseException as exc:  # handed to the consumer
            self._error = exc
        finally:
            self._queue.put(self._DONE)

    def next_batch(self, limit: int = 64) -> list[MediaItem]:
        """The next items (at least one, at most ``limit``), or [] at the end. Blocking:
        call it from a worker thread. Batches save a thread hop per audio frame."""
        batch: list[MediaItem] = []
        item = self._queue.get()
        while item is not self._DONE:
            batch.append(item)  # type: ignore[arg-type]
            if len(batch) >= limit:
                return batch
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return batch
        self._queue.put(self._DONE)  # the end stays the end for the next call
        if self._error is not None and not batch:
            raise self._error
        return batch

    def close(self) -> None:
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get_nowait()
            except queue.Empty:
                self._thread.join(timeout=0.1)


def decode_image(data: bytes, limits: PipelineConfig | None = None) -> npt.NDArray[np.uint8]:
    """An uploaded JPEG/PNG (or anything Pillow reads) as RGB, or MediaError; a shape
    over ``limits`` is FrameShapeError, from the header, before any pixel is decoded."""
    limits = limits or PipelineConfig()
    size = image_size(data)
    if size is not None:
        check_frame_shape(*size, limits)
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    try:
        with Image.open(io.BytesIO(data)) as image:
            check_frame_shape(*image.size, limits)  # Pillow reads only the header here
            image.load()
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except FrameShapeError:
        raise
    # Pillow reports a broken file in many ways: a PNG chunk it cannot read is a
    # SyntaxError, a cut one EOFError or struct.error, a bad palette ValueError (found
    # by tests/fuzz/test_media_fuzz.py; each was a 500).
    except (UnidentifiedImageError, OSError, EOFError, SyntaxError, ValueError, IndexError,
            struct.error, zlib.error, Image.DecompressionBombError) as exc:
        raise MediaError("not an image (JPEG or PNG expected)") from exc
