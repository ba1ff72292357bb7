"""What only SQLite has: a file, its pragmas, its URLs. The protocol is test_contract.py's."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import aiosqlite
import pytest

from proctor.store import PostgresStore, SqliteStore, StoreUnavailable, open_store_from_url
from proctor.store.migrations import LATEST_VERSION, MIGRATIONS, migrate
from proctor.store.sqlite import SqliteConnection
from tests.store.factories import session


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "proctor.db"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(db_path)
    await s.open()
    yield s
    await s.close()


async def test_open_makes_the_folder_the_tables_and_wal(store: SqliteStore,
                                                        db_path: Path) -> None:
    with sqlite3.connect(db_path) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
    assert {"api_keys", "sessions", "flags", "clips", "clip_data", "events", "enrollments",
            "transcripts", "nodes", "schema_migrations"} <= tables
    assert journal == "wal"


async def test_migrate_on_current_database_applies_nothing(store: SqliteStore,
                                                           db_path: Path) -> None:
    async with aiosqlite.connect(db_path, isolation_level=None) as conn:
        conn.row_factory = aiosqlite.Row
        assert await migrate(SqliteConnection(conn)) == []
    assert await store.schema_version() == LATEST_VERSION


async def test_connection_must_be_in_autocommit_mode(tmp_path: Path) -> None:
    async with aiosqlite.connect(tmp_path / "x.db") as conn:
        with pytest.raises(ValueError, match="isolation_level=None"):
            SqliteConnection(conn)


async def test_version_3_database_upgrades_to_the_latest_keeping_its_rows(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    async with aiosqlite.connect(db_path, isolation_level=None) as conn:
        conn.row_factory = aiosqlite.Row
        assert await migrate(SqliteConnection(conn), MIGRATIONS[:3]) == [1, 2, 3]
        await conn.execute("INSERT INTO sessions (session_id, candidate_id, status, policy, "
                           "accommodations, metadata, created_at) "
                           "VALUES ('old', 'c1', 'live', '{}', '{}', '{}', 't')")
    store = SqliteStore(db_path)
    await store.open()
    try:
        assert await store.schema_version() == LATEST_VERSION
        old = await store.get_session("old")
        assert old is not None and old.owner_node is None and old.media_time is None
    finally:
        await store.close()


# -- availability -----------------------------------------------------------------------


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


@pytest.mark.parametrize("url", ["postgresql://u@h/db", "postgres://h/db",
                                 "postgresql://u@h:5433/db?schema=tenant_a"])
def test_postgres_urls_make_a_postgres_store(url: str) -> None:
    assert isinstance(open_store_from_url(url), PostgresStore)  # not connected until open()


@pytest.mark.parametrize("url", ["mysql://h/db", "sqlite://host/db", "sqlite:///",
                                 "sqlite:///x.db?mode=ro", "data/proctor.db",
                                 "postgresql+asyncpg://h/db"])
def test_bad_store_urls_are_rejected(url: str) -> None:
    with pytest.raises(ValueError):
        open_store_from_url(url)
