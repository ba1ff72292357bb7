"""SessionPipeline: one session's media in, flags out.

It owns the session's analysis loop and status ticks. Readers hand it every frame
(:meth:`offer_video`); it keeps only the newest, and at the analysis rate runs the
detector stages on it in the shared thread pool. Observations become signals for the
flag tracker; flag changes go to the sink, which stores before it announces. The
pipeline knows nothing of WebRTC or HTTP: a live peer, a file or a test drives it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Protocol

import av
import numpy as np
import numpy.typing as npt

from proctor.config import Config
from proctor.detectors.base import Detector, Observation, StreamContext, VideoSample
from proctor.evidence import EvidenceRecorder
from proctor.flags.model import Flag
from proctor.flags.rules import BREAK_KINDS, Rule
from proctor.flags.scoring import live_risk
from proctor.flags.tracker import FlagChange, FlagEvent, FlagTracker
from proctor.media.clock import MediaClock
from proctor.media.limits import FrameShapeError, check_frame_shape
from proctor.metrics import Metrics
from proctor.pipeline.audio import AudioPath
from proctor.pipeline.behaviour import BehaviourMeter
from proctor.pipeline.lips import LipHistory
from proctor.tasks import BackgroundTasks
from proctor.transcript.worker import TranscriptWorker

log = logging.getLogger("proctor.pipeline")

ANALYSIS_MAX_WIDTH = 960  # larger frames are scaled down first: detectors gain nothing
LAG_WINDOW = 600  # recent lag samples kept for the session's p50/p95

# Browser telemetry → (signal, value). Instant kinds fire once per event.
TELEMETRY_SIGNALS: dict[str, tuple[str, float]] = {
    "tab_hidden": ("tab_hidden", 1.0),
    "tab_visible": ("tab_hidden", 0.0),
    "window_blur": ("window_blur", 1.0),
    "window_focus": ("window_blur", 0.0),
    "fullscreen_exit": ("fullscreen_exit", 1.0),
    "paste": ("paste", 1.0),
}
INSTANT_SIGNALS = frozenset({"fullscreen_exit", "paste"})
TELEMETRY_TYPES = frozenset({*TELEMETRY_SIGNALS, "copy"})


class PipelineSink(Protocol):
    async def flag_event(self, event: FlagEvent) -> None:
        """Persist, then announce. Raising here stops nothing but is logged."""

    async def status(self, status: dict[str, Any]) -> None: ...


@dataclass
class _Pending:
    frame: av.VideoFrame
    media_time: float
    arrived: float  # monotonic wall time the frame came off the track


class SessionPipeline:
    def __init__(self, *, session_id: str, candidate_id: str, config: Config,
                 detectors: list[Detector], executor: Executor, rules: tuple[Rule, ...],
                 sink: PipelineSink, metrics: Metrics, clock: MediaClock,
                 evidence: EvidenceRecorder | None = None,
                 enrollment: npt.NDArray[np.float32] | None = None,
                 transcript: TranscriptWorker | None = None,
                 now: Callable[[], float] = time.monotonic) -> None:
        self.session_id = session_id
        self.config = config
        self.clock = clock
        self._executor = executor
        self._sink = sink
        self._metrics = metrics
        self._evidence = evidence
        self.transcript = transcript
        self._now = now
        self.lips = LipHistory()
        context = StreamContext(session_id, candidate_id, enrollment,
                                lip_movement=self.lips.movement)
        self._streams = [(d.name, d.stream(context), d.heavy)
                         for d in detectors if d.media == "video"]
        audio_streams = [(d.name, d.stream(context)) for d in detectors if d.media == "audio"]
        self.audio = AudioPath(session_id, config.pipeline.audio_chunk_seconds, audio_streams,
                               executor, self._observe_audio)
        # "link" is the pipeline's own reading of the peer's media (video_lost, audio_lost).
        self._detector_sources = {d.name: d.source for d in detectors} | {
            "link": "peer-connection"}
        # Which detector spoke each signal: a flag's source is its main signal's detector.
        self._signal_sources: dict[str, str] = {
            signal: "browser-telemetry" for signal, _ in TELEMETRY_SIGNALS.values()}
        self._signal_sources["video_lost"] = "peer-connection"
        self._signal_sources["audio_lost"] = "peer-connection"
        self.tracker = FlagTracker(session_id, candidate_id, rules,
                                   gap_seconds=config.flags.gap_seconds,
                                   source_for=self._source_of,
                                   with_clips=evidence is not None,
                                   instant_merge_seconds=config.flags.instant_merge_seconds,
                                   instant_clip_seconds=config.flags.instant_clip_seconds)
        self._tasks = BackgroundTasks(session_id)
        self._pending: _Pending | None = None
        self._new_frame = asyncio.Event()
        self._telemetry: dict[str, float] = {}
        self._lags: deque[float] = deque(maxlen=LAG_WINDOW)
        self.analysis_fps = config.pipeline.analysis_fps  # lowered by the load governor
        self._load_lags: deque[float] = deque(maxlen=LAG_WINDOW)  # since the governor looked
        self._load_marks = (0, 0)  # frames analysed and slots dropped when it last looked
        self.flags: dict[str, Flag] = {}  # every flag so far, latest state
        self.last_faces: int | None = None
        # Each detector's newest observation, for live status and the report.
        self.last_observations: dict[str, Observation] = {}
        self.frames_received = 0
        self.frames_analysed = 0
        self.frames_dropped = 0
        self.frames_refused = 0  # frames of a shape no camera makes: never analysed
        self.behaviour = BehaviourMeter()  # the report's four behavioural metrics
        self.media_connected = False  # set by the peer's owner (status; *_lost do not wait on it)
        self._live_since: float | None = None  # when start() ran: silence counts from then
        self._audio_expected_at: float | None = None  # when an audio track first arrived
        self._last_frame_at: float | None = None
        self._last_audio_at: float | None = None
        self._closed = False

    # Input ------------------------------------------------------------------------

    @property
    def audio_expected(self) -> bool:
        """An audio track arrived: its silence now means something (audio_lost)."""
        return self._audio_expected_at is not None

    @audio_expected.setter
    def audio_expected(self, expected: bool) -> None:
        if not expected:
            self._audio_expected_at = None
        elif self._audio_expected_at is None:
            self._audio_expected_at = self._now()

    def start(self) -> None:
        self._live_since = self._now()
        self._tasks.spawn(self._analysis_loop(), "analysis")
        self._tasks.spawn(self._status_loop(), "status")
        self._tasks.spawn(self.audio.run(), "audio")

    def accepts_frame(self, frame: av.VideoFrame) -> bool:
        """False (and counted) for a frame over the shape limits: it is dropped before
        any conversion, clip or stage, and does not count as video arriving."""
        try:
            check_frame_shape(frame.width, frame.height, self.config.pipeline)
        except FrameShapeError as exc:
            self.frames_refused += 1
            if self.frames_refused == 1 or self.frames_refused % 100 == 0:
                log.warning("session %s: %d frame(s) refused: %s", self.session_id,
                            self.frames_refused, exc)
            return False
        return True

    def offer_video(self, frame: av.VideoFrame, media_time: float, arrived: float) -> None:
        """Called by the track reader for every frame; keeps only the newest."""
        if self._closed or not self.accepts_frame(frame):
            return
        self.frames_received += 1
        self._last_frame_at = arrived
        self._metrics.frames_received.inc()
        self._pending = _Pending(frame, media_time, arrived)
        self._new_frame.set()
        if self._evidence is not None:
            self._evidence.push_video(frame, media_time)

    def offer_audio(self, frame: av.AudioFrame, media_time: float) -> None:
        """Called by the audio track reader for every frame; every sample is analysed."""
        if self._closed:
            return
        self._last_audio_at = self._now()
        self.audio.push(frame, media_time)
        if self._evidence is not None:
            self._evidence.push_audio(frame, media_time)

    async def _observe_audio(self, observations: list[Observation]) -> None:
        """Audio observations carry their own media times; each feeds the tracker then."""
        for observation in observations:
            self.behaviour.audio(observation)
            await self._feed(observation.media_time, [observation], with_telemetry=False)
            self._transcribe(observation.details.get("segments", []))

    def _transcribe(self, segments: list[dict[str, float]]) -> None:
        """Speech segments the voice stage closed go to the transcript worker."""
        if self.transcript is None:
            return
        for segment in segments:
            cut = self.audio.cut(segment["start"], segment["end"])
            if cut is not None:
                self.transcript.submit(*cut)

    async def record_event(self, event_type: str, media_time: float) -> None:
        """Browser telemetry; copy is stored by the caller but makes no flag."""
        mapping = TELEMETRY_SIGNALS.get(event_type)
        if mapping is None or self._closed:
            return
        signal, value = mapping
        if signal not in INSTANT_SIGNALS:
            self._telemetry[signal] = value
        await self._apply(self.tracker.update(media_time, {signal: value}))

    async def pause_presence(self, media_time: float) -> None:
        """A declared break: the presence and audio rules stop (their open flags close
        at ``media_time``) until :meth:`resume_presence`."""
        await self._apply(self.tracker.pause(BREAK_KINDS, media_time))

    def resume_presence(self) -> None:
        self.tracker.resume(BREAK_KINDS)

    @property
    def on_break(self) -> bool:
        return bool(self.tracker.paused)

    # Analysis ---------------------------------------------------------------------

    def apply_rates(self, analysis_fps: float, objects_fps: float,
                    transcription_live: bool) -> None:
        """The load governor's rates (see proctor.capacity.effective_rates); presence
        detection (faces) runs on every analysed frame whatever they are."""
        self.analysis_fps = analysis_fps
        for name, stream, _ in self._streams:
            if name == "objects":
                stream.set_rate(objects_fps)
        if self.transcript is not None:
            self.transcript.defer(not transcription_live)

    def take_load_window(self) -> tuple[list[float], int, int]:
        """Lags, analysed frames and dropped slots since the last call (for the governor)."""
        window = list(self._load_lags)
        self._load_lags.clear()
        analysed, dropped = self.frames_analysed, self.frames_dropped
        counts = (analysed - self._load_marks[0], dropped - self._load_marks[1])
        self._load_marks = (analysed, dropped)
        return window, *counts

    async def _analysis_loop(self) -> None:
        next_tick = self._now()
        while True:
            interval = 1.0 / self.analysis_fps
            await self._new_frame.wait()
            delay = next_tick - self._now()
            if delay > 0:
                await asyncio.sleep(delay)
            pending, self._pending = self._pending, None
            self._new_frame.clear()
            if pending is None:
                continue
            started = self._now()
            await self._analyse(pending)
            elapsed = self._now() - started
            missed = int(elapsed // interval)  # slots that passed while we were busy
            if missed:
                self.frames_dropped += missed
                self._metrics.frames_dropped.inc(missed)
            next_tick = max(next_tick + interval, self._now() - interval * 0.01)

    async def analyse_frame(self, frame: av.VideoFrame, media_time: float) -> list[Observation]:
        """Analyse one frame now: for files, where frames come as fast as we can take them."""
        if not self.accepts_frame(frame):
            return []
        return await self._analyse(_Pending(frame, media_time, self._now()))

    async def _analyse(self, pending: _Pending) -> list[Observation]:
        loop = asyncio.get_running_loop()
        observations = await loop.run_in_executor(
            self._executor, self._run_stages, pending.frame, pending.media_time)
        lag = self._now() - pending.arrived
        self._lags.append(lag)
        self._load_lags.append(lag)
        self._metrics.analysis_lag.observe(lag)
        self.frames_analysed += 1
        self._metrics.frames_analysed.inc()
        if lag > self.config.pipeline.lag_warning_seconds:
            log.warning("session %s: analysis is %.2f s behind the media", self.session_id, lag)
        await self._observe(pending.media_time, observations)
        return observations

    def _run_stages(self, frame: av.VideoFrame, media_time: float) -> list[Observation]:
        """Runs in a worker thread: frame conversion and every detector stage."""
        sample = VideoSample(self.session_id, media_time, _to_rgb(frame))
        observations = []
        heavy_ran = False
        for name, stream, heavy in self._streams:
            if heavy and heavy_ran:
                continue  # one heavy stage per frame (see Detector.heavy)
            observation = stream.process(sample)
            if observation is not None:
                self._metrics.stage_seconds.labels(name).observe(
                    observation.processing_ms / 1000)
                observations.append(observation)
                sample.earlier.append(observation)
                heavy_ran = heavy_ran or heavy
        return observations

    async def _observe(self, media_time: float, observations: list[Observation]) -> None:
        mesh = next((o for o in observations if o.detector == "landmarks"), None)
        if mesh is not None:
            self.lips.add(media_time, mesh.signals.get("mouth_open"))
        self.behaviour.frame(observations)
        faces = next((o for o in observations if o.detector == "faces"), None)
        if faces is not None:
            self.last_faces = int(faces.signals["face_count"])
        await self._feed(media_time, observations)

    async def _feed(self, media_time: float, observations: list[Observation],
                    with_telemetry: bool = True) -> None:
        """Give the tracker what these observations saw now. Only fresh readings count: a
        stage that skipped this frame leaves its rules alone (the tracker's gap
        tolerance carries a run over a skipped frame), so no flag outlives its evidence."""
        signals: dict[str, float] = dict(self._telemetry) if with_telemetry else {}
        confidences: dict[str, float] = {}
        for observation in observations:
            self.last_observations[observation.detector] = observation
            source = self._detector_sources.get(observation.detector, observation.detector)
            for signal in observation.signals:
                self._signal_sources[signal] = source
            signals.update(observation.signals)
            confidences.update(observation.confidences)
        await self._apply(self.tracker.update(media_time, signals, confidences))

    async def _apply(self, events: list[FlagEvent]) -> None:
        for event in events:
            flag = event.flag
            self.flags[flag.flag_id] = flag
            if self._evidence is not None and flag.evidence.clip_id:
                if event.change == FlagChange.OPENED:
                    self._evidence.open_clip(flag.evidence.clip_id, flag.flag_id, flag.start)
                elif event.change == FlagChange.CLOSED and flag.end is not None:
                    self._evidence.close_clip(flag.evidence.clip_id, flag.end)
            if event.change == FlagChange.OPENED:
                self._metrics.flags.labels(flag.kind, flag.severity).inc()
            try:
                await self._sink.flag_event(event)
            except Exception:
                log.exception("session %s: delivering flag %s failed", self.session_id,
                              flag.flag_id)

    def _link(self, media_time: float) -> list[Observation]:
        """``video_lost`` / ``audio_lost``: nothing has arrived for the timeout, whether the
        peer is connected, reconnecting, hung up or closed. (Gating this on a connected
        peer let a candidate switch proctoring off by hanging up or by making the server
        close the peer, and still pass.) A declared break pauses both rules."""
        # Only silence is reported: while media flows, the stages' own signals
        # (video_frozen, audio_silent) say all is well, at their own media times. A
        # wall-clock "0" here would interleave with those and break their runs.
        signals = {}
        if self._video_quiet():
            signals["video_lost"] = 1.0
        if self._audio_quiet():
            signals["audio_lost"] = 1.0
        if not signals:
            self.last_observations.pop("link", None)
            return []
        return [Observation(session_id=self.session_id, media_time=media_time,
                            detector="link", signals=signals)]

    def _video_quiet(self) -> bool:
        # A track that never delivers is as lost as one that stopped: before the first
        # frame, the silence counts from going live.
        last = self._last_frame_at if self._last_frame_at is not None else self._live_since
        return self._quiet(last, self.config.pipeline.video_timeout_seconds)

    def _audio_quiet(self) -> bool:
        if self._audio_expected_at is None:
            return False
        last = self._last_audio_at if self._last_audio_at is not None \
            else self._audio_expected_at
        return self._quiet(last, self.config.pipeline.audio_timeout_seconds)

    def _quiet(self, last: float | None, timeout: float) -> bool:
        return last is None or self._now() - last > timeout

    def latest_signals(self) -> dict[str, float]:
        """Every detector's newest reading, however old (for people watching live)."""
        latest: dict[str, float] = {}
        for observation in sorted(self.last_observations.values(), key=lambda o: o.media_time):
            latest.update({k: round(v, 3) for k, v in observation.signals.items()})
        return latest

    def _source_of(self, rule: Rule) -> str:
        return next((self._signal_sources[s] for s in rule.signals if s in self._signal_sources),
                    "")

    # Status -----------------------------------------------------------------------

    async def _status_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.pipeline.status_interval_seconds)
            if not self.clock.started:
                if not (self._video_quiet() or self._audio_quiet()):
                    continue
                # Live, and no media came within the timeout: the session's time starts
                # here (media time 0), so video_lost / audio_lost run on the same rule
                # and thresholds as for media that stopped.
                self.clock.start()
            media_time = self.clock.now()
            # Between frames, this tick lets "hidden for 10 s" or "no video" move on.
            await self._feed(media_time, self._link(media_time))
            try:
                await self._sink.status(self.status(media_time))
            except Exception:
                log.exception("session %s: sending status failed", self.session_id)

    def risk(self, media_time: float | None = None) -> float:
        now = self.clock.now() if media_time is None else media_time
        return live_risk(self.flags.values(), now, self.config.scoring)

    def status(self, media_time: float) -> dict[str, Any]:
        return {
            "type": "status",
            "session_id": self.session_id,
            "media_time": round(media_time, 2),
            "risk": self.risk(media_time),
            "faces": self.last_faces,
            "signals": self.latest_signals(),
            "open_flags": [str(f.kind) for f in self.tracker.open_flags],
            "lag_ms": round(self._lags[-1] * 1000, 1) if self._lags else None,
        }

    def stats(self) -> dict[str, Any]:
        lags = np.array(self._lags) if self._lags else None
        return {
            "frames_received": self.frames_received,
            "frames_analysed": self.frames_analysed,
            "frames_dropped": self.frames_dropped,
            "frames_refused": self.frames_refused,
            "analysis_lag_p50": None if lags is None else round(float(np.median(lags)), 4),
            "analysis_lag_p95": None if lags is None else round(
                float(np.percentile(lags, 95)), 4),
            "evidence_frames_dropped": 0 if self._evidence is None
            else self._evidence.dropped_frames,
            "audio_chunks_analysed": self.audio.chunks_analysed,
            "audio_chunks_dropped": self.audio.chunks_dropped,
        }

    def behavioural_metrics(self) -> dict[str, float | None]:
        """Focus, eye contact, environment stability, audio consistency (0-1 or None)."""
        return self.behaviour.metrics()

    # Shutdown ---------------------------------------------------------------------

    async def aclose(self, end_time: float | None = None) -> None:
        """Stop analysis, close every open flag, and finish the clips. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._tasks.stop()
        await self.audio.finish()
        await self._apply(self.tracker.close_all(
            self.clock.now() if end_time is None else end_time))
        if self._evidence is not None:
            await self._evidence.aclose()
        for _, stream, _ in self._streams:
            stream.close()


def _to_rgb(frame: av.VideoFrame) -> np.ndarray[Any, np.dtype[np.uint8]]:
    # threads=1: PyAV's default (0, automatic) builds a new swscale context with a
    # thread per core for every call and joins them after it, two thread starts per
    # analysed frame for a conversion of ~0.15 ms; the stages already run in parallel.
    if frame.width > ANALYSIS_MAX_WIDTH:
        height = round(frame.height * ANALYSIS_MAX_WIDTH / frame.width / 2) * 2
        frame = frame.reformat(width=ANALYSIS_MAX_WIDTH, height=height, threads=1)
    return np.asarray(frame.to_ndarray(format="rgb24", threads=1), dtype=np.uint8)
