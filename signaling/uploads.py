"""Reading an uploaded file within a size limit: a raw body or one multipart field.

The app's ``client_max_size`` only covers bodies read whole, so uploads are streamed
here and counted as they come: a Content-Length over the limit is refused before
reading, a chunked body as soon as it passes the limit. In a multipart body every
part counts against the same budget, so extra fields cannot get around it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import BodyPartReader, web

from proctor.config import PipelineConfig
from proctor.detectors.base import RgbImage
from proctor.media.file import MediaError, decode_image
from proctor.media.limits import FrameShapeError
from signaling.errors import ApiError

CHUNK = 1 << 16

Sink = Callable[[bytes], object]
_ChunkReader = Callable[[int], Awaitable[bytes]]


class _Budget:
    def __init__(self, limit: int, what: str) -> None:
        self.left = limit
        self.limit = limit
        self.what = what

    def spend(self, size: int) -> None:
        self.left -= size
        if self.left < 0:
            raise too_large(self.what, self.limit)


def too_large(what: str, limit: int) -> ApiError:
    return ApiError(413, "too_large", f"the {what} is larger than {limit} bytes")


async def read_upload(request: web.Request, fields: tuple[str, ...], limit: int, what: str,
                      sink: Sink) -> tuple[str, int]:
    """Stream the upload into ``sink``; its file name and size. Multipart bodies carry
    it in the first field named one of ``fields``; other bodies are the file itself."""
    if (request.content_length or 0) > limit:
        raise too_large(what, limit)
    budget = _Budget(limit, what)
    if not request.content_type.startswith("multipart/"):
        return "upload", await _copy(request.content.read, budget, sink)
    try:
        return await _read_multipart(request, fields, budget, sink)
    except (KeyError, ValueError, AssertionError) as exc:  # no boundary, a broken body
        raise ApiError(400, "bad_request", "the multipart body could not be read "
                       "(is the boundary missing?)") from exc


async def _read_multipart(request: web.Request, fields: tuple[str, ...], budget: _Budget,
                          sink: Sink) -> tuple[str, int]:
    what = budget.what
    found: tuple[str, int] | None = None
    async for part in await request.multipart():
        if not isinstance(part, BodyPartReader):
            raise ApiError(400, "bad_request", "nested multipart is not supported")
        if found is None and part.name in fields:
            found = (part.filename or part.name or "upload",
                     await _copy(part.read_chunk, budget, sink))
        else:
            await _copy(part.read_chunk, budget, lambda chunk: None)
    if found is None:
        raise ApiError(400, "bad_request", f"send the {what} in a field named '{fields[0]}'")
    return found


async def read_upload_bytes(request: web.Request, fields: tuple[str, ...], limit: int,
                            what: str) -> bytes:
    """The whole upload in memory (small files: photos, frames)."""
    chunks: list[bytes] = []
    await read_upload(request, fields, limit, what, chunks.append)
    return b"".join(chunks)


def decode_upload_image(data: bytes, limits: PipelineConfig) -> RgbImage:
    """An uploaded image as RGB, or a 400: a shape over the limits is refused from the
    file's header, before it is decoded (see proctor.media.limits)."""
    try:
        return decode_image(data, limits)
    except FrameShapeError as exc:
        raise ApiError(400, "bad_image_shape", str(exc)) from exc
    except MediaError as exc:
        raise ApiError(400, "not_an_image", str(exc)) from exc


async def _copy(read: _ChunkReader, budget: _Budget, sink: Sink) -> int:
    size = 0
    while chunk := await read(CHUNK):
        budget.spend(len(chunk))
        sink(chunk)
        size += len(chunk)
    return size
