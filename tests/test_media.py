"""The test frames are what they claim, by the real face detector on the real photos.

Every face test (detectors, pipeline, the browser end to end) leans on these frames,
so this also checks MediaPipe's BlazeFace on real photos: exactly one face in
``face_frame``, none in ``empty_frame``, two in ``two_faces_frame``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.media import RgbImage, empty_frame, face_frame, two_faces_frame, write_y4m


@pytest.fixture(scope="module")
def count_faces() -> Iterator[Callable[[RgbImage], int]]:
    import mediapipe as mp

    detector: Any = mp.solutions.face_detection.FaceDetection(
        model_selection=0, min_detection_confidence=0.5)
    with detector:
        yield lambda rgb: len(detector.process(rgb).detections or [])


@pytest.mark.parametrize(("make", "faces"),
                         [(face_frame, 1), (empty_frame, 0), (two_faces_frame, 2)])
@pytest.mark.parametrize("size", [(640, 480), (320, 240)])
def test_frames_hold_the_faces_they_claim(count_faces: Callable[[RgbImage], int],
                                          make: Callable[..., RgbImage], faces: int,
                                          size: tuple[int, int]) -> None:
    frame = make(*size)
    assert frame.shape == (size[1], size[0], 3) and frame.dtype == np.uint8
    assert count_faces(frame) == faces


def test_y4m_is_yuv420p_bt601(tmp_path: Path) -> None:
    grey = np.full((4, 6, 3), 128, np.uint8)
    white = np.full((4, 6, 3), 255, np.uint8)
    path = write_y4m(tmp_path / "clip.y4m", [grey, white], fps=15)
    header, _, rest = path.read_bytes().partition(b"\n")
    assert header == b"YUV4MPEG2 W6 H4 F15:1 Ip A1:1 C420jpeg"
    frame_bytes = 6 * 4 + 2 * (3 * 2)  # Y plane, then U and V at half width and height
    frames = rest.split(b"FRAME\n")[1:]
    assert [len(f) for f in frames] == [frame_bytes, frame_bytes]
    # BT.601 limited range: mid grey is Y 126, white is Y 235; neutral chroma is 128.
    assert set(frames[0][:24]) == {126} and set(frames[1][:24]) == {235}
    assert set(frames[0][24:]) == {128} and set(frames[1][24:]) == {128}


def test_y4m_refuses_odd_sizes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="even"):
        write_y4m(tmp_path / "odd.y4m", [np.zeros((5, 6, 3), np.uint8)], fps=15)
