"""Speakers: cost of a voice embedding, same/different voice similarities, and how well
second-voice windows match the real speaker turns.

Prints the tables behind ``detectors.speakers`` in config.yaml, all on real speech
(tests/audio_media.py: LibriVox, pyannote's two-speaker sample with its RTTM turns;
pocketsphinx-testdata's other speakers and two espeak-ng voices). Each similarity is
one 1.6 s window against a voice learned the way the stream learns it. Run from the
repository root:

    python -m bench.speakers
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import time

import numpy as np

from proctor.config import SpeakersConfig
from proctor.detectors.base import Observation
from proctor.detectors.speakers import WINDOW_SAMPLES, Embedding, SpeakerDetector
from tests import audio_media as media
from tests.audio_media import Audio, Turn
from tests.detectors.speaker_scoring import (
    CANDIDATE,
    OTHER,
    alone,
    judged,
    librivox_sessions,
    longest_run,
    other_speakers,
    run_stream,
    score_windows,
    speaker_flags,
    turn_audio,
    with_config,
)

THRESHOLDS = (0.70, 0.72, 0.74, 0.76, 0.78)


def rethreshold(observations: list[Observation], threshold: float) -> list[Observation]:
    """The same windows judged at another threshold (the learned voice does not depend on
    it, so this equals a rerun)."""
    out = []
    for o in observations:
        signals = dict(o.signals)
        if "voice_similarity" in signals:
            mismatch = float(signals["voice_similarity"] < threshold)
            signals["second_voice_audio"] = signals["second_voice"] = mismatch
        out.append(dataclasses.replace(o, signals=signals))
    return out


def stats_row(name: str, values: list[float]) -> str:
    v = np.asarray(values)
    return (f"{name:58s} {len(v):4d} {v.min():6.3f} {np.percentile(v, 5):6.3f} "
            f"{np.median(v):6.3f} {np.percentile(v, 95):6.3f} {v.max():6.3f}")


def cost(detector: SpeakerDetector, config: SpeakersConfig, speech: Audio,
         recordings: dict[str, Audio]) -> None:
    encoder = detector.encoder
    ends = range(WINDOW_SAMPLES, len(speech), media.RATE // 2)
    windows = [speech[end - WINDOW_SAMPLES:end] for end in ends]
    encoder.embed(windows[0])  # warm-up
    times = []
    for window in windows:
        started = time.perf_counter()
        encoder.embed(window)
        times.append((time.perf_counter() - started) * 1000)
    per_window = statistics.median(times)
    print(f"\nCost (OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}, "
          f"{os.cpu_count()} CPUs)")
    print(f"  one 1.6 s window (mel + LSTM + linear): median {per_window:.1f} ms, "
          f"p90 {np.percentile(times, 90):.1f} ms over {len(times)} windows")
    print(f"  per second of continuous speech ({1 / config.hop_seconds:.0f} windows/s): "
          f"{per_window / config.hop_seconds:.1f} ms")
    for name, audio in recordings.items():
        _, observations = run_stream(encoder, config, audio)
        spent = sum(o.processing_ms for o in observations)
        seconds = len(audio) / media.RATE
        print(f"  stream over {name} ({seconds:.1f} s): {spent / seconds:.1f} ms per audio "
              f"second, {len(judged(observations))}/{len(observations)} windows compared")


def similarities(detector: SpeakerDetector, config: SpeakersConfig, sample: Audio,
                 turns: list[Turn], sessions: list[Audio]) -> Embedding:
    encoder = detector.encoder
    print(f"\nWindow-to-voice cosine similarity{'':26s} {'n':>4s} {'min':>6s} {'p5':>6s} "
          f"{'median':>6s} {'p95':>6s} {'max':>6s}")
    same_libri: list[float] = []
    voices = []
    for audio in sessions:
        stream, observations = run_stream(encoder, config, audio)
        same_libri += [o.signals["voice_similarity"] for o in judged(observations)]
        voices.append(stream.voice)
    print(stats_row("same: LibriVox reader vs his learned voice (5 rotations)", same_libri))
    # Voices learned from RTTM turns: speaker90's before 15 s, speaker91's first long turn.
    v90 = _learned(detector, config, turn_audio(sample, turns, CANDIDATE, until=15.0))
    v91 = _learned(detector, config, turn_audio(sample, turns, OTHER, since=14.0, until=18.0))
    _, by90 = run_stream(encoder, config, sample, voice=v90)
    _, by91 = run_stream(encoder, config, sample, voice=v91)
    # Windows where one speaker talks alone; the "same" rows leave out the audio the
    # voice was learned from.
    print(stats_row("same: pyannote speaker90 after 15 s vs his voice",
                    [s for o, s in _sims(judged(by90))
                     if o.media_time > 15.0 and alone(turns, o.media_time, CANDIDATE)]))
    print(stats_row("same: pyannote speaker91 after 18 s vs his voice",
                    [s for o, s in _sims(judged(by91))
                     if o.media_time > 18.0 and alone(turns, o.media_time, OTHER)]))
    print(stats_row("different: pyannote speaker91 vs speaker90's voice",
                    [s for o, s in _sims(judged(by90)) if alone(turns, o.media_time, OTHER)]))
    print(stats_row("different: pyannote speaker90 vs speaker91's voice",
                    [s for o, s in _sims(judged(by91))
                     if alone(turns, o.media_time, CANDIDATE)]))
    different: list[float] = []
    for name, audio in other_speakers().items():
        values = [s for voice in voices
                  for _, s in _sims(judged(run_stream(encoder, config, audio, voice)[1]))]
        different += values
        print(stats_row(f"different: {name} vs the LibriVox voices", values))
    print(stats_row("different: pyannote's two speakers vs the LibriVox voices",
                    [s for voice in voices
                     for _, s in _sims(judged(run_stream(encoder, config, sample, voice)[1]))]))
    print(stats_row("different: all other recordings vs the LibriVox voices", different))
    return v90


def _learned(detector: SpeakerDetector, config: SpeakersConfig, audio: Audio) -> Embedding:
    """The voice the stream learns from ``audio`` (all of its speech windows)."""
    voice = detector.enroll(audio)
    assert voice is not None, "no speech to learn a voice from"
    return voice


def _sims(observations: list[Observation]) -> list[tuple[Observation, float]]:
    return [(o, o.signals["voice_similarity"]) for o in observations]


def precision_recall(detector: SpeakerDetector, config: SpeakersConfig, sample: Audio,
                     turns: list[Turn], sessions: list[Audio], v90: Embedding) -> None:
    end = len(sample) / media.RATE
    _, auto = run_stream(detector.encoder, config, sample)
    _, enrolled = run_stream(detector.encoder, config, sample, voice=v90)
    libri = [run_stream(detector.encoder, config, audio)[1] for audio in sessions]
    other_turns = [(round(s, 2), round(e, 2)) for s, e, who in turns if who == OTHER]
    print(f"\nSecond-voice windows vs pyannote's RTTM (other speaker's turns: {other_turns})")
    print("  P / R: windows with >= 0.5 s of speaker91 vs windows of speaker90 alone")
    print(f"  {'threshold':>9s}  {'voice learned live':32s}  {'voice from speaker90 turns':32s}"
          f"  LibriVox: false windows, longest run, flags")
    for threshold in THRESHOLDS:
        cells = []
        for observations in (auto, enrolled):
            judged_now = rethreshold(observations, threshold)
            score = score_windows(judged_now, turns)
            flags = [(round(f.start, 1), round(f.end or end, 1), str(f.severity))
                     for f in speaker_flags(judged_now, end)]
            cells.append(f"P {score.precision:.2f} R {score.recall:.2f} flags {flags}")
        rethresholded = [rethreshold(o, threshold) for o in libri]
        windows = [o for obs in rethresholded for o in judged(obs)]
        false_share = np.mean([o.signals["second_voice"] for o in windows])
        runs = max(longest_run(obs) for obs in rethresholded)
        libri_flags = sum(len(speaker_flags(obs, 30.0)) for obs in rethresholded)
        mark = " <- config" if abs(threshold - config.match_threshold) < 1e-9 else ""
        print(f"  {threshold:9.2f}  {cells[0]}\n  {'':9s}  {'':32s}  {cells[1]}")
        # A run of n windows lasts (n - 1) hops from its onset: the rule's 2 s takes 5.
        print(f"  {'':9s}  LibriVox: {false_share:.3f} of {len(windows)} windows, longest "
              f"run {runs} ({max(0, runs - 1) * config.hop_seconds:.1f} s), "
              f"{libri_flags} flags{mark}")


def main() -> None:
    config = with_config()
    detector = SpeakerDetector(config)
    sample, turns = media.pyannote_sample()
    sessions = librivox_sessions()
    cost(detector, config, turn_audio(sample, turns, OTHER, since=21.0),
         {"pyannote sample": sample, "LibriVox": sessions[0]})
    v90 = similarities(detector, config, sample, turns, sessions)
    precision_recall(detector, config, sample, turns, sessions, v90)


if __name__ == "__main__":
    main()
