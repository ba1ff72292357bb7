"""Where finished clips live: files on a volume (``clips: file://``) or the database.

The clip writer always writes an MP4 file first (PyAV muxes to a path). With
``clips: store`` that file is then moved into the store (``save_clip_data``), so every
node of a deployment can serve it; with ``file://`` it stays where it was written, and a
volume every node mounts does the same job.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from pathlib import Path
from typing import Protocol

from proctor.store.base import ClipRecord, Store

log = logging.getLogger(__name__)

STORE_PATH_PREFIX = "store:"


class ClipStorage(Protocol):
    async def keep(self, clip: ClipRecord) -> ClipRecord:
        """Give a freshly written clip its lasting home; the record to store for it."""

    async def read(self, clip: ClipRecord) -> Path | bytes | None:
        """The clip's file, or its bytes; None when it is gone (retention, erasure)."""

    async def remove(self, clips: list[ClipRecord]) -> None:
        """Remove what outlives the clips' rows (their files), after an erasure."""


class FileClipStorage:
    """``clips: file://PATH``: the file the writer made is the clip."""

    async def keep(self, clip: ClipRecord) -> ClipRecord:
        return clip

    async def read(self, clip: ClipRecord) -> Path | bytes | None:
        path = Path(clip.path)
        return path if path.is_file() else None

    async def remove(self, clips: list[ClipRecord]) -> None:
        await asyncio.to_thread(remove_files, [Path(c.path) for c in clips
                                               if not c.path.startswith(STORE_PATH_PREFIX)])


class StoreClipStorage:
    """``clips: store``: the bytes go into the store's database (any node reads them)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def keep(self, clip: ClipRecord) -> ClipRecord:
        spooled = Path(clip.path)
        data = await asyncio.to_thread(spooled.read_bytes)
        await self._store.save_clip_data(clip.clip_id, clip.session_id, data)
        await asyncio.to_thread(spooled.unlink, missing_ok=True)
        return dataclasses.replace(clip, path=f"{STORE_PATH_PREFIX}{clip.clip_id}",
                                   size_bytes=len(data))

    async def read(self, clip: ClipRecord) -> Path | bytes | None:
        if not clip.path.startswith(STORE_PATH_PREFIX):  # written before clips: store
            return await FileClipStorage().read(clip)
        return await self._store.get_clip_data(clip.clip_id)

    async def remove(self, clips: list[ClipRecord]) -> None:
        # The rows' data went with the session (ON DELETE CASCADE); only older clips
        # written as files have something left to remove.
        await FileClipStorage().remove(clips)


def clip_storage(store: Store, in_store: bool) -> ClipStorage:
    return StoreClipStorage(store) if in_store else FileClipStorage()


def remove_files(paths: list[Path]) -> None:
    for path in paths:
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:  # the rows are gone; say loudly that a file was left
            log.error("could not delete clip file %s: %s", path, exc)
