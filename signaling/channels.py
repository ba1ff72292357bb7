"""Outgoing DataChannel messages with a bound.

aiortc queues whatever is sent on a channel; a stalled browser would make that grow
without limit. A sender checks ``bufferedAmount`` first. Overflow rule: status ticks
are dropped while the channel is congested or closed; flags and session messages
wait in a small queue until the channel opens (and are in the store regardless).
"""

from __future__ import annotations

import json
import logging
from collections import deque
from typing import Any

from aiortc import RTCDataChannel

from proctor.metrics import Metrics
from signaling import safejson

log = logging.getLogger("proctor.channels")

MAX_BUFFERED_BYTES = 1 << 20
MAX_WAITING = 500
DROPPABLE = frozenset({"status"})


class ChannelSender:
    def __init__(self, label: str, metrics: Metrics) -> None:
        self.label = label
        self._metrics = metrics
        self._channel: RTCDataChannel | None = None
        self._waiting: deque[str] = deque(maxlen=MAX_WAITING)

    @property
    def is_open(self) -> bool:
        return self._channel is not None and self._channel.readyState == "open"

    def attach(self, channel: RTCDataChannel) -> None:
        """Use ``channel`` from now on (a reconnect brings a new one)."""
        self._channel = channel
        if channel.readyState == "open":
            self._flush()
        else:
            channel.on("open", self._flush)

    def send(self, message: dict[str, Any]) -> bool:
        """True when handed to the channel; False when dropped or left waiting."""
        text = json.dumps(message, separators=(",", ":"))
        droppable = message.get("type") in DROPPABLE
        if self.is_open and self._has_room():
            self._flush()
            assert self._channel is not None
            self._channel.send(text)
            return True
        if droppable:
            self._metrics.datachannel_dropped.labels(self.label).inc()
        else:
            self._waiting.append(text)
        return False

    def _has_room(self) -> bool:
        assert self._channel is not None
        return self._channel.bufferedAmount < MAX_BUFFERED_BYTES

    def _flush(self) -> None:
        while self._waiting and self.is_open and self._has_room():
            assert self._channel is not None
            self._channel.send(self._waiting.popleft())


def parse_message(raw: str | bytes) -> dict[str, Any]:
    """A client's JSON message, or ValueError with words fit to send back."""
    if isinstance(raw, bytes):
        raise ValueError("binary messages are not accepted; send JSON text")
    if len(raw) > 64 * 1024:
        raise ValueError("message too large (64 KiB at most)")
    message = safejson.loads(raw)  # ValueError only, whatever the depth or digits
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ValueError("expected a JSON object with a string 'type'")
    return message


def error_message(text: str) -> dict[str, Any]:
    return {"type": "error", "error": {"code": "bad_message", "message": text}}
