"""What every SQL query module stands on: the driver adapter and the plumbing.

:class:`SqlConnection` is a thin adapter over one driver connection (aiosqlite or
asyncpg); :class:`SqlBase` runs statements on one. Queries use ``?`` placeholders
(PostgreSQL's adapter rewrites them), and JSON lives in TEXT columns (:func:`dump`,
:func:`load`).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol

Params = Sequence[Any]


class Row(Protocol):
    """A result row by column name: sqlite3.Row and asyncpg.Record both are."""

    def __getitem__(self, key: str, /) -> Any: ...


class SqlConnection(Protocol):
    """What the stores and the migration runner need from one driver connection."""

    blob_type: str  # the dialect's binary column type, for migrations' {BLOB}

    async def execute(self, sql: str, params: Params = ()) -> None: ...

    async def fetch_all(self, sql: str, params: Params = ()) -> list[Row]: ...

    def transaction(self, *, lock: bool = False) -> AbstractAsyncContextManager[None]:
        """A transaction, committed on success and rolled back on any error.

        ``lock=True`` also takes the deployment-wide migration lock for its duration
        (where the dialect's transaction is not exclusive already).
        """


class SqlBase(ABC):
    """Statements over :meth:`_connection`, which each backend provides."""

    @abstractmethod
    def _connection(self) -> AbstractAsyncContextManager[SqlConnection]:
        """A connection held for the block, its failures raised as Store errors."""

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[SqlConnection]:
        async with self._connection() as conn, conn.transaction():
            yield conn

    async def _execute(self, sql: str, params: Params = ()) -> None:
        async with self._connection() as conn:
            await conn.execute(sql, params)

    async def _fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        async with self._connection() as conn:
            return await conn.fetch_all(sql, params)

    async def _fetch_one(self, sql: str, params: Params = ()) -> Row | None:
        rows = await self._fetch_all(sql, params)
        return rows[0] if rows else None


def dump(value: dict[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"))


def load(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object in the store, found {text[:80]!r}")
    return value


def load_dict(text: str | None) -> dict[str, Any]:
    return load(text) or {}
