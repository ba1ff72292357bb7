"""Our own jitter buffer for aiortc's receivers; for video it stops waiting for packets
that will never come.

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
keyframe (PLI) so decoding restarts cleanly.

It is a class of our own, not a subclass of aiortc's ``JitterBuffer``: skipping a hole
needs the buffer's slots and start, which in aiortc are private attributes that an
aiortc upgrade may rename or rework without notice (ARCHITECTURE.md rule 2). It keeps
the interface aiortc's receiver uses (``JitterBuffer(capacity, prefetch=, is_video=)``,
``add(packet) -> (pli, frame)``, ``capacity``). Audio buffers follow aiortc 1.16's
algorithm exactly; video ones too but for skipping holes and for dropping retransmissions
that arrive 100 to 999 packets late, where aiortc would restart the stream. Tests feed
both the same packets and compare the frames.

The one thing it reads that aiortc does not publish is ``RtpPacket._data``: the receiver
sets it to the depayloaded codec bytes just before ``add``, and that is the only place
those bytes exist. It is read in :func:`_depayloaded` alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import aiortc.rtcrtpreceiver
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtp import RtpPacket
from aiortc.utils import uint16_add, uint16_gt

# A NACK and its retransmission take a round trip; this covers slow networks too while
# keeping a drop's recovery well inside pipeline.video_timeout_seconds (1 s), after which
# the session's video_lost signal rises.
HOLE_WAIT_SECONDS = 0.4
# Packets this far behind the buffer's start are late retransmissions; further behind,
# a restarted stream (aiortc's own reading).
LATE_WINDOW = 1000
# aiortc's reading, kept for audio: a packet under this far behind the buffer's start is
# late and dropped; further behind, the sender restarted its sequence numbers.
MAX_MISORDER = 100


def _depayloaded(packet: RtpPacket) -> bytes:
    """The codec bytes aiortc's receiver stored on the packet before ``add``."""
    data: bytes = packet._data  # type: ignore[attr-defined]
    return data


class HoleSkippingJitterBuffer:
    """Packets in a ring of ``capacity`` slots, slot ``sequence_number % capacity``,
    from ``_origin`` (the oldest sequence number kept); frames leave from the start."""

    def __init__(self, capacity: int, prefetch: int = 0, is_video: bool = False) -> None:
        # A power of 2 divides 65536, so a slot stays the same across the uint16 wrap.
        if capacity <= 0 or capacity & (capacity - 1):
            raise ValueError(f"capacity must be a power of 2, not {capacity}")
        self._capacity = capacity
        self._prefetch = prefetch  # complete frames held back before the first leaves
        self._is_video = is_video
        self._slots: list[RtpPacket | None] = [None] * capacity
        self._origin: int | None = None  # sequence number of the buffer's first slot
        self._newest: int | None = None  # the highest sequence number kept
        self._hole_since: float | None = None  # when frames stopped behind a missing packet
        self.holes_skipped = 0
        self.clock: Callable[[], float] = time.monotonic  # tests replace it

    @property
    def capacity(self) -> int:
        return self._capacity

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        """Take a packet; return whether to ask for a keyframe, and a frame if one is
        complete."""
        if self._is_video and self._late(packet.sequence_number):
            return False, None
        placed, pli = self._place(packet)
        if not placed:
            return False, None
        frame = self._pop_frame()
        if not self._is_video:
            return pli, frame
        return self._skip_stalled_hole(pli, frame)

    # aiortc's algorithm: placing packets and taking frames out.

    def _place(self, packet: RtpPacket) -> tuple[bool, bool]:
        """Store the packet, making room if it is too far ahead; (stored, PLI)."""
        sequence_number = packet.sequence_number
        if self._origin is None:  # the first packet starts the buffer
            self._restart(sequence_number)
        origin = sequence_number if self._origin is None else self._origin
        ahead = uint16_add(sequence_number, -origin)
        behind = uint16_add(origin, -sequence_number)
        pli = False
        if behind < ahead:
            if behind < MAX_MISORDER:
                return False, False  # too late: its frame has left
            self._restart(sequence_number)  # the sender started over
            ahead, pli = 0, self._is_video
        if ahead >= self._capacity:
            # The stream ran past the buffer: free just enough whole frames for it.
            if self._evict(ahead - self._capacity + 1):
                self._restart(sequence_number)
            pli = self._is_video  # the decoder lost frames
        self._slots[sequence_number % self._capacity] = packet
        if self._newest is None or uint16_gt(sequence_number, self._newest):
            self._newest = sequence_number
        return True, pli

    def _restart(self, sequence_number: int) -> None:
        """Empty the buffer and start it at ``sequence_number``. The newest packet is
        forgotten too: a sender restarted far behind would otherwise hide its holes (and
        show false ones) until it passed the old stream's last sequence number."""
        self._slots = [None] * self._capacity
        self._origin = self._newest = sequence_number

    def _pop_frame(self) -> JitterFrame | None:
        """The first frame, once it and ``prefetch - 1`` more are complete: a frame is
        complete when a packet of the next timestamp follows it with no gap between."""
        first: JitterFrame | None = None
        first_length = complete = 0
        packets: list[RtpPacket] = []
        for offset in range(self._capacity):
            packet = self._slot(offset)
            if packet is None:
                return None
            if packets and packet.timestamp != packets[0].timestamp:
                if first is None:
                    first, first_length = _frame(packets), offset
                complete += 1
                if complete >= self._prefetch:
                    self._drop(first_length)
                    return first
                packets = []
            packets.append(packet)
        return None

    def _evict(self, count: int) -> bool:
        """Free at least ``count`` slots from the start, stopping where a frame starts so
        that no part of a frame is left; True if that emptied the whole buffer."""
        timestamp: int | None = None
        for freed in range(self._capacity):
            packet = self._slot(0)
            if packet is not None:
                if freed >= count and packet.timestamp != timestamp:
                    return False
                timestamp = packet.timestamp
            self._drop(1)
        return True

    def _drop(self, count: int) -> None:
        """Forget the first ``count`` slots and move the start past them."""
        assert self._origin is not None and count <= self._capacity
        for _ in range(count):
            self._slots[self._origin % self._capacity] = None
            self._origin = uint16_add(self._origin, 1)

    def _slot(self, offset: int) -> RtpPacket | None:
        assert self._origin is not None
        return self._slots[(self._origin + offset) % self._capacity]

    # Video only: giving up on a hole.

    def _late(self, sequence_number: int) -> bool:
        """A packet from before the buffer's start: a retransmission of a hole already
        skipped. (aiortc takes one over 100 behind for a restarted stream and empties the
        buffer, throwing away the frames that came after the drop.)"""
        if self._origin is None:
            return False
        behind = uint16_add(self._origin, -sequence_number)
        ahead = uint16_add(sequence_number, -self._origin)
        return 0 < behind < ahead and behind < LATE_WINDOW

    def _skip_stalled_hole(self, pli: bool, frame: JitterFrame | None
                           ) -> tuple[bool, JitterFrame | None]:
        """Frames stopped behind a hole: skip it once it has waited its time."""
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
        return True, self._pop_frame()  # the decoder restarts from a keyframe

    def _has_hole(self) -> bool:
        """A packet is missing between the buffer's start and the newest packet."""
        if self._origin is None or self._newest is None:
            return False
        span = uint16_add(self._newest, -self._origin)
        # Past the capacity the start has passed the newest packet (a skip emptied it).
        return span < self._capacity and self._filled_run(0) < span

    def _skip_hole(self) -> None:
        """Drop the frame cut by the first hole, the hole, and the frame after it (its
        first packets may be in the hole)."""
        hole = self._filled_run(0)
        after = hole + self._empty_run(hole)
        self._drop(after + self._frame_run(after))
        self.holes_skipped += 1

    def _filled_run(self, start: int) -> int:
        """How many slots from ``start`` hold a packet, up to the first empty one."""
        return self._run(start, lambda packet: packet is not None)

    def _empty_run(self, start: int) -> int:
        return self._run(start, lambda packet: packet is None)

    def _frame_run(self, start: int) -> int:
        """How many slots from ``start`` hold packets of the frame that starts there."""
        first = self._slot(start) if start < self._capacity else None
        if first is None:
            return 0
        return self._run(start, lambda packet: packet is not None
                         and packet.timestamp == first.timestamp)

    def _run(self, start: int, keep: Callable[[RtpPacket | None], bool]) -> int:
        """How many slots from ``start`` pass ``keep``, up to the first that does not."""
        end = start
        while end < self._capacity and keep(self._slot(end)):
            end += 1
        return end - start


def _frame(packets: list[RtpPacket]) -> JitterFrame:
    return JitterFrame(data=b"".join(_depayloaded(p) for p in packets),
                       timestamp=packets[0].timestamp)


def install_jitter_buffer() -> None:
    """Make aiortc's receivers (in this process) build our buffers: video ones skip
    holes, audio ones behave as aiortc's; aiortc looks the class up when each receiver
    is made."""
    # The receiver only builds the buffer and calls add(): it needs that interface, not
    # aiortc's class (mypy sees the name typed as aiortc's class, not re-exported).
    receiver = aiortc.rtcrtpreceiver
    receiver.JitterBuffer = HoleSkippingJitterBuffer  # type: ignore[attr-defined, assignment]
