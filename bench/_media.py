"""Bench media: a real face video encoded once, replayed by many peers without re-encoding.

The clip is built from real photos shipped in scikit-image (``astronaut`` for the face,
``rocket`` for the "candidate stepped away" scenes), panned and zoomed a little every frame
and given light sensor noise so the encoder works the way it does for a webcam. Each 15 s
loop has :data:`ABSENT_S` seconds with no face at the end, long enough for the server's
``face_absent`` rule (moderate at 3 s) to open a flag and write a clip. Audio, when given,
is real speech encoded once to Opus and looped on its own.

Video is what Chromium sends by default, VP8 (libvpx, realtime deadline, CBR at
:data:`BIT_RATE`, stored in WebM), or H.264 constrained baseline (libx264, stored in MP4,
rewritten to Annex B on load). Either way a keyframe opens every second, so a peer that
starts late (or loses a packet: a pre-encoded stream cannot honour a PLI) begins on one.

aiortc sends pre-encoded data when a track's ``recv()`` returns an ``av.Packet``: the
sender calls the codec's ``pack()`` (VP8: payload descriptors; H.264: NAL units split on
start codes) and packetises, so a client peer costs SRTP and pacing, not an encoder.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av.bitstream import BitStreamFilterContext

WIDTH, HEIGHT, FPS = 640, 480, 15
CYCLE_S = 15  # one loop of the clip
ABSENT_S = 4  # seconds without a face at the end of each loop (face_absent: moderate at 3 s)
BIT_RATE = 900_000  # a typical WebRTC bitrate for 640x480 at 15 fps
VIDEO_CLOCK = 90_000  # VP8 and H.264 RTP clock rate
OPUS_RATE = 48_000  # Opus RTP clock rate

Codec = Literal["vp8", "h264"]
CODECS: tuple[Codec, ...] = ("vp8", "h264")
CONTAINERS: dict[Codec, str] = {"vp8": "webm", "h264": "mp4"}  # MP4 holds VP8 badly


def _load_scenes() -> tuple[np.ndarray, np.ndarray]:
    """Return (face canvas, no-face canvas), each larger than a frame so it can be panned."""
    from skimage import data  # bench-only dependency, imported late so --help stays cheap

    face = _resize(data.astronaut(), 720, 720)  # the face sits in the upper middle
    # A real scene with no person in it. Not ``coffee``: BlazeFace sees a face in its cup
    # in about a third of the frames (scores 0.50-0.58), which breaks face_absent runs.
    empty = _resize(data.rocket(), 810, 540)
    return face, empty


def _resize(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
    return frame.reformat(width=width, height=height, interpolation="BICUBIC").to_ndarray()


def _camera_window(canvas: np.ndarray, t: float) -> tuple[int, int, int, int]:
    """A slowly drifting, breathing crop: about 2 px of pan per frame and a 4 % zoom swing."""
    zoom = 1.0 + 0.02 * (1.0 + math.sin(2 * math.pi * t / 10))
    w, h = int(WIDTH / zoom) & ~1, int(HEIGHT / zoom) & ~1
    ch, cw = canvas.shape[:2]
    cx = cw / 2 + 30 * math.sin(2 * math.pi * t / 6)
    cy = min(ch / 2, h / 2 + 20) + 12 * math.sin(2 * math.pi * t / 8)
    x = int(min(max(cx - w / 2, 0), cw - w))
    y = int(min(max(cy - h / 2, 0), ch - h))
    return x, y, w, h


def _render(canvas: np.ndarray, t: float, rng: np.random.Generator) -> av.VideoFrame:
    x, y, w, h = _camera_window(canvas, t)
    crop = canvas[y : y + h, x : x + w].astype(np.int16)
    crop += rng.integers(-3, 4, size=crop.shape, dtype=np.int16)  # webcam sensor noise
    rgb = np.ascontiguousarray(np.clip(crop, 0, 255).astype(np.uint8))
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
    return frame.reformat(width=WIDTH, height=HEIGHT, format="yuv420p")


def _add_video(out: av.container.OutputContainer, codec: Codec) -> av.VideoStream:
    stream = out.add_stream("libvpx" if codec == "vp8" else "libx264", rate=FPS)
    stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    stream.bit_rate = BIT_RATE
    stream.options = dict(_vp8_options() if codec == "vp8" else _h264_options())
    return stream


def _vp8_options() -> dict[str, str]:
    """libvpx as WebRTC drives it (cf. aiortc's Vp8Encoder): realtime, CBR, no lag, no
    alt-ref frames, one token partition; a keyframe every second, exactly."""
    rate = str(BIT_RATE)
    return {
        "deadline": "realtime",
        "cpu-used": "-6",
        "lag-in-frames": "0",
        "auto-alt-ref": "0",
        "g": str(FPS),  # kf_max_dist
        "keyint_min": str(FPS),  # kf_min_dist: no extra keyframes at the scene change
        "minrate": rate,  # minrate = maxrate = bit_rate: CBR
        "maxrate": rate,
        "bufsize": rate,
        "qmin": "2",
        "qmax": "56",
        "undershoot-pct": "100",
        "overshoot-pct": "15",
        "partitions": "0",
    }


def _h264_options() -> dict[str, str]:
    # Baseline profile: no B-frames, CAVLC, what WebRTC's packetization-mode=1 profile
    # 42e01f expects.
    return {
        "profile": "baseline",
        "preset": "veryfast",
        "tune": "zerolatency",
        "x264-params": f"keyint={FPS}:min-keyint={FPS}:scenecut=0:bframes=0:level=3.1",
    }


def _encode_video(out: av.container.OutputContainer, stream: av.VideoStream) -> None:
    face, empty = _load_scenes()
    rng = np.random.default_rng(7)
    for i in range(CYCLE_S * FPS):
        t = i / FPS
        frame = _render(empty if t >= CYCLE_S - ABSENT_S else face, t, rng)
        frame.pts, frame.time_base = i, Fraction(1, FPS)
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


def _add_audio(out: av.container.OutputContainer) -> av.AudioStream:
    """Opus at 48 kHz stereo in 20 ms packets, as a browser sends it (opus/48000/2)."""
    stream = out.add_stream("libopus", rate=OPUS_RATE, layout="stereo")
    stream.bit_rate = 32_000
    return stream


def _encode_audio(out: av.container.OutputContainer, stream: av.AudioStream,
                  wav: Path) -> None:
    resampler = av.AudioResampler(format="s16", layout="stereo", rate=OPUS_RATE,
                                  frame_size=OPUS_RATE // 50)
    with av.open(str(wav)) as source:
        for frame in source.decode(audio=0):
            for chunk in resampler.resample(frame):
                out.mux(stream.encode(chunk))
    for chunk in resampler.resample(None):
        out.mux(stream.encode(chunk))
    out.mux(stream.encode(None))


def build_media(folder: Path, speech: Path | None, codec: Codec = "vp8") -> Path:
    """Encode the bench clip once into ``folder``: VP8 in WebM or H.264 in MP4, plus Opus
    audio from ``speech`` if given. Returns the file written."""
    path = folder / f"bench-{codec}.{CONTAINERS[codec]}"
    with av.open(str(path), "w") as out:
        # Every stream must exist before the first packet is muxed (the header is written then).
        video = _add_video(out, codec)
        audio = _add_audio(out) if speech is not None else None
        _encode_video(out, video)
        if audio is not None and speech is not None:
            _encode_audio(out, audio, speech)
    return path


@dataclass(frozen=True)
class EncodedClip:
    """One loop of a stream's packets, with pts in its RTP clock (ticks from 0)."""

    kind: str  # "video" or "audio"
    codec: str  # "vp8", "h264" or "opus"
    clock: int  # RTP clock rate: 90 kHz for video, 48 kHz for Opus
    units: tuple[bytes, ...]
    pts: tuple[int, ...]
    starts: tuple[int, ...]  # indices a peer may start at: keyframes for video
    duration: int  # one loop, in clock ticks

    @property
    def seconds(self) -> float:
        return self.duration / self.clock


def load_clips(path: Path) -> list[EncodedClip]:
    """Demux the file once into memory: the video clip, then the audio clip if any."""
    with av.open(str(path)) as container:
        clips = [_video_clip(container)]
        if container.streams.audio:
            clips.append(_audio_clip(container))
    return clips


def _ticks(packet: av.Packet[Any], clock: int) -> int:
    assert packet.pts is not None and packet.time_base is not None
    return round(packet.pts * packet.time_base * clock)


def _video_clip(container: av.container.InputContainer) -> EncodedClip:
    stream = container.streams.video[0]
    codec = stream.codec_context.name
    container.seek(0)
    packets = [p for p in container.demux(stream) if p.size]
    if codec == "h264":
        packets = _annex_b(stream, packets)
    starts = tuple(i for i, p in enumerate(packets) if p.is_keyframe)
    return _clip("video", codec, VIDEO_CLOCK, packets, starts, VIDEO_CLOCK // FPS)


def _annex_b(stream: av.VideoStream, packets: list[av.Packet[Any]]) -> list[av.Packet[Any]]:
    # MP4 stores length-prefixed NAL units with SPS/PPS in the header; aiortc's H.264
    # packer splits on start codes, so ``h264_mp4toannexb`` rewrites each access unit
    # and repeats SPS/PPS before every IDR. (VP8 frames from WebM are sent as they are.)
    bsf = BitStreamFilterContext("h264_mp4toannexb", stream)
    filtered = [out for p in packets for out in bsf.filter(p)]
    return [*filtered, *bsf.filter(None)]


def _audio_clip(container: av.container.InputContainer) -> EncodedClip:
    stream = container.streams.audio[0]
    container.seek(0)
    packets = [p for p in container.demux(stream) if p.size]
    # Every Opus packet decodes on its own: a peer may start anywhere.
    return _clip("audio", "opus", OPUS_RATE, packets, tuple(range(len(packets))),
                 OPUS_RATE // 50)


def _clip(kind: str, codec: str, clock: int, packets: list[av.Packet[Any]],
          starts: tuple[int, ...], last_duration: int) -> EncodedClip:
    ticks = [_ticks(p, clock) for p in packets]
    ticks = [t - ticks[0] for t in ticks]
    units = tuple(bytes(p) for p in packets)
    return EncodedClip(kind, codec, clock, units, tuple(ticks), starts,
                       ticks[-1] + last_duration)


class LoopingTrack(MediaStreamTrack):
    """Replays an :class:`EncodedClip` forever, paced in real time, without encoding.

    ``phase`` (0-1) picks where in the loop a peer starts, so N peers started together
    do not send their keyframes and no-face periods in lockstep. :attr:`first_sent` is
    the wall time (``time.time()``) the first packet was handed to the sender: the
    client's estimate of the server's media time 0 for the session.
    """

    def __init__(self, clip: EncodedClip, phase: float = 0.0) -> None:
        super().__init__()
        self.kind = clip.kind
        self._clip = clip
        self._index = clip.starts[int(phase * len(clip.starts)) % len(clip.starts)]
        self._offset = clip.pts[self._index]
        self._time_base = Fraction(1, clip.clock)
        self._started: float | None = None
        self.first_sent: float | None = None
        self.sent = 0
        self.sent_bytes = 0

    @property
    def start_seconds(self) -> float:
        """Where in the loop this track starts (seconds from the clip's beginning)."""
        return self._offset / self._clip.clock

    async def recv(self) -> av.Packet[Any]:
        if self.readyState != "live":
            raise MediaStreamError
        clip = self._clip
        loop, pos = divmod(self._index, len(clip.units))
        ticks = loop * clip.duration + clip.pts[pos] - self._offset
        if self._started is None:
            self._started = time.monotonic()
        delay = self._started + ticks / clip.clock - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        # A fresh Packet per send: pts grows across loops so RTP timestamps never go back.
        packet = av.Packet(clip.units[pos])
        packet.pts = ticks
        packet.time_base = self._time_base
        if self.first_sent is None:
            self.first_sent = time.time()
        self._index += 1
        self.sent += 1
        self.sent_bytes += packet.size
        return packet
