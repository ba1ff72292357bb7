"""Retention's purge in the Store, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import dataclasses

from proctor.store import Store
from proctor.store.base import SessionStatus
from tests.store.factories import clip, enrollment, segment, session

OLD = "2020-01-01T00:00:00.000000Z"
NEW = "2030-01-01T00:00:00.000000Z"
CUT = "2025-01-01T00:00:00.000000Z"
ALL = {"clips": CUT, "sessions": CUT, "enrollments": CUT, "transcripts": CUT}


async def _session(store: Store, session_id: str, status: SessionStatus, at: str,
                   candidate_id: str = "c1") -> None:
    await store.create_session(session(session_id, candidate_id, created_at=at))
    if status != SessionStatus.CREATED:
        await store.update_session(session_id, status=status,
                                   ended_at=at if status != SessionStatus.LIVE else None)


async def _clip(store: Store, clip_id: str, session_id: str, at: str) -> None:
    await store.save_clip(dataclasses.replace(clip(clip_id, session_id), created_at=at))
    await store.save_clip_data(clip_id, session_id, b"mp4 bytes")


async def _segment(store: Store, segment_id: str, session_id: str, at: str) -> None:
    await store.add_transcript_segment(
        dataclasses.replace(segment(segment_id, session_id), created_at=at))


async def _fill(store: Store) -> None:
    """Old and new of every kind, and a live session whose old rows must stay."""
    await _session(store, "old", SessionStatus.ENDED, OLD)
    await _session(store, "new", SessionStatus.ENDED, NEW, candidate_id="c2")
    await _session(store, "live", SessionStatus.LIVE, OLD, candidate_id="c3")
    await _clip(store, "old-clip", "old", OLD)
    await _clip(store, "new-old-clip", "new", OLD)  # past clips_days in a kept session
    await _clip(store, "new-clip", "new", NEW)
    await _clip(store, "live-clip", "live", OLD)
    await _segment(store, "new-old-seg", "new", OLD)
    await _segment(store, "new-seg", "new", NEW)
    await _segment(store, "live-seg", "live", OLD)
    await store.save_enrollment(enrollment("c1", created_at=OLD))
    await store.save_enrollment(enrollment("c2", created_at=NEW))
    await store.save_enrollment(enrollment("c3", created_at=OLD))  # has a live session


async def test_purge_removes_expired_rows_and_keeps_new_and_live(store: Store) -> None:
    await _fill(store)
    counts, clips = await store.purge_expired(ALL)
    assert counts == {"clips": 2, "sessions": 1, "enrollments": 1, "transcripts": 1}
    assert sorted(c.clip_id for c in clips) == ["new-old-clip", "old-clip"]
    assert await store.get_session("old") is None
    assert await store.get_session("new") is not None
    assert await store.get_session("live") is not None
    assert [c.clip_id for c in await store.list_clips("new")] == ["new-clip"]
    assert [c.clip_id for c in await store.list_clips("live")] == ["live-clip"]
    assert await store.get_clip_data("new-old-clip") is None
    assert await store.get_clip_data("live-clip") == b"mp4 bytes"
    assert [s.segment_id for s in await store.list_transcript("new")] == ["new-seg"]
    assert [s.segment_id for s in await store.list_transcript("live")] == ["live-seg"]
    assert await store.get_enrollment("c1") is None
    assert await store.get_enrollment("c2") is not None
    assert await store.get_enrollment("c3") is not None
    again, _ = await store.purge_expired(ALL)  # idempotent
    assert again == {"clips": 0, "sessions": 0, "enrollments": 0, "transcripts": 0}


async def test_dry_run_reports_the_same_and_removes_nothing(store: Store) -> None:
    await _fill(store)
    dry, dry_clips = await store.purge_expired(ALL, dry_run=True)
    assert await store.get_session("old") is not None
    assert await store.get_clip_data("old-clip") == b"mp4 bytes"
    assert await store.get_enrollment("c1") is not None
    real, real_clips = await store.purge_expired(ALL)
    assert dry == real
    assert dry_clips == real_clips


async def test_an_empty_cutoff_keeps_that_kind(store: Store) -> None:
    await _fill(store)
    counts, _ = await store.purge_expired({"clips": CUT})
    assert counts == {"clips": 2, "sessions": 0, "enrollments": 0, "transcripts": 0}
    assert await store.get_session("old") is not None


async def test_a_never_started_session_expires_by_its_creation(store: Store) -> None:
    await _session(store, "idle", SessionStatus.CREATED, OLD)
    counts, _ = await store.purge_expired({"sessions": CUT})
    assert counts["sessions"] == 1
    assert await store.get_session("idle") is None
