"""Speakers: what multiple_speakers costs and how often it is right, on real speech.

Prints the tables behind ``detectors.speakers`` in config.yaml (tests/audio_media.py
media: LibriVox, pyannote's two-speaker sample with its RTTM turns, pocketsphinx-
testdata's other speakers, espeak-ng voices):

1. cost: one GE2E embedding, one count-model (segmentation) window, and the whole
   stream per second of audio;
2. window-to-voice similarities (1.6 s windows, and each local speaker's voice in a
   count window) for the same and for other voices;
3. single speaker, any face: multiple_speakers flags per hour with the candidate's lips
   moving, still (a still face, a hand or mask the mesh still tracks) and unknown
   (mouth hidden, no face);
4. two speakers: second-voice windows against pyannote's RTTM (precision, recall);
5. dictation: the candidate's voice learned, then they fall silent while another
   voice speaks.

Run from the repository root:

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
from proctor.detectors.segmentation import MIN_SAMPLES
from proctor.detectors.speakers import WINDOW_SAMPLES, Embedding, SpeakerDetector
from proctor.flags.tracker import FlagChange
from tests import audio_media as media
from tests.audio_media import Audio, Turn
from tests.detectors.speaker_scoring import (
    CANDIDATE,
    OTHER,
    Lips,
    alone,
    dictations,
    espeak_reader,
    judged,
    librivox_sessions,
    longest_run,
    moving_lips,
    other_speakers,
    run_stream,
    score_windows,
    speaker_events,
    speaker_flags,
    still_lips,
    talk_time,
    turn_audio,
    with_config,
)

LIPS: dict[str, Lips | None] = {"lips moving": moving_lips, "lips still": still_lips,
                                "lips unknown": None}


def stats_row(name: str, values: list[float]) -> str:
    if not values:
        return f"{name:58s}    0"
    v = np.asarray(values)
    return (f"{name:58s} {len(v):4d} {v.min():6.3f} {np.percentile(v, 5):6.3f} "
            f"{np.median(v):6.3f} {np.percentile(v, 95):6.3f} {v.max():6.3f}")


def _median_ms(call: object, inputs: list[Audio]) -> float:
    assert callable(call)
    call(inputs[0])  # warm-up
    times = []
    for item in inputs:
        # CPU time of this thread (onnxruntime runs one-thread models on the caller's
        # thread): what a run costs, whatever else the machine is doing.
        started = time.thread_time()
        call(item)
        times.append((time.thread_time() - started) * 1000)
    return statistics.median(times)


def cost(detector: SpeakerDetector, config: SpeakersConfig, speech: Audio,
         recordings: dict[str, Audio]) -> None:
    ends = range(WINDOW_SAMPLES, len(speech), media.RATE // 2)
    windows = [speech[end - WINDOW_SAMPLES:end] for end in ends]
    print(f"\nCost (one thread per model run, {os.cpu_count()} CPUs; load average "
          f"{os.getloadavg()[0]:.1f} when it started)")
    embed = _median_ms(detector.encoder.embed, windows)
    print(f"  one 1.6 s GE2E window (mel + LSTM + linear): median {embed:.1f} ms")
    if detector.counter is not None:
        size = round(config.segmentation_window_seconds * media.RATE)
        chunks = [speech[s:s + size] for s in range(0, len(speech) - size, media.RATE)]
        chunks = [c for c in chunks if len(c) >= MIN_SAMPLES] or [speech[:size]]
        seg = _median_ms(detector.counter.segment, chunks)
        print(f"  one {config.segmentation_window_seconds:.0f} s segmentation window: "
              f"median {seg:.1f} ms (every {config.segmentation_hop_seconds:.1f} s)")
    for name, audio in recordings.items():
        started = time.thread_time()
        _, observations = run_stream(detector, config, audio)
        spent = (time.thread_time() - started) * 1000
        seconds = len(audio) / media.RATE
        print(f"  whole stream over {name} ({seconds:.1f} s): {spent / seconds:.1f} ms of "
              f"CPU per second of audio, {len(judged(observations))}/{len(observations)} "
              "windows compared")


def _learned(detector: SpeakerDetector, audio: Audio) -> Embedding:
    voice = detector.enroll(audio)
    assert voice is not None, "no speech to learn a voice from"
    return voice


def _window_sims(observations: list[Observation]) -> list[tuple[Observation, float]]:
    return [(o, o.signals["voice_similarity"]) for o in judged(observations)]


def _voice_sims(observations: list[Observation]) -> list[tuple[Observation, float]]:
    """The similarity of the voice that decided each window (a count-model voice)."""
    return [(o, o.details["voice_evidence"]["similarity"]) for o in judged(observations)
            if "voice_evidence" in o.details]


def similarities(detector: SpeakerDetector, config: SpeakersConfig, sample: Audio,
                 turns: list[Turn], sessions: list[Audio]) -> Embedding:
    print(f"\nCosine similarity to the candidate's voice{'':17s} {'n':>4s} {'min':>6s} "
          f"{'p5':>6s} {'median':>6s} {'p95':>6s} {'max':>6s}")
    v90 = _learned(detector, turn_audio(sample, turns, CANDIDATE, until=15.0))
    # A window's own embedding decides only without the count model (with it, windows
    # are embedded only while the voice is learned): those rows run without it.
    windows_only = dataclasses.replace(config, segmentation=False)
    for label, pick, setup in (("1.6 s window", _window_sims, windows_only),
                               ("count-model voice", _voice_sims, config)):
        _, by90 = run_stream(detector, setup, sample, voice=v90)
        libri = [run_stream(detector, setup, audio)[1] for audio in sessions]
        same = [s for obs in libri for _, s in pick(obs)]
        print(stats_row(f"same: LibriVox reader, {label}", same))
        print(stats_row(f"same: pyannote speaker90 after 15 s, {label}",
                        [s for o, s in pick(by90)
                         if o.media_time > 15.0 and alone(turns, o.media_time, CANDIDATE)]))
        print(stats_row(f"different: pyannote speaker91 vs speaker90, {label}",
                        [s for o, s in pick(by90) if alone(turns, o.media_time, OTHER)]))
        voice = run_stream(detector, setup, sessions[0])[0].voice
        different = [s for audio in other_speakers().values()
                     for _, s in pick(run_stream(detector, setup, audio, voice)[1])]
        print(stats_row(f"different: 6 other voices vs LibriVox, {label}", different))
    return v90


def _flag_summary(observations: list[Observation], seconds: float) -> tuple[int, float]:
    flags = speaker_flags(observations, seconds)
    return len(flags), len(flags) / seconds * 3600


# Where the stream's 0.5 s window grid falls in the speech: each recording also runs with
# its first 0.1-0.4 s cut, as a session that started a moment earlier or later would hear
# it. The verdicts depend on it (which windows the voice is learned from, where each count
# window starts), so one alignment alone is luck, good or bad.
PHASES = (0.0, 0.1, 0.2, 0.3, 0.4)


def phased(audios: list[Audio]) -> list[Audio]:
    return [a[round(phase * media.RATE):] for a in audios for phase in PHASES]


def single_speaker(detector: SpeakerDetector, config: SpeakersConfig,
                   sessions: list[Audio]) -> None:
    recordings = {"LibriVox reader (5 rotations)": phased(sessions),
                  "espeak-ng male reading": phased([espeak_reader(media.MALE)]),
                  "espeak-ng female reading": phased([espeak_reader(media.FEMALE)])}
    print("\nOne speaker, any face: multiple_speakers flags (voice learned live; each "
          f"recording at {len(PHASES)} alignments of the window grid, "
          f"{', '.join(f'{p:.1f}' for p in PHASES)} s in)")
    print(f"  {'recording':32s} {'audio':>7s}  " + "  ".join(f"{k:>34s}" for k in LIPS))
    print(f"  {'':32s} {'':7s}  " + "  ".join(f"{'flags  per hour  windows  run':>34s}"
                                               for _ in LIPS))
    total_seconds, total_flags = 0.0, dict.fromkeys(LIPS, 0)
    for name, audios in recordings.items():
        seconds = sum(len(a) for a in audios) / media.RATE
        cells = []
        for key, lips in LIPS.items():
            runs = [run_stream(detector, config, a, lips=lips)[1] for a in audios]
            flags = sum(len(speaker_flags(obs, len(a) / media.RATE))
                        for obs, a in zip(runs, audios, strict=True))
            windows = [o for obs in runs for o in judged(obs)]
            share = np.mean([o.signals["second_voice"] for o in windows]) if windows else 0.0
            total_flags[key] += flags
            cells.append(f"{flags:5d} {flags / seconds * 3600:9.1f} {share:8.3f} "
                         f"{max(longest_run(obs) for obs in runs):4d}")
        total_seconds += seconds
        print(f"  {name:32s} {seconds:6.1f}s  " + "  ".join(f"{c:>34s}" for c in cells))
    print(f"  all {total_seconds:.0f} s: " + ", ".join(
        f"{k} {n} flags ({n / total_seconds * 3600:.1f}/h)" for k, n in total_flags.items()))
    print("  audio: all alignments together; windows: share of compared windows read as a "
          "second voice; run: most in a row (the rule's 2 s take 5)")


def two_speakers(detector: SpeakerDetector, config: SpeakersConfig, sample: Audio,
                 turns: list[Turn], v90: Embedding) -> None:
    end = len(sample) / media.RATE
    other_turns = [(round(s, 2), round(e, 2)) for s, e, who in turns if who == OTHER]
    print(f"\nTwo speakers: second-voice windows vs pyannote's RTTM (speaker91: {other_turns})")
    print("  a window is positive with >= 0.5 s of speaker91 in it, negative with none")
    def candidate_lips(start: float, end: float) -> float:
        """speaker90 is the candidate on camera: his mouth moves while he talks."""
        return 0.7 if talk_time(turns, CANDIDATE, start, end) >= 0.3 else 0.0

    print(f"  {'voice':46s} {'lips':22s}")
    for name, voice in (("enrolled from speaker90's turns < 15 s", v90),
                        ("learned live", None)):
        for lips_name, lips in (("unknown", None), ("speaker90's, per RTTM", candidate_lips)):
            _, observations = run_stream(detector, config, sample, voice=voice, lips=lips)
            score = score_windows(observations, turns)
            flags = [(round(f.start, 1), round(f.end or end, 1), str(f.severity))
                     for f in speaker_flags(observations, end)]
            print(f"  {name:46s} {lips_name:22s} precision {score.precision:.2f} recall "
                  f"{score.recall:.2f} (TP {score.true_positive} FP {score.false_positive} "
                  f"FN {score.false_negative})\n  {'':69s} flags {flags}")


def dictation(detector: SpeakerDetector, config: SpeakersConfig) -> None:
    print("\nDictation: the candidate's voice learned, then silent while another voice "
          "speaks (rule: moderate after 2 s, high after 5 s)")
    print(f"  {'case':38s} {'lips':12s} {'other voice':>13s} {'before':>6s} "
          f"{'moderate at':>11s} {'high at':>8s}")
    for case in dictations():
        seconds = len(case.audio) / media.RATE
        for key, lips in (("lips still", still_lips), ("lips unknown", None)):
            _, observations = run_stream(detector, config, case.audio, lips=lips)
            events = speaker_events(observations, seconds)
            early = sum(1 for _, change, f in events
                        if change == FlagChange.CLOSED and f.start < case.onset - 0.8)
            opened = [t for t, change, f in events if change == FlagChange.OPENED
                      and f.start >= case.onset - 0.8]
            high = [t for t, change, f in events if str(f.severity) == "high"
                    and change != FlagChange.CLOSED and f.start >= case.onset - 0.8]
            print(f"  {case.name:38s} {key:12s} {case.onset:5.1f}-{case.end:4.1f} s "
                  f"{early:6d} {_after(opened, case.onset):>11s} "
                  f"{_after(high, case.onset):>8s}")
    print("  before: flags that started before the other voice; at: media time after its "
          "onset when the flag opened / turned high")


def _after(times: list[float], onset: float) -> str:
    """Seconds of audio after ``onset`` when the first of ``times`` was known.
    Observations carry their window's centre; the window ended half a window later."""
    lag = WINDOW_SAMPLES / media.RATE / 2
    return f"+{times[0] + lag - onset:.1f} s" if times else "never"


def main() -> None:
    config = with_config()
    detector = SpeakerDetector(config)
    sample, turns = media.pyannote_sample()
    sessions = librivox_sessions()
    cost(detector, config, turn_audio(sample, turns, OTHER, since=21.0),
         {"pyannote sample": sample, "LibriVox": sessions[0]})
    v90 = similarities(detector, config, sample, turns, sessions)
    single_speaker(detector, config, sessions)
    two_speakers(detector, config, sample, turns, v90)
    dictation(detector, config)


if __name__ == "__main__":
    main()
