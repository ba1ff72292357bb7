"""Phones, people, books, laptops and screens with a COCO CenterNet (``phone_detected``).

The model is the MobileNetV3 CenterNet that npm ``@vladmandic/human@3.3.6`` ships as a
TF.js graph, converted once to ONNX by ``models/convert_centernet.py``. It outputs a
class heat map at a quarter of the input resolution plus box sides per cell; we decode
only the five classes we use.

Small and mid-sized phones are this model's weak spot: held 100–260 px long in a 640×480
frame, a phone often scores 0.2–0.4 on the whole frame, under any threshold that keeps
faces, hands and clutter unflagged. The model scores the same phone higher once it is
about 200–256 px in the model's input with some context around it. So each stream runs
a cascade (on one core on a fast day, a tile pass costs ~26 ms, the whole frame ~34, a
verification crop ~45 more; about twice that on a slow one: bench/phone_calibration.py
prints them):

* the cycle, one pass per analysed frame: the whole frame at 512 px wide, then four
  overlapping tiles of the frame enlarged ``tile_zoom`` times;
* verification, a second pass in the same frame on every ``verify_every``-th analysed
  frame, and only while the cycle left a phone peak of at least ``verify_floor`` (weak
  evidence): a crop around that peak, enlarged so the peak's box becomes about
  200–256 px, plainly or mirrored (the variants rotate, and the top three peaks take
  turns). A scene with no phone-like peak pays nothing for it; faces and hands leave
  weak peaks now and then, so clean clips still see a few verifications.

Every fresh result of a pass or crop is a look. A frame's ``phone_confidence`` is the
best phone's ``confirm_looks``-th best look at its place (the same phone seen whichever
passes found it), so evidence gathered over several frames and crops adds up while the
phone stays in view, and one look's chance peak on a phone-like patch (a dark badge
after heavy compression) does not stand alone; counts come from the
whole-frame pass only, because a person cut by a tile or crop edge would be counted
twice. Scores per phone size and the thresholds: ``python -m bench.phone_calibration``.

Signals: ``phone_confidence`` (0 when no phone), ``person_count`` (backs
``multiple_faces`` with ``face_count``: a second person whose face is not visible),
``book_count``, ``laptop_count``, ``screen_count`` (evidence, no flag of their own).
Details: boxes ``[x, y, w, h]`` in frame pixels with scores, and which pass ran.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from proctor.config import ObjectsConfig
from proctor.detectors.base import (
    Detector,
    DetectorStream,
    Observation,
    RgbImage,
    StreamContext,
    VideoSample,
)
from proctor.models import model_file
from proctor.onnx_sessions import cpu_session

MODEL_NAME = "centernet_coco"
MODEL_SOURCE = "centernet-mobilenetv3@vladmandic-human-3.3.6"
# Channels of the model's heat map. The file keeps only these five of COCO's 80 classes
# (models/convert_centernet.py KEPT_CLASSES: COCO 0, 62, 63, 67, 73), so the runtime
# does not compute maps nobody decodes.
CLASSES: dict[str, int] = {
    "person": 0,
    "screen": 1,  # COCO "tv": monitors and TVs
    "laptop": 2,
    "phone": 3,  # COCO "cell phone"
    "book": 4,
}
HEAT_CHANNELS = len(CLASSES)
STRIDE = 4  # heat-map cell in input pixels
REFERENCE_WIDTH = 640  # the webcam width the pass sizes are chosen for
FULL_WIDTH = 512  # the whole-frame pass: 640×480 becomes 512×384 (~20 ms on one core)
TILE_SHARE = 0.55  # each tile covers this share of the enlarged frame's width and height
PEAK_FLOOR = 0.1  # heat-map peaks below this are not decoded at all
NMS_IOU = 0.5
SAME_PLACE_IOU = 0.3  # two passes' phone boxes this much overlapping are one place
# Passes scale by the frame's width, so a tall strip would be enlarged without bound (a
# 16×4096 frame became 512×131072: 60 s and 8.6 GB). The pipeline refuses such shapes
# first (proctor.media.limits); the stage still skips them and caps its input itself.
MAX_ASPECT = 4.0  # long side over short side
MAX_INPUT_SIDE = 2048  # model input pixels on a side, whatever the window's scale
# Verification crops: (crop side over the peak box's long side, the box's long side in
# model pixels, mirrored). Measured on composites (bench/phone_calibration.py): a box at
# 200–256 px with 1–1.5 box lengths of context either side scores highest; mirroring
# gives the model a second, independent look at the same pixels.
VERIFY_VARIANTS: tuple[tuple[float, int, bool], ...] = (
    (2.0, 256, False), (2.5, 200, True), (2.0, 256, True), (2.5, 200, False))
VERIFY_MAX_INPUT = 512  # a crop's input side: at most ~1.3× the whole-frame pass's pixels
VERIFY_TOP = 3  # this many of the strongest weak peaks take turns
VERIFY_MIN_BOX = 40.0  # frame pixels: a smaller peak box is verified as if this long

FloatArray = npt.NDArray[np.float32]


def model_path() -> Path:
    """The CenterNet ONNX file named by the model manifest."""
    return model_file(MODEL_NAME)


@dataclass(frozen=True)
class Box:
    label: str
    score: float
    x0: float
    y0: float
    x1: float
    y1: float

    def as_dict(self) -> dict[str, Any]:
        return {"box": [round(self.x0, 1), round(self.y0, 1), round(self.x1 - self.x0, 1),
                        round(self.y1 - self.y0, 1)], "score": round(self.score, 4)}


@dataclass(frozen=True)
class Window:
    """One pass: the frame region ``(x, y, w, h)`` fed to the model at ``scale``."""

    name: str
    region: tuple[float, float, float, float]
    scale: float
    mirrored: bool = False  # fed to the model flipped left to right (boxes flipped back)


def passes(width: int, height: int, tile_zoom: float) -> list[Window]:
    """The whole frame first, then (when ``tile_zoom`` > 1) four overlapping tiles.

    Scales are relative to a 640-px-wide frame, so a larger camera costs the same.
    """
    base = REFERENCE_WIDTH / width
    whole = Window("frame", (0.0, 0.0, float(width), float(height)),
                   base * FULL_WIDTH / REFERENCE_WIDTH)
    if tile_zoom <= 1.0:
        return [whole]
    tile_w, tile_h = width * TILE_SHARE, height * TILE_SHARE
    tiles = [
        Window(f"tile {row * 2 + col}", (col * (width - tile_w), row * (height - tile_h),
                                         tile_w, tile_h), base * tile_zoom)
        for row in (0, 1) for col in (0, 1)
    ]
    return [whole, *tiles]


def verify_window(box: Box, variant: int, width: int, height: int) -> Window:
    """A crop around a weak phone peak, enlarged so its box reaches the model large."""
    context, target, mirrored = VERIFY_VARIANTS[variant % len(VERIFY_VARIANTS)]
    long_side = max(box.x1 - box.x0, box.y1 - box.y0, VERIFY_MIN_BOX)
    side = min(context * long_side, float(width), float(height))
    cx, cy = (box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2
    x = min(max(cx - side / 2, 0.0), width - side)
    y = min(max(cy - side / 2, 0.0), height - side)
    scale = min(target / long_side, VERIFY_MAX_INPUT / side)
    name = f"verify {context:g}x{target}" + (" mirrored" if mirrored else "")
    return Window(name, (x, y, side, side), scale, mirrored)


def fits(width: int, height: int) -> bool:
    """Whether the stage looks at a frame of this shape at all (see MAX_ASPECT)."""
    return min(width, height) >= 1 and max(width, height) <= MAX_ASPECT * min(width, height)


class ObjectDetector(Detector):
    name = "objects"
    source = MODEL_SOURCE
    heavy = True

    def __init__(self, config: ObjectsConfig, path: Path | None = None) -> None:
        path = path or model_path()
        self._session = cpu_session(path, config.threads)
        self._input = self._session.get_inputs()[0].name
        channels = self._session.get_outputs()[0].shape[-1]
        if channels != HEAT_CHANNELS:  # e.g. a file converted before the head was cut
            raise ValueError(f"{path}: the heat map has {channels} channels, "
                             f"not the {HEAT_CHANNELS} models/convert_centernet.py keeps")
        self.config = config

    def stream(self, context: StreamContext) -> ObjectStream:
        return ObjectStream(self)

    def detect(self, image: RgbImage, window: Window) -> list[Box]:
        """Every decoded box of our classes in one window, in frame pixels."""
        batch, scale = _model_input(image, window)
        heat, sides = self._session.run(None, {self._input: batch})
        boxes = _decode(heat[0], sides[0], scale, (0.0, 0.0))
        x, y, w, _ = window.region
        if window.mirrored:
            boxes = [Box(b.label, b.score, w - b.x1, b.y0, w - b.x0, b.y1) for b in boxes]
        return [Box(b.label, b.score, b.x0 + x, b.y0 + y, b.x1 + x, b.y1 + y) for b in boxes]


def _model_input(image: RgbImage, window: Window) -> tuple[FloatArray, float]:
    """The window resized by its scale, zero-padded to multiples of 32 (the net's stride)."""
    x, y, w, h = window.region
    scale = min(window.scale, MAX_INPUT_SIDE / max(w, h))
    out_w, out_h = max(32, round(w * scale)), max(32, round(h * scale))
    resized = Image.fromarray(image).resize((out_w, out_h), Image.Resampling.BILINEAR,
                                            box=(x, y, x + w, y + h))
    pixels = np.asarray(resized)
    batch = np.zeros((1, -(-out_h // 32) * 32, -(-out_w // 32) * 32, 3), np.float32)
    batch[0, :out_h, :out_w] = pixels[:, ::-1] if window.mirrored else pixels
    return batch, out_w / w


def _decode(heat: FloatArray, sides: FloatArray, scale: float,
            origin: tuple[float, float]) -> list[Box]:
    """Local maxima (3×3) of each class's heat map, with their boxes, non-max suppressed."""
    boxes: list[Box] = []
    for label, channel in CLASSES.items():
        layer = heat[..., channel]
        rows, cols = np.nonzero((layer >= PEAK_FLOOR) & (layer >= _max_pool3(layer)))
        found = []
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            left, top, right, bottom = sides[r, c].tolist()
            cx, cy = c * STRIDE, r * STRIDE
            found.append(Box(label, float(layer[r, c]),
                             origin[0] + (cx - left) / scale, origin[1] + (cy - top) / scale,
                             origin[0] + (cx + right) / scale, origin[1] + (cy + bottom) / scale))
        boxes.extend(_nms(found))
    return boxes


def _max_pool3(layer: FloatArray) -> FloatArray:
    padded = np.pad(layer, 1, constant_values=-1.0)
    h, w = layer.shape
    pooled: FloatArray = padded[:h, :w].copy()
    for dy in range(3):
        for dx in range(3):
            np.maximum(pooled, padded[dy : dy + h, dx : dx + w], out=pooled)
    return pooled


def _nms(boxes: list[Box]) -> list[Box]:
    kept: list[Box] = []
    for box in sorted(boxes, key=lambda b: -b.score):
        if all(_iou(box, other) < NMS_IOU for other in kept):
            kept.append(box)
    return kept


def _iou(a: Box, b: Box) -> float:
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    union = (a.x1 - a.x0) * (a.y1 - a.y0) + (b.x1 - b.x0) * (b.y1 - b.y0) - inter
    return inter / union if union > 0 else 0.0


@dataclass
class _PassResult:
    media_time: float
    boxes: list[Box] = field(default_factory=list)


class ObjectStream(DetectorStream):
    """One session: runs one pass per processed frame, at most ``fps`` times a second."""

    def __init__(self, detector: ObjectDetector) -> None:
        self._detector = detector
        self._config = detector.config
        self._interval = 1.0 / self._config.fps
        self._passes_run = 0
        self._verifies = 0
        self._last_run: float | None = None
        self._results: dict[str, _PassResult] = {}  # the cycle's passes, by name
        self._verified: list[_PassResult] = []  # verification crops, newest last

    def set_rate(self, fps: float) -> None:
        self._interval = 1.0 / min(fps, self._config.fps) if fps > 0 else self._interval

    def process(self, sample: VideoSample) -> Observation | None:
        height, width = sample.image.shape[:2]
        if not fits(width, height) or self._skips(sample.media_time):
            return None
        started = time.perf_counter()
        windows = passes(width, height, self._config.tile_zoom)
        # A result older than one cycle (plus slack) belongs to a scene that has moved on.
        cycle = len(windows) * self._interval
        window = self._next_window(windows)
        self._results[window.name] = _PassResult(
            sample.media_time, self._detector.detect(sample.image, window))
        check = self._verification(sample.media_time, cycle, width, height)
        if check is not None:
            self._verified = [r for r in self._verified
                              if sample.media_time - r.media_time <= cycle * 1.5]
            self._verified.append(_PassResult(
                sample.media_time, self._detector.detect(sample.image, check)))
        observation = self._observe(sample, window, cycle)
        if check is not None:
            observation.details["verify"] = check.name
        observation.processing_ms = (time.perf_counter() - started) * 1000
        return observation

    def _next_window(self, windows: list[Window]) -> Window:
        window = windows[self._passes_run % len(windows)]
        self._passes_run += 1
        return window

    def _verification(self, now: float, cycle: float, width: int,
                      height: int) -> Window | None:
        """A second pass in this frame, on every ``verify_every``-th analysed frame, and
        only while the cycle left a weak phone peak: a crop around that peak."""
        every = self._config.verify_every
        if every < 2 or self._passes_run % every != 0:
            return None
        peaks = self._weak_peaks(now, cycle)
        if not peaks:
            return None
        turn = self._verifies
        self._verifies += 1
        return verify_window(peaks[turn % len(peaks)], turn // len(peaks), width, height)

    def _weak_peaks(self, now: float, cycle: float) -> list[Box]:
        """The strongest fresh phone peaks of the cycle's passes worth a closer look."""
        boxes = [b for r in self._results.values() if now - r.media_time <= cycle * 1.5
                 for b in r.boxes
                 if b.label == "phone" and b.score >= self._config.verify_floor]
        return _nms(boxes)[:VERIFY_TOP]

    def _skips(self, media_time: float) -> bool:
        """Below the analysis rate: skip frames until an interval has passed (a quarter
        interval early is fine: frame times jitter around the analysis grid)."""
        last = self._last_run
        if last is not None and last <= media_time < last + 0.75 * self._interval:
            return True
        self._last_run = media_time
        return False

    def _observe(self, sample: VideoSample, window: Window, cycle: float) -> Observation:
        fresh = [r for r in [*self._results.values(), *self._verified]
                 if sample.media_time - r.media_time <= cycle * 1.5]
        phones = _nms(_confirmed(fresh, self._config.confirm_looks))
        whole = self._results.get("frame")
        counted = whole.boxes if window.name == "frame" and whole is not None else None
        # Counts come only from this frame's whole-frame pass: an older count would keep
        # a second person "present" after they left. Between those passes the counts
        # are unknown, not zero, and stay out (multiple_faces' gap_seconds bridges them).
        signals, details = _counts(counted, self._config) if counted is not None else ({}, {})
        phone = max((b.score for b in phones), default=0.0)
        signals["phone_confidence"] = round(phone, 4)
        details["phones"] = [b.as_dict() for b in phones if b.score >= self._config.box_floor]
        details["pass"] = window.name
        persons = [b.score for b in counted or []
                   if b.label == "person" and b.score >= self._config.person_threshold]
        return Observation(
            session_id=sample.session_id, media_time=sample.media_time,
            detector=self._detector.name, signals=signals,
            confidences=_confidences(phone, persons if counted is not None else None),
            details=details,
        )


def _confirmed(results: list[_PassResult], looks: int) -> list[Box]:
    """Every phone box of ``results``, scored by the ``looks``-th best look at its place.

    A look is one pass's best phone box overlapping it (``SAME_PLACE_IOU``), the box's own
    pass included. A phone in view scores alike in most looks; a phone-like patch (a dark
    badge after heavy compression) scores high in a single one now and then and low in
    the rest, so asking for two looks to agree keeps such one-off peaks from holding.
    """
    phones = [[b for b in r.boxes if b.label == "phone"] for r in results]
    confirmed = []
    for own in phones:
        for box in own:
            scores = sorted((max((o.score for o in other if _iou(box, o) >= SAME_PLACE_IOU),
                                 default=0.0) for other in phones), reverse=True)
            score = min(box.score, scores[looks - 1]) if len(scores) >= looks else 0.0
            confirmed.append(replace(box, score=score))
    return confirmed


def _confidences(phone: float, persons: list[float] | None) -> dict[str, float]:
    confidences = {"phone_confidence": round(phone, 4)}
    if persons is not None:
        # The weakest person counted decides whether there really are that many.
        confidences["person_count"] = round(min(persons), 4) if persons else 1.0
    return confidences


def _counts(boxes: list[Box], config: ObjectsConfig) -> tuple[dict[str, float],
                                                              dict[str, Any]]:
    """Counts and boxes of people and evidence objects from the whole-frame pass."""
    thresholds = {"person": config.person_threshold, "book": config.evidence_threshold,
                  "laptop": config.evidence_threshold, "screen": config.evidence_threshold}
    signals: dict[str, float] = {}
    details: dict[str, Any] = {}
    for label, threshold in thresholds.items():
        kept = [b for b in boxes if b.label == label and b.score >= threshold]
        signals[f"{label}_count"] = float(len(kept))
        details[f"{label}s"] = [b.as_dict() for b in kept]
        details[f"{label}_score"] = round(max((b.score for b in boxes if b.label == label),
                                              default=0.0), 4)
    return signals, details
