"""store: the Store protocol, its SQLite and PostgreSQL implementations."""

from __future__ import annotations

from pathlib import Path

from proctor.store.base import (
    ApiKeyRecord,
    ClipRecord,
    EventRecord,
    NodeRecord,
    NodeStatus,
    SessionRecord,
    SessionStatus,
    Store,
    StoreIntegrityError,
    StoreUnavailable,
)
from proctor.store.postgres import PostgresStore
from proctor.store.sqlite import MEMORY, SqliteStore

_SQLITE_PREFIX = "sqlite:///"
_POSTGRES_SCHEMES = ("postgresql://", "postgres://", "postgresql+")


def open_store_from_url(url: str) -> Store:
    """The store a ``store:`` URL names, not yet opened (the caller awaits ``open()``).

    ``sqlite:///relative/path.db`` is relative to the current directory (resolved now,
    so a later chdir does not move the database); ``sqlite:////abs/path.db`` is
    absolute; ``sqlite:///:memory:`` is an in-memory database.
    ``postgresql://user@host:port/db[?schema=NAME]`` (or ``postgres://``) is a
    PostgreSQL database; see :mod:`proctor.store.postgres` for its parameters.
    ``postgresql+driver://`` (SQLAlchemy style) is refused with a ValueError saying so.
    """
    if url.startswith(_POSTGRES_SCHEMES):
        return PostgresStore(url)
    if not url.startswith(_SQLITE_PREFIX):
        raise ValueError(f"unsupported store URL {url!r}: expected sqlite:///path/to/file.db "
                         "or postgresql://host/database")
    raw = url.removeprefix(_SQLITE_PREFIX)
    if not raw or raw.endswith("/") or "?" in raw:
        # A query string would otherwise become part of the file name.
        raise ValueError(f"store URL {url!r} must name a database file, without parameters")
    if raw == MEMORY:
        return SqliteStore(MEMORY)
    return SqliteStore(Path(raw).absolute())


__all__ = [
    "ApiKeyRecord",
    "ClipRecord",
    "EventRecord",
    "NodeRecord",
    "NodeStatus",
    "PostgresStore",
    "SessionRecord",
    "SessionStatus",
    "SqliteStore",
    "Store",
    "StoreIntegrityError",
    "StoreUnavailable",
    "open_store_from_url",
]
