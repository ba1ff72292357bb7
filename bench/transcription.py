"""Transcription: real-time factor and word error rate on real speech.

Prints, per clip, the real-time factor (wall seconds per second of audio, the median of
``--repeat`` warm runs), the CPU seconds it took per second of audio (all threads), and
the word error rate against the clip's
transcript: the five LibriVox sentences (one reader, Debian pocketsphinx-testdata) and
the 30 s phone call of pyannote's sample (two speakers, its speech from 6.7 s on). The
figures behind ``detectors.transcription`` in config.yaml. Run from the repository root:

    python -m bench.transcription [--model tiny.en] [--threads 2] [--beam-size 1]

Target: median RTF <= 0.2 for tiny.en int8 on 2 threads (a 2-core machine then
transcribes one session's speech in a fifth of its length).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from proctor.config import TranscriptionConfig
from proctor.transcript.model import SAMPLE_RATE, WhisperTranscriber, resolve_model_dir
from proctor.transcript.wer import WordErrors, word_errors
from tests.audio_media import librivox_clips, pyannote_sample, pyannote_transcript

CALL_SPEECH_FROM = 6.6  # the call's first 6.7 s are a quiet room


def _clips() -> list[tuple[str, np.ndarray, str]]:
    clips = [(" ".join(text.split()[:4]) + " …", audio, text)
             for audio, text in librivox_clips()]
    audio, _ = pyannote_sample()
    call = " ".join(line[3] for line in pyannote_transcript())
    clips.append(("phone call (2 speakers)", audio[round(CALL_SPEECH_FROM * SAMPLE_RATE):],
                  call))
    return clips


def _measure(model: WhisperTranscriber, audio: np.ndarray,
             repeat: int) -> tuple[float, float, str]:
    """(median real-time factor, median CPU seconds per audio second, transcript) over
    ``repeat`` runs after one warm-up. CPU time counts every thread of the process, so it
    stays meaningful on a machine busy with other work, where wall time does not."""
    text = " ".join(s.text for s in model.transcribe(audio, 0.0))
    seconds = len(audio) / SAMPLE_RATE
    walls, cpus = [], []
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        model.transcribe(audio, 0.0)
        walls.append((time.perf_counter() - wall) / seconds)
        cpus.append((time.process_time() - cpu) / seconds)
    return statistics.median(walls), statistics.median(cpus), text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--compute-type", default="int8")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--beam-size", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    config = TranscriptionConfig(model=args.model, compute_type=args.compute_type,
                                 cpu_threads=args.threads, beam_size=args.beam_size)
    with tempfile.TemporaryDirectory() as data_dir:
        model = WhisperTranscriber(resolve_model_dir(config, Path(data_dir)), config)
        _report(model, config, args.repeat)
        model.close()


def _report(model: WhisperTranscriber, config: TranscriptionConfig, repeat: int) -> None:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"Whisper {config.model}, {config.compute_type}, {config.cpu_threads} threads, "
          f"beam {config.beam_size}; medians of {repeat} warm runs; {os.cpu_count()} CPUs, "
          f"load average {load}\n")
    print(f"{'clip':<28} {'audio s':>7} {'RTF':>6} {'CPU s/s':>7} {'WER':>6}  transcript")
    librivox_rtf: list[float] = []
    librivox_wer = WordErrors(0, 0)
    for index, (name, audio, reference) in enumerate(_clips()):
        rtf, cpu, text = _measure(model, audio, repeat)
        errors = word_errors(reference, text)
        print(f"{name:<28} {len(audio) / SAMPLE_RATE:>7.2f} {rtf:>6.3f} {cpu:>7.3f} "
              f"{errors.rate:>6.3f}  {text}")
        if index < 5:
            librivox_rtf.append(rtf)
            librivox_wer += errors
        else:
            call_rtf, call_wer = rtf, errors
    print(f"\nLibriVox: median RTF {statistics.median(librivox_rtf):.3f}, WER "
          f"{librivox_wer.rate:.3f} ({librivox_wer.errors} errors in "
          f"{librivox_wer.reference_words} words)")
    print(f"Phone call: RTF {call_rtf:.3f}, WER {call_wer.rate:.3f} ({call_wer.errors} errors "
          f"in {call_wer.reference_words} words)")


if __name__ == "__main__":
    main()
