"""One store contract, two backends: every ``store`` / ``backend`` test runs on both.

``sqlite``: a file under tmp_path. ``postgresql``: a fresh schema
(``proctor_test_<random>``) in the shared test server (tests/pgserver.py), named in the
URL's ``?schema=`` so the store creates it, dropped with CASCADE afterwards. An
unreachable server fails those tests; it never skips them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite
import asyncpg
import pytest

from proctor.store import Store, open_store_from_url
from proctor.store.postgres import PostgresConnection
from proctor.store.sql import SqlConnection
from proctor.store.sqlite import SqliteConnection
from tests.pgserver import new_schema, postgres_url, schema_url

BACKENDS = ["sqlite", "postgresql"]


class Backend:
    """A database the contract runs on, with raw access that bypasses the store."""

    name: str
    url: str
    error: type[Exception]  # what the driver raises for a bad statement

    def new_store(self) -> Store:
        """Another, unopened store on the same database."""
        return open_store_from_url(self.url)

    def raw_connection(self) -> Any:
        """An async context manager: a SqlConnection straight on the database."""
        raise NotImplementedError

    async def rows(self, sql: str) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    async def count_rows(self, table: str) -> int:
        rows = await self.rows(f"SELECT COUNT(*) FROM {table}")
        return int(rows[0][0])


class SqliteBackend(Backend):
    name = "sqlite"
    error = sqlite3.OperationalError

    def __init__(self, path: Path) -> None:
        self.path = path
        self.url = f"sqlite:///{path}"

    @asynccontextmanager
    async def raw_connection(self) -> AsyncIterator[SqlConnection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        async with aiosqlite.connect(self.path, isolation_level=None) as conn:
            conn.row_factory = aiosqlite.Row
            yield SqliteConnection(conn)

    async def rows(self, sql: str) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.path) as conn:
            return list(conn.execute(sql).fetchall())


class PostgresBackend(Backend):
    name = "postgresql"
    error = asyncpg.PostgresError

    def __init__(self, schema: str) -> None:
        self.schema = schema
        self.url = schema_url(schema)

    @asynccontextmanager
    async def raw_connection(self) -> AsyncIterator[SqlConnection]:
        conn = await self._connect()
        try:
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {self.schema}")
            yield PostgresConnection(conn)
        finally:
            await conn.close()

    async def rows(self, sql: str) -> list[tuple[Any, ...]]:
        conn = await self._connect()
        try:
            return [tuple(row) for row in await conn.fetch(sql)]
        finally:
            await conn.close()

    async def _connect(self) -> Any:
        return await asyncpg.connect(postgres_url(), timeout=10,
                                     server_settings={"search_path": self.schema})


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "sqlite":
        yield SqliteBackend(tmp_path / "data" / "proctor.db")
        return
    admin = await _admin_connection()
    schema = new_schema()
    try:
        yield PostgresBackend(schema)
    finally:
        await admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await admin.close()


async def _admin_connection() -> Any:
    try:
        return await asyncpg.connect(postgres_url(), timeout=10)
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.fail(f"PostgreSQL at {postgres_url()} is unreachable ({exc!r}); the store "
                    "contract needs it (set PROCTOR_TEST_POSTGRES to another server)")


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[Store]:
    s = backend.new_store()
    await s.open()
    yield s
    await s.close()
