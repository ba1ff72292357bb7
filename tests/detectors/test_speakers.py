"""The speakers stage (multiple_speakers) on real speech.

Media comes from tests/audio_media.py: one real reader (LibriVox), pyannote's sample of
two real speakers with its RTTM turns, and other real and synthetic voices. Tests skip,
naming what is missing, where those cannot be had. The floors below are the measured
figures of ``python -m bench.speakers`` less a margin (the bench prints them).
"""

from __future__ import annotations

import hashlib
import importlib.util
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from proctor.config import ConfigError, SpeakersConfig, load_config
from proctor.detectors import speakers
from proctor.detectors.base import AudioSample, StreamContext
from proctor.detectors.speakers import (
    EMBEDDING_SIZE,
    MODEL_NAME,
    WEIGHTS_NAME,
    WINDOW_SAMPLES,
    Embedding,
    Ge2eReference,
    SpeakerDetector,
    SpeakerStream,
    cosine,
    fuse_second_voice,
    load_speaker_detector,
    mel_filterbank,
    mel_frames,
    model_path,
    weights_path,
)
from proctor.models import ModelMissing, check, load_manifest
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

REPO = Path(__file__).resolve().parents[2]
HOP = 0.5


@pytest.fixture(scope="module")
def detector() -> SpeakerDetector:
    return SpeakerDetector(with_config())


@pytest.fixture(scope="module")
def config() -> SpeakersConfig:
    return with_config()


@pytest.fixture(scope="module")
def pyannote() -> tuple[Audio, list[Turn]]:
    return media.pyannote_sample()


@pytest.fixture(scope="module")
def candidate_voice(detector: SpeakerDetector, config: SpeakersConfig,
                    pyannote: tuple[Audio, list[Turn]]) -> Embedding:
    """speaker90's voice learned by a stream from his turns before 15 s (per the RTTM)."""
    audio, turns = pyannote
    return _learn(detector, config, turn_audio(audio, turns, CANDIDATE, until=15.0))


@pytest.fixture(scope="module")
def other_voice(detector: SpeakerDetector, config: SpeakersConfig,
                pyannote: tuple[Audio, list[Turn]]) -> Embedding:
    """speaker91's voice from his first long turn (14.49-17.92 s)."""
    audio, turns = pyannote
    return _learn(detector, config, turn_audio(audio, turns, OTHER, since=14.0, until=18.0))


def _learn(detector: SpeakerDetector, config: SpeakersConfig, audio: Audio) -> Embedding:
    voice = detector.enroll(audio)
    assert voice is not None
    return voice


# The model -------------------------------------------------------------------------


def test_converted_weights_match_the_manifest() -> None:
    entry = next(e for e in load_manifest() if e.name == MODEL_NAME)
    assert entry.package == "resemblyzer==0.1.4" and entry.licence == "Apache-2.0"
    assert check(entry, verify=True).state == "ok"
    assert model_path() == entry.path()


def test_mel_filterbank_is_librosas() -> None:
    """Golden figures of librosa.filters.mel(sr=16000, n_fft=400, n_mels=40) (librosa
    0.11; the whole matrix agreed to 1e-9 when this was written)."""
    bank = mel_filterbank()
    assert bank.shape == (40, 201)
    assert float(bank.sum()) == pytest.approx(0.9994971752166748, rel=1e-6)
    assert [int(bank[i].argmax()) for i in (0, 10, 20, 30, 39)] == [2, 20, 44, 94, 185]
    assert float(bank[0, 1]) == pytest.approx(0.007390209473669529, rel=1e-6)
    assert float(bank[39].max()) == pytest.approx(0.0017249403754249215, rel=1e-6)


def _plain_lstm_embedding(mel: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """torch.nn.LSTM + Linear + ReLU + L2 norm written the textbook way, from the npz:
    torch's gate order (i, f, g, o) and a real sigmoid."""
    with np.load(weights_path()) as w:
        x = mel.astype(np.float64)
        for layer in range(3):
            w_ih, w_hh = w[f"lstm.weight_ih_l{layer}"], w[f"lstm.weight_hh_l{layer}"]
            bias = w[f"lstm.bias_ih_l{layer}"] + w[f"lstm.bias_hh_l{layer}"]
            h, c, out = np.zeros(256), np.zeros(256), []
            for frame in x:
                i, f, g, o = np.split(w_ih @ frame + w_hh @ h + bias, 4)
                sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
                c = sig(f) * c + sig(i) * np.tanh(g)
                h = sig(o) * np.tanh(c)
                out.append(h)
            x = np.array(out)
        raw = np.maximum(w["linear.weight"] @ h + w["linear.bias"], 0)
    embedding: npt.NDArray[np.float64] = raw / np.linalg.norm(raw)
    return embedding


def test_fast_lstm_equals_the_textbook_one(detector: SpeakerDetector,
                                           pyannote: tuple[Audio, list[Turn]]) -> None:
    audio, _ = pyannote
    window = audio[12 * media.RATE:12 * media.RATE + WINDOW_SAMPLES]
    mel = mel_frames(speakers.normalise_volume(window))
    assert mel.shape == (160, 40)
    fast = detector.encoder.embed_mel(mel)
    assert fast.shape == (EMBEDDING_SIZE,) and fast.dtype == np.float32
    np.testing.assert_allclose(fast, _plain_lstm_embedding(mel), atol=2e-5)
    np.testing.assert_allclose(detector.encoder.embed(window), fast, atol=1e-6)


def test_embedding_ignores_the_volume(detector: SpeakerDetector,
                                      pyannote: tuple[Audio, list[Turn]]) -> None:
    audio, _ = pyannote
    window = audio[22 * media.RATE:22 * media.RATE + WINDOW_SAMPLES]
    loud, quiet = (detector.encoder.embed(media.at_level(window, db)) for db in (-18, -42))
    assert float(np.linalg.norm(loud)) == pytest.approx(1.0, abs=1e-5)
    assert cosine(loud, quiet) > 0.999


def test_converter_reproduces_the_weights(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """models/convert_ge2e.py on the resemblyzer 0.1.4 wheel gives the committed npz."""
    wheels = media.cache_dir() / "wheels"
    found = list(wheels.glob("[Rr]esemblyzer-0.1.4-*.whl"))
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d",
                        str(wheels), "resemblyzer==0.1.4"], capture_output=True, timeout=300)
        found = list(wheels.glob("[Rr]esemblyzer-0.1.4-*.whl"))
    if not found:
        pytest.skip("cannot download resemblyzer==0.1.4 (no network?)")
    spec = importlib.util.spec_from_file_location("convert_ge2e", REPO / "models/convert_ge2e.py")
    assert spec is not None and spec.loader is not None
    converter = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "convert_ge2e", converter)  # its dataclasses need it
    spec.loader.exec_module(converter)
    out = tmp_path / "ge2e.npz"
    monkeypatch.setattr(sys, "argv", ["convert_ge2e.py", "--wheel", str(found[0]),
                                      "--out", str(out)])
    converter.main()
    entry = next(e for e in load_manifest() if e.name == WEIGHTS_NAME)
    assert hashlib.sha256(out.read_bytes()).hexdigest() == entry.sha256


# Similarities on real speech -------------------------------------------------------


def test_same_voice_scores_high_and_other_voices_low(
        detector: SpeakerDetector, config: SpeakersConfig,
        pyannote: tuple[Audio, list[Turn]], candidate_voice: Embedding,
        other_voice: Embedding) -> None:
    audio, turns = pyannote
    _, observations = run_stream(detector.encoder, config, audio, voice=candidate_voice)
    windows = judged(observations)
    same = [o.signals["voice_similarity"] for o in windows
            if o.media_time > 15 and alone(turns, o.media_time, CANDIDATE)]
    other = [o.signals["voice_similarity"] for o in windows
             if alone(turns, o.media_time, OTHER)]
    # Measured: same 0.82-0.86 (n=3), the other voice 0.66-0.76, median 0.71 (n=13).
    assert len(same) >= 2 and min(same) > 0.78
    assert len(other) >= 10 and np.median(other) < 0.73 and max(other) < min(same)
    assert cosine(candidate_voice, other_voice) < 0.85  # the two voices learned apart


def test_other_real_voices_score_low_against_the_librivox_reader(
        detector: SpeakerDetector, config: SpeakersConfig) -> None:
    stream, observations = run_stream(detector.encoder, config, librivox_sessions()[0])
    assert stream.voice is not None
    own = [o.signals["voice_similarity"] for o in judged(observations)]
    assert np.median(own) > 0.78  # measured 0.81 over five rotations
    for name, audio in other_speakers().items():
        _, theirs = run_stream(detector.encoder, config, audio, voice=stream.voice)
        values = [o.signals["voice_similarity"] for o in judged(theirs)]
        assert values, name
        assert np.median(values) < 0.68, name  # measured medians 0.49-0.64


# Flags and window precision / recall -----------------------------------------------


def test_one_real_speaker_never_flags(detector: SpeakerDetector,
                                      config: SpeakersConfig) -> None:
    for audio in librivox_sessions():
        stream, observations = run_stream(detector.encoder, config, audio)
        assert stream.voice is not None
        windows = judged(observations)
        assert len(windows) >= 20
        # Measured: 10.6 % of windows under the threshold, never more than 3 in a row;
        # the rule's 2 s take 5 windows.
        assert np.mean([o.signals["second_voice"] for o in windows]) <= 0.2
        assert longest_run(observations) <= 4
        assert speaker_flags(observations, len(audio) / media.RATE) == []


def _inside_other_turn(turns: list[Turn], start: float) -> bool:
    return any(s <= start <= e for s, e, who in turns if who == OTHER)


def test_two_speakers_voice_enrolled_from_first_speakers_turns(
        detector: SpeakerDetector, config: SpeakersConfig,
        pyannote: tuple[Audio, list[Turn]], candidate_voice: Embedding) -> None:
    audio, turns = pyannote
    _, observations = run_stream(detector.encoder, config, audio, voice=candidate_voice)
    score = score_windows(observations, turns)
    assert score.precision >= 0.9  # measured 1.00
    assert score.recall >= 0.5  # measured 0.63
    flags = speaker_flags(observations, len(audio) / media.RATE)
    assert flags, "no multiple_speakers flag on two speakers"
    for flag in flags:
        assert _inside_other_turn(turns, flag.start), (flag.start, flag.end)
    assert any(21.78 <= f.start <= 28.5 for f in flags)  # speaker91's long turn


def test_two_speakers_voice_learned_live(
        detector: SpeakerDetector, config: SpeakersConfig,
        pyannote: tuple[Audio, list[Turn]], candidate_voice: Embedding,
        other_voice: Embedding) -> None:
    """No enrollment: the stream learns the first speaker (mostly speaker90 from 6.7 s,
    with two short turns of speaker91 among them) and then flags speaker91."""
    audio, turns = pyannote
    stream, observations = run_stream(detector.encoder, config, audio)
    assert stream.voice is not None
    learned_from = [o.media_time for o in observations if o.details.get("learning_voice")]
    assert learned_from and learned_from[0] > 6.5  # the quiet room is not speech
    assert cosine(stream.voice, candidate_voice) > cosine(stream.voice, other_voice) + 0.1
    score = score_windows(observations, turns)
    assert score.precision >= 0.9  # measured 1.00
    assert score.recall >= 0.3  # measured 0.43
    flags = speaker_flags(observations, len(audio) / media.RATE)
    assert flags and all(_inside_other_turn(turns, f.start) for f in flags)


# Fusion with the lips --------------------------------------------------------------


@pytest.mark.parametrize(("audio_mismatch", "speech", "lips_moving", "expected"), [
    (1.0, True, None, 1.0),  # another voice, lips unknown: audio alone
    (0.0, True, None, 0.0),  # the candidate's voice, lips unknown
    (None, True, None, 0.0),  # voice not learned yet, lips unknown: no evidence
    (1.0, False, None, 0.0),  # no speech: nobody talks
    (None, False, 0.0, 0.0),  # still lips in silence are just silence
    (0.0, True, 0.0, 1.0),  # a voice like the candidate's while their lips stay still
    (None, True, 0.0, 1.0),  # speech before the voice is learned, lips still
    (0.0, True, 0.6, 0.0),  # the candidate talking
    (1.0, True, 0.6, 1.0),  # another voice while the candidate talks too (overlap)
    (0.0, True, 0.05, 0.0),  # lips moved a little in the window: not "still"
])
def test_fuse_second_voice(audio_mismatch: float | None, speech: bool,
                           lips_moving: float | None, expected: float) -> None:
    assert fuse_second_voice(audio_mismatch, speech, lips_moving) == expected


def test_still_lips_during_speech_make_a_second_voice(
        detector: SpeakerDetector, config: SpeakersConfig,
        pyannote: tuple[Audio, list[Turn]], candidate_voice: Embedding) -> None:
    """The pipeline's lip seam: the candidate's own voice, but their mouth never moved."""
    audio = pyannote[0][11 * media.RATE:14 * media.RATE]  # speaker90 (the candidate) alone
    asked: list[tuple[float, float]] = []

    def still(start: float, end: float) -> float:
        asked.append((start, end))
        return 0.0

    stream = SpeakerStream(detector.encoder, config, "s1", candidate_voice)
    stream.lips_moving = still
    observations = stream.process_audio(AudioSample("s1", 11.0, audio))
    assert observations and all(o.signals["second_voice_audio"] == 0.0 for o in observations)
    assert all(o.signals["second_voice"] == 1.0 for o in observations)
    for (start, end), o in zip(asked, observations, strict=True):
        assert end - start == pytest.approx(WINDOW_SAMPLES / media.RATE)
        assert (start + end) / 2 == pytest.approx(o.media_time, abs=1e-3)
    stream.lips_moving = lambda start, end: 0.7  # now the candidate is talking
    more = stream.process_audio(AudioSample("s1", 14.0, pyannote[0][14 * media.RATE:
                                                                    14 * media.RATE + 8000]))
    assert [o.signals["second_voice"] for o in more] == [0.0]


# Stream mechanics ------------------------------------------------------------------


def test_chunk_size_does_not_change_the_windows(
        detector: SpeakerDetector, config: SpeakersConfig,
        pyannote: tuple[Audio, list[Turn]], candidate_voice: Embedding) -> None:
    audio = pyannote[0][12 * media.RATE:18 * media.RATE]
    runs = [run_stream(detector.encoder, config, audio, candidate_voice, chunk, start=12.0)[1]
            for chunk in (0.5, 0.32, 6.0)]
    signals = [[(o.media_time, o.signals) for o in obs] for obs in runs]
    assert signals[0] == signals[1] == signals[2]
    # One window per hop, each reported at its centre.
    times = [o.media_time for o in runs[0]]
    first = 12.0 + WINDOW_SAMPLES / media.RATE / 2
    assert times == pytest.approx([first + k * HOP for k in range(len(times))], abs=1e-3)


def test_a_gap_restarts_the_window(detector: SpeakerDetector, config: SpeakersConfig,
                                   pyannote: tuple[Audio, list[Turn]],
                                   candidate_voice: Embedding) -> None:
    audio = pyannote[0]
    stream = SpeakerStream(detector.encoder, config, "s1", candidate_voice)
    before = stream.process_audio(AudioSample("s1", 11.0, audio[11 * media.RATE:14 * media.RATE]))
    after = stream.process_audio(AudioSample("s1", 20.0, audio[20 * media.RATE:23 * media.RATE]))
    assert before and after
    assert max(o.media_time for o in before) + 0.8 <= 14.0  # no window reaches past the audio
    assert min(o.media_time for o in after) - 0.8 >= 20.0 - 1e-3  # none joins both sides


def test_no_speech_no_verdict(detector: SpeakerDetector, config: SpeakersConfig) -> None:
    room = media.noise(6.0, db=-60.0)
    stream, observations = run_stream(detector.encoder, config, room)
    assert len(observations) >= 8
    assert all(o.signals == {"second_voice": 0.0} for o in observations)
    assert stream.voice is None  # noise was not learned as the candidate
    _, silent = run_stream(detector.encoder, config, media.silence(4.0))
    assert all(o.signals == {"second_voice": 0.0} for o in silent)


def test_voice_enrolled_ahead_of_the_session_is_used(detector: SpeakerDetector,
                                                     candidate_voice: Embedding) -> None:
    @dataclass(frozen=True)
    class VoiceContext(StreamContext):
        voice_enrollment: Embedding | None = None

    enrolled = detector.stream(VoiceContext("s1", "c1", voice_enrollment=candidate_voice))
    assert isinstance(enrolled, SpeakerStream)
    assert enrolled.voice is not None and cosine(enrolled.voice, candidate_voice) > 0.9999
    plain = detector.stream(StreamContext("s1", "c1"))
    assert isinstance(plain, SpeakerStream) and plain.voice is None


def test_embedding_cost(detector: SpeakerDetector, pyannote: tuple[Audio, list[Turn]]) -> None:
    """About 9-10 ms a window on one idle core (bench/speakers.py); generous here, as
    the test machine may be busy."""
    import time

    window = pyannote[0][22 * media.RATE:22 * media.RATE + WINDOW_SAMPLES]
    detector.encoder.embed(window)
    times = []
    for _ in range(5):
        started = time.perf_counter()
        detector.encoder.embed(window)
        times.append(time.perf_counter() - started)
    assert np.median(times) < 0.25


# Configuration and loading ---------------------------------------------------------


@pytest.mark.parametrize(("key", "value"), [
    ("match_threshold", 1.5), ("window_seconds", 1.0), ("hop_seconds", 0.0),
    ("hop_seconds", 3.0), ("enrollment_seconds", 0.0), ("min_speech_share", 1.5),
    ("speech_margin_db", -1.0), ("min_speech_dbfs", 3.0),
])
def test_bad_values_name_their_key(key: str, value: float) -> None:
    with pytest.raises(ConfigError, match=f"detectors.speakers.{key}"):
        load_config(env={}, overrides={"detectors": {"speakers": {key: value}}})


def test_missing_weights_switch_the_detector_off(monkeypatch: pytest.MonkeyPatch,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    def missing() -> Path:
        raise ModelMissing("ge2e_speaker.npz not found")

    monkeypatch.setattr(speakers, "model_path", missing)
    assert load_speaker_detector(SpeakersConfig()) is None
    assert "speakers detector off" in caplog.text


def test_the_onnx_graph_is_the_numpy_forward_pass(detector: SpeakerDetector,
                                                  pyannote: tuple[Audio, list[Turn]]) -> None:
    """models/ge2e_speaker.onnx (what runs) against the numpy weights it was built from,
    on real speech: one partial, and several batched in one call."""
    audio, _ = pyannote
    reference = Ge2eReference(weights_path())
    window = audio[5 * media.RATE:5 * media.RATE + 3 * WINDOW_SAMPLES]
    np.testing.assert_allclose(detector.encoder.embed(window), reference.embed(window),
                               atol=1e-5)
    mel = mel_frames(speakers.normalise_volume(window[:WINDOW_SAMPLES]))
    np.testing.assert_allclose(detector.encoder.embed_mel(mel), reference.embed_mel(mel),
                               atol=1e-5)
