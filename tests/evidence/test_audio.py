"""Evidence clips carry the sound: real AAC encoding, real MP4 files, decoded back.

Audio is pushed the way aiortc hands it over: 20 ms frames of 960 samples, 48 kHz
stereo s16, each with its media time. The signal is a quiet tone with loud beeps at
known media times; the video frames carry their index (see test_recorder), so a
decoded clip tells where a media time landed in each track.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
import pytest

from proctor.config import EvidenceConfig
from proctor.evidence import EvidenceRecorder
from proctor.evidence.audio import AAC_FRAME, AacEncoder, AudioPacket, downmix, fill_gaps
from tests.evidence.test_recorder import Clips, make_frame, read_index

FPS = 15.0
RATE = 48_000
FRAME_SAMPLES = 960  # 20 ms, as Opus decodes
CONFIG = EvidenceConfig(fps=FPS)  # every pushed frame recorded
TONE = 0.05  # amplitude of the background tone
BEEP = 0.8  # amplitude of a marker beep
BEEP_SECONDS = 0.1

Signal = npt.NDArray[np.float32]


# -- synthetic media ------------------------------------------------------------------------

def signal(seconds: float, beeps: tuple[float, ...]) -> Signal:
    """A 220 Hz tone at TONE, with a 1 kHz beep at BEEP starting at each of ``beeps``."""
    t = np.arange(round(seconds * RATE)) / RATE
    out = TONE * np.sin(2 * np.pi * 220 * t)
    for start in beeps:
        on = (t >= start) & (t < start + BEEP_SECONDS)
        out[on] = BEEP * np.sin(2 * np.pi * 1000 * (t[on] - start))
    return out.astype(np.float32)


def webrtc_frame(samples: Signal, rate: int = RATE, layout: str = "stereo",
                 fmt: str = "s16") -> av.AudioFrame:
    """An aiortc-shaped frame: packed s16 stereo by default (the same in both channels)."""
    channels = 2 if layout == "stereo" else 1
    if fmt == "s16":
        packed = np.repeat(np.round(samples * 32767).astype(np.int16), channels)
        frame = av.AudioFrame.from_ndarray(packed.reshape(1, -1), format="s16", layout=layout)
    else:  # planar float
        planes = np.tile(samples, (channels, 1)).astype(np.float32)
        frame = av.AudioFrame.from_ndarray(planes, format=fmt, layout=layout)
    frame.sample_rate = rate
    return frame


@dataclass
class Feeder:
    """Pushes video and audio in media-time order, like a live session would."""

    rec: EvidenceRecorder
    audio: Signal
    rate: int = RATE
    frame_samples: int = FRAME_SAMPLES
    audio_from: float = 0.0  # no audio before this media time
    holes: tuple[tuple[float, float], ...] = ()  # audio frames lost in these spans
    layout: str = "stereo"
    fmt: str = "s16"
    _next_audio: int = 0  # index of the next audio frame

    async def run(self, t0: float, t1: float) -> None:
        for index in range(round(t0 * FPS), round(t1 * FPS)):
            self.rec.push_video(make_frame(index), index / FPS)
            self._audio_until(index / FPS)
            if index % 10 == 9:
                await settle(self.rec)
        await settle(self.rec)

    def _audio_until(self, media_time: float) -> None:
        while (start := self._next_audio * self.frame_samples / self.rate) <= media_time:
            self._next_audio += 1
            lo = round(start * self.rate)
            chunk = self.audio[lo : lo + self.frame_samples]
            lost = any(a <= start < b for a, b in self.holes)
            if start >= self.audio_from and not lost and len(chunk) == self.frame_samples:
                frame = webrtc_frame(chunk, self.rate, self.layout, self.fmt)
                self.rec.push_audio(frame, start)


async def settle(rec: EvidenceRecorder, timeout: float = 5.0) -> None:
    """Wait until everything pushed so far is encoded."""
    deadline = time.monotonic() + timeout
    while rec._encode_task is not None:
        assert time.monotonic() < deadline, "encoder stuck"
        await asyncio.sleep(0.001)


# -- decoding ---------------------------------------------------------------------------

@dataclass
class Decoded:
    video_times: list[float]  # clip time of each frame
    video_indices: list[int]  # the index each frame shows
    audio: Signal  # mono samples from the audio track's first decoded sample
    audio_start: float  # clip time of audio[0]

    @property
    def video_end(self) -> float:
        return self.video_times[-1] + 1 / FPS

    @property
    def audio_end(self) -> float:
        return self.audio_start + len(self.audio) / RATE

    def frame_time(self, index: int) -> float:
        return self.video_times[self.video_indices.index(index)]

    def onset(self, after: float) -> float:
        """Clip time of the first loud sample at or after clip time ``after``."""
        first = max(0, round((after - self.audio_start) * RATE))
        loud = np.flatnonzero(np.abs(self.audio[first:]) > BEEP / 2)
        assert len(loud), f"no beep after {after}"
        return self.audio_start + (first + int(loud[0])) / RATE

    def rms(self, lo: float, hi: float) -> float:
        part = self.audio[round((lo - self.audio_start) * RATE):
                          round((hi - self.audio_start) * RATE)]
        return float(np.sqrt(np.mean(np.square(part, dtype=np.float64))))


def decode(path: Path) -> Decoded:
    with av.open(str(path)) as container:
        assert len(container.streams.audio) == 1 and len(container.streams.video) == 1
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert video.codec_context.name == "h264"
        assert audio.codec_context.name == "aac"
        assert audio.codec_context.sample_rate == RATE
        extradata = audio.codec_context.extradata or b""
        assert len(extradata) >= 2 and extradata[0] >> 3 == 2, "AudioSpecificConfig: AAC-LC"
        times: list[float] = []
        indices: list[int] = []
        chunks: list[Signal] = []
        starts: list[float] = []
        for frame in container.decode(video, audio):
            if isinstance(frame, av.VideoFrame):
                times.append(float(frame.time or 0.0))
                indices.append(read_index(frame))
            else:
                assert isinstance(frame, av.AudioFrame)
                starts.append(float(frame.time or 0.0))
                chunks.append(frame.to_ndarray()[0].astype(np.float32))
    # The track must play continuously: each frame starts where the last one ended.
    for (s0, c0), s1 in zip(zip(starts, chunks, strict=True), starts[1:], strict=False):
        assert s1 == pytest.approx(s0 + len(c0) / RATE, abs=1e-4)
    order = np.argsort(times, kind="stable")
    return Decoded([times[i] for i in order], [indices[i] for i in order],
                   np.concatenate(chunks), starts[0])


def assert_spans_video(clip: Decoded) -> None:
    """Audio covers the video, start to end, within a 50 ms budget at each end."""
    assert clip.video_times[0] == 0.0
    assert -0.001 <= clip.audio_start <= 0.05
    assert abs(clip.audio_end - clip.video_end) <= 0.05


def ffprobe_streams(path: Path) -> list[dict[str, str]] | None:
    if shutil.which("ffprobe") is None:
        return None
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-of", "json", str(path)],
        check=True, capture_output=True, text=True,
    ).stdout
    streams: list[dict[str, str]] = json.loads(out)["streams"]
    return streams


# -- fixtures ---------------------------------------------------------------------------

@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="evidence-audio-test")
    yield pool
    pool.shutdown(wait=True)


def recorder(tmp_path: Path, executor: ThreadPoolExecutor, clips: Clips,
             config: EvidenceConfig = CONFIG) -> EvidenceRecorder:
    return EvidenceRecorder("sess-a", config, tmp_path / "clips", executor, clips,
                            batch_seconds=0.0)  # a job per frame: tests step frame by frame


# -- tests ------------------------------------------------------------------------------

async def test_clip_has_aac_aligned_with_video(
    tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    clips = Clips()
    rec = recorder(tmp_path, executor, clips)
    feeder = Feeder(rec, signal(12.0, beeps=(5.0,)))
    await feeder.run(0.0, 4.5)
    rec.open_clip("av", "flag", start=4.0)
    await feeder.run(4.5, 6.5)
    rec.close_clip("av", end=6.0)
    await feeder.run(6.5, 10.0)
    await clips.wait_for(1)  # due at 8.0 once the audio is there too, before aclose
    await rec.aclose()

    path = Path(clips.records[0].path)
    clip = decode(path)
    assert_spans_video(clip)
    # The beep at media time 5.0 sounds when the frame of media time 5.0 shows.
    assert abs(clip.onset(0.0) - clip.frame_time(75)) <= 0.01
    assert clip.rms(0.5, 1.5) == pytest.approx(TONE / np.sqrt(2), rel=0.15), "tone kept"
    assert rec.dropped_audio_frames == 0

    streams = ffprobe_streams(path)
    if streams is not None:
        by_type = {s["codec_type"]: s for s in streams}
        assert by_type["video"]["codec_name"] == "h264"
        assert by_type["audio"]["codec_name"] == "aac"
        assert by_type["audio"]["profile"] == "LC"
        assert by_type["audio"]["sample_rate"] == str(RATE)
    data = path.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat"), "faststart: moov before mdat"


async def test_gaps_and_late_start_stay_aligned(
    tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    clips = Clips()
    rec = recorder(tmp_path, executor, clips)
    # Audio starts after the clip's first frame, loses 0.3 s (silence-filled) and
    # then 3 s (the encoder restarts further along its grid); beeps after each.
    feeder = Feeder(rec, signal(16.0, beeps=(3.0, 5.0, 10.0)), audio_from=2.6,
                    holes=((4.0, 4.3), (6.0, 9.0)))
    await feeder.run(0.0, 3.0)
    rec.open_clip("gaps", "flag", start=2.5)
    await feeder.run(3.0, 10.5)
    rec.close_clip("gaps", end=10.5)
    await feeder.run(10.5, 13.5)
    await clips.wait_for(1)
    await rec.aclose()

    clip = decode(Path(clips.records[0].path))
    assert_spans_video(clip)
    origin = clip.video_indices[0] / FPS  # media time of the clip's first frame
    assert origin <= 0.5 + 1e-6
    for beep, index in ((3.0, 45), (5.0, 75), (10.0, 150)):
        assert abs(clip.onset(beep - origin - 0.2) - clip.frame_time(index)) <= 0.01, beep
    assert clip.rms(0.0, 2.5 - origin) < 1e-3, "silence before the audio began"
    assert clip.rms(4.05 - origin, 4.25 - origin) < 1e-3, "silence in the short gap"
    assert clip.rms(6.1 - origin, 8.9 - origin) < 1e-3, "silence in the long gap"
    assert clip.rms(9.2 - origin, 9.9 - origin) > TONE / 2, "sound after the long gap"


async def test_jitter_and_repeated_times_keep_the_timeline(
    tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    """Float noise in media times is not a gap; a frame stamped again at an earlier
    time (the media clock holds time still after a jump back) overlaps nothing."""
    encoder = AacEncoder(CONFIG.audio_bitrate)
    audio = signal(3.0, beeps=(2.0,))
    rng = np.random.default_rng(1)
    batch = []
    for n in range(len(audio) // FRAME_SAMPLES):
        start = n * FRAME_SAMPLES / RATE + float(rng.uniform(-4e-4, 4e-4))
        chunk = audio[n * FRAME_SAMPLES : (n + 1) * FRAME_SAMPLES]
        batch.append((webrtc_frame(chunk), start))
        if n == 50:  # the same frame again, stamped 60 ms too early
            batch.append((webrtc_frame(chunk), start - 0.06))
    packets = encoder.encode(batch) + encoder.flush()
    pts = [p.pts for p in packets]
    assert pts == list(range(pts[0], pts[0] + AAC_FRAME * len(pts), AAC_FRAME))
    assert pts[0] == -AAC_FRAME  # the priming frame, one slot before media time 0
    samples = _decode_packets(packets, encoder)
    onset = np.flatnonzero(np.abs(samples) > BEEP / 2)[0] / RATE + pts[0] / RATE
    assert onset == pytest.approx(2.0, abs=0.002)


def test_long_gap_is_not_encoded_but_filled_at_clip_time() -> None:
    """A minute without audio costs no encoding; the grid carries on past it, and the
    filled stream decodes with the sound after the gap at its media time."""
    encoder = AacEncoder(CONFIG.audio_bitrate)
    audio = signal(1.0, beeps=(0.5,))
    frames = [webrtc_frame(audio[i : i + FRAME_SAMPLES])
              for i in range(0, len(audio), FRAME_SAMPLES)]
    before = [(f, 10.0 + n * 0.02) for n, f in enumerate(frames)]
    after = [(f, 70.3 + n * 0.02) for n, f in enumerate(frames)]  # beep at 70.8
    packets = encoder.encode(before + after) + encoder.flush()
    assert len(packets) < 2 * RATE / AAC_FRAME + 8, "the gap was encoded"
    assert {p.pts % AAC_FRAME for p in packets} == {packets[0].pts % AAC_FRAME}
    assert encoder.stream is not None
    filled = fill_gaps(packets, packets[0].pts, packets[-1].pts, encoder.stream.silence)
    pts = [p.pts for p in filled]
    assert pts == list(range(pts[0], pts[-1] + 1, AAC_FRAME))
    samples = _decode_packets(filled, encoder)
    loud = np.flatnonzero(np.abs(samples) > BEEP / 2) / RATE + pts[0] / RATE
    assert loud[0] == pytest.approx(10.5, abs=0.002)
    assert loud[-1] == pytest.approx(70.8 + BEEP_SECONDS, abs=0.002)
    gap = samples[round((11.1 - pts[0] / RATE) * RATE) : round((70.2 - pts[0] / RATE) * RATE)]
    assert np.max(np.abs(gap)) < 1e-4, "the filler decodes to silence"


def _decode_packets(packets: list[AudioPacket], encoder: AacEncoder) -> Signal:
    assert encoder.stream is not None
    ctx = av.CodecContext.create("aac", "r")
    ctx.extradata = encoder.stream.extradata
    out: list[Signal] = []
    for encoded in packets:
        packet = av.Packet(encoded.data)
        packet.pts = encoded.pts
        packet.time_base = Fraction(1, RATE)
        out.extend(f.to_ndarray()[0] for f in ctx.decode(packet))
    return np.concatenate(out)


@pytest.mark.parametrize(("fmt", "layout", "left", "right"), [
    ("s16", "stereo", 16384, -8192),  # aiortc's frames
    ("s16p", "stereo", 16384, -8192),
    ("fltp", "stereo", 0.5, -0.25),
    ("flt", "stereo", 0.5, -0.25),
    ("s32", "stereo", 2**30, -(2**29)),
])
def testdownmix_is_the_mean_of_the_channels(fmt: str, layout: str, left: float,
                                             right: float) -> None:
    planar = fmt.endswith("p")
    dtype = {"s16": np.int16, "s32": np.int32, "flt": np.float32}[fmt.rstrip("p")]
    pair = np.array([[left] * 4, [right] * 4], dtype=dtype)
    data = pair if planar else pair.T.reshape(1, -1)
    frame = av.AudioFrame.from_ndarray(data, format=fmt, layout=layout)
    assert downmix(frame) == pytest.approx([0.125] * 4, abs=1e-6)


async def test_other_rates_and_formats_are_resampled(
    tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    clips = Clips()
    rec = recorder(tmp_path, executor, clips)
    rate = 16_000
    t = np.arange(12 * rate) / rate
    audio = (TONE * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    on = (t >= 5.0) & (t < 5.0 + BEEP_SECONDS)
    audio[on] = BEEP * np.sin(2 * np.pi * 1000 * (t[on] - 5.0))
    feeder = Feeder(rec, audio, rate=rate, frame_samples=320, layout="mono", fmt="fltp")
    await feeder.run(0.0, 4.5)
    rec.open_clip("resampled", "flag", start=4.0)
    rec.close_clip("resampled", end=5.5)
    await feeder.run(4.5, 8.0)
    await rec.aclose()

    clip = decode(Path(clips.records[0].path))
    assert_spans_video(clip)
    assert abs(clip.onset(0.0) - clip.frame_time(75)) <= 0.01


async def test_close_flushes_audio_to_the_last_frame(
    tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    clips = Clips()
    rec = recorder(tmp_path, executor, clips)
    feeder = Feeder(rec, signal(10.0, beeps=()))
    await feeder.run(0.0, 6.0)
    rec.open_clip("open", "flag", start=5.0)  # still open when the session ends
    await feeder.run(6.0, 8.0)
    assert clips.records == []
    await rec.aclose()

    clip = decode(Path(clips.records[0].path))
    assert clip.video_indices[-1] == 119
    assert_spans_video(clip)
    assert clip.rms(clip.video_end - 0.2, clip.video_end - 0.05) > TONE / 2, "tail encoded"


async def test_no_audio_means_video_only(tmp_path: Path, executor: ThreadPoolExecutor) -> None:
    for name, config, push in (("silent-session", CONFIG, False),
                               ("audio-off", replace(CONFIG, audio_bitrate=0), True)):
        clips = Clips()
        rec = recorder(tmp_path / name, executor, clips, config)
        feeder = Feeder(rec, signal(6.0, beeps=()))
        if not push:
            feeder.audio_from = 1e9
        await feeder.run(0.0, 3.0)
        rec.open_clip(name, "flag", start=2.0)
        rec.close_clip(name, end=2.0)
        await feeder.run(3.0, 5.0)
        await clips.wait_for(1)
        await rec.aclose()
        with av.open(clips.records[0].path) as container:
            assert len(container.streams.video) == 1
            assert len(container.streams.audio) == 0, name
        assert rec.buffered_audio_seconds == 0.0


async def test_audio_memory_is_bounded(tmp_path: Path, executor: ThreadPoolExecutor) -> None:
    clips = Clips()
    rec = recorder(tmp_path, executor, clips)
    feeder = Feeder(rec, signal(70.0, beeps=()))
    # Steady state: no more audio than the video GOPs kept (plus a frame each side).
    bound = CONFIG.pre_seconds + 2 * CONFIG.keyframe_seconds + 2 * AAC_FRAME / RATE
    for second in range(0, 40, 5):
        await feeder.run(second, second + 5)
        assert rec.buffered_audio_seconds <= bound
    assert rec.buffered_audio_seconds >= CONFIG.pre_seconds

    # A pending clip holds its audio until it is written, then lets it go.
    rec.open_clip("held", "flag", start=40.0)
    await feeder.run(40.0, 46.0)
    assert rec.buffered_audio_seconds >= 45.9 - 38.0 - 0.1  # media to 45.93
    rec.close_clip("held", end=44.0)
    await feeder.run(46.0, 47.0)
    await clips.wait_for(1)
    assert rec.buffered_audio_seconds <= bound

    # Audio with no video at all (camera off) is bounded by the same horizon.
    blind = recorder(tmp_path / "blind", executor, Clips())
    audio_only = Feeder(blind, feeder.audio)
    for index in range(round(60 / 0.02)):
        audio_only._audio_until(index * 0.02)
        if index % 50 == 0:
            await settle(blind)
    await settle(blind)
    horizon = CONFIG.pre_seconds + 2 * CONFIG.keyframe_seconds + 2.0 + 2 * AAC_FRAME / RATE
    assert 2.0 <= blind.buffered_audio_seconds <= horizon
    await blind.aclose()
    await rec.aclose()
    assert rec.dropped_audio_frames == 0


async def test_push_audio_never_blocks(tmp_path: Path) -> None:
    busy = ThreadPoolExecutor(max_workers=1)
    release = threading.Event()
    busy.submit(release.wait)  # the only worker is taken
    clips = Clips()
    rec = EvidenceRecorder("sess-b", CONFIG, tmp_path, busy, clips, batch_seconds=0.0)
    audio = signal(6.0, beeps=())
    frames = [webrtc_frame(audio[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES])
              for i in range(300)]
    slowest = 0.0
    for index, frame in enumerate(frames):
        began = time.perf_counter()
        rec.push_audio(frame, index * FRAME_SAMPLES / RATE)
        slowest = max(slowest, time.perf_counter() - began)
    assert slowest < 0.005
    assert rec.dropped_audio_frames == 300 - 100  # 2 s of 20 ms frames kept, oldest dropped
    release.set()
    await rec.aclose()
    busy.shutdown(wait=True)
    assert clips.records == []
    rec.push_audio(frames[0], 10.0)  # after close: ignored, no error
