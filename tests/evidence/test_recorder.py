"""EvidenceRecorder with real frames, a real libx264 encoder and real MP4 files.

Every synthetic frame carries its own index as a row of black/white blocks (robust to
lossy coding), so a decoded clip tells exactly which media times it covers.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import shutil
import statistics
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest

from proctor.config import EvidenceConfig
from proctor.evidence import EvidenceRecorder
from proctor.evidence.recorder import ENCODE_BATCH_SECONDS, encoded_size
from proctor.store.base import ClipRecord

FPS = 15.0
WIDTH, HEIGHT = 320, 240
INDEX_BITS = 10  # frame numbers up to 1023 (68 s at 15 fps)
# The recorder at 15 fps, so every pushed frame can be read back.
CONFIG = EvidenceConfig(fps=15.0)  # pre 2, post 2, max 60, keyframe 1 s
EPS = 1e-6


# -- synthetic video -------------------------------------------------------------------

def make_frame(index: int, width: int = WIDTH, height: int = HEIGHT) -> av.VideoFrame:
    """A gradient with a moving square and the index as INDEX_BITS blocks on top."""
    xs = np.linspace(0, 255, width, dtype=np.float32)
    image = np.empty((height, width, 3), dtype=np.uint8)
    image[...] = np.stack([xs, xs[::-1], np.full_like(xs, 96)], axis=-1).astype(np.uint8)
    side = height // 4
    x = (index * 7) % (width - side)
    image[height // 2 : height // 2 + side, x : x + side] = (250, 40, 40)
    cell = width // (INDEX_BITS + 2)
    for bit in range(INDEX_BITS):
        value = 255 if index >> bit & 1 else 0
        image[:cell, bit * cell : (bit + 1) * cell] = value
    # WebRTC hands over yuv420p frames; convert like a decoder output would look.
    return av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")


def read_index(frame: av.VideoFrame) -> int:
    gray = frame.to_ndarray(format="gray").astype(np.float32)
    cell = frame.width // (INDEX_BITS + 2)
    index = 0
    for bit in range(INDEX_BITS):
        block = gray[2 : cell - 2, bit * cell + 2 : (bit + 1) * cell - 2]
        if block.mean() > 128:
            index |= 1 << bit
    return index


# -- harness -----------------------------------------------------------------------------

class Clips:
    def __init__(self) -> None:
        self.records: list[ClipRecord] = []

    async def __call__(self, record: ClipRecord) -> None:
        self.records.append(record)

    async def wait_for(self, count: int, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.records) < count:
            assert time.monotonic() < deadline, f"only {len(self.records)} clips"
            await asyncio.sleep(0.005)


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="evidence-test")
    yield pool
    pool.shutdown(wait=True)


@pytest.fixture
def clips() -> Clips:
    return Clips()


@pytest.fixture
async def recorder(
    tmp_path: Path, executor: ThreadPoolExecutor, clips: Clips
) -> AsyncIterator[EvidenceRecorder]:
    rec = EvidenceRecorder("sess-1", CONFIG, tmp_path / "clips", executor, clips,
                           batch_seconds=0.0)  # a job per frame: tests step frame by frame
    yield rec
    await rec.aclose()


async def wait_encoded(rec: EvidenceRecorder, media_time: float, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while rec.newest_media_time is None or rec.newest_media_time < media_time - EPS:
        assert time.monotonic() < deadline, f"encoder stuck at {rec.newest_media_time}"
        await asyncio.sleep(0.001)


async def feed(rec: EvidenceRecorder, indices: Iterable[int], fps: float = FPS,
               size: tuple[int, int] = (WIDTH, HEIGHT)) -> None:
    """Push frames in small chunks, letting the encoder keep up (no drops)."""
    chunk: list[int] = []
    for index in indices:
        rec.push_video(make_frame(index, *size), index / fps)
        chunk.append(index)
        if len(chunk) == 10:
            await wait_encoded(rec, chunk[-1] / fps - 1 / CONFIG.fps)
            chunk.clear()
    if chunk:
        await wait_encoded(rec, chunk[-1] / fps - 1 / CONFIG.fps)


def decode_clip(path: Path) -> tuple[list[int], list[float]]:
    """Frame indices and clip timestamps; asserts the stream is browser-shaped H.264."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.pix_fmt == "yuv420p"
        extradata = stream.codec_context.extradata or b""
        assert extradata[:1] == b"\x01", "extradata must be an avcC record"
        assert extradata[5] & 0x1F >= 1, "avcC must carry an SPS"
        packets = frames = 0
        indices: list[int] = []
        times: list[float] = []
        for packet in container.demux(stream):
            if packet.size == 0:
                continue  # the demuxer's end-of-stream marker
            packets += 1
            for frame in packet.decode():
                frames += 1
                indices.append(read_index(frame))
                times.append(float(frame.time or 0.0))
        for frame in stream.codec_context.decode(None):
            frames += 1
            indices.append(read_index(frame))
            times.append(float(frame.time or 0.0))
    assert packets > 0
    assert frames == packets, "every packet must decode to a frame"
    return indices, times


def ffprobe(path: Path) -> dict[str, str] | None:
    if shutil.which("ffprobe") is None:
        return None
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-of", "json", str(path)],
        check=True, capture_output=True, text=True,
    ).stdout
    stream: dict[str, str] = json.loads(out)["streams"][0]
    return stream


# -- tests -----------------------------------------------------------------------------

async def test_clip_covers_flag_with_padding(
    recorder: EvidenceRecorder, clips: Clips, tmp_path: Path
) -> None:
    await feed(recorder, range(0, 75))  # up to t=4.93: the flag is raised late, as in life
    recorder.open_clip("clip-a", "flag-a", start=4.0)
    await feed(recorder, range(75, 98))  # to 6.47
    recorder.close_clip("clip-a", end=6.0)
    await feed(recorder, range(98, 180))  # to 11.93
    await clips.wait_for(1)  # written once media reached 8.0, before aclose

    record = clips.records[0]
    path = tmp_path / "clips" / "clip-a.mp4"
    assert record.path == str(path) and path.is_file()
    assert (record.clip_id, record.session_id, record.flag_id) == ("clip-a", "sess-1", "flag-a")
    assert record.size_bytes == path.stat().st_size
    assert record.content_type == "video/mp4" and record.created_at.endswith("Z")
    await recorder.aclose()  # the clip's journal goes once the clip is stored
    assert [p.name for p in path.parent.iterdir()] == ["clip-a.mp4"], "no temp files left"

    indices, times = decode_clip(path)
    first, last = indices[0] / FPS, indices[-1] / FPS
    assert 2.0 - CONFIG.keyframe_seconds - EPS <= first <= 2.0 + EPS
    assert 8.0 - EPS <= last <= 8.0 + 1 / FPS
    assert indices == list(range(indices[0], indices[-1] + 1)), "no gaps, no repeats"
    assert record.start == pytest.approx(first, abs=1e-4)
    assert record.end == pytest.approx(last, abs=1e-4)
    assert times[0] == 0.0
    assert times[-1] == pytest.approx(last - first, abs=1e-3)

    probe = ffprobe(path)
    if probe is not None:
        assert probe["codec_name"] == "h264" and probe["pix_fmt"] == "yuv420p"
        assert probe["is_avc"] == "true"
    data = path.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat"), "faststart: moov before mdat"


async def test_clip_open_at_close_ends_at_newest(
    recorder: EvidenceRecorder, clips: Clips
) -> None:
    await feed(recorder, range(0, 143))  # to 9.47
    recorder.open_clip("clip-b", "flag-b", start=9.0)
    await feed(recorder, range(143, 180))
    assert clips.records == []
    await recorder.aclose()
    await recorder.aclose()  # idempotent

    assert len(clips.records) == 1
    record = clips.records[0]
    assert recorder.newest_media_time == pytest.approx(179 / FPS)
    assert record.end == pytest.approx(179 / FPS, abs=1e-4)
    indices, _ = decode_clip(Path(record.path))
    assert indices[-1] == 179
    assert 7.0 - CONFIG.keyframe_seconds - EPS <= indices[0] / FPS <= 7.0 + EPS


async def test_max_clip_seconds_keeps_first_part(
    tmp_path: Path, executor: ThreadPoolExecutor, clips: Clips
) -> None:
    config = replace(CONFIG, max_clip_seconds=3.0)
    rec = EvidenceRecorder("sess-2", config, tmp_path, executor, clips, batch_seconds=0.0)
    await feed(rec, range(0, 68))  # to 4.47
    rec.open_clip("never-closed", "f1", start=4.0)
    rec.open_clip("long", "f2", start=4.0)
    await feed(rec, range(68, 152))  # to 10.07
    rec.close_clip("long", end=10.0)
    await feed(rec, range(152, 180))
    await clips.wait_for(2)  # both written at the cap, the open one too
    await rec.aclose()

    assert sorted(r.clip_id for r in clips.records) == ["long", "never-closed"]
    for record in clips.records:
        indices, _ = decode_clip(Path(record.path))
        first, last = indices[0] / FPS, indices[-1] / FPS
        assert first <= 2.0 + EPS
        assert 3.0 - 1 / FPS - EPS <= last - first <= 3.0 + EPS
        assert record.end - record.start == pytest.approx(last - first, abs=1e-4)


async def test_memory_is_bounded(recorder: EvidenceRecorder, clips: Clips) -> None:
    bound = CONFIG.pre_seconds + 2 * CONFIG.keyframe_seconds + EPS
    for second in range(0, 60, 5):
        await feed(recorder, range(int(second * FPS), int((second + 5) * FPS)))
        assert recorder.buffered_seconds <= bound
    assert recorder.buffered_seconds >= CONFIG.pre_seconds  # but not emptier than needed

    # A pending clip holds its lead-in back until it is written, then lets it go.
    recorder.open_clip("held", "flag", start=60.0)
    await feed(recorder, range(900, 1000))  # to 66.6 (keeps the flag's start in view)
    assert recorder.buffered_seconds >= 66.6 - 58.0 - EPS
    recorder.close_clip("held", end=64.0)
    await feed(recorder, range(1000, 1010))
    await clips.wait_for(1)
    assert recorder.buffered_seconds <= bound
    assert recorder.dropped_frames == 0


async def test_resolution_change_mid_stream(recorder: EvidenceRecorder, clips: Clips) -> None:
    await feed(recorder, range(0, 60))
    recorder.open_clip("resize", "flag", start=4.0)
    await feed(recorder, range(60, 90), size=(160, 120))  # WebRTC scaled down
    await feed(recorder, range(90, 120), size=(640, 360))  # then up, other aspect
    recorder.close_clip("resize", end=6.5)
    await feed(recorder, range(120, 150), size=(321, 241))  # odd sizes too
    await clips.wait_for(1)

    path = Path(clips.records[0].path)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == (WIDTH, HEIGHT)
    indices, _ = decode_clip(path)
    assert indices == list(range(indices[0], indices[-1] + 1))
    assert indices[0] <= 30 and indices[-1] >= 127


async def test_push_video_never_blocks(tmp_path: Path, clips: Clips) -> None:
    busy = ThreadPoolExecutor(max_workers=1)
    release = threading.Event()
    busy.submit(release.wait)  # the only worker is taken
    rec = EvidenceRecorder("sess-3", CONFIG, tmp_path, busy, clips, batch_seconds=0.0)
    frames = [make_frame(i) for i in range(100)]
    slowest = 0.0
    for index, frame in enumerate(frames):
        began = time.perf_counter()
        rec.push_video(frame, index / FPS)
        slowest = max(slowest, time.perf_counter() - began)
    assert slowest < 0.005
    queue_limit = int(2 * CONFIG.fps)
    assert rec.dropped_frames == 100 - queue_limit  # the oldest went first
    release.set()
    await rec.aclose()
    busy.shutdown(wait=True)
    assert rec.newest_media_time == pytest.approx(99 / FPS)
    assert clips.records == []


async def test_faster_input_is_thinned_to_fps(recorder: EvidenceRecorder, clips: Clips) -> None:
    await feed(recorder, range(0, 120), fps=30.0)  # 4 s at 30 fps
    recorder.open_clip("thin", "flag", start=2.5)
    recorder.close_clip("thin", end=2.5)
    await feed(recorder, range(120, 180), fps=30.0)
    await clips.wait_for(1)

    indices, times = decode_clip(Path(clips.records[0].path))
    assert {b - a for a, b in itertools.pairwise(indices)} == {2}
    assert times[1] - times[0] == pytest.approx(1 / 15, abs=1e-3)
    assert recorder.dropped_frames == 0


async def test_clip_without_video_is_skipped_and_failures_are_contained(
    recorder: EvidenceRecorder, clips: Clips, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[str] = []

    async def flaky(record: ClipRecord) -> None:
        calls.append(record.clip_id)
        raise RuntimeError("store down")

    recorder._on_clip = flaky  # the callback fails; the recorder must carry on
    await feed(recorder, range(0, 60))
    recorder.open_clip("future", "flag", start=30.0)  # nothing will ever be encoded there
    recorder.open_clip("present", "flag", start=3.0)
    recorder.close_clip("present", end=3.5)
    await feed(recorder, range(60, 90))
    with caplog.at_level(logging.INFO, logger="proctor.evidence"):
        await recorder.aclose()
    assert calls == ["present"]
    assert "on_clip for present failed" in caplog.text
    assert "sess-1" in caplog.text
    assert "clip future has no video" in caplog.text
    assert not (tmp_path / "clips" / "future.mp4").exists()
    recorder.push_video(make_frame(90), 6.0)  # after close: ignored, no error
    with pytest.raises(ValueError):
        recorder.open_clip("../escape", "flag", start=1.0)


def test_encoded_size_keeps_aspect_within_max_width() -> None:
    assert encoded_size(640, 480, 480) == (480, 360)
    assert encoded_size(1280, 720, 480) == (480, 270)
    assert encoded_size(320, 240, 480) == (320, 240)  # never enlarged
    assert encoded_size(321, 241, 480) == (320, 240)  # even, for yuv420p


async def test_default_recording_is_small_and_at_the_analysis_rate(
        tmp_path: Path, executor: ThreadPoolExecutor, clips: Clips) -> None:
    """The shipped defaults: 1280x720 at 15 fps in, 640x360 at 5 fps recorded."""
    config = EvidenceConfig()
    rec = EvidenceRecorder("sess-small", config, tmp_path, executor, clips)
    rec.open_clip("small", "flag", start=2.0)
    rec.close_clip("small", end=3.0)
    started = time.monotonic()
    for index in range(0, 90):  # 6 s at 15 fps, in real time
        rec.push_video(make_frame(index, 1280, 720), index / FPS)
        await asyncio.sleep(max(0.0, started + (index + 1) / FPS - time.monotonic()))
    await clips.wait_for(1)
    await rec.aclose()
    # Frames are encoded in batches, not one executor job per frame.
    assert rec.encode_jobs <= 6 / ENCODE_BATCH_SECONDS + 2
    assert rec.dropped_frames == 0
    path = Path(clips.records[0].path)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == (640, 360)
        times = [float(f.time) for f in container.decode(stream)]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert statistics.median(gaps) == pytest.approx(1 / config.fps, abs=1e-3)
    assert max(gaps) <= 1 / config.fps + 1e-3
    assert times[-1] - times[0] >= 3.0 - 1 / config.fps  # 2 s lead-in + 1 s flag + 2 s after
