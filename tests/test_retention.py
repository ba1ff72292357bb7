"""Retention: ``purge`` removes old rows and their clip files, keeps new and live ones,
and audits counts only; ``proctor purge [--dry-run]`` as a subprocess."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from proctor.config import RetentionConfig
from proctor.evidence.storage import FileClipStorage
from proctor.flags.model import utc_now_iso
from proctor.retention import cutoffs, purge
from proctor.store import Store, open_store_from_url
from proctor.store.base import SessionStatus
from tests.store.factories import clip, enrollment, session
from tests.test_cli import _run

OLD = "2020-01-01T00:00:00.000000Z"
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_cutoffs_are_store_timestamps_and_zero_keeps() -> None:
    cut = cutoffs(RetentionConfig(clips_days=30, sessions_days=0), NOW)
    assert cut["clips"] == "2025-12-02T00:00:00.000000Z"
    assert cut["sessions"] == ""
    assert cut["enrollments"] == "2025-01-01T00:00:00.000000Z"


async def _fill(store: Store, clips_dir: Path, recent: str) -> dict[str, Path]:
    clips_dir.mkdir(parents=True, exist_ok=True)
    files = {}
    for sid, status, at, cand in (("old", SessionStatus.ENDED, OLD, "alice@example.org"),
                                  ("new", SessionStatus.ENDED, recent, "bob"),
                                  ("live", SessionStatus.LIVE, OLD, "carol")):
        await store.create_session(session(sid, cand, created_at=at))
        await store.update_session(sid, status=status,
                                   ended_at=None if status == SessionStatus.LIVE else at)
        for name, clip_at in (("old", OLD), ("new", recent)):
            clip_id = f"{sid}-{name}"
            path = clips_dir / f"{clip_id}.mp4"
            path.write_bytes(b"\x00" * 1000)
            files[clip_id] = path
            await store.save_clip(dataclasses.replace(clip(clip_id, sid), path=str(path),
                                                      created_at=clip_at))
    await store.save_enrollment(enrollment("alice@example.org", created_at=OLD))
    return files


def _purge_audit(db: Path) -> list[tuple[str | None, str | None, str, str]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT session_id, candidate_id, actor, details FROM audit "
                            "WHERE action = 'purge'").fetchall()


async def test_purge_removes_rows_and_files_keeps_new_and_live(tmp_path: Path) -> None:
    db = tmp_path / "proctor.db"
    store = open_store_from_url(f"sqlite:///{db}")
    await store.open()
    try:
        files = await _fill(store, tmp_path / "clips", "2025-12-31T00:00:00.000000Z")
        config = RetentionConfig()
        dry = await purge(store, FileClipStorage(), config, dry_run=True, now=NOW)
        assert all(path.exists() for path in files.values())
        assert _purge_audit(db) == []
        counts = await purge(store, FileClipStorage(), config, now=NOW)
        assert counts == dry == {"clips": 3, "sessions": 1, "enrollments": 1,
                                 "transcripts": 0}
        gone = {c for c, path in files.items() if not path.exists()}
        assert gone == {"old-old", "old-new", "new-old"}  # never live-*, never new-new
        assert await store.get_session("live") is not None
        assert [c.clip_id for c in await store.list_clips("new")] == ["new-new"]
    finally:
        await store.close()
    [(session_id, candidate_id, actor, details)] = _purge_audit(db)
    assert (session_id, candidate_id, actor) == (None, None, "retention")
    assert json.loads(details) == counts  # counts only: no ids, no candidate
    assert "alice" not in details


def test_purge_command_dry_run_then_real(tmp_path: Path) -> None:
    db = tmp_path / "data" / "proctor.db"
    db.parent.mkdir(parents=True)

    async def fill() -> dict[str, Path]:
        store = open_store_from_url(f"sqlite:///{db}")
        await store.open()
        try:
            return await _fill(store, tmp_path / "data" / "clips", utc_now_iso())
        finally:
            await store.close()

    files = asyncio.run(fill())
    dry = _run(tmp_path, "--quiet", "purge", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    expected = "clips 3, sessions 1, enrollments 1, transcripts 0"
    assert dry.stdout.strip() == f"would remove: {expected}"
    assert all(path.exists() for path in files.values())
    real = _run(tmp_path, "--quiet", "purge")
    assert real.returncode == 0, real.stderr
    assert real.stdout.strip() == f"removed: {expected}"
    assert {c for c, p in files.items() if not p.exists()} == {"old-old", "old-new", "new-old"}
    [(_, _, actor, details)] = _purge_audit(db)
    assert actor == "cli" and json.loads(details)["clips"] == 3
