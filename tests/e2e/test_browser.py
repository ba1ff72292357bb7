"""A real headless Chromium against a real ``proctor serve``.

Chromium's fake camera plays a y4m made from a real photo (a face, then an empty
room); the candidate demo page must show the ``face_absent`` flag the server raises,
and the proctor dashboard must show the same alert.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.media import empty_frame, face_frame, write_y4m

CHROMIUM = "/usr/bin/chromium"
API_KEY = "browser-test-key"
FPS = 10

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(),
                       reason="Debian chromium is not installed (apt-get install chromium)"),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _http(method: str, url: str, token: str, body: dict[str, Any] | None = None) -> Any:
    request = urllib.request.Request(url, method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {token}",
                                              "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    port = _free_port()
    data = tmp_path / "data"
    env = {**os.environ, "PROCTOR_RTC__ICE_HOST_ADDRESSES": "127.0.0.1",
           "PROCTOR_AUTH__API_KEYS": API_KEY, "PROCTOR_SERVER__DATA_DIR": str(data),
           "PROCTOR_STORE": f"sqlite:///{data}/proctor.db", "PROCTOR_CLIPS": f"file://{data}/clips"}
    log = (tmp_path / "server.log").open("w")
    process = subprocess.Popen([sys.executable, "-m", "proctor.cli", "serve", "--host",
                                "127.0.0.1", "--port", str(port)], env=env, stdout=log,
                               stderr=subprocess.STDOUT, cwd=tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{base}/healthz", timeout=2).close()
                break
            except OSError:
                assert process.poll() is None, (tmp_path / "server.log").read_text()
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.3)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def _fake_media(tmp_path: Path) -> tuple[Path, Path]:
    """A camera that shows a face for 1.5 s, then an empty room for 8 s (looped by
    Chromium), and a microphone with room noise."""
    frames = [face_frame()] * int(1.5 * FPS) + [empty_frame()] * (8 * FPS)
    video = write_y4m(tmp_path / "camera.y4m", frames, FPS)
    audio = tmp_path / "mic.wav"
    noise = (np.random.default_rng(0).normal(0, 300, 48_000 * 3)).astype(np.int16)
    with wave.open(str(audio), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(48_000)
        wav.writeframes(noise.tobytes())
    return video, audio


def test_candidate_page_and_dashboard_show_the_flag(server: str, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    created = _http("POST", f"{server}/api/v1/sessions", API_KEY, {"candidate_id": "browser"})
    sid = created["session_id"]
    video, audio = _fake_media(tmp_path)
    args = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-video-capture={video}",
            f"--use-file-for-fake-audio-capture={audio}",
            "--autoplay-policy=no-user-gesture-required",
            "--allow-loopback-in-peer-connection"]
    profile = tmp_path / "profile"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=args)
        try:
            dashboard = browser.new_page()
            dashboard.goto(f"{server}/static/dashboard.html?token={created['proctor_token']}")
            candidate = browser.new_page()
            candidate.goto(f"{server}/static/candidate.html?session={sid}"
                           f"&token={created['candidate_token']}&autostart=1")
            flag = candidate.wait_for_selector('#flags [data-flag-kind="face_absent"]',
                                               timeout=40_000)
            assert flag.get_attribute("data-severity") in ("moderate", "high", "warning")
            alert = dashboard.wait_for_selector('#alerts [data-flag-kind="face_absent"]',
                                                timeout=10_000)
            assert alert.get_attribute("data-session-id") == sid
            assert candidate.text_content("#state") == "live"
            if os.environ.get("TEST_SCREENSHOTS"):
                shots = Path(os.environ["TEST_SCREENSHOTS"])
                candidate.screenshot(path=str(shots / "candidate.png"), full_page=True)
                dashboard.screenshot(path=str(shots / "dashboard.png"), full_page=True)
        finally:
            browser.close()
            shutil.rmtree(profile, ignore_errors=True)
    flags = _http("GET", f"{server}/api/v1/sessions/{sid}/flags", API_KEY)["flags"]
    assert "face_absent" in {f["kind"] for f in flags}
