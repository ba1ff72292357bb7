"""Which detectors run: one line per detector, switched by its config section."""

from __future__ import annotations

import logging

from proctor.config import DetectorsConfig
from proctor.detectors.base import Detector
from proctor.detectors.camera import CameraDetector
from proctor.detectors.faces import FaceDetector
from proctor.detectors.identity import load_identity_detector
from proctor.detectors.landmarks import LandmarksDetector
from proctor.detectors.objects import ObjectDetector
from proctor.detectors.speakers import load_speaker_detector
from proctor.detectors.voice import VoiceDetector

log = logging.getLogger("proctor.detectors")


def build_detectors(config: DetectorsConfig) -> list[Detector]:
    """Load every enabled detector's model once for this process."""
    detectors: list[Detector] = []
    if config.faces.enabled:
        detectors.append(FaceDetector(config.faces))
    if config.landmarks.enabled:
        detectors.append(LandmarksDetector(config.landmarks))
    if config.camera.enabled:
        detectors.append(CameraDetector(config.camera))
    # Heavy stages last, the occasional one (identity, every 2 s) before the steady one:
    # the pipeline runs one heavy stage per frame, so objects yield to identity's check.
    if config.identity.enabled and (identity := load_identity_detector(config.identity)):
        detectors.append(identity)
    if config.objects.enabled:
        detectors.append(ObjectDetector(config.objects))
    if config.voice.enabled:
        detectors.append(VoiceDetector(config.voice))
    if config.speakers.enabled and (speakers := load_speaker_detector(config.speakers)):
        detectors.append(speakers)
    for detector in detectors:
        log.info("detector %s ready (%s)", detector.name, detector.source)
    return detectors
