"""SqliteStore against real database files in tmp_path."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import aiosqlite
import pytest

from proctor.flags.model import Evidence, Flag, FlagKind, Severity
from proctor.store import (
    ApiKeyRecord,
    ClipRecord,
    EventRecord,
    SessionRecord,
    SessionStatus,
    SqliteStore,
    StoreUnavailable,
    open_store_from_url,
)
from proctor.store.migrations import LATEST_VERSION, MIGRATIONS, Migration, migrate


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "proctor.db"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(db_path)
    await s.open()
    yield s
    await s.close()


def session(session_id: str = "s1", candidate_id: str = "c1",
            created_at: str = "2024-01-01T00:00:00.000000Z") -> SessionRecord:
    return SessionRecord(session_id=session_id, candidate_id=candidate_id,
                         created_at=created_at)


def clip(clip_id: str, session_id: str = "s1", start: float = 1.0) -> ClipRecord:
    return ClipRecord(clip_id=clip_id, session_id=session_id, flag_id=None,
                      path=f"/clips/{clip_id}.mp4", start=start, end=start + 4.0,
                      size_bytes=123_456, created_at="2024-01-01T00:00:10.000000Z")


def event(event_id: str, session_id: str = "s1",
          received_at: str = "2024-01-01T00:00:05.000000Z") -> EventRecord:
    return EventRecord(event_id=event_id, session_id=session_id, type="tab_hidden",
                       client_time=None, media_time=None, received_at=received_at)


def flag(flag_id: str, session_id: str = "s1", start: float = 10.0,
         created_at: str = "2024-01-01T00:00:10.000000Z") -> Flag:
    return Flag(session_id=session_id, candidate_id="c1", kind=FlagKind.GAZE_AWAY,
                severity=Severity.LOW, start=start, flag_id=flag_id, created_at=created_at)


def count_rows(path: Path, table: str) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


# -- migrations and pragmas ------------------------------------------------------------


def test_migration_versions_are_positive_and_increasing() -> None:
    versions = [m.version for m in MIGRATIONS]
    assert versions == sorted(set(versions))
    assert versions[0] == 1
    assert all(m.description for m in MIGRATIONS)
    assert versions[-1] == LATEST_VERSION


async def test_open_creates_schema_once(db_path: Path) -> None:
    first = SqliteStore(db_path)
    await first.open()
    assert await first.schema_version() == LATEST_VERSION
    await first.create_session(session())
    await first.close()

    with sqlite3.connect(db_path) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        recorded = conn.execute("SELECT version, description FROM schema_migrations").fetchall()
        journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
    assert {"api_keys", "sessions", "flags", "clips", "events", "schema_migrations"} <= tables
    assert recorded == [(m.version, m.description) for m in MIGRATIONS]
    assert journal == "wal"

    second = SqliteStore(db_path)
    await second.open()
    assert await second.schema_version() == LATEST_VERSION
    assert await second.get_session("s1") == session()  # data survived the reopen
    await second.close()
    assert count_rows(db_path, "schema_migrations") == len(MIGRATIONS)


async def test_migrate_on_current_database_applies_nothing(store: SqliteStore,
                                                           db_path: Path) -> None:
    async with aiosqlite.connect(db_path, isolation_level=None) as conn:
        assert await migrate(conn) == []
    assert await store.schema_version() == LATEST_VERSION


async def test_migrate_fresh_database_returns_every_version(tmp_path: Path) -> None:
    async with aiosqlite.connect(tmp_path / "fresh.db", isolation_level=None) as conn:
        assert await migrate(conn) == [m.version for m in MIGRATIONS]


async def test_failed_migration_rolls_back_and_keeps_earlier_ones(tmp_path: Path) -> None:
    broken = (
        Migration(1, "one", "CREATE TABLE a (x TEXT)"),
        Migration(2, "two", "CREATE TABLE b (x TEXT); INSERT INTO no_such_table VALUES (1)"),
    )
    path = tmp_path / "broken.db"
    async with aiosqlite.connect(path, isolation_level=None) as conn:
        with pytest.raises(sqlite3.OperationalError, match="no_such_table"):
            await migrate(conn, broken)
    with sqlite3.connect(path) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations")]
    assert "a" in tables
    assert "b" not in tables  # migration 2's first statement was rolled back too
    assert versions == [1]


async def test_database_newer_than_the_code_is_refused(db_path: Path) -> None:
    store = SqliteStore(db_path)
    await store.open()
    await store.close()
    with sqlite3.connect(db_path) as conn:
        conn.execute("INSERT INTO schema_migrations VALUES (999, 'future', 'now')")
    with pytest.raises(StoreUnavailable, match="999"):
        await SqliteStore(db_path).open()


async def test_foreign_keys_are_enforced(store: SqliteStore) -> None:
    with pytest.raises(sqlite3.IntegrityError):
        await store.save_flag(flag("f1", session_id="no-such-session"))


# -- sessions ---------------------------------------------------------------------------


async def test_session_round_trip_with_json_fields(store: SqliteStore) -> None:
    record = SessionRecord(
        session_id="s1", candidate_id="c1", exam_id="exam-7",
        policy={"rules": [{"kind": "gaze_away", "high": 30}], "strict": True},
        accommodations={"extra_time": 1.5, "notes": "ünïcode"},
        metadata={"browser": {"name": "chromium", "version": 120}},
        created_at="2024-01-01T00:00:00.000000Z", api_key_id="k1",
    )
    await store.create_session(record)
    loaded = await store.get_session("s1")
    assert loaded == record
    assert loaded is not None and loaded.status is SessionStatus.CREATED
    assert await store.get_session("missing") is None


async def test_update_session_status_times_and_report(store: SqliteStore) -> None:
    await store.create_session(session())
    await store.update_session("s1", status=SessionStatus.LIVE,
                               started_at="2024-01-01T00:01:00Z")
    live = await store.get_session("s1")
    assert live is not None
    assert (live.status, live.started_at, live.ended_at) == (
        SessionStatus.LIVE, "2024-01-01T00:01:00Z", None)

    report = {"risk": 42.5, "flags": [{"kind": "gaze_away", "count": 3}]}
    await store.update_session("s1", status="ended", ended_at="2024-01-01T01:00:00Z",
                               report=report)
    ended = await store.get_session("s1")
    assert ended is not None
    assert ended.status is SessionStatus.ENDED
    assert ended.ended_at == "2024-01-01T01:00:00Z"
    assert ended.report == report

    await store.update_session("s1", report=None)
    cleared = await store.get_session("s1")
    assert cleared is not None and cleared.report is None


async def test_update_session_rejects_other_fields_and_bad_values(store: SqliteStore) -> None:
    await store.create_session(session())
    with pytest.raises(ValueError, match="candidate_id"):
        await store.update_session("s1", candidate_id="someone-else")
    with pytest.raises(ValueError):
        await store.update_session("s1", status="paused")
    with pytest.raises(ValueError):
        await store.update_session("s1", report=["not", "a", "dict"])
    assert await store.get_session("s1") == session()  # nothing changed


async def test_list_sessions_newest_first_with_filter_and_limit(store: SqliteStore) -> None:
    for i in range(4):
        await store.create_session(session(f"s{i}", created_at=f"2024-01-0{i + 1}T00:00:00Z"))
    await store.update_session("s1", status=SessionStatus.LIVE)
    await store.update_session("s3", status=SessionStatus.LIVE)

    assert [s.session_id for s in await store.list_sessions()] == ["s3", "s2", "s1", "s0"]
    assert [s.session_id for s in await store.list_sessions(limit=2)] == ["s3", "s2"]
    live = await store.list_sessions(status=SessionStatus.LIVE)
    assert [s.session_id for s in live] == ["s3", "s1"]
    assert await store.list_sessions(status=SessionStatus.ENDED) == []


# -- flags ------------------------------------------------------------------------------


async def test_flag_upsert_keeps_one_row_with_final_values(store: SqliteStore,
                                                           db_path: Path) -> None:
    await store.create_session(session())
    opened = flag("f1")
    await store.save_flag(opened)
    stored = await store.get_flag("f1")
    assert stored == opened and stored.is_open

    opened.severity = Severity.MODERATE
    opened.confidence = 0.8
    opened.evidence.metrics = {"yaw": 41.5}
    await store.save_flag(opened)

    closed = Flag(session_id="s1", candidate_id="c1", kind=FlagKind.GAZE_AWAY,
                  severity=Severity.HIGH, start=10.0, end=42.25, confidence=0.93,
                  evidence=Evidence(clip_id="clip-1", metrics={"yaw": 55.0, "pitch": -3.5}),
                  source="gaze", flag_id="f1", created_at=opened.created_at)
    await store.save_flag(closed)

    assert await store.list_flags("s1") == [closed]
    assert await store.get_flag("f1") == closed
    assert count_rows(db_path, "flags") == 1
    assert await store.get_flag("missing") is None


async def test_list_flags_by_start_then_created_at_for_one_session(store: SqliteStore) -> None:
    await store.create_session(session("s1"))
    await store.create_session(session("s2"))
    await store.save_flag(flag("late", start=30.0, created_at="2024-01-01T00:00:01Z"))
    await store.save_flag(flag("tie-b", start=5.0, created_at="2024-01-01T00:00:03Z"))
    await store.save_flag(flag("tie-a", start=5.0, created_at="2024-01-01T00:00:02Z"))
    await store.save_flag(flag("other", session_id="s2", start=1.0))

    assert [f.flag_id for f in await store.list_flags("s1")] == ["tie-a", "tie-b", "late"]
    assert [f.flag_id for f in await store.list_flags("s2")] == ["other"]


# -- clips and events -------------------------------------------------------------------


async def test_clip_round_trip_and_order(store: SqliteStore) -> None:
    await store.create_session(session())
    later = clip("later", start=20.0)
    earlier = ClipRecord(clip_id="earlier", session_id="s1", flag_id="f1",
                         path="/clips/e.webm", start=2.5, end=9.75, size_bytes=5_000_000_000,
                         created_at="2024-01-01T00:00:09Z", content_type="video/webm")
    await store.save_clip(later)
    await store.save_clip(earlier)

    assert await store.get_clip("earlier") == earlier
    assert await store.get_clip("missing") is None
    assert await store.list_clips("s1") == [earlier, later]
    assert await store.list_clips("s2") == []


async def test_event_round_trip_and_order(store: SqliteStore) -> None:
    await store.create_session(session())
    second = EventRecord(event_id="e2", session_id="s1", type="paste",
                         client_time=1_704_067_210.125, media_time=12.5,
                         received_at="2024-01-01T00:00:10Z", detail={"length": 120})
    first = event("e1", received_at="2024-01-01T00:00:05Z")
    await store.add_event(second)
    await store.add_event(first)

    assert await store.list_events("s1") == [first, second]
    assert await store.list_events("other") == []


# -- API keys ---------------------------------------------------------------------------


async def test_find_api_key_ignores_revoked_and_unknown(store: SqliteStore) -> None:
    active = ApiKeyRecord(key_id="k1", name="ci", key_hash="a" * 64, created_at="t1")
    revoked = ApiKeyRecord(key_id="k2", name="old", key_hash="b" * 64, created_at="t0",
                           revoked=True)
    await store.add_api_key(active)
    await store.add_api_key(revoked)

    assert await store.find_api_key("a" * 64) == active
    assert await store.find_api_key("b" * 64) is None
    assert await store.find_api_key("c" * 64) is None


async def test_find_api_key_prefers_the_unrevoked_of_a_shared_hash(store: SqliteStore) -> None:
    await store.add_api_key(ApiKeyRecord(key_id="k-old", name="old", key_hash="h",
                                         created_at="t0", revoked=True))
    await store.add_api_key(ApiKeyRecord(key_id="k-new", name="new", key_hash="h",
                                         created_at="t1"))
    found = await store.find_api_key("h")
    assert found is not None and found.key_id == "k-new" and not found.revoked


# -- deletion ---------------------------------------------------------------------------


async def _session_with_children(store: SqliteStore, session_id: str, candidate_id: str) -> None:
    await store.create_session(session(session_id, candidate_id))
    await store.save_flag(flag(f"f-{session_id}", session_id=session_id))
    await store.save_clip(clip(f"clip-{session_id}", session_id=session_id))
    await store.add_event(event(f"e-{session_id}", session_id=session_id))


async def test_delete_session_cascades_and_returns_its_clips(store: SqliteStore,
                                                             db_path: Path) -> None:
    await _session_with_children(store, "s1", "c1")
    await _session_with_children(store, "s2", "c1")

    deleted = await store.delete_session("s1")

    assert deleted == [clip("clip-s1", session_id="s1")]
    assert await store.get_session("s1") is None
    assert await store.list_flags("s1") == []
    assert await store.list_clips("s1") == []
    assert await store.list_events("s1") == []
    for table in ("flags", "clips", "events"):
        assert count_rows(db_path, table) == 1  # only s2's rows are left
    assert await store.get_session("s2") is not None
    assert await store.delete_session("s1") == []


async def test_delete_candidate_removes_all_their_sessions_only(store: SqliteStore) -> None:
    await _session_with_children(store, "a1", "alice")
    await _session_with_children(store, "a2", "alice")
    await _session_with_children(store, "b1", "bob")

    deleted = await store.delete_candidate("alice")

    assert sorted(c.clip_id for c in deleted) == ["clip-a1", "clip-a2"]
    assert all(c.path.endswith(".mp4") for c in deleted)
    assert [s.session_id for s in await store.list_sessions()] == ["b1"]
    assert await store.list_flags("a1") == [] and await store.list_events("a2") == []
    assert len(await store.list_clips("b1")) == 1
    assert await store.delete_candidate("alice") == []


async def test_concurrent_transactions_do_not_interleave(store: SqliteStore) -> None:
    for i in range(10):
        await _session_with_children(store, f"s{i}", f"c{i}")
    deletes = [store.delete_candidate(f"c{i}") for i in range(10)]
    creates = [store.create_session(session(f"new{i}", "z")) for i in range(10)]
    deleted, _ = await asyncio.gather(asyncio.gather(*deletes), asyncio.gather(*creates))
    assert [len(clips) for clips in deleted] == [1] * 10
    assert len(await store.list_sessions()) == 10


# -- availability -----------------------------------------------------------------------


async def test_calls_after_close_raise_store_unavailable(db_path: Path) -> None:
    store = SqliteStore(db_path)
    with pytest.raises(StoreUnavailable, match="not open"):
        await store.get_session("s1")
    await store.open()
    await store.ping()
    await store.close()
    await store.close()  # closing twice is harmless
    with pytest.raises(StoreUnavailable, match="closed"):
        await store.ping()
    with pytest.raises(StoreUnavailable, match="closed"):
        await store.create_session(session())
    with pytest.raises(StoreUnavailable, match="closed"):
        await store.list_flags("s1")


async def test_open_under_a_file_raises_store_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    with pytest.raises(StoreUnavailable, match="cannot open"):
        await SqliteStore(blocker / "sub" / "proctor.db").open()


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root ignores directory permissions")
@pytest.mark.parametrize("name", ["proctor.db", "sub/proctor.db"])
async def test_open_in_read_only_directory_raises_store_unavailable(tmp_path: Path,
                                                                    name: str) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(StoreUnavailable):
            await SqliteStore(locked / name).open()
    finally:
        locked.chmod(0o700)


async def test_open_on_a_directory_raises_store_unavailable(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailable):
        await SqliteStore(tmp_path).open()


async def test_open_on_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is not an sqlite database, just some bytes" * 100)
    with pytest.raises(StoreUnavailable, match="not a database"):
        await SqliteStore(path).open()


async def test_two_stores_share_one_file(db_path: Path) -> None:
    writer, reader = SqliteStore(db_path), SqliteStore(db_path)
    await asyncio.gather(writer.open(), reader.open())
    try:
        await writer.create_session(session())
        assert await reader.get_session("s1") == session()
        assert count_rows(db_path, "schema_migrations") == len(MIGRATIONS)
    finally:
        await writer.close()
        await reader.close()


# -- URLs -------------------------------------------------------------------------------


async def test_relative_sqlite_url_resolves_against_cwd(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = open_store_from_url("sqlite:///data/proctor.db")
    assert isinstance(store, SqliteStore)
    assert store.path == tmp_path / "data" / "proctor.db"
    await store.open()
    await store.close()
    assert (tmp_path / "data" / "proctor.db").is_file()


def test_absolute_sqlite_url(tmp_path: Path) -> None:
    store = open_store_from_url(f"sqlite:///{tmp_path}/abs.db")  # four slashes in all
    assert isinstance(store, SqliteStore)
    assert store.path == tmp_path / "abs.db"


async def test_memory_sqlite_url_works() -> None:
    store = open_store_from_url("sqlite:///:memory:")
    await store.open()
    await store.create_session(session())
    assert await store.get_session("s1") == session()
    await store.close()


@pytest.mark.parametrize("url", ["postgresql://u@h/db", "postgres://h/db"])
def test_postgres_url_is_not_available_yet(url: str) -> None:
    with pytest.raises(ValueError, match="postgresql store is not available yet"):
        open_store_from_url(url)


@pytest.mark.parametrize("url", ["mysql://h/db", "sqlite://host/db", "sqlite:///",
                                 "sqlite:///x.db?mode=ro", "data/proctor.db"])
def test_bad_store_urls_are_rejected(url: str) -> None:
    with pytest.raises(ValueError):
        open_store_from_url(url)
