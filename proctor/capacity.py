"""How many live sessions this node takes, and how it degrades when it is briefly short.

SPEC "Capacity and admission": a node knows how many sessions it can analyse at the
full rate (``rtc.max_sessions: auto | N``) and refuses the next offer with a 503 rather
than letting every session degrade. ``auto`` is derived at start-up:

    capacity = floor(usable cores × rtc.target_utilisation
                     / (measured video cost + rtc.session_overhead_cores))

* usable cores: the CPUs this process may run on (``os.sched_getaffinity``), lowered to
  a cgroup v2 CPU quota (``cpu.max``, what ``docker run --cpus`` sets) when there is one;
* measured video cost: CPU seconds per media second of one session's video stages,
  timed on this machine with the app's loaded detectors, through the real
  :class:`SessionPipeline`, on a generated webcam-sized frame (:func:`measure_video_cost`,
  well under 2 s);
* the overhead: what a session costs besides its video stages (transport, audio stages,
  evidence encoding, transcription), from the bench figures (see ``config.yaml``).

Under transient overload, :class:`LoadGovernor` steps through :class:`DegradationLevel`
in the SPEC's order and back; :func:`effective_rates` says what each level runs. Both
are pure logic with injected time: the pipeline feeds and applies them.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any

import av
import numpy as np

from proctor.config import Config
from proctor.detectors.base import Detector
from proctor.flags.tracker import FlagEvent
from proctor.media.clock import MediaClock
from proctor.metrics import Metrics
from proctor.pipeline.session import SessionPipeline

log = logging.getLogger("proctor.capacity")

PROBE_WIDTH, PROBE_HEIGHT = 640, 480  # what the embed client asks the camera for
PROBE_BUDGET_SECONDS = 1.5  # wall-clock bound on the start-up measurement
# Media seconds to simulate: object passes (1.25 a second) and an identity check (every
# 2 s) at their real duty cycle, so the heavy stages count at their average cost.
PROBE_MEDIA_SECONDS = 2.0
PROBE_WARMUP_FRAMES = 2  # first frames build the workers' graphs (face mesh): not steady cost


# Capacity ---------------------------------------------------------------------------

def session_capacity(cores: float, target_utilisation: float,
                     video_cost: float, overhead: float) -> int:
    """Sessions that fit: floor(cores × target / (video_cost + overhead)), at least 1.

    ``video_cost`` and ``overhead`` are in cores (CPU seconds per session-second). A
    node too small for even one session at the full rate still takes one: refusing
    everybody would serve nobody, and the load governor degrades that one session.
    """
    if cores <= 0:
        raise ValueError(f"cores must be positive, got {cores}")
    if not 0 < target_utilisation <= 1:
        raise ValueError(f"target_utilisation must be in (0, 1], got {target_utilisation}")
    if video_cost < 0 or overhead < 0:
        raise ValueError(f"costs must be zero or more, got {video_cost} and {overhead}")
    per_session = video_cost + overhead
    if per_session <= 0:
        raise ValueError("a session must cost something (video_cost + overhead > 0)")
    # The epsilon keeps 1.6 / 0.4 from flooring to 3 when it lands on 3.9999999999.
    return max(1, math.floor(cores * target_utilisation / per_session + 1e-9))


def cgroup_cpu_limit(cpu_max: str) -> float | None:
    """Cores allowed by a cgroup v2 ``cpu.max`` line (``"200000 100000"`` → 2.0);
    None for ``"max ..."`` (no quota) or a line that cannot be read."""
    parts = cpu_max.split()
    if len(parts) != 2 or parts[0] == "max":
        return None
    try:
        quota, period = int(parts[0]), int(parts[1])
    except ValueError:
        return None
    if quota <= 0 or period <= 0:
        return None
    return quota / period


def usable_cores(cgroup_root: Path = Path("/sys/fs/cgroup")) -> float:
    """CPUs this process may use: its affinity set, lowered to a cgroup quota."""
    try:
        cores = float(len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        cores = float(os.cpu_count() or 1)
    try:
        quota = cgroup_cpu_limit((cgroup_root / "cpu.max").read_text())
    except OSError:
        quota = None
    if quota is not None:
        cores = min(cores, quota)
    return max(cores, 0.01)


@dataclass(frozen=True)
class VideoCost:
    """One session's video stages, timed on this machine."""

    cores: float  # CPU seconds per media second (= share of one core)
    frames: int  # frames timed (after the warm-up)
    media_seconds: float
    cpu_seconds: float
    wall_seconds: float


@dataclass(frozen=True)
class CapacityPlan:
    """This node's session limit and where it came from (logged, shown in /readyz)."""

    max_sessions: int
    source: str  # "config" or "measured"
    cores: float | None = None
    target_utilisation: float | None = None
    video_cost: VideoCost | None = None
    overhead_cores: float | None = None

    def describe(self) -> dict[str, Any]:
        """The plan's inputs, for readyz."""
        out: dict[str, Any] = {"source": self.source}
        if self.source == "measured" and self.video_cost is not None:
            out.update(usable_cores=round(self.cores or 0.0, 2),
                       target_utilisation=self.target_utilisation,
                       video_cores_per_session=round(self.video_cost.cores, 4),
                       overhead_cores_per_session=self.overhead_cores)
        return out


class _Discard:
    """The probe's pipeline sink: a generated frame has nothing to tell anybody."""

    async def flag_event(self, event: FlagEvent) -> None:
        return None

    async def status(self, status: dict[str, Any]) -> None:
        return None


def probe_frame(width: int = PROBE_WIDTH, height: int = PROBE_HEIGHT,
                seed: int = 0) -> av.VideoFrame:
    """A webcam-sized yuv420p frame (what a decoded WebRTC track yields) with the light,
    gradients and sensor noise of a room, so every stage does its ordinary work on it.
    There is nobody in it: face-dependent work (mesh refinement, the identity
    embedding) is the overhead's share, see ``rtc.session_overhead_cores``."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = 90 + 60 * np.sin(x / 37.0) * np.cos(y / 53.0) + 40 * (y / height)
    rgb = np.stack([base + 20, base, base - 15], axis=-1)
    rgb += rng.normal(0, 6, size=rgb.shape)
    image = np.clip(rgb, 0, 255).astype(np.uint8)
    return av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")


async def measure_video_cost(config: Config, detectors: list[Detector], executor: Executor,
                             *, budget_seconds: float = PROBE_BUDGET_SECONDS,
                             media_seconds: float = PROBE_MEDIA_SECONDS,
                             cpu_clock: Callable[[], float] = time.process_time,
                             wall_clock: Callable[[], float] = time.perf_counter,
                             ) -> VideoCost:
    """Time one session's video stages on this machine, in ``executor``.

    A real :class:`SessionPipeline` (the app's detectors, no rules, nothing stored)
    analyses a generated frame at media times ``1 / pipeline.analysis_fps`` apart, so
    stages that run below the analysis rate (objects, identity) run at their real duty
    cycle. CPU time is the whole process's (``time.process_time``): native threads a
    model runtime starts count too, and other programs on the machine do not. Stops after
    ``media_seconds`` of media or ``budget_seconds`` of wall time, whichever is first.
    """
    fps = config.pipeline.analysis_fps
    pipeline = SessionPipeline(
        session_id="capacity-probe", candidate_id="capacity-probe", config=config,
        detectors=detectors, executor=executor, rules=(), sink=_Discard(),
        metrics=Metrics(), clock=MediaClock(),
        # An enrollment makes identity check as it does for an enrolled candidate.
        enrollment=_probe_enrollment())
    frame = probe_frame()
    index = 0
    try:
        for _ in range(PROBE_WARMUP_FRAMES):
            await pipeline.analyse_frame(frame, index / fps)
            index += 1
        first = index
        wall_start, cpu_start = wall_clock(), cpu_clock()
        while (index - first) / fps < media_seconds:
            await pipeline.analyse_frame(frame, index / fps)
            index += 1
            if wall_clock() - wall_start >= budget_seconds:
                break
        cpu, wall = cpu_clock() - cpu_start, wall_clock() - wall_start
    finally:
        await pipeline.aclose()
    frames = index - first
    media = frames / fps
    return VideoCost(cores=cpu / media if media > 0 else 0.0, frames=frames,
                     media_seconds=media, cpu_seconds=cpu, wall_seconds=wall)


def _probe_enrollment() -> np.ndarray[Any, np.dtype[np.float32]]:
    from proctor.detectors.identity import EMBEDDING_SIZE

    vector = np.random.default_rng(1).normal(size=EMBEDDING_SIZE).astype(np.float32)
    return vector / np.float32(np.linalg.norm(vector))


async def plan_capacity(config: Config, detectors: list[Detector],
                        executor: Executor) -> CapacityPlan:
    """``rtc.max_sessions`` as configured, or derived from a measurement (``auto``)."""
    rtc = config.rtc
    if rtc.max_sessions is not None:
        log.info("capacity: %d live sessions (rtc.max_sessions)", rtc.max_sessions)
        return CapacityPlan(rtc.max_sessions, "config")
    cores = await asyncio.to_thread(usable_cores)
    try:
        cost = await measure_video_cost(config, detectors, executor)
    except Exception as exc:
        raise RuntimeError("capacity: timing the video stages at start-up failed"
                           f" ({exc!r}); set rtc.max_sessions to a number") from exc
    limit = session_capacity(cores, rtc.target_utilisation, cost.cores,
                             rtc.session_overhead_cores)
    log.info("capacity: %d live sessions (rtc.max_sessions: auto) = floor(%.2f usable cores"
             " × %.2f target / (%.3f video + %.3f overhead) cores per session); video"
             " measured over %d frames, %.1f media s, %.3f CPU s in %.2f s at %.1f fps",
             limit, cores, rtc.target_utilisation, cost.cores, rtc.session_overhead_cores,
             cost.frames, cost.media_seconds, cost.cpu_seconds, cost.wall_seconds,
             config.pipeline.analysis_fps)
    if cores * rtc.target_utilisation < cost.cores + rtc.session_overhead_cores:
        log.warning("capacity: this node is too small for one session at the full rate;"
                    " it takes one anyway and degrades it under load")
    return CapacityPlan(limit, "measured", cores=cores,
                        target_utilisation=rtc.target_utilisation, video_cost=cost,
                        overhead_cores=rtc.session_overhead_cores)


def node_load(slots_taken: int, max_sessions: int, cpu_share: float) -> float:
    """One 0..1+ figure for a load balancer: the busier of the session slots taken and
    the CPU used (1: full either way; above 1 the CPU is oversubscribed)."""
    return max(slots_taken / max(max_sessions, 1), cpu_share)


class CpuMeter:
    """The process's CPU use as a share of its usable cores over the last ``window``
    seconds, read on demand (each /readyz or /metrics call); cheap: two clock reads."""

    def __init__(self, cores: float, window: float = 10.0,
                 wall_clock: Callable[[], float] = time.monotonic,
                 cpu_clock: Callable[[], float] = time.process_time) -> None:
        self._cores = cores
        self._window = window
        self._wall = wall_clock
        self._cpu = cpu_clock
        self._samples: deque[tuple[float, float]] = deque([(wall_clock(), cpu_clock())])
        self._last_share = 0.0

    def share(self) -> float:
        now, used = self._wall(), self._cpu()
        if now - self._samples[-1][0] >= 1.0:  # at most one sample a second is kept
            self._samples.append((now, used))
        # Keep one sample at least ``window`` old (when there is one) as the baseline.
        while len(self._samples) > 1 and now - self._samples[1][0] >= self._window:
            self._samples.popleft()
        then, used_then = self._samples[0]
        if now - then >= 0.5:
            self._last_share = max(0.0, (used - used_then) / ((now - then) * self._cores))
        return self._last_share


# Degradation under transient overload -----------------------------------------------

class DegradationLevel(IntEnum):
    """SPEC order, each level keeping the ones before it. Presence detection (faces)
    runs at every level: the analysis rate has a floor of 3 fps."""

    NONE = 0
    DEFER_TRANSCRIPTION = 1  # speech is queued and transcribed after the session
    REDUCE_OBJECTS = 2  # object passes at half their rate
    REDUCE_ANALYSIS = 3  # analysis rate down (60 %, not under 3 fps)


ANALYSIS_FPS_FLOOR = 3.0
ANALYSIS_REDUCTION = 0.6
OBJECTS_REDUCTION = 0.5


@dataclass(frozen=True)
class ConfiguredRates:
    transcription: bool  # transcription is on at all
    objects_fps: float
    analysis_fps: float

    @classmethod
    def from_config(cls, config: Config) -> ConfiguredRates:
        return cls(transcription=config.detectors.transcription.enabled,
                   objects_fps=config.detectors.objects.fps,
                   analysis_fps=config.pipeline.analysis_fps)


@dataclass(frozen=True)
class EffectiveRates:
    transcription_live: bool  # False: segments wait for the session's end
    objects_fps: float
    analysis_fps: float


def effective_rates(level: DegradationLevel, configured: ConfiguredRates) -> EffectiveRates:
    """What runs at ``level``. Degrading never raises a rate above its configured value
    (a node configured below the 3 fps floor stays where it was configured)."""
    transcription = configured.transcription and level < DegradationLevel.DEFER_TRANSCRIPTION
    analysis = configured.analysis_fps
    if level >= DegradationLevel.REDUCE_ANALYSIS:
        analysis = min(analysis, max(ANALYSIS_FPS_FLOOR, analysis * ANALYSIS_REDUCTION))
    objects = configured.objects_fps
    if level >= DegradationLevel.REDUCE_OBJECTS:
        objects *= OBJECTS_REDUCTION
    # One object pass per analysed frame at most (ObjectStream): a rate above the
    # analysis rate would only pretend.
    return EffectiveRates(transcription, min(objects, analysis), analysis)


@dataclass(frozen=True)
class LoadSample:
    """One periodic measurement over the node's last window."""

    lag_p95: float  # seconds from a frame's arrival to the end of its analysis
    dropped_share: float  # analysis slots missed / slots due, 0..1


@dataclass(frozen=True)
class GovernorThresholds:
    """When the node counts as overloaded or calm. Between the two (the hysteresis band)
    neither run continues. Defaults at 5 fps (a slot every 0.2 s): in `bench/load.py` on
    2 cores, 4 sessions sat at p95 0.16 s with 0.7 % of slots dropped (calm); 8 at 0.75 s
    and 57 % dropped."""

    overload_lag: float = 0.5  # lag p95 above this ...
    overload_dropped: float = 0.10  # ... or more than this share of slots dropped
    calm_lag: float = 0.25  # calm: lag p95 under this ...
    calm_dropped: float = 0.02  # ... and at most this share dropped
    hold_seconds: float = 10.0  # overloaded this long: one level up
    calm_seconds: float = 60.0  # calm this long: one level down
    max_gap_seconds: float = 15.0  # a longer silence between samples starts runs afresh

    def __post_init__(self) -> None:
        if not (0 <= self.calm_lag <= self.overload_lag
                and 0 <= self.calm_dropped <= self.overload_dropped):
            raise ValueError("the calm thresholds must lie at or under the overload ones")
        if min(self.hold_seconds, self.calm_seconds, self.max_gap_seconds) <= 0:
            raise ValueError("hold, calm and gap periods must be positive")


class LoadGovernor:
    """Steps the degradation level up after ``hold_seconds`` of continuous overload and
    down after ``calm_seconds`` of continuous calm, one level at a time; each change
    starts the next period afresh, so a step gets time to show its effect. Time is
    injected: ``observe(now, sample)`` with any monotonic clock (or media time)."""

    def __init__(self, configured: ConfiguredRates,
                 thresholds: GovernorThresholds | None = None,
                 level: DegradationLevel = DegradationLevel.NONE) -> None:
        self.configured = configured
        self.thresholds = thresholds or GovernorThresholds()
        self.level = level
        self._overloaded_since: float | None = None
        self._calm_since: float | None = None
        self._last_seen: float | None = None

    def observe(self, now: float, sample: LoadSample) -> DegradationLevel:
        t = self.thresholds
        if self._last_seen is not None and not 0 <= now - self._last_seen <= t.max_gap_seconds:
            self._overloaded_since = self._calm_since = None  # no telling what happened
        self._last_seen = now
        overloaded = sample.lag_p95 > t.overload_lag or sample.dropped_share > t.overload_dropped
        calm = sample.lag_p95 < t.calm_lag and sample.dropped_share <= t.calm_dropped
        if overloaded:
            self._calm_since = None
            if self._overloaded_since is None:
                self._overloaded_since = now
            elif (now - self._overloaded_since >= t.hold_seconds
                  and self.level < DegradationLevel.REDUCE_ANALYSIS):
                self._change(DegradationLevel(self.level + 1), now, sample)
                self._overloaded_since = now
        elif calm:
            self._overloaded_since = None
            if self._calm_since is None:
                self._calm_since = now
            elif (now - self._calm_since >= t.calm_seconds
                  and self.level > DegradationLevel.NONE):
                self._change(DegradationLevel(self.level - 1), now, sample)
                self._calm_since = now
        else:
            self._overloaded_since = self._calm_since = None
        return self.level

    def effective(self, level: DegradationLevel | None = None) -> EffectiveRates:
        """What runs at ``level`` (default: the current one)."""
        return effective_rates(self.level if level is None else level, self.configured)

    def _change(self, level: DegradationLevel, now: float, sample: LoadSample) -> None:
        log.warning("load: %s -> %s (lag p95 %.2f s, %.0f %% of analysis slots dropped)",
                    self.level.name, level.name, sample.lag_p95, sample.dropped_share * 100)
        self.level = level


class LoadRegulator:
    """Feeds the governor from the live pipelines every ``period`` and applies its rates.

    The sample is node-wide: the p95 of every session's analysis lag in the period and
    the share of analysis slots dropped. Each pipeline gets the current rates when it
    joins (:meth:`join`) and whenever the level changes.
    """

    def __init__(self, config: Config, governor: LoadGovernor | None = None) -> None:
        self.governor = governor or LoadGovernor(ConfiguredRates.from_config(config))

    @property
    def level(self) -> DegradationLevel:
        return self.governor.level

    def join(self, pipeline: SessionPipeline) -> None:
        self._apply(pipeline, self.governor.effective())

    def step(self, now: float, pipelines: list[SessionPipeline]) -> DegradationLevel:
        lags: list[float] = []
        analysed = dropped = 0
        for pipeline in pipelines:
            window, done, missed = pipeline.take_load_window()
            lags += window
            analysed, dropped = analysed + done, dropped + missed
        if not lags and not dropped:
            return self.governor.level  # nothing live to judge by
        p95 = float(np.percentile(lags, 95)) if lags else 0.0
        before = self.governor.level
        level = self.governor.observe(now, LoadSample(p95, dropped / max(1, analysed + dropped)))
        if level != before:
            rates = self.governor.effective()
            for pipeline in pipelines:
                self._apply(pipeline, rates)
        return level

    @staticmethod
    def _apply(pipeline: SessionPipeline, rates: EffectiveRates) -> None:
        pipeline.apply_rates(rates.analysis_fps, rates.objects_fps, rates.transcription_live)
