"""The SQLite implementation of :class:`~proctor.store.base.Store`, over aiosqlite.

One connection per store, in autocommit mode: single statements commit on their own and
multi-statement work runs in an explicit ``BEGIN IMMEDIATE`` transaction. Every call
takes an asyncio lock first, because a connection has one transaction at a time and a
coroutine's statement must never land inside another coroutine's transaction.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import aiosqlite

from proctor.flags.model import Evidence, Flag, FlagKind, Severity
from proctor.store.base import (
    ApiKeyRecord,
    ClipRecord,
    EnrollmentRecord,
    EventRecord,
    SessionRecord,
    SessionStatus,
    StoreUnavailable,
    TranscriptSegment,
)
from proctor.store.migrations import current_version, migrate

log = logging.getLogger(__name__)

MEMORY = ":memory:"
Params = Sequence[Any]

_SESSION_COLUMNS = (
    "session_id, candidate_id, exam_id, status, policy, accommodations, metadata, "
    "created_at, started_at, ended_at, report, api_key_id"
)
_FLAG_COLUMNS = (
    "flag_id, session_id, candidate_id, kind, severity, media_start, media_end, "
    "confidence, clip_id, metrics, source, created_at"
)
_CLIP_COLUMNS = (
    "clip_id, session_id, flag_id, path, media_start, media_end, size_bytes, "
    "content_type, created_at"
)
_EVENT_COLUMNS = "event_id, session_id, type, client_time, media_time, received_at, detail"
_ENROLLMENT_COLUMNS = "candidate_id, ciphertext, nonce, model, quality, created_at"
_TRANSCRIPT_COLUMNS = (
    "segment_id, session_id, media_start, media_end, text, confidence, language, created_at"
)

# Every flag column but the key is overwritten: a flag rises and closes in place.
_FLAG_UPSERT = (
    f"INSERT INTO flags ({_FLAG_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (flag_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _FLAG_COLUMNS.split(", ")[1:])
)


class SqliteStore:
    """A :class:`~proctor.store.base.Store` kept in one SQLite file (WAL mode)."""

    def __init__(self, path: str | Path, *, busy_timeout_ms: int = 5000) -> None:
        self._path = Path(path)
        self._busy_timeout_ms = busy_timeout_ms
        self._conn: aiosqlite.Connection | None = None
        self._closed = False
        self._lock = asyncio.Lock()

    @property
    def path(self) -> Path:
        return self._path

    # -- lifecycle -------------------------------------------------------------------

    async def open(self) -> None:
        """Create the parent folder, connect, set pragmas and apply pending migrations."""
        async with self._lock:  # two concurrent opens must not make two connections
            if self._conn is None:
                self._conn = await self._open_connection()
                self._closed = False

    async def _open_connection(self) -> aiosqlite.Connection:
        conn = await self._connect()
        try:
            await self._configure(conn)
            applied = await migrate(conn)
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
            conn, self._conn = self._conn, None
            self._closed = True
            if conn is not None:
                await _close_quietly(conn)

    async def ping(self) -> None:
        await self._fetch_all("SELECT 1")

    async def schema_version(self) -> int:
        async with self._connection() as conn:
            return await current_version(conn)

    # -- API keys --------------------------------------------------------------------

    async def add_api_key(self, record: ApiKeyRecord) -> None:
        await self._execute(
            "INSERT INTO api_keys (key_id, name, key_hash, created_at, revoked) "
            "VALUES (?, ?, ?, ?, ?)",
            (record.key_id, record.name, record.key_hash, record.created_at,
             int(record.revoked)),
        )

    async def find_api_key(self, key_hash: str) -> ApiKeyRecord | None:
        row = await self._fetch_one(
            "SELECT key_id, name, key_hash, created_at, revoked FROM api_keys "
            "WHERE key_hash = ? AND revoked = 0 ORDER BY created_at, key_id LIMIT 1",
            (key_hash,),
        )
        if row is None:
            return None
        return ApiKeyRecord(key_id=row["key_id"], name=row["name"], key_hash=row["key_hash"],
                            created_at=row["created_at"], revoked=bool(row["revoked"]))

    # -- sessions --------------------------------------------------------------------

    async def create_session(self, record: SessionRecord) -> None:
        await self._execute(
            f"INSERT INTO sessions ({_SESSION_COLUMNS}) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            _session_params(record),
        )

    async def get_session(self, session_id: str) -> SessionRecord | None:
        row = await self._fetch_one(
            f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE session_id = ?", (session_id,)
        )
        return None if row is None else _session_from_row(row)

    async def list_sessions(self, status: SessionStatus | None = None,
                            limit: int = 100) -> list[SessionRecord]:
        """Newest first (by created_at), optionally only those with ``status``."""
        if limit < 0:
            raise ValueError(f"limit must be zero or more, got {limit}")
        where, params = ("", [])
        if status is not None:
            where, params = "WHERE status = ?", [str(SessionStatus(status))]
        rows = await self._fetch_all(
            f"SELECT {_SESSION_COLUMNS} FROM sessions {where} "
            "ORDER BY created_at DESC, session_id DESC LIMIT ?",
            [*params, limit],
        )
        return [_session_from_row(row) for row in rows]

    async def update_session(self, session_id: str, **fields: Any) -> None:
        """Set any of: status, started_at, ended_at, report (ValueError for others)."""
        unknown = sorted(set(fields) - set(_SESSION_UPDATES))
        if unknown:
            raise ValueError(f"update_session cannot set {', '.join(unknown)}; "
                             f"allowed: {', '.join(_SESSION_UPDATES)}")
        if not fields:
            return
        # Column names come from the allow-list above, never from the caller.
        assignments = ", ".join(f"{name} = ?" for name in fields)
        values = [_SESSION_UPDATES[name](value) for name, value in fields.items()]
        await self._execute(
            f"UPDATE sessions SET {assignments} WHERE session_id = ?", [*values, session_id]
        )

    async def list_candidate_sessions(self, candidate_id: str) -> list[SessionRecord]:
        rows = await self._fetch_all(
            f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE candidate_id = ? "
            "ORDER BY created_at DESC, session_id DESC",
            (candidate_id,),
        )
        return [_session_from_row(row) for row in rows]

    async def delete_session(self, session_id: str) -> list[ClipRecord]:
        return await self._delete_sessions("session_id", session_id)

    async def delete_candidate(self, candidate_id: str) -> list[ClipRecord]:
        return await self._delete_sessions("candidate_id", candidate_id)

    async def _delete_sessions(self, column: str, value: str) -> list[ClipRecord]:
        """Delete sessions where ``column`` = value; the schema cascades to the rest.

        ``column`` is one of this module's literals, never caller input.
        """
        # One transaction, so no clip can be added between reading and deleting.
        async with self._transaction() as conn:
            rows = await conn.execute_fetchall(
                f"SELECT {_prefixed('c', _CLIP_COLUMNS)} FROM clips c "
                f"JOIN sessions s ON s.session_id = c.session_id WHERE s.{column} = ? "
                "ORDER BY c.session_id, c.media_start, c.created_at, c.clip_id",
                (value,),
            )
            await conn.execute(f"DELETE FROM sessions WHERE {column} = ?", (value,))
        return [_clip_from_row(row) for row in rows]

    # -- enrollments -----------------------------------------------------------------

    async def save_enrollment(self, record: EnrollmentRecord) -> None:
        """Insert, or replace the candidate's previous enrollment (re-enrolling)."""
        await self._execute(
            f"INSERT INTO enrollments ({_ENROLLMENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (candidate_id) DO UPDATE SET ciphertext = excluded.ciphertext, "
            "nonce = excluded.nonce, model = excluded.model, quality = excluded.quality, "
            "created_at = excluded.created_at",
            (record.candidate_id, _b64(record.ciphertext), _b64(record.nonce), record.model,
             _dump(record.quality), record.created_at),
        )

    async def get_enrollment(self, candidate_id: str) -> EnrollmentRecord | None:
        row = await self._fetch_one(
            f"SELECT {_ENROLLMENT_COLUMNS} FROM enrollments WHERE candidate_id = ?",
            (candidate_id,),
        )
        if row is None:
            return None
        return EnrollmentRecord(
            candidate_id=row["candidate_id"], ciphertext=_unb64(row["ciphertext"]),
            nonce=_unb64(row["nonce"]), model=row["model"], created_at=row["created_at"],
            quality=_load_dict(row["quality"]))

    async def delete_enrollment(self, candidate_id: str) -> bool:
        async with self._connection() as conn:
            cursor = await conn.execute(
                "DELETE FROM enrollments WHERE candidate_id = ?", (candidate_id,))
            return cursor.rowcount > 0

    # -- flags -----------------------------------------------------------------------

    async def save_flag(self, flag: Flag) -> None:
        """Insert the flag, or overwrite every field of the row with its flag_id."""
        await self._execute(_FLAG_UPSERT, _flag_params(flag))

    async def get_flag(self, flag_id: str) -> Flag | None:
        row = await self._fetch_one(
            f"SELECT {_FLAG_COLUMNS} FROM flags WHERE flag_id = ?", (flag_id,)
        )
        return None if row is None else _flag_from_row(row)

    async def list_flags(self, session_id: str) -> list[Flag]:
        """The session's flags by media start, then creation time."""
        rows = await self._fetch_all(
            f"SELECT {_FLAG_COLUMNS} FROM flags WHERE session_id = ? "
            "ORDER BY media_start, created_at, flag_id",
            (session_id,),
        )
        return [_flag_from_row(row) for row in rows]

    # -- clips -----------------------------------------------------------------------

    async def save_clip(self, record: ClipRecord) -> None:
        await self._execute(
            f"INSERT INTO clips ({_CLIP_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (record.clip_id, record.session_id, record.flag_id, record.path, record.start,
             record.end, record.size_bytes, record.content_type, record.created_at),
        )

    async def get_clip(self, clip_id: str) -> ClipRecord | None:
        row = await self._fetch_one(
            f"SELECT {_CLIP_COLUMNS} FROM clips WHERE clip_id = ?", (clip_id,)
        )
        return None if row is None else _clip_from_row(row)

    async def list_clips(self, session_id: str) -> list[ClipRecord]:
        """The session's clips by media start, then creation time."""
        rows = await self._fetch_all(
            f"SELECT {_CLIP_COLUMNS} FROM clips WHERE session_id = ? "
            "ORDER BY media_start, created_at, clip_id",
            (session_id,),
        )
        return [_clip_from_row(row) for row in rows]

    # -- browser telemetry -----------------------------------------------------------

    async def add_event(self, record: EventRecord) -> None:
        await self._execute(
            f"INSERT INTO events ({_EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (record.event_id, record.session_id, record.type, record.client_time,
             record.media_time, record.received_at, _dump(record.detail)),
        )

    async def list_events(self, session_id: str) -> list[EventRecord]:
        """The session's events in the order the server received them."""
        rows = await self._fetch_all(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE session_id = ? "
            "ORDER BY received_at, client_time, event_id",
            (session_id,),
        )
        return [_event_from_row(row) for row in rows]

    # -- transcript ------------------------------------------------------------------

    async def add_transcript_segment(self, segment: TranscriptSegment) -> None:
        s = segment
        await self._execute(
            f"INSERT INTO transcripts ({_TRANSCRIPT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (s.segment_id, s.session_id, s.start, s.end, s.text, s.confidence, s.language,
             s.created_at),
        )

    async def list_transcript(self, session_id: str) -> list[TranscriptSegment]:
        """The session's segments by media start (then end, creation, id: a stable order)."""
        rows = await self._fetch_all(
            f"SELECT {_TRANSCRIPT_COLUMNS} FROM transcripts WHERE session_id = ? "
            "ORDER BY media_start, media_end, created_at, segment_id",
            (session_id,),
        )
        return [_transcript_from_row(row) for row in rows]

    # -- plumbing --------------------------------------------------------------------

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[aiosqlite.Connection]:
        """The open connection, held exclusively, with failures as StoreUnavailable.

        IntegrityError passes through: a duplicate id or a flag for an unknown session
        is the caller's bug, not an outage, and must not turn into a 503.
        """
        async with self._lock:
            conn = self._require_open()
            try:
                yield conn
            except sqlite3.IntegrityError:
                raise
            except (sqlite3.DatabaseError, OSError) as exc:
                raise StoreUnavailable(f"SQLite store {self._path} failed: {exc}") from exc

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._connection() as conn:
            # IMMEDIATE takes the write lock now rather than on the first write, so a
            # second process waits on busy_timeout instead of failing mid-transaction.
            await conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                with suppress(sqlite3.Error, ValueError):
                    await conn.execute("ROLLBACK")
                raise
            await conn.execute("COMMIT")

    def _require_open(self) -> aiosqlite.Connection:
        if self._conn is None:
            state = "closed" if self._closed else "not open"
            raise StoreUnavailable(f"SQLite store {self._path} is {state}")
        return self._conn

    async def _execute(self, sql: str, params: Params = ()) -> None:
        async with self._connection() as conn:
            await conn.execute(sql, params)

    async def _fetch_all(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        async with self._connection() as conn:
            return list(await conn.execute_fetchall(sql, params))

    async def _fetch_one(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        rows = await self._fetch_all(sql, params)
        return rows[0] if rows else None


async def _close_quietly(conn: aiosqlite.Connection) -> None:
    # Closing a connection that already failed may fail again; that adds nothing.
    with suppress(sqlite3.Error, OSError, ValueError):
        await conn.close()


def _prefixed(alias: str, columns: str) -> str:
    return ", ".join(f"{alias}.{c}" for c in columns.split(", "))


# -- JSON ----------------------------------------------------------------------------


def _dump(value: dict[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"))


def _load(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object in the store, found {text[:80]!r}")
    return value


def _load_dict(text: str | None) -> dict[str, Any]:
    return _load(text) or {}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


# -- sessions ------------------------------------------------------------------------


def _encode_status(value: Any) -> str:
    return str(SessionStatus(value))  # ValueError for an unknown status


def _encode_time(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ValueError(f"timestamps are ISO strings or None, got {value!r}")
    return value


def _encode_report(value: Any) -> str | None:
    if value is not None and not isinstance(value, dict):
        raise ValueError(f"report must be a dict or None, got {type(value).__name__}")
    return None if value is None else _dump(value)


_SESSION_UPDATES: dict[str, Callable[[Any], Any]] = {
    "status": _encode_status,
    "started_at": _encode_time,
    "ended_at": _encode_time,
    "report": _encode_report,
}


def _session_params(r: SessionRecord) -> tuple[Any, ...]:
    return (r.session_id, r.candidate_id, r.exam_id, str(SessionStatus(r.status)),
            _dump(r.policy), _dump(r.accommodations), _dump(r.metadata), r.created_at,
            r.started_at, r.ended_at, _encode_report(r.report), r.api_key_id)


def _session_from_row(row: sqlite3.Row) -> SessionRecord:
    return SessionRecord(
        session_id=row["session_id"],
        candidate_id=row["candidate_id"],
        exam_id=row["exam_id"],
        status=SessionStatus(row["status"]),
        policy=_load_dict(row["policy"]),
        accommodations=_load_dict(row["accommodations"]),
        metadata=_load_dict(row["metadata"]),
        created_at=row["created_at"],
        started_at=row["started_at"],
        ended_at=row["ended_at"],
        report=_load(row["report"]),
        api_key_id=row["api_key_id"],
    )


# -- flags, clips, events ------------------------------------------------------------


def _flag_params(f: Flag) -> tuple[Any, ...]:
    return (f.flag_id, f.session_id, f.candidate_id, str(f.kind), str(f.severity), f.start,
            f.end, f.confidence, f.evidence.clip_id, _dump(dict(f.evidence.metrics)),
            f.source, f.created_at)


def _flag_from_row(row: sqlite3.Row) -> Flag:
    return Flag(
        flag_id=row["flag_id"],
        session_id=row["session_id"],
        candidate_id=row["candidate_id"],
        kind=FlagKind(row["kind"]),
        severity=Severity(row["severity"]),
        start=float(row["media_start"]),
        end=_opt_float(row["media_end"]),
        confidence=float(row["confidence"]),
        evidence=Evidence(clip_id=row["clip_id"],
                          metrics={k: float(v) for k, v in _load_dict(row["metrics"]).items()}),
        source=row["source"],
        created_at=row["created_at"],
    )


def _clip_from_row(row: sqlite3.Row) -> ClipRecord:
    return ClipRecord(
        clip_id=row["clip_id"],
        session_id=row["session_id"],
        flag_id=row["flag_id"],
        path=row["path"],
        start=float(row["media_start"]),
        end=float(row["media_end"]),
        size_bytes=int(row["size_bytes"]),
        created_at=row["created_at"],
        content_type=row["content_type"],
    )


def _event_from_row(row: sqlite3.Row) -> EventRecord:
    return EventRecord(
        event_id=row["event_id"],
        session_id=row["session_id"],
        type=row["type"],
        client_time=_opt_float(row["client_time"]),
        media_time=_opt_float(row["media_time"]),
        received_at=row["received_at"],
        detail=_load_dict(row["detail"]),
    )


def _transcript_from_row(row: sqlite3.Row) -> TranscriptSegment:
    return TranscriptSegment(
        segment_id=row["segment_id"],
        session_id=row["session_id"],
        start=float(row["media_start"]),
        end=float(row["media_end"]),
        text=row["text"],
        confidence=float(row["confidence"]),
        language=row["language"],
        created_at=row["created_at"],
    )


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


__all__ = ["SqliteStore"]
