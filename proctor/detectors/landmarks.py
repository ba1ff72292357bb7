"""Head pose and gaze from MediaPipe's face mesh with iris (``refine_landmarks``).

Signals (angles in degrees, each a deviation from the session's calibrated neutral):

- ``abs_yaw`` (backs ``head_turned``), with ``yaw``, ``pitch`` and ``roll`` signed for
  evidence and status. Frames are what the camera sends (browsers mirror only their
  own preview), so: ``yaw`` + = the candidate turns to their left (nose toward the
  image's right); ``pitch`` + = chin up; ``roll`` + = head tilted toward the left
  shoulder.
- ``gaze_yaw``, ``gaze_pitch``: where the eyes point, head pose plus the eyes'
  rotation in the head, same signs.
- ``gaze_off_screen`` 1/0 (backs ``gaze_away``): eyes off the screen while the head
  faces it (sideways beyond ``gaze_horizontal_limit``, or down beyond
  ``gaze_down_limit``). 0 while the head is turned past ``gaze_head_yaw_limit``
  (``head_turned`` covers that); left out while the eyes are closed. Lids lowered
  under ``eye_closed_ratio`` of the neutral openness are closed eyes unless the eyes
  under them point down past ``gaze_down_limit`` once the session has learned the
  face's own openness: eyes lowered to a desk read so.
- ``eyes_closed`` 1/0: blinks and closed eyes, which are not looking away.

No face: an observation with no signals (``face_count`` is the faces detector's).

Head pose is a rigid (Kabsch) fit of a few stable landmarks of MediaPipe's canonical
face model to the mesh's 3-D landmarks, the way MediaPipe's own face-geometry module
does it, in plain numpy: no camera intrinsics to guess, and the angles are relative
to the line of sight, which is what "facing the camera" means.

The mesh starts from the face the faces stage found: that detection (box and six
keypoints) becomes the mesh's region of interest the way MediaPipe's own face-mesh graph
turns a detection into one (``FaceDetectionFrontDetectionToRoi``), and only the landmark
model runs (:data:`ROI_GRAPH`). The landmarks are those of MediaPipe's static-image face
mesh on the whole frame (to the faces stage's 0.1 px rounding), without its second face
detector: the stage costs 3.7-3.9 ms of CPU per analysed frame instead of 6.1 (about
0.8-1.2 % of a core per session at 5 fps). A face box under :data:`ROI_MIN_FACE_PX` is
fitted from a crop around it instead, and without a faces stage the static-image mesh
finds the face itself. The graphs keep nothing from frame to frame, so one per worker
thread serves every session (a tracking graph per session held ~29 MB each).
"""

from __future__ import annotations

import math
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import numpy.typing as npt

from proctor.config import LandmarksConfig
from proctor.detectors.base import (
    Detector,
    DetectorStream,
    Observation,
    StreamContext,
    VideoSample,
)
from proctor.detectors.faces import mediapipe_version

FloatArray = npt.NDArray[np.float64]

# Vertices of MediaPipe's canonical face model (mediapipe/modules/face_geometry/data/
# canonical_face_model.obj in MediaPipe's source, Apache-2.0; the mediapipe wheels do
# not ship it), indexed like the mesh's landmarks: centimetres, x toward the face's left
# (the image's right), y up, z out of the face. Only bone-anchored points: the nose
# ridge, forehead, eye corners, cheekbones and temples. Mouth, lids and jaw move with
# speech and expression and would read as head motion.
CANONICAL_FACE: dict[int, tuple[float, float, float]] = {
    1: (0.0, -1.126865, 7.475604),        # nose tip
    4: (0.0, -0.463170, 7.586580),
    5: (0.0, 0.365669, 7.242870),
    6: (0.0, 2.473255, 5.788627),         # nose bridge
    9: (0.0, 4.885979, 5.385258),
    10: (0.0, 8.261778, 4.481535),        # top of the forehead
    151: (0.0, 6.545390, 5.027311),
    168: (0.0, 3.271027, 5.236015),
    195: (0.0, 1.059413, 6.774605),
    197: (0.0, 1.728369, 6.316750),
    33: (-4.445859, 2.663991, 3.173422),  # right eye, outer corner
    133: (-1.856432, 2.585245, 3.757904),  # right eye, inner corner
    362: (1.856432, 2.585245, 3.757904),  # left eye, inner corner
    263: (4.445859, 2.663991, 3.173422),  # left eye, outer corner
    127: (-7.743095, 2.364999, -2.005167),  # temples
    356: (7.743095, 2.364999, -2.005167),
    234: (-7.664182, 0.673132, -2.435867),  # cheekbones, at the face's edge
    454: (7.664182, 0.673132, -2.435867),
    93: (-7.542244, -1.049282, -2.431321),
    323: (7.542244, -1.049282, -2.431321),
}
_POSE_INDICES = np.array(list(CANONICAL_FACE))
_CANONICAL = np.array(list(CANONICAL_FACE.values()), dtype=np.float64)
_CANONICAL_CENTRED = _CANONICAL - _CANONICAL.mean(axis=0)

MESH_POINTS = 478  # 468 face landmarks + 10 iris landmarks (refine_landmarks=True)

# MediaPipe's face-mesh graph (face_landmark_front_cpu) minus its face detector: the
# detection comes in from the faces stage. Subgraphs from the mediapipe wheel;
# WITH_ATTENTION is refine_landmarks (the iris points).
ROI_GRAPH = """
input_stream: "IMAGE:image"
input_stream: "DETECTION:detection"
output_stream: "LANDMARKS:face_landmarks"
node {
  calculator: "ImagePropertiesCalculator"
  input_stream: "IMAGE:image"
  output_stream: "SIZE:image_size"
}
node {
  calculator: "FaceDetectionFrontDetectionToRoi"
  input_stream: "DETECTION:detection"
  input_stream: "IMAGE_SIZE:image_size"
  output_stream: "ROI:roi"
}
node {
  calculator: "FaceLandmarkCpu"
  input_stream: "IMAGE:image"
  input_stream: "ROI:roi"
  input_side_packet: "WITH_ATTENTION:with_attention"
  output_stream: "LANDMARKS:face_landmarks"
}
"""


@dataclass(frozen=True)
class Eye:
    """Mesh indices of one eye: corners from the face's right to its left, lids, iris."""

    right_corner: int
    left_corner: int
    upper_lid: tuple[int, int]
    lower_lid: tuple[int, int]  # below upper_lid, point for point
    iris: int


RIGHT_EYE = Eye(33, 133, (160, 158), (144, 153), 468)
LEFT_EYE = Eye(362, 263, (385, 387), (380, 373), 473)

# The iris centre's travel for a rotation, as a share of the eye's corner-to-corner
# width: it turns on a radius of about 11 mm in an eye opening about 30 mm wide.
EYE_ROTATION_RADIUS = 0.37


@dataclass(frozen=True)
class Pose:
    """Head rotation in degrees, signs as in the module docstring."""

    yaw: float
    pitch: float
    roll: float


@dataclass(frozen=True)
class FaceMeasure:
    """What one frame's mesh says: head pose, iris position in the eyes, eye openness.

    ``iris_h``/``iris_v``: the iris centre's offset from the middle of the eye corners,
    in eye widths, toward the face's left / up. ``openness``: eye aspect ratio."""

    yaw: float
    pitch: float
    roll: float
    iris_h: float
    iris_v: float
    openness: float


# Before a session is calibrated: a head facing the camera, and the iris position
# measured on frontal portraits looking into the lens (astronaut, Grace Hopper, Obama,
# Biden: iris_h -0.03…0.02, iris_v 0.04…0.07). Their eyes' openness was 0.19…0.33;
# 0.22 sits low so narrow eyes still count as open (closed ones read about 0.06).
UNCALIBRATED = FaceMeasure(yaw=0.0, pitch=0.0, roll=0.0, iris_h=0.0, iris_v=0.06,
                           openness=0.22)


# Pure geometry ----------------------------------------------------------------------


def rotation_matrix(yaw: float, pitch: float, roll: float) -> FloatArray:
    """The head rotation for these angles (degrees), in the model's axes (x to the
    face's left, y up, z toward the camera): yaw about the vertical first, then pitch,
    then roll in the head's own frame. Inverse of :func:`rotation_angles`."""
    a, b, c = math.radians(yaw), math.radians(-pitch), math.radians(-roll)
    ry = np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
    rx = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    rz = np.array([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
    rotation: FloatArray = ry @ rx @ rz
    return rotation


def rotation_angles(rotation: FloatArray) -> Pose:
    """Yaw, pitch, roll (degrees) of a rotation built as in :func:`rotation_matrix`."""
    yaw = math.atan2(rotation[0, 2], rotation[2, 2])
    pitch = math.asin(max(-1.0, min(1.0, rotation[1, 2])))  # the nose's rise
    roll = -math.atan2(rotation[1, 0], rotation[1, 1])
    return Pose(math.degrees(yaw), math.degrees(pitch), math.degrees(roll))


def head_pose(points: FloatArray) -> Pose:
    """Head pose from mesh points (image axes: x right, y down, z away from the camera,
    all in pixels), by the rotation that best maps the canonical face onto them."""
    observed = points[_POSE_INDICES] * np.array([1.0, -1.0, -1.0])  # to the model's axes
    observed = observed - observed.mean(axis=0)
    # Kabsch: the rotation R minimising |observed - s R canonical| is V diag(1,1,d) Uᵀ
    # from the SVD of the cross-covariance; d keeps it a rotation, not a mirror.
    u, _, vt = np.linalg.svd(_CANONICAL_CENTRED.T @ observed)
    d = 1.0 if np.linalg.det(vt.T @ u.T) > 0 else -1.0
    rotation = vt.T @ np.diag([1.0, 1.0, d]) @ u.T
    return rotation_angles(rotation)


def _eye_frame(points: FloatArray, eye: Eye) -> tuple[FloatArray, FloatArray, float]:
    """The eye's middle, its across axis (toward the face's left) and its width, in the
    image plane. Axes follow the eye, so a tilted head does not read as a glance."""
    right, left = points[eye.right_corner, :2], points[eye.left_corner, :2]
    across = left - right
    width = float(np.hypot(*across))
    return (right + left) / 2, across / max(width, 1e-9), width


def iris_offset(points: FloatArray, eye: Eye) -> tuple[float, float]:
    """Where the iris sits in one eye: (toward the face's left, up) in eye widths."""
    middle, across, width = _eye_frame(points, eye)
    up = np.array([across[1], -across[0]])  # across turned a quarter toward the brow
    offset = points[eye.iris, :2] - middle
    return float(offset @ across) / max(width, 1e-9), float(offset @ up) / max(width, 1e-9)


def eye_openness(points: FloatArray, eye: Eye) -> float:
    """Eye aspect ratio: mean lid-to-lid distance over the corner-to-corner width.
    Open eyes give about 0.2–0.35; a closed eye under a third of its open value."""
    _, _, width = _eye_frame(points, eye)
    gaps = [float(np.hypot(*(points[top, :2] - points[bottom, :2])))
            for top, bottom in zip(eye.upper_lid, eye.lower_lid, strict=True)]
    return sum(gaps) / len(gaps) / max(width, 1e-9)


# Inner-lip midpoints and the face's vertical extent (forehead top to chin) in the mesh.
UPPER_LIP, LOWER_LIP, FOREHEAD, CHIN = 13, 14, 10, 152


def mouth_opening(points: FloatArray) -> float:
    """Gap between the inner lips as a share of face height: about 0 closed, 0.05–0.15
    while speaking. Its change from frame to frame tells speech from a still mouth."""
    gap = float(np.hypot(*(points[UPPER_LIP, :2] - points[LOWER_LIP, :2])))
    height = float(np.hypot(*(points[FOREHEAD, :2] - points[CHIN, :2])))
    return gap / max(height, 1e-9)


# Outer and inner lip corners and midlines: the mouth's box in the image.
MOUTH_OUTLINE = (61, 291, 0, 17, 13, 14, 78, 308)
# The mouth is measured only where it can be seen. A face under MIN_MOUTH_FACE_PX tall
# (forehead to chin) opens its lips by a few pixels in speech, within the mesh's jitter.
# A mouth box darker than MIN_MOUTH_LUMA or flatter than MIN_MOUTH_CONTRAST (luma
# standard deviation) is a dark room, a mask or a hand: the mesh then draws a guessed
# mouth that never moves. Measured on webcam-sized frames of real photos
# (tests/media.py): visible mouths 140-180 mean, 32-36 deviation; the same face at 15 %
# light 26 / 5; a flat patch over the mouth 0. A face the detector is unsure of
# (score under MIN_MOUTH_FACE_SCORE) is not measured either.
MIN_MOUTH_FACE_PX = 80.0
MIN_MOUTH_LUMA = 40.0
MIN_MOUTH_CONTRAST = 8.0
MIN_MOUTH_FACE_SCORE = 0.6


def mouth_measurable(points: FloatArray, image: npt.NDArray[np.uint8],
                     face_score: float = 1.0) -> bool:
    """Whether :func:`mouth_opening` means anything in this frame (see the constants)."""
    height = float(np.hypot(*(points[FOREHEAD, :2] - points[CHIN, :2])))
    if height < MIN_MOUTH_FACE_PX or face_score < MIN_MOUTH_FACE_SCORE:
        return False
    xs, ys = points[list(MOUTH_OUTLINE), 0], points[list(MOUTH_OUTLINE), 1]
    pad = 0.1 * float(xs.max() - xs.min())
    rows, cols = image.shape[:2]
    top, bottom = max(0, int(ys.min() - pad)), min(rows, int(ys.max() + pad) + 1)
    left, right = max(0, int(xs.min() - pad)), min(cols, int(xs.max() + pad) + 1)
    if bottom - top < 2 or right - left < 2:
        return False  # the mouth is off the frame
    luma = image[top:bottom, left:right, :3].astype(np.float32) @ np.array(
        [0.299, 0.587, 0.114], np.float32)
    return float(luma.mean()) >= MIN_MOUTH_LUMA and float(luma.std()) >= MIN_MOUTH_CONTRAST


def eye_rotation(offset: float) -> float:
    """Degrees an eye has turned for an iris offset (eye widths) from its neutral spot."""
    return math.degrees(math.asin(max(-1.0, min(1.0, offset / EYE_ROTATION_RADIUS))))


def measure(points: FloatArray) -> FaceMeasure:
    """Everything this detector reads off one face's mesh."""
    pose = head_pose(points)
    # The eye nearer the camera is seen wider and more surely: weight by width, so a
    # turned head leans on it rather than on the foreshortened far eye.
    weights = [_eye_frame(points, eye)[2] for eye in (RIGHT_EYE, LEFT_EYE)]
    total = sum(weights) or 1.0
    offsets = [iris_offset(points, eye) for eye in (RIGHT_EYE, LEFT_EYE)]
    openness = [eye_openness(points, eye) for eye in (RIGHT_EYE, LEFT_EYE)]
    return FaceMeasure(
        yaw=pose.yaw, pitch=pose.pitch, roll=pose.roll,
        iris_h=sum(w * o[0] for w, o in zip(weights, offsets, strict=True)) / total,
        iris_v=sum(w * o[1] for w, o in zip(weights, offsets, strict=True)) / total,
        openness=sum(w * e for w, e in zip(weights, openness, strict=True)) / total,
    )


def face_signals(raw: FaceMeasure, neutral: FaceMeasure, config: LandmarksConfig,
                 calibrated: bool = False) -> dict[str, float]:
    """The signals for one face, given the session's neutral pose (``calibrated``: the
    session's own, learned; else the defaults, which know nothing of this face's eyes)."""
    yaw, pitch = raw.yaw - neutral.yaw, raw.pitch - neutral.pitch
    signals = {"abs_yaw": abs(yaw), "yaw": yaw, "pitch": pitch, "roll": raw.roll - neutral.roll}
    lids_low = raw.openness < config.eye_closed_ratio * neutral.openness
    turned = abs(yaw) > config.gaze_head_yaw_limit
    gaze_pitch = pitch + eye_rotation(raw.iris_v - neutral.iris_v)
    if lids_low and calibrated and not turned and -gaze_pitch > config.gaze_down_limit:
        # Lids low and the eyes under them turned down past the limit: looking down
        # (the upper lid follows the eye down), not a blink. Measured on real photos of
        # eyes lowered to a desk (bench/gaze.py): they read as closed eyes otherwise.
        # Only downward gaze is judged: under low lids the iris' sideways spot is a guess.
        # Only against the face's own learned openness: narrow or laughing eyes that
        # never reach the defaults' openness (so never calibrate) read as lowered lids
        # throughout, and a tilted head then made a false gaze_away (bench/accuracy.py
        # --set hard, facetorch test2, laughing).
        signals.update(eyes_closed=0.0, gaze_yaw=yaw, gaze_pitch=gaze_pitch,
                       gaze_off_screen=1.0)
        return signals
    signals["eyes_closed"] = 1.0 if lids_low else 0.0
    if lids_low:  # a blink or shut eyes are not a glance away: say nothing about gaze
        return signals
    if turned:
        # The head itself is turned (head_turned's business), and the far eye is out of
        # sight: the eyes say nothing trustworthy.
        signals["gaze_off_screen"] = 0.0
        return signals
    gaze_yaw = yaw + eye_rotation(raw.iris_h - neutral.iris_h)
    signals["gaze_yaw"], signals["gaze_pitch"] = gaze_yaw, gaze_pitch
    signals["gaze_off_screen"] = 1.0 if gaze_off_screen(gaze_yaw, gaze_pitch, config) else 0.0
    return signals


def gaze_off_screen(gaze_yaw: float, gaze_pitch: float, config: LandmarksConfig) -> bool:
    """Eyes off the screen: sideways, or down (a desk, a lap, a phone). Looking up is
    left alone: people look up to think, and nothing to read sits above a webcam."""
    return abs(gaze_yaw) > config.gaze_horizontal_limit or -gaze_pitch > config.gaze_down_limit


# Calibration ------------------------------------------------------------------------


class Calibration:
    """A session's neutral pose: the median of the first ``calibration_seconds`` of a
    face looking roughly at the camera (head and gaze within ``calibration_max_angle``,
    eyes open). A camera set off to one side then reads as straight ahead. Until it is
    learned the uncalibrated defaults stand (deviation = raw angle)."""

    MIN_SAMPLES = 3  # a window's worth at any sane analysis rate; guards a stray frame

    def __init__(self, config: LandmarksConfig) -> None:
        self._config = config
        self._samples: list[FaceMeasure] = []
        self._started: float | None = None
        self.neutral: FaceMeasure | None = None if config.calibration_seconds > 0 else (
            UNCALIBRATED)

    @property
    def done(self) -> bool:
        return self.neutral is not None

    def current(self) -> FaceMeasure:
        return self.neutral or UNCALIBRATED

    def add(self, media_time: float, raw: FaceMeasure) -> None:
        if self.neutral is not None or not self.accepts(raw):
            return
        if self._started is None:
            self._started = media_time
        self._samples.append(raw)
        elapsed = media_time - self._started
        if elapsed >= self._config.calibration_seconds and len(self._samples) >= self.MIN_SAMPLES:
            self.neutral = FaceMeasure(**{
                f.name: statistics.median(getattr(s, f.name) for s in self._samples)
                for f in fields(FaceMeasure)})
            self._samples.clear()

    def accepts(self, raw: FaceMeasure) -> bool:
        """Head and eyes toward the camera, eyes open: a blink, lids lowered to a desk
        or a glance at notes during the window must not become the neutral pose."""
        signals = face_signals(raw, UNCALIBRATED, self._config)
        limit = self._config.calibration_max_angle
        lids_low = raw.openness < self._config.eye_closed_ratio * UNCALIBRATED.openness
        return (not lids_low and abs(raw.yaw) <= limit
                and abs(raw.pitch) <= limit
                and abs(signals.get("gaze_yaw", math.inf)) <= limit
                and abs(signals.get("gaze_pitch", math.inf)) <= limit)


# The detector -----------------------------------------------------------------------


class LandmarksDetector(Detector):
    name = "landmarks"

    def __init__(self, config: LandmarksConfig) -> None:
        import mediapipe as mp  # deferred: importing mediapipe costs ~1 s
        from mediapipe.python.solution_base import SolutionBase

        self._solution = mp.solutions.face_mesh
        self._graph_type = SolutionBase
        self.config = config
        self.source = f"face-mesh@mediapipe-{mediapipe_version()}"

        self._local = threading.local()
        self._graphs: list[Any] = []
        self._graphs_lock = threading.Lock()

    def fit(self, image: npt.NDArray[np.uint8], face: dict[str, Any] | None,
            ) -> FloatArray | None:
        """The mesh of ``face`` (a faces-stage entry: box and keypoints in pixels) in
        frame pixels; without one, of the face the static-image mesh finds itself.
        None where the landmark model sees no face."""
        if face is None or len(face.get("keypoints", ())) < 2:
            return mesh_points(self.mesh().process(image), image.shape)
        if min(face["box"][2:]) < ROI_MIN_FACE_PX:
            return self._fit_small(image, face)
        height, width = image.shape[:2]
        result = self._roi_graph().process(
            {"image": image, "detection": _detection(face, width, height)})
        landmarks = result.face_landmarks
        return None if landmarks is None else _pixels(landmarks.landmark, image.shape)

    def _fit_small(self, image: npt.NDArray[np.uint8], face: dict[str, Any],
                   ) -> FloatArray | None:
        """A small face: the static-image mesh on a crop around it, whose own detector
        then sees the face larger than the faces stage did on the whole frame."""
        (left, top), crop = face_crop(image, face["box"])
        points = mesh_points(self.mesh().process(crop), crop.shape)
        if points is not None:
            points += (left, top, 0.0)  # back to the frame's pixels
        return points

    def _roi_graph(self) -> Any:
        """This thread's :data:`ROI_GRAPH` (the landmark model from a given detection)."""
        return self._thread_graph("roi_graph", lambda: self._graph_type(
            graph_config=ROI_GRAPH, side_inputs={"with_attention": True},
            outputs=["face_landmarks"]))

    def mesh(self) -> Any:
        """This thread's static-image face mesh (its own face detector, then the
        landmarks; no state between frames, so every session's frames may share it)."""
        return self._thread_graph("mesh", lambda: self._solution.FaceMesh(
            static_image_mode=True, max_num_faces=1, refine_landmarks=True))

    def _thread_graph(self, kind: str, build: Callable[[], Any]) -> Any:
        """A MediaPipe graph must not run on two threads at once: one per worker."""
        graph = getattr(self._local, kind, None)
        if graph is None:
            graph = build()
            setattr(self._local, kind, graph)
            with self._graphs_lock:
                self._graphs.append(graph)
        return graph

    def stream(self, context: StreamContext) -> DetectorStream:
        return LandmarksStream(self)

    def close(self) -> None:
        with self._graphs_lock:
            graphs, self._graphs = self._graphs, []
        for graph in graphs:
            graph.close()


class LandmarksStream(DetectorStream):
    def __init__(self, detector: LandmarksDetector) -> None:
        self._detector = detector
        self.calibration = Calibration(detector.config)

    def process(self, sample: VideoSample) -> Observation:
        started = time.perf_counter()
        observation = Observation(session_id=sample.session_id, media_time=sample.media_time,
                                  detector=self._detector.name)
        faces = sample.seen_by("faces")
        if faces is not None and faces.signals.get("face_count") == 0:
            # Cascade: the face detector found no face, so the mesh has none to fit (it
            # would run its own detector to find that out, at twice the cost).
            observation.details = {"skipped": "no face"}
            return observation
        points = self._detector.fit(sample.image, largest_face(faces))
        if points is not None:
            raw = measure(points)
            self.calibration.add(sample.media_time, raw)
            observation.signals = face_signals(raw, self.calibration.current(),
                                               self._detector.config,
                                               calibrated=self.calibration.done)
            # No mouth_open where the mouth cannot be seen: lip movement is then unknown
            # (None), never "still" (proctor/pipeline/lips.py).
            face_score = faces.confidences.get("face_count", 1.0) if faces else 1.0
            if mouth_measurable(points, sample.image, face_score):
                observation.signals["mouth_open"] = round(mouth_opening(points), 4)
            observation.details = _details(raw, self.calibration)
        observation.processing_ms = (time.perf_counter() - started) * 1000
        return observation



# The faces stage runs BlazeFace on the whole frame scaled to 128 px: a small face is a
# few model pixels there, and its keypoints can place the mesh's region too roughly.
# Measured with bench/fairness.py's people (faces 56-100 px wide, boxes 72-135 px): the
# region lost the mesh on 8 of 169 faces the faces stage found, all with boxes of
# 85-102 px; a crop CROP_SCALE times the box, where the mesh's own detector sees the
# face larger, lost none. So a box under this side is fitted from such a crop; webcam
# faces (120-250 px wide, boxes from ~130 px) take the region.
ROI_MIN_FACE_PX = 112.0
CROP_SCALE = 2.0  # the crop's side over the box's larger side: room for the mesh's detector


def face_crop(image: npt.NDArray[np.uint8], box: list[float],
              ) -> tuple[tuple[int, int], npt.NDArray[np.uint8]]:
    """The square part of ``image`` around a face box ``[x, y, w, h]`` (clipped to the
    frame) and where it starts (left, top); the whole image if that is too small."""
    x, y, w, h = box
    side = max(w, h) * CROP_SCALE
    height, width = image.shape[:2]
    left = int(max(0.0, x + w / 2 - side / 2))
    top = int(max(0.0, y + h / 2 - side / 2))
    right = int(min(width, x + w / 2 + side / 2))
    bottom = int(min(height, y + h / 2 + side / 2))
    if right - left < 16 or bottom - top < 16:
        return (0, 0), image
    return (left, top), np.ascontiguousarray(image[top:bottom, left:right])


def largest_face(faces: Observation | None) -> dict[str, Any] | None:
    """The faces stage's largest face (the candidate, nearest the camera), if any."""
    boxes = faces.details.get("faces", []) if faces is not None else []
    return max(boxes, key=lambda f: f["box"][2] * f["box"][3]) if boxes else None


def _detection(face: dict[str, Any], width: int, height: int) -> Any:
    """A faces-stage entry as the MediaPipe Detection it was read from (relative
    coordinates): the region-of-interest step reads the box and the two eyes."""
    from mediapipe.framework.formats import detection_pb2, location_data_pb2

    detection = detection_pb2.Detection()
    location = detection.location_data
    location.format = location_data_pb2.LocationData.RELATIVE_BOUNDING_BOX
    x, y, w, h = face["box"]
    box = location.relative_bounding_box
    box.xmin, box.ymin, box.width, box.height = x / width, y / height, w / width, h / height
    for kx, ky in face["keypoints"]:
        point = location.relative_keypoints.add()
        point.x, point.y = kx / width, ky / height
    detection.score.append(float(face.get("score", 1.0)))
    return detection


def mesh_points(result: Any, shape: tuple[int, ...]) -> FloatArray | None:
    """The first face's landmarks in pixels (x right, y down, z away from the camera;
    MediaPipe scales z like x), or None without a face."""
    faces = getattr(result, "multi_face_landmarks", None)
    if not faces:
        return None
    return _pixels(faces[0].landmark, shape)


def _pixels(landmarks: Any, shape: tuple[int, ...]) -> FloatArray | None:
    if len(landmarks) < MESH_POINTS:
        return None  # no iris landmarks: a graph built without refine_landmarks
    height, width = shape[:2]
    points = np.array([(p.x, p.y, p.z) for p in landmarks], dtype=np.float64)
    return points * np.array([width, height, width], dtype=np.float64)


def _details(raw: FaceMeasure, calibration: Calibration) -> dict[str, Any]:
    neutral = calibration.neutral
    return {
        "raw": {f.name: round(getattr(raw, f.name), 3) for f in fields(FaceMeasure)},
        "calibrated": calibration.done,
        "neutral": None if neutral is None else {
            f.name: round(getattr(neutral, f.name), 3) for f in fields(FaceMeasure)},
    }
