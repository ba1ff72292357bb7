"""Voice activity (Silero VAD), whispering and digital silence.

Silero VAD 6.2.3 (MIT; the ONNX file of the ``silero-vad`` wheel, kept in ``models/``
because that package requires torch) scores every 32 ms window: 512 new samples at
16 kHz after the 64 samples before them, with a recurrent state carried from window
to window. One onnxruntime session serves the whole process (``InferenceSession.run``
is thread-safe and the state travels with each call); each session's stream keeps its
own state, context and window bookkeeping across chunks.

Observations: one per hop of ``hop_seconds`` (rounded to whole 32 ms windows; 8
windows = 0.256 s by default), at the media time of the hop's first sample. Signals:

- ``speech`` 1/0: at least half the hop's windows are speech. A window is speech by
  hysteresis: it turns on at a probability >= ``threshold`` and off below
  ``neg_threshold``, so a word does not flicker on and off at one threshold.
- ``speech_probability``: the mean VAD probability over the hop.
- ``audio_level_db``: RMS of the hop in dBFS (-120 for exact zeros).
- ``whispering`` 1/0: speech that is quiet and unvoiced, as a whisper is: the
  hop's speech windows have an RMS of at most ``whisper_max_db`` and, over the speech
  of the last ``whisper_context_seconds``, at most ``whisper_max_voiced`` of the
  energy lies in voiced windows. A window is voiced when it has a pitch (normalised
  autocorrelation >= ``voicing_threshold`` at a lag of 70-400 Hz, over the window and
  the one before it) or carries ``low_band_share`` of its energy under 500 Hz: a
  whisper has no glottal pulse, hence neither a pitch nor first harmonics. Judging
  the energy share over half a second, not window by window, keeps the unvoiced
  consonants of normal speech (s, f, sh, t) from reading as whispers: the vowels
  around them carry most of the energy. Only hops that are speech can whisper, and
  a whisper under a louder voice is heard only where that voice pauses.
- ``audio_silent`` 1/0: digital silence, every sample of the hop within
  ``silence_level`` of zero: a muted microphone that still sends packets. A quiet
  room has noise far above that level.

Speech segments (start/end media times) for the transcript and speaker stages: each
observation's ``details["segments"]`` lists the segments that closed during its hop
as ``{"start", "end"}``; :meth:`VoiceStream.finish` closes the one still open at the
end of the audio; :meth:`VoiceDetector.speech_segments` does all of it for a whole
array at once. A segment closes after ``min_silence_seconds`` without speech, is
dropped when shorter than ``min_speech_seconds`` and is padded by
``speech_pad_seconds`` each side (the way silero's ``get_speech_timestamps`` does).

A chunk that does not start where the previous one ended (more than one window of
gap: the track was lost and came back) restarts the stream: the open segment closes
at its last speech, and the VAD state, context and partial hop are dropped.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from proctor.config import VoiceConfig
from proctor.detectors.base import (
    AUDIO_RATE,
    AudioSample,
    Detector,
    DetectorStream,
    Observation,
    StreamContext,
)
from proctor.models import model_file
from proctor.onnx_sessions import cpu_session

log = logging.getLogger("proctor.detectors.voice")

MODEL_NAME = "silero_vad"  # the manifest entry (models/manifest.json)
MODEL_VERSION = "6.2.3"
WINDOW = 512  # samples per VAD window at 16 kHz (32 ms): the only size the model takes
CONTEXT = 64  # samples of the previous window the model sees before each new one
WINDOW_SECONDS = WINDOW / AUDIO_RATE
STATE_SHAPE = (2, 1, 128)
SILENT_DB = -120.0  # the level reported for exact zeros

# Pitch search: lags of 400 Hz down to 70 Hz, on the current window plus the one
# before it (64 ms), so even a 70 Hz voice shows four periods.
PITCH_SPAN = 2 * WINDOW
MIN_LAG = AUDIO_RATE // 400
MAX_LAG = AUDIO_RATE // 70
# Only rumble and hum under 60 Hz are left out of the pitch search. Band-limiting to
# 1 kHz (where the first harmonics lie) looked tempting but made a whisper's narrow
# first-formant resonance ring like a pitch: whispers read as up to 40 % voiced.
PITCH_BAND = (60.0, 8000.0)
LOW_BAND_HZ = 500.0  # "low band" for low_band_share: where the first harmonics lie
_FFT_SIZE = 2 * PITCH_SPAN  # zero-padded: a linear, not circular, autocorrelation

FloatArray = npt.NDArray[np.float32]



@dataclass(frozen=True)
class SpeechSegment:
    """A stretch of speech in media seconds (padded by ``speech_pad_seconds``; to the ms)."""

    start: float
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start

    def as_dict(self) -> dict[str, float]:
        return {"start": self.start, "end": self.end}


@dataclass(frozen=True)
class _Windows:
    """Per-window results for the complete windows of one chunk (arrays of equal length)."""

    start: npt.NDArray[np.float64]  # media time of each window's first sample
    probability: npt.NDArray[np.float32]
    speech: npt.NDArray[np.bool_]  # hysteresis state after the window
    energy: npt.NDArray[np.float64]  # sum of squares
    voiced: npt.NDArray[np.bool_]
    peak: npt.NDArray[np.float32]  # max abs sample


def model_path() -> Path:
    """The Silero VAD ONNX file named by the model manifest."""
    return model_file(MODEL_NAME)


class VoiceDetector(Detector):
    name = "voice"
    media = "audio"
    source = f"silero-vad@{MODEL_VERSION}"

    def __init__(self, config: VoiceConfig, path: Path | None = None) -> None:
        # Each window is a tiny graph: one thread per call is fastest.
        self._session = cpu_session(path or model_path())
        self._rate = np.array(AUDIO_RATE, dtype=np.int64)
        self.config = config

    def stream(self, context: StreamContext) -> VoiceStream:
        return VoiceStream(self, context.session_id)

    def probability(self, window: FloatArray, state: FloatArray) -> tuple[float, FloatArray]:
        """One 32 ms step: ``window`` is CONTEXT + WINDOW samples; returns the speech
        probability and the next state."""
        out, next_state = self._session.run(
            None, {"input": window[np.newaxis, :], "state": state, "sr": self._rate})
        return float(out[0, 0]), next_state

    def speech_segments(self, samples: FloatArray, media_time: float = 0.0,
                        session_id: str = "offline") -> list[SpeechSegment]:
        """Every speech segment of a whole recording (16 kHz mono float32)."""
        stream = VoiceStream(self, session_id)
        observations = stream.process_audio(AudioSample(session_id, media_time, samples))
        found = [SpeechSegment(s["start"], s["end"])
                 for o in observations for s in o.details.get("segments", [])]
        return found + stream.finish()


class VoiceStream(DetectorStream):
    """One session's VAD: recurrent state, 64-sample context, partial window and hop."""

    def __init__(self, detector: VoiceDetector, session_id: str) -> None:
        self._detector = detector
        self._config = detector.config
        self._session_id = session_id
        self._hop = max(1, round(self._config.hop_seconds / WINDOW_SECONDS))
        self._context_windows = max(
            self._hop, round(self._config.whisper_context_seconds / WINDOW_SECONDS))
        self._closed: list[SpeechSegment] = []  # closed, not yet reported (kept on reset)
        self._reset(None)

    def _reset(self, media_time: float | None) -> None:
        self._state = np.zeros(STATE_SHAPE, dtype=np.float32)
        self._context = np.zeros(CONTEXT, dtype=np.float32)
        self._previous = np.zeros(WINDOW, dtype=np.float32)  # for the 64 ms pitch span
        self._pending = np.zeros(0, dtype=np.float32)  # samples short of a whole window
        # Times count samples from the first one, so a long session adds no float drift.
        self._origin = media_time  # media time of the first sample since the (re)start
        self._analysed = 0  # samples analysed since then (whole windows)
        self._speaking = False
        self._hop_parts: list[_Windows] = []
        self._recent: _Windows | None = None  # the last whisper_context_seconds of windows
        self._segment_start: float | None = None
        self._last_speech_end = 0.0
        self._last_closed_end = -np.inf

    # ---- the DetectorStream contract ----------------------------------------------

    def process_audio(self, sample: AudioSample) -> list[Observation]:
        started = time.perf_counter()
        self._check_continuity(sample.media_time)
        samples = np.concatenate([self._pending, sample.samples.astype(np.float32)])
        whole = len(samples) // WINDOW * WINDOW
        windows = self._analyse(samples[:whole])
        self._pending = samples[whole:]
        self._analysed += whole
        observations = self._hops(windows)
        spent = (time.perf_counter() - started) * 1000
        for observation in observations:
            observation.processing_ms = spent / len(observations)
        return observations

    def finish(self) -> list[SpeechSegment]:
        """The segments not yet reported in an observation: those closed since the
        last hop, and the one still open at the end of the audio (end of a session or
        of an offline recording), closed now if it is long enough."""
        self._close_segment()
        closed, self._closed = self._closed, []
        return closed

    def finish_audio(self) -> list[Observation]:
        """The pipeline's end-of-audio hook: the last segments, as one observation."""
        segments = self.finish()
        if not segments:
            return []
        return [Observation(session_id=self._session_id, media_time=segments[-1].end,
                            detector=VoiceDetector.name,
                            details={"segments": [s.as_dict() for s in segments]})]

    # ---- windows --------------------------------------------------------------------

    def _check_continuity(self, media_time: float) -> None:
        """Restart after a gap in the media; a segment open then closes at its last
        speech and is reported with the next observation."""
        if self._origin is None:
            self._origin = media_time
            return
        expected = self._origin + (self._analysed + len(self._pending)) / AUDIO_RATE
        if abs(media_time - expected) <= WINDOW_SECONDS:
            return
        log.info("session %s: audio jumps from %.3f s to %.3f s; VAD restarts",
                 self._session_id, expected, media_time)
        self._close_segment()
        self._reset(media_time)

    def _analyse(self, samples: FloatArray) -> _Windows:
        frames = samples.reshape(-1, WINDOW)
        assert self._origin is not None
        first = self._origin + self._analysed / AUDIO_RATE
        probability = np.array([self._step(frame) for frame in frames], dtype=np.float32)
        # Each window's pitch span is the window before it plus itself.
        previous = np.concatenate([self._previous[np.newaxis], frames])[: len(frames)]
        if len(frames):
            self._previous = frames[-1].copy()
        return _Windows(
            start=np.asarray(first + np.arange(len(frames)) * WINDOW_SECONDS, np.float64),
            probability=probability,
            speech=self._hysteresis(probability),
            energy=np.sum(np.square(frames, dtype=np.float64), axis=1),
            voiced=voiced_windows(np.concatenate([previous, frames], axis=1), self._config),
            peak=np.max(np.abs(frames), axis=1, initial=0.0),
        )

    def _step(self, frame: FloatArray) -> float:
        window = np.concatenate([self._context, frame])
        probability, self._state = self._detector.probability(window, self._state)
        self._context = frame[-CONTEXT:]
        return probability

    def _hysteresis(self, probability: npt.NDArray[np.float32]) -> npt.NDArray[np.bool_]:
        speech = np.zeros(len(probability), dtype=bool)
        for index, value in enumerate(probability):
            if value >= self._config.threshold:
                self._speaking = True
            elif value < self._config.neg_threshold:
                self._speaking = False
            speech[index] = self._speaking
        return speech

    # ---- hops and observations ------------------------------------------------------

    def _hops(self, windows: _Windows) -> list[Observation]:
        observations: list[Observation] = []
        offset = 0
        while offset < len(windows.start):
            have = sum(len(part.start) for part in self._hop_parts)
            take = min(self._hop - have, len(windows.start) - offset)
            self._hop_parts.append(_slice(windows, offset, offset + take))
            offset += take
            if have + take == self._hop:
                hop = _join(self._hop_parts)
                self._hop_parts = []
                self._track_segments(hop)
                self._remember(hop)
                observations.append(self._observe(hop, self._closed))
                self._closed = []
        return observations

    def _observe(self, hop: _Windows, closed: list[SpeechSegment]) -> Observation:
        config = self._config
        speech = bool(np.count_nonzero(hop.speech) * 2 >= len(hop.speech))
        probability = float(np.mean(hop.probability))
        level = _db(float(np.sum(hop.energy)), len(hop.energy) * WINDOW)
        silent = bool(np.max(hop.peak) <= config.silence_level)
        whisper, voiced_share = self._whispering(hop) if speech else (False, None)
        return Observation(
            session_id=self._session_id,
            media_time=float(hop.start[0]),
            detector=VoiceDetector.name,
            signals={
                "speech": float(speech),
                "speech_probability": round(probability, 4),
                "audio_level_db": round(level, 2),
                "whispering": float(whisper),
                "audio_silent": float(silent),
            },
            # Whispering is as sure as the VAD is that the hop is speech at all.
            confidences={"speech": probability if speech else 1.0 - probability,
                         "whispering": probability if whisper else 1.0},
            details={"segments": [s.as_dict() for s in closed],
                     "voiced_share": voiced_share},
        )

    def _remember(self, hop: _Windows) -> None:
        joined = hop if self._recent is None else _join([self._recent, hop])
        self._recent = _slice(joined, -self._context_windows, None)

    def _whispering(self, hop: _Windows) -> tuple[bool, float]:
        """Whether the hop's speech is a whisper, and the voiced share of the energy of
        the speech in the last ``whisper_context_seconds`` (this hop included).

        The level is the hop's own; the voiced share looks back further, because a
        word of normal speech can hold a quarter second of nothing but unvoiced
        consonants ("selfish"), while a whisper stays unvoiced for seconds."""
        energy = hop.energy[hop.speech]
        total = float(np.sum(energy))
        recent = self._recent if self._recent is not None else hop
        recent_energy = recent.energy[recent.speech]
        recent_total = float(np.sum(recent_energy))
        if total <= 0.0 or recent_total <= 0.0:
            return False, 0.0
        voiced_share = float(np.sum(recent_energy[recent.voiced[recent.speech]])) / recent_total
        quiet = _db(total, len(energy) * WINDOW) <= self._config.whisper_max_db
        whisper = quiet and voiced_share <= self._config.whisper_max_voiced
        return whisper, round(voiced_share, 3)

    # ---- segments -------------------------------------------------------------------

    def _track_segments(self, hop: _Windows) -> None:
        for start, speech in zip(hop.start, hop.speech, strict=True):
            end = float(start) + WINDOW_SECONDS
            if speech:
                if self._segment_start is None:
                    self._segment_start = float(start)
                self._last_speech_end = end
            elif (self._segment_start is not None
                  and end - self._last_speech_end >= self._config.min_silence_seconds):
                self._close_segment()

    def _close_segment(self) -> None:
        """Ends the open segment at its last speech; keeps it if it is long enough."""
        start, self._segment_start = self._segment_start, None
        if start is None:
            return
        end = self._last_speech_end
        if end - start < self._config.min_speech_seconds:
            return
        pad = self._config.speech_pad_seconds
        # Padding never reaches back into the previous segment.
        segment = SpeechSegment(round(max(start - pad, self._last_closed_end, 0.0), 3),
                                round(end + pad, 3))
        self._last_closed_end = segment.end
        self._closed.append(segment)


# ---- pure helpers -----------------------------------------------------------------------

def voiced_windows(spans: FloatArray, config: VoiceConfig) -> npt.NDArray[np.bool_]:
    """For each row of ``spans`` (PITCH_SPAN samples: previous + current window),
    whether it is voiced: a pitch between 70 and 400 Hz, or most energy in the low
    band where voiced speech has its first harmonics."""
    if len(spans) == 0:
        return np.zeros(0, dtype=bool)
    periodicity, low_share = _voicing_features(spans)
    return (periodicity >= config.voicing_threshold) | (low_share >= config.low_band_share)


def _band(low: float, high: float) -> npt.NDArray[np.bool_]:
    """Which bins of the zero-padded spectrum lie in [low, high) Hz."""
    freqs = np.fft.rfftfreq(_FFT_SIZE, 1 / AUDIO_RATE)
    return (freqs >= low) & (freqs < high)


_PITCH_MASK = _band(*PITCH_BAND)
_LOW_MASK = _band(PITCH_BAND[0], LOW_BAND_HZ)
_ABOVE_MASK = _band(PITCH_BAND[0], AUDIO_RATE)
_TAPER = np.hanning(PITCH_SPAN)
# A tapered frame's autocorrelation shrinks with the lag; dividing by the taper's own
# autocorrelation puts a perfectly periodic frame at 1.0 for every lag.
_TAPER_AC = np.fft.irfft(np.abs(np.fft.rfft(_TAPER, _FFT_SIZE)) ** 2)[:PITCH_SPAN]
_TAPER_AC = _TAPER_AC / _TAPER_AC[0]


def _voicing_features(spans: FloatArray) -> tuple[npt.NDArray[np.float64],
                                                   npt.NDArray[np.float64]]:
    """Peak band-limited normalised autocorrelation at pitch lags, and the share of
    energy under LOW_BAND_HZ, per row (autocorrelation as the inverse FFT of the power
    spectrum: one FFT pair per window for both features)."""
    frames = spans.astype(np.float64)
    frames = (frames - frames.mean(axis=1, keepdims=True)) * _TAPER
    power = np.abs(np.fft.rfft(frames, _FFT_SIZE, axis=1)) ** 2
    above = np.sum(power[:, _ABOVE_MASK], axis=1)
    low_share = np.sum(power[:, _LOW_MASK], axis=1) / np.maximum(above, 1e-20)
    corr = np.fft.irfft(power * _PITCH_MASK, axis=1)[:, :PITCH_SPAN]
    zero_lag = np.maximum(corr[:, :1], 1e-20)
    normalised = corr[:, MIN_LAG:MAX_LAG + 1] / zero_lag / _TAPER_AC[MIN_LAG:MAX_LAG + 1]
    periodicity = np.where(corr[:, 0] > 1e-12, np.max(normalised, axis=1), 0.0)
    return periodicity, low_share


def _db(energy: float, count: int) -> float:
    if energy <= 0.0 or count == 0:
        return SILENT_DB
    return max(SILENT_DB, 10.0 * float(np.log10(energy / count)))


def _slice(windows: _Windows, start: int | None, stop: int | None) -> _Windows:
    return _Windows(**{name: getattr(windows, name)[start:stop] for name in _FIELDS})


def _join(parts: list[_Windows]) -> _Windows:
    return _Windows(**{name: np.concatenate([getattr(p, name) for p in parts])
                       for name in _FIELDS})


_FIELDS = ("start", "probability", "speech", "energy", "voiced", "peak")

