"""Tenants in the store, on both backends: keys, sessions and enrollments per tenant, and
migration 7 giving every older row the tenant "default"."""

from __future__ import annotations

from proctor.store.base import ApiKeyRecord, EnrollmentRecord, SessionRecord, Store
from proctor.store.migrations import MIGRATIONS, migrate
from tests.store.conftest import Backend


def _session(session_id: str, tenant: str, candidate: str = "alice") -> SessionRecord:
    return SessionRecord(session_id=session_id, candidate_id=candidate,
                         created_at=f"2026-01-01T00:00:0{session_id[-1]}.000000Z",
                         tenant=tenant)


def _enrollment(tenant: str, nonce: bytes) -> EnrollmentRecord:
    return EnrollmentRecord(candidate_id="alice", ciphertext=b"sealed", nonce=nonce,
                            model="m", created_at="2026-01-01T00:00:00.000000Z",
                            quality={"score": 1.0}, tenant=tenant)


async def test_sessions_and_candidates_are_per_tenant(store: Store) -> None:
    for record in (_session("s1", "acme"), _session("s2", "globex"), _session("s3", "acme")):
        await store.create_session(record)
    assert [s.session_id for s in await store.list_sessions(tenant="acme")] == ["s3", "s1"]
    assert [s.session_id for s in await store.list_sessions()] == ["s3", "s2", "s1"]
    assert [s.tenant for s in await store.list_candidate_sessions("alice", "globex")] == [
        "globex"]
    assert await store.delete_candidate("alice", "globex") == []
    assert [s.session_id for s in await store.list_sessions()] == ["s3", "s1"]


async def test_enrollments_key_on_tenant_and_candidate(store: Store) -> None:
    acme, globex = _enrollment("acme", b"n1"), _enrollment("globex", b"n2")
    await store.save_enrollment(acme)
    await store.save_enrollment(globex)
    assert await store.get_enrollment("alice", "acme") == acme
    assert await store.get_enrollment("alice", "globex") == globex
    again = _enrollment("acme", b"n3")
    await store.save_enrollment(again)  # replaces acme's only
    assert await store.get_enrollment("alice", "acme") == again
    assert await store.delete_enrollment("alice", "globex") is True
    assert await store.get_enrollment("alice", "acme") == again
    assert await store.get_enrollment("alice") is None  # "default" has no alice


async def test_keys_list_and_revoke(store: Store) -> None:
    for key_id, name in (("k1", "a"), ("k2", "b"), ("k3", "a")):
        await store.add_api_key(ApiKeyRecord(key_id, name, f"h{key_id}",
                                             f"2026-01-0{key_id[-1]}T00:00:00Z",
                                             tenant=f"t-{name}"))
    assert await store.revoke_api_key("a") == 2
    assert await store.revoke_api_key("a") == 0
    assert [(k.key_id, k.tenant, k.revoked) for k in await store.list_api_keys()] == [
        ("k1", "t-a", True), ("k2", "t-b", False), ("k3", "t-a", True)]
    assert await store.find_api_key("hk1") is None
    found = await store.find_api_key("hk2")
    assert found is not None and found.tenant == "t-b"


async def test_migration_7_gives_older_rows_the_default_tenant(backend: Backend) -> None:
    async with backend.raw_connection() as conn:
        await migrate(conn, MIGRATIONS[:6])
        await conn.execute(
            "INSERT INTO enrollments (candidate_id, ciphertext, nonce, model, quality, "
            "created_at) VALUES ('alice', 'c2VhbGVk', 'bjE=', 'm', '{}', 'then')")
        await conn.execute(
            "INSERT INTO webhooks (webhook_id, owner, url, events, secret, created_at) "
            "VALUES ('w1', 'key-1', 'https://a.test', '[]', 's', 'then')")
        await conn.execute(
            "INSERT INTO sessions (session_id, candidate_id, status, policy, accommodations, "
            "metadata, created_at) VALUES ('s1', 'alice', 'ended', '{}', '{}', '{}', 'then')")
        assert await migrate(conn, MIGRATIONS[:7]) == [7]
    store = backend.new_store()
    await store.open()
    try:
        enrollment = await store.get_enrollment("alice", "default")
        assert enrollment is not None and enrollment.ciphertext == b"sealed"
        session = await store.get_session("s1")
        assert session is not None and session.tenant == "default"
        webhook = await store.get_webhook("w1")
        assert webhook is not None and webhook.owner == "default"
    finally:
        await store.close()
