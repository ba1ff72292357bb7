"""The video jitter buffer gives a lost packet a moment to be retransmitted, then skips
it and asks for a keyframe; audio buffers are aiortc's own. Real RTP packets, a clock
the test moves (no sleeps)."""

from __future__ import annotations

import aiortc.rtcrtpreceiver
from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtp import RtpPacket

from signaling.jitter import HOLE_WAIT_SECONDS, HoleSkippingJitterBuffer, install_jitter_buffer

PACKETS_PER_FRAME = 3
FRAME_TICKS = 9000  # 90 kHz clock, 10 fps


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def packet(frame: int, part: int) -> RtpPacket:
    rtp = RtpPacket(payload_type=97, sequence_number=frame * PACKETS_PER_FRAME + part,
                    timestamp=frame * FRAME_TICKS, payload=b"x")
    rtp._data = bytes([frame, part])  # type: ignore[attr-defined]  # what depayload sets
    return rtp


def video_buffer() -> tuple[HoleSkippingJitterBuffer, Clock]:
    buffer = HoleSkippingJitterBuffer(capacity=512, is_video=True)
    clock = Clock()
    buffer.clock = clock
    return buffer, clock


def feed(buffer: HoleSkippingJitterBuffer, frames: range,
         skip: set[tuple[int, int]] = frozenset()) -> list[tuple[int, bool]]:  # type: ignore[assignment]
    """Every packet of ``frames`` but ``skip``; (frame number, PLI) of each frame out."""
    out = []
    for frame in frames:
        for part in range(PACKETS_PER_FRAME):
            if (frame, part) in skip:
                continue
            pli, done = buffer.add(packet(frame, part))
            if done is not None:
                out.append((done.timestamp // FRAME_TICKS, pli))
    return out


def test_frames_come_out_in_order_when_nothing_is_lost() -> None:
    buffer, _ = video_buffer()
    assert [f for f, _ in feed(buffer, range(10))] == list(range(9))  # the 10th awaits its end
    assert buffer.holes_skipped == 0


def test_a_hole_is_skipped_after_the_wait_with_a_keyframe_request() -> None:
    buffer, clock = video_buffer()
    assert [f for f, _ in feed(buffer, range(3))] == [0, 1]
    lost = {(3, p) for p in range(3)} | {(4, 0)}  # a drop: frame 3 and frame 4's start
    assert feed(buffer, range(3, 8), skip=lost) == []  # waiting for the retransmission
    clock.now += HOLE_WAIT_SECONDS - 0.01
    assert feed(buffer, range(8, 9)) == []
    clock.now += 0.02
    out = feed(buffer, range(9, 12))
    # Frame 2 (cut by the hole) and frame 4 (its start lost) are dropped; the keyframe
    # request goes with the first frame after the hole.
    assert out[0] == (5, True)
    assert [f for f, _ in out] == [5, 6, 7, 8, 9, 10]
    assert buffer.holes_skipped == 1


def test_a_retransmission_within_the_wait_fills_the_hole() -> None:
    buffer, clock = video_buffer()
    feed(buffer, range(3))
    assert feed(buffer, range(3, 6), skip={(3, 1)}) == [(2, False)]
    clock.now += HOLE_WAIT_SECONDS / 2
    pli, frame = buffer.add(packet(3, 1))  # the NACKed packet arrives
    assert frame is not None and frame.timestamp == 3 * FRAME_TICKS and not pli
    assert [f for f, _ in feed(buffer, range(6, 10))] == [4, 5, 6, 7, 8]
    assert buffer.holes_skipped == 0


def test_a_late_retransmission_after_a_skip_does_not_empty_the_buffer() -> None:
    buffer, clock = video_buffer()
    feed(buffer, range(3))
    lost = {(f, p) for f in range(3, 60) for p in range(3)}  # 171 packets: a long drop
    feed(buffer, range(3, 62), skip=lost)
    clock.now += HOLE_WAIT_SECONDS
    assert [f for f, _ in feed(buffer, range(62, 63))] == [61]
    pli, frame = buffer.add(packet(10, 0))  # a retransmission from inside the drop
    assert (pli, frame) == (False, None)
    assert [f for f, _ in feed(buffer, range(63, 66))] == [62, 63, 64]


def test_audio_buffers_are_aiortcs_own() -> None:
    original = aiortc.rtcrtpreceiver.JitterBuffer
    install_jitter_buffer()
    assert aiortc.rtcrtpreceiver.JitterBuffer is HoleSkippingJitterBuffer
    ours = HoleSkippingJitterBuffer(capacity=16, prefetch=4)
    ours.clock = Clock()
    theirs = JitterBuffer(capacity=16, prefetch=4)
    assert original in (JitterBuffer, HoleSkippingJitterBuffer)
    for number in (0, 1, 3, 4, 5, 6, 7, 8):  # 2 lost
        ours.clock.now += 1.0  # far past the video wait: audio never skips on time
        rtp = packet(number, 0)
        rtp.sequence_number = number
        mine, reference = ours.add(rtp), theirs.add(rtp)
        assert mine[0] == reference[0]
        assert (mine[1] and mine[1].timestamp) == (reference[1] and reference[1].timestamp)
    assert ours.holes_skipped == 0
