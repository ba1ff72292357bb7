"""The Store written once, in SQL both SQLite and PostgreSQL run.

:class:`SqlStore` implements every :class:`~proctor.store.base.Store` method on a
:class:`SqlConnection`, a thin adapter over one driver connection. ``sqlite.py`` and
``postgres.py`` only open connections, adapt them and turn driver errors into
:class:`~proctor.store.base.StoreUnavailable` / :class:`StoreIntegrityError`.

Queries use ``?`` placeholders (PostgreSQL's adapter rewrites them to ``$1, $2, ...``), so
no ``?`` may appear in a query other than as a placeholder. Both dialects accept the
rest: ``ON CONFLICT ... DO UPDATE SET c = excluded.c`` and ``RETURNING`` (SQLite 3.35+).

Text orders by the database's collation: SQLite compares bytes; PostgreSQL uses the
database's ``LC_COLLATE``. The values the server orders by (fixed-width ISO timestamps,
uuids, media seconds) sort the same under ``C`` and the usual locales; create the
database with ``LC_COLLATE=C`` (or ``C.UTF-8``) to make every ordering byte-identical.
"""

from __future__ import annotations

import base64
from abc import abstractmethod
from collections.abc import Callable
from typing import Any

from proctor.flags.model import Evidence, Flag, FlagKind, Severity
from proctor.store.base import (
    DEFAULT_TENANT,
    ApiKeyRecord,
    ClipRecord,
    EnrollmentRecord,
    EventRecord,
    NodeRecord,
    NodeStatus,
    SessionRecord,
    SessionStatus,
    TranscriptSegment,
)
from proctor.store.kb_sql import KbQueries
from proctor.store.migrations import current_version
from proctor.store.retention_sql import RetentionQueries
from proctor.store.review_sql import ReviewQueries
from proctor.store.sql_base import Params, Row, SqlBase, SqlConnection, dump, load, load_dict
from proctor.store.webhook_sql import WebhookQueries

_SESSION_COLUMNS = (
    "session_id, candidate_id, exam_id, status, policy, accommodations, metadata, "
    "created_at, started_at, ended_at, report, api_key_id, owner_node, media_time, tenant"
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
_ENROLLMENT_COLUMNS = "tenant, candidate_id, ciphertext, nonce, model, quality, created_at"
_KEY_COLUMNS = "key_id, name, key_hash, created_at, revoked, tenant"
_TRANSCRIPT_COLUMNS = (
    "segment_id, session_id, media_start, media_end, text, confidence, language, created_at"
)
_NODE_COLUMNS = "node_id, address, started_at, heartbeat_at, live_sessions, capacity, status"
_NEWEST_FIRST = "ORDER BY created_at DESC, session_id DESC"


def upsert(table: str, columns: str) -> str:
    """INSERT of every column that, on a key clash, overwrites all but the first (the key)."""
    names = columns.split(", ")
    return (
        f"INSERT INTO {table} ({columns}) VALUES ({', '.join('?' for _ in names)}) "
        f"ON CONFLICT ({names[0]}) DO UPDATE SET "
        + ", ".join(f"{c} = excluded.{c}" for c in names[1:])
    )


# A flag rises and closes in place; a node's heartbeat replaces its whole row.
_FLAG_UPSERT = upsert("flags", _FLAG_COLUMNS)
# Enrollments key on (tenant, candidate_id): candidate ids are per tenant.
_ENROLLMENT_UPSERT = (
    f"INSERT INTO enrollments ({_ENROLLMENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (tenant, candidate_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _ENROLLMENT_COLUMNS.split(", ")[2:])
)
_NODE_UPSERT = upsert("nodes", _NODE_COLUMNS)
_CLIP_DATA_UPSERT = upsert("clip_data", "clip_id, session_id, data")


class SqlStore(ReviewQueries, WebhookQueries, RetentionQueries, KbQueries, SqlBase):
    """Every Store method over :meth:`_connection`, which subclasses provide. The
    review/audit, webhook and interview queries live in their own modules (mixins)."""

    @abstractmethod
    async def open(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    async def ping(self) -> None:
        await self._fetch_all("SELECT 1")

    async def schema_version(self) -> int:
        async with self._connection() as conn:
            return await current_version(conn)

    # -- API keys --------------------------------------------------------------------

    async def add_api_key(self, record: ApiKeyRecord) -> None:
        await self._execute(
            f"INSERT INTO api_keys ({_KEY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
            (record.key_id, record.name, record.key_hash, record.created_at,
             int(record.revoked), record.tenant),
        )

    async def find_api_key(self, key_hash: str) -> ApiKeyRecord | None:
        row = await self._fetch_one(
            f"SELECT {_KEY_COLUMNS} FROM api_keys "
            "WHERE key_hash = ? AND revoked = 0 ORDER BY created_at, key_id LIMIT 1",
            (key_hash,),
        )
        return None if row is None else api_key_from_row(row)

    async def list_api_keys(self) -> list[ApiKeyRecord]:
        rows = await self._fetch_all(
            f"SELECT {_KEY_COLUMNS} FROM api_keys ORDER BY created_at, key_id")
        return [api_key_from_row(row) for row in rows]

    async def revoke_api_key(self, name: str) -> int:
        rows = await self._fetch_all(
            "UPDATE api_keys SET revoked = 1 WHERE name = ? AND revoked = 0 RETURNING key_id",
            (name,))
        return len(rows)

    # -- sessions --------------------------------------------------------------------

    async def create_session(self, record: SessionRecord) -> None:
        placeholders = ", ".join("?" for _ in _SESSION_COLUMNS.split(", "))
        await self._execute(
            f"INSERT INTO sessions ({_SESSION_COLUMNS}) VALUES ({placeholders})",
            session_params(record),
        )

    async def get_session(self, session_id: str) -> SessionRecord | None:
        row = await self._fetch_one(
            f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE session_id = ?", (session_id,)
        )
        return None if row is None else session_from_row(row)

    async def list_sessions(self, status: SessionStatus | None = None,
                            limit: int = 100,
                            tenant: str | None = None) -> list[SessionRecord]:
        """Newest first (by created_at), optionally only those with ``status`` (and of
        ``tenant``)."""
        if limit < 0:
            raise ValueError(f"limit must be zero or more, got {limit}")
        where, params = _status_filter("WHERE", status)
        if tenant is not None:
            where = f"{where} AND tenant = ?" if where else "WHERE tenant = ?"
            params = [*params, tenant]
        return await self._sessions(
            f"SELECT {_SESSION_COLUMNS} FROM sessions {where} {_NEWEST_FIRST} LIMIT ?",
            [*params, limit],
        )

    async def update_session(self, session_id: str, **fields: Any) -> None:
        """Set any of :data:`SESSION_UPDATES` (ValueError for other names or bad values)."""
        unknown = sorted(set(fields) - set(SESSION_UPDATES))
        if unknown:
            raise ValueError(f"update_session cannot set {', '.join(unknown)}; "
                             f"allowed: {', '.join(SESSION_UPDATES)}")
        if not fields:
            return
        # Column names come from the allow-list above, never from the caller.
        assignments = ", ".join(f"{name} = ?" for name in fields)
        values = [SESSION_UPDATES[name](value) for name, value in fields.items()]
        await self._execute(
            f"UPDATE sessions SET {assignments} WHERE session_id = ?", [*values, session_id]
        )

    async def list_candidate_sessions(self, candidate_id: str,
                                      tenant: str = DEFAULT_TENANT) -> list[SessionRecord]:
        return await self._sessions(
            f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE candidate_id = ? AND tenant = ? "
            f"{_NEWEST_FIRST}",
            (candidate_id, tenant),
        )

    async def list_owned_sessions(
        self, node_id: str, status: SessionStatus | None = SessionStatus.LIVE
    ) -> list[SessionRecord]:
        """The node's sessions (with ``status``; None: any), newest first."""
        where, params = _status_filter("AND", status)
        return await self._sessions(
            f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE owner_node = ? {where} "
            f"{_NEWEST_FIRST}",
            [node_id, *params],
        )

    async def delete_session(self, session_id: str) -> list[ClipRecord]:
        return await self._delete_sessions("session_id = ?", (session_id,))

    async def delete_candidate(self, candidate_id: str,
                               tenant: str = DEFAULT_TENANT) -> list[ClipRecord]:
        return await self._delete_sessions("candidate_id = ? AND tenant = ?",
                                           (candidate_id, tenant))

    async def _delete_sessions(self, where: str, params: Params) -> list[ClipRecord]:
        """Delete sessions matching ``where``; the schema cascades to the rest.

        ``where`` is one of this module's literals, never caller input.
        """
        # One transaction, so no clip can be added between reading and deleting.
        async with self._transaction() as conn:
            rows = await conn.fetch_all(
                f"SELECT {_prefixed('c', _CLIP_COLUMNS)} FROM clips c WHERE c.session_id IN "
                f"(SELECT session_id FROM sessions WHERE {where}) "
                "ORDER BY c.session_id, c.media_start, c.created_at, c.clip_id",
                params,
            )
            await conn.execute(f"DELETE FROM sessions WHERE {where}", params)
        return [clip_from_row(row) for row in rows]

    async def _sessions(self, sql: str, params: Params) -> list[SessionRecord]:
        return [session_from_row(row) for row in await self._fetch_all(sql, params)]

    # -- nodes -----------------------------------------------------------------------

    async def heartbeat_node(self, record: NodeRecord) -> None:
        """Insert the node's row, or replace every field of it."""
        await self._execute(_NODE_UPSERT, node_params(record))

    async def list_nodes(self) -> list[NodeRecord]:
        rows = await self._fetch_all(f"SELECT {_NODE_COLUMNS} FROM nodes ORDER BY node_id")
        return [node_from_row(row) for row in rows]

    async def set_node_status(self, node_id: str, status: NodeStatus) -> None:
        await self._execute("UPDATE nodes SET status = ? WHERE node_id = ?",
                            (str(NodeStatus(status)), node_id))

    async def claim_stale_nodes(self, stale_before: float) -> list[str]:
        """Mark stale "up" nodes "dead"; the ids this call changed, sorted.

        One UPDATE ... RETURNING: SQLite runs it under the file's write lock, and
        PostgreSQL re-checks the WHERE on a row another transaction just changed, so
        of two racing callers only the first sees a node as "up" and returns it.
        """
        rows = await self._fetch_all(
            "UPDATE nodes SET status = ? WHERE status = ? AND heartbeat_at < ? "
            "RETURNING node_id",
            (str(NodeStatus.DEAD), str(NodeStatus.UP), float(stale_before)),
        )
        return sorted(row["node_id"] for row in rows)

    # -- enrollments -----------------------------------------------------------------

    async def save_enrollment(self, record: EnrollmentRecord) -> None:
        """Insert, or replace the candidate's previous enrollment (re-enrolling)."""
        await self._execute(
            _ENROLLMENT_UPSERT,
            (record.tenant, record.candidate_id, b64(record.ciphertext), b64(record.nonce),
             record.model, dump(record.quality), record.created_at),
        )

    async def get_enrollment(self, candidate_id: str,
                             tenant: str = DEFAULT_TENANT) -> EnrollmentRecord | None:
        row = await self._fetch_one(
            f"SELECT {_ENROLLMENT_COLUMNS} FROM enrollments "
            "WHERE tenant = ? AND candidate_id = ?",
            (tenant, candidate_id),
        )
        return None if row is None else enrollment_from_row(row)

    async def delete_enrollment(self, candidate_id: str, tenant: str = DEFAULT_TENANT) -> bool:
        # RETURNING rather than a row count: the drivers report counts differently.
        deleted = await self._fetch_all(
            "DELETE FROM enrollments WHERE tenant = ? AND candidate_id = ? "
            "RETURNING candidate_id",
            (tenant, candidate_id),
        )
        return bool(deleted)

    # -- flags -----------------------------------------------------------------------

    async def save_flag(self, flag: Flag) -> None:
        """Insert the flag, or overwrite every field of the row with its flag_id."""
        await self._execute(_FLAG_UPSERT, flag_params(flag))

    async def get_flag(self, flag_id: str) -> Flag | None:
        row = await self._fetch_one(
            f"SELECT {_FLAG_COLUMNS} FROM flags WHERE flag_id = ?", (flag_id,)
        )
        return None if row is None else flag_from_row(row)

    async def list_flags(self, session_id: str) -> list[Flag]:
        """The session's flags by media start, then creation time."""
        rows = await self._fetch_all(
            f"SELECT {_FLAG_COLUMNS} FROM flags WHERE session_id = ? "
            "ORDER BY media_start, created_at, flag_id",
            (session_id,),
        )
        return [flag_from_row(row) for row in rows]

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
        return None if row is None else clip_from_row(row)

    async def list_clips(self, session_id: str) -> list[ClipRecord]:
        """The session's clips by media start, then creation time."""
        rows = await self._fetch_all(
            f"SELECT {_CLIP_COLUMNS} FROM clips WHERE session_id = ? "
            "ORDER BY media_start, created_at, clip_id",
            (session_id,),
        )
        return [clip_from_row(row) for row in rows]

    async def save_clip_data(self, clip_id: str, session_id: str, data: bytes) -> None:
        """Insert, or replace the bytes under clip_id (a retried upload is harmless)."""
        await self._execute(_CLIP_DATA_UPSERT, (clip_id, session_id, bytes(data)))

    async def get_clip_data(self, clip_id: str) -> bytes | None:
        row = await self._fetch_one("SELECT data FROM clip_data WHERE clip_id = ?", (clip_id,))
        return None if row is None else bytes(row["data"])

    async def delete_clip_data(self, clip_id: str) -> None:
        await self._execute("DELETE FROM clip_data WHERE clip_id = ?", (clip_id,))

    # -- browser telemetry -----------------------------------------------------------

    async def add_event(self, record: EventRecord) -> None:
        await self._execute(
            f"INSERT INTO events ({_EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (record.event_id, record.session_id, record.type, record.client_time,
             record.media_time, record.received_at, dump(record.detail)),
        )

    async def list_events(self, session_id: str) -> list[EventRecord]:
        """The session's events in the order the server received them."""
        rows = await self._fetch_all(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE session_id = ? "
            "ORDER BY received_at, client_time, event_id",
            (session_id,),
        )
        return [event_from_row(row) for row in rows]

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
        return [transcript_from_row(row) for row in rows]


def _prefixed(alias: str, columns: str) -> str:
    return ", ".join(f"{alias}.{c}" for c in columns.split(", "))


def _status_filter(keyword: str, status: SessionStatus | None) -> tuple[str, list[Any]]:
    """``keyword status = ?`` and its parameter, or nothing when status is None."""
    if status is None:
        return "", []
    return f"{keyword} status = ?", [str(SessionStatus(status))]


# -- values --------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


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
    return None if value is None else dump(value)


def _encode_node(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ValueError(f"owner_node must be a node id or None, got {value!r}")
    return value


def _encode_media_time(value: Any) -> float | None:
    # bool is an int: True seconds is a bug, not a time.
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise ValueError(f"media_time must be media seconds or None, got {value!r}")
    return opt_float(value)


# The fields update_session may set, each with the function that checks and encodes it.
SESSION_UPDATES: dict[str, Callable[[Any], Any]] = {
    "status": _encode_status,
    "started_at": _encode_time,
    "ended_at": _encode_time,
    "report": _encode_report,
    "owner_node": _encode_node,
    "media_time": _encode_media_time,
}


def session_params(r: SessionRecord) -> tuple[Any, ...]:
    return (r.session_id, r.candidate_id, r.exam_id, _encode_status(r.status),
            dump(r.policy), dump(r.accommodations), dump(r.metadata), r.created_at,
            r.started_at, r.ended_at, _encode_report(r.report), r.api_key_id,
            _encode_node(r.owner_node), _encode_media_time(r.media_time), r.tenant)


def session_from_row(row: Row) -> SessionRecord:
    return SessionRecord(
        session_id=row["session_id"],
        candidate_id=row["candidate_id"],
        exam_id=row["exam_id"],
        status=SessionStatus(row["status"]),
        policy=load_dict(row["policy"]),
        accommodations=load_dict(row["accommodations"]),
        metadata=load_dict(row["metadata"]),
        created_at=row["created_at"],
        started_at=row["started_at"],
        ended_at=row["ended_at"],
        report=load(row["report"]),
        api_key_id=row["api_key_id"],
        owner_node=row["owner_node"],
        media_time=opt_float(row["media_time"]),
        tenant=row["tenant"],
    )


# -- nodes ---------------------------------------------------------------------------


def node_params(r: NodeRecord) -> tuple[Any, ...]:
    return (r.node_id, r.address, r.started_at, float(r.heartbeat_at), int(r.live_sessions),
            int(r.capacity), str(NodeStatus(r.status)))


def node_from_row(row: Row) -> NodeRecord:
    return NodeRecord(
        node_id=row["node_id"],
        address=row["address"],
        started_at=row["started_at"],
        heartbeat_at=float(row["heartbeat_at"]),
        live_sessions=int(row["live_sessions"]),
        capacity=int(row["capacity"]),
        status=NodeStatus(row["status"]),
    )


# -- flags, clips, events, enrollments, transcripts ----------------------------------


def flag_params(f: Flag) -> tuple[Any, ...]:
    return (f.flag_id, f.session_id, f.candidate_id, str(f.kind), str(f.severity), f.start,
            f.end, f.confidence, f.evidence.clip_id, dump(dict(f.evidence.metrics)),
            f.source, f.created_at)


def flag_from_row(row: Row) -> Flag:
    return Flag(
        flag_id=row["flag_id"],
        session_id=row["session_id"],
        candidate_id=row["candidate_id"],
        kind=FlagKind(row["kind"]),
        severity=Severity(row["severity"]),
        start=float(row["media_start"]),
        end=opt_float(row["media_end"]),
        confidence=float(row["confidence"]),
        evidence=Evidence(clip_id=row["clip_id"],
                          metrics={k: float(v) for k, v in load_dict(row["metrics"]).items()}),
        source=row["source"],
        created_at=row["created_at"],
    )


def clip_from_row(row: Row) -> ClipRecord:
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


def event_from_row(row: Row) -> EventRecord:
    return EventRecord(
        event_id=row["event_id"],
        session_id=row["session_id"],
        type=row["type"],
        client_time=opt_float(row["client_time"]),
        media_time=opt_float(row["media_time"]),
        received_at=row["received_at"],
        detail=load_dict(row["detail"]),
    )


def enrollment_from_row(row: Row) -> EnrollmentRecord:
    return EnrollmentRecord(
        candidate_id=row["candidate_id"],
        ciphertext=unb64(row["ciphertext"]),
        nonce=unb64(row["nonce"]),
        model=row["model"],
        created_at=row["created_at"],
        quality=load_dict(row["quality"]),
        tenant=row["tenant"],
    )


def api_key_from_row(row: Row) -> ApiKeyRecord:
    return ApiKeyRecord(key_id=row["key_id"], name=row["name"], key_hash=row["key_hash"],
                        created_at=row["created_at"], revoked=bool(row["revoked"]),
                        tenant=row["tenant"])


def transcript_from_row(row: Row) -> TranscriptSegment:
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


__all__ = ["Params", "Row", "SqlConnection", "SqlStore"]
