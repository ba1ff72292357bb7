"""Is the camera showing anything? Dark, covered, featureless or frozen frames.

Signals:
- ``camera_blocked`` 1/0 (backs ``camera_blocked``): the frame is dark (mean luma below
  ``dark_luma``) or featureless (luma spread below ``flat_std``, or almost no edges):
  a hand or tape over the lens, a lens cap, a smear, a camera turned to a blank wall.
- ``video_frozen`` 1/0 (backs ``video_lost`` with the pipeline's ``video_lost``): the
  picture has not changed at all since the previous analysed frame. A live camera
  never gives two identical frames (sensor noise), a stalled or looped still does.
Plain numpy on a small grey thumbnail: well under a millisecond.
"""

from __future__ import annotations

import time

import numpy as np
import numpy.typing as npt

from proctor.config import CameraConfig
from proctor.detectors.base import (
    Detector,
    DetectorStream,
    Observation,
    StreamContext,
    VideoSample,
)

THUMB_WIDTH = 160


def grey_thumbnail(image: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """Luma (BT.601) of a strided downscale: enough to judge light, texture and change."""
    step = max(1, image.shape[1] // THUMB_WIDTH)
    small = image[::step, ::step].astype(np.float32)
    grey: npt.NDArray[np.float32] = (small[..., 0] * 0.299 + small[..., 1] * 0.587
                                      + small[..., 2] * 0.114)
    return grey


def edge_density(grey: npt.NDArray[np.float32], step: float = 12.0) -> float:
    """Share of neighbouring pixels whose luma differs by more than ``step``."""
    horizontal = np.abs(np.diff(grey, axis=1)) > step
    vertical = np.abs(np.diff(grey, axis=0)) > step
    # An image one pixel wide or high has no neighbours along that axis: the mean of
    # nothing is NaN, which reached /analyze/frame's answer as a bare NaN, not JSON
    # (found by tests/fuzz/test_openapi_fuzz.py). Only the axes that have pairs count.
    shares = [float(pairs.mean()) for pairs in (horizontal, vertical) if pairs.size]
    return sum(shares) / len(shares) if shares else 0.0


class CameraDetector(Detector):
    name = "camera"
    source = "frame-statistics@1"

    def __init__(self, config: CameraConfig) -> None:
        self.config = config

    def stream(self, context: StreamContext) -> DetectorStream:
        return _CameraStream(self.config, context.session_id)


class _CameraStream(DetectorStream):
    def __init__(self, config: CameraConfig, session_id: str) -> None:
        self._config = config
        self._session_id = session_id
        self._previous: npt.NDArray[np.float32] | None = None

    def process(self, sample: VideoSample) -> Observation:
        started = time.perf_counter()
        grey = grey_thumbnail(sample.image)
        luma, spread, edges = float(grey.mean()), float(grey.std()), edge_density(grey)
        dark = luma < self._config.dark_luma
        flat = spread < self._config.flat_std or edges < self._config.flat_edges
        change = None
        if self._previous is not None and self._previous.shape == grey.shape:
            change = float(np.abs(grey - self._previous).mean())
        self._previous = grey
        signals = {"camera_blocked": float(dark or flat), "luma": round(luma, 1)}
        if change is not None:
            signals["video_frozen"] = float(change <= self._config.frozen_max_change)
        return Observation(
            session_id=self._session_id, media_time=sample.media_time, detector="camera",
            signals=signals,
            details={"luma": round(luma, 1), "luma_std": round(spread, 1),
                     "edge_density": round(edges, 4),
                     "change": None if change is None else round(change, 3)},
            processing_ms=(time.perf_counter() - started) * 1000)
