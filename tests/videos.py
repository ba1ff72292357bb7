"""Recorded test videos, made at test time from real photos."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

AUDIO_RATE = 16_000


def write_video(path: Path, schedule: list[tuple[float, np.ndarray]], fps: int = 15,
                duration: float | None = None, audio: np.ndarray | None = None) -> Path:
    """An H.264 MP4 showing each image until its time, with webcam-like noise and sway
    (so still scenes are not frozen pictures after compression); with ``audio``
    (16 kHz mono float32 from t=0) also an AAC track."""
    rng = np.random.default_rng(3)
    end = duration if duration is not None else schedule[-1][0]
    height, width = schedule[0][1].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        sound = container.add_stream("aac", rate=AUDIO_RATE) if audio is not None else None
        for index in range(int(end * fps)):
            t = index / fps
            image = next((img for until, img in schedule if t < until), schedule[-1][1])
            swayed = np.roll(image, int(rng.integers(-2, 3)), axis=1)
            noisy = np.clip(swayed + rng.integers(-3, 4, image.shape), 0, 255).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(noisy, format="rgb24")):
                container.mux(packet)
        if sound is not None and audio is not None:
            _write_audio(container, sound, audio[: int(end * AUDIO_RATE)])
        for packet in stream.encode():
            container.mux(packet)
    return path


def _write_audio(container: av.container.OutputContainer, stream: av.AudioStream,
                 audio: np.ndarray) -> None:
    for start in range(0, len(audio), 1024):
        block = audio[start:start + 1024].astype(np.float32).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(block, format="flt", layout="mono")
        frame.sample_rate, frame.pts = AUDIO_RATE, start
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
