"""Lip movement over a window, as the speaker stage asks for it."""

from __future__ import annotations

import numpy as np
import pytest

from proctor.detectors.landmarks import mouth_opening
from proctor.pipeline.lips import MOVEMENT_STEP, LipHistory


def _history(values: list[float | None], fps: float = 5.0) -> LipHistory:
    history = LipHistory()
    for index, value in enumerate(values):
        history.add(index / fps, value)
    return history


def test_still_mouth_is_zero_and_talking_mouth_moves() -> None:
    jitter = [0.020, 0.022, 0.019, 0.021, 0.020, 0.023, 0.021, 0.020]
    assert _history(jitter).movement(0.0, 1.6) == 0.0
    talking = [0.02, 0.08, 0.03, 0.11, 0.05, 0.02, 0.09, 0.04]
    assert _history(talking).movement(0.0, 1.6) == pytest.approx(1.0)


def test_threshold_at_just_under_and_just_over() -> None:
    base = 0.05
    for step, moved in ((MOVEMENT_STEP - 0.001, 0.0), (MOVEMENT_STEP + 0.001, 1.0)):
        values = [base + (step if i % 2 else 0.0) for i in range(6)]
        assert _history(values).movement(0.0, 1.0) == pytest.approx(moved)


def test_no_verdict_without_enough_frames_or_without_a_face() -> None:
    assert _history([0.02, 0.02, 0.02]).movement(0.0, 1.0) is None
    assert _history([0.02, None, 0.02, 0.02, 0.02]).movement(0.0, 1.0) is None
    assert _history([0.02] * 20).movement(10.0, 12.0) is None  # no frames then


def test_history_is_bounded() -> None:
    history = _history([0.02] * 1000)  # 200 s at 5 fps
    assert history.movement(0.0, 100.0) is None
    assert history.movement(180.0, 199.8) == 0.0


def test_mouth_opening_is_the_lip_gap_over_face_height() -> None:
    points = np.zeros((478, 3))
    points[10, :2], points[152, :2] = (100, 50), (100, 300)  # forehead, chin: 250 px
    points[13, :2], points[14, :2] = (100, 230), (100, 255)  # lips 25 px apart
    assert mouth_opening(points) == pytest.approx(0.1)
