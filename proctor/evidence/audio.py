"""The evidence recording's sound: WebRTC audio encoded once to AAC, kept as packets.

Audio is placed on a sample timeline that *is* media time (sample ``n`` plays at
``n / AUDIO_RATE`` seconds), so a clip aligns it with the video by arithmetic alone.
Input arrives as 20 ms Opus-decoded frames; they are mixed down to mono, re-cut into
the 1024-sample frames AAC needs, and encoded on a fixed grid of 1024-sample slots.

Gaps (lost packets, a dropped queue, a muted or reconnected track) never shift later
audio: a short gap is encoded as silence; a long one (over :data:`MAX_SILENCE_FILL`)
ends the encoder and starts a new one further along the same grid, so no CPU is spent
encoding minutes of nothing. The slots in between hold no packet; a clip fills them
with :attr:`AudioStreamInfo.silence`, a pre-encoded silent AAC frame.

Thread-confined like the video encoder: one executor job at a time touches it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import numpy as np
import numpy.typing as npt
from av.codec.context import Flags

AUDIO_RATE = 48_000  # WebRTC's Opus rate: no resampling on the usual path
AAC_FRAME = 1024  # samples per AAC-LC frame (and per packet)
AUDIO_TIME_BASE = Fraction(1, AUDIO_RATE)
# 1 ms of timing slack: RTP audio timestamps are sample-exact, but media times are
# floats; smaller deviations are rounding, not gaps, and must not insert clicks.
JITTER_SAMPLES = 48
# Longest gap encoded as silence (it costs CPU like sound does); longer
# gaps restart the encoder and are filled at clip time with pre-encoded silence.
MAX_SILENCE_FILL = 2 * AUDIO_RATE

Samples = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class AudioPacket:
    """One AAC frame; ``pts`` counts samples of media time, so it lies on the grid."""

    pts: int
    data: bytes

    @property
    def time(self) -> float:
        return self.pts / AUDIO_RATE

    @property
    def end(self) -> float:
        return (self.pts + AAC_FRAME) / AUDIO_RATE


@dataclass(frozen=True, slots=True)
class AudioStreamInfo:
    """What a muxer needs: the AudioSpecificConfig, and a silent frame for gaps."""

    extradata: bytes
    silence: bytes
    bitrate: int

    @classmethod
    def for_config(cls, extradata: bytes, bitrate: int) -> AudioStreamInfo:
        """The description of a track our encoder wrote at ``bitrate`` (one read back
        from a file), with a fresh silent frame for its gaps."""
        return cls(extradata, _silent_frame(bitrate), bitrate)


def fill_gaps(packets: Sequence[AudioPacket], first: int, last: int,
              silence: bytes) -> list[AudioPacket]:
    """``packets`` with every empty grid slot from ``first`` to ``last`` (slot pts,
    inclusive) filled with ``silence``, so the track plays continuously."""
    out: list[AudioPacket] = []
    slot = first
    for packet in packets:
        # ``<=`` with a whole frame to spare: a packet off the grid (never expected)
        # leaves a hole rather than overlapping its neighbour.
        while slot + AAC_FRAME <= packet.pts:
            out.append(AudioPacket(slot, silence))
            slot += AAC_FRAME
        out.append(packet)
        slot = packet.pts + AAC_FRAME
    while slot <= last:
        out.append(AudioPacket(slot, silence))
        slot += AAC_FRAME
    return out


def downmix(frame: av.AudioFrame) -> Samples:
    """The frame as mono float32 in [-1, 1]: the mean of its channels.

    A plain mean, unlike libswresample's downmix (which sums at -3 dB each and can
    push in-phase full-scale stereo past 1.0 into the encoder's clipping). Done as one
    matrix-vector product with the scale folded in: numpy's mean over a 2-wide axis
    costs ~30 µs a frame, this ~3.
    """
    data = frame.to_ndarray()
    channels = frame.layout.nb_channels
    if data.dtype == np.uint8:
        offset, scale = 128.0, 1 / 128
    elif np.issubdtype(data.dtype, np.integer):
        offset, scale = 0.0, 1 / float(2 ** (8 * data.dtype.itemsize - 1))
    else:
        offset, scale = 0.0, 1.0
    weights = np.full(channels, scale / channels, dtype=np.float32)
    samples = data.astype(np.float32)
    if offset:
        samples -= offset
    if frame.format.is_planar:
        mono: Samples = weights @ samples  # (channels, n)
    else:
        mono = samples.reshape(-1, channels) @ weights  # interleaved
    return mono


class AacEncoder:
    """FFmpeg's native ``aac`` encoder, mono at 48 kHz, on the media-time grid."""

    def __init__(self, bitrate: int) -> None:
        self._bitrate = bitrate
        self._ctx: av.AudioCodecContext | None = None
        self._resampler: av.AudioResampler | None = None
        self._resampler_key: tuple[str, str, int] | None = None
        self._pending: Samples = np.zeros(0, dtype=np.float32)
        self._pending_pts: int | None = None  # sample index of _pending[0]
        self.stream: AudioStreamInfo | None = None  # set once the encoder is open

    def encode(self, batch: Sequence[tuple[av.AudioFrame, float]]) -> list[AudioPacket]:
        packets: list[AudioPacket] = []
        for frame, media_time in batch:
            packets.extend(self._place(self._mono(frame), round(media_time * AUDIO_RATE)))
        return packets

    def flush(self) -> list[AudioPacket]:
        """Encode what is buffered (padded to a whole frame) and drain the encoder."""
        if self._pending_pts is None:
            return []
        whole = -len(self._pending) % AAC_FRAME
        self._pending = np.concatenate([self._pending, np.zeros(whole, dtype=np.float32)])
        packets = self._drain()
        if self._ctx is not None:
            packets.extend(self._collect(self._ctx.encode(None)))
            self._ctx = None  # a flushed encoder takes no more frames; the next opens anew
        return packets

    # -- timeline ----------------------------------------------------------------

    def _place(self, samples: Samples, start: int) -> list[AudioPacket]:
        """Put ``samples`` at sample index ``start``, keeping later audio in sync."""
        packets: list[AudioPacket] = []
        if self._pending_pts is None:
            self._pending_pts = start
        gap = start - (self._pending_pts + len(self._pending))
        if gap > MAX_SILENCE_FILL:
            packets.extend(self._regrid(start))
        elif gap > JITTER_SAMPLES:
            samples = np.concatenate([np.zeros(gap, dtype=np.float32), samples])
        elif gap < -JITTER_SAMPLES:
            samples = samples[-gap:]  # overlaps audio already placed (clock clamp)
        self._pending = np.concatenate([self._pending, samples])
        packets.extend(self._drain())
        return packets

    def _regrid(self, start: int) -> list[AudioPacket]:
        """End this encoder and continue the grid at the slot at or before ``start``.

        The new encoder's first packet is its priming frame, one slot before its
        first input: the slot after the old encoder's last packet must be free for it.
        """
        packets = self.flush()
        assert self._pending_pts is not None
        slot = self._pending_pts + (start - self._pending_pts) // AAC_FRAME * AAC_FRAME
        self._pending = np.zeros(start - slot, dtype=np.float32)
        self._pending_pts = slot
        return packets

    def _drain(self) -> list[AudioPacket]:
        """Encode every whole frame buffered."""
        assert self._pending_pts is not None
        count = len(self._pending) // AAC_FRAME
        packets: list[AudioPacket] = []
        for index in range(count):
            chunk = self._pending[index * AAC_FRAME : (index + 1) * AAC_FRAME]
            packets.extend(self._encode_chunk(chunk, self._pending_pts + index * AAC_FRAME))
        self._pending = self._pending[count * AAC_FRAME :]
        self._pending_pts += count * AAC_FRAME
        return packets

    def _encode_chunk(self, chunk: Samples, pts: int) -> list[AudioPacket]:
        ctx = self._ctx if self._ctx is not None else self._open()
        frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="fltp", layout="mono")
        frame.sample_rate = AUDIO_RATE
        frame.pts = pts
        frame.time_base = AUDIO_TIME_BASE
        return self._collect(ctx.encode(frame))

    # -- codec -------------------------------------------------------------------

    def _open(self) -> av.AudioCodecContext:
        ctx = _aac_context(self._bitrate)
        if self.stream is None:
            self.stream = AudioStreamInfo(
                bytes(ctx.extradata or b""), _silent_frame(self._bitrate), self._bitrate)
        self._ctx = ctx
        return ctx

    @staticmethod
    def _collect(packets: Sequence[av.Packet[Any]]) -> list[AudioPacket]:
        return [AudioPacket(p.pts, bytes(p)) for p in packets if p.pts is not None]

    def _mono(self, frame: av.AudioFrame) -> Samples:
        if frame.sample_rate == AUDIO_RATE:
            return downmix(frame)
        # Not WebRTC's rate (another source): resample, keeping the layout.
        key = (frame.format.name, frame.layout.name, frame.sample_rate)
        if self._resampler is None or key != self._resampler_key:
            self._resampler = av.AudioResampler(format="fltp", rate=AUDIO_RATE)
            self._resampler_key = key
        parts = [downmix(out) for out in self._resampler.resample(frame)]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


def _aac_context(bitrate: int) -> av.AudioCodecContext:
    ctx = av.CodecContext.create("aac", "w")
    ctx.sample_rate = AUDIO_RATE
    ctx.layout = "mono"  # speech evidence: mono halves the encode cost
    ctx.format = "fltp"
    ctx.bit_rate = bitrate
    ctx.time_base = AUDIO_TIME_BASE
    ctx.thread_count = 1
    ctx.flags |= Flags.global_header  # AudioSpecificConfig to extradata (the esds box)
    # The "fast" quantiser search instead of the default "twoloop": on real speech at
    # 64 kbit/s mono it costs ~3 ms of CPU per second of audio instead of ~9, at the
    # same bitrate and a higher waveform SNR (32 vs 25 dB on LibriVox).
    ctx.options = {"aac_coder": "fast"}
    ctx.open()
    return ctx


def _silent_frame(bitrate: int) -> bytes:
    """A steady-state AAC frame of digital silence from an encoder like ours.

    Raw AAC frames carry no bit reservoir across packets, so this frame can stand in
    any empty slot of any stream with the same AudioSpecificConfig.
    """
    ctx = _aac_context(bitrate)
    zeros = np.zeros((1, AAC_FRAME), dtype=np.float32)
    packets: list[bytes] = []
    for index in range(4):  # past the priming frame and the first real one
        frame = av.AudioFrame.from_ndarray(zeros, format="fltp", layout="mono")
        frame.sample_rate = AUDIO_RATE
        frame.pts = index * AAC_FRAME
        packets.extend(bytes(p) for p in ctx.encode(frame))
    return packets[-1]
