"""The report's four behavioural metrics: the meter's definitions, then a real recording
through the real stages, where all four are measured."""

from __future__ import annotations

from pathlib import Path

from proctor.config import load_config
from proctor.detectors.base import Observation
from proctor.detectors.registry import build_detectors
from proctor.pipeline.behaviour import BehaviourMeter
from proctor.pipeline.offline import analyze_video
from tests.audio_media import concat, librivox_clips
from tests.media import empty_frame, face_frame
from tests.videos import write_video


def _frame(**signals: float) -> list[Observation]:
    return [Observation("s", 0.0, "stage", signals=dict(signals))]


def test_the_meter_counts_each_metric_over_what_it_could_measure() -> None:
    meter = BehaviourMeter()
    assert set(meter.metrics().values()) == {None}  # nothing measured: no figure
    meter.frame(_frame(face_count=1, gaze_off_screen=0.0))
    meter.frame(_frame(face_count=1, gaze_off_screen=1.0))
    meter.frame(_frame(face_count=0))  # nobody: no gaze to measure, scene changed
    meter.frame(_frame(face_count=1, person_count=2.0))  # someone else in the room
    meter.frame(_frame(face_count=1, camera_blocked=1.0))  # the camera covered
    meter.frame(_frame(face_count=1))
    meter.frame(_frame(signal_without_faces=1.0))  # a frame the faces stage skipped
    meter.audio(Observation("s", 0.0, "speakers", signals={"second_voice_audio": 0.0}))
    meter.audio(Observation("s", 0.0, "speakers", signals={"second_voice_audio": 1.0}))
    meter.audio(Observation("s", 0.0, "speakers", signals={"speech_share": 0.9}))
    metrics = meter.metrics()
    assert metrics["focus"] == round(5 / 6, 4)
    assert metrics["eye_contact"] == 0.5
    # steady: frames 1, 2 and 6 (3: nobody; 4: the face count changed, and another
    # person; 5: the camera covered)
    assert metrics["environment_stability"] == 0.5
    assert metrics["audio_consistency"] == 0.5


async def test_a_real_recording_measures_all_four(tmp_path: Path) -> None:
    # One reader (LibriVox, 25 s): the first 8 s of speech teach the speaker stage her
    # voice, the rest is compared with it.
    speech = concat(*(clip for clip, _ in librivox_clips()), gap=0.3)
    seconds = len(speech) / 16_000
    video = write_video(tmp_path / "exam.mp4",
                        [(seconds - 2.0, face_frame()), (seconds, empty_frame())],
                        audio=speech)
    config = load_config(env={}, overrides={"detectors": {"transcription": {"enabled": False}}})
    report = await analyze_video(video, config, build_detectors(config.detectors))
    metrics = report["metrics"]
    assert all(metrics[name] is not None for name in
               ("focus", "eye_contact", "environment_stability", "audio_consistency")), metrics
    assert 0.5 < metrics["focus"] < 1.0  # the last 2 s show nobody
    assert metrics["environment_stability"] <= metrics["focus"]
    assert metrics["audio_consistency"] > 0.8  # one speaker, her own voice
