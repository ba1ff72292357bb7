"""Retention (SPEC "Retention"): remove what is older than ``retention.*`` allows.

:func:`purge` is what ``proctor purge`` and the server's hourly task run: the store
removes the rows (one transaction, never a live session's), then the clips' files are
removed, and the audit gets one ``purge`` entry holding counts only, no personal data.
Every node of a deployment runs the hourly purge; deletes are idempotent, so nodes
purging at once remove each row once (their audit entries may both count it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta

from proctor.config import RetentionConfig
from proctor.evidence.storage import ClipStorage
from proctor.review import audit
from proctor.store.base import Store

log = logging.getLogger("proctor.retention")

PURGE_ACTOR = "retention"
FIRST_PURGE_SECONDS = 60.0
_KINDS = {"clips": "clips_days", "sessions": "sessions_days",
          "enrollments": "enrollments_days", "transcripts": "transcripts_days"}


def cutoffs(config: RetentionConfig, now: datetime | None = None) -> dict[str, str]:
    """Each kind's cutoff in the store's timestamp format; "" (keep) for 0 days."""
    now = now or datetime.now(UTC)
    return {kind: _iso(now - timedelta(days=days)) if (days := getattr(config, key)) else ""
            for kind, key in _KINDS.items()}


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def purge(store: Store, clips: ClipStorage, config: RetentionConfig,
                dry_run: bool = False, now: datetime | None = None,
                actor: str = PURGE_ACTOR) -> dict[str, int]:
    """Apply retention once; the counts removed (or, dry, that would be) per kind."""
    counts, removed = await store.purge_expired(cutoffs(config, now), dry_run=dry_run)
    if dry_run:
        return counts
    await clips.remove(removed)
    if any(counts.values()):
        await audit.record(store, "purge", actor, clips=counts["clips"],
                           sessions=counts["sessions"], enrollments=counts["enrollments"],
                           transcripts=counts["transcripts"])
    return counts


class RetentionWorker:
    """The server's purge every ``retention.interval_seconds``, as one named task."""

    def __init__(self, store: Store, clips: ClipStorage, config: RetentionConfig) -> None:
        self._store, self._clips, self._config = store, clips, config
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(),
                                                                name="retention-purge")

    async def close(self) -> None:
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _run(self) -> None:
        # A first round soon after start-up (a node restarted often still purges).
        await asyncio.sleep(min(FIRST_PURGE_SECONDS, self._config.interval_seconds))
        while True:
            try:
                counts = await purge(self._store, self._clips, self._config)
                if any(counts.values()):
                    log.info("retention purge removed %s", counts)
            except Exception:  # the next round tries again
                log.exception("retention purge failed")
            await asyncio.sleep(self._config.interval_seconds)
