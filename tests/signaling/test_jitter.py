"""Our jitter buffer: for video it gives a lost packet a moment to be retransmitted, then
skips it and asks for a keyframe; otherwise (audio always, video until a hole has waited)
it gives the frames aiortc's own buffer gives for the same packets, compared packet by
packet. Real RTP packets, a clock the test moves (no sleeps)."""

from __future__ import annotations

import random

import aiortc.rtcrtpreceiver
import pytest
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


def test_install_makes_aiortcs_receivers_build_our_buffer() -> None:
    original = aiortc.rtcrtpreceiver.JitterBuffer  # type: ignore[attr-defined]
    try:
        install_jitter_buffer()
        installed: object = aiortc.rtcrtpreceiver.JitterBuffer  # type: ignore[attr-defined]
        assert installed is HoleSkippingJitterBuffer
    finally:
        aiortc.rtcrtpreceiver.JitterBuffer = original  # type: ignore[attr-defined]


def test_audio_never_skips_a_hole_on_time() -> None:
    ours = HoleSkippingJitterBuffer(capacity=16, prefetch=4)
    ours.clock = clock = Clock()
    theirs = JitterBuffer(capacity=16, prefetch=4)
    for number in (0, 1, 3, 4, 5, 6, 7, 8):  # 2 lost
        clock.now += 1.0  # far past the video wait
        arriving = packet(number, 0)
        arriving.sequence_number = number
        mine, reference = ours.add(arriving), theirs.add(arriving)
        assert mine[0] == reference[0]
        assert (mine[1] and mine[1].timestamp) == (reference[1] and reference[1].timestamp)
    assert ours.holes_skipped == 0


# Against aiortc's own buffer: the same packets in, the same (PLI, frame) out, packet by
# packet. Video too, while no hole has waited out HOLE_WAIT_SECONDS (the clock stands).

Arrival = tuple[int, int]  # (sequence number, timestamp)
Output = tuple[bool, bytes | None, int | None]  # (PLI, frame data, frame timestamp)


def rtp(sequence_number: int, timestamp: int) -> RtpPacket:
    packet = RtpPacket(payload_type=97, sequence_number=sequence_number % 65536,
                       timestamp=timestamp % 2**32, payload=b"x")
    data = (sequence_number % 65536).to_bytes(2, "big")
    packet._data = data  # type: ignore[attr-defined]  # what depayload sets
    return packet


def stream(first: int, frames: int, packets_per_frame: int = 1, ticks: int = 960,
           start_ticks: int = 0) -> list[Arrival]:
    """A sender's packets in order: ``frames`` frames from sequence number ``first``."""
    return [(first + frame * packets_per_frame + part, start_ticks + frame * ticks)
            for frame in range(frames) for part in range(packets_per_frame)]


def outputs(buffer: HoleSkippingJitterBuffer | JitterBuffer,
            arrivals: list[Arrival]) -> list[Output]:
    out: list[Output] = []
    for sequence_number, timestamp in arrivals:
        pli, frame = buffer.add(rtp(sequence_number, timestamp))
        out.append((pli, None, None) if frame is None else (pli, frame.data, frame.timestamp))
    return out


def assert_same_as_aiortc(arrivals: list[Arrival], video: bool) -> None:
    capacity, prefetch = (512, 0) if video else (16, 4)  # what aiortc's receiver builds
    theirs = JitterBuffer(capacity=capacity, prefetch=prefetch, is_video=video)
    ours = HoleSkippingJitterBuffer(capacity=capacity, prefetch=prefetch, is_video=video)
    ours.clock = Clock()  # stands still: a hole never waits out its time
    expected = outputs(theirs, arrivals)
    assert outputs(ours, arrivals) == expected
    assert any(data for _, data, _ in expected)  # the sequence did bring frames out
    assert ours.holes_skipped == 0


def swap(arrivals: list[Arrival], *at: int) -> list[Arrival]:
    """Each packet at ``at`` arrives after the one that follows it."""
    arrivals = list(arrivals)
    for i in at:
        arrivals[i], arrivals[i + 1] = arrivals[i + 1], arrivals[i]
    return arrivals


def lose(arrivals: list[Arrival], *at: int) -> list[Arrival]:
    return [a for i, a in enumerate(arrivals) if i not in at]


AUDIO = stream(0, 40)  # one packet a frame, as Opus sends
VIDEO = stream(0, 40, packets_per_frame=3, ticks=9000)
SEQUENCES: dict[str, tuple[list[Arrival], list[Arrival]]] = {  # (audio, video)
    "in order": (AUDIO, VIDEO),
    "reordered": (swap(AUDIO, 3, 10, 11, 20), swap(VIDEO, 4, 5, 30, 31, 60)),
    "lost": (lose(AUDIO, 5, 6, 17), lose(VIDEO, 7, 40, 41, 42)),
    "duplicated": (AUDIO[:10] + AUDIO[8:], VIDEO[:30] + VIDEO[25:]),
    "late by a few": ([*AUDIO[:20], AUDIO[2], *AUDIO[20:]], [*VIDEO[:60], VIDEO[3], *VIDEO[60:]]),
    "across the wrap": (stream(65530, 30), stream(65500, 40, packets_per_frame=3, ticks=9000)),
    "restarted behind": (AUDIO[:20] + stream(-3000, 30, start_ticks=77),
                         VIDEO[:60] + stream(-3000, 30, 3, 9000, start_ticks=77)),
    "jumped ahead": (AUDIO[:20] + stream(300, 30, start_ticks=55),
                     VIDEO[:60] + stream(2000, 30, 3, 9000, start_ticks=55)),
    "jumped ahead a little": (AUDIO[:12] + AUDIO[30:], lose(VIDEO, *range(50, 90))),
}


@pytest.mark.parametrize("name", SEQUENCES)
def test_audio_frames_are_aiortcs(name: str) -> None:
    assert_same_as_aiortc(SEQUENCES[name][0], video=False)


@pytest.mark.parametrize("name", SEQUENCES)
def test_video_frames_are_aiortcs_while_no_hole_times_out(name: str) -> None:
    assert_same_as_aiortc(SEQUENCES[name][1], video=True)


def shuffled(seed: int, video: bool) -> list[Arrival]:
    """A random stream: frames of 1-4 packets, losses, duplicates, packets a few places
    late, and jumps of the sequence numbers back or ahead (a restarted sender)."""
    chance = random.Random(seed)
    first, ticks, arrivals = chance.randrange(65536), 0, []
    for _ in range(300 if video else 60):  # video waits out a loss for 512 packets
        frame = stream(first, 1, chance.randint(1, 4) if video else 1, start_ticks=ticks)
        first, ticks = first + len(frame), ticks + 3000
        arrivals += [a for a in frame if chance.random() > 0.1]
        if chance.random() < 0.1:
            arrivals += chance.sample(arrivals[-8:], k=min(2, len(arrivals)))
        if chance.random() < 0.03:
            # Video drops packets 100-999 behind its start as late retransmissions where
            # aiortc restarts, so its jumps leave the packets before them 1000 behind.
            jumps = [-5000, 3000, 300, 40] if video else [chance.randint(-9000, 900)]
            first += chance.choice(jumps)
    for i in range(len(arrivals) - 1):
        if chance.random() < 0.1:
            arrivals[i], arrivals[i + 1] = arrivals[i + 1], arrivals[i]
    return arrivals


@pytest.mark.parametrize("seed", range(40))
@pytest.mark.parametrize("video", [False, True], ids=["audio", "video"])
def test_random_streams_give_aiortcs_frames(seed: int, video: bool) -> None:
    assert_same_as_aiortc(shuffled(seed, video), video=video)


def test_the_buffer_keeps_aiortcs_interface() -> None:
    buffer = HoleSkippingJitterBuffer(capacity=16, prefetch=4)  # the receiver's audio one
    assert buffer.capacity == 16
    with pytest.raises(ValueError, match="power of 2"):
        HoleSkippingJitterBuffer(capacity=500, is_video=True)


def test_a_restarted_video_stream_waits_on_its_own_holes_only() -> None:
    """After the sender restarts its sequence numbers far behind, slow frames with no
    packet missing are not taken for a hole (the old high sequence number is forgotten)."""
    buffer, clock = video_buffer()
    outputs(buffer, stream(10000, 10, 5, 9000))
    restarted = stream(5000, 1100, 5, 9000, start_ticks=10**6)
    for sequence_number, timestamp in restarted:
        clock.now += 0.15  # a slow sender: a frame's packets come over 0.75 s
        buffer.add(rtp(sequence_number, timestamp))
    assert buffer.holes_skipped == 0


def test_a_hole_after_a_video_stream_restart_is_skipped() -> None:
    buffer, clock = video_buffer()
    outputs(buffer, stream(10000, 10, 3, 9000))
    restarted = stream(5000, 20, 3, 9000, start_ticks=10**6)
    outputs(buffer, restarted[:15] + restarted[18:30])  # the restarted stream's 6th frame lost
    clock.now += HOLE_WAIT_SECONDS
    pli, frame = buffer.add(rtp(*restarted[30]))
    assert pli and frame is not None and frame.timestamp == 10**6 + 7 * 9000
    assert buffer.holes_skipped == 1
