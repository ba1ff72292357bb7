"""Offline analysis over HTTP: one image now, or a video upload as a background job."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from proctor.flags.model import new_id, utc_now_iso
from proctor.media.file import MediaError, probe_video
from proctor.media.limits import FrameShapeError
from proctor.pipeline.offline import analyze_image, analyze_video
from proctor.threads import named_pool
from signaling.auth import Role
from signaling.errors import ApiError
from signaling.keys import CONFIG_KEY, SESSIONS_KEY
from signaling.routes import API, authenticate
from signaling.uploads import decode_upload_image, read_upload, read_upload_bytes

log = logging.getLogger("proctor.analysis")
routes = web.RouteTableDef()

MAX_IMAGE_BYTES = 10 * 1024 * 1024
FINISHED_JOBS_KEPT = 200


@dataclass
class Job:
    job_id: str
    filename: str
    tenant: str  # the tenant whose key uploaded it: no other tenant sees it
    status: str = "queued"  # queued, running, done, failed
    progress: float = 0.0
    created_at: str = field(default_factory=utc_now_iso)
    report: dict[str, Any] | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "status": self.status, "filename": self.filename,
                "progress": round(self.progress, 3), "created_at": self.created_at,
                "report": self.report, "error": self.error}


class AnalysisJobs:
    """Video jobs run one at a time on their own thread, so live sessions keep the
    inference pool. Finished jobs stay in memory (the newest few hundred)."""

    def __init__(self, upload_dir: Path) -> None:
        self.upload_dir = upload_dir
        self.jobs: dict[str, Job] = {}
        self._executor = named_pool(1, "jobs")
        self._turn = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, job: Job, path: Path, app: web.Application) -> None:
        self.jobs[job.job_id] = job
        task = asyncio.get_running_loop().create_task(self._run(job, path, app),
                                                      name=f"analysis-job:{job.job_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._forget_old()

    async def _run(self, job: Job, path: Path, app: web.Application) -> None:
        async with self._turn:
            job.status = "running"
            started = time.monotonic()

            def progress(done: float, total: float) -> None:
                job.progress = min(1.0, done / total) if total > 0 else 0.0

            try:
                job.report = await analyze_video(path, app[CONFIG_KEY], app[SESSIONS_KEY].detectors,
                                                 progress=progress, executor=self._executor)
                job.status, job.progress = "done", 1.0
            except (MediaError, FrameShapeError) as exc:
                job.status, job.error = "failed", str(exc)
            except Exception as exc:
                log.exception("analysis job %s failed", job.job_id)
                job.status, job.error = "failed", f"internal error: {type(exc).__name__}"
            finally:
                path.unlink(missing_ok=True)
            log.info("analysis job %s %s in %.1f s", job.job_id, job.status,
                     time.monotonic() - started)

    def _forget_old(self) -> None:
        finished = [j for j in self.jobs.values() if j.status in ("done", "failed")]
        for job in finished[:-FINISHED_JOBS_KEPT]:
            del self.jobs[job.job_id]

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        self._executor.shutdown(wait=False, cancel_futures=True)


JOBS_KEY = web.AppKey("jobs", AnalysisJobs)


async def jobs_ctx(app: web.Application) -> AsyncIterator[None]:
    app[JOBS_KEY] = AnalysisJobs(app[CONFIG_KEY].data_dir / "uploads")
    yield
    await app[JOBS_KEY].close()


@routes.post(f"{API}/analyze/frame")
async def analyze_frame(request: web.Request) -> web.Response:
    principal = await authenticate(request, Role.INTEGRATOR)
    data = await read_upload_bytes(request, ("image", "photo", "file"), MAX_IMAGE_BYTES,
                                   "image")
    if not data:
        raise ApiError(400, "bad_request", "the upload is empty")
    image = decode_upload_image(data, request.app[CONFIG_KEY].pipeline)
    service = request.app[SESSIONS_KEY]
    candidate_id = request.query.get("candidate_id")
    enrollment = (await service.load_enrollment(candidate_id, principal.tenant)
                  if candidate_id else None)
    if candidate_id and enrollment is None:
        raise ApiError(404, "not_enrolled", f"candidate {candidate_id!r} has no enrollment")
    loop = asyncio.get_running_loop()
    result = await loop.run_in_executor(
        service.inference, lambda: analyze_image(image, service.detectors,
                                             candidate_id=candidate_id or "image",
                                             enrollment=enrollment))
    return web.json_response(result)


@routes.post(f"{API}/analyze/video")
async def analyze_video_upload(request: web.Request) -> web.Response:
    principal = await authenticate(request, Role.INTEGRATOR)
    jobs = request.app[JOBS_KEY]
    job_id = new_id()
    jobs.upload_dir.mkdir(parents=True, exist_ok=True)
    path = jobs.upload_dir / f"{job_id}.upload"
    try:
        with path.open("wb") as handle:
            filename, size = await read_upload(
                request, ("video", "file"), request.app[CONFIG_KEY].server.max_upload_bytes,
                "video", handle.write)
        if size == 0:
            raise ApiError(400, "bad_request", "the upload is empty")
        await asyncio.get_running_loop().run_in_executor(
            None, probe_video, path, request.app[CONFIG_KEY].pipeline)
    except FrameShapeError as exc:
        path.unlink(missing_ok=True)
        raise ApiError(400, "bad_video_shape", str(exc)) from exc
    except MediaError as exc:
        path.unlink(missing_ok=True)
        raise ApiError(400, "not_a_video", str(exc)) from exc
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    job = Job(job_id=job_id, filename=Path(filename).name, tenant=principal.tenant)
    jobs.submit(job, path, request.app)
    return web.json_response({"job_id": job.job_id, "status": job.status}, status=202)


@routes.get(f"{API}/jobs/{{job_id}}")
async def get_job(request: web.Request) -> web.Response:
    principal = await authenticate(request, Role.INTEGRATOR)
    job = request.app[JOBS_KEY].jobs.get(request.match_info["job_id"])
    if job is None or job.tenant != principal.tenant:
        raise ApiError(404, "not_found", "no such job")
    return web.json_response(job.to_dict())
