"""Per-session evidence recording: rolling H.264 + AAC buffers and an MP4 clip writer.

The session's video is encoded once, continuously, into H.264 packets held in memory
with their media times. A clip is cut by *remuxing* those packets (no re-encoding)
from the keyframe at or before ``start - pre_seconds`` to ``end + post_seconds``, so a
clip costs a file write, not an encode. Memory stays bounded: whole GOPs older than
``pre_seconds + keyframe_seconds`` are dropped unless a pending clip still needs them.

The sound is encoded the same way (AAC, see :mod:`proctor.evidence.audio`) and a clip
carries the audio packets spanning its video, on the same clock: media time ``t``
plays at clip time ``t - (media time of the clip's first video frame)`` in both
tracks. A session that never sent audio gets video-only clips.

While a clip records, its packets are also appended to a journal on disk
(``clips_dir/.<clip_id>.journal.mp4``, fragmented MP4, see :class:`ClipJournal`): a
process killed mid-clip leaves it there, and :func:`recover_clip` turns it into the
clip at recovery. The journal is removed once the finished clip is stored.

Threading: everything in :class:`EvidenceRecorder` runs on the event loop except the
encoders, the journals and the MP4 writer, which run on the executor passed in. That
executor must be a thread pool (the encoders' state cannot be pickled). One session
never has more than one encode job in flight (it encodes both tracks), so its encoders
are only ever touched by one thread at a time; likewise its journal operations run one
job at a time, in order.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import io
import logging
import math
import os
import secrets
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
from av.codec.context import Flags
from av.stream import Stream
from av.video.frame import PictureType

from proctor.config import EvidenceConfig
from proctor.evidence.audio import (
    AAC_FRAME,
    AUDIO_RATE,
    AUDIO_TIME_BASE,
    AacEncoder,
    AudioPacket,
    AudioStreamInfo,
    fill_gaps,
)
from proctor.flags.model import utc_now_iso
from proctor.store.base import ClipRecord

log = logging.getLogger("proctor.evidence")

# 90 kHz is the usual video clock: exact for common frame rates, and MP4-friendly.
TIME_BASE = Fraction(1, 90_000)
# A safety net only: keyframes are forced by media time (see _H264Encoder._force_key).
_GOP_SAFETY_FACTOR = 4
_SLOT_OFFSET = 0.4  # see _FrameGate
# 2 s of 20 ms WebRTC audio frames: the same lag the video queue tolerates.
_AUDIO_QUEUE_FRAMES = 100
# Audio is kept this much longer than the video rule needs: video waits up to 2 s in
# its queue, so the newest audio can be that far ahead of the newest video.
_AUDIO_SLACK_SECONDS = 2.0
# A due clip waits for audio to be encoded up to its end, but no longer than this much
# more video: audio that far behind has stopped (muted, ended), not lagged.
_AUDIO_GRACE_SECONDS = 1.0
# Queued frames are encoded in one executor job per this much time, not one per frame:
# audio arrives every 20 ms, and a job per frame cost more (thread hand-offs, task
# creation on the event loop) than encoding did. Both queues hold 2 s, so nothing drops.
ENCODE_BATCH_SECONDS = 0.5

ClipCallback = Callable[[ClipRecord], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class EncodedPacket:
    """One encoded frame; immutable, so clips can share it across threads."""

    pts: int  # in TIME_BASE units: media_time * 90 000
    data: bytes
    keyframe: bool

    @property
    def time(self) -> float:
        return float(self.pts * TIME_BASE)


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """What a muxer needs to describe the encoded stream (SPS/PPS in ``extradata``)."""

    width: int
    height: int
    extradata: bytes
    fps: float


@dataclass(slots=True)
class _PendingClip:
    clip_id: str
    flag_id: str
    start: float
    end: float | None = None  # None while the flag is still open
    journal: ClipJournal | None = None  # on disk while it records, once it has video


class _FrameGate:
    """Thins input to at most ``fps``: one frame per slot of 1/fps seconds.

    Slots are counted from the first accepted frame, with a 0.4-slot offset: input at
    ``fps`` keeps every frame despite up to 0.4 frame of early jitter, while input at
    exactly twice the rate (30 fps cameras, 15 fps evidence) never lands on a slot
    boundary, so it is thinned evenly to every other frame rather than by float noise.
    A frame whose time does not move forward is refused (the encoder needs strictly
    increasing timestamps).
    """

    def __init__(self, fps: float) -> None:
        self._fps = fps
        self._origin: float | None = None
        self._last_slot = -1
        self._last_time = -math.inf

    def accept(self, media_time: float) -> bool:
        if self._origin is None:
            self._origin = media_time
        slot = math.floor((media_time - self._origin) * self._fps + _SLOT_OFFSET)
        if slot <= self._last_slot or media_time <= self._last_time:
            return False
        self._last_slot, self._last_time = slot, media_time
        return True


class _H264Encoder:
    """libx264 wrapper. Thread-confined: called by one executor job at a time.

    Frames that change resolution mid-stream (WebRTC adapts resolution to bandwidth)
    are scaled to the first frame's size. Restarting the encoder instead would change
    the SPS mid-stream, and one MP4 track carries a single avcC, so a clip spanning
    the change would need several sample descriptions that browsers handle poorly.
    One fixed size keeps every clip a plain single-SPS stream.
    """

    def __init__(self, config: EvidenceConfig) -> None:
        self._config = config
        self._ctx: av.VideoCodecContext | None = None
        self._last_key: float | None = None
        self.stream: StreamInfo | None = None  # set once the encoder is open

    def encode(self, batch: Sequence[tuple[av.VideoFrame, float]]) -> list[EncodedPacket]:
        packets: list[EncodedPacket] = []
        for frame, media_time in batch:
            packets.extend(self._encode_one(frame, media_time))
        return packets

    def flush(self) -> list[EncodedPacket]:
        if self._ctx is None:
            return []
        packets = self._collect(self._ctx.encode(None))
        self._ctx = None  # a flushed encoder cannot take more frames; free it
        return packets

    def _encode_one(self, frame: av.VideoFrame, media_time: float) -> list[EncodedPacket]:
        ctx = self._ctx if self._ctx is not None else self._open(frame)
        image = self._conform(frame, ctx.width, ctx.height)
        image.pts = round(media_time / TIME_BASE)
        image.time_base = TIME_BASE
        # Always set the type: decoded WebRTC frames carry I/P from *their* decoder,
        # and libx264 obeys a frame's pict_type, which would override our GOP.
        image.pict_type = PictureType.I if self._force_key(media_time) else PictureType.NONE
        return self._collect(ctx.encode(image))

    def _force_key(self, media_time: float) -> bool:
        if self._last_key is None:
            return True
        # Half a frame of slack so a 1 s interval at 15 fps lands on frame 15, not 16.
        slack = 0.5 / self._config.fps
        return media_time - self._last_key >= self._config.keyframe_seconds - slack

    def _open(self, frame: av.VideoFrame) -> av.VideoCodecContext:
        cfg = self._config
        ctx = av.CodecContext.create("libx264", "w")
        ctx.width, ctx.height = encoded_size(frame.width, frame.height, cfg.max_width)
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = TIME_BASE
        ctx.framerate = Fraction(cfg.fps).limit_denominator(1001)
        ctx.bit_rate = cfg.bitrate
        ctx.gop_size = max(1, math.ceil(cfg.fps * cfg.keyframe_seconds * _GOP_SAFETY_FACTOR))
        # Sessions encode in parallel on the executor; one thread each is the cheapest.
        ctx.thread_count = 1
        # SPS/PPS go to extradata (the MP4 avcC box) instead of in-band.
        ctx.flags |= Flags.global_header
        ctx.options = {
            "preset": cfg.preset,
            "tune": "zerolatency",  # no B-frames, no lookahead: one packet per frame
            "forced-idr": "1",  # a forced keyframe is an IDR, so a clip can start there
            "maxrate": str(cfg.bitrate),
            "bufsize": str(cfg.bitrate * 2),
        }
        ctx.open()
        self._ctx = ctx
        self.stream = StreamInfo(ctx.width, ctx.height, bytes(ctx.extradata or b""), cfg.fps)
        return ctx

    @staticmethod
    def _conform(frame: av.VideoFrame, width: int, height: int) -> av.VideoFrame:
        image = frame.reformat(width=width, height=height, format="yuv420p")
        if image is frame:
            # reformat() hands back the caller's frame when nothing changes. The frame
            # is shared with the analysis pipeline, so copy before setting pts/type.
            image = av.VideoFrame.from_ndarray(frame.to_ndarray(), format="yuv420p")
        return image

    def _collect(self, packets: Sequence[av.Packet[Any]]) -> list[EncodedPacket]:
        out: list[EncodedPacket] = []
        for packet in packets:
            if packet.pts is None:
                continue
            encoded = EncodedPacket(packet.pts, bytes(packet), packet.is_keyframe)
            if encoded.keyframe:
                self._last_key = encoded.time
            out.append(encoded)
        return out


def encoded_size(width: int, height: int, max_width: int) -> tuple[int, int]:
    """The recording's size for a first frame of ``width`` × ``height``: at most
    ``max_width`` wide with the aspect kept, both even (yuv420p needs it)."""
    if width > max_width:
        height, width = round(height * max_width / width), max_width
    return max(2, width - width % 2), max(2, height - height % 2)


@dataclass(frozen=True, slots=True)
class AudioTrack:
    """A clip's audio: grid-contiguous AAC packets and their stream description."""

    stream: AudioStreamInfo
    packets: Sequence[AudioPacket]


def write_mp4(path: Path, stream: StreamInfo, packets: Sequence[EncodedPacket],
              audio: AudioTrack | None = None) -> int:
    """Remux ``packets`` (and ``audio``) into a faststart MP4 at ``path``; return its
    size in bytes. Audio pts are rebased by the first video frame's media time, so the
    tracks stay aligned.

    Written under a temporary name and renamed, so a reader never sees half a file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{secrets.token_hex(4)}.part")
    try:
        _mux(partial, stream, packets, audio)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path.stat().st_size


def _mux(target: Path, stream: StreamInfo, packets: Sequence[EncodedPacket],
         audio: AudioTrack | None) -> None:
    with av.open(io.BytesIO(), "w", format="mp4") as scratch, av.open(
        str(target), "w", format="mp4", container_options={"movflags": "+faststart"}
    ) as out:
        muxed = _clip_packets(packets, stream.fps, _video_stream(scratch, out, stream))
        if audio is not None and audio.packets:
            track = _audio_stream(scratch, out, audio.stream)
            origin = round(packets[0].pts * TIME_BASE * AUDIO_RATE)
            muxed += _audio_packets(audio.packets, origin, track)
        # In time order, so the file interleaves the tracks (progressive playback reads
        # it front to back); the sort is stable, so each track keeps its own order.
        for packet in sorted(muxed, key=_seconds):
            out.mux(packet)


def _seconds(packet: av.Packet[Stream]) -> float:
    assert packet.pts is not None and packet.time_base is not None
    return float(packet.pts * packet.time_base)


def _video_stream(scratch: av.container.OutputContainer, out: av.container.OutputContainer,
                  stream: StreamInfo) -> Stream:
    # PyAV opens (i.e. would re-create) the encoder of a plain add_stream(); a stream
    # made from a template is marked initialised and is only muxed. The template is a
    # never-written stream in a scratch container; the real SPS/PPS come from our
    # encoder's extradata, which the MP4 muxer turns into the avcC box.
    template = scratch.add_stream(
        "libx264", rate=Fraction(stream.fps).limit_denominator(1001),
        width=stream.width, height=stream.height,
    )
    video = out.add_stream_from_template(template)
    video.codec_context.extradata = stream.extradata
    video.codec_context.width = stream.width
    video.codec_context.height = stream.height
    video.codec_context.pix_fmt = "yuv420p"
    video.time_base = TIME_BASE
    return video


def _audio_stream(scratch: av.container.OutputContainer, out: av.container.OutputContainer,
                  info: AudioStreamInfo) -> Stream:
    # Same template trick as the video; the extradata is the AudioSpecificConfig,
    # which becomes the esds box.
    template = scratch.add_stream("aac", rate=AUDIO_RATE, layout="mono")
    track = out.add_stream_from_template(template)
    track.codec_context.extradata = info.extradata
    track.codec_context.bit_rate = info.bitrate
    track.time_base = AUDIO_TIME_BASE
    return track


def _audio_packets(packets: Sequence[AudioPacket], origin: int,
                   track: Stream) -> list[av.Packet[Stream]]:
    """Packets rebased by ``origin`` (samples). The first may start before 0: the MP4
    muxer writes an edit list so players skip that part, which keeps the audio track
    covering the video from its first frame."""
    out: list[av.Packet[Stream]] = []
    for encoded in packets:
        packet = av.Packet(encoded.data)
        packet.pts = packet.dts = encoded.pts - origin
        packet.duration = AAC_FRAME
        packet.time_base = AUDIO_TIME_BASE
        packet.is_keyframe = True  # every AAC frame decodes on its own
        packet.stream = track
        out.append(packet)
    return out


def _clip_packets(packets: Sequence[EncodedPacket], fps: float,
                  video: Stream) -> list[av.Packet[Stream]]:
    """Packets rebased to start at 0, each lasting until the next (the last: 1/fps)."""
    base = packets[0].pts
    last_duration = max(1, round(1 / fps / TIME_BASE))
    out: list[av.Packet[Stream]] = []
    for index, encoded in enumerate(packets):
        following = packets[index + 1].pts if index + 1 < len(packets) else None
        packet = av.Packet(encoded.data)
        packet.pts = packet.dts = encoded.pts - base
        packet.duration = following - encoded.pts if following is not None else last_duration
        packet.time_base = TIME_BASE
        packet.is_keyframe = encoded.keyframe
        packet.stream = video
        out.append(packet)
    return out


def span_audio(packets: Sequence[AudioPacket], stream: AudioStreamInfo, lo: float,
               hi: float) -> AudioTrack | None:
    """Audio covering [lo, hi) whole: the packets overlapping it, with silence in empty
    slots and at either end, so the track spans the video exactly (to within a frame);
    None without packets. ``packets`` are in pts order, on one grid."""
    if not packets:
        return None
    grid = packets[0].pts % AAC_FRAME  # every packet's pts is on this grid
    lo_s, hi_s = lo * AUDIO_RATE, hi * AUDIO_RATE
    first = math.floor((lo_s - grid) / AAC_FRAME) * AAC_FRAME + grid
    last = math.ceil((hi_s - grid) / AAC_FRAME) * AAC_FRAME + grid - AAC_FRAME
    chosen = [p for p in packets if first <= p.pts <= last]
    return AudioTrack(stream, fill_gaps(chosen, first, last, stream.silence))


# -- journals: the clip being recorded, on disk as it is recorded ----------------------

# A fragmented MP4 is playable up to its last whole fragment, while a plain one only
# becomes readable when its index (moov) is written at close: a clip is journaled as
# fragments while it records, so a crash (SIGKILL) leaves what was recorded recoverable.
# A fragment starts at each keyframe and lasts at most a second (audio keeps it moving
# if the camera stalls); flush_packets hands each one to the kernel at once, which is
# all a killed process needs. delay_moov keeps each track's start (audio begins later
# than video when the session's sound started later).
_JOURNAL_OPTIONS = {
    "movflags": "frag_keyframe+empty_moov+default_base_moof+delay_moov",
    "frag_duration": "1000000",  # µs
    "flush_packets": "1",
    "max_interleave_delta": "1000000",  # µs: a silent track holds video back no longer
}
# The journal's timestamps start at 0; the media time of its first frame is kept here.
_ORIGIN_TAG = "comment"
_ORIGIN_PREFIX = "proctor-media-origin-pts="


def journal_path(clips_dir: Path, clip_id: str) -> Path:
    """Where clip ``clip_id`` is journaled while it records (hidden: not a clip yet)."""
    return Path(clips_dir) / f".{clip_id}.journal.mp4"


class ClipJournal:
    """One clip's journal: the clip's media appended as fragments while it records.

    Thread-confined like the encoders (the recorder runs its journal operations one at a
    time on the executor). The file is opened on the first :meth:`append`; each video
    packet is held until the next one arrives, which gives its exact duration.
    """

    def __init__(self, path: Path, stream: StreamInfo, audio: AudioStreamInfo | None,
                 origin: int) -> None:
        self.path = path
        self._stream = stream
        self._audio_info = audio
        self._origin = origin  # video pts (TIME_BASE) of the journal's first frame
        self._audio_origin = round(origin * TIME_BASE * AUDIO_RATE)
        self._containers: tuple[av.container.OutputContainer, ...] = ()
        self._video: Stream | None = None
        self._audio: Stream | None = None
        self._held: EncodedPacket | None = None
        self._failed = False

    def append(self, video: Sequence[EncodedPacket], audio: Sequence[AudioPacket]) -> None:
        if self._failed:
            return  # said once; what it holds stays for recovery
        try:
            self._append(video, audio)
        except Exception:
            self._failed = True
            raise

    def _append(self, video: Sequence[EncodedPacket], audio: Sequence[AudioPacket]) -> None:
        if not self._containers:
            self._open()
        muxed: list[av.Packet[Stream]] = []
        for packet in video:
            if self._held is not None:
                muxed.append(self._video_packet(self._held, packet.pts - self._held.pts))
            self._held = packet
        if self._audio is not None:
            sound = [p for p in audio if p.pts >= self._audio_origin]
            muxed += _audio_packets(sound, self._audio_origin, self._audio)
        for out in sorted(muxed, key=_seconds):  # interleaved, as in a clip
            self._containers[-1].mux(out)

    def discard(self) -> None:
        """Close and delete: the clip was written (or cannot be)."""
        try:
            self._close()
        finally:
            self.path.unlink(missing_ok=True)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        scratch = av.open(io.BytesIO(), "w", format="mp4")
        out = av.open(str(self.path), "w", format="mp4", container_options=_JOURNAL_OPTIONS)
        self._containers = (scratch, out)
        out.metadata[_ORIGIN_TAG] = f"{_ORIGIN_PREFIX}{self._origin}"
        self._video = _video_stream(scratch, out, self._stream)
        if self._audio_info is not None:
            self._audio = _audio_stream(scratch, out, self._audio_info)

    def _video_packet(self, encoded: EncodedPacket, duration: int) -> av.Packet[Stream]:
        assert self._video is not None
        packet = av.Packet(encoded.data)
        packet.pts = packet.dts = encoded.pts - self._origin
        packet.duration = duration
        packet.time_base = TIME_BASE
        packet.is_keyframe = encoded.keyframe
        packet.stream = self._video
        return packet

    def _close(self) -> None:
        containers, self._containers = self._containers, ()
        for container in reversed(containers):
            container.close()


def recover_clip(clips_dir: Path, clip_id: str, session_id: str, flag_id: str,
                 config: EvidenceConfig) -> ClipRecord | None:
    """After a crash: turn clip ``clip_id``'s journal into the clip (a plain MP4 like any
    other, covering what was recorded up to the journal's last whole fragment); None when
    no journal holds a frame of it. The journal is removed either way."""
    journal = journal_path(clips_dir, clip_id)
    if not journal.is_file():
        return None
    try:
        read = _read_journal(journal, config)
        if read is None:
            log.info("clip %s: its journal holds no whole frame", clip_id)
            return None
        stream, packets, audio = read
        path = Path(clips_dir) / f"{clip_id}.mp4"
        size = write_mp4(path, stream, packets, audio)
    except (av.FFmpegError, OSError, ValueError) as exc:
        log.warning("clip %s: its journal cannot be read: %s", clip_id, exc)
        return None
    finally:
        journal.unlink(missing_ok=True)
    return ClipRecord(clip_id=clip_id, session_id=session_id, flag_id=flag_id,
                      path=str(path), start=packets[0].time, end=packets[-1].time,
                      size_bytes=size, created_at=utc_now_iso())


def _read_journal(journal: Path, config: EvidenceConfig,
                  ) -> tuple[StreamInfo, list[EncodedPacket], AudioTrack | None] | None:
    """The journal's packets on the media-time clock, with what a muxer needs."""
    with av.open(str(journal)) as source:
        tag = source.metadata.get(_ORIGIN_TAG, "")
        origin = int(tag.removeprefix(_ORIGIN_PREFIX)) if tag.startswith(_ORIGIN_PREFIX) else 0
        video_in = source.streams.video[0]
        audio_in = source.streams.audio[0] if source.streams.audio else None
        stream = StreamInfo(video_in.codec_context.width, video_in.codec_context.height,
                            bytes(video_in.codec_context.extradata or b""), config.fps)
        packets: list[EncodedPacket] = []
        sound: list[AudioPacket] = []
        audio_origin = round(origin * TIME_BASE * AUDIO_RATE)
        # A journal cut short by the crash ends in a torn fragment: keep what came before.
        with contextlib.suppress(av.FFmpegError):
            for packet in source.demux():
                if packet.pts is None or packet.time_base is None or packet.is_corrupt:
                    continue
                if packet.stream is video_in and (packets or packet.is_keyframe):
                    pts = origin + round(packet.pts * packet.time_base / TIME_BASE)
                    packets.append(EncodedPacket(pts, bytes(packet), packet.is_keyframe))
                elif packet.stream is audio_in:
                    pts = audio_origin + round(packet.pts * packet.time_base * AUDIO_RATE)
                    sound.append(AudioPacket(pts, bytes(packet)))
        audio_info = None
        if audio_in is not None:
            audio_info = AudioStreamInfo.for_config(
                bytes(audio_in.codec_context.extradata or b""), config.audio_bitrate)
    if not packets:
        return None
    audio = None
    if audio_info is not None:
        audio = span_audio(sound, audio_info, packets[0].time,
                           packets[-1].time + 1 / config.fps)
    return stream, packets, audio


class EvidenceRecorder:
    """Rolling H.264 + AAC buffers of one session's media, and the clips cut from them.

    Call :meth:`push_video` and :meth:`push_audio` for every received frame, :meth:`open_clip` and
    :meth:`close_clip` as flags open and close, and :meth:`aclose` when the session
    ends. Each finished clip lands in ``clips_dir/<clip_id>.mp4`` and is reported
    through ``on_clip``. A clip is written once media up to ``end + post_seconds`` is
    encoded, or as soon as it reaches ``max_clip_seconds`` (even if its flag is still
    open: the cap keeps the first part, so nothing later could change it). Once audio
    has been heard, a due clip also waits (briefly) for the audio up to its end.
    """

    def __init__(
        self,
        session_id: str,
        config: EvidenceConfig,
        clips_dir: Path,
        executor: concurrent.futures.Executor,
        on_clip: ClipCallback,
        lookback_seconds: float = 0.0,
        batch_seconds: float = ENCODE_BATCH_SECONDS,
    ) -> None:
        self._session_id = session_id
        # A flag is opened only once its condition has lasted a while, with its start
        # back at the onset: the buffer keeps that much more lead-in for it.
        self._lookback = lookback_seconds
        self._config = config
        self._clips_dir = Path(clips_dir)
        self._executor = executor
        self._on_clip = on_clip
        self._encoder = _H264Encoder(config)
        self._gate = _FrameGate(config.fps)
        self._queue: deque[tuple[av.VideoFrame, float]] = deque()
        self._queue_limit = max(2, math.ceil(2 * config.fps))
        self._dropped = 0
        self._gops: deque[list[EncodedPacket]] = deque()  # each list starts at a keyframe
        # audio_bitrate 0 turns the sound off: clips are video-only.
        self._audio_encoder = AacEncoder(config.audio_bitrate) if config.audio_bitrate > 0 else None
        self._audio_queue: deque[tuple[av.AudioFrame, float]] = deque()
        self._dropped_audio = 0
        self._audio_heard = False  # any audio pushed: clips then wait for it
        self._audio: deque[AudioPacket] = deque()  # in pts order, on the slot grid
        self._audio_stream: AudioStreamInfo | None = None
        self._flushed = False  # encoders drained at close: nothing more will come
        self._newest: float | None = None
        self._stream: StreamInfo | None = None
        self._pending: dict[str, _PendingClip] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._encode_task: asyncio.Task[None] | None = None
        self._close_task: asyncio.Task[None] | None = None
        self._batch_seconds = batch_seconds
        self._closing = asyncio.Event()  # cuts a batch's wait short at close
        # Journal operations (file writes), run in order, one executor job at a time.
        self._journal_ops: deque[Callable[[], None]] = deque()
        self._journal_task: asyncio.Task[None] | None = None
        self.encode_jobs = 0  # executor jobs run for encoding (batching keeps it low)

    # -- public API ------------------------------------------------------------

    @property
    def dropped_frames(self) -> int:
        """Frames lost because the encoder fell behind (the oldest queued go first)."""
        return self._dropped

    @property
    def dropped_audio_frames(self) -> int:
        """Audio frames lost because the encoder fell behind (the oldest go first; the
        hole they leave plays as silence, and later audio keeps its place)."""
        return self._dropped_audio

    @property
    def buffered_audio_seconds(self) -> float:
        """Media seconds of encoded audio held in memory."""
        if not self._audio:
            return 0.0
        return self._audio[-1].end - self._audio[0].time

    @property
    def newest_media_time(self) -> float | None:
        """Media time of the newest *encoded* frame, or None before the first."""
        return self._newest

    @property
    def buffered_seconds(self) -> float:
        """Media seconds of encoded video held in memory."""
        if self._newest is None or not self._gops:
            return 0.0
        return self._newest - self._gops[0][0].time

    def push_video(self, frame: av.VideoFrame, media_time: float) -> None:
        """Queue a received frame; O(1), never waits on the encoder."""
        if self._close_task is not None or not self._gate.accept(media_time):
            return
        if len(self._queue) >= self._queue_limit:
            self._queue.popleft()
            self._dropped += 1
        self._queue.append((frame, media_time))
        self._kick()

    def push_audio(self, frame: av.AudioFrame, media_time: float) -> None:
        """Queue a received audio frame; O(1), never waits on the encoder."""
        if self._close_task is not None or self._audio_encoder is None:
            return
        if len(self._audio_queue) >= _AUDIO_QUEUE_FRAMES:
            self._audio_queue.popleft()
            self._dropped_audio += 1
        self._audio_queue.append((frame, media_time))
        self._audio_heard = True
        self._kick()

    def open_clip(self, clip_id: str, flag_id: str, start: float) -> None:
        if Path(clip_id).name != clip_id or clip_id.startswith("."):
            raise ValueError(f"clip id {clip_id!r} is not a plain file name")
        if self._close_task is not None:
            log.warning("evidence[%s]: clip %s opened after close; ignored",
                        self._session_id, clip_id)
            return
        if clip_id in self._pending:
            log.warning("evidence[%s]: clip %s is already open", self._session_id, clip_id)
            return
        clip = self._pending[clip_id] = _PendingClip(clip_id, flag_id, start)
        self._start_journal(clip)  # its lead-in is already encoded

    def close_clip(self, clip_id: str, end: float) -> None:
        clip = self._pending.get(clip_id)
        if clip is None:
            # Normal for a clip already written at max_clip_seconds.
            log.debug("evidence[%s]: close of clip %s that is not pending",
                      self._session_id, clip_id)
            return
        clip.end = max(end, clip.start)
        self._finish_ready()  # the media may already be there

    async def aclose(self) -> None:
        """Flush the encoder, write every pending clip, await their callbacks."""
        if self._close_task is None:
            self._close_task = asyncio.get_running_loop().create_task(
                self._close(), name=f"evidence:{self._session_id}:close")
        # Shielded: a caller cancelled mid-close must not leave half-written clips.
        await asyncio.shield(self._close_task)

    # -- encoding --------------------------------------------------------------

    def _kick(self) -> None:
        if self._encode_task is None:
            self._encode_task = self._spawn(self._encode_loop(), "encode")

    async def _encode_loop(self) -> None:
        # One job at a time encodes both tracks: each encoder stays thread-confined,
        # and a session never holds more than one executor worker.
        loop = asyncio.get_running_loop()
        try:
            while self._queue or self._audio_queue:
                if self._batch_seconds > 0 and not self._closing.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._closing.wait(), self._batch_seconds)
                video, audio = list(self._queue), list(self._audio_queue)
                self._queue.clear()
                self._audio_queue.clear()
                self.encode_jobs += 1
                packets, sound = await loop.run_in_executor(
                    self._executor, self._encode_job, video, audio)
                self._absorb(packets, sound)
        finally:
            self._encode_task = None

    def _encode_job(self, video: list[tuple[av.VideoFrame, float]],
                    audio: list[tuple[av.AudioFrame, float]],
                    ) -> tuple[list[EncodedPacket], list[AudioPacket]]:
        """Executor side: a failing track loses its batch, never the other's."""
        packets: list[EncodedPacket] = []
        sound: list[AudioPacket] = []
        if video:
            try:
                packets = self._encoder.encode(video)
            except Exception:
                log.exception("evidence[%s]: encoding %d frames failed",
                              self._session_id, len(video))
        if audio and self._audio_encoder is not None:
            try:
                sound = self._audio_encoder.encode(audio)
            except Exception:
                log.exception("evidence[%s]: encoding %d audio frames failed",
                              self._session_id, len(audio))
        return packets, sound

    def _flush_job(self) -> tuple[list[EncodedPacket], list[AudioPacket]]:
        packets: list[EncodedPacket] = []
        sound: list[AudioPacket] = []
        try:
            packets = self._encoder.flush()
        except Exception:
            log.exception("evidence[%s]: flushing the encoder failed", self._session_id)
        if self._audio_encoder is not None:
            try:
                sound = self._audio_encoder.flush()
            except Exception:
                log.exception("evidence[%s]: flushing the audio encoder failed",
                              self._session_id)
        return packets, sound

    def _absorb(self, packets: Sequence[EncodedPacket],
                sound: Sequence[AudioPacket] = ()) -> None:
        """Add encoded packets (on the loop), then write due clips and trim."""
        self._stream = self._encoder.stream
        for packet in packets:
            if packet.keyframe or not self._gops:
                self._gops.append([])
            self._gops[-1].append(packet)
            self._newest = packet.time
        if sound and self._audio_encoder is not None:
            self._audio_stream = self._audio_encoder.stream
            self._audio.extend(sound)
        if packets or sound:
            self._feed_journals(packets, sound)
            self._finish_ready()
            self._trim()

    def _trim(self) -> None:
        self._trim_video()
        self._trim_audio()  # after the video: what it keeps bounds what audio is needed

    def _trim_video(self) -> None:
        """Drop whole GOPs no one can need: a clip starts on a keyframe at or before
        ``start - pre``, so only the GOP holding that instant must be kept."""
        if self._newest is None:
            return
        cutoff = (self._newest - self._lookback - self._config.pre_seconds
                  - self._config.keyframe_seconds)
        for clip in self._pending.values():
            cutoff = min(cutoff, clip.start - self._config.pre_seconds)
        while len(self._gops) > 1 and self._gops[1][0].time <= cutoff:
            self._gops.popleft()

    def _trim_audio(self) -> None:
        """Drop audio no clip can reach: a clip's audio spans its video, which starts
        at a kept keyframe; without video (yet), keep the video rule's horizon."""
        if not self._audio:
            return
        cfg = self._config
        floor = (self._audio[-1].end - self._lookback - cfg.pre_seconds
                 - 2 * cfg.keyframe_seconds - _AUDIO_SLACK_SECONDS)
        for clip in self._pending.values():
            floor = min(floor, self._anchor(clip.start - cfg.pre_seconds))
        if self._gops:
            floor = max(floor, self._gops[0][0].time)
        while self._audio and self._audio[0].end <= floor:
            self._audio.popleft()

    # -- clips -----------------------------------------------------------------

    def _anchor(self, at: float) -> float:
        """Time of the keyframe a clip reaching back to ``at`` would start on."""
        anchor = self._gops[0][0].time if self._gops else at
        for gop in self._gops:
            if gop[0].time > at:
                break
            anchor = gop[0].time
        return anchor

    def _due(self, clip: _PendingClip) -> float:
        """Media time after which nothing more can enter this clip."""
        cfg = self._config
        cap_end = self._anchor(clip.start - cfg.pre_seconds) + cfg.max_clip_seconds
        if clip.end is None:
            return cap_end
        return min(cap_end, clip.end + cfg.post_seconds)

    def _finish_ready(self) -> None:
        if self._newest is None:
            return
        newest = self._newest
        due = [c for c in self._pending.values() if self._ready(self._due(c), newest)]
        for clip in due:
            del self._pending[clip.clip_id]
            self._start_write(clip)

    def _ready(self, due: float, newest: float) -> bool:
        """Video reached ``due``, and so did the audio unless it has none or stalled."""
        if newest < due:
            return False
        if not self._audio_heard or self._flushed:
            return True
        # The clip's video ends at most one frame after ``due``.
        audio_end = self._audio[-1].end if self._audio else -math.inf
        return (audio_end >= due + 1 / self._config.fps
                or newest >= due + _AUDIO_GRACE_SECONDS)

    def _start_write(self, clip: _PendingClip) -> None:
        upto = math.inf if clip.end is None else clip.end + self._config.post_seconds
        packets = self._cut(clip.start - self._config.pre_seconds, upto)
        if not packets or self._stream is None:
            log.info("evidence[%s]: clip %s has no video in its time range; skipped",
                     self._session_id, clip.clip_id)
            self._discard_journal(clip)
            return
        audio = self._cut_audio(packets[0].time, packets[-1].time + 1 / self._config.fps)
        self._spawn(self._write(clip, packets, self._stream, audio), f"clip:{clip.clip_id}")

    def _cut(self, lo: float, hi: float) -> list[EncodedPacket]:
        """Packets from the keyframe at or before ``lo`` up to ``hi``, capped in length;
        empty when no frame falls inside [lo, hi]."""
        anchor = self._anchor(lo)
        packets = [p for gop in self._gops for p in gop if anchor <= p.time <= hi]
        if not any(p.time >= lo for p in packets):
            return []
        cap = packets[0].pts + round(self._config.max_clip_seconds / TIME_BASE)
        return [p for p in packets if p.pts <= cap]

    def _cut_audio(self, lo: float, hi: float) -> AudioTrack | None:
        """Audio covering [lo, hi) whole (see :func:`span_audio`); None when the session
        has no audio."""
        if self._audio_stream is None:
            return None
        return span_audio(self._audio, self._audio_stream, lo, hi)

    async def _write(self, clip: _PendingClip, packets: list[EncodedPacket],
                     stream: StreamInfo, audio: AudioTrack | None) -> None:
        path = self._clips_dir / f"{clip.clip_id}.mp4"
        loop = asyncio.get_running_loop()
        try:
            size = await loop.run_in_executor(
                self._executor, write_mp4, path, stream, packets, audio)
        except Exception:
            log.exception("evidence[%s]: writing clip %s failed",
                          self._session_id, clip.clip_id)
            self._discard_journal(clip)
            return
        record = ClipRecord(
            clip_id=clip.clip_id, session_id=self._session_id, flag_id=clip.flag_id,
            path=str(path), start=packets[0].time, end=packets[-1].time,
            size_bytes=size, created_at=utc_now_iso(),
        )
        try:
            await self._on_clip(record)
        except Exception:
            log.exception("evidence[%s]: on_clip for %s failed",
                          self._session_id, clip.clip_id)
        # Only now: until the clip is stored, a crash must still find its journal.
        self._discard_journal(clip)

    # -- journals ----------------------------------------------------------------

    def _start_journal(self, clip: _PendingClip) -> None:
        """Begin journaling ``clip`` with what is buffered of it, once there is video."""
        if clip.journal is not None or self._stream is None:
            return
        packets = self._cut(clip.start - self._config.pre_seconds, math.inf)
        if not packets:
            return
        audio = self._audio_stream if self._audio_encoder is not None else None
        clip.journal = ClipJournal(journal_path(self._clips_dir, clip.clip_id),
                                   self._stream, audio, packets[0].pts)
        self._journal(clip.journal.append, packets, list(self._audio))

    def _feed_journals(self, packets: Sequence[EncodedPacket],
                       sound: Sequence[AudioPacket]) -> None:
        for clip in self._pending.values():
            if clip.journal is None:
                self._start_journal(clip)  # the buffer holds the new packets too
            else:
                self._journal(clip.journal.append, list(packets), list(sound))

    def _discard_journal(self, clip: _PendingClip) -> None:
        if clip.journal is not None:
            self._journal(clip.journal.discard)
            clip.journal = None

    def _journal(self, op: Callable[..., None], *args: Any) -> None:
        self._journal_ops.append(functools.partial(op, *args))
        if self._journal_task is None:
            self._journal_task = self._spawn(self._journal_loop(), "journal")

    async def _journal_loop(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._journal_ops:
                ops = list(self._journal_ops)
                self._journal_ops.clear()
                await loop.run_in_executor(self._executor, self._run_journal_ops, ops)
        finally:
            self._journal_task = None

    def _run_journal_ops(self, ops: list[Callable[[], None]]) -> None:
        """Executor side. A failing journal costs crash recovery that clip, nothing else:
        the clip itself is still cut from memory."""
        for op in ops:
            try:
                op()
            except Exception:
                log.exception("evidence[%s]: journal write failed", self._session_id)

    # -- lifecycle ---------------------------------------------------------------

    async def _close(self) -> None:
        self._closing.set()
        if self._encode_task is not None:
            await asyncio.wait({self._encode_task})  # it drains the queue, then ends
        packets, sound = await asyncio.get_running_loop().run_in_executor(
            self._executor, self._flush_job)
        self._flushed = True
        self._absorb(packets, sound)
        for clip in list(self._pending.values()):
            self._start_write(clip)  # an open clip ends at the newest media time
        self._pending.clear()
        while pending := {task for task in self._tasks if not task.done()}:
            await asyncio.wait(pending)
        self._gops.clear()
        self._audio.clear()

    def _spawn(self, coro: Coroutine[Any, Any, None], what: str) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(
            coro, name=f"evidence:{self._session_id}:{what}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("evidence[%s]: task %s failed", self._session_id, task.get_name(),
                      exc_info=task.exception())
