"""Every video flag kind fires on its labelled clip, and a clean clip raises nothing.

The quick subset of tests/scenarios.py (real photos in webcam framing, written to H.264
and run through ``analyze_video`` with the real detectors and the default config);
``python -m bench.accuracy`` runs the whole library and prints precision and recall.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from proctor.config import Config, load_config
from proctor.detectors.base import Detector
from proctor.detectors.registry import build_detectors
from tests import scenarios as lib
from tests.scenarios import Outcome, Scenario, overlaps, run_scenario, unexpected

# Kinds a recorded video can raise; each needs a quick positive clip.
REQUIRED = {lib.FACE_ABSENT, lib.MULTIPLE_FACES, lib.HEAD_TURNED, lib.CAMERA_BLOCKED,
            lib.VIDEO_LOST, lib.IDENTITY_MISMATCH, lib.PHONE_DETECTED}
# The analysis samples at 5 fps; 10 fps clips halve the encoding and change nothing.
FPS = 10
# A flag's start is backdated to its run's onset: one sample (0.2 s) early at most,
# plus the debounce gap, on a scene cut.
EARLY = 0.5

QUICK = [s.shortened() for s in lib.library(check_phones=False)[0] if s.quick]
POSITIVE = [s for s in QUICK if not s.clean]
CLEAN = [s for s in QUICK if s.clean]


@pytest.fixture(scope="module")
def config() -> Config:
    return load_config(env={})


@pytest.fixture(scope="module")
def detectors(config: Config) -> Iterator[list[Detector]]:
    detectors = build_detectors(config.detectors)
    yield detectors
    for detector in detectors:
        detector.close()


async def _run(scenario: Scenario, config: Config, detectors: list[Detector],
               folder: Path) -> Outcome:
    if lib.PHONE_DETECTED in scenario.kinds():
        if not any(d.name == "objects" for d in detectors):
            pytest.skip("the objects detector is off")
        if (why := lib.phones_available()) is not None:
            pytest.skip(f"phone photos unavailable: {why}")
    return await run_scenario(scenario, config, detectors, folder, fps=FPS)


def test_every_video_kind_has_a_quick_positive_and_a_clean_clip() -> None:
    assert {kind for s in POSITIVE for kind in s.kinds()} >= REQUIRED
    assert CLEAN


@pytest.mark.parametrize("scenario", POSITIVE, ids=lambda s: s.name)
async def test_kind_fires_within_its_truth_interval(scenario: Scenario, config: Config,
                                                    detectors: list[Detector],
                                                    tmp_path: Path) -> None:
    outcome = await _run(scenario, config, detectors, tmp_path)
    for interval in scenario.truth():
        hits = [f for f in outcome.flags if overlaps(f, interval, outcome.media_seconds)]
        assert hits, f"no {interval.kind} flag over {interval}: {outcome.flags}"
        start = min(f["start"] for f in hits)
        assert interval.start - EARLY <= start <= interval.end, (interval, hits)
    # Nothing else fired: no other kind, and no second flag outside the truth.
    assert not unexpected(outcome), unexpected(outcome)


@pytest.mark.parametrize("scenario", CLEAN, ids=lambda s: s.name)
async def test_clean_clip_raises_no_flag(scenario: Scenario, config: Config,
                                         detectors: list[Detector], tmp_path: Path) -> None:
    outcome = await _run(scenario, config, detectors, tmp_path)
    assert outcome.media_seconds >= 15
    assert outcome.flags == []
