"""Scoring the speakers stage against real speech: used by its tests and by the bench.

Audio comes from tests/audio_media.py (LibriVox, the pyannote two-speaker sample and
its RTTM turns, espeak-ng voices); the other real speakers are the short recordings that
ship beside LibriVox in Debian's pocketsphinx-testdata.

Second-voice windows are scored against the RTTM turns. A judged window (its centre
``c``, its audio ``c ± 0.8 s``) is *another voice* when the non-candidate speaker talks
for at least :data:`OTHER_MIN_SECONDS` of it, *the candidate alone* when the other
speaker does not talk in it at all, and ambiguous otherwise (a turn just starting or
ending at its edge), which counts neither way. Precision: flagged windows that are
another voice, among flagged windows that are either. Recall: flagged windows among
the judged windows that are another voice.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from proctor.config import SpeakersConfig, load_config
from proctor.detectors.base import AudioSample, Observation
from proctor.detectors.speakers import (
    WINDOW_SAMPLES,
    Embedding,
    SpeakerDetector,
    SpeakerStream,
)
from proctor.flags.model import Flag
from proctor.flags.rules import rules_from_config
from proctor.flags.tracker import FlagChange, FlagTracker
from tests import audio_media as media
from tests.audio_media import Audio, Turn

CANDIDATE, OTHER = "speaker90", "speaker91"  # pyannote's sample: who speaks first, who next
OTHER_MIN_SECONDS = 0.5
HALF_WINDOW = WINDOW_SAMPLES / media.RATE / 2


Lips = Callable[[float, float], float | None]


def still_lips(start: float, end: float) -> float:
    """A face on camera whose mouth never moves (a still or covered-but-tracked face)."""
    return 0.0


def moving_lips(start: float, end: float) -> float:
    """A face whose mouth moves as it does in speech."""
    return 0.7


def run_stream(detector: SpeakerDetector, config: SpeakersConfig, audio: Audio,
               voice: Embedding | None = None, chunk_seconds: float = 0.5,
               start: float = 0.0, lips: Lips | None = None,
               ) -> tuple[SpeakerStream, list[Observation]]:
    """Feeds ``audio`` in chunks, as the pipeline's audio path does, to a stream with
    the detector's models (the count model too, when it has one)."""
    counter = detector.counter if config.segmentation else None
    stream = SpeakerStream(detector.encoder, config, "s1", voice, counter=counter)
    stream.lips_moving = lips
    size = max(1, round(chunk_seconds * media.RATE))
    observations: list[Observation] = []
    for offset in range(0, len(audio), size):
        chunk = AudioSample("s1", start + offset / media.RATE, audio[offset:offset + size])
        observations += stream.process_audio(chunk)
    return stream, observations


def judged(observations: list[Observation]) -> list[Observation]:
    """Windows compared with a known voice (speech, after the voice was learned)."""
    return [o for o in observations
            if o.details.get("speech") and "learning_voice" not in o.details]


def talk_time(turns: list[Turn], speaker: str, start: float, end: float) -> float:
    return sum(max(0.0, min(end, e) - max(start, s)) for s, e, who in turns if who == speaker)


def window_truth(turns: list[Turn], centre: float, other: str = OTHER) -> bool | None:
    """True: another voice in the window; False: the candidate alone; None: ambiguous."""
    other_time = talk_time(turns, other, centre - HALF_WINDOW, centre + HALF_WINDOW)
    if other_time >= OTHER_MIN_SECONDS:
        return True
    return False if other_time == 0 else None


def alone(turns: list[Turn], centre: float, speaker: str) -> bool:
    """Only ``speaker`` talks in the window, for at least OTHER_MIN_SECONDS."""
    start, end = centre - HALF_WINDOW, centre + HALF_WINDOW
    others = {who for _, _, who in turns if who != speaker}
    return (talk_time(turns, speaker, start, end) >= OTHER_MIN_SECONDS
            and all(talk_time(turns, who, start, end) == 0 for who in others))


@dataclass(frozen=True)
class WindowScore:
    true_positive: int
    false_positive: int
    false_negative: int

    @property
    def precision(self) -> float:
        flagged = self.true_positive + self.false_positive
        return self.true_positive / flagged if flagged else float("nan")

    @property
    def recall(self) -> float:
        positives = self.true_positive + self.false_negative
        return self.true_positive / positives if positives else float("nan")


def score_windows(observations: list[Observation], turns: list[Turn],
                  other: str = OTHER) -> WindowScore:
    tp = fp = fn = 0
    for observation in judged(observations):
        flagged = observation.signals["second_voice"] >= 1.0
        truth = window_truth(turns, observation.media_time, other)
        if truth is True:
            tp, fn = tp + flagged, fn + (not flagged)
        elif truth is False:
            fp += flagged
    return WindowScore(tp, fp, fn)


def speaker_events(observations: list[Observation], end: float,
                   ) -> list[tuple[float, FlagChange, Flag]]:
    """multiple_speakers flag events from the shipped rule, fed the way the pipeline
    feeds audio observations (each at its own media time), with the media time of the
    observation that caused each."""
    config = load_config(env={})
    rules = tuple(r for r in rules_from_config(config.flags.rules)
                  if r.kind == "multiple_speakers")
    tracker = FlagTracker("s1", "c1", rules, gap_seconds=config.flags.gap_seconds)
    events = []
    for observation in observations:
        events += [(observation.media_time, e.change, e.flag) for e in tracker.update(
            observation.media_time, observation.signals, observation.confidences)]
    events += [(end, e.change, e.flag) for e in tracker.close_all(end)]
    return events


def speaker_flags(observations: list[Observation], end: float) -> list[Flag]:
    """The closed multiple_speakers flags (see :func:`speaker_events`)."""
    return [flag for _, change, flag in speaker_events(observations, end)
            if change == FlagChange.CLOSED]


def longest_run(observations: list[Observation]) -> int:
    """Most consecutive windows with ``second_voice`` set."""
    best = current = 0
    for observation in observations:
        current = current + 1 if observation.signals["second_voice"] >= 1.0 else 0
        best = max(best, current)
    return best


def turn_audio(audio: Audio, turns: list[Turn], speaker: str, since: float = 0.0,
               until: float = float("inf")) -> Audio:
    """The samples between ``since`` and ``until`` where ``speaker`` talks and nobody
    else does (overlaps cut out)."""
    times = np.arange(len(audio)) / media.RATE
    mine = np.zeros(len(audio), bool)
    others = np.zeros(len(audio), bool)
    for start, end, who in turns:
        inside = (times >= start) & (times < end)
        mine |= inside if who == speaker else False
        others |= inside if who != speaker else False
    keep = mine & ~others & (times >= since) & (times < until)
    return audio[keep]


def librivox_sessions() -> list[Audio]:
    """The five LibriVox sentences as one session, in each of five rotations: one real
    voice, with the voice learned from whichever sentences come first."""
    clips = [audio for audio, _ in media.librivox_clips()]
    return [np.concatenate(clips[r:] + clips[:r]) for r in range(len(clips))]


OTHER_RECORDINGS = ("goforward.raw", "numbers.raw", "something.raw", "tidigits/dhd.2934z.raw")


def other_speakers() -> dict[str, Audio]:
    """Real speakers other than the LibriVox reader (pocketsphinx-testdata's 16 kHz raw
    and wav recordings), and two espeak-ng voices."""
    folder: Path = media.librivox_dir().parent
    found = {name.split("/")[-1].removesuffix(".raw"):
             np.fromfile(folder / name, "<i2").astype(np.float32) / 32768.0
             for name in OTHER_RECORDINGS if (folder / name).is_file()}
    cards = sorted((folder / "cards").glob("*.wav"))
    if cards:
        found["cards"] = np.concatenate([media.read_wav(p) for p in cards])
    text = ("I am reading the answer to question four out loud, so listen carefully "
            "and tell me what you think about it.")
    found["espeak male"] = media.espeak(text, *media.MALE)
    found["espeak female"] = media.espeak(text, *media.FEMALE)
    return found


def with_config(**changes: Any) -> SpeakersConfig:
    return dataclasses.replace(load_config(env={}).detectors.speakers, **changes)


READING = ("The committee met on a grey morning to review the plans for the new library. "
           "Everyone agreed that the reading rooms should face the garden, and that the "
           "old oak trees along the path ought to be kept. The architect explained how "
           "the roof would collect rain for the fountains, and the treasurer read out "
           "the costs of stone, glass and timber, one line after another, until the "
           "chairman asked for a short break and a cup of tea before the vote.")
DICTATION = ("The answer to question four is the second option. Write that the function "
             "returns the sum of the list, then explain the loop in two sentences.")


def espeak_reader(voice: tuple[str, int | None]) -> Audio:
    """One synthetic voice reading a paragraph (about 30 s): a single speaker."""
    return media.espeak(READING, *voice)


@dataclass(frozen=True)
class Dictation:
    """The candidate speaks (their voice is learned), falls silent, and another voice
    speaks from ``onset`` to ``end``: someone dictating answers."""

    name: str
    audio: Audio
    onset: float
    end: float


def dictations() -> list[Dictation]:
    candidate_speech = np.concatenate([a for a, _ in media.librivox_clips()[:3]])
    cases = [("LibriVox reader, then espeak female", candidate_speech, media.FEMALE),
             ("LibriVox reader, then espeak male", candidate_speech, media.MALE),
             ("espeak male, then espeak female", espeak_reader(media.MALE), media.FEMALE)]
    out = []
    for name, own, other in cases:
        dictated = media.espeak(DICTATION, *other)
        onset = (len(own) + 3 * media.RATE) / media.RATE
        audio = media.concat(own, media.noise(3.0), dictated, media.noise(2.0, seed=1))
        out.append(Dictation(name, audio, onset, onset + len(dictated) / media.RATE))
    return out
