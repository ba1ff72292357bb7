"""Per-stage cost of the video detectors on a 640×480 frame, and offline analysis speed.

    python -m bench.stages [--frames 200] [--video-seconds 60]

Runs every enabled video detector's stream over webcam-like frames made from real
photos (a face, then an empty room, then two people), the way a session's analysis
loop does, and prints median and p95 milliseconds per stage and for all stages
together. Then it writes a recording and times ``proctor analyze``'s pipeline on it.
Needs the test extras (scikit-image for the photos).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from proctor.config import load_config
from proctor.detectors.base import StreamContext, VideoSample
from proctor.detectors.identity import IdentityDetector
from proctor.detectors.registry import build_detectors
from proctor.pipeline.offline import analyze_video
from tests.media import empty_frame, face_frame, two_faces_frame
from tests.videos import write_video


def _frames(count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    scenes = [face_frame()] * 6 + [empty_frame()] * 2 + [two_faces_frame()] * 2
    frames = []
    for index in range(count):
        base = scenes[(index // 10) % len(scenes)]
        swayed = np.roll(base, int(rng.integers(-2, 3)), axis=1)
        frames.append(np.clip(swayed + rng.integers(-3, 4, base.shape), 0, 255)
                      .astype(np.uint8))
    return frames


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def stage_costs(count: int) -> None:
    config = load_config(env={})
    detectors = [d for d in build_detectors(config.detectors) if d.media == "video"]
    # With an enrollment, as in a real session, so the identity stage does its work.
    identity = next((d for d in detectors if isinstance(d, IdentityDetector)), None)
    enrollment = identity.embed(face_frame()).embedding if identity is not None else None
    context = StreamContext("bench", "bench", enrollment)
    streams = [(d.name, d.stream(context), d.heavy) for d in detectors]
    frames = _frames(count)
    costs: dict[str, list[float]] = {name: [] for name, _, _ in streams}
    totals: list[float] = []
    for index, image in enumerate(frames):
        sample = VideoSample("bench", index / config.pipeline.analysis_fps, image)
        frame_total = 0.0
        heavy_ran = False
        for name, stream, heavy in streams:
            if heavy and heavy_ran:
                continue  # as the pipeline does: one heavy stage per frame
            started = time.perf_counter()
            observation = stream.process(sample)
            elapsed = (time.perf_counter() - started) * 1000
            frame_total += elapsed
            heavy_ran = heavy_ran or (heavy and observation is not None)
            if observation is not None:
                sample.earlier.append(observation)  # as the pipeline does: for cascades
            if index >= 5 and observation is not None:  # the first frames build graphs
                costs[name].append(elapsed)
        if index >= 5:
            totals.append(frame_total)
    print(f"\nVideo stages on 640x480 frames ({len(totals)} frames, "
          f"{config.pipeline.analysis_fps:g} fps analysis)\n")
    print(f"{'stage':<12} {'median ms':>10} {'p95 ms':>10}")
    for name, values in costs.items():
        print(f"{name:<12} {statistics.median(values):>10.1f} {_percentile(values, 0.95):>10.1f}")
    print(f"{'all stages':<12} {statistics.median(totals):>10.1f} "
          f"{_percentile(totals, 0.95):>10.1f}")


def offline_speed(seconds: float) -> None:
    config = load_config(env={})
    detectors = build_detectors(config.detectors)
    with tempfile.TemporaryDirectory() as folder:
        video = write_video(Path(folder) / "exam.mp4",
                            [(seconds * 0.3, face_frame()), (seconds * 0.5, empty_frame()),
                             (seconds * 0.6, two_faces_frame()), (seconds, face_frame())],
                            fps=30)
        report = asyncio.run(analyze_video(video, config, detectors))
    pipeline = report["pipeline"]
    print(f"\nOffline analysis of a {seconds:g} s 640x480 30 fps recording: "
          f"{pipeline['wall_seconds']} s wall, {pipeline['speed']}x real time, "
          f"flags: {', '.join(f['kind'] for f in report['flags'])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--video-seconds", type=float, default=60.0)
    args = parser.parse_args()
    print("command: python -m bench.stages " + " ".join(sys.argv[1:]))
    stage_costs(args.frames)
    offline_speed(args.video_seconds)


if __name__ == "__main__":
    main()
