"""The shape check every upload and live frame passes (proctor/media/limits.py)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from proctor.config import PipelineConfig
from proctor.media.file import decode_image
from proctor.media.limits import FrameShapeError, check_frame_shape, image_size

LIMITS = PipelineConfig()


def _encoded(width: int, height: int, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((height, width, 3), np.uint8)).save(buffer, format=fmt,
                                                                  **options)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt,options", [("PNG", {}), ("JPEG", {}),
                                         ("JPEG", {"progressive": True}),
                                         ("JPEG", {"exif": b"Exif\x00\x00" + b"x" * 300})])
def test_header_sizes_without_decoding(fmt: str, options: dict[str, object]) -> None:
    assert image_size(_encoded(320, 200, fmt, **options)) == (320, 200)


def test_other_formats_and_junk_have_no_header_size() -> None:
    assert image_size(_encoded(20, 10, "GIF")) is None
    assert image_size(b"\xff\xd8\xff") is None and image_size(b"") is None


@pytest.mark.parametrize("width,height", [(640, 480), (1920, 1080), (480, 640), (4096, 2048),
                                          (100, 400)])
def test_camera_shapes_pass(width: int, height: int) -> None:
    check_frame_shape(width, height, LIMITS)


@pytest.mark.parametrize("width,height", [(16, 4096), (1, 39_000_000), (4097, 2000),
                                          (0, 10), (100, 401), (5000, 5000)])
def test_shapes_no_camera_makes_are_refused(width: int, height: int) -> None:
    with pytest.raises(FrameShapeError):
        check_frame_shape(width, height, LIMITS)


def test_decode_refuses_other_formats_by_their_opened_size() -> None:
    with pytest.raises(FrameShapeError):
        decode_image(_encoded(10, 80, "GIF"))
    assert decode_image(_encoded(40, 30, "GIF")).shape == (30, 40, 3)
