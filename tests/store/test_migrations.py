"""The one migration runner, on raw SQLite and PostgreSQL connections."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from proctor.store import StoreUnavailable
from proctor.store.migrations import (
    LATEST_VERSION,
    MIGRATIONS,
    Migration,
    current_version,
    migrate,
    render,
)
from tests.store.conftest import Backend


def test_migration_versions_are_positive_and_increasing() -> None:
    versions = [m.version for m in MIGRATIONS]
    assert versions == sorted(set(versions))
    assert versions[0] == 1
    assert all(m.description for m in MIGRATIONS)
    assert versions[-1] == LATEST_VERSION == 8


def test_blob_placeholder_is_the_only_substitution() -> None:
    assert render("CREATE TABLE t (x {BLOB}, y TEXT)", "BYTEA") == \
        "CREATE TABLE t (x BYTEA, y TEXT)"
    for migration in MIGRATIONS:
        rendered = render(migration.sql, "BLOB")
        assert "{" not in rendered and "}" not in rendered and "?" not in rendered


def test_shipped_migrations_are_unchanged() -> None:
    # Append-only: a shipped migration's SQL is part of every database made with it.
    # Pin each new version here once it has shipped.
    digests = {m.version: hashlib.sha256(m.sql.encode()).hexdigest()[:16]
               for m in MIGRATIONS[:3]}
    assert digests == {1: "1b856dad7af82fea", 2: "26094b780c4a1d52", 3: "2b68985cd98b3831"}


@pytest.mark.parametrize("bad", [
    (Migration(2, "two", ""), Migration(1, "one", "")),
    (Migration(0, "zero", ""),),
    (Migration(1, "one", ""), Migration(1, "again", "")),
])
async def test_out_of_order_migrations_are_refused(backend: Backend,
                                                   bad: tuple[Migration, ...]) -> None:
    async with backend.raw_connection() as conn:
        with pytest.raises(ValueError, match="increasing"):
            await migrate(conn, bad)


async def test_fresh_database_gets_every_version_then_nothing(backend: Backend) -> None:
    async with backend.raw_connection() as conn:
        assert await migrate(conn) == [m.version for m in MIGRATIONS]
        assert await migrate(conn) == []
        assert await current_version(conn) == LATEST_VERSION


async def test_concurrent_runners_apply_each_migration_once(backend: Backend) -> None:
    async with backend.raw_connection() as first, backend.raw_connection() as second:
        applied = await asyncio.gather(migrate(first), migrate(second))
    assert sorted(applied[0] + applied[1]) == [m.version for m in MIGRATIONS]
    assert await backend.count_rows("schema_migrations") == len(MIGRATIONS)


async def test_failed_migration_rolls_back_and_keeps_earlier_ones(backend: Backend) -> None:
    broken = (
        Migration(1, "one", "CREATE TABLE a (x TEXT)"),
        Migration(2, "two", "CREATE TABLE b (x TEXT); INSERT INTO no_such_table VALUES (1)"),
    )
    async with backend.raw_connection() as conn:
        with pytest.raises(backend.error, match="no_such_table"):
            await migrate(conn, broken)
        assert await current_version(conn) == 1
        await conn.execute("SELECT x FROM a")
        with pytest.raises(backend.error):
            await conn.execute("SELECT x FROM b")  # migration 2's first statement rolled back


async def test_newer_schema_is_refused(backend: Backend) -> None:
    async with backend.raw_connection() as conn:
        await migrate(conn)
        with pytest.raises(StoreUnavailable, match=f"{LATEST_VERSION} is newer"):
            await migrate(conn, MIGRATIONS[:-1])


async def test_clip_data_column_is_binary(backend: Backend) -> None:
    async with backend.raw_connection() as conn:
        await migrate(conn)
    if backend.name == "sqlite":
        [(sql,)] = await backend.rows("SELECT sql FROM sqlite_master WHERE name = 'clip_data'")
        assert "data BLOB NOT NULL" in sql
    else:
        [(data_type,)] = await backend.rows(
            "SELECT data_type FROM information_schema.columns "
            "WHERE table_name = 'clip_data' AND column_name = 'data' "
            "AND table_schema = current_schema()")
        assert data_type == "bytea"
