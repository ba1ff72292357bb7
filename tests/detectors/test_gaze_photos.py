"""Gaze on real photos of people looking sideways, down, into the lens, or with their
eyes shut (tests/detectors/photos.py ``LOOKS``; ``python -m bench.gaze`` measures all
of them at three sizes and other limits).

Each face is framed as a laptop camera frames a candidate (160 px wide, JPEG q75) and
run through the faces stage and the face mesh in their session order. The contact
sheet's woman gets her neutral look from three of her other tiles looking into the
lens, as a session calibrates; the face-api women have no other photo and keep the
uncalibrated defaults.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator
from dataclasses import fields

import numpy as np
import pytest

from proctor.config import load_config
from proctor.detectors.base import Detector
from proctor.detectors.landmarks import UNCALIBRATED, FaceMeasure, face_signals
from proctor.detectors.registry import build_detectors
from tests.detectors import photos
from tests.detectors.photos import Look, Portrait
from tests.detectors.webcam import jpeg

CONFIG = load_config(env={}).detectors.landmarks
LOOKS = {look.name: look for look in photos.LOOKS}
NEUTRAL_TILES = ("test3 r0c0 neutral", "test3 r2c4 slight smile", "test3 r4c2 neutral")


@pytest.fixture(scope="module")
def stages() -> Iterator[list[Detector]]:
    detectors = [d for d in build_detectors(load_config(env={}).detectors)
                 if d.name in ("faces", "landmarks")]
    yield detectors
    for detector in detectors:
        detector.close()


def measure(look: Look, stages: list[Detector], mirrored: bool) -> FaceMeasure:
    frame = jpeg(Portrait(look.person, 160).frame(), 75)
    measured = photos.face_measure(np.ascontiguousarray(frame[:, ::-1]) if mirrored
                                   else frame, stages)
    assert measured is not None, f"no face measured on {look.name}"
    return measured


def neutral(look: Look, stages: list[Detector], mirrored: bool) -> FaceMeasure:
    if look.subject != "facetorch:test3":
        return UNCALIBRATED
    pool = [measure(LOOKS[name], stages, mirrored) for name in NEUTRAL_TILES
            if name != look.name]
    return FaceMeasure(**{f.name: statistics.median(getattr(m, f.name) for m in pool)
                          for f in fields(FaceMeasure)})


def gaze(name: str, stages: list[Detector], mirrored: bool) -> dict[str, float]:
    look = LOOKS[name]
    neutral_look = neutral(look, stages, mirrored)
    return face_signals(measure(look, stages, mirrored), neutral_look, CONFIG,
                        calibrated=neutral_look is not UNCALIBRATED)


@pytest.mark.parametrize("mirrored", [False, True])
def test_a_sideways_glance_with_the_head_frontal_is_off_screen(stages: list[Detector],
                                                               mirrored: bool) -> None:
    signals = gaze("test3 r1c4 eyes to her left, head frontal", stages, mirrored)
    assert signals["abs_yaw"] < 10  # the head faces the camera: only the eyes turned
    assert signals["gaze_off_screen"] == 1.0
    assert (signals["gaze_yaw"] < -CONFIG.gaze_horizontal_limit if mirrored
            else signals["gaze_yaw"] > CONFIG.gaze_horizontal_limit)


LOWERED_TO_A_DESK = ("face-api sample1 middle, eyes down, head tilted",
                     "face-api sample2 right, eyes down")


@pytest.mark.parametrize("name", LOWERED_TO_A_DESK)
def test_eyes_lowered_to_a_desk_are_off_screen_not_closed(stages: list[Detector],
                                                          name: str) -> None:
    # These women have no photo looking into the lens: their neutral look stands in as
    # a typical open eye (the defaults) taken as learned.
    signals = face_signals(measure(LOOKS[name], stages, False), UNCALIBRATED, CONFIG,
                           calibrated=True)
    assert signals["eyes_closed"] == 0.0
    assert signals["gaze_off_screen"] == 1.0
    assert signals["gaze_pitch"] < -CONFIG.gaze_down_limit


@pytest.mark.parametrize("name", [*LOWERED_TO_A_DESK, "facetorch:test2.jpg"])
def test_lowered_lids_of_a_face_never_calibrated_are_not_judged(stages: list[Detector],
                                                                name: str) -> None:
    # facetorch test2 laughs with her eyes narrowed and her head tilted down: judged
    # against the defaults she read as looking down for a whole clean clip.
    signals = gaze(name, stages, mirrored=False)
    assert signals["eyes_closed"] == 1.0
    assert "gaze_off_screen" not in signals


@pytest.mark.parametrize("name", [n for n in LOOKS if LOOKS[n].direction == "closed"])
def test_shut_eyes_are_not_gaze_away(stages: list[Detector], name: str) -> None:
    signals = gaze(name, stages, mirrored=False)
    assert signals["eyes_closed"] == 1.0
    assert "gaze_off_screen" not in signals


@pytest.mark.parametrize("name", ["test3 r0c0 neutral", "test3 r4c2 neutral",
                                  "test3 r4c4 chin down, eyes up at the lens",
                                  "test3 r0c1 smiling"])
@pytest.mark.parametrize("mirrored", [False, True])
def test_her_looks_into_the_lens_are_on_screen(stages: list[Detector], name: str,
                                               mirrored: bool) -> None:
    signals = gaze(name, stages, mirrored)
    assert signals["gaze_off_screen"] == 0.0
    assert abs(signals["gaze_yaw"]) < CONFIG.gaze_horizontal_limit - 10
