"""The webhook part of the Store contract, on SQLite and PostgreSQL (see conftest.py)."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from proctor.store import Store, StoreIntegrityError
from proctor.store.base import AttemptRecord, DeliveryRecord, WebhookRecord
from tests.store.conftest import Backend


def webhook(webhook_id: str = "w1", owner: str = "k1",
            created_at: str = "2024-01-01T00:00:00.000000Z") -> WebhookRecord:
    return WebhookRecord(webhook_id=webhook_id, owner=owner, url="https://example.test/hook",
                         events=["session.ended", "report.ready"], secret="whsec_x",
                         created_at=created_at)


def delivery(delivery_id: str, webhook_id: str = "w1", due: float = 100.0,
             created_at: str = "2024-01-01T00:00:01.000000Z") -> DeliveryRecord:
    return DeliveryRecord(delivery_id=delivery_id, webhook_id=webhook_id,
                          event_id=f"e-{delivery_id}", type="session.ended", session_id="s1",
                          body='{"type":"session.ended"}', status="pending", attempts=0,
                          next_attempt_at=due, created_at=created_at)


def attempt(attempt_id: str, delivery_id: str, status_code: int | None = 500,
            at: str = "2024-01-01T00:00:02.000000Z") -> AttemptRecord:
    return AttemptRecord(attempt_id=attempt_id, delivery_id=delivery_id, at=at,
                         status_code=status_code, error=None if status_code else "refused",
                         duration_ms=12.5)


# -- webhooks -------------------------------------------------------------------------


async def test_webhooks_round_trip_and_list_by_owner(store: Store) -> None:
    await store.add_webhook(webhook("w2", "k1", "2024-01-02T00:00:00.000000Z"))
    await store.add_webhook(webhook("w1", "k1"))
    await store.add_webhook(webhook("w3", "k2"))
    await store.add_webhook(replace(webhook("w4", "k1"), active=False))

    assert await store.get_webhook("w1") == webhook("w1", "k1")
    assert await store.get_webhook("nope") is None
    assert [w.webhook_id for w in await store.list_webhooks("k1")] == ["w1", "w2"]
    assert [w.webhook_id for w in await store.list_webhooks()] == ["w1", "w3", "w2"]
    assert await store.list_webhooks("k9") == []


async def test_duplicate_webhook_is_an_integrity_error(store: Store) -> None:
    await store.add_webhook(webhook())
    with pytest.raises(StoreIntegrityError):
        await store.add_webhook(webhook())


async def test_delete_webhook_takes_its_deliveries_and_attempts(
        store: Store, backend: Backend) -> None:
    await store.add_webhook(webhook("w1"))
    await store.add_webhook(webhook("w2"))
    await store.add_deliveries([delivery("d1", "w1"), delivery("d2", "w2")])
    await store.finish_attempt(replace(delivery("d1"), attempts=1), attempt("a1", "d1"))

    assert await store.delete_webhook("w1") is True
    assert await store.delete_webhook("w1") is False
    assert await store.get_webhook("w1") is None
    assert await store.list_deliveries("w1") == []
    assert await store.list_attempts("d1") == []
    assert [d.delivery_id for d in await store.list_deliveries("w2")] == ["d2"]
    assert await backend.count_rows("webhook_attempts") == 0


# -- deliveries -----------------------------------------------------------------------


async def test_deliveries_round_trip_newest_first(store: Store) -> None:
    await store.add_webhook(webhook())
    records = [delivery(f"d{i}", created_at=f"2024-01-01T00:00:0{i}.000000Z")
               for i in range(1, 4)]
    await store.add_deliveries(records)
    await store.add_deliveries([])  # nothing to do, no error

    assert await store.list_deliveries("w1") == records[::-1]
    assert [d.delivery_id for d in await store.list_deliveries("w1", limit=2)] == ["d3", "d2"]


async def test_add_deliveries_is_all_or_nothing(store: Store) -> None:
    await store.add_webhook(webhook())
    await store.add_deliveries([delivery("d1")])
    with pytest.raises(StoreIntegrityError):
        await store.add_deliveries([delivery("d2"), delivery("d1")])  # d1 exists
    with pytest.raises(StoreIntegrityError):
        await store.add_deliveries([delivery("d3", webhook_id="unknown")])
    assert [d.delivery_id for d in await store.list_deliveries("w1")] == ["d1"]


async def test_claim_takes_due_unleased_pending_ones_oldest_due_first(store: Store) -> None:
    await store.add_webhook(webhook())
    await store.add_deliveries([delivery("late", due=300.0), delivery("b", due=200.0),
                                delivery("a", due=100.0), delivery("c", due=150.0)])

    first = await store.claim_due_deliveries(now=250.0, lease_seconds=30.0, limit=2)
    assert [d.delivery_id for d in first] == ["a", "c"]
    assert all(d.lease_until == 280.0 for d in first)
    # Leased ones are skipped; not yet due ones too.
    second = await store.claim_due_deliveries(now=250.0, lease_seconds=30.0, limit=10)
    assert [d.delivery_id for d in second] == ["b"]
    assert await store.claim_due_deliveries(now=279.0, lease_seconds=30.0, limit=10) == []
    # A lapsed lease (its node died mid-attempt) frees the delivery again.
    again = await store.claim_due_deliveries(now=280.0, lease_seconds=30.0, limit=10)
    assert [d.delivery_id for d in again] == ["a", "c", "b"]


async def test_finish_attempt_records_it_and_releases_the_lease(store: Store) -> None:
    await store.add_webhook(webhook())
    await store.add_deliveries([delivery("d1", due=100.0)])
    [claimed] = await store.claim_due_deliveries(now=100.0, lease_seconds=30.0, limit=5)

    failed = replace(claimed, attempts=1, next_attempt_at=110.0, last_status_code=500)
    await store.finish_attempt(failed, attempt("a1", "d1", 500))
    [stored] = await store.list_deliveries("w1")
    assert stored == replace(failed, lease_until=None)
    assert await store.claim_due_deliveries(now=109.0, lease_seconds=30.0, limit=5) == []
    [retry] = await store.claim_due_deliveries(now=110.0, lease_seconds=30.0, limit=5)

    done = replace(retry, attempts=2, status="delivered", last_status_code=200,
                   delivered_at="2024-01-01T00:00:03.000000Z")
    await store.finish_attempt(done, attempt("a2", "d1", 200, "2024-01-01T00:00:03.000000Z"))
    assert await store.list_attempts("d1") == [
        attempt("a1", "d1", 500), attempt("a2", "d1", 200, "2024-01-01T00:00:03.000000Z")]
    assert (await store.list_deliveries("w1"))[0].status == "delivered"
    assert await store.claim_due_deliveries(now=1e9, lease_seconds=30.0, limit=5) == []


async def test_a_late_failure_does_not_undo_a_delivery(store: Store) -> None:
    await store.add_webhook(webhook())
    await store.add_deliveries([delivery("d1")])
    delivered = replace(delivery("d1"), status="delivered", attempts=1, last_status_code=200,
                        delivered_at="2024-01-01T00:00:03.000000Z")
    await store.finish_attempt(delivered, attempt("a1", "d1", 200))
    late = replace(delivery("d1"), attempts=1, next_attempt_at=500.0, last_status_code=None,
                   last_error="timed out")
    await store.finish_attempt(late, attempt("a2", "d1", None,
                                             "2024-01-01T00:00:04.000000Z"))

    [stored] = await store.list_deliveries("w1")
    assert stored == delivered
    assert len(await store.list_attempts("d1")) == 2  # both attempts stay in the log


async def test_finishing_a_deleted_delivery_records_nothing(store: Store) -> None:
    await store.add_webhook(webhook())
    await store.add_deliveries([delivery("d1")])
    await store.delete_webhook("w1")
    await store.finish_attempt(replace(delivery("d1"), attempts=1), attempt("a1", "d1"))
    assert await store.list_attempts("d1") == []


async def test_racing_stores_claim_disjoint_sets(store: Store, backend: Backend) -> None:
    count = 60
    await store.add_webhook(webhook())
    await store.add_deliveries([delivery(f"d{i:03}", due=float(i)) for i in range(count)])
    others = [backend.new_store() for _ in range(3)]
    await asyncio.gather(*(s.open() for s in others))
    try:
        claims = await _claim_in_rounds([store, *others])
    finally:
        await asyncio.gather(*(s.close() for s in others))

    claimed = [delivery_id for claim in claims for delivery_id in claim]
    assert len(claimed) == count  # every one once: none twice, none lost
    assert set(claimed) == {f"d{i:03}" for i in range(count)}
    assert sum(1 for claim in claims if claim) >= 2, "the stores really raced"


async def _claim_in_rounds(stores: list[Store]) -> list[list[str]]:
    """Every store claims a small batch at the same instant, round after round, until
    nothing is left: each round is a real race (lockstep, so no store can take all)."""
    got: list[list[str]] = [[] for _ in stores]
    while True:
        batches = await asyncio.gather(*(s.claim_due_deliveries(
            now=1_000.0, lease_seconds=60.0, limit=4) for s in stores))
        if not any(batches):
            return got
        for mine, batch in zip(got, batches, strict=True):
            mine.extend(d.delivery_id for d in batch)


async def test_postgres_claims_skip_rows_another_claim_holds(
        store: Store, backend: Backend) -> None:
    if backend.name != "postgresql":
        pytest.skip("row locks: SQLite's claim holds the whole file's write lock instead")
    await store.add_webhook(webhook())
    await store.add_deliveries([delivery(f"d{i}", due=float(i)) for i in range(6)])
    async with backend.raw_connection() as conn, conn.transaction():
        # Another node's claim in flight on the two oldest: this one neither waits for
        # it nor takes them.
        await conn.fetch_all("SELECT delivery_id FROM webhook_deliveries "
                             "WHERE delivery_id IN ('d0', 'd1') FOR UPDATE")
        claimed = await asyncio.wait_for(
            store.claim_due_deliveries(now=100.0, lease_seconds=30.0, limit=3), 5.0)
        assert [d.delivery_id for d in claimed] == ["d2", "d3", "d4"]
