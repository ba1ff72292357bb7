"""Capacity: the formula, the start-up measurement, the config keys, and the degradation
policy (order, hysteresis, floors) with injected time."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import av
import pytest

from proctor.capacity import (
    ConfiguredRates,
    CpuMeter,
    DegradationLevel,
    EffectiveRates,
    GovernorThresholds,
    LoadGovernor,
    LoadRegulator,
    LoadSample,
    cgroup_cpu_limit,
    effective_rates,
    measure_video_cost,
    node_load,
    plan_capacity,
    session_capacity,
    usable_cores,
)
from proctor.config import Config, ConfigError, load_config
from proctor.detectors.base import Detector
from proctor.detectors.registry import build_detectors
from proctor.media.clock import MediaClock
from proctor.metrics import Metrics
from proctor.pipeline.session import SessionPipeline
from tests.conftest import make_config

L = DegradationLevel


# The formula --------------------------------------------------------------------------

def test_capacity_is_the_floor_of_usable_share_over_session_cost() -> None:
    assert session_capacity(2, 0.8, 0.18, 0.15) == 4  # 1.6 / 0.33 = 4.85
    assert session_capacity(16, 0.8, 0.18, 0.15) == 38  # 12.8 / 0.33 = 38.8
    assert session_capacity(8, 1.0, 0.5, 0.5) == 8
    assert session_capacity(2, 0.8, 0.2, 0.2) == 4  # 1.6 / 0.4: exactly 4, not 3.999…
    assert session_capacity(3, 0.7, 0.1, 0.0) == 21  # 2.1 / 0.1 lands on 20.999…


def test_a_node_too_small_for_one_session_still_takes_one() -> None:
    assert session_capacity(0.5, 0.5, 0.4, 0.2) == 1


@pytest.mark.parametrize(("cores", "target", "video", "overhead"), [
    (0, 0.8, 0.1, 0.1), (2, 0, 0.1, 0.1), (2, 1.2, 0.1, 0.1), (2, 0.8, -0.1, 0.1),
    (2, 0.8, 0.1, -0.1), (2, 0.8, 0.0, 0.0)])
def test_capacity_refuses_meaningless_inputs(cores: float, target: float, video: float,
                                             overhead: float) -> None:
    with pytest.raises(ValueError):
        session_capacity(cores, target, video, overhead)


def test_cgroup_quota_lines() -> None:
    assert cgroup_cpu_limit("200000 100000\n") == 2.0
    assert cgroup_cpu_limit("150000 100000") == 1.5
    assert cgroup_cpu_limit("max 100000") is None
    assert cgroup_cpu_limit("") is None
    assert cgroup_cpu_limit("lots 100000") is None
    assert cgroup_cpu_limit("0 100000") is None


def test_usable_cores_are_the_affinity_lowered_to_a_quota(tmp_path: Path) -> None:
    affinity = len(os.sched_getaffinity(0))
    assert usable_cores(tmp_path) == affinity  # no cpu.max: no quota
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert usable_cores(tmp_path) == affinity
    (tmp_path / "cpu.max").write_text("50000 100000\n")
    assert usable_cores(tmp_path) == 0.5
    (tmp_path / "cpu.max").write_text(f"{(affinity + 4) * 100000} 100000\n")
    assert usable_cores(tmp_path) == affinity  # a quota above the CPUs it may run on


def test_node_load_is_the_busier_of_slots_and_cpu() -> None:
    assert node_load(1, 4, 0.1) == 0.25
    assert node_load(1, 4, 0.9) == 0.9
    assert node_load(4, 4, 0.2) == 1.0
    assert node_load(0, 4, 1.3) == 1.3


class _Clocks:
    def __init__(self) -> None:
        self.wall = 100.0
        self.cpu = 5.0

    def advance(self, seconds: float, cpu_seconds: float) -> None:
        self.wall += seconds
        self.cpu += cpu_seconds


def test_cpu_meter_reads_the_share_over_the_last_window() -> None:
    clocks = _Clocks()
    meter = CpuMeter(2.0, window=10.0, wall_clock=lambda: clocks.wall,
                     cpu_clock=lambda: clocks.cpu)
    assert meter.share() == 0.0  # no time has passed yet
    clocks.advance(2.0, 2.0)  # one of two cores busy
    assert meter.share() == pytest.approx(0.5)
    for _ in range(10):
        clocks.advance(2.0, 4.0)  # both cores busy from here on
        meter.share()
    # The window has moved past the half-busy start: the share is the recent one.
    assert meter.share() == pytest.approx(1.0)
    clocks.advance(0.1, 0.2)
    assert meter.share() == pytest.approx(1.0)  # a quick re-read keeps the window


# The measurement ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def detectors() -> Iterator[list[Detector]]:
    loaded = build_detectors(load_config(env={}).detectors)
    yield loaded
    for detector in loaded:
        detector.close()


@pytest.fixture(scope="module")
def pool() -> Iterator[ThreadPoolExecutor]:
    executor = ThreadPoolExecutor(2)
    yield executor
    executor.shutdown(wait=True)


async def test_video_cost_is_measured_on_the_loaded_detectors(
        detectors: list[Detector], pool: ThreadPoolExecutor) -> None:
    config = load_config(env={})
    cost = await measure_video_cost(config, detectors, pool)
    assert cost.cpu_seconds > 0 and cost.cores > 0
    assert 1 <= cost.frames <= 10  # 2 media seconds at 5 fps at most
    assert cost.media_seconds == pytest.approx(cost.frames / config.pipeline.analysis_fps)
    assert cost.cores == pytest.approx(cost.cpu_seconds / cost.media_seconds)


async def test_video_cost_stops_at_its_wall_budget(detectors: list[Detector],
                                                   pool: ThreadPoolExecutor) -> None:
    ticks = iter(range(1000))  # every read of the wall clock is one second later
    cost = await measure_video_cost(load_config(env={}), detectors, pool,
                                    budget_seconds=3.0, wall_clock=lambda: float(next(ticks)))
    assert cost.frames == 3  # reads at 1, 2, 3 s after the start: the third is at budget


async def test_plan_capacity_measures_for_auto(detectors: list[Detector],
                                               pool: ThreadPoolExecutor,
                                               caplog: pytest.LogCaptureFixture) -> None:
    config = load_config(env={})
    assert config.rtc.max_sessions is None  # the shipped default is auto
    with caplog.at_level(logging.INFO, logger="proctor.capacity"):
        plan = await plan_capacity(config, detectors, pool)
    assert plan.source == "measured" and plan.video_cost is not None
    assert plan.cores == usable_cores()
    assert plan.max_sessions == session_capacity(
        usable_cores(), config.rtc.target_utilisation, plan.video_cost.cores,
        config.rtc.session_overhead_cores)
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert f"capacity: {plan.max_sessions} live sessions (rtc.max_sessions: auto)" in logged
    assert "usable cores" in logged and "overhead" in logged
    described = plan.describe()
    assert described["source"] == "measured" and described["video_cores_per_session"] > 0


async def test_plan_capacity_takes_a_configured_number_as_is(
        tmp_path: Path, detectors: list[Detector], pool: ThreadPoolExecutor) -> None:
    config = make_config(tmp_path, rtc={"max_sessions": 3})
    plan = await plan_capacity(config, detectors, pool)
    assert (plan.max_sessions, plan.source, plan.video_cost) == (3, "config", None)


# The config keys ----------------------------------------------------------------------

def _rtc(**values: object) -> Config:
    return load_config(env={}, overrides={"rtc": values})


def test_max_sessions_auto_or_a_number() -> None:
    assert load_config(env={}).rtc.max_sessions is None
    assert _rtc(max_sessions="auto").rtc.max_sessions is None
    assert _rtc(max_sessions="Auto ").rtc.max_sessions is None
    assert _rtc(max_sessions=1).rtc.max_sessions == 1
    assert _rtc(max_sessions=40).rtc.max_sessions == 40
    assert load_config(env={"PROCTOR_RTC__MAX_SESSIONS": "12"}).rtc.max_sessions == 12
    assert load_config(env={"PROCTOR_RTC__MAX_SESSIONS": "auto"}).rtc.max_sessions is None


@pytest.mark.parametrize("bad", [0, -3, 2.5, "lots", "", None, True, [4]])
def test_bad_max_sessions_names_the_key(bad: object) -> None:
    with pytest.raises(ConfigError) as caught:
        _rtc(max_sessions=bad)
    assert caught.value.key == "rtc.max_sessions"


def test_bad_max_sessions_from_the_environment_names_the_key() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(env={"PROCTOR_RTC__MAX_SESSIONS": "0"})
    assert caught.value.key == "rtc.max_sessions"


@pytest.mark.parametrize(("key", "bad"), [
    ("target_utilisation", 0), ("target_utilisation", 1.5), ("target_utilisation", "most"),
    ("session_overhead_cores", -0.1)])
def test_bad_capacity_inputs_name_the_key(key: str, bad: object) -> None:
    with pytest.raises(ConfigError) as caught:
        _rtc(**{key: bad})
    assert caught.value.key == f"rtc.{key}"


# The degradation policy ---------------------------------------------------------------

RATES = ConfiguredRates(transcription=True, objects_fps=2.5, analysis_fps=5.0)
HOT = LoadSample(lag_p95=0.9, dropped_share=0.0)
DROPPING = LoadSample(lag_p95=0.1, dropped_share=0.3)
COOL = LoadSample(lag_p95=0.1, dropped_share=0.0)
LUKEWARM = LoadSample(lag_p95=0.35, dropped_share=0.0)  # inside the hysteresis band
T = GovernorThresholds(hold_seconds=10.0, calm_seconds=60.0, max_gap_seconds=15.0)


def _feed(governor: LoadGovernor, start: float, until: float, sample: LoadSample,
          every: float = 1.0) -> list[DegradationLevel]:
    levels, now = [], start
    while now <= until + 1e-9:
        levels.append(governor.observe(now, sample))
        now += every
    return levels


def test_effective_rates_per_level() -> None:
    assert effective_rates(L.NONE, RATES) == EffectiveRates(True, 2.5, 5.0)
    assert effective_rates(L.DEFER_TRANSCRIPTION, RATES) == EffectiveRates(False, 2.5, 5.0)
    assert effective_rates(L.REDUCE_OBJECTS, RATES) == EffectiveRates(False, 1.25, 5.0)
    # Analysis to 60 % but not under 3 fps; objects stay halved.
    assert effective_rates(L.REDUCE_ANALYSIS, RATES) == EffectiveRates(False, 1.25, 3.0)


def test_analysis_floor_and_caps() -> None:
    fast = ConfiguredRates(transcription=True, objects_fps=5.0, analysis_fps=10.0)
    assert effective_rates(L.REDUCE_ANALYSIS, fast) == EffectiveRates(False, 2.5, 6.0)
    # Configured under the floor: degrading never raises a rate.
    slow = ConfiguredRates(transcription=True, objects_fps=2.5, analysis_fps=2.0)
    assert effective_rates(L.REDUCE_ANALYSIS, slow).analysis_fps == 2.0
    # No more object passes than analysed frames.
    busy = ConfiguredRates(transcription=True, objects_fps=8.0, analysis_fps=5.0)
    assert effective_rates(L.NONE, busy).objects_fps == 5.0
    assert effective_rates(L.REDUCE_ANALYSIS, busy).objects_fps == 3.0
    # Transcription switched off stays off at every level.
    off = ConfiguredRates(transcription=False, objects_fps=2.5, analysis_fps=5.0)
    assert not any(effective_rates(level, off).transcription_live for level in L)


def test_presence_detection_never_stops() -> None:
    for configured in (RATES, ConfiguredRates(True, 2.5, 3.0), ConfiguredRates(True, 1, 30)):
        for level in L:
            assert effective_rates(level, configured).analysis_fps >= min(
                3.0, configured.analysis_fps) > 0


def test_governor_rates_follow_config() -> None:
    config = load_config(env={})
    governor = LoadGovernor(ConfiguredRates.from_config(config))
    assert governor.effective() == EffectiveRates(
        config.detectors.transcription.enabled, config.detectors.objects.fps,
        config.pipeline.analysis_fps)
    assert governor.effective(L.REDUCE_ANALYSIS).analysis_fps == 3.0


def test_overload_steps_up_in_spec_order_one_hold_period_at_a_time() -> None:
    governor = LoadGovernor(RATES, T)
    assert governor.observe(0.0, HOT) == L.NONE  # the run starts
    assert governor.observe(9.9, HOT) == L.NONE  # just under the hold period
    assert governor.observe(10.0, HOT) == L.DEFER_TRANSCRIPTION  # at it
    assert governor.effective() == EffectiveRates(False, 2.5, 5.0)
    assert governor.observe(19.9, HOT) == L.DEFER_TRANSCRIPTION  # a new period per step
    assert governor.observe(20.0, HOT) == L.REDUCE_OBJECTS
    assert governor.observe(30.0, DROPPING) == L.REDUCE_ANALYSIS  # dropped slots count too
    assert governor.effective() == EffectiveRates(False, 1.25, 3.0)
    assert set(_feed(governor, 31.0, 200.0, HOT)) == {L.REDUCE_ANALYSIS}  # the last level


def test_every_level_is_visited_in_order() -> None:
    governor = LoadGovernor(RATES, T)
    seen = _feed(governor, 0.0, 40.0, HOT)
    changes = [level for i, level in enumerate(seen) if i == 0 or seen[i - 1] != level]
    assert changes == [L.NONE, L.DEFER_TRANSCRIPTION, L.REDUCE_OBJECTS, L.REDUCE_ANALYSIS]
    assert seen.index(L.DEFER_TRANSCRIPTION) == 10 and seen.index(L.REDUCE_ANALYSIS) == 30


def test_a_short_spike_changes_nothing() -> None:
    governor = LoadGovernor(RATES, T)
    _feed(governor, 0.0, 9.0, HOT)
    assert governor.observe(9.5, COOL) == L.NONE  # the run ended before the hold period
    assert set(_feed(governor, 10.0, 19.0, HOT)) == {L.NONE}  # and starts afresh


def test_the_hysteresis_band_continues_neither_run() -> None:
    governor = LoadGovernor(RATES, T)
    _feed(governor, 0.0, 9.0, HOT)
    governor.observe(9.5, LUKEWARM)
    assert set(_feed(governor, 10.0, 19.0, HOT)) == {L.NONE}
    assert governor.observe(20.0, HOT) == L.DEFER_TRANSCRIPTION
    # At a raised level, the band neither recovers nor degrades further.
    assert set(_feed(governor, 21.0, 400.0, LUKEWARM)) == {L.DEFER_TRANSCRIPTION}


def test_calm_steps_down_one_level_per_calm_period() -> None:
    governor = LoadGovernor(RATES, T, level=L.REDUCE_ANALYSIS)
    seen = _feed(governor, 0.0, 400.0, COOL)  # seen[i]: the level after the sample at i s
    assert seen[59] == L.REDUCE_ANALYSIS and seen[60] == L.REDUCE_OBJECTS
    assert seen[119] == L.REDUCE_OBJECTS and seen[120] == L.DEFER_TRANSCRIPTION
    assert seen[179] == L.DEFER_TRANSCRIPTION and seen[180] == L.NONE
    assert set(seen[180:]) == {L.NONE}
    # The analysis rate comes back first, transcription last.
    assert governor.effective(L.REDUCE_OBJECTS) == EffectiveRates(False, 1.25, 5.0)
    assert governor.effective(L.DEFER_TRANSCRIPTION) == EffectiveRates(False, 2.5, 5.0)


def test_recovery_is_slower_than_degradation() -> None:
    governor = LoadGovernor(RATES, T)
    _feed(governor, 0.0, 10.0, HOT)
    assert governor.level == L.DEFER_TRANSCRIPTION
    assert set(_feed(governor, 11.0, 70.0, COOL)) == {L.DEFER_TRANSCRIPTION}
    assert governor.observe(71.0, COOL) == L.NONE  # 60 s after the first calm sample (11 s)
    # Overload in the middle of a calm run restarts it.
    governor = LoadGovernor(RATES, T, level=L.REDUCE_OBJECTS)
    _feed(governor, 0.0, 50.0, COOL)
    governor.observe(51.0, HOT)
    assert set(_feed(governor, 52.0, 111.0, COOL)) == {L.REDUCE_OBJECTS}
    assert governor.observe(112.0, COOL) == L.DEFER_TRANSCRIPTION


def test_a_silence_between_samples_starts_the_runs_afresh() -> None:
    governor = LoadGovernor(RATES, T)
    governor.observe(0.0, HOT)
    assert governor.observe(16.0, HOT) == L.NONE  # 16 s without a sample: no 10 s run known
    assert governor.observe(26.0, HOT) == L.DEFER_TRANSCRIPTION
    assert governor.observe(20.0, HOT) == L.DEFER_TRANSCRIPTION  # time went back: afresh
    assert governor.observe(29.0, HOT) == L.DEFER_TRANSCRIPTION
    assert governor.observe(30.0, HOT) == L.REDUCE_OBJECTS


def test_thresholds_must_leave_a_band() -> None:
    with pytest.raises(ValueError):
        GovernorThresholds(overload_lag=0.2, calm_lag=0.3)
    with pytest.raises(ValueError):
        GovernorThresholds(hold_seconds=0)


# The regulator on a live pipeline ----------------------------------------------------

class _Sink:
    """Where the pipeline's flags and status go: nowhere, this test reads its rates."""

    async def flag_event(self, event: object) -> None:
        return None

    async def status(self, status: dict[str, object]) -> None:
        return None


async def _analysed_late(pipeline: SessionPipeline, lateness: float) -> None:
    """Offer frames that arrived ``lateness`` s ago until one more has been analysed."""
    done = pipeline.frames_analysed
    frame = av.VideoFrame(64, 48, "yuv420p")
    while pipeline.frames_analysed == done:
        pipeline.offer_video(frame, pipeline.frames_received * 0.2,
                             time.monotonic() - lateness)
        await asyncio.sleep(0.05)


async def test_the_regulator_degrades_a_live_pipeline_in_order_and_back(
        tmp_path: Path) -> None:
    config = make_config(tmp_path)
    executor = ThreadPoolExecutor(1)
    pipeline = SessionPipeline(
        session_id="s", candidate_id="c", config=config, detectors=[], executor=executor,
        rules=(), sink=_Sink(), metrics=Metrics(), clock=MediaClock())
    regulator = LoadRegulator(config)
    regulator.join(pipeline)
    pipeline.start()
    try:
        assert pipeline.analysis_fps == config.pipeline.analysis_fps
        levels = []
        for now in (0.0, 11.0, 22.0, 33.0, 44.0):  # overloaded: frames analysed 1 s late
            await _analysed_late(pipeline, 1.0)
            levels.append(regulator.step(now, [pipeline]))
        assert levels == [L.NONE, L.DEFER_TRANSCRIPTION, L.REDUCE_OBJECTS, L.REDUCE_ANALYSIS,
                          L.REDUCE_ANALYSIS]
        assert pipeline.analysis_fps == 3.0  # 5 fps x 0.6, the floor
        for now in range(50, 120, 10):  # calm for a minute: one step back
            await _analysed_late(pipeline, 0.0)
            level = regulator.step(float(now), [pipeline])
        assert level == L.REDUCE_OBJECTS
        assert pipeline.analysis_fps == config.pipeline.analysis_fps
    finally:
        await pipeline.aclose()
        executor.shutdown()
