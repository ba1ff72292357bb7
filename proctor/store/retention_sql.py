"""Retention: the Store's purge of expired rows, on both backends (SPEC "Retention").

Each kind has a cutoff, an ISO timestamp in the store's own format (fixed width, so
text order is time order); an empty cutoff keeps that kind forever. A live session,
its clips and transcript, and the enrollment of a candidate with a live session are
never touched. Everything happens in one transaction; deletes are idempotent, so two
nodes purging at once remove each row once (and may both report it).
"""

from __future__ import annotations

from proctor.store.base import ClipRecord, SessionStatus
from proctor.store.sql_base import Row, SqlBase, SqlConnection

RETENTION_KINDS = ("clips", "sessions", "enrollments", "transcripts")

_LIVE = str(SessionStatus.LIVE)
# A session past its cutoff: not live, and ended (or, never started, created) before it.
_EXPIRED_SESSION = "s.status <> ? AND COALESCE(s.ended_at, s.created_at) < ?"
# A clip past its own cutoff or its session's; never a live session's.
_CLIP_FROM = (
    "FROM clips c JOIN sessions s ON s.session_id = c.session_id "
    f"WHERE s.status <> ? AND (c.created_at < ? OR ({_EXPIRED_SESSION}))"
)
_CLIP_SELECT = (
    "SELECT c.clip_id, c.session_id, c.flag_id, c.path, c.media_start, c.media_end, "
    "c.size_bytes, c.content_type, c.created_at " + _CLIP_FROM
)
_TRANSCRIPT_WHERE = (
    "segment_id IN (SELECT t.segment_id FROM transcripts t "
    "JOIN sessions s ON s.session_id = t.session_id WHERE s.status <> ? AND t.created_at < ?)"
)
_ENROLLMENT_WHERE = (
    "created_at < ? AND candidate_id NOT IN "
    "(SELECT candidate_id FROM sessions WHERE status = ?)"
)
_SESSION_WHERE = (
    "session_id IN (SELECT s.session_id FROM sessions s WHERE " + _EXPIRED_SESSION + ")"
)


class RetentionQueries(SqlBase):
    """Mixed into :class:`~proctor.store.sql.SqlStore`."""

    async def purge_expired(self, before: dict[str, str], dry_run: bool = False,
                            ) -> tuple[dict[str, int], list[ClipRecord]]:
        """Remove what is older than ``before[kind]`` (kinds: clips, sessions,
        enrollments, transcripts; a missing or empty cutoff keeps the kind).

        Returns the counts removed per kind and every clip removed (its own cutoff
        or its session's), whose files the caller deletes. ``dry_run``: the same
        answer, nothing removed."""
        cut = {kind: before.get(kind, "") for kind in RETENTION_KINDS}
        async with self._transaction() as conn:
            clips = await _clips(conn, cut["clips"], cut["sessions"])
            counts = {"clips": len(clips),
                      "transcripts": await _purge(conn, "transcripts", "segment_id",
                                                  _TRANSCRIPT_WHERE,
                                                  (_LIVE, cut["transcripts"]), dry_run),
                      "enrollments": await _purge(conn, "enrollments", "candidate_id",
                                                  _ENROLLMENT_WHERE,
                                                  (cut["enrollments"], _LIVE), dry_run)}
            if not dry_run:
                await _delete_clips(conn, cut["clips"], cut["sessions"])
            counts["sessions"] = await _purge(conn, "sessions", "session_id", _SESSION_WHERE,
                                              (_LIVE, cut["sessions"]), dry_run)
        return {kind: counts[kind] for kind in RETENTION_KINDS}, clips


async def _clips(conn: SqlConnection, clips_before: str,
                 sessions_before: str) -> list[ClipRecord]:
    rows = await conn.fetch_all(
        _CLIP_SELECT + " ORDER BY c.created_at, c.clip_id",
        (_LIVE, clips_before, _LIVE, sessions_before))
    return [_clip(row) for row in rows]


async def _delete_clips(conn: SqlConnection, clips_before: str, sessions_before: str) -> None:
    # The bytes first: the clip rows select them. Rows of expired sessions would also
    # go with their session (ON DELETE CASCADE); deleting them here is the same.
    params = (_LIVE, clips_before, _LIVE, sessions_before)
    chosen = "SELECT c.clip_id " + _CLIP_FROM
    await conn.execute(f"DELETE FROM clip_data WHERE clip_id IN ({chosen})", params)
    await conn.execute(f"DELETE FROM clips WHERE clip_id IN ({chosen})", params)


async def _purge(conn: SqlConnection, table: str, key: str, where: str,
                 params: tuple[str, ...], dry_run: bool) -> int:
    """Delete (or, dry, count) ``table``'s rows matching ``where``; how many.

    ``table``, ``key`` and ``where`` are this module's literals, never caller input."""
    if dry_run:
        rows = await conn.fetch_all(f"SELECT {key} FROM {table} WHERE {where}", params)
    else:
        # RETURNING rather than a row count: the drivers report counts differently.
        rows = await conn.fetch_all(f"DELETE FROM {table} WHERE {where} RETURNING {key}",
                                    params)
    return len(rows)


def _clip(row: Row) -> ClipRecord:
    return ClipRecord(clip_id=row["clip_id"], session_id=row["session_id"],
                      flag_id=row["flag_id"], path=row["path"],
                      start=float(row["media_start"]), end=float(row["media_end"]),
                      size_bytes=int(row["size_bytes"]), created_at=row["created_at"],
                      content_type=row["content_type"])
