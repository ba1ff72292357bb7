"""A video jitter buffer that stops waiting for packets that will never come.

aiortc's video jitter buffer (aiortc 1.16: 512 packets) hands frames to the decoder
in sequence order and, when a packet is missing, waits until 512 newer packets have
arrived before it gives the missing one up. A candidate's network that drops for 2 s
loses more packets than the sender keeps for retransmission (128), so after the network
returns the hole cannot be filled and no frame is decoded for another 512 packets:
about 9 s at a webcam's bitrate, on a connection that is working again. The server
then sees no video and raises ``video_lost`` for a 2 s drop (measured with
``tests/e2e/test_network_drop.py``, which drops every packet at a relay).

:class:`HoleSkippingJitterBuffer` gives a hole :data:`HOLE_WAIT_SECONDS` to be filled
by retransmission (the receiver asks with a NACK as soon as it sees the gap), then
skips it and the frame after it (whose first packets may be in the hole), and asks for a
keyframe (PLI) so decoding restarts cleanly. Audio buffers are left as aiortc makes them.
"""

from __future__ import annotations

import time

import aiortc.rtcrtpreceiver
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtp import RtpPacket
from aiortc.utils import uint16_add, uint16_gt

# A NACK and its retransmission take a round trip; this covers slow networks too while
# keeping a drop's recovery well inside video_lost's 1 s timeout.
HOLE_WAIT_SECONDS = 0.4
# Packets this far behind the buffer's start are late retransmissions; further behind,
# a restarted stream (aiortc's own reading).
LATE_WINDOW = 1000


class HoleSkippingJitterBuffer(JitterBuffer):
    def __init__(self, capacity: int, prefetch: int = 0, is_video: bool = False) -> None:
        super().__init__(capacity, prefetch=prefetch, is_video=is_video)
        self._hole_since: float | None = None  # when frames stopped behind a missing packet
        self._newest: int | None = None  # the highest sequence number seen
        self.holes_skipped = 0
        self.clock = time.monotonic  # tests replace it

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        if not self._is_video:
            return super().add(packet)
        if self._late(packet.sequence_number):
            return False, None
        pli, frame = super().add(packet)
        if self._newest is None or uint16_gt(packet.sequence_number, self._newest):
            self._newest = packet.sequence_number
        if frame is not None or not self._has_hole():
            self._hole_since = None
            return pli, frame
        now = self.clock()
        if self._hole_since is None:
            self._hole_since = now
        if now - self._hole_since < HOLE_WAIT_SECONDS:
            return pli, None
        self._skip_hole()
        self._hole_since = None
        return True, self._remove_frame(self._newest)

    def _late(self, sequence_number: int) -> bool:
        """A packet from before the buffer's start: a retransmission of a hole already
        skipped. (aiortc takes one over 100 behind for a restarted stream and empties the
        buffer, throwing away the frames that came after the drop.)"""
        if self._origin is None:
            return False
        behind = uint16_add(self._origin, -sequence_number)
        ahead = uint16_add(sequence_number, -self._origin)
        return 0 < behind < ahead and behind < LATE_WINDOW

    def _slot(self, offset: int) -> RtpPacket | None:
        assert self._origin is not None
        return self._packets[(self._origin + offset) % self._capacity]

    def _has_hole(self) -> bool:
        """A packet is missing between the buffer's start and the newest packet."""
        if self._origin is None or self._newest is None:
            return False
        span = uint16_add(self._newest, -self._origin)
        return span < self._capacity and any(self._slot(i) is None for i in range(span))

    def _skip_hole(self) -> None:
        """Drop the frame cut by the first hole, the hole, and the frame after it (its
        first packets may be in the hole)."""
        count = 0
        while count < self._capacity and self._slot(count) is not None:
            count += 1
        while count < self._capacity and self._slot(count) is None:
            count += 1
        after = self._slot(count) if count < self._capacity else None
        while count < self._capacity and (packet := self._slot(count)) is not None \
                and after is not None and packet.timestamp == after.timestamp:
            count += 1
        self.remove(count)
        self.holes_skipped += 1


def install_jitter_buffer() -> None:
    """Make aiortc's receivers (in this process) build video buffers that skip holes;
    aiortc looks the class up when each receiver is made."""
    aiortc.rtcrtpreceiver.JitterBuffer = HoleSkippingJitterBuffer  # type: ignore[attr-defined]
