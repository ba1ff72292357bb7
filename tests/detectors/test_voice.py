"""Voice activity, whispering and digital silence on real and synthesized speech.

Media comes from tests/audio_media.py: real LibriVox speech (Debian
pocketsphinx-testdata), the pyannote two-speaker sample, espeak-ng voices and
whispers. Tests skip, naming the missing tool or package, where those cannot be had.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from proctor.config import ConfigError, VoiceConfig
from proctor.detectors.base import AudioSample, Observation, StreamContext
from proctor.detectors.voice import (
    WINDOW_SECONDS,
    SpeechSegment,
    VoiceDetector,
    VoiceStream,
)
from proctor.models import check, load_manifest
from tests import audio_media as media

QUESTION = "Can you tell me the answer to question four? I think it is the second one."
SENTENCES = (
    "I think the answer is the second option.",
    "Let me work through the next part carefully.",
    "That gives me forty two in the end.",
)
NORMAL_DB = -25.0  # a voice near a laptop microphone with auto gain off
WHISPER_DB = -40.0  # a whisper: about 15 dB under that


@pytest.fixture(scope="module")
def detector() -> VoiceDetector:
    return VoiceDetector(VoiceConfig())


def run(detector: VoiceDetector, audio: np.ndarray, chunk_seconds: float = 0.5,
        start: float = 0.0) -> tuple[list[Observation], list[SpeechSegment]]:
    """Feeds ``audio`` in chunks as the pipeline does; returns observations and every
    speech segment (those reported in observations, then those ``finish`` closes)."""
    stream = detector.stream(StreamContext("s1", "c1"))
    assert isinstance(stream, VoiceStream)
    size = max(1, round(chunk_seconds * media.RATE))
    observations: list[Observation] = []
    for offset in range(0, len(audio), size):
        chunk = AudioSample("s1", start + offset / media.RATE, audio[offset:offset + size])
        observations += stream.process_audio(chunk)
    segments = [SpeechSegment(s["start"], s["end"])
                for o in observations for s in o.details["segments"]]
    return observations, segments + stream.finish()


def speech_hops(observations: list[Observation]) -> list[Observation]:
    return [o for o in observations if o.signals["speech"] == 1.0]


def whisper_hops(observations: list[Observation]) -> list[Observation]:
    return [o for o in observations if o.signals["whispering"] == 1.0]


def coverage(segments: list[SpeechSegment], start: float, end: float) -> float:
    """Share of [start, end] inside some segment (10 ms resolution)."""
    grid = np.arange(start, end, 0.01)
    inside = np.zeros(len(grid), dtype=bool)
    for segment in segments:
        inside |= (grid >= segment.start) & (grid < segment.end)
    return float(np.mean(inside))


# ---- the model file ------------------------------------------------------------------

def test_model_file_matches_manifest() -> None:
    entry = next(e for e in load_manifest() if e.name == "silero_vad")
    assert entry.module == "" and entry.licence == "MIT"
    assert check(entry, verify=True).state == "ok"


# ---- real speech ---------------------------------------------------------------------

def test_librivox_reading_is_speech_without_whispers(detector: VoiceDetector) -> None:
    for audio, text in media.librivox_clips():
        duration = len(audio) / media.RATE
        observations, segments = run(detector, audio)
        assert segments, text
        # The reader speaks from ~0.3 s to the end of each clip.
        assert segments[0].start <= 0.5 and segments[-1].end >= duration - 0.5, text
        assert coverage(segments, 0.5, duration - 0.5) >= 0.9, text
        assert len(speech_hops(observations)) >= 0.8 * len(observations), text
        assert not whisper_hops(observations), text
        assert all(o.signals["audio_silent"] == 0.0 for o in observations), text


def test_pyannote_quiet_room_then_two_speakers(detector: VoiceDetector) -> None:
    audio, turns = media.pyannote_sample()
    observations, segments = run(detector, audio)
    quiet = [o for o in observations if o.media_time + WINDOW_SECONDS * 8 <= 6.6]
    assert len(quiet) >= 20
    assert len(speech_hops(quiet)) <= 1  # the first 6.7 s: a quiet room, nobody speaks
    # A quiet room is not a muted microphone: noise, not zeros.
    assert all(o.signals["audio_silent"] == 0.0 for o in observations)
    assert np.median([o.signals["audio_level_db"] for o in quiet]) < -60
    # The segments cover the annotated turns (RTTM) and little else.
    turn_time = sum(end - start for start, end, _ in turns)
    covered = sum(coverage(segments, start, end) * (end - start) for start, end, _ in turns)
    assert covered >= 0.9 * turn_time
    assert segments[0].start >= 6.5
    assert not whisper_hops(observations)


# ---- whispers ------------------------------------------------------------------------

@pytest.mark.parametrize("voice", ["en-us+whisperf", "en-us+whisper"])
@pytest.mark.parametrize("level", [-30.0, WHISPER_DB, -45.0])
def test_real_whisper_is_whispering(detector: VoiceDetector, voice: str, level: float) -> None:
    audio = media.at_level(media.espeak(QUESTION, voice), level)
    observations, _ = run(detector, audio)
    speech = speech_hops(observations)
    assert len(speech) >= 10  # the VAD hears the whisper as speech ...
    assert len(whisper_hops(speech)) >= 0.8 * len(speech)  # ... and it is a whisper
    # Only speech can be a whisper.
    assert all(o.signals["speech"] == 1.0 for o in whisper_hops(observations))


@pytest.mark.parametrize("voice", [media.MALE, media.FEMALE], ids=["male", "female"])
@pytest.mark.parametrize("level", [NORMAL_DB, -40.0])
def test_normal_voice_is_not_whispering(detector: VoiceDetector, voice: tuple[str, int],
                                        level: float) -> None:
    # A normal voice as quiet as a whisper is still voiced: quietness alone is no whisper.
    audio = media.at_level(media.espeak(" ".join(SENTENCES), *voice), level)
    observations, segments = run(detector, audio)
    assert len(speech_hops(observations)) >= 0.8 * len(observations)
    assert not whisper_hops(observations)
    assert segments


def test_whisper_under_a_voice_shows_in_its_pauses(detector: VoiceDetector) -> None:
    voice = media.concat(*(media.at_level(media.espeak(s, *media.MALE), NORMAL_DB)
                           for s in SENTENCES), gap=2.0)
    whisper = media.at_level(media.espeak(QUESTION, *media.WHISPER), WHISPER_DB)
    span = (1.5, 1.5 + len(whisper) / media.RATE)
    observations, _ = run(detector, media.mix(voice, whisper, offset_b=span[0]))
    hop = observations[1].media_time - observations[0].media_time
    whispering = whisper_hops(observations)
    assert len(whispering) >= 3  # the voice's first pause lies inside the whisper
    for o in whispering:
        assert o.media_time + hop > span[0] and o.media_time < span[1]


# ---- digital silence -----------------------------------------------------------------

def test_digital_zeros_are_audio_silent(detector: VoiceDetector) -> None:
    speech = media.at_level(media.espeak(SENTENCES[0], *media.MALE), NORMAL_DB)
    audio = media.concat(speech, media.silence(3.0))
    observations, _ = run(detector, audio)
    speech_end = len(speech) / media.RATE
    muted = [o for o in observations if o.media_time >= speech_end]
    assert len(muted) >= 10
    for o in muted:
        assert o.signals["audio_silent"] == 1.0
        assert o.signals["speech"] == 0.0
        assert o.signals["audio_level_db"] == -120.0
    talking = [o for o in observations if o.media_time + 0.3 < speech_end]
    assert talking and all(o.signals["audio_silent"] == 0.0 for o in talking)


def test_quiet_noise_is_not_audio_silent(detector: VoiceDetector) -> None:
    observations, segments = run(detector, media.noise(3.0, db=-70.0))
    assert all(o.signals["audio_silent"] == 0.0 for o in observations)
    assert not speech_hops(observations) and not segments


# ---- streaming -----------------------------------------------------------------------

def test_state_carries_across_chunks(detector: VoiceDetector) -> None:
    audio = media.concat(*(clip for clip, _ in media.librivox_clips()[:3]), gap=1.0)
    _, whole = run(detector, audio, chunk_seconds=len(audio) / media.RATE)
    for chunk_seconds in (0.5, 0.37, 0.02):
        observations, chunked = run(detector, audio, chunk_seconds=chunk_seconds)
        assert len(chunked) == len(whole) == 3
        for a, b in zip(whole, chunked, strict=True):
            assert abs(a.start - b.start) <= WINDOW_SECONDS + 1e-6
            assert abs(a.end - b.end) <= WINDOW_SECONDS + 1e-6
        times = [o.media_time for o in observations]
        assert times == sorted(times)


def test_media_time_offsets_segments(detector: VoiceDetector) -> None:
    audio = media.librivox_clips()[1][0]
    _, at_zero = run(detector, audio)
    observations, later = run(detector, audio, start=100.0)
    assert observations[0].media_time == pytest.approx(100.0)
    assert [round(s.start - 100.0, 3) for s in later] == [round(s.start, 3) for s in at_zero]


def test_gap_in_media_restarts_the_stream(detector: VoiceDetector) -> None:
    audio = media.librivox_clips()[1][0]
    stream = detector.stream(StreamContext("s1", "c1"))
    first = stream.process_audio(AudioSample("s1", 0.0, audio))
    # The track drops for 10 s and comes back: the open segment closes at its speech.
    after = stream.process_audio(AudioSample("s1", 13.0, audio))
    reported = [s for o in first + after for s in o.details["segments"]]
    assert len(reported) == 1 and reported[0]["end"] <= 3.1
    assert after[0].media_time == pytest.approx(13.0)
    (last,) = stream.finish()
    assert 13.0 < last.start < 13.5 and last.end > 15.5


def test_offline_segments_match_the_stream(detector: VoiceDetector) -> None:
    audio, _ = media.pyannote_sample()
    _, streamed = run(detector, audio)
    assert detector.speech_segments(audio) == streamed


def test_cost_per_second_of_audio(detector: VoiceDetector) -> None:
    audio = np.concatenate([clip for clip, _ in media.librivox_clips()])
    run(detector, audio[: media.RATE])  # warm up
    started = time.perf_counter()
    run(detector, audio)
    per_second_ms = (time.perf_counter() - started) * 1000 / (len(audio) / media.RATE)
    # ~3-4 ms here (VAD ~0.08 ms and voicing ~0.02 ms per 32 ms window); the bound
    # only catches a gross regression on a slow, busy CI machine.
    assert per_second_ms < 50


# ---- configuration -------------------------------------------------------------------

@pytest.mark.parametrize("bad", [
    {"threshold": 0.3, "neg_threshold": 0.4},
    {"hop_seconds": 0.0},
    {"whisper_max_voiced": 1.5},
    {"whisper_max_db": 3.0},
    {"silence_level": -1.0},
])
def test_bad_voice_config_names_the_key(bad: dict[str, float]) -> None:
    with pytest.raises(ConfigError, match=r"detectors\.voice\."):
        VoiceConfig(**bad)


# ---- through the flag rules ----------------------------------------------------------

def flag_kinds(detector: VoiceDetector, audio: np.ndarray) -> list[tuple[str, float]]:
    """(kind, start) of every flag the shipped config.yaml rules open on ``audio``."""
    from proctor.config import load_config
    from proctor.flags.rules import rules_from_config
    from proctor.flags.tracker import FlagChange, FlagTracker

    config = load_config(env={})
    tracker = FlagTracker("s1", "c1", rules_from_config(config.flags.rules),
                          config.flags.gap_seconds)
    observations, _ = run(detector, audio)
    events = [e for o in observations
              for e in tracker.update(o.media_time, o.signals, o.confidences)]
    return [(e.flag.kind, e.flag.start) for e in events if e.change == FlagChange.OPENED]


def test_flags_from_voice_signals(detector: VoiceDetector) -> None:
    whisper = media.at_level(media.espeak(QUESTION, *media.WHISPER), WHISPER_DB)
    assert [kind for kind, _ in flag_kinds(detector, whisper)] == ["whispering"]
    voice = media.at_level(media.espeak(" ".join(SENTENCES), *media.MALE), NORMAL_DB)
    assert flag_kinds(detector, voice) == []
    # A microphone muted for 8 s mid-answer: audio_lost (moderate at 5 s of silence).
    muted = media.concat(voice[: 3 * media.RATE], media.silence(8.0), voice[: 3 * media.RATE])
    ((kind, start),) = flag_kinds(detector, muted)
    assert kind == "audio_lost" and 2.9 <= start <= 3.3
