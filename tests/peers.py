"""Real aiortc client peers for tests: a candidate sending scheduled video, a watcher."""

from __future__ import annotations

import asyncio
import fractions
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np
from aiohttp.test_utils import TestClient
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError, VideoStreamTrack

VIDEO_CLOCK = 90_000


NOISE_FRAMES = 8


class ScheduledVideoTrack(VideoStreamTrack):
    """Plays ``schedule`` [(until_seconds, image), ...] in real time at ``fps``.

    Timestamps follow the schedule exactly, so the server's media time of each
    frame is known to the test; the last image repeats until ``duration``. Like a
    real webcam on a living person, every frame carries sensor noise and a pixel or
    two of sway, so a still scene is not a frozen picture after compression.
    """

    def __init__(self, schedule: list[tuple[float, np.ndarray]], fps: float = 15.0,
                 duration: float | None = None) -> None:
        super().__init__()
        self._schedule = schedule
        rng = np.random.default_rng(7)
        shape = schedule[0][1].shape
        self._noise = [rng.integers(-3, 4, size=shape, dtype=np.int16)
                       for _ in range(NOISE_FRAMES)]
        self._fps = fps
        self._duration = duration
        self._index = 0
        self._started: float | None = None

    async def recv(self) -> av.VideoFrame:
        if self._started is None:
            self._started = time.monotonic()
        t = self._index / self._fps
        if self._duration is not None and t >= self._duration:
            self.stop()
            raise MediaStreamError
        await asyncio.sleep(max(0.0, self._started + t - time.monotonic()))
        self._index += 1
        image = next((img for until, img in self._schedule if t < until), self._schedule[-1][1])
        swayed = np.roll(image, (self._index * 7) % 5 - 2, axis=1)
        noisy = np.clip(swayed + self._noise[self._index % NOISE_FRAMES], 0, 255)
        frame = av.VideoFrame.from_ndarray(noisy.astype(np.uint8), format="rgb24")
        frame.pts = round(t * VIDEO_CLOCK)
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        return frame


class RecordedAudioTrack(AudioStreamTrack):
    """Plays 16 kHz mono float32 audio in real time, 20 ms a frame, then digital silence."""

    RATE = 16_000
    FRAME = 320

    def __init__(self, audio: np.ndarray) -> None:
        super().__init__()
        self._pcm = np.clip(audio * 32767, -32768, 32767).astype(np.int16)
        self._sent = 0
        self._started: float | None = None

    async def recv(self) -> av.AudioFrame:
        if self._started is None:
            self._started = time.monotonic()
        await asyncio.sleep(max(0.0, self._started + self._sent / self.RATE - time.monotonic()))
        block = self._pcm[self._sent:self._sent + self.FRAME]
        block = np.pad(block, (0, self.FRAME - len(block)))
        frame = av.AudioFrame.from_ndarray(block.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts = self.RATE, self._sent
        frame.time_base = fractions.Fraction(1, self.RATE)
        self._sent += self.FRAME
        return frame


@dataclass
class ClientPeer:
    pc: RTCPeerConnection
    messages: list[dict[str, Any]] = field(default_factory=list)
    opened: asyncio.Event = field(default_factory=asyncio.Event)
    tracks: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)  # received media

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("type") == kind]

    async def wait_for(self, predicate: Any, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in self.messages:
                if predicate(message):
                    return message
            await asyncio.sleep(0.05)
        raise AssertionError(f"no matching message in {timeout} s; got {self.messages[-5:]}")


Poster = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]  # offer in, answer out


async def open_peer(post: Poster, label: str, track: VideoStreamTrack | None = None,
                    audio: AudioStreamTrack | None = None, body: dict[str, Any] | None = None,
                    receive: bool = False, timeout: float = 10.0) -> ClientPeer:
    """A real aiortc peer with a DataChannel ``label`` (and the tracks it sends), its
    offer delivered by ``post``. ``receive``: it also asks for video and audio, which
    arrive in ``peer.tracks``."""
    pc = RTCPeerConnection()
    peer = ClientPeer(pc)
    pc.on("track", peer.tracks.put_nowait)
    channel = pc.createDataChannel(label)
    channel.on("message", lambda raw: peer.messages.append(json.loads(raw)))
    channel.on("open", peer.opened.set)
    for sent in (track, audio):
        if sent is not None:
            pc.addTrack(sent)
    if receive:
        pc.addTransceiver("video", direction="recvonly")
        pc.addTransceiver("audio", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    answer = await post({"sdp": pc.localDescription.sdp, "type": "offer", **(body or {})})
    await pc.setRemoteDescription(RTCSessionDescription(**answer))
    await asyncio.wait_for(peer.opened.wait(), timeout=timeout)
    peer.channel = channel  # type: ignore[attr-defined]
    return peer


def poster(client: TestClient, path: str, token: str) -> Poster:
    """``post`` for :func:`open_peer` through the test client (200 expected)."""
    async def post(offer: dict[str, Any]) -> dict[str, Any]:
        response = await client.post(path, json=offer, headers=bearer(token))
        assert response.status == 200, await response.text()
        return dict(await response.json())

    return post


async def connect(client: TestClient, path: str, token: str, label: str,
                  track: VideoStreamTrack | None = None,
                  body: dict[str, Any] | None = None,
                  audio: AudioStreamTrack | None = None) -> ClientPeer:
    """Open a peer with a DataChannel ``label`` (and a video track) through ``path``."""
    return await open_peer(poster(client, path, token), label, track, audio, body)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def offer_sdp() -> str:
    """A real aiortc offer (one ``proctor`` DataChannel), for tests that post it raw."""
    pc = RTCPeerConnection()
    pc.createDataChannel("proctor")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp
