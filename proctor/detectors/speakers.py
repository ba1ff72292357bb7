"""A second voice besides the candidate's (``multiple_speakers``).

The speaker model is resemblyzer 0.1.4's GE2E encoder (Apache-2.0), converted once to
plain numpy weights by ``models/convert_ge2e.py`` and from those to an ONNX graph by
``models/convert_ge2e_onnx.py``: a 40-band mel spectrogram (25 ms windows, 10 ms hop,
16 kHz), a 3-layer LSTM of 256 units, a linear layer of 256, ReLU and L2 normalisation.
Each 1.6 s window (160 mel frames) becomes one unit-length voice embedding. Measured on
real speech (bench/speakers.py): a window against the learned voice of the same speaker
scores 0.65-0.90 (median 0.81), other voices 0.37-0.79 (two people in one room: median
0.71). No torch: the mel spectrogram is numpy, the LSTM runs in onnxruntime (one thread,
outside the interpreter lock; the numpy forward pass, kept as :class:`Ge2eReference`,
held the lock for ~4,000 small calls a window and stalled the other sessions' stages).

Per session the stream keeps the last seconds of audio and every ``hop_seconds`` judges
its last window when it holds speech (an energy gate against the session's own noise
floor, see :class:`SpeechGate`: this stage does not depend on the VAD stage), embedding
it unless the count model below decides the window. It learns the
candidate's voice from their first ``enrollment_seconds`` of speech windows, keeping
only the windows that agree with the majority (so a cough, a door or a second person
at the very start does not become "the candidate"). After that each speech window is
compared with the candidate's voice. A voice enrolled ahead of the session (a
``voice_enrollment`` on the StreamContext, once it has one; :meth:`SpeakerDetector.enroll`
makes it from a recording) replaces the live learning.

Voices are also counted (when ``models/segmentation-3.0.onnx`` is installed, see
:mod:`proctor.detectors.segmentation`): every ``segmentation_hop_seconds`` (1 s) the
last ``segmentation_window_seconds`` (5 s) are split into local speakers, and each
local speaker's speech alone there (their last 3.1 s at most) is embedded. A voice of
several seconds is judged far more surely than a 1.6 s window: the LibriVox reader's
own voice scored 0.74-0.96 this way (1.6 s windows: 0.65-0.90). Each hop's window is
then judged by the local speakers heard in it, no longer by its own embedding.

Signals, one observation per hop at the window's centre time:
- ``voice_similarity``: cosine between the window's own embedding and the candidate's
  voice (speech windows after enrollment that no count window judges: without the count
  model, or where it heard almost no speech);
- ``speaker_count``: local speakers heard for ``min_voice_seconds`` in the last count
  window (with the count model);
- ``second_voice_audio`` 1/0: the audio's verdict (:func:`audio_verdict`): a voice in
  the window below ``match_threshold``, or a voice the count model split from the
  candidate's (two voices that differ, the other one clearly nearer the candidate's),
  or a doubtful voice clearly nearer the last voice judged another person's than the
  candidate's (someone who keeps talking alone is recognised, not judged afresh);
- ``second_voice`` 1/0 (backs ``multiple_speakers``): :func:`fuse_second_voice`, the
  audio verdict with the candidate's lips as support only. Only voice evidence
  raises it: still lips can tip a doubtful voice (between ``match_threshold`` and
  ``support_threshold``) but never a voice that matches the candidate's, nor speech
  while the voice is not learned yet. No speech: 0.

Lips: :attr:`SpeakerStream.lips_moving` is a seam for the pipeline, a function of a
window's (start, end) media times giving the share of its video frames with the
candidate's mouth moving (face-mesh lip distance), or None when unknown (no face, or a
mouth too small, dark or covered to measure).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from proctor.config import SpeakersConfig
from proctor.detectors.base import (
    AUDIO_RATE,
    AudioSample,
    Detector,
    DetectorStream,
    Observation,
    StreamContext,
)
from proctor.detectors.segmentation import LOCAL_SPEAKERS, Segmentation, SegmentationModel
from proctor.detectors.segmentation import MODEL_VERSION as SEGMENTATION_VERSION
from proctor.detectors.segmentation import model_path as segmentation_model_path
from proctor.models import ModelMissing, model_file
from proctor.onnx_sessions import cpu_session

log = logging.getLogger("proctor.detectors.speakers")

Floats = npt.NDArray[np.float32]
Embedding = Floats  # unit length, EMBEDDING_SIZE numbers

MODEL_NAME = "ge2e_speaker_onnx"  # the manifest entry the detector loads (models/manifest.json)
WEIGHTS_NAME = "ge2e_speaker"  # the numpy weights it was built from (Ge2eReference)
MODEL_VERSION = "ge2e-resemblyzer-0.1.4"
EMBEDDING_SIZE = 256

# Resemblyzer's hparams.py: mel_window_length 25 ms, mel_window_step 10 ms, 40 channels,
# partials_n_frames 160. librosa's melspectrogram defaults do the rest: a periodic Hann
# window, power 2 (not log), Slaney mel scale and Slaney area normalisation.
N_FFT = AUDIO_RATE * 25 // 1000  # 400 samples
FRAME_HOP = AUDIO_RATE * 10 // 1000  # 160 samples
N_MELS = 40
PARTIAL_FRAMES = 160
PARTIAL_STEP_FRAMES = 50  # 0.5 s between partials of a longer recording
# Samples that give exactly PARTIAL_FRAMES uncentred frames: 1.615 s.
WINDOW_SAMPLES = (PARTIAL_FRAMES - 1) * FRAME_HOP + N_FFT
# Resemblyzer normalises utterances to -30 dBFS before the mel step (its
# audio_norm_target_dBFS); the LSTM is not scale-invariant, so windows are set to it too.
NORM_TARGET_DBFS = -30.0

# A gap between chunks longer than this is lost audio: the window starts again.
_MAX_GAP_SECONDS = 0.05
# Learning the candidate's voice keeps the first speech windows this similar to their
# medoid. Two windows of one voice measured 0.82 ± 0.06 here, of two voices in one room
# 0.70 ± 0.04 (pyannote's sample): 0.80 keeps most of one voice and little of another.
LEARN_AGREE = 0.80
# Confidence in a verdict: 0.5 at the threshold, 1.0 this far (in cosine) from it.
CONFIDENT_MARGIN = 0.15
# A local speaker's voice is the embedding of their last 3.1 s alone at most (4 partials).
# The count model runs only on audio with at least this share of speech frames (a quiet
# exam room costs nothing); a 1.6 s window judged as speech fills 16 % of a 5 s one.
MIN_COUNT_SPEECH = 0.1
# Two local speakers are told apart when the nearer to the candidate's voice is at least
# this much nearer (in cosine) than the other.
SEPARATE_GAP = 0.05
VOICE_SAMPLES = WINDOW_SAMPLES + 3 * PARTIAL_STEP_FRAMES * FRAME_HOP



def model_path() -> Path:
    """The GE2E ONNX graph named by the model manifest (models/ in a checkout,
    proctor/models_data/ in an installed wheel; python models/convert_ge2e.py and then
    models/convert_ge2e_onnx.py rebuild it)."""
    return model_file(MODEL_NAME)


def weights_path() -> Path:
    """The numpy weights (the reference forward pass's)."""
    return model_file(WEIGHTS_NAME)


# Mel spectrogram ------------------------------------------------------------------


def _hz_to_mel(hz: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Slaney's mel scale (librosa's default, htk=False): linear to 1 kHz, log above."""
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    logstep = np.log(6.4) / 27.0
    log_part = min_log_hz / f_sp + np.log(np.maximum(hz, 1e-10) / min_log_hz) / logstep
    return np.where(hz >= min_log_hz, log_part, hz / f_sp)


def _mel_to_hz(mel: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(mel >= min_log_mel, min_log_hz * np.exp(logstep * (mel - min_log_mel)),
                    mel * f_sp)


def mel_filterbank() -> Floats:
    """librosa.filters.mel(sr=16000, n_fft=400, n_mels=40): (40, 201), Slaney-normalised."""
    fft_hz = np.linspace(0.0, AUDIO_RATE / 2, 1 + N_FFT // 2)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(np.array(0.0)), _hz_to_mel(
        np.array(AUDIO_RATE / 2.0)), N_MELS + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_hz[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]  # equal area per band
    return weights.astype(np.float32)


_HANN = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float32)
_MEL_T = np.ascontiguousarray(mel_filterbank().T)


def mel_frames(samples: Floats) -> Floats:
    """Power mel spectrogram of uncentred 25 ms frames every 10 ms: (frames, 40)."""
    count = 1 + (len(samples) - N_FFT) // FRAME_HOP
    if count < 1:
        return np.zeros((0, N_MELS), np.float32)
    frames = np.lib.stride_tricks.sliding_window_view(samples, N_FFT)[::FRAME_HOP][:count]
    spectrum = np.fft.rfft(frames * _HANN, axis=1)
    power = (spectrum.real**2 + spectrum.imag**2).astype(np.float32)
    mel: Floats = power @ _MEL_T
    return mel


def normalise_volume(samples: Floats, target_dbfs: float = NORM_TARGET_DBFS) -> Floats:
    """Scale to ``target_dbfs`` RMS (resemblyzer's normalize_volume, both directions)."""
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    if rms <= 1e-9:
        return samples
    gain = 10 ** (target_dbfs / 20) / rms
    scaled: Floats = (samples * np.float32(gain)).astype(np.float32, copy=False)
    return scaled


# The encoder ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Layer:
    input_weights: Floats  # (inputs, 4H), gates reordered to i, f, o, g
    hidden_weights: Floats  # (H, 4H)
    bias: Floats  # (4H,), both torch biases summed


class Ge2eEncoder:
    """GE2E's forward pass in onnxruntime: ``models/ge2e_speaker.onnx``, the same weights
    as three ONNX ``LSTM`` nodes (``models/convert_ge2e_onnx.py``, checked against
    :class:`Ge2eReference`). The recurrent steps run natively, without the interpreter
    lock, and several partials go in one call. Stateless: one encoder (one
    InferenceSession, whose ``run`` is thread-safe) serves every session and thread.
    """

    def __init__(self, path: Path) -> None:
        self._session = cpu_session(path)

    def embed_mels(self, mels: Floats) -> Floats:
        """Partials' mel frames (B, 160, 40) -> their unit-length embeddings (B, 256)."""
        batch = np.ascontiguousarray(np.transpose(mels, (1, 0, 2)), np.float32)
        raw = self._session.run(None, {"mel": batch})[0]
        norms = np.linalg.norm(raw, axis=1, keepdims=True)
        embeddings: Floats = (raw / np.where(norms > 0, norms, 1.0)).astype(np.float32)
        return embeddings

    def embed_mel(self, mel: Floats) -> Embedding:
        """One partial utterance's mel frames (T, 40), T = 160 as trained -> embedding."""
        embedding: Embedding = self.embed_mels(mel[None])[0]
        return embedding

    def embed(self, samples: Floats) -> Embedding:
        """Audio of any length: one 1.6 s partial per PARTIAL_STEP_FRAMES (0.5 s), the last
        ending at the audio's end, averaged, as resemblyzer's embed_utterance does. A live
        window is exactly one partial; shorter audio is padded with silence."""
        return self.embed_many([samples])[0]

    def embed_many(self, recordings: list[Floats]) -> list[Embedding]:
        """:meth:`embed` of each recording, all their partials in one model run: the
        LSTM's 160 steps cost about as much for one partial as for several (one partial
        ~17 ms here, four ~25 ms), so a count window's voices are embedded together."""
        mels = [_utterance_mel(samples) for samples in recordings]
        partials = [[mel[s:s + PARTIAL_FRAMES]
                     for s in range(len(mel) - PARTIAL_FRAMES, -1, -PARTIAL_STEP_FRAMES)]
                    for mel in mels]
        embedded = list(self.embed_mels(np.stack([p for ps in partials for p in ps])))
        out, at = [], 0
        for ps in partials:
            out.append(mean_embedding(embedded[at:at + len(ps)]))
            at += len(ps)
        return out


def _utterance_mel(samples: Floats) -> Floats:
    samples = np.asarray(samples, np.float32)
    if len(samples) < WINDOW_SAMPLES:
        samples = np.pad(samples, (0, WINDOW_SAMPLES - len(samples)))
    return mel_frames(normalise_volume(samples))


class Ge2eReference:
    """GE2E's forward pass in numpy, numerically torch's ``nn.LSTM`` + ``nn.Linear``, from
    ``models/ge2e_speaker.npz``: the reference the ONNX graph is checked against.

    Two rewrites keep it fast without changing the result: the gates are reordered from
    torch's (i, f, g, o) to (i, f, o, g) so the three sigmoid gates are one contiguous
    slice, and their rows are pre-scaled by 1/2 so that one ``tanh`` over all four gates
    gives every gate (sigmoid(x) = (1 + tanh(x / 2)) / 2). Input projections are one
    matrix product per layer for all 160 steps; only the recurrent product is per step.
    Stateless after loading: one encoder serves every session and thread.
    """

    hidden = 256

    def __init__(self, path: Path) -> None:
        with np.load(path) as weights:
            self.layers = [self._layer(weights, index) for index in range(3)]
            self.linear_weights = np.ascontiguousarray(weights["linear.weight"].T, np.float32)
            self.linear_bias = np.asarray(weights["linear.bias"], np.float32)

    @classmethod
    def _layer(cls, weights: Any, index: int) -> _Layer:
        h = cls.hidden
        order = np.r_[0:h, h:2 * h, 3 * h:4 * h, 2 * h:3 * h]  # i f g o -> i f o g
        scale = np.where(np.arange(4 * h) < 3 * h, 0.5, 1.0).astype(np.float32)

        def gates(name: str) -> Floats:
            return np.asarray(weights[f"lstm.{name}_l{index}"], np.float32)[order]

        bias = (gates("bias_ih") + gates("bias_hh")) * scale
        return _Layer(np.ascontiguousarray((gates("weight_ih") * scale[:, None]).T),
                      np.ascontiguousarray((gates("weight_hh") * scale[:, None]).T),
                      bias.astype(np.float32))

    def embed_mel(self, mel: Floats) -> Embedding:
        """One partial utterance's mel frames (T, 40), T = 160 as trained -> embedding."""
        steps, h = len(mel), self.hidden
        inputs: Floats = mel
        final = np.zeros(h, np.float32)
        for layer in self.layers:
            inputs, final = self._run_layer(layer, inputs, steps, h)
        raw = np.maximum(final @ self.linear_weights + self.linear_bias, 0.0)
        norm = float(np.linalg.norm(raw))
        embedding: Embedding = (raw / norm if norm > 0 else raw).astype(np.float32)
        return embedding

    @staticmethod
    def _run_layer(layer: _Layer, inputs: Floats, steps: int, h: int) -> tuple[Floats, Floats]:
        projected = inputs @ layer.input_weights
        projected += layer.bias
        outputs = np.empty((steps, h), np.float32)
        gates = np.empty(4 * h, np.float32)
        sigmoid, in_gate, forget, out_gate, cell_in = (
            gates[:3 * h], gates[:h], gates[h:2 * h], gates[2 * h:3 * h], gates[3 * h:])
        cell = np.zeros(h, np.float32)
        squashed = np.empty(h, np.float32)
        state = np.zeros(h, np.float32)
        # The hot loop: in-place ufuncs on preallocated views, no temporaries.
        for t in range(steps):
            np.dot(state, layer.hidden_weights, out=gates)
            gates += projected[t]
            np.tanh(gates, out=gates)
            sigmoid *= 0.5
            sigmoid += 0.5
            cell *= forget
            in_gate *= cell_in
            cell += in_gate
            np.tanh(cell, out=squashed)
            state = outputs[t]
            np.multiply(out_gate, squashed, out=state)
        return outputs, state

    def embed(self, samples: Floats) -> Embedding:
        """As :meth:`Ge2eEncoder.embed`."""
        mel = _utterance_mel(samples)
        starts = range(len(mel) - PARTIAL_FRAMES, -1, -PARTIAL_STEP_FRAMES)
        return mean_embedding([self.embed_mel(mel[s:s + PARTIAL_FRAMES]) for s in starts])


def cosine(a: Floats, b: Floats) -> float:
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.dot(a, b) / norm) if norm > 0 else 0.0


def mean_embedding(embeddings: list[Embedding]) -> Embedding:
    mean = np.mean(np.stack(embeddings), axis=0)
    unit: Embedding = (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)
    return unit


def learn_voice(embeddings: list[Embedding], agree: float) -> Embedding:
    """The majority voice among ``embeddings``: the medoid (the window most similar to the
    rest) and every window within ``agree`` of it, averaged. A minority of other sounds
    or voices among the first speech windows is left out instead of blurring the voice."""
    stacked = np.stack(embeddings)
    similarity = stacked @ stacked.T
    medoid = int(np.argmax(similarity.mean(axis=1)))
    members = [e for e, s in zip(embeddings, similarity[medoid], strict=True) if s >= agree]
    return mean_embedding(members)


# Fusion: the voice evidence, and the candidate's lips --------------------------------


@dataclass(frozen=True)
class VoiceEvidence:
    """What the audio says about one window.

    ``similarity``: the cosine to the candidate's voice of the least candidate-like voice
    heard in the window (None: no voice learned yet, or no voice long enough to judge).
    ``separate``: the count model told that voice apart from the candidate's (two local
    speakers whose voices differ, the other clearly nearer the candidate's; or two at
    once), or a doubtful voice is clearly nearer another person's voice heard earlier
    in the session than the candidate's. ``voices``: how many local speakers the count
    model heard in the window.
    """

    speech: bool
    similarity: float | None = None
    separate: bool = False
    voices: int = 1
    # The least candidate-like voice's embedding (count model only): a voice judged
    # another person's is remembered by the stream (see Voices.evidence's ``other``).
    voice: Embedding | None = dataclasses.field(default=None, compare=False, repr=False)


def audio_verdict(evidence: VoiceEvidence, config: SpeakersConfig) -> float | None:
    """Another voice on audio alone: 1/0, or None when there is nothing to compare.

    1 for a voice below ``match_threshold``, a voice the count model told apart from
    the candidate's (or a doubtful one recognised as another person's heard before), or
    a doubtful voice (below ``support_threshold``) in a window where the count model
    heard two voices. Before the voice is learned: 1 only for two different voices,
    else None."""
    if not evidence.speech:
        return None
    if evidence.similarity is None:
        return 1.0 if evidence.separate else None
    if evidence.similarity < config.match_threshold or evidence.separate:
        return 1.0
    doubtful = evidence.similarity < config.support_threshold
    return 1.0 if doubtful and evidence.voices > 1 else 0.0


def fuse_second_voice(evidence: VoiceEvidence, lips_moving: float | None,
                      config: SpeakersConfig) -> float:
    """Is a second person speaking? 1.0 or 0.0: the audio's verdict, with the lips as
    support only.

    - No speech in the window, or no verdict (the voice not learned and no two
      different voices heard): 0, whatever the lips did.
    - The audio says another voice (:func:`audio_verdict`): 1.
    - A doubtful voice (between ``match_threshold`` and ``support_threshold``) while
      the candidate's lips were still (moving in at most ``lips_still_share`` of the
      window's frame steps): 1.
    - Otherwise 0: at or above ``support_threshold`` the voice is the candidate's,
      whatever the lips did. Lips unknown (None: no face, mouth hidden, too small or too
      dark to measure) support nothing.
    """
    verdict = audio_verdict(evidence, config)
    if verdict is None:
        return 0.0
    if verdict >= 1.0:
        return 1.0
    still = lips_moving is not None and lips_moving <= config.lips_still_share
    similarity = evidence.similarity
    doubtful = similarity is not None and similarity < config.support_threshold
    return 1.0 if doubtful and still else 0.0


# Speech gate ----------------------------------------------------------------------


class SpeechGate:
    """Which 10 ms frames are louder than the session's noise floor: speech, for our use.

    The floor is a low percentile of the frame energies over the last ``memory_seconds``
    of audio, so it follows the room (fan, hum, mic self-noise) rather than a fixed
    level; speech has pauses enough to keep it there. A frame counts as speech when it
    is ``margin_db`` above the floor and above ``min_dbfs`` (near-digital silence never
    is). Cheap and independent of the VAD stage. It cannot tell speech from other loud
    sounds; the speaker model gives those a low similarity to any voice, which becomes
    a flag only if it lasts as long as the rule asks (seconds).
    """

    def __init__(self, margin_db: float, min_dbfs: float, memory_seconds: float = 30.0,
                 percentile: float = 10.0) -> None:
        self.margin_db = margin_db
        self.min_dbfs = min_dbfs
        self.percentile = percentile
        self._history = np.zeros(0, np.float32)  # frame levels, newest last
        self._keep = int(memory_seconds * AUDIO_RATE / FRAME_HOP)
        self.floor_dbfs = min_dbfs

    @staticmethod
    def frame_dbfs(samples: Floats) -> Floats:
        """RMS level of each whole 10 ms frame, in dBFS."""
        frames = len(samples) // FRAME_HOP
        power = np.square(samples[:frames * FRAME_HOP].reshape(frames, FRAME_HOP),
                          dtype=np.float32).mean(axis=1)
        dbfs: Floats = (10 * np.log10(power + 1e-12)).astype(np.float32)
        return dbfs

    def observe(self, samples: Floats) -> None:
        """New audio (each sample once) moves the noise floor."""
        self._history = np.concatenate([self._history, self.frame_dbfs(samples)])[-self._keep:]
        if len(self._history):
            self.floor_dbfs = float(np.percentile(self._history, self.percentile))

    def speech_share(self, window: Floats) -> float:
        """Share of the window's 10 ms frames that are speech."""
        dbfs = self.frame_dbfs(window)
        level = max(self.floor_dbfs + self.margin_db, self.min_dbfs)
        return float(np.mean(dbfs > level)) if len(dbfs) else 0.0


# Detector and stream --------------------------------------------------------------


def load_speaker_detector(config: SpeakersConfig) -> SpeakerDetector | None:
    """The detector, or None with a log line when the converted weights are missing."""
    try:
        return SpeakerDetector(config)
    except ModelMissing as exc:
        log.warning("speakers detector off (no multiple_speakers flags): %s", exc)
        return None


def _load_counter(config: SpeakersConfig) -> SegmentationModel | None:
    """The count model, or None (logged): the embedding then judges each window alone."""
    if not config.segmentation:
        return None
    try:
        return SegmentationModel(segmentation_model_path())
    except ModelMissing as exc:
        log.warning("speakers: no voice counting (embedding alone): %s", exc)
        return None


class SpeakerDetector(Detector):
    name = "speakers"
    media = "audio"

    def __init__(self, config: SpeakersConfig, path: Path | None = None,
                 counter: SegmentationModel | None = None) -> None:
        self.config = config
        self.encoder = Ge2eEncoder(path or model_path())
        self.counter = counter if counter is not None else _load_counter(config)
        self.source = f"{MODEL_VERSION}+{SEGMENTATION_VERSION}@2" if self.counter else (
            f"{MODEL_VERSION}@1")

    def enroll(self, samples: Floats) -> Embedding | None:
        """The voice a session would learn from this recording (16 kHz mono speech of the
        candidate alone), for enrolling ahead of a session; None without speech."""
        seconds = len(samples) / AUDIO_RATE
        learning = dataclasses.replace(self.config, enrollment_seconds=seconds + 1.0)
        stream = SpeakerStream(self.encoder, learning, "enrollment")
        stream.process_audio(AudioSample("enrollment", 0.0, np.asarray(samples, np.float32)))
        return stream.learn_now()

    def stream(self, context: StreamContext) -> DetectorStream:
        # A voice enrolled ahead of the session (not in StreamContext yet) wins over
        # learning it live.
        enrolled = getattr(context, "voice_enrollment", None)
        voice = None
        if enrolled is not None and np.shape(enrolled) == (EMBEDDING_SIZE,):
            voice = np.asarray(enrolled, np.float32)
        stream = SpeakerStream(self.encoder, self.config, context.session_id, voice,
                               counter=self.counter)
        stream.lips_moving = context.lip_movement
        return stream


@dataclass(frozen=True)
class _Window:
    """What one hop's window showed."""

    centre: float
    seconds: float
    speech_share: float
    speech: bool  # speech_share reached min_speech_share: the window is judged
    embedding: Embedding | None  # None: no speech, or not needed (see SpeakerStream._judge)

    @property
    def span(self) -> tuple[float, float]:
        return self.centre - self.seconds / 2, self.centre + self.seconds / 2


@dataclass(frozen=True)
class Voices:
    """One count-model window: who spoke when, and each local speaker's voice (the GE2E
    embedding of their speech alone there, when they had ``min_voice_seconds`` of it)."""

    segmentation: Segmentation
    embeddings: dict[int, Embedding]

    def heard(self, start: float, end: float, min_seconds: float) -> list[int]:
        """Local speakers talking at least ``min_seconds`` between two media times."""
        seg = self.segmentation
        return [k for k in range(LOCAL_SPEAKERS)
                if seg.seconds(seg.active(k), start, end) >= min_seconds]

    def distinct(self, a: int, b: int) -> bool:
        """Two local speakers whose voices differ (as two windows of two people do)."""
        if a not in self.embeddings or b not in self.embeddings:
            return False
        return cosine(self.embeddings[a], self.embeddings[b]) < LEARN_AGREE

    def evidence(self, start: float, end: float, voice: Embedding | None,
                 config: SpeakersConfig, other: Embedding | None = None) -> VoiceEvidence:
        """What this window says about [start, end] (a hop's window), given the voice
        and ``other``, the last voice judged another person's in this session."""
        heard = self.heard(start, end, config.other_voice_seconds)
        if not heard:
            return VoiceEvidence(speech=False)  # the count model heard nobody there
        if voice is None:
            pairs = itertools.combinations(heard, 2)
            return VoiceEvidence(True, None, any(self.distinct(a, b) for a, b in pairs),
                                 len(heard))
        judged = {k: cosine(e, voice) for k, e in self.embeddings.items()}
        present = [k for k in heard if k in judged]
        if not present:
            return VoiceEvidence(True, voices=len(heard))
        least = min(present, key=lambda k: judged[k])
        candidate = max(judged, key=lambda k: judged[k])
        overlap = self.segmentation.seconds(self.segmentation.overlap(), start, end)
        # Apart from the candidate: the count model split them, their voices differ, and
        # the other one is clearly the nearer to the candidate's voice.
        apart = (least != candidate and self.distinct(least, candidate)
                 and judged[candidate] - judged[least] >= SEPARATE_GAP)
        separate = (apart or (overlap >= config.other_voice_seconds and len(heard) > 1)
                    or self._recognised(least, judged[least], other, config))
        return VoiceEvidence(True, judged[least], separate, len(heard), self.embeddings[least])

    def _recognised(self, speaker: int, similarity: float, other: Embedding | None,
                    config: SpeakersConfig) -> bool:
        """A doubtful voice (under ``support_threshold``) clearly nearer the voice heard
        earlier as another person's than the candidate's: that person again. (The count
        model numbers speakers per window, so one talking alone for a while is otherwise
        judged afresh each window against the candidate's voice only.) A voice at or
        over ``support_threshold`` stays the candidate's."""
        if other is None or similarity >= config.support_threshold:
            return False
        return cosine(self.embeddings[speaker], other) - similarity >= SEPARATE_GAP


class SpeakerStream(DetectorStream):
    """One session: a rolling window, the candidate's voice, one observation per hop.

    With the count model, every ``segmentation_hop_seconds`` the last
    ``segmentation_window_seconds`` are segmented into local speakers and each one's
    speech alone is embedded; the hop windows in between are judged from that."""

    def __init__(self, encoder: Ge2eEncoder, config: SpeakersConfig, session_id: str,
                 voice: Embedding | None = None,
                 counter: SegmentationModel | None = None) -> None:
        self._encoder = encoder
        self._counter = counter
        self._config = config
        self._session_id = session_id
        self._gate = SpeechGate(config.speech_margin_db, config.min_speech_dbfs)
        self._window = max(WINDOW_SAMPLES, round(config.window_seconds * AUDIO_RATE))
        self._hop = max(1, round(config.hop_seconds * AUDIO_RATE))
        self._count_window = round(config.segmentation_window_seconds * AUDIO_RATE)
        self._count_hop = round(config.segmentation_hop_seconds * AUDIO_RATE)
        self._keep = max(self._window, self._count_window)
        # The current stretch of contiguous audio: its start time, samples so far, the
        # newest samples (at most a window or a count window, whichever is longer), where
        # the next window to judge ends and where the next count is due.
        self._start = 0.0
        self._total = 0
        self._buffer = np.zeros(0, np.float32)
        self._next_end = self._window
        self._next_count = self._window
        self._voices: Voices | None = None
        self._expected: float | None = None  # media time the next chunk should start at
        self.voice: Embedding | None = voice
        self._other_voice: Embedding | None = None  # the last voice judged not theirs
        self._learning: list[Embedding] = []
        # Set by the pipeline once lip movement is available (see the module docstring).
        self.lips_moving: Callable[[float, float], float | None] | None = None

    def process_audio(self, sample: AudioSample) -> list[Observation]:
        samples = np.asarray(sample.samples, np.float32)
        if self._expected is None or abs(sample.media_time - self._expected) > _MAX_GAP_SECONDS:
            self._restart(sample.media_time)  # first audio, or lost audio in between
        self._expected = sample.media_time + len(samples) / AUDIO_RATE
        self._gate.observe(samples)
        self._buffer = np.concatenate([self._buffer, samples])
        self._total += len(samples)
        observations = []
        while self._next_end <= self._total:
            started = time.perf_counter()
            stop = len(self._buffer) - (self._total - self._next_end)
            if self._counter is not None and self._next_end >= self._next_count:
                self._voices = self._count(self._buffer[max(0, stop - self._count_window):stop],
                                           self._next_end)
                self._next_count = self._next_end + self._count_hop
            window = self._judge(self._buffer[stop - self._window:stop], self._next_end)
            observations.append(self._observe(window, started))
            self._next_end += self._hop
        # Every later window ends after the newest sample, so starts within the last
        # window (or count window) of it.
        self._buffer = self._buffer[-self._keep:]
        return observations

    def _restart(self, media_time: float) -> None:
        """A window must not join sound from both sides of a gap: start filling anew."""
        self._start = media_time
        self._total = 0
        self._buffer = np.zeros(0, np.float32)
        self._next_end = self._window
        self._next_count = self._window
        self._voices = None

    def _judge(self, window: Floats, end: int) -> _Window:
        """The window's speech share, and its own embedding where anything reads it: while
        the candidate's voice is being learned (from these embeddings), and where no count
        window judges it. Once both the voice and a count are there the count's voices
        decide (:meth:`Voices.evidence`), and embedding the window too cost as much CPU
        as the count model's segmentation."""
        seconds = len(window) / AUDIO_RATE
        centre = self._start + end / AUDIO_RATE - seconds / 2
        share = self._gate.speech_share(window)
        speech = share >= self._config.min_speech_share
        needed = speech and (self.voice is None or self._voices is None)
        return _Window(centre, seconds, share, speech,
                       self._encoder.embed(window) if needed else None)

    def _count(self, audio: Floats, end: int) -> Voices | None:
        """Segment the newest audio and embed each local speaker's speech alone; None
        (nothing to count, and no cost) when the gate hears almost no speech in it. Any
        window with speech enough to judge makes at least this much of a count window."""
        assert self._counter is not None
        if self._gate.speech_share(audio) < MIN_COUNT_SPEECH:
            return None
        start = self._start + (end - len(audio)) / AUDIO_RATE
        seg = self._counter.segment(audio, start)
        voices = {}
        for speaker in range(LOCAL_SPEAKERS):
            alone = seg.solo_samples(audio, speaker)
            if len(alone) >= self._config.min_voice_seconds * AUDIO_RATE:
                voices[speaker] = _fill(alone[-VOICE_SAMPLES:])
        embedded = self._encoder.embed_many(list(voices.values())) if voices else []
        return Voices(seg, dict(zip(voices, embedded, strict=True)))

    def _evidence(self, window: _Window) -> VoiceEvidence:
        speech = window.speech
        voices = self._voices
        if not speech or voices is None:
            # No count model (or nothing counted yet): the window's embedding alone.
            similarity = None
            if speech and self.voice is not None and window.embedding is not None:
                similarity = cosine(window.embedding, self.voice)
            return VoiceEvidence(speech, similarity)
        evidence = voices.evidence(*window.span, self.voice, self._config, self._other_voice)
        if (evidence.voice is not None and evidence.similarity is not None
                and evidence.similarity < self._config.match_threshold):
            self._other_voice = evidence.voice  # clearly not the candidate: remember it
        return evidence

    def _observe(self, window: _Window, started: float) -> Observation:
        details: dict[str, Any] = {"speech_share": round(window.speech_share, 3),
                                   "speech": window.speech}
        signals: dict[str, float] = {}
        confidences: dict[str, float] = {}
        evidence = self._evidence(window)
        if self._voices is not None:
            seg = self._voices.segmentation
            signals["speaker_count"] = float(len(seg.speakers(self._config.min_voice_seconds)))
            details["overlap_seconds"] = round(seg.seconds(seg.overlap(), *window.span), 3)
        if window.embedding is not None:
            if self.voice is None:
                details["learning_voice"] = self._learn(window.embedding, window)
            else:
                signals["voice_similarity"] = round(cosine(window.embedding, self.voice), 4)
        verdict = audio_verdict(evidence, self._config)
        if verdict is not None:
            signals["second_voice_audio"] = verdict
        if evidence.similarity is not None:
            details["voice_evidence"] = {"similarity": round(evidence.similarity, 4),
                                         "separate": evidence.separate,
                                         "voices": evidence.voices}
            margin = abs(evidence.similarity - self._config.match_threshold)
            confidences["second_voice"] = round(0.5 + 0.5 * min(1.0, margin / CONFIDENT_MARGIN),
                                                3)
        lips = None
        if self.lips_moving is not None:
            lips = self.lips_moving(*window.span)
            details["lips_moving"] = lips
        signals["second_voice"] = fuse_second_voice(evidence, lips, self._config)
        return Observation(session_id=self._session_id, media_time=round(window.centre, 3),
                           detector=SpeakerDetector.name, signals=signals,
                           confidences=confidences, details=details,
                           processing_ms=(time.perf_counter() - started) * 1000)

    def _learn(self, embedding: Embedding, window: _Window) -> bool:
        """Learn from this window; False when it was left out."""
        if self._voices is not None and len(self._voices.heard(
                *window.span, self._config.other_voice_seconds)) > 1:
            return False  # two voices in this window: neither is learned from it
        self._learning.append(embedding)
        needed = max(1, round(self._config.enrollment_seconds / self._config.hop_seconds))
        if len(self._learning) >= needed:
            self.learn_now()
            log.info("session %s: candidate's voice learned", self._session_id)
        return True

    def learn_now(self) -> Embedding | None:
        """Learn the voice from the speech windows seen so far, however few."""
        if self.voice is None and self._learning:
            self.voice = learn_voice(self._learning, LEARN_AGREE)
            self._learning = []
        return self.voice


def _fill(samples: Floats) -> Floats:
    """At least one embedding partial of audio: a short stretch of one voice is repeated
    rather than padded with silence (silence would be part of the "voice")."""
    if len(samples) >= WINDOW_SAMPLES:
        return samples
    filled: Floats = np.resize(samples, WINDOW_SAMPLES)
    return filled
