"""The SQLite implementation of :class:`~proctor.store.base.Store`, over aiosqlite.

The queries are :class:`~proctor.store.sql.SqlStore`'s; this module opens the file,
sets its pragmas and adapts the connection. One connection per store, in autocommit
mode: single statements commit on their own and multi-statement work runs in an
explicit ``BEGIN IMMEDIATE`` transaction. Every call takes an asyncio lock first,
because a connection has one transaction at a time and a coroutine's statement must
never land inside another coroutine's transaction.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import aiosqlite

from proctor.store.base import StoreIntegrityError, StoreUnavailable
from proctor.store.migrations import migrate
from proctor.store.sql import Params, Row, SqlConnection, SqlStore

log = logging.getLogger(__name__)

MEMORY = ":memory:"


class SqliteConnection:
    """An aiosqlite connection as a :class:`~proctor.store.sql.SqlConnection`.

    It must be in autocommit mode (``isolation_level=None``) so that the explicit
    ``BEGIN``/``COMMIT`` of :meth:`transaction` are the only transaction control.
    """

    blob_type = "BLOB"

    def __init__(self, conn: aiosqlite.Connection) -> None:
        if conn.isolation_level is not None:
            raise ValueError("SqliteConnection needs a connection opened with "
                             "isolation_level=None")
        self._conn = conn

    async def execute(self, sql: str, params: Params = ()) -> None:
        await self._conn.execute(sql, params)

    async def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        return list(await self._conn.execute_fetchall(sql, params))

    @asynccontextmanager
    async def transaction(self, *, lock: bool = False) -> AsyncIterator[None]:
        # IMMEDIATE takes the file's write lock now rather than on the first write, so a
        # second process waits on busy_timeout instead of failing mid-transaction. That
        # lock is exclusive already, so ``lock`` needs nothing more here.
        await self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            # The original error matters more than a failed rollback on a broken
            # connection.
            with suppress(sqlite3.Error, ValueError):
                await self._conn.execute("ROLLBACK")
            raise
        await self._conn.execute("COMMIT")


class SqliteStore(SqlStore):
    """A :class:`~proctor.store.base.Store` kept in one SQLite file (WAL mode)."""

    def __init__(self, path: str | Path, *, busy_timeout_ms: int = 5000) -> None:
        self._path = Path(path)
        self._busy_timeout_ms = busy_timeout_ms
        self._conn: SqliteConnection | None = None
        self._raw: aiosqlite.Connection | None = None
        self._closed = False
        self._lock = asyncio.Lock()

    @property
    def path(self) -> Path:
        return self._path

    # -- lifecycle -------------------------------------------------------------------

    async def open(self) -> None:
        """Create the parent folder, connect, set pragmas and apply pending migrations."""
        async with self._lock:  # two concurrent opens must not make two connections
            if self._raw is None:
                self._raw = await self._open_connection()
                self._conn = SqliteConnection(self._raw)
                self._closed = False

    async def _open_connection(self) -> aiosqlite.Connection:
        conn = await self._connect()
        try:
            await self._configure(conn)
            applied = await migrate(SqliteConnection(conn))
        except (sqlite3.DatabaseError, OSError) as exc:
            await _close_quietly(conn)
            raise StoreUnavailable(f"cannot prepare SQLite database {self._path}: {exc}") from exc
        except BaseException:
            await _close_quietly(conn)
            raise
        if applied:
            log.info("store %s: applied migrations %s", self._path, applied)
        return conn

    async def _connect(self) -> aiosqlite.Connection:
        try:
            if str(self._path) != MEMORY:
                self._path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: no implicit transactions, see the module docstring.
            conn = await aiosqlite.connect(self._path, isolation_level=None)
        except (sqlite3.DatabaseError, OSError) as exc:
            raise StoreUnavailable(f"cannot open SQLite database {self._path}: {exc}") from exc
        conn.row_factory = aiosqlite.Row
        return conn

    async def _configure(self, conn: aiosqlite.Connection) -> None:
        # First, so everything after waits for another connection's lock instead of
        # failing at once (switching to WAL needs a moment of exclusive access).
        await conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
        # WAL lets readers run while the pipeline writes; NORMAL sync is safe under WAL
        # (a crash can lose the last commits, never corrupt the file).
        await self._use_wal(conn)
        await conn.execute("PRAGMA synchronous = NORMAL")
        # SQLite ignores REFERENCES ... ON DELETE CASCADE unless asked, per connection.
        await conn.execute("PRAGMA foreign_keys = ON")

    async def _use_wal(self, conn: aiosqlite.Connection) -> None:
        """Switch the file to WAL. SQLite answers "locked" at once, without waiting out
        busy_timeout, when another connection is mid-transaction (a second server
        migrating the same file): so wait and retry here, within the same timeout."""
        deadline = time.monotonic() + self._busy_timeout_ms / 1000
        while True:
            try:
                cursor = await conn.execute("PRAGMA journal_mode = WAL")
                await cursor.close()
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)

    async def close(self) -> None:
        """Close the connection; later calls raise StoreUnavailable. Safe to repeat."""
        async with self._lock:
            raw, self._raw, self._conn = self._raw, None, None
            self._closed = True
            if raw is not None:
                await _close_quietly(raw)

    # -- plumbing --------------------------------------------------------------------

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[SqlConnection]:
        """The open connection, held exclusively, with failures as Store errors.

        IntegrityError becomes StoreIntegrityError: a duplicate id or a flag for an
        unknown session is the caller's bug, not an outage, and must not turn into a 503.
        """
        async with self._lock:
            conn = self._require_open()
            try:
                yield conn
            except sqlite3.IntegrityError as exc:
                raise StoreIntegrityError(f"SQLite store {self._path}: {exc}") from exc
            except (sqlite3.DatabaseError, OSError) as exc:
                raise StoreUnavailable(f"SQLite store {self._path} failed: {exc}") from exc

    def _require_open(self) -> SqliteConnection:
        if self._conn is None:
            state = "closed" if self._closed else "not open"
            raise StoreUnavailable(f"SQLite store {self._path} is {state}")
        return self._conn


async def _close_quietly(conn: aiosqlite.Connection) -> None:
    # Closing a connection that already failed may fail again; that adds nothing.
    with suppress(sqlite3.Error, OSError, ValueError):
        await conn.close()


__all__ = ["SqliteConnection", "SqliteStore"]
