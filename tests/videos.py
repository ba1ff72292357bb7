"""Recorded test videos, made at test time from real photos."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np


def write_video(path: Path, schedule: list[tuple[float, np.ndarray]], fps: int = 15,
                duration: float | None = None) -> Path:
    """An H.264 MP4 showing each image until its time, with webcam-like noise and sway
    (so still scenes are not frozen pictures after compression)."""
    rng = np.random.default_rng(3)
    end = duration if duration is not None else schedule[-1][0]
    height, width = schedule[0][1].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(int(end * fps)):
            t = index / fps
            image = next((img for until, img in schedule if t < until), schedule[-1][1])
            swayed = np.roll(image, int(rng.integers(-2, 3)), axis=1)
            noisy = np.clip(swayed + rng.integers(-3, 4, image.shape), 0, 255).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(noisy, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
