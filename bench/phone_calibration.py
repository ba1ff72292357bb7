"""Calibrate ``phone_detected``: phones held in view vs. clean clips, per phone size.

    python -m bench.phone_calibration [--phones 48] [--seconds 7] [--workers 2] [--seed 0]

Positives: distinct phone press photos of npm ``@devicefarmer/stf-device-db@1.4.0``
(cut out of their white background) held in real 640×480 face frames (scikit-image's
astronaut, matplotlib's Grace Hopper, Obama/Biden from the face_recognition 1.3.0 source
archive when pip can fetch it) for ``--seconds``: every phone at 100, 130, 160, 200 and
260 px (its long side), in one of four holds (beside the face, lower in front, tilted
25–40°, gripped by a hand-coloured shape hiding its lower part), moving a little from
frame to frame, through a VP8 round trip or webcam JPEG. Even-numbered phones calibrate,
odd-numbered ones are held out and measured: no phone is in both.

Clean clips (10 s each): the same people without a phone, plain or with a hand raised
beside or under the face, and real non-phone photo crops (text pages, a cat, coffee,
coins, a gift box…) held where phones go. One set calibrates, a second one (other
jitter, hands, crops and noise) is measured.

Each clip runs through a real ``ObjectStream`` at the configured analysis rate and the
real flag tracker with config.yaml's phone_detected row. Printed: recall (share of held
phones flagged) per size at the configured thresholds, before (the pass cycle alone:
whole frame + tiles) and after (with verification crops as a second pass); the same for
rules that gather weaker evidence over several passes; false flags per clean minute
(after); the thresholds this run's calibration half suggests and their
held-out recall; CPU per analysed frame, by pass kind.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np

from proctor.config import load_config
from proctor.detectors.base import StreamContext, VideoSample
from proctor.detectors.objects import ObjectDetector
from proctor.flags.model import Severity
from proctor.flags.rules import Rule, rules_from_config
from proctor.flags.tracker import FlagChange, FlagTracker
from tests.detectors import phones as media

SIZES = (100, 130, 160, 200, 260)
CLEAN_SECONDS = 10.0
GRID = [round(0.20 + 0.01 * i, 2) for i in range(51)]  # candidate thresholds 0.20 … 0.70
MARGIN = 0.05  # how far above the worst clean sustained score a threshold stays (real rooms
# hold clutter this set lacks)
HIGH_STEP = 0.06  # high sits at least this far above moderate (it weighs more)


@dataclass(frozen=True)
class Clip:
    kind: str  # "phone", "plain", "hand" or "clutter"
    scene: str
    size: int
    seconds: float
    frames: Callable[[int, np.random.Generator], list[np.ndarray]]  # n degraded frames


@dataclass(frozen=True)
class Run:
    clip: Clip
    values: list[float]  # phone_confidence per analysed frame
    severity: Severity | None  # highest flag the tracker opened, if any
    flags: int
    cpu_ms: dict[str, list[float]]  # this thread's CPU per pass, by pass kind


def _degrade(images: list[np.ndarray], rng: np.random.Generator, vp8: bool) -> list[np.ndarray]:
    if vp8:
        return media.vp8([np.ascontiguousarray(i) for i in images],
                         int(rng.integers(30_000, 60_000)))
    return [media.webcam(i, rng, quality=int(rng.integers(60, 86))) for i in images]


def _phone_clip(cutout: np.ndarray, frame: media.FaceFrame, scene: str, size: int,
                vp8: bool, seconds: float, rng: np.random.Generator) -> Clip:
    place = media.held_placement(scene, size, frame.face, rng)

    def frames(n: int, r: np.random.Generator) -> list[np.ndarray]:
        images = []
        for _ in range(n):  # a held phone moves a little: hand tremor, breathing
            moved = replace(place, center=(place.center[0] + r.normal(0, 2.5),
                                           place.center[1] + r.normal(0, 2.5)),
                            angle=place.angle + r.normal(0, 1.5))
            image = media.paste(frame.image, cutout, moved)
            images.append(media.grip(image, moved, r) if scene == "gripped" else image)
        return _degrade(images, r, vp8)

    return Clip("phone", scene, size, seconds, frames)


def phone_clips(cutouts: Sequence[np.ndarray], frames: Sequence[media.FaceFrame],
                seconds: float, rng: np.random.Generator) -> list[Clip]:
    """Every phone at every size; holds, people and codecs rotate."""
    clips = []
    for i, cutout in enumerate(cutouts):
        for j, size in enumerate(SIZES):
            scene = media.HELD_SCENES[(i + j) % len(media.HELD_SCENES)]
            frame = frames[(i * len(SIZES) + j) % len(frames)]
            clips.append(_phone_clip(cutout, frame, scene, size, (i + j) % 2 == 0,
                                     seconds, rng))
    return clips


def clean_clips(frames: Sequence[media.FaceFrame], rng: np.random.Generator,
                patches: Sequence[np.ndarray]) -> list[Clip]:
    clips = []
    for k, frame in enumerate(frames):
        for kind in ("plain", "hand"):
            image = frame.image if kind == "plain" else media.hand_near_face(frame, rng)
            clips.append(_still_clip(kind, "none", 0, image, (k % 2 == 0), rng))
    for k, patch in enumerate(patches):
        frame = frames[int(rng.integers(len(frames)))]
        scene = media.HELD_SCENES[k % 3]  # a gripped page is still a page: no hand needed
        size = int(rng.integers(SIZES[0], SIZES[-1] + 1))
        image = media.paste(frame.image, patch, media.held_placement(scene, size, frame.face,
                                                                     rng))
        clips.append(_still_clip("clutter", scene, size, image, k % 2 == 1, rng))
    return clips


def _still_clip(kind: str, scene: str, size: int, image: np.ndarray, vp8: bool,
                rng: np.random.Generator) -> Clip:
    zoom, shift = rng.uniform(1.0, 1.05), rng.uniform(-0.02, 0.02, 2)

    def frames(n: int, r: np.random.Generator) -> list[np.ndarray]:
        return _degrade([_jitter(image, zoom, shift, r) for _ in range(n)], r, vp8)

    return Clip(kind, scene, size, CLEAN_SECONDS, frames)


def _jitter(image: np.ndarray, zoom: float, shift: np.ndarray,
            rng: np.random.Generator) -> np.ndarray:
    """The room a moment later: the camera framing drifts a pixel or two, light flickers."""
    from PIL import Image

    h, w = image.shape[:2]
    cw, ch = w / zoom, h / zoom
    x = (w - cw) / 2 + shift[0] * w + rng.normal(0, 1.5)
    y = (h - ch) / 2 + shift[1] * h + rng.normal(0, 1.5)
    x, y = min(max(x, 0.0), w - cw), min(max(y, 0.0), h - ch)
    moved = Image.fromarray(image).resize((w, h), Image.Resampling.BILINEAR,
                                          box=(x, y, x + cw, y + ch))
    lit = np.asarray(moved, np.float32) * rng.uniform(0.95, 1.05)
    out: np.ndarray = np.clip(lit, 0, 255).astype(np.uint8)
    return out


def run_clip(detector: ObjectDetector, rule: Rule, gap: float, clip: Clip, seed: int) -> Run:
    """The clip at the analysis rate through the stream and the real tracker."""
    rng = np.random.default_rng(seed)
    stream = detector.stream(StreamContext("bench", "bench"))
    tracker = FlagTracker("bench", "bench", (rule,), gap_seconds=gap)
    interval = 1.0 / detector.config.fps
    n = int(clip.seconds / interval + 1e-6) + 1
    values: list[float] = []
    cpu: dict[str, list[float]] = {}
    severity: Severity | None = None
    flags = 0
    events = []
    for step, image in enumerate(clip.frames(n, rng)):
        started = time.thread_time()
        observation = stream.process(VideoSample("bench", step * interval, image))
        assert observation is not None
        kind = str(observation.details["pass"]).split(" ")[0]
        kind += " + verify" if "verify" in observation.details else ""
        cpu.setdefault(kind, []).append((time.thread_time() - started) * 1000)
        values.append(observation.signals["phone_confidence"])
        events += tracker.update(step * interval, observation.signals)
    events += tracker.close_all(n * interval)
    for event in events:
        flags += event.change == FlagChange.OPENED
        if severity is None or event.flag.severity.rank > severity.rank:
            severity = event.flag.severity
    return Run(clip, values, severity, flags, cpu)


def run_all(detector: ObjectDetector, rule: Rule, gap: float, clips: list[Clip],
            workers: int, label: str) -> list[Run]:
    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        runs = list(pool.map(lambda item: run_clip(detector, rule, gap, item[1], item[0]),
                             enumerate(clips)))
    print(f"{label}: {len(clips)} clips in {time.perf_counter() - started:.0f} s",
          file=sys.stderr)
    return runs


def sustained(values: Sequence[float], interval: float, seconds: float) -> float:
    """The highest threshold a ``>=`` level of ``seconds`` would hold at: the best, over
    runs of consecutive samples spanning ``seconds``, of the run's lowest value (samples
    are further apart than the tracker's gap, so every one in the run must hold)."""
    span = int(np.ceil(seconds / interval - 1e-6)) + 1
    if len(values) < span:
        return 0.0
    return max(min(values[i:i + span]) for i in range(len(values) - span + 1))


def phone_rule(thresholds: tuple[float, float] | None = None) -> tuple[Rule, float]:
    config = load_config(env={})
    rule = next(r for r in rules_from_config(config.flags.rules)
                if r.kind == "phone_detected")
    if thresholds is not None:
        levels = tuple(replace(level, threshold=t)
                       for level, t in zip(rule.levels, thresholds, strict=True))
        rule = replace(rule, levels=levels)
    return rule, config.flags.gap_seconds


def _rate(flags: Sequence[bool]) -> str:
    return f"{sum(flags) / len(flags):5.2f}" if flags else "    -"


def _flagged(run: Run, at_least: Severity) -> bool:
    return run.severity is not None and run.severity.rank >= at_least.rank


def report_recall(before: list[Run], after: list[Run]) -> None:
    print("\nrecall: share of held phones flagged (held-out phones), config thresholds")
    print(f"{'size':>6} {'hold':>8} {'n':>4} | before: {'mod':>5} {'high':>5} | "
          f"after: {'mod':>5} {'high':>5}")
    for size in (*SIZES, 0):
        for scene in (*media.HELD_SCENES, "all"):
            if size == 0 and scene != "all":
                continue
            pick = [(b, a) for b, a in zip(before, after, strict=True)
                    if size in (0, b.clip.size) and scene in ("all", b.clip.scene)]
            row = [_rate([_flagged(r[k], s) for r in pick])
                   for k in (0, 1) for s in (Severity.MODERATE, Severity.HIGH)]
            name = f"{size}px" if size else "all"
            if scene == "all" or size == 0:
                print(f"{name:>6} {scene:>8} {len(pick):>4} |         {row[0]} {row[1]} | "
                      f"       {row[2]} {row[3]}")


def report_clean(runs: list[Run], label: str) -> None:
    minutes = sum(r.clip.seconds for r in runs) / 60
    flags = sum(r.flags for r in runs)
    worst = max((max(r.values) for r in runs), default=0.0)
    print(f"  {label:<7} {len(runs):>3} clips, {minutes:5.1f} min: {flags} false flags, "
          f"{flags / minutes:.2f} per clean minute (highest phone_confidence {worst:.2f})")


def suggest(calibration: list[Run], clean: list[Run], held_out: list[Run],
            interval: float, seconds: tuple[float, float]) -> tuple[float, float]:
    """Moderate: the lowest grid value ``MARGIN`` above every clean clip's sustained
    score; high: the same for two seconds, and at least ``HIGH_STEP`` above moderate."""
    worst = [max((sustained(r.values, interval, s) for r in clean), default=0.0)
             for s in seconds]
    moderate = next((t for t in GRID if t >= worst[0] + MARGIN - 1e-9), GRID[-1])
    high = next((t for t in GRID if t >= max(worst[1] + MARGIN, moderate + HIGH_STEP) - 1e-9),
                GRID[-1])
    print(f"\ncalibration: {len(calibration)} phone clips, {len(clean)} clean clips; "
          f"worst clean sustained score {worst[0]:.2f} over {seconds[0]:g} s, "
          f"{worst[1]:.2f} over {seconds[1]:g} s")
    print("threshold  calib recall (1 s)  held-out recall (1 s)  held-out (2 s)")
    for t in GRID[::5]:
        rows = [[sustained(r.values, interval, s) >= t for r in runs]
                for runs, s in ((calibration, seconds[0]), (held_out, seconds[0]),
                                (held_out, seconds[1]))]
        print(f"{t:9.2f} {_rate(rows[0]):>19} {_rate(rows[1]):>22} {_rate(rows[2]):>15}")
    print(f"suggested: moderate {moderate:.2f}, high {high:.2f}")
    return moderate, high


# Rules on weaker evidence gathered over time (the "temporal accumulation"):
# (name, passes in the window, how many of its highest values are averaged).
ACCUMULATIONS = (("mean of 4 passes", 4, 4), ("mean of 5 passes", 5, 5),
                 ("top 2 of 3", 3, 2), ("top 2 of 4", 4, 2), ("top 3 of 5", 5, 3),
                 ("best single pass", 1, 1))


def accumulated(values: Sequence[float], window: int, top: int) -> float:
    """The best, over windows of ``window`` consecutive passes, of the mean of the
    window's ``top`` highest values."""
    if len(values) < window:
        return 0.0
    return max(float(np.mean(sorted(values[i:i + window])[-top:]))
               for i in range(len(values) - window + 1))


def report_accumulation(held_out: list[Run], clean: list[Run], interval: float,
                        seconds: float) -> None:
    """Held-out recall of each rule at the lowest threshold no clean clip reaches, with
    the shipped rule's level (held for ``seconds``) for comparison."""
    print("\naccumulating weaker evidence: held-out recall at a threshold just over every "
          "clean clip's value (moderate level)")
    print(f"{'rule':36s} {'clean max':>9} {'threshold':>9} {'recall':>6}  per size")
    rules: list[tuple[str, Callable[[Sequence[float]], float]]] = [
        (f"shipped: held {seconds:g} s", lambda v: sustained(v, interval, seconds)),
        *((name, lambda v, w=window, k=top: accumulated(v, w, k))
          for name, window, top in ACCUMULATIONS)]
    for name, score in rules:
        worst = max((score(r.values) for r in clean), default=0.0)
        threshold = worst + 0.005
        hits = [score(r.values) >= threshold for r in held_out]
        by_size = {size: [h for h, r in zip(hits, held_out, strict=True)
                          if r.clip.size == size] for size in SIZES}
        sizes = " ".join(f"{size}:{_rate(h).strip()}" for size, h in by_size.items())
        print(f"{name:36s} {worst:9.3f} {threshold:9.3f} {_rate(hits):>6}  {sizes}")


def report_costs(label: str, runs: list[Run]) -> None:
    kinds: dict[str, list[float]] = {}
    for run in runs:
        for kind, values in run.cpu_ms.items():
            kinds.setdefault(kind, []).extend(values)
    every = [v for vs in kinds.values() for v in vs]
    share = {k: len(v) / max(1, len(every)) for k, v in kinds.items()}
    parts = ", ".join(f"{k} {statistics.median(v):.0f} ms ({share[k]:.0%})"
                      for k, v in sorted(kinds.items()))
    print(f"  {label:<28} mean {statistics.fmean(every):5.1f}  p95 "
          f"{float(np.percentile(every, 95)):5.1f}  | {parts}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phones", type=int, default=48,
                        help="phone models, half calibrating, half held out (0: all 334)")
    parser.add_argument("--seconds", type=float, default=7.0, help="how long each is held")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    try:
        cutouts = media.phone_cutouts(limit=args.phones or None)
        frames = _frames()
    except media.MediaUnavailable as exc:
        print(f"skipped: test media unavailable ({exc})")
        return
    config = load_config(env={}).detectors.objects
    after = ObjectDetector(config)
    before = ObjectDetector(replace(config, verify_every=0))
    rule, gap = phone_rule()
    interval = 1.0 / config.fps
    patches = media.clutter_patches()
    calibrating = phone_clips(cutouts[0::2], frames, args.seconds, rng)
    held_out = phone_clips(cutouts[1::2], frames, args.seconds, rng)
    clean_calibrating = clean_clips(frames, rng, patches[0::2])
    clean_measured = clean_clips(frames, rng, patches[1::2])
    print(f"{len(cutouts)} phones, {len(frames)} face frames; thresholds in config: "
          f"moderate {rule.levels[0].threshold:.2f}, high {rule.levels[1].threshold:.2f}",
          file=sys.stderr)
    seconds = (rule.levels[0].seconds, rule.levels[1].seconds)
    runs = {name: run_all(detector, rule, gap, clips, args.workers, name)
            for name, detector, clips in (
                ("calibrating", after, calibrating + clean_calibrating),
                ("held-out after", after, held_out + clean_measured),
                ("held-out before", before, held_out))}
    cut = len(calibrating)
    suggest(runs["calibrating"][:cut], runs["calibrating"][cut:],
            runs["held-out after"][:len(held_out)], interval, seconds)
    print(f"\nconfig: moderate {rule.levels[0].threshold:.2f} for {seconds[0]:g} s, "
          f"high {rule.levels[1].threshold:.2f} for {seconds[1]:g} s; "
          f"analysis {config.fps:g} passes/s; phones held {args.seconds:g} s")
    report_recall(runs["held-out before"][:len(held_out)],
                  runs["held-out after"][:len(held_out)])
    report_accumulation(runs["held-out after"][:len(held_out)],
                        runs["held-out after"][len(held_out):] + runs["calibrating"][cut:],
                        interval, seconds[0])
    print("\nfalse flags on clean clips (measured set: people, hands, held clutter)")
    report_clean(runs["held-out after"][len(held_out):], "after")
    report_clean(runs["calibrating"][cut:], "calib.")
    print("\nCPU per analysed frame (ms, this thread), by pass kind: median (share of frames)")
    for label, name, pick in (("before, phones held", "held-out before", slice(0, len(held_out))),
                              ("after, phones held", "held-out after", slice(0, len(held_out))),
                              ("after, clean clips", "held-out after",
                               slice(len(held_out), None))):
        report_costs(label, runs[name][pick])
    print(f"  at {config.fps:g} analysed frames/s per session")


def _frames() -> list[media.FaceFrame]:
    zooms = (3.0, 4.2, 5.2)
    try:
        return media.face_frames(extra=True, zooms=zooms)
    except media.MediaUnavailable as exc:
        print(f"face_recognition portraits unavailable ({exc}); wheel portraits only",
              file=sys.stderr)
    return media.face_frames(extra=False, zooms=zooms)


if __name__ == "__main__":
    main()
