"""Fixtures for the browser tests: a real ``proctor serve``, a fake camera and
microphone fed from real media, and Debian's headless Chromium driven by Playwright.

Everything stays on loopback: the server offers only 127.0.0.1 as an ICE candidate
and Chromium is told to accept loopback candidates (see shared TESTDATA.md).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.media import empty_frame, face_frame, write_y4m

CHROMIUM = "/usr/bin/chromium"
CAMERA_FPS = 10


@dataclass
class Server:
    """A running ``proctor serve``: its base URL, API key and log."""

    url: str
    api_key: str
    log: Path

    def call(self, method: str, path: str, token: str | None = None,
             body: dict[str, Any] | None = None) -> Any:
        """A JSON API call, with the API key unless another token is given."""
        request = urllib.request.Request(
            self.url + path, method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {token or self.api_key}",
                     "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def chromium() -> str:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    return CHROMIUM


@pytest.fixture(scope="module")
def proctor_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``python -m proctor.cli serve`` on a free port, with its own data directory."""
    yield from serve(tmp_path_factory.mktemp("server"))


def serve(root: Path, api_key: str | None = None, **settings: str) -> Iterator[Server]:
    """Run ``proctor serve`` under ``root`` until the generator is closed; ``settings``
    are more PROCTOR_* variables (name without the prefix: ``RTC__MAX_SESSIONS="1"``)."""
    yield from _serve(start_server(root, api_key, **settings))


# A lone node that a crash test kills and starts again under its own id: quick heartbeats,
# so it finds its own sessions at once; no transcription, which a crash test never reads.
SOLO_NODE = {"NODES__ID": "solo", "NODES__HEARTBEAT_SECONDS": "1",
             "NODES__DEAD_AFTER_SECONDS": "3", "RTC__MAX_SESSIONS": "2",
             "DETECTORS__TRANSCRIPTION__ENABLED": "false"}


def start_server(root: Path, api_key: str | None = None,
                 **settings: str) -> tuple[Server, subprocess.Popen[bytes]]:
    """Start ``proctor serve`` under ``root`` and wait until it answers; the caller
    stops the process (or kills it: a crash test)."""
    data = root / "data"
    port = _free_port()
    api_key = api_key or secrets.token_urlsafe(24)
    env = {
        **os.environ,
        "PROCTOR_RTC__ICE_HOST_ADDRESSES": "127.0.0.1",  # aioice leaves loopback out
        "PROCTOR_AUTH__API_KEYS": api_key,
        "PROCTOR_SERVER__DATA_DIR": str(data),
        "PROCTOR_STORE": f"sqlite:///{data}/proctor.db",  # absolute: four slashes
        "PROCTOR_CLIPS": f"file://{data}/clips",
        **{f"PROCTOR_{key}": value for key, value in settings.items()},
    }
    server = Server(f"http://127.0.0.1:{port}", api_key, root / "server.log")
    with server.log.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "proctor.cli", "serve", "--host", "127.0.0.1",
             "--port", str(port)],
            env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_healthy(server, process)
    except BaseException:
        stop_server(process)
        raise
    return server, process


def _serve(started: tuple[Server, subprocess.Popen[bytes]]) -> Iterator[Server]:
    server, process = started
    try:
        yield server
    finally:
        stop_server(process)


def stop_server(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _wait_healthy(server: Server, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60  # the first start loads the models
    while True:
        try:
            urllib.request.urlopen(f"{server.url}/healthz", timeout=2).close()
            return
        except (urllib.error.URLError, OSError):
            if process.poll() is not None:
                pytest.fail(f"proctor serve exited ({process.returncode}):\n{server.log_tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"proctor serve not healthy after 60 s:\n{server.log_tail()}")
            time.sleep(0.3)


@pytest.fixture(scope="module")
def fake_media(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A camera that shows a real face for 2 s, then the same room with nobody in it
    for 10 s (Chromium loops the file), and a microphone with quiet room noise (digital
    silence would be an audio problem of its own)."""
    folder = tmp_path_factory.mktemp("media")
    frames = [face_frame()] * (2 * CAMERA_FPS) + [empty_frame()] * (10 * CAMERA_FPS)
    video = write_y4m(folder / "camera.y4m", frames, CAMERA_FPS)
    audio = folder / "microphone.wav"
    noise = np.random.default_rng(0).normal(0, 300, 48_000 * 3).astype(np.int16)
    with wave.open(str(audio), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)  # 16-bit PCM: other formats play as silence
        wav.setframerate(48_000)
        wav.writeframes(noise.tobytes())
    return video, audio


@pytest.fixture(scope="module")
def browser(chromium: str, fake_media: tuple[Path, Path]) -> Iterator[Any]:
    """A headless Chromium context whose camera and microphone play ``fake_media``.

    Playwright gives the browser a fresh temporary profile of its own.
    """
    from playwright.sync_api import sync_playwright

    video, audio = fake_media
    args = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-video-capture={video}",
            f"--use-file-for-fake-audio-capture={audio}",
            "--autoplay-policy=no-user-gesture-required",
            "--allow-loopback-in-peer-connection"]
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=chromium, headless=True,
                                              args=args)
        try:
            yield instance.new_context(viewport={"width": 1280, "height": 900})
        finally:
            instance.close()  # closes the context and its pages too
