"""Webcam-shaped frames built from real photos, and a y4m writer for Chromium's fake camera.

The photos come with scikit-image and matplotlib (see tests/detectors/photos.py); the
frames are composed at test time, so nothing large is committed.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

from tests.detectors.photos import astronaut, grace_hopper

RgbImage = npt.NDArray[np.uint8]
WIDTH, HEIGHT = 640, 480


def _fit(image: RgbImage, width: int, height: int, box: tuple[float, float, float, float]
         ) -> RgbImage:
    """Crop ``box`` (fractions of the photo: left, top, right, bottom) and scale it."""
    h, w = image.shape[:2]
    left, top, right, bottom = box
    crop = Image.fromarray(image).crop((int(left * w), int(top * h), int(right * w),
                                        int(bottom * h)))
    return np.asarray(crop.resize((width, height), Image.Resampling.LANCZOS), dtype=np.uint8)


@cache
def face_frame(width: int = WIDTH, height: int = HEIGHT) -> RgbImage:
    """One frontal face filling the frame as a laptop camera sees a candidate."""
    return _fit(astronaut(), width, height, (0.0, 0.0, 1.0, 0.75))


@cache
def empty_frame(width: int = WIDTH, height: int = HEIGHT) -> RgbImage:
    """A real scene with texture and light but nobody in it (a cup on a table)."""
    from skimage import data

    return _fit(data.coffee(), width, height, (0.0, 0.0, 1.0, 1.0))


@cache
def two_faces_frame(width: int = WIDTH, height: int = HEIGHT) -> RgbImage:
    """Two real people side by side, both faces clearly visible."""
    left = _fit(astronaut(), width // 2, height, (0.15, 0.0, 0.85, 0.95))
    right = _fit(grace_hopper(), width - width // 2, height, (0.0, 0.0, 1.0, 0.85))
    return np.ascontiguousarray(np.concatenate([left, right], axis=1))


def write_y4m(path: Path, frames: list[RgbImage], fps: int) -> Path:
    """A yuv420p y4m (BT.601, limited range): what Chromium's fake camera plays.

    4:2:0 halves the chroma planes, so width and height must be even (Chromium shows
    odd sizes as garbage rather than failing).
    """
    height, width = frames[0].shape[:2]
    if width % 2 or height % 2:
        raise ValueError(f"y4m 4:2:0 needs an even width and height, not {width}x{height}")
    if any(frame.shape != frames[0].shape for frame in frames):
        raise ValueError("every frame of a y4m has the same size")
    with path.open("wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for rgb in frames:
            out.write(b"FRAME\n")
            out.write(_yuv420(rgb))
    return path


def _yuv420(rgb: RgbImage) -> bytes:
    r, g, b = (rgb[..., i].astype(np.float32) for i in range(3))
    y = 16 + 0.257 * r + 0.504 * g + 0.098 * b
    u = 128 - 0.148 * r - 0.291 * g + 0.439 * b
    v = 128 + 0.439 * r - 0.368 * g - 0.071 * b
    half = lambda c: c.reshape(c.shape[0] // 2, 2, c.shape[1] // 2, 2).mean(axis=(1, 3))  # noqa: E731
    planes = [y, half(u), half(v)]
    return b"".join(np.clip(p, 0, 255).round().astype(np.uint8).tobytes() for p in planes)
