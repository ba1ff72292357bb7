"""The PostgreSQL implementation of :class:`~proctor.store.base.Store`, over asyncpg.

The queries are :class:`~proctor.store.sql.SqlStore`'s, the migrations the shared ones;
this module parses the URL, keeps a connection pool and turns driver failures into
:class:`~proctor.store.base.StoreUnavailable` (the HTTP layer answers 503).

URL: ``postgresql://[user[:password]@]host[:port]/database[?schema=NAME&...]`` (or
``postgres://``). ``schema`` is ours: the store creates that schema if it is missing and
keeps every table in it (it is the connections' ``search_path``), so several
deployments, or tests, share one database. It must be a lowercase SQL identifier.
The libpq-style parameters asyncpg understands (``sslmode``, ``sslrootcert``,
``application_name``, ... see ``_ASYNCPG_PARAMS``) pass through to asyncpg; any other
parameter is a ValueError naming it, since asyncpg would send it to the server as a
setting and fail later, less clearly.

Outages: every call acquires a pool connection with a timeout, and every statement has a
command timeout, so a vanished server fails calls within seconds instead of hanging them.
The pool replaces closed connections when they are next acquired, so once the database
is back calls succeed again on the same store, without reopening it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from proctor.store.base import StoreIntegrityError, StoreUnavailable
from proctor.store.migrations import migrate
from proctor.store.sql import Params, Row, SqlConnection, SqlStore

log = logging.getLogger(__name__)

SCHEMES = ("postgresql", "postgres")
# The key of the transaction-level advisory lock migrations (and schema creation) run
# under: ASCII "proctor". One key for the whole database, so deployments in different
# schemas queue behind each other for a moment at startup; that costs nothing.
MIGRATION_LOCK_KEY = 0x70726F63746F72

# Query parameters asyncpg's DSN parser handles itself (or, application_name, sends as
# the server setting it is).
_ASYNCPG_PARAMS = frozenset({
    "host", "port", "user", "password", "passfile", "dbname", "database", "service",
    "sslmode", "sslcert", "sslkey", "sslrootcert", "sslcrl", "sslpassword",
    "sslnegotiation", "ssl_min_protocol_version", "ssl_max_protocol_version",
    "target_session_attrs", "krbsrvname", "gsslib", "application_name",
})
# Lowercase so it needs no quoting anywhere (search_path, CREATE SCHEMA, logs).
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")

_exc = asyncpg.exceptions
# Failures that say "the database is not there right now", not "this query is wrong":
# lost or refused connections, timeouts (TimeoutError is an OSError), shutdowns and
# restarts (57P01-3), resource limits (53xxx: too many connections, disk full),
# retryable conflicts (40xxx), a read-only standby after failover, credentials or
# database gone on reconnect, and the client's own protocol/interface errors.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    _exc.InternalClientError,
    _exc.OperatorInterventionError,
    _exc.InsufficientResourcesError,
    _exc.TransactionRollbackError,
    _exc.ReadOnlySQLTransactionError,
    _exc.InvalidAuthorizationSpecificationError,
    _exc.InvalidCatalogNameError,
    _exc.PostgresSystemError,
)
# While opening, any server error (no right to create the schema, a failed migration)
# means the store cannot serve: StoreUnavailable too.
_OPEN_ERRORS: tuple[type[BaseException], ...] = (*_UNAVAILABLE, asyncpg.PostgresError)


def _is_outage(exc: BaseException) -> bool:
    # Some of asyncpg's InterfaceErrors are ValueErrors too (a bad client setting, an
    # unsupported value): the caller's bug, raised as it is.
    return isinstance(exc, _UNAVAILABLE) and not isinstance(exc, ValueError)


@dataclass(frozen=True)
class PostgresUrl:
    dsn: str  # what asyncpg gets: the URL without our own parameters
    schema: str | None
    where: str  # host[:port]/database [schema]: no credentials, for messages and logs


def parse_postgres_url(url: str) -> PostgresUrl:
    """Split a ``store:`` URL into asyncpg's DSN and our schema (ValueError if bad)."""
    parts = urlsplit(url)
    if parts.scheme.startswith("postgresql+"):
        raise ValueError(f"store URL {redact_url(url)!r}: the store speaks asyncpg itself; "
                         "write postgresql://... without a '+driver' part")
    if parts.scheme not in SCHEMES or not parts.netloc:
        raise ValueError(f"store URL {redact_url(url)!r}: expected postgresql://host/database")
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    schema = params.pop("schema", None)
    if schema is not None and not _SCHEMA_NAME.fullmatch(schema):
        raise ValueError(f"store URL schema {schema!r} must be a lowercase SQL identifier "
                         "(letters, digits, underscores; not starting with a digit)")
    unknown = sorted(set(params) - _ASYNCPG_PARAMS)
    if unknown:
        raise ValueError(f"store URL parameters not understood: {', '.join(unknown)} "
                         f"(allowed: schema, {', '.join(sorted(_ASYNCPG_PARAMS))})")
    dsn = urlunsplit(parts._replace(query=urlencode(params)))
    where = parts.netloc.rpartition("@")[2] + parts.path + (f" schema {schema}" if schema else "")
    return PostgresUrl(dsn=dsn, schema=schema, where=where)


def redact_url(url: str) -> str:
    """The URL without its password, for error messages."""
    parts = urlsplit(url)
    userinfo, at, host = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    return urlunsplit(parts._replace(netloc=f"{userinfo.partition(':')[0]}:***@{host}"))


@functools.lru_cache(maxsize=512)
def postgres_placeholders(sql: str) -> str:
    """``?`` placeholders as PostgreSQL's ``$1, $2, ...`` (queries hold no other ``?``)."""
    pieces = sql.split("?")
    return pieces[0] + "".join(f"${n}{piece}" for n, piece in enumerate(pieces[1:], 1))


class PostgresConnection:
    """An asyncpg connection as a :class:`~proctor.store.sql.SqlConnection`."""

    blob_type = "BYTEA"

    def __init__(self, conn: Any) -> None:  # asyncpg.Connection or a pool's proxy of one
        self._conn = conn

    async def execute(self, sql: str, params: Params = ()) -> None:
        await self._conn.execute(postgres_placeholders(sql), *params)

    async def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        rows: list[Row] = await self._conn.fetch(postgres_placeholders(sql), *params)
        return rows

    @asynccontextmanager
    async def transaction(self, *, lock: bool = False) -> AsyncIterator[None]:
        async with self._conn.transaction():
            if lock:
                # Held until this transaction ends: a second node migrating at the same
                # moment waits here, then sees the versions this one applied.
                await self._conn.execute(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})")
            yield


class PostgresStore(SqlStore):
    """A :class:`~proctor.store.base.Store` in a PostgreSQL database, on an asyncpg pool."""

    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 10,
                 timeout: float = 5.0) -> None:
        """``timeout`` (seconds) bounds connecting, waiting for a free pool connection
        and each statement."""
        self._url = parse_postgres_url(url)
        self._min_size = min_size
        self._max_size = max_size
        self._timeout = timeout
        self._pool: Any = None  # asyncpg.Pool, once open
        self._closed = False
        self._lock = asyncio.Lock()

    @property
    def schema(self) -> str | None:
        return self._url.schema

    @property
    def where(self) -> str:
        """host:port/database and schema, without credentials."""
        return self._url.where

    # -- lifecycle -------------------------------------------------------------------

    async def open(self) -> None:
        """Create the pool, the schema if missing, and apply pending migrations."""
        async with self._lock:  # two concurrent opens must not make two pools
            if self._pool is None:
                self._pool = await self._open_pool()
                self._closed = False

    async def _open_pool(self) -> Any:
        try:
            pool = await asyncpg.create_pool(
                self._url.dsn, min_size=self._min_size, max_size=self._max_size,
                timeout=self._timeout, command_timeout=self._timeout,
                server_settings=self._server_settings())
        except _OPEN_ERRORS as exc:
            raise StoreUnavailable(f"cannot connect to PostgreSQL {self.where}: {exc}") from exc
        try:
            applied = await self._prepare(pool)
        except BaseException as exc:
            pool.terminate()
            if isinstance(exc, _OPEN_ERRORS):
                raise StoreUnavailable(
                    f"cannot prepare PostgreSQL {self.where}: {exc}") from exc
            raise
        if applied:
            log.info("store %s: applied migrations %s", self.where, applied)
        return pool

    def _server_settings(self) -> dict[str, str]:
        # Only our schema: tables land in it and no lookup falls through to another
        # deployment's tables in public. (pg_catalog is always searched.)
        return {"search_path": self._url.schema} if self._url.schema else {}

    async def _prepare(self, pool: Any) -> list[int]:
        async with pool.acquire(timeout=self._timeout) as raw:
            conn = PostgresConnection(raw)
            if self._url.schema:
                await self._create_schema(conn, self._url.schema)
            return await migrate(conn)

    @staticmethod
    async def _create_schema(conn: PostgresConnection, schema: str) -> None:
        # Under the migration lock: two nodes creating it at once would race on the
        # catalog, and one would fail despite IF NOT EXISTS. Looked up first, because
        # CREATE SCHEMA IF NOT EXISTS still demands the right to create schemas, which
        # a user given only a schema its DBA made need not have.
        async with conn.transaction(lock=True):
            if not await conn.fetch_all("SELECT 1 FROM pg_namespace WHERE nspname = ?",
                                        (schema,)):
                await conn.execute(f"CREATE SCHEMA {schema}")

    async def close(self) -> None:
        """Close the pool; later calls raise StoreUnavailable. Safe to repeat."""
        async with self._lock:
            pool, self._pool = self._pool, None
            self._closed = True
        if pool is None:
            return
        try:
            # Graceful: waits for calls in flight, but never longer than the timeout.
            await asyncio.wait_for(pool.close(), self._timeout)
        except (*_UNAVAILABLE, asyncpg.PostgresError):
            pool.terminate()

    # -- plumbing --------------------------------------------------------------------

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[SqlConnection]:
        """A pool connection for the block, with failures as Store errors."""
        pool = self._require_open()
        try:
            async with pool.acquire(timeout=self._timeout) as raw:
                try:
                    yield PostgresConnection(raw)
                except BaseException as exc:
                    if _is_outage(exc):
                        # It broke or timed out and may be wedged: drop it now, or the
                        # pool's reset on release waits out another timeout on it.
                        raw.terminate()
                    raise
        except _exc.IntegrityConstraintViolationError as exc:
            # A duplicate id or a row for an unknown session: the caller's bug, not a 503.
            raise StoreIntegrityError(f"PostgreSQL store {self.where}: {exc}") from exc
        except Exception as exc:
            if not _is_outage(exc):
                raise
            raise StoreUnavailable(
                f"PostgreSQL store {self.where} failed: {type(exc).__name__}: {exc}") from exc

    def _require_open(self) -> Any:
        if self._pool is None:
            state = "closed" if self._closed else "not open"
            raise StoreUnavailable(f"PostgreSQL store {self.where} is {state}")
        return self._pool


__all__ = ["PostgresConnection", "PostgresStore", "PostgresUrl", "parse_postgres_url", "redact_url"]
