"""A loopback UDP relay between one WebRTC peer and the server, so a test can take the
network away (every packet dropped, both ways) and give it back, while both peers stay
up: the way a candidate's Wi-Fi drops, not the way a tab hangs up.

Each side is told the other lives at the relay: the client's offer names the relay's
server-facing socket as the client's candidate, the server's answer names its
client-facing socket as the server's. So every ICE check, DTLS record and RTP packet
crosses the relay, and :meth:`UdpRelay.cut` drops them all.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

LOOPBACK = "127.0.0.1"
_CANDIDATE_PORT = re.compile(r"^(a=candidate:\S+ \d+ udp \d+ 127\.0\.0\.1 )(\d+)( typ host.*)$",
                             re.MULTILINE | re.IGNORECASE)

Address = tuple[str, int]


class _Side(asyncio.DatagramProtocol):
    def __init__(self, forward: Any) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self._forward = forward

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a datagram transport

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self._forward(data)


class UdpRelay:
    """Carries one peer connection's packets (one bundled transport) through loopback."""

    def __init__(self) -> None:
        self.cut_now = False
        self.dropped = 0
        self.carried = 0
        self._client: Address | None = None  # the client's own candidate
        self._server: Address | None = None  # the server's own candidate
        self._facing_client = _Side(lambda data: self._send(data, to_server=True))
        self._facing_server = _Side(lambda data: self._send(data, to_server=False))

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for side in (self._facing_client, self._facing_server):
            await loop.create_datagram_endpoint(lambda side=side: side,  # type: ignore[misc]
                                                local_addr=(LOOPBACK, 0))

    def close(self) -> None:
        for side in (self._facing_client, self._facing_server):
            if side.transport is not None:
                side.transport.close()

    def cut(self, cut: bool = True) -> None:
        """Drop every packet both ways from now (``False``: carry them again)."""
        self.cut_now = cut

    def offer(self, sdp: str) -> str:
        """The client's offer, its candidate replaced by the relay's server-facing port."""

        self._client, sdp = self._rewrite(sdp, self._facing_server)
        return sdp

    def answer(self, sdp: str) -> str:
        """The server's answer, its candidate replaced by the relay's client-facing port."""

        self._server, sdp = self._rewrite(sdp, self._facing_client)
        return sdp

    @staticmethod
    def _rewrite(sdp: str, side: _Side) -> tuple[Address, str]:
        """Every loopback candidate becomes the relay's; the first one (the first media
        section's, which carries the whole BUNDLE group) is where packets go."""
        first = _CANDIDATE_PORT.search(sdp)
        assert first is not None, "a loopback host candidate expected"
        assert side.transport is not None, "start() the relay first"
        relay_port = side.transport.get_extra_info("sockname")[1]
        rewritten = _CANDIDATE_PORT.sub(lambda m: f"{m.group(1)}{relay_port}{m.group(3)}", sdp)
        return (LOOPBACK, int(first.group(2))), rewritten

    def _send(self, data: bytes, to_server: bool) -> None:
        target, side = ((self._server, self._facing_server) if to_server
                        else (self._client, self._facing_client))
        if self.cut_now or target is None or side.transport is None:
            self.dropped += 1
            return
        side.transport.sendto(data, target)
        self.carried += 1
