"""Enrollment rows, on both backends: sealed bytes in, the same bytes out."""

from __future__ import annotations

from proctor.store import Store
from proctor.store.migrations import MIGRATIONS
from tests.store.conftest import Backend
from tests.store.factories import enrollment as record
from tests.store.factories import session


def test_migration_2_adds_the_enrollments_table() -> None:
    assert [m.version for m in MIGRATIONS][:2] == [1, 2]
    assert "CREATE TABLE enrollments" in MIGRATIONS[1].sql


async def test_save_get_replace_delete(store: Store) -> None:
    assert await store.get_enrollment("c1") is None
    first = record()
    await store.save_enrollment(first)
    assert await store.get_enrollment("c1") == first
    second = record(ciphertext=b"another", created_at="2024-02-01T00:00:00.000000Z")
    await store.save_enrollment(second)  # re-enrolling replaces
    assert await store.get_enrollment("c1") == second
    await store.save_enrollment(record("c2"))
    assert await store.delete_enrollment("c1") is True
    assert await store.delete_enrollment("c1") is False
    assert await store.get_enrollment("c1") is None
    assert await store.get_enrollment("c2") == record("c2")


async def test_bytes_are_stored_as_base64_text(store: Store, backend: Backend) -> None:
    await store.save_enrollment(record())
    [(ciphertext, nonce)] = await backend.rows("SELECT ciphertext, nonce FROM enrollments")
    assert isinstance(ciphertext, str) and isinstance(nonce, str)  # portable TEXT columns


async def test_enrollment_outlives_the_candidates_sessions(store: Store) -> None:
    await store.create_session(session("s1", "c1"))
    await store.save_enrollment(record())
    await store.delete_candidate("c1")  # sessions only: erasure deletes the enrollment itself
    assert await store.get_enrollment("c1") is not None
