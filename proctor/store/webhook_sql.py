"""Webhooks, their deliveries and attempts: the Store's queries for them, on both backends.

A delivery row is the durable promise to send one event to one webhook: it is written
before anything is attempted, leased by the node attempting it (``lease_until``) and
finished, with its attempt, in one transaction.
"""

from __future__ import annotations

import json

from proctor.store.base import AttemptRecord, DeliveryRecord, WebhookRecord
from proctor.store.sql_base import Row, SqlBase, SqlConnection

_WEBHOOK_COLUMNS = "webhook_id, owner, url, events, secret, created_at, active"
_DELIVERY_COLUMNS = (
    "delivery_id, webhook_id, event_id, type, session_id, body, status, attempts, "
    "next_attempt_at, lease_until, last_status_code, last_error, created_at, delivered_at"
)
_ATTEMPT_COLUMNS = "attempt_id, delivery_id, at, status_code, error, duration_ms"
PENDING = "pending"
# Claimable: pending, and nobody holds it (never leased, or the lease lapsed).
_CLAIMABLE = "status = ? AND (lease_until IS NULL OR lease_until <= ?)"


def _placeholders(columns: str) -> str:
    return ", ".join("?" for _ in columns.split(", "))


def _is_postgres(conn: SqlConnection) -> bool:
    # The adapters' one dialect marker; SQLite needs no row locks (it holds the file's
    # write lock for the whole statement or transaction).
    return conn.blob_type == "BYTEA"


class WebhookQueries(SqlBase):
    """Mixed into :class:`~proctor.store.sql.SqlStore`."""

    # -- webhooks --------------------------------------------------------------------

    async def add_webhook(self, record: WebhookRecord) -> None:
        await self._execute(
            f"INSERT INTO webhooks ({_WEBHOOK_COLUMNS}) "
            f"VALUES ({_placeholders(_WEBHOOK_COLUMNS)})",
            (record.webhook_id, record.owner, record.url, json.dumps(record.events),
             record.secret, record.created_at, int(record.active)),
        )

    async def get_webhook(self, webhook_id: str) -> WebhookRecord | None:
        row = await self._fetch_one(
            f"SELECT {_WEBHOOK_COLUMNS} FROM webhooks WHERE webhook_id = ?", (webhook_id,))
        return _webhook(row) if row is not None else None

    async def list_webhooks(self, owner: str | None = None) -> list[WebhookRecord]:
        where, params = "active = 1", []
        if owner is not None:
            where, params = "active = 1 AND owner = ?", [owner]
        rows = await self._fetch_all(
            f"SELECT {_WEBHOOK_COLUMNS} FROM webhooks WHERE {where} "
            "ORDER BY created_at, webhook_id", params)
        return [_webhook(row) for row in rows]

    async def delete_webhook(self, webhook_id: str) -> bool:
        # Children first, explicitly: the result must not hang on either dialect's
        # cascade settings.
        async with self._transaction() as conn:
            await conn.execute(
                "DELETE FROM webhook_attempts WHERE delivery_id IN "
                "(SELECT delivery_id FROM webhook_deliveries WHERE webhook_id = ?)",
                (webhook_id,))
            await conn.execute("DELETE FROM webhook_deliveries WHERE webhook_id = ?",
                               (webhook_id,))
            rows = await conn.fetch_all(
                "DELETE FROM webhooks WHERE webhook_id = ? RETURNING webhook_id",
                (webhook_id,))
        return bool(rows)

    # -- deliveries ------------------------------------------------------------------

    async def add_deliveries(self, records: list[DeliveryRecord]) -> None:
        if not records:
            return
        sql = (f"INSERT INTO webhook_deliveries ({_DELIVERY_COLUMNS}) "
               f"VALUES ({_placeholders(_DELIVERY_COLUMNS)})")
        async with self._transaction() as conn:  # all of an event's deliveries, or none
            for record in records:
                await conn.execute(sql, _delivery_params(record))

    async def claim_due_deliveries(self, now: float, lease_seconds: float,
                                   limit: int) -> list[DeliveryRecord]:
        """One statement (UPDATE ... RETURNING), so a claim is atomic on both dialects.

        The due rows are picked once, in a materialized CTE: PostgreSQL may otherwise
        rerun an ``IN (SELECT ... LIMIT)`` per row and lease more than ``limit``. SQLite
        runs the statement under the file's write lock. On PostgreSQL the pick skips rows
        a racing claim has locked, and the outer WHERE repeats the claimable test, which
        PostgreSQL re-checks on a row a racing claim just changed: of two nodes only one
        ever leases a delivery.
        """
        async with self._connection() as conn:
            lock = " FOR UPDATE SKIP LOCKED" if _is_postgres(conn) else ""
            rows = await conn.fetch_all(
                f"WITH due AS MATERIALIZED (SELECT delivery_id FROM webhook_deliveries "
                f"WHERE {_CLAIMABLE} AND next_attempt_at <= ? "
                f"ORDER BY next_attempt_at, delivery_id LIMIT ?{lock}) "
                f"UPDATE webhook_deliveries SET lease_until = ? "
                f"WHERE delivery_id IN (SELECT delivery_id FROM due) AND {_CLAIMABLE} "
                f"RETURNING {_DELIVERY_COLUMNS}",
                (PENDING, float(now), float(now), int(limit), float(now + lease_seconds),
                 PENDING, float(now)),
            )
        claimed = [_delivery(row) for row in rows]
        return sorted(claimed, key=lambda d: (d.next_attempt_at, d.delivery_id))

    async def finish_attempt(self, delivery: DeliveryRecord, attempt: AttemptRecord) -> None:
        """Record the attempt; set the delivery's new state unless it is finished already.

        A delivery deleted meanwhile (its webhook was) records nothing. One finished by
        another node (a lease that lapsed) keeps its outcome: a late failure must not
        turn "delivered" back into "pending".
        """
        async with self._transaction() as conn:
            lock = " FOR UPDATE" if _is_postgres(conn) else ""  # holds off a delete
            rows = await conn.fetch_all(
                f"SELECT status FROM webhook_deliveries WHERE delivery_id = ?{lock}",
                (delivery.delivery_id,))
            if not rows:
                return
            await conn.execute(
                f"INSERT INTO webhook_attempts ({_ATTEMPT_COLUMNS}) "
                f"VALUES ({_placeholders(_ATTEMPT_COLUMNS)})",
                (attempt.attempt_id, attempt.delivery_id, attempt.at, attempt.status_code,
                 attempt.error, float(attempt.duration_ms)))
            if rows[0]["status"] != PENDING:
                return
            await conn.execute(
                "UPDATE webhook_deliveries SET status = ?, attempts = ?, next_attempt_at = ?, "
                "lease_until = NULL, last_status_code = ?, last_error = ?, delivered_at = ? "
                "WHERE delivery_id = ?",
                (delivery.status, delivery.attempts, float(delivery.next_attempt_at),
                 delivery.last_status_code, delivery.last_error, delivery.delivered_at,
                 delivery.delivery_id))

    async def list_deliveries(self, webhook_id: str, limit: int = 100) -> list[DeliveryRecord]:
        rows = await self._fetch_all(
            f"SELECT {_DELIVERY_COLUMNS} FROM webhook_deliveries WHERE webhook_id = ? "
            "ORDER BY created_at DESC, delivery_id DESC LIMIT ?", (webhook_id, int(limit)))
        return [_delivery(row) for row in rows]

    async def list_attempts(self, delivery_id: str) -> list[AttemptRecord]:
        rows = await self._fetch_all(
            f"SELECT {_ATTEMPT_COLUMNS} FROM webhook_attempts WHERE delivery_id = ? "
            "ORDER BY at, attempt_id", (delivery_id,))
        return [AttemptRecord(attempt_id=r["attempt_id"], delivery_id=r["delivery_id"],
                              at=r["at"], status_code=r["status_code"], error=r["error"],
                              duration_ms=float(r["duration_ms"])) for r in rows]


def _webhook(row: Row) -> WebhookRecord:
    return WebhookRecord(webhook_id=row["webhook_id"], owner=row["owner"], url=row["url"],
                         events=[str(e) for e in json.loads(row["events"])],
                         secret=row["secret"], created_at=row["created_at"],
                         active=bool(row["active"]))


def _delivery_params(d: DeliveryRecord) -> tuple[object, ...]:
    lease = None if d.lease_until is None else float(d.lease_until)
    return (d.delivery_id, d.webhook_id, d.event_id, d.type, d.session_id, d.body, d.status,
            d.attempts, float(d.next_attempt_at), lease, d.last_status_code, d.last_error,
            d.created_at, d.delivered_at)


def _delivery(row: Row) -> DeliveryRecord:
    lease = row["lease_until"]
    return DeliveryRecord(
        delivery_id=row["delivery_id"], webhook_id=row["webhook_id"],
        event_id=row["event_id"], type=row["type"], session_id=row["session_id"],
        body=row["body"], status=row["status"], attempts=int(row["attempts"]),
        next_attempt_at=float(row["next_attempt_at"]), created_at=row["created_at"],
        lease_until=None if lease is None else float(lease),
        last_status_code=row["last_status_code"], last_error=row["last_error"],
        delivered_at=row["delivered_at"])
