"""Cost of the continuous evidence recording, per live session, for a few settings.

    python -m bench.evidence [--seconds 20]

Every live session encodes its camera all the time (a flag's clip is cut from that
recording, see proctor/evidence/recorder.py), so this cost is paid per session per
second. The input is webcam-like 640x480 at 15 fps (a real photo, panned, with sensor
noise); each row runs the recorder's own encoder with one setting and prints CPU
milliseconds per media second (10 ms/s = 1 % of a core) and the bitrate it reached.
The first row is the shipped default.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import replace

import av
import numpy as np

from proctor.config import EvidenceConfig
from proctor.evidence.recorder import _FrameGate, _H264Encoder

SETTINGS: list[tuple[str, EvidenceConfig]] = [
    ("default", EvidenceConfig()),
    ("scaled to 480 wide, 5 fps", replace(EvidenceConfig(), max_width=480)),
    ("640 wide, 15 fps, veryfast, 600k (earlier default)",
     replace(EvidenceConfig(), max_width=640, fps=15.0, preset="veryfast", bitrate=600_000)),
]
FPS = 15


def webcam_frames(seconds: float) -> list[av.VideoFrame]:
    from skimage import data  # bench-only dependency

    canvas = av.VideoFrame.from_ndarray(np.ascontiguousarray(data.astronaut()),
                                        format="rgb24").reformat(width=720, height=720)
    rgb = canvas.to_ndarray()
    rng = np.random.default_rng(1)
    frames = []
    for index in range(int(seconds * FPS)):
        x = int(40 + 30 * math.sin(index / 6))
        y = int(40 + 10 * math.sin(index / 8))
        crop = rgb[y : y + 480, x : x + 640].astype(np.int16)
        crop += rng.integers(-3, 4, crop.shape, dtype=np.int16)
        image = np.clip(crop, 0, 255).astype(np.uint8)
        frames.append(av.VideoFrame.from_ndarray(image, format="rgb24").reformat(
            format="yuv420p"))
    return frames


def measure(config: EvidenceConfig, frames: list[av.VideoFrame]) -> tuple[float, float]:
    """(CPU ms per media second, kbit/s) for the recorder's gate + encoder."""
    encoder, gate = _H264Encoder(config), _FrameGate(config.fps)
    size = 0
    started = time.thread_time()
    for index, frame in enumerate(frames):
        media_time = index / FPS
        if gate.accept(media_time):
            size += sum(len(p.data) for p in encoder.encode([(frame, media_time)]))
    size += sum(len(p.data) for p in encoder.flush())
    seconds = len(frames) / FPS
    return (time.thread_time() - started) * 1000 / seconds, size * 8 / seconds / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    frames = webcam_frames(args.seconds)
    print(f"evidence recording of {args.seconds:g} s of 640x480 {FPS} fps input, one thread")
    print(f"{'setting':52s} {'size':>9s} {'fps':>4s} {'preset':>9s} {'CPU ms/s':>9s} "
          f"{'% core':>7s} {'kbit/s':>7s}")
    for name, config in SETTINGS:
        cost, kbits = measure(config, frames)
        width = min(640, config.max_width)
        print(f"{name:52s} {width:>4d}x{width * 3 // 4:<4d} {config.fps:4.0f} "
              f"{config.preset:>9s} {cost:9.1f} {cost / 10:6.1f}% {kbits:7.0f}")


if __name__ == "__main__":
    main()
