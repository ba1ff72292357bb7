"""Finishing a session whose media is gone: its node died, or this node crashed.

Nothing of it is live any more, so the report is built from what the store holds: the
flags so far (the open ones closed at the last stored media time), the transcript, and
the fact that it was interrupted, which a reviewer must see: an interrupted session is
never a silent PASS. A clip that was still recording is recovered from its journal (see
:func:`proctor.evidence.recorder.recover_clip`) when this node can reach it (its own
crash, or a clip volume every node mounts), so its flag keeps the evidence.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from proctor.bus import EventBus, session_topic
from proctor.config import Config
from proctor.evidence.recorder import recover_clip
from proctor.evidence.storage import clip_storage
from proctor.flags.model import Flag, utc_now_iso
from proctor.outbound import EventOutlet
from proctor.review.reports import current_report
from proctor.store.base import SessionRecord, SessionStatus, Store
from proctor.transcript import transcript_document

log = logging.getLogger("proctor.recovery")


async def finish_orphan(store: Store, bus: EventBus, outlet: EventOutlet, config: Config,
                        record: SessionRecord,
                        status: SessionStatus = SessionStatus.INTERRUPTED) -> dict[str, Any]:
    """Close its open flags, build and store its report, announce it; the report."""
    flags = await store.list_flags(record.session_id)
    await _settle_clips(store, bus, config, flags)
    stopped_at = last_media_time(record, flags)
    for flag in flags:
        if flag.is_open:
            await _close(store, bus, flag, stopped_at)
            await outlet.emit("flag.closed", record, {"flag": flag.to_dict()})
    breaks = await store.list_breaks(record.session_id)
    for taken in breaks:
        if taken.media_end is None:  # a break still on when the media stopped ends there
            taken.media_end = max(taken.media_start, stopped_at)
            await store.save_break(taken)
    record.status, record.ended_at = status, utc_now_iso()
    interrupted = status == SessionStatus.INTERRUPTED  # part of it was never analysed
    record.report = {"transcript": {**transcript_document(
        await store.list_transcript(record.session_id)), "complete": True}}
    if interrupted:
        record.report["interrupted"] = {"at_media_time": round(stopped_at, 3),
                                        "node": record.owner_node}
    report = await current_report(store, record, config.scoring)
    assert report is not None
    record.report = report
    await store.update_session(record.session_id, status=status, ended_at=record.ended_at,
                               report=report)
    await bus.publish(session_topic(record.session_id),
                      {"type": "session", "session_id": record.session_id,
                       "status": str(status)})
    await outlet.emit(f"session.{status}", record, {"status": str(status)})
    await outlet.emit("report.ready", record, {"report": report})
    log.warning("session %s %s at media time %.1f s (node %s): %s", record.session_id,
                status, stopped_at, record.owner_node, report["recommendation"])
    return report


def last_media_time(record: SessionRecord, flags: list[Flag]) -> float:
    """Where the media stopped, as far as the store knows: the owner's last stored media
    time, or, if its flags reach further (it beat less often than it flagged), theirs."""
    latest = max((max(f.start, f.end or f.start) for f in flags), default=0.0)
    return max(record.media_time or 0.0, latest)


async def _settle_clips(store: Store, bus: EventBus, config: Config, flags: list[Flag]) -> None:
    """Every clip a flag names resolves: recovered from its journal if it was still being
    written, else (nothing of it on disk here) the flag names none."""
    storage = clip_storage(store, config.clips_in_store)
    for flag in flags:
        clip_id = flag.evidence.clip_id
        if not clip_id or await store.get_clip(clip_id) is not None:
            continue
        recovered = await asyncio.to_thread(recover_clip, config.clips_dir, clip_id,
                                            flag.session_id, flag.flag_id, config.evidence)
        if recovered is not None:
            await store.save_clip(await storage.keep(recovered))
            await bus.publish(session_topic(flag.session_id),
                              {"type": "clip", "session_id": flag.session_id,
                               "clip_id": clip_id, "flag_id": flag.flag_id})
            log.warning("clip %s of flag %s recovered from its journal (%.1f s)", clip_id,
                        flag.flag_id, recovered.end - recovered.start)
        elif not flag.is_open:  # an open one is saved when it is closed, just after
            flag.evidence.clip_id = None
            await store.save_flag(flag)


async def _close(store: Store, bus: EventBus, flag: Flag, at: float) -> None:
    flag.end = max(flag.start, at)
    if flag.evidence.clip_id and await store.get_clip(flag.evidence.clip_id) is None:
        flag.evidence.clip_id = None  # its clip was never written: name none
    await store.save_flag(flag)
    await bus.publish(session_topic(flag.session_id),
                      {"type": "flag", "session_id": flag.session_id, "flag": flag.to_dict()})
