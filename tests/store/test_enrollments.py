"""Enrollment rows in the SQLite store: sealed bytes in, the same bytes out."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from proctor.store import SessionRecord, SqliteStore
from proctor.store.base import EnrollmentRecord
from proctor.store.migrations import MIGRATIONS


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "proctor.db")
    await s.open()
    yield s
    await s.close()


def record(candidate_id: str = "c1", ciphertext: bytes = b"\x00\xffsealed\n\x01",
           created_at: str = "2024-01-01T00:00:00.000000Z") -> EnrollmentRecord:
    return EnrollmentRecord(candidate_id=candidate_id, ciphertext=ciphertext,
                            nonce=bytes(range(12)), model="sface-2021dec-int8bq",
                            created_at=created_at,
                            quality={"face_px": 231.2, "sharpness": 1893.3, "score": 0.946})


def test_migration_2_adds_the_enrollments_table() -> None:
    assert [m.version for m in MIGRATIONS][:2] == [1, 2]
    assert "CREATE TABLE enrollments" in MIGRATIONS[1].sql


async def test_save_get_replace_delete(store: SqliteStore) -> None:
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


async def test_bytes_are_stored_as_base64_text(store: SqliteStore, tmp_path: Path) -> None:
    await store.save_enrollment(record())
    with sqlite3.connect(tmp_path / "proctor.db") as conn:
        ciphertext, nonce = conn.execute(
            "SELECT ciphertext, nonce FROM enrollments").fetchone()
    assert isinstance(ciphertext, str) and isinstance(nonce, str)  # portable TEXT columns


async def test_enrollment_outlives_the_candidates_sessions(store: SqliteStore) -> None:
    await store.create_session(SessionRecord(session_id="s1", candidate_id="c1",
                                             created_at="2024-01-01T00:00:00.000000Z"))
    await store.save_enrollment(record())
    await store.delete_candidate("c1")  # sessions only: erasure deletes the enrollment itself
    assert await store.get_enrollment("c1") is not None


async def test_list_candidate_sessions_newest_first(store: SqliteStore) -> None:
    for sid, cid, created in (("s1", "c1", "2024-01-01T00:00:00.000000Z"),
                              ("s2", "c2", "2024-01-02T00:00:00.000000Z"),
                              ("s3", "c1", "2024-01-03T00:00:00.000000Z")):
        await store.create_session(SessionRecord(session_id=sid, candidate_id=cid,
                                                 created_at=created))
    assert [s.session_id for s in await store.list_candidate_sessions("c1")] == ["s3", "s1"]
    assert await store.list_candidate_sessions("nobody") == []
