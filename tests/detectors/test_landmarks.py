"""Head pose, gaze and eyes closed: pure geometry at its limits, then real photos
through the real face mesh, then a session's worth of frames into the flag tracker."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from proctor.config import ConfigError, FaceDetectorConfig, LandmarksConfig, load_config
from proctor.detectors.base import DetectorStream, Observation, StreamContext, VideoSample
from proctor.detectors.faces import FaceDetector
from proctor.detectors.landmarks import (
    CANONICAL_FACE,
    EYE_ROTATION_RADIUS,
    LEFT_EYE,
    MESH_POINTS,
    RIGHT_EYE,
    ROI_MIN_FACE_PX,
    UNCALIBRATED,
    Calibration,
    FaceMeasure,
    LandmarksDetector,
    LandmarksStream,
    eye_openness,
    eye_rotation,
    face_signals,
    head_pose,
    iris_offset,
    largest_face,
    mesh_points,
    rotation_angles,
    rotation_matrix,
)
from proctor.flags.model import FlagKind, Severity
from proctor.flags.rules import rules_from_config
from proctor.flags.tracker import FlagChange, FlagTracker
from tests.detectors import photos
from tests.detectors.eye_edits import close_eyes, shift_irises

RgbImage = npt.NDArray[np.uint8]
Points = npt.NDArray[np.float64]
CONFIG = LandmarksConfig()
FPS = 5.0  # the pipeline's default analysis rate


# Frames -----------------------------------------------------------------------------


def webcam(image: RgbImage, centre: tuple[float, float], crop_width: float) -> RgbImage:
    """A 640×480 frame cut around ``centre`` (edges replicated past the photo)."""
    crop_height = crop_width * 3 / 4
    pad = int(crop_width)
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    left = round(centre[0] - crop_width / 2) + pad
    top = round(centre[1] - crop_height / 2) + pad
    crop = padded[top: top + round(crop_height), left: left + round(crop_width)]
    resized = Image.fromarray(crop).resize((640, 480), Image.Resampling.BILINEAR)
    return np.ascontiguousarray(np.asarray(resized, dtype=np.uint8))


# Where each face is in its photo, and a crop that frames it as a webcam would.
FRAMES: dict[str, tuple[Callable[[], RgbImage], tuple[float, float], float]] = {
    "astronaut": (photos.astronaut, (223, 150), 440),
    "grace_hopper": (photos.grace_hopper, (256, 260), 512),
    "obama": (lambda: photos.face_recognition_photo("obama.jpg"), (496, 320), 900),
    "obama2": (lambda: photos.face_recognition_photo("obama2.jpg"), (313, 455), 626),
    "obama3": (lambda: photos.face_recognition_photo("obama3.jpg"), (808, 460), 800),
    "biden": (lambda: photos.face_recognition_photo("biden.jpg"), (596, 430), 800),
    "cameraman": (photos.cameraman, (240, 160), 320),  # near-profile, facing image right
}


def frame(name: str, *, flip: bool = False) -> RgbImage:
    load, centre, crop_width = FRAMES[name]
    image = webcam(load(), centre, crop_width)
    return np.ascontiguousarray(image[:, ::-1]) if flip else image


def jitter(image: RgbImage, seed: int) -> RgbImage:
    """Sensor noise: a live camera never sends the same frame twice."""
    noise = np.random.default_rng(seed).integers(-3, 4, image.shape)
    return np.clip(image.astype(np.int16) + noise, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def detector() -> Iterator[LandmarksDetector]:
    detector = LandmarksDetector(CONFIG)
    yield detector
    detector.close()


def first_look(detector: LandmarksDetector, image: RgbImage) -> dict[str, float]:
    """A new session's signals for one frame (uncalibrated: raw angles)."""
    stream = detector.stream(StreamContext("s", "c"))
    try:
        return look(stream, VideoSample("s", 0.0, image)).signals
    finally:
        stream.close()


def look(stream: DetectorStream, sample: VideoSample) -> Observation:
    observation = stream.process(sample)
    assert observation is not None
    return observation


def points_of(detector: LandmarksDetector, image: RgbImage) -> Points:
    points = mesh_points(detector.mesh().process(image), image.shape)
    assert points is not None, "the mesh found no face"
    return points


# Pure geometry: pose ----------------------------------------------------------------


def canonical_points(yaw: float, pitch: float, roll: float) -> Points:
    """The canonical face posed by these angles, as the mesh reports it: pixels, image
    axes (x right, y down, z away from the camera), a face about 200 px wide."""
    points = np.zeros((MESH_POINTS, 3))
    model = np.array(list(CANONICAL_FACE.values()))
    posed = (rotation_matrix(yaw, pitch, roll) @ model.T).T * 13.0
    points[list(CANONICAL_FACE)] = posed * [1, -1, -1] + [320, 240, 0]
    return points


@pytest.mark.parametrize("angles", [(0, 0, 0), (30, 0, 0), (-50, 10, 5), (20, -25, -15),
                                    (70, 30, 20), (-10, 40, -30)])
def test_rotation_angles_invert_rotation_matrix(angles: tuple[float, float, float]) -> None:
    pose = rotation_angles(rotation_matrix(*angles))
    assert (pose.yaw, pose.pitch, pose.roll) == pytest.approx(angles, abs=1e-9)


@pytest.mark.parametrize("angles", [(0, 0, 0), (36, 0, 0), (-48, 5, 3), (15, -20, 10),
                                    (60, 25, -20)])
def test_head_pose_recovers_a_posed_canonical_face(angles: tuple[float, float, float]) -> None:
    pose = head_pose(canonical_points(*angles))
    assert (pose.yaw, pose.pitch, pose.roll) == pytest.approx(angles, abs=1e-6)


def test_pose_signs_mean_what_the_docstring_says() -> None:
    nose, right_eye, left_eye, brow = 1, 33, 263, 10
    turned_left = canonical_points(30, 0, 0)  # + yaw: nose toward the image's right
    assert turned_left[nose, 0] > (turned_left[right_eye, 0] + turned_left[left_eye, 0]) / 2
    chin_up = canonical_points(0, 20, 0)  # + pitch: the nose tip rises in the image
    level = canonical_points(0, 0, 0)
    assert chin_up[nose, 1] - chin_up[brow, 1] < level[nose, 1] - level[brow, 1]
    tilted = canonical_points(0, 0, 20)  # + roll: the left eye (image right) drops
    assert tilted[left_eye, 1] > tilted[right_eye, 1]


# Pure geometry: eyes ----------------------------------------------------------------


def eye_points(iris: tuple[float, float], gap: float = 10.0, tilt: float = 0.0) -> Points:
    """One synthetic right eye 40 px wide at (200, 200), optionally tilted (degrees)."""
    points = np.zeros((MESH_POINTS, 3))
    layout = {RIGHT_EYE.right_corner: (-20, 0), RIGHT_EYE.left_corner: (20, 0),
              RIGHT_EYE.upper_lid[0]: (-7, -gap / 2), RIGHT_EYE.lower_lid[0]: (-7, gap / 2),
              RIGHT_EYE.upper_lid[1]: (7, -gap / 2), RIGHT_EYE.lower_lid[1]: (7, gap / 2),
              RIGHT_EYE.iris: (iris[0], -iris[1])}  # iris given as (right, up)
    turn = math.radians(tilt)
    for index, (x, y) in layout.items():
        points[index, :2] = (200 + x * math.cos(turn) - y * math.sin(turn),
                             200 + x * math.sin(turn) + y * math.cos(turn))
    return points


@pytest.mark.parametrize("tilt", [0.0, 25.0, -40.0])
def test_iris_offset_is_in_eye_widths_along_the_eye(tilt: float) -> None:
    assert iris_offset(eye_points((0, 0), tilt=tilt), RIGHT_EYE) == pytest.approx((0, 0))
    assert iris_offset(eye_points((6, 0), tilt=tilt), RIGHT_EYE) == pytest.approx((0.15, 0))
    assert iris_offset(eye_points((-4, 2), tilt=tilt), RIGHT_EYE) == pytest.approx((-0.1, 0.05))


def test_eye_openness_is_lid_gap_over_width() -> None:
    assert eye_openness(eye_points((0, 0), gap=10), RIGHT_EYE) == pytest.approx(0.25)
    assert eye_openness(eye_points((0, 0), gap=2, tilt=30), RIGHT_EYE) == pytest.approx(0.05)


def test_eye_rotation_turns_iris_travel_into_degrees() -> None:
    assert eye_rotation(0.0) == 0.0
    assert eye_rotation(EYE_ROTATION_RADIUS * math.sin(math.radians(20))) == pytest.approx(20)
    assert eye_rotation(-EYE_ROTATION_RADIUS * math.sin(math.radians(35))) == pytest.approx(-35)
    assert eye_rotation(5.0) == 90.0  # past the eye's reach: clipped, not an error


# Pure decisions: thresholds at, under and over their limits ----------------------------


def measure_at(*, yaw: float = 0.0, pitch: float = 0.0, eye_yaw: float = 0.0,
               eye_pitch: float = 0.0, openness: float = UNCALIBRATED.openness) -> FaceMeasure:
    """A face measure that deviates from UNCALIBRATED by exactly these amounts."""
    def travel(degrees: float) -> float:
        return EYE_ROTATION_RADIUS * math.sin(math.radians(degrees))

    return replace(UNCALIBRATED, yaw=yaw, pitch=pitch, openness=openness,
                   iris_h=UNCALIBRATED.iris_h + travel(eye_yaw),
                   iris_v=UNCALIBRATED.iris_v + travel(eye_pitch))


def signals_at(**kwargs: float) -> dict[str, float]:
    return face_signals(measure_at(**kwargs), UNCALIBRATED, CONFIG)


def test_head_signals_are_the_deviation() -> None:
    signals = signals_at(yaw=-40.0, pitch=12.0)
    assert signals["abs_yaw"] == pytest.approx(40.0)
    assert signals["yaw"] == pytest.approx(-40.0)
    assert signals["pitch"] == pytest.approx(12.0)


@pytest.mark.parametrize(("yaw", "eye_yaw", "off"), [
    (0.0, 0.0, 0.0), (25.0, 0.0, 0.0),      # at the limit: not beyond it
    (0.0, 24.9, 0.0), (0.0, 25.1, 1.0), (0.0, -25.1, 1.0), (0.0, -40.0, 1.0),
])
def test_sideways_gaze_limit(yaw: float, eye_yaw: float, off: float) -> None:
    signals = signals_at(yaw=yaw, eye_yaw=eye_yaw)
    assert signals["gaze_yaw"] == pytest.approx(yaw + eye_yaw)
    assert signals["gaze_off_screen"] == off


def test_head_and_eyes_add_up() -> None:
    # Head 20° one way, eyes 20° back: still reading the screen.
    assert signals_at(yaw=20.0, eye_yaw=-20.0)["gaze_off_screen"] == 0.0
    # Head 15° and eyes 15° the same way: 30°, off the screen though the head faces it.
    assert signals_at(yaw=15.0, eye_yaw=15.0)["gaze_off_screen"] == 1.0


@pytest.mark.parametrize(("pitch", "eye_pitch", "off"), [
    (-25.0, 0.0, 0.0),                        # at the limit: not beyond it
    (0.0, -24.9, 0.0), (0.0, -25.1, 1.0),     # eyes down at a desk
    (-15.0, -9.9, 0.0), (-15.0, -10.1, 1.0),  # head and eyes down together
    (0.0, 40.0, 0.0), (30.0, 20.0, 0.0),      # looking up is not flagged
])
def test_downward_gaze_limit(pitch: float, eye_pitch: float, off: float) -> None:
    assert signals_at(pitch=pitch, eye_pitch=eye_pitch)["gaze_off_screen"] == off


@pytest.mark.parametrize(("yaw", "judged"), [(34.9, True), (35.0, True), (35.1, False),
                                              (-60.0, False)])
def test_a_turned_head_leaves_gaze_to_head_turned(yaw: float, judged: bool) -> None:
    signals = signals_at(yaw=yaw)  # eyes straight ahead in the head: gaze = head yaw
    assert signals["gaze_off_screen"] == (1.0 if judged else 0.0)
    assert ("gaze_yaw" in signals) == judged


@pytest.mark.parametrize(("share", "closed"), [(0.49, True), (0.5, False), (0.51, False),
                                               (1.0, False)])
def test_eyes_closed_below_a_share_of_the_neutral_openness(share: float, closed: bool) -> None:
    signals = signals_at(openness=share * UNCALIBRATED.openness, eye_yaw=60.0)
    assert signals["eyes_closed"] == (1.0 if closed else 0.0)
    # Closed eyes say nothing about gaze, however far the iris estimate wanders.
    assert ("gaze_off_screen" in signals) == (not closed)


# Calibration ------------------------------------------------------------------------


def calibrate(calibration: Calibration, measure: FaceMeasure, seconds: float,
              start: float = 0.0) -> float:
    t = start
    while t <= start + seconds + 1e-9:
        calibration.add(t, measure)
        t += 1 / FPS
    return t


def test_calibration_learns_a_camera_set_to_one_side() -> None:
    calibration = Calibration(CONFIG)
    side = measure_at(yaw=20.0, pitch=-8.0, eye_yaw=-5.0)
    calibration.add(0.0, side)
    # Not yet calibrated: the raw angle counts.
    assert face_signals(side, calibration.current(), CONFIG)["abs_yaw"] == pytest.approx(20.0)
    calibrate(calibration, side, 3.0)
    assert calibration.done
    signals = face_signals(side, calibration.current(), CONFIG)
    assert signals["abs_yaw"] == pytest.approx(0.0)
    assert signals["gaze_yaw"] == pytest.approx(0.0)
    turned = face_signals(measure_at(yaw=60.0, pitch=-8.0), calibration.current(), CONFIG)
    assert turned["abs_yaw"] == pytest.approx(40.0)


def test_calibration_takes_the_median_and_needs_the_whole_window() -> None:
    calibration = Calibration(CONFIG)
    for i in range(15):  # 0.0-2.8 s
        yaw = 10.0 if i < 6 else 40.0 if i < 9 else 14.0  # 40°: beyond 30, not learned
        calibration.add(i / FPS, measure_at(yaw=yaw))
    assert not calibration.done  # the window is not over
    calibration.add(3.0, measure_at(yaw=12.0))
    assert calibration.done
    assert calibration.current().yaw == pytest.approx(12.0)  # median of 6×10, 12, 6×14


def test_calibration_ignores_blinks_and_glances() -> None:
    calibration = Calibration(CONFIG)
    for i in range(17):  # 0.0-3.2 s
        if i % 4 == 1:
            measure = measure_at(openness=0.05)  # a blink
        elif i % 4 == 3:
            measure = measure_at(eye_yaw=-40.0)  # a glance at something beside the screen
        else:
            measure = measure_at(yaw=5.0, openness=0.3)
        calibration.add(i / FPS, measure)
    assert calibration.done
    assert calibration.current() == measure_at(yaw=5.0, openness=0.3)


def test_calibration_zero_seconds_keeps_raw_angles() -> None:
    calibration = Calibration(replace(CONFIG, calibration_seconds=0.0))
    assert calibration.current() == UNCALIBRATED
    calibrate(calibration, measure_at(yaw=20.0), 4.0)
    assert calibration.current() == UNCALIBRATED


def test_a_face_turned_from_the_start_is_never_learned() -> None:
    calibration = Calibration(CONFIG)
    calibrate(calibration, measure_at(yaw=31.0), 10.0)
    assert not calibration.done


# Config -------------------------------------------------------------------------------


def test_config_yaml_defaults_match_the_dataclass() -> None:
    assert load_config(env={}).detectors.landmarks == LandmarksConfig()


@pytest.mark.parametrize(("key", "value"), [
    ("calibration_seconds", -1.0), ("calibration_max_angle", 0.0),
    ("gaze_horizontal_limit", 95.0), ("gaze_down_limit", -5.0),
    ("gaze_head_yaw_limit", 0.0), ("eye_closed_ratio", 1.0), ("eye_closed_ratio", 0.0),
])
def test_config_rejects_bad_values_naming_the_key(key: str, value: float) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(env={}, overrides={"detectors": {"landmarks": {key: value}}})
    assert error.value.key == f"detectors.landmarks.{key}"


# Real photos through the real face mesh -------------------------------------------------

# Raw yaw each photo gave here (degrees; + = turned to the subject's left): astronaut -1,
# Grace Hopper +1, Obama +2, Biden +12, Obama (obama3) +12, Obama (obama2) -16 with his
# eyes well to his right, the cameraman +52 (near profile; the mesh saturates there).
@pytest.mark.parametrize(("name", "low", "high"), [
    ("astronaut", -5, 5), ("grace_hopper", -5, 5), ("obama", -5, 5),
    ("biden", 6, 20), ("obama3", 6, 20), ("obama2", -25, -8), ("cameraman", 40, 75),
])
def test_yaw_of_real_faces(detector: LandmarksDetector, name: str, low: float,
                           high: float) -> None:
    yaw = first_look(detector, frame(name))["yaw"]
    assert low <= yaw <= high
    flipped = first_look(detector, frame(name, flip=True))["yaw"]
    assert -high <= flipped <= -low  # a mirror image turns the other way
    assert abs(yaw + flipped) < 5


@pytest.mark.parametrize("name", ["astronaut", "grace_hopper", "obama", "biden", "obama3"])
def test_people_looking_into_the_camera_are_on_screen(detector: LandmarksDetector,
                                                       name: str) -> None:
    for flip in (False, True):
        signals = first_look(detector, frame(name, flip=flip))
        assert signals["eyes_closed"] == 0.0
        assert signals["gaze_off_screen"] == 0.0
        assert abs(signals["gaze_yaw"]) < 18  # the limit is 25


def test_a_real_sideways_glance_is_off_screen(detector: LandmarksDetector) -> None:
    # obama2: head turned 16° to his right and his eyes further right still.
    signals = first_look(detector, frame("obama2"))
    assert signals["gaze_off_screen"] == 1.0
    assert signals["gaze_yaw"] < -30
    assert first_look(detector, frame("obama2", flip=True))["gaze_yaw"] > 30


def test_a_profile_is_head_turned_not_gaze_away(detector: LandmarksDetector) -> None:
    signals = first_look(detector, frame("cameraman"))
    assert signals["abs_yaw"] > 45
    assert signals["gaze_off_screen"] == 0.0


def test_closed_eyes_are_not_gaze_away(detector: LandmarksDetector) -> None:
    image = frame("astronaut")
    shut = close_eyes(image, points_of(detector, image))
    stream = detector.stream(StreamContext("s", "c"))
    opened = look(stream, VideoSample("s", 0.0, image)).signals
    closed = look(stream, VideoSample("s", 0.2, shut)).signals
    stream.close()
    assert opened["eyes_closed"] == 0.0
    assert closed["eyes_closed"] == 1.0
    assert "gaze_off_screen" not in closed
    assert closed["abs_yaw"] < 5  # the head is still measured


def test_eye_openness_of_a_real_face(detector: LandmarksDetector) -> None:
    image = frame("astronaut")
    points = points_of(detector, image)
    opened = [eye_openness(points, eye) for eye in (RIGHT_EYE, LEFT_EYE)]
    assert all(0.25 < value < 0.4 for value in opened)
    shut = points_of(detector, close_eyes(image, points))
    closed = [eye_openness(shut, eye) for eye in (RIGHT_EYE, LEFT_EYE)]
    assert all(c < 0.3 * o for c, o in zip(closed, opened, strict=True))
    # The same real eyes with their lids drawn together: openness scales with the gap, so
    # the closed rule trips just under its share of the neutral openness and not above.
    neutral = replace(UNCALIBRATED, openness=float(np.mean(opened)))
    for share, expected in ((0.52, 0.0), (0.48, 1.0)):
        squeezed = squeeze_lids(points, share)
        measure = replace(neutral, openness=float(np.mean(
            [eye_openness(squeezed, eye) for eye in (RIGHT_EYE, LEFT_EYE)])))
        assert face_signals(measure, neutral, CONFIG)["eyes_closed"] == expected


def squeeze_lids(points: Points, share: float) -> Points:
    """Each pair of opposite lid points drawn together, keeping ``share`` of their gap."""
    squeezed = points.copy()
    for eye in (RIGHT_EYE, LEFT_EYE):
        for upper, lower in zip(eye.upper_lid, eye.lower_lid, strict=True):
            middle = (points[upper] + points[lower]) / 2
            squeezed[upper] = middle + (points[upper] - middle) * share
            squeezed[lower] = middle + (points[lower] - middle) * share
    return squeezed


@pytest.mark.parametrize(("shift", "sign"), [(-0.2, -1), (0.2, 1)])
def test_moved_irises_move_the_gaze(detector: LandmarksDetector, shift: float,
                                    sign: int) -> None:
    image = frame("astronaut")
    points = points_of(detector, image)
    before = first_look(detector, image)["gaze_yaw"]
    after = first_look(detector, shift_irises(image, points, shift))["gaze_yaw"]
    assert sign * (after - before) > 12  # measured here: 19° and 26° for 0.2 eye widths


def test_no_face_gives_no_signals(detector: LandmarksDetector) -> None:
    stream = detector.stream(StreamContext("s", "c"))
    blank = np.full((480, 640, 3), 128, np.uint8)
    observation = look(stream, VideoSample("s", 0.0, blank))
    stream.close()
    assert observation.signals == {}
    assert observation.detector == "landmarks"
    assert observation.processing_ms > 0


def _astronaut_enlarged() -> RgbImage:
    image = Image.fromarray(photos.astronaut())
    return np.asarray(image.resize((768, 768), Image.Resampling.BILINEAR))


def _faces_stage_face(image: RgbImage) -> dict[str, Any]:
    faces = FaceDetector(FaceDetectorConfig()).detect(VideoSample("s", 0.0, image))
    face = largest_face(faces)
    assert face is not None and len(face["keypoints"]) == 6
    return face


@pytest.mark.parametrize("photo", [_astronaut_enlarged, photos.grace_hopper,
                                   lambda: photos.face_recognition_photo("obama.jpg")])
def test_the_mesh_starts_from_the_faces_stage_detection(
        detector: LandmarksDetector, photo: Callable[[], RgbImage]) -> None:
    """The faces stage's box and keypoints become the mesh's region of interest: the
    same landmarks as the static-image mesh finding the face itself (its own detector
    is the same BlazeFace), to the faces stage's 0.1 px rounding."""
    image = photo()
    face = _faces_stage_face(image)
    assert min(face["box"][2:]) >= ROI_MIN_FACE_PX
    fitted = detector.fit(image, face)
    assert fitted is not None and fitted.shape == (MESH_POINTS, 3)
    np.testing.assert_allclose(fitted, points_of(detector, image), atol=0.5)


def test_a_small_face_is_fitted_from_a_crop_around_it(detector: LandmarksDetector) -> None:
    """A box under ROI_MIN_FACE_PX: the static mesh on a crop around it, its points
    back in frame pixels (on the face the faces stage found)."""
    image = photos.astronaut()
    face = _faces_stage_face(image)
    assert min(face["box"][2:]) < ROI_MIN_FACE_PX
    fitted = detector.fit(image, face)
    assert fitted is not None
    x, y, w, h = face["box"]
    nose = fitted[1]  # mesh point 1: the nose tip
    assert x <= nose[0] <= x + w and y <= nose[1] <= y + h


def test_a_detection_on_an_empty_wall_gives_no_mesh(detector: LandmarksDetector) -> None:
    """A faces-stage box where there is no face (a false detection): the landmark
    model's own presence score turns it down, as the static mesh would."""
    wall = np.full((480, 640, 3), 128, np.uint8)
    face = {"box": [220.0, 140.0, 200.0, 200.0], "score": 0.7,
            "keypoints": [[280.0, 200.0], [360.0, 200.0], [320.0, 250.0], [320.0, 290.0],
                          [230.0, 220.0], [410.0, 220.0]]}
    assert detector.fit(wall, face) is None


# A session: calibration, then a turned head, into the flag tracker ------------------------


def run_session(stream: LandmarksStream, frames: list[tuple[RgbImage, float]],
                start: float = 0.0) -> list[Observation]:
    """Each (image, seconds) shown at FPS with fresh sensor noise per frame."""
    observations = []
    t = start
    for image, seconds in frames:
        for _ in range(round(seconds * FPS)):
            sample = VideoSample("s", round(t, 3), jitter(image, len(observations)))
            observations.append(look(stream, sample))
            t += 1 / FPS
    return observations


def test_session_calibrates_then_flags_a_turned_head(detector: LandmarksDetector) -> None:
    stream = detector.stream(StreamContext("s", "c"))
    assert isinstance(stream, LandmarksStream)
    observations = run_session(stream, [(frame("astronaut"), 4.0), (frame("cameraman"), 4.0)])
    stream.close()
    frontal, turned = observations[:20], observations[22:]  # a frame or two to re-find the face
    assert stream.calibration.done
    assert all(o.signals["abs_yaw"] < 5 for o in frontal)
    assert all(o.signals["gaze_off_screen"] == 0.0 for o in frontal)
    assert all(o.signals["abs_yaw"] > 35 for o in turned)

    config = load_config(env={})
    tracker = FlagTracker("s", "c", rules_from_config(config.flags.rules))
    events = [e for o in observations for e in tracker.update(o.media_time, o.signals)]
    head = [e for e in events if e.flag.kind == FlagKind.HEAD_TURNED]
    assert [e.change for e in head] == [FlagChange.OPENED, FlagChange.RAISED]
    assert head[0].flag.severity == Severity.MODERATE
    assert head[0].flag.start == pytest.approx(4.0, abs=0.5)
    assert head[1].flag.severity == Severity.HIGH
    assert not [e for e in events if e.flag.kind == FlagKind.GAZE_AWAY]


def test_a_side_camera_does_not_flag_an_honest_candidate(detector: LandmarksDetector) -> None:
    # Biden's head is 12° off the camera's axis in every frame, as with a camera set off
    # to one side; once calibrated, that is straight ahead.
    stream = detector.stream(StreamContext("s", "c"))
    assert isinstance(stream, LandmarksStream)
    observations = run_session(stream, [(frame("biden"), 6.0)])
    stream.close()
    assert observations[0].signals["abs_yaw"] > 8  # raw, before calibration
    settled = observations[16:]  # 3 s of frontal face learned
    assert stream.calibration.done
    assert all(o.signals["abs_yaw"] < 3 for o in settled)
    assert all(abs(o.signals["gaze_yaw"]) < 5 for o in settled)
    assert all(o.details["calibrated"] for o in settled)


def test_registry_builds_the_landmarks_detector() -> None:
    import dataclasses

    from proctor.config import DetectorsConfig
    from proctor.detectors.registry import build_detectors

    only = {f.name: {"enabled": f.name == "landmarks"}
            for f in dataclasses.fields(DetectorsConfig)}
    config = load_config(env={}, overrides={"detectors": only})
    built = build_detectors(config.detectors)
    assert [d.name for d in built] == ["landmarks"]
    assert built[0].source.startswith("face-mesh@mediapipe-")
    off = load_config(env={}, overrides={"detectors": {**only, "landmarks": {"enabled": False}}})
    assert build_detectors(off.detectors) == []


def test_the_mesh_skips_a_frame_the_faces_stage_found_empty(
        detector: LandmarksDetector) -> None:
    """Cascade: no face from the faces stage, no mesh run; a face, the mesh runs."""
    stream = detector.stream(StreamContext("s", "c"))
    empty = VideoSample("s", 0.0, photos.astronaut())
    empty.earlier.append(Observation("s", 0.0, "faces", signals={"face_count": 0.0}))
    skipped = stream.process(empty)
    assert skipped is not None and skipped.signals == {}
    assert skipped.details == {"skipped": "no face"}
    seen = VideoSample("s", 0.2, photos.astronaut())
    seen.earlier.append(Observation("s", 0.2, "faces", signals={"face_count": 1.0}))
    fitted = stream.process(seen)
    assert fitted is not None and "abs_yaw" in fitted.signals
    stream.close()


# Lowered lids: eyes looking down at a desk narrow like closing ones (bench/gaze.py
# measured real photos of eyes lowered to a desk reading as closed eyes).
LOWERED = 0.3 * UNCALIBRATED.openness  # under eye_closed_ratio (0.5) of the neutral


def calibrated_signals_at(**kwargs: float) -> dict[str, float]:
    """As :func:`signals_at`, with UNCALIBRATED standing for a learned neutral look."""
    return face_signals(measure_at(**kwargs), UNCALIBRATED, CONFIG, calibrated=True)


def test_lowered_lids_are_not_judged_before_the_face_is_calibrated() -> None:
    # Narrow or laughing eyes that never reach the defaults' openness never calibrate:
    # judged against the defaults they would read as lowered lids all session.
    signals = signals_at(openness=LOWERED, pitch=-20.0, eye_pitch=-20.0)
    assert signals["eyes_closed"] == 1.0
    assert "gaze_off_screen" not in signals


@pytest.mark.parametrize(("pitch", "eye_pitch", "down"), [
    (0.0, -24.9, False), (0.0, -25.1, True),   # at the down limit, just under, just over
    (-15.0, -9.9, False), (-15.0, -10.1, True),  # head and eyes down together
    (20.0, -40.0, False),                      # chin up, eyes down: 20° down in all
    (0.0, 30.0, False),                        # lids low looking up: closed, not away
])
def test_lowered_lids_over_eyes_turned_down_are_off_screen(pitch: float, eye_pitch: float,
                                                           down: bool) -> None:
    signals = calibrated_signals_at(openness=LOWERED, pitch=pitch, eye_pitch=eye_pitch)
    assert signals["eyes_closed"] == (0.0 if down else 1.0)
    if down:
        assert signals["gaze_off_screen"] == 1.0
        assert signals["gaze_pitch"] == pytest.approx(pitch + eye_pitch)
    else:
        assert "gaze_off_screen" not in signals  # a blink says nothing about gaze


def test_lowered_lids_judge_no_sideways_gaze() -> None:
    # Under low lids the iris' sideways spot is a guess: a glance aside is not judged.
    signals = calibrated_signals_at(openness=LOWERED, eye_yaw=40.0, eye_pitch=-5.0)
    assert signals["eyes_closed"] == 1.0
    assert "gaze_off_screen" not in signals


def test_a_turned_head_with_lowered_lids_is_left_to_head_turned() -> None:
    signals = calibrated_signals_at(openness=LOWERED, yaw=50.0, eye_pitch=-40.0)
    assert "gaze_off_screen" not in signals


def test_lowered_lids_never_calibrate_the_neutral_look() -> None:
    calibration = Calibration(CONFIG)
    for step in range(40):
        calibration.add(step * 0.2, measure_at(openness=LOWERED, eye_pitch=-30.0))
    assert not calibration.done
