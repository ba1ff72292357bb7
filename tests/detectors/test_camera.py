"""camera_blocked and frozen video on real photos and on what a covered lens shows."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFilter
from skimage import data

from proctor.config import CameraConfig
from proctor.detectors.base import StreamContext, VideoSample
from proctor.detectors.camera import CameraDetector

CONTEXT = StreamContext("s", "c")


def _frame(image: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(image).convert("RGB").resize((640, 480)))


def _blocked(image: np.ndarray) -> float:
    stream = CameraDetector(CameraConfig()).stream(CONTEXT)
    observation = stream.process(VideoSample("s", 0.0, image))
    assert observation is not None
    return observation.signals["camera_blocked"]


@pytest.mark.parametrize("photo", ["astronaut", "coffee", "chelsea", "rocket"])
def test_real_scenes_are_not_blocked(photo: str) -> None:
    image = _frame(getattr(data, photo)())
    assert _blocked(image) == 0.0
    # A dim room (half the light) is still a picture.
    assert _blocked((image * 0.5).astype(np.uint8)) == 0.0


def test_dark_covered_and_featureless_frames_are_blocked() -> None:
    scene = _frame(data.astronaut())
    assert _blocked(np.zeros((480, 640, 3), np.uint8)) == 1.0
    assert _blocked((scene * 0.06).astype(np.uint8)) == 1.0  # lens covered by a hand
    # Something right against the lens: the scene blurred to a smooth, lit smear.
    smear = np.asarray(Image.fromarray(scene).filter(ImageFilter.GaussianBlur(80)))
    assert _blocked(smear) == 1.0
    assert _blocked(np.full((480, 640, 3), 235, np.uint8)) == 1.0


def test_frozen_video_is_identical_frames_only() -> None:
    stream = CameraDetector(CameraConfig()).stream(CONTEXT)
    scene = _frame(data.astronaut())
    first = stream.process(VideoSample("s", 0.0, scene))
    assert first is not None and "video_frozen" not in first.signals  # nothing to compare
    same = stream.process(VideoSample("s", 0.2, scene.copy()))
    assert same is not None and same.signals["video_frozen"] == 1.0
    rng = np.random.default_rng(1)
    noisy = np.clip(scene + rng.integers(-2, 3, scene.shape), 0, 255).astype(np.uint8)
    live = stream.process(VideoSample("s", 0.4, noisy))
    assert live is not None and live.signals["video_frozen"] == 0.0
