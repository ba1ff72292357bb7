"""Offline analysis over HTTP and on the command line, with real photos and video."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from aiohttp import FormData
from aiohttp.test_utils import TestClient
from PIL import Image

from tests.media import empty_frame, face_frame
from tests.videos import write_video


def _png(image: Any) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


async def test_analyze_frame(client: TestClient, api_headers: dict[str, str]) -> None:
    response = await client.post("/api/v1/analyze/frame", data=_png(face_frame()),
                                 headers={**api_headers, "Content-Type": "image/png"})
    assert response.status == 200, await response.text()
    result = await response.json()
    assert len(result["faces"]) == 1 and result["signals"]["face_count"] == 1
    assert result["signals"]["camera_blocked"] == 0
    assert result["processing_ms"] > 0
    form = FormData()
    form.add_field("image", _png(empty_frame()), filename="room.png",
                   content_type="image/png")
    response = await client.post("/api/v1/analyze/frame", data=form, headers=api_headers)
    assert (await response.json())["faces"] == []
    junk = await client.post("/api/v1/analyze/frame", data=b"hello, not an image",
                             headers=api_headers)
    assert junk.status == 400 and (await junk.json())["error"]["code"] == "not_an_image"


async def _wait_job(client: TestClient, job_id: str, headers: dict[str, str]) -> dict[str, Any]:
    for _ in range(300):
        job = await (await client.get(f"/api/v1/jobs/{job_id}", headers=headers)).json()
        if job["status"] in ("done", "failed"):
            return dict(job)
        await asyncio.sleep(0.1)
    raise AssertionError("job did not finish")


async def test_analyze_video_job(client: TestClient, api_headers: dict[str, str],
                                 tmp_path: Path) -> None:
    video = write_video(tmp_path / "exam.mp4", [(2.0, face_frame()), (7.0, empty_frame()),
                                                (9.0, face_frame())])
    response = await client.post("/api/v1/analyze/video", data=video.read_bytes(),
                                 headers={**api_headers, "Content-Type": "video/mp4"})
    assert response.status == 202
    job = await _wait_job(client, (await response.json())["job_id"], api_headers)
    assert job["status"] == "done" and job["progress"] == 1.0
    flags = job["report"]["flags"]
    assert [f["kind"] for f in flags] == ["face_absent"]
    assert abs(flags[0]["start"] - 2.0) <= 0.25 and abs(flags[0]["end"] - 6.8) <= 0.3
    assert job["report"]["recommendation"] == "PASS"
    bad = await client.post("/api/v1/analyze/video", data=b"not a video at all" * 100,
                            headers=api_headers)
    assert bad.status == 400 and (await bad.json())["error"]["code"] == "not_a_video"
    missing = await client.get("/api/v1/jobs/nope", headers=api_headers)
    assert missing.status == 404


def test_cli_analyze_writes_json_and_html(tmp_path: Path) -> None:
    video = write_video(tmp_path / "exam.mp4", [(1.0, face_frame()), (5.5, empty_frame()),
                                                (6.0, face_frame())])
    out, html = tmp_path / "report.json", tmp_path / "report.html"
    result = subprocess.run([sys.executable, "-m", "proctor.cli", "analyze", str(video),
                             "--out", str(out), "--html", str(html)],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert [f["kind"] for f in report["flags"]] == ["face_absent"]
    assert report["pipeline"]["speed"] > 1
    assert "face_absent" in html.read_text() and "Integrity report" in html.read_text()
    assert "[####" in result.stderr  # the progress bar
    broken = subprocess.run([sys.executable, "-m", "proctor.cli", "analyze",
                             str(tmp_path / "report.json")], capture_output=True, text=True,
                            timeout=60, cwd=tmp_path)
    assert broken.returncode == 1 and "proctor analyze:" in broken.stderr
