"""Calibrate ``phone_detected``: CenterNet phone scores on real phones vs. no phone.

    python -m bench.phone_calibration [--quick] [--workers 2] [--seed 0]

Positives: every distinct phone press photo of npm ``@devicefarmer/stf-device-db@1.4.0``
(cut out of its white background) composited into real 640×480 face frames
(scikit-image's astronaut, matplotlib's Grace Hopper, and Obama/Biden from the
face_recognition 1.3.0 source archive when pip can fetch it) in four scenes: held
beside the face, held below the chin, lying on the desk at the bottom, and partly
hidden (lower part behind the scene, or a third out of frame), at four size buckets
(the phone's long side in frame pixels). Negatives: the same frames with no phone
(jittered, brightness changed) and with real non-phone photo crops (text pages, a cat,
coffee, coins, a rocket, a gift box…) pasted where phones go. Every frame is degraded
like a WebRTC webcam frame (softness, sensor noise, JPEG).

Each scene is scored the way a session sees a still scene for one second: an
``ObjectStream`` runs its full cycle (whole frame, then four enlarged tiles) on five
noisy copies and reports its ``phone_confidence``. The whole-frame pass alone is shown
for comparison. The table gives recall per size bucket and scene at the thresholds in
``config.yaml``'s phone_detected row, the false-positive rate on negatives, score
percentiles, and the thresholds this run's numbers suggest.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from proctor.config import load_config
from proctor.detectors.base import StreamContext, VideoSample
from proctor.detectors.objects import ObjectDetector
from tests.detectors import phones as media

BUCKETS = ((60, 89), (90, 129), (130, 179), (180, 250))
GRID = [round(0.20 + 0.05 * i, 2) for i in range(13)]  # candidate thresholds 0.20 … 0.80
MARGIN = 0.05  # how far above the worst no-phone score the moderate threshold stays


@dataclass(frozen=True)
class Case:
    kind: str  # "phone", "plain" or "clutter"
    scene: str
    size: int
    make: Callable[[np.random.Generator], np.ndarray]  # a fresh degraded frame per call


@dataclass(frozen=True)
class Scored:
    case: Case
    cycle: float  # phone_confidence after one full cycle of passes
    whole: float  # the whole-frame pass alone


def bucket_name(size: int) -> str:
    low, high = next(b for b in BUCKETS if b[0] <= size <= b[1])
    return f"{low}-{high}px"


def positive_cases(cutouts: Sequence[np.ndarray], frames: Sequence[media.FaceFrame],
                   rng: np.random.Generator) -> list[Case]:
    """Each phone in each scene once, size buckets rotated so every bucket sees every
    phone across the scenes."""
    cases = []
    for index, cutout in enumerate(cutouts):
        for offset, scene in enumerate(media.SCENES):
            low, high = BUCKETS[(index + offset) % len(BUCKETS)]
            size = int(rng.integers(low, high + 1))
            frame = frames[int(rng.integers(len(frames)))]
            place = media.placement(scene, size, frame.face, rng)
            composite = media.paste(frame.image, cutout, place)
            cases.append(Case("phone", scene, size,
                              lambda r, image=composite: media.webcam(image, r)))
    return cases


def negative_cases(frames: Sequence[media.FaceFrame], jitters: int,
                   clutter_sizes: int, rng: np.random.Generator) -> list[Case]:
    cases = []
    for frame in frames:
        for _ in range(jitters):
            image = _jitter(frame.image, rng)
            cases.append(Case("plain", "none", 0, lambda r, im=image: media.webcam(im, r)))
    for patch in media.clutter_patches():
        for scene in media.SCENES:
            for _ in range(clutter_sizes):
                low, high = BUCKETS[int(rng.integers(len(BUCKETS)))]
                size = int(rng.integers(low, high + 1))
                frame = frames[int(rng.integers(len(frames)))]
                image = media.paste(frame.image, patch,
                                    media.placement(scene, size, frame.face, rng))
                cases.append(Case("clutter", scene, size,
                                  lambda r, im=image: media.webcam(im, r)))
    return cases


def _jitter(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A slightly moved, zoomed and re-lit copy: the same room a moment later."""
    from PIL import Image

    h, w = image.shape[:2]
    zoom = rng.uniform(1.0, 1.08)
    cw, ch = w / zoom, h / zoom
    x, y = rng.uniform(0, w - cw), rng.uniform(0, h - ch)
    moved = Image.fromarray(image).resize((w, h), Image.Resampling.BILINEAR,
                                          box=(x, y, x + cw, y + ch))
    lit = np.asarray(moved, np.float32) * rng.uniform(0.8, 1.15)
    return np.clip(lit, 0, 255).astype(np.uint8)


def score(detector: ObjectDetector, case: Case, seed: int) -> Scored:
    """One second of a still scene: a whole cycle of passes on noisy copies."""
    rng = np.random.default_rng(seed)
    stream = detector.stream(StreamContext("bench", "bench"))
    interval = 1.0 / detector.config.fps
    cycle = whole = 0.0
    for step in range(5):
        observation = stream.process(VideoSample("bench", step * interval, case.make(rng)))
        assert observation is not None
        cycle = observation.signals["phone_confidence"]
        if step == 0:
            whole = cycle
    return Scored(case, cycle, whole)


def score_all(detector: ObjectDetector, cases: list[Case], workers: int) -> list[Scored]:
    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        scored = list(pool.map(lambda item: score(detector, item[1], item[0]),
                               enumerate(cases)))
    print(f"scored {len(cases)} scenes in {time.perf_counter() - started:.0f} s",
          file=sys.stderr)
    return scored


def rule_thresholds() -> tuple[float, float]:
    rule = next(r for r in load_config(env={}).flags.rules if r.kind == "phone_detected")
    assert rule.moderate is not None and rule.high is not None
    return rule.moderate.threshold, rule.high.threshold


def _rate(values: Sequence[float], threshold: float) -> str:
    if not values:
        return "    -"
    return f"{sum(v >= threshold for v in values) / len(values):5.2f}"


def _percentiles(values: Sequence[float]) -> str:
    p = np.percentile(values, [50, 90, 95, 99]) if values else [0.0] * 4
    return " ".join(f"{v:5.2f}" for v in (*p, max(values, default=0.0)))


def report(scored: list[Scored], moderate: float, high: float) -> None:
    positives = [s for s in scored if s.case.kind == "phone"]
    negatives = [s for s in scored if s.case.kind != "phone"]
    print(f"\nrecall (share of phone scenes at or above the threshold); "
          f"config: moderate {moderate:.2f}, high {high:.2f}")
    print(f"{'size':>10} {'scene':>9} {'n':>5} {'mod':>5} {'high':>5} "
          f"{'whole-frame pass only: mod':>27}")
    for low, high_px in BUCKETS:
        in_bucket = [s for s in positives if low <= s.case.size <= high_px]
        for scene in (*media.SCENES, "all"):
            rows = [s for s in in_bucket if scene in ("all", s.case.scene)]
            cycle = [s.cycle for s in rows]
            print(f"{low:>4}-{high_px:<3}px {scene:>9} {len(rows):>5} "
                  f"{_rate(cycle, moderate)} {_rate(cycle, high)} "
                  f"{_rate([s.whole for s in rows], moderate):>27}")
    every = [s.cycle for s in positives]
    print(f"{'all':>10} {'all':>9} {len(every):>5} {_rate(every, moderate)} "
          f"{_rate(every, high)} {_rate([s.whole for s in positives], moderate):>27}")
    print("\nfalse-positive rate (share of no-phone scenes at or above the threshold)")
    for kind in ("plain", "clutter", "all"):
        rows = [s.cycle for s in negatives if kind in ("all", s.case.kind)]
        print(f"{kind:>10} n={len(rows):<5} mod {_rate(rows, moderate)}  high {_rate(rows, high)}")
    print("\nphone_confidence percentiles       p50   p90   p95   p99   max")
    for low, high_px in BUCKETS:
        rows = [s.cycle for s in positives if low <= s.case.size <= high_px]
        print(f"  phone {low:>3}-{high_px:<3}px {'':>10} {_percentiles(rows)}")
    for kind in ("plain", "clutter"):
        rows = [s.cycle for s in negatives if s.case.kind == kind]
        print(f"  no phone, {kind:<8} {'':>9} {_percentiles(rows)}")
    suggest(every, [s.cycle for s in negatives])


def suggest(positives: list[float], negatives: list[float]) -> None:
    """Per candidate threshold: recall, false positives; and the thresholds we'd pick.

    moderate: the lowest grid threshold at least ``MARGIN`` above every no-phone score
    (real rooms hold clutter this set lacks); high: ``MARGIN`` × 2 above moderate (a high
    flag weighs more in the integrity score).
    """
    print("\nthreshold  recall  negatives>=  fp-rate")
    for t in GRID:
        fp = sum(v >= t for v in negatives)
        print(f"{t:9.2f} {_rate(positives, t):>7} {fp:>11} {fp / max(1, len(negatives)):8.3f}")
    worst = max(negatives, default=0.0)
    moderate = next((t for t in GRID if t >= worst + MARGIN - 1e-9), GRID[-1])
    high = round(moderate + 2 * MARGIN, 2)
    print(f"\nhighest no-phone score {worst:.2f}; suggested: moderate {moderate:.2f} "
          f"(recall {_rate(positives, moderate).strip()}), "
          f"high {high:.2f} (recall {_rate(positives, high).strip()})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="24 phones, the two wheel portraits, fewer negatives (~1 min)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    try:
        cutouts = media.phone_cutouts(limit=24 if args.quick else None)
        frames = _frames(extra=not args.quick)
    except media.MediaUnavailable as exc:
        print(f"skipped: test media unavailable ({exc})")
        return
    detector = ObjectDetector(load_config(env={}).detectors.objects)
    cases = positive_cases(cutouts, frames, rng)
    cases += negative_cases(frames, jitters=4 if args.quick else 10,
                            clutter_sizes=1 if args.quick else 2, rng=rng)
    print(f"{len(cutouts)} phones, {len(frames)} face frames, {len(cases)} scenes",
          file=sys.stderr)
    report(score_all(detector, cases, args.workers), *rule_thresholds())
    _costs(detector, frames[0].image)


def _frames(extra: bool) -> list[media.FaceFrame]:
    zooms = (3.0, 4.2, 5.2)
    if extra:
        try:
            return media.face_frames(extra=True, zooms=zooms)
        except media.MediaUnavailable as exc:
            print(f"face_recognition portraits unavailable ({exc}); wheel portraits only",
                  file=sys.stderr)
    return media.face_frames(extra=False, zooms=zooms)


def _costs(detector: ObjectDetector, image: np.ndarray) -> None:
    """Milliseconds per processed frame (one pass), wall clock and this thread's CPU."""
    stream = detector.stream(StreamContext("bench", "bench"))
    rng = np.random.default_rng(1)
    frames = [media.webcam(image, rng) for _ in range(10)]
    wall: dict[str, list[float]] = {}
    cpu: list[float] = []
    for step in range(105):
        sample = VideoSample("bench", step / detector.config.fps, frames[step % 10])
        started = time.thread_time()
        observation = stream.process(sample)
        assert observation is not None
        if step >= 5:  # the first cycle warms the session up
            cpu.append((time.thread_time() - started) * 1000)
            wall.setdefault(observation.details["pass"], []).append(observation.processing_ms)
    print("\nper processed frame (ms)      median   p95")
    for name, values in [*wall.items(), ("all passes", [v for vs in wall.values()
                                                      for v in vs])]:
        print(f"  {name:<26} {statistics.median(values):6.1f} {_p95(values):6.1f}")
    print(f"  {'thread CPU, all passes':<26} {statistics.median(cpu):6.1f} {_p95(cpu):6.1f}")


def _p95(values: list[float]) -> float:
    return float(np.percentile(values, 95))


if __name__ == "__main__":
    main()
