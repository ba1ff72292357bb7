"""A recording's sound goes through the same audio stages as a live session's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from proctor.config import load_config
from proctor.detectors.registry import build_detectors
from proctor.pipeline.offline import analyze_video
from proctor.transcript.wer import word_error_rate
from tests.audio_media import concat, librivox_clips, silence
from tests.media import empty_frame, face_frame
from tests.videos import write_video


async def _analyse(tmp_path: Path, image: np.ndarray, audio: np.ndarray) -> dict[str, Any]:
    seconds = len(audio) / 16_000
    video = write_video(tmp_path / "exam.mp4", [(seconds, image)], audio=audio)
    config = load_config(env={})
    return await analyze_video(video, config, build_detectors(config.detectors))


async def test_speech_then_a_muted_microphone(tmp_path: Path) -> None:
    # Nobody's lips in view, so the voice alone decides who speaks.
    speech, reference = librivox_clips()[0]
    report = await _analyse(tmp_path, empty_frame(), concat(speech, silence(7.0)))
    kinds = [f["kind"] for f in report["flags"]]
    assert "multiple_speakers" not in kinds and "whispering" not in kinds
    lost = [f for f in report["flags"] if f["kind"] == "audio_lost"]
    assert len(lost) == 1 and lost[0]["start"] >= len(speech) / 16_000 - 0.5
    transcript = report["transcript"]
    assert transcript["segments"] and transcript["segments"][0]["start"] < 1.0
    assert word_error_rate(reference, transcript["text"]) < 0.3


async def test_speech_while_the_candidates_lips_are_still(tmp_path: Path) -> None:
    # A voice while the face on camera never moves its mouth: still lips alone are no
    # evidence of a second voice (a still or partly hidden face is common); only a voice
    # that is not the candidate's is (tests/detectors/test_speakers.py).
    speech, _ = librivox_clips()[0]
    report = await _analyse(tmp_path, face_frame(), speech)
    assert not [f for f in report["flags"] if f["kind"] == "multiple_speakers"]
