"""Identity: measured cosine similarities and per-verification cost.

Prints the table behind ``detectors.identity.match_threshold`` in config.yaml: every
real photo (and webcam-like versions of it) against each enrollment photo, then the
time one verification takes on a 640×480 frame. Run from the repository root:

    python -m bench.identity_similarity
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import cv2
import numpy as np

from proctor.config import load_config
from proctor.detectors.base import StreamContext, VideoSample
from proctor.detectors.identity import EmbeddingResult, IdentityDetector, cosine
from tests.detectors.photos import astronaut, face_recognition_photo, grace_hopper
from tests.detectors.webcam import RgbImage, jpeg, webcam_frame

Variant = Callable[[RgbImage, EmbeddingResult], RgbImage]

VARIANTS: dict[str, Variant] = {
    "photo": lambda img, r: img,
    "jpeg q25": lambda img, r: jpeg(img, 25),
    "half size": lambda img, r: cv2.resize(img, None, fx=0.5, fy=0.5,
                                           interpolation=cv2.INTER_AREA),
    "cam 160px": lambda img, r: webcam_frame(img, _box(r), face_px=160),
    "cam 160px shifted": lambda img, r: webcam_frame(img, _box(r), face_px=160,
                                                      shift=(120, -40), quality=50),
    "cam 110px q40": lambda img, r: webcam_frame(img, _box(r), face_px=110, quality=40),
    "cam 80px q40": lambda img, r: webcam_frame(img, _box(r), face_px=80, quality=40),
    "cam 200px dim": lambda img, r: _dim(webcam_frame(img, _box(r), face_px=200)),
    "cam 160px blur": lambda img, r: cv2.GaussianBlur(
        webcam_frame(img, _box(r), face_px=160), (0, 0), 1.5),
    "cam 160px blur s4": lambda img, r: cv2.GaussianBlur(
        webcam_frame(img, _box(r), face_px=160), (0, 0), 4),
    "cam 160px motion": lambda img, r: _motion(webcam_frame(img, _box(r), face_px=160), 15),
    "cam 160px tilt 30": lambda img, r: _tilt(webcam_frame(img, _box(r), face_px=160), 30),
    "cam 44px q60": lambda img, r: webcam_frame(img, _box(r), face_px=44, quality=60),
}


def _box(result: EmbeddingResult) -> tuple[float, float, float, float]:
    assert result.box is not None
    return result.box


def _dim(image: RgbImage) -> RgbImage:
    """Half the light and sensor noise: an evening room."""
    noise = np.random.default_rng(0).normal(0, 4, image.shape)
    return np.clip(image * 0.5 + noise, 0, 255).astype(np.uint8)


def _motion(image: RgbImage, length: int) -> RgbImage:
    """A sideways smear of ``length`` pixels: a head moving during the exposure."""
    kernel = np.zeros((length, length), np.float32)
    kernel[length // 2, :] = 1 / length
    return cv2.filter2D(image, -1, kernel)


def _tilt(image: RgbImage, degrees: float) -> RgbImage:
    height, width = image.shape[:2]
    rotation = cv2.getRotationMatrix2D((width / 2, height * 0.45), degrees, 1.0)
    return cv2.warpAffine(image, rotation, (width, height), borderMode=cv2.BORDER_REPLICATE)


def photos() -> dict[str, RgbImage]:
    found = {name.removesuffix(".jpg"): face_recognition_photo(name)
             for name in ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg")}
    found["astronaut"] = astronaut()
    found["grace_hopper"] = grace_hopper()
    return found


def main() -> None:
    detector = IdentityDetector(load_config(env={}).detectors.identity)
    images = photos()
    originals = {name: detector.embed(img) for name, img in images.items()}
    enrollments = ("obama", "obama2", "biden")
    print(f"{'probe':<14}{'variant':<20}{'face_px':>8}{'sharp':>7}  "
          + "".join(f"{'vs ' + e:>11}" for e in enrollments))
    same: list[float] = []
    different: list[float] = []
    for name, image in images.items():
        for variant, make in VARIANTS.items():
            probe = detector.embed(make(image, originals[name]))
            if probe.embedding is None:
                print(f"{name:<14}{variant:<20}  faces={probe.face_count}")
                continue
            row = []
            for enrolled in enrollments:
                if enrolled == name and variant == "photo":
                    row.append(f"{'(self)':>11}")
                    continue
                reference = originals[enrolled].embedding
                assert reference is not None
                value = cosine(probe.embedding, reference)
                (same if _person(name) == _person(enrolled) else different).append(value)
                row.append(f"{value:>11.3f}")
            print(f"{name:<14}{variant:<20}{probe.face_px:>8.0f}{probe.sharpness:>7.0f}  "
                  + "".join(row))
    print(f"\nsame person:      n={len(same)} min={min(same):.3f} "
          f"median={statistics.median(same):.3f} max={max(same):.3f}")
    print(f"different person: n={len(different)} min={min(different):.3f} "
          f"median={statistics.median(different):.3f} max={max(different):.3f}")
    _timing(detector, images, originals)


def _person(name: str) -> str:
    return "obama" if name.startswith("obama") else name


def _timing(detector: IdentityDetector, images: dict[str, RgbImage],
            originals: dict[str, EmbeddingResult]) -> None:
    frame = webcam_frame(images["obama2"], _box(originals["obama2"]), face_px=160)
    enrollment = originals["obama"].embedding
    stream = detector.stream(StreamContext("bench", "c", enrollment))
    timings = []
    for i in range(60):
        started = time.perf_counter()
        observation = detector.verify(VideoSample("bench", i * 2.0, frame), enrollment)
        timings.append((time.perf_counter() - started) * 1000)
    assert observation.signals["identity_mismatch"] == 0.0
    del stream
    print(f"\none verification on 640x480 (YuNet + align + SFace + cosine): median "
          f"{statistics.median(timings[5:]):.1f} ms, p90 "
          f"{np.percentile(timings[5:], 90):.1f} ms, first {timings[0]:.1f} ms "
          f"(cv2 {cv2.__version__}, {cv2.getNumThreads()} threads)")


if __name__ == "__main__":
    main()
