"""Voice: whispering and speech on real and synthesized speech, and the cost per second.

Prints the table behind the whisper settings of ``detectors.voice`` in config.yaml:
for every clip, its speech hops, how many read as whispering, and the voiced share of
the speech energy (5th percentile and median); then the detector's cost per second
of audio. Media as in the tests (tests/audio_media.py: LibriVox and the other
pocketsphinx test recordings, the pyannote sample, espeak-ng voices and whispers).
Run from the repository root:

    python -m bench.voice_whisper
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np

from proctor.config import load_config
from proctor.detectors.base import AudioSample, Observation, StreamContext
from proctor.detectors.voice import VoiceDetector
from tests import audio_media as media

TEXT = ("Can you tell me the answer to question four? I think it is the second one. "
        "The quick brown fox jumps over the lazy dog. She sells sea shells by the sea shore.")
Clip = tuple[str, str, np.ndarray]  # group ("real", "espeak", "whisper"), name, audio


def real_clips() -> Iterator[Clip]:
    for index, (audio, _) in enumerate(media.librivox_clips()):
        yield "real", f"librivox-{index}", audio
    data = media.librivox_dir().parent  # the other pocketsphinx test recordings
    for path in sorted((data / "cards").glob("*.wav")):
        yield "real", f"cards-{path.stem}", media.read_wav(path)
    for name in ("numbers", "something", "goforward", "tidigits/dhd.2934z"):
        pcm = np.fromfile(data / f"{name}.raw", dtype="<i2")  # 16 kHz 16-bit mono
        yield "real", name.rsplit("/")[-1], pcm.astype(np.float32) / 32768.0
    yield "real", "pyannote", media.pyannote_sample()[0]


def synthetic_clips() -> Iterator[Clip]:
    for level in (-25.0, -40.0):
        for label, (voice, pitch) in (("male", media.MALE), ("female", media.FEMALE)):
            audio = media.espeak(TEXT, voice, pitch)
            yield "espeak", f"{label}@{level:.0f}dB", media.at_level(audio, level)
    for level in (-30.0, -35.0, -40.0, -45.0):
        for voice in ("en-us+whisperf", "en-us+whisper"):
            audio = media.at_level(media.espeak(TEXT, voice), level)
            yield "whisper", f"{voice}@{level:.0f}dB", audio


def analyse(detector: VoiceDetector, audio: np.ndarray) -> list[Observation]:
    stream = detector.stream(StreamContext("bench", "bench"))
    chunk = media.RATE // 2
    return [o for offset in range(0, len(audio), chunk)
            for o in stream.process_audio(AudioSample("bench", offset / media.RATE,
                                                      audio[offset:offset + chunk]))]


def report(detector: VoiceDetector) -> None:
    totals: dict[str, list[int]] = {}
    print(f"{'group':8} {'clip':26} {'speech':>6} {'whisper':>7} {'voiced p5':>9} {'median':>6}")
    for group, name, audio in [*real_clips(), *synthetic_clips()]:
        speech = [o for o in analyse(detector, audio) if o.signals["speech"]]
        whispering = sum(int(o.signals["whispering"]) for o in speech)
        shares = [o.details["voiced_share"] for o in speech]
        p5, median = (np.percentile(shares, 5), np.median(shares)) if shares else (0, 0)
        print(f"{group:8} {name:26} {len(speech):6} {whispering:7} {p5:9.2f} {median:6.2f}")
        total = totals.setdefault(group, [0, 0])
        total[0] += len(speech)
        total[1] += whispering
    for group, (speech_hops, whisper_hops) in totals.items():
        print(f"{group}: {whisper_hops} of {speech_hops} speech hops whispering")


def cost(detector: VoiceDetector) -> None:
    audio = np.tile(np.concatenate([clip for clip, _ in media.librivox_clips()]), 3)
    analyse(detector, audio[: media.RATE])  # warm up
    started = time.perf_counter()
    analyse(detector, audio)
    spent = (time.perf_counter() - started) * 1000
    seconds = len(audio) / media.RATE
    print(f"cost: {spent / seconds:.2f} ms per second of audio ({seconds:.0f} s in "
          f"{spent:.0f} ms, 0.5 s chunks, one thread)")


def main() -> None:
    detector = VoiceDetector(load_config(env={}).detectors.voice)
    report(detector)
    cost(detector)


if __name__ == "__main__":
    main()
