"""What only PostgreSQL has: URLs with ?schema=, the pool, outages and their recovery."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from proctor.store import EventRecord, PostgresStore, StoreUnavailable, open_store_from_url
from proctor.store.postgres import parse_postgres_url, postgres_placeholders, redact_url
from tests.pgserver import PrivatePostgres, drop_schema, new_schema, postgres_url, schema_url
from tests.store.factories import node, session

# -- URLs -----------------------------------------------------------------------------


def test_schema_is_ours_and_the_rest_passes_to_asyncpg() -> None:
    url = parse_postgres_url("postgresql://app:s3cret@db.internal:5433/proctor"
                             "?schema=tenant_a&sslmode=require&application_name=node-1")
    assert url.schema == "tenant_a"
    assert url.dsn == ("postgresql://app:s3cret@db.internal:5433/proctor"
                       "?sslmode=require&application_name=node-1")
    assert url.where == "db.internal:5433/proctor schema tenant_a"  # no credentials
    plain = parse_postgres_url("postgres://localhost/proctor")
    assert (plain.schema, plain.dsn, plain.where) == (
        None, "postgres://localhost/proctor", "localhost/proctor")


@pytest.mark.parametrize(("url", "message"), [
    ("postgresql://h/db?schema=Tenant", "lowercase"),
    ("postgresql://h/db?schema=a;drop", "lowercase"),
    ("postgresql://h/db?schema=", "lowercase"),
    ("postgresql://h/db?schema=x&connect_timeout=3&foo=1", "connect_timeout, foo"),
    ("postgresql+asyncpg://h/db", "without a '\\+driver'"),
    ("postgresql:///db", "expected postgresql://host"),
])
def test_bad_postgres_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        open_store_from_url(url)


def test_passwords_stay_out_of_messages() -> None:
    assert redact_url("postgresql://app:s3cret@h:5432/db?schema=x") == \
        "postgresql://app:***@h:5432/db?schema=x"
    assert redact_url("postgresql://app@h/db") == "postgresql://app@h/db"
    with pytest.raises(ValueError) as refused:
        parse_postgres_url("postgresql+asyncpg://app:s3cret@h/db")
    assert "s3cret" not in str(refused.value)


def test_placeholders_become_numbered() -> None:
    assert postgres_placeholders("SELECT a FROM t WHERE b = ? AND c IN (?, ?)") == \
        "SELECT a FROM t WHERE b = $1 AND c IN ($2, $3)"
    assert postgres_placeholders("SELECT 1") == "SELECT 1"


# -- schemas --------------------------------------------------------------------------


@pytest.fixture
async def two_schemas() -> AsyncIterator[tuple[str, str]]:
    names = (new_schema(), new_schema())
    yield names
    for name in names:
        await drop_schema(name)


async def test_each_schema_is_its_own_database(two_schemas: tuple[str, str]) -> None:
    first, second = (PostgresStore(schema_url(name)) for name in two_schemas)
    await first.open()
    await second.open()
    try:
        await first.create_session(session("only-in-first"))
        assert await second.get_session("only-in-first") is None
        assert await second.list_sessions() == []
    finally:
        await first.close()
        await second.close()
    conn = await asyncpg.connect(postgres_url())
    try:
        tables = await conn.fetch("SELECT table_schema, table_name FROM information_schema.tables"
                                  " WHERE table_name = 'sessions'")
    finally:
        await conn.close()
    assert {row["table_schema"] for row in tables} >= set(two_schemas)
    assert "public" not in {row["table_schema"] for row in tables}  # nothing leaked


@pytest.fixture
async def pg_store() -> AsyncIterator[PostgresStore]:
    schema = new_schema()
    store = PostgresStore(schema_url(schema))
    await store.open()
    yield store
    await store.close()
    await drop_schema(schema)


async def test_a_wrongly_typed_argument_is_the_callers_bug_not_an_outage(
        pg_store: PostgresStore) -> None:
    await pg_store.create_session(session())
    wrong = EventRecord(event_id="e1", session_id="s1", type=123,  # type: ignore[arg-type]
                        client_time=None, media_time=None, received_at="t")
    with pytest.raises(asyncpg.DataError, match="expected str"):
        await pg_store.add_event(wrong)
    await pg_store.ping()
    assert await pg_store.list_events("s1") == []


async def test_claims_waiting_on_the_same_rows_split_them(pg_store: PostgresStore) -> None:
    # Make the race certain: a third transaction locks every node row, four claims from
    # two stores queue behind it, then all go at once when it lets go.
    other = PostgresStore(schema_url(str(pg_store.schema)))
    await other.open()
    locker = await asyncpg.connect(postgres_url(),
                                   server_settings={"search_path": str(pg_store.schema)})
    try:
        dead = [f"n{i:02d}" for i in range(20)]
        for node_id in dead:
            await pg_store.heartbeat_node(node(node_id, heartbeat_at=10.0))
        locked = locker.transaction()
        await locked.start()
        await locker.execute("SELECT node_id FROM nodes FOR UPDATE")
        claims = [asyncio.create_task(s.claim_stale_nodes(100.0))
                  for s in (pg_store, other, pg_store, other)]
        await asyncio.sleep(0.3)
        assert not any(claim.done() for claim in claims)  # all waiting on the row locks
        await locked.rollback()
        claimed = [node_id for ids in await asyncio.gather(*claims) for node_id in ids]
        assert sorted(claimed) == dead  # each claimed by exactly one caller
    finally:
        await locker.close()
        await other.close()


# -- outages --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def private_pg() -> Iterator[PrivatePostgres]:
    """One private server for this module's outage tests (never the shared 5432)."""
    with PrivatePostgres() as pg:
        yield pg


@pytest.fixture
async def private_store(private_pg: PrivatePostgres) -> AsyncIterator[PostgresStore]:
    if not private_pg.running:  # a failed test may have left it stopped
        private_pg.start()
    store = PostgresStore(schema_url(new_schema(), private_pg.url), timeout=2)
    await store.open()
    yield store
    await store.close()


async def test_calls_fail_fast_while_the_server_is_down_and_work_after(
        private_pg: PrivatePostgres, private_store: PostgresStore) -> None:
    await private_store.create_session(session("before"))
    await asyncio.to_thread(private_pg.stop)  # pg_ctl stop -m immediate: like a crash

    for call in (private_store.ping(), private_store.get_session("before"),
                 private_store.create_session(session("during")), private_store.list_nodes()):
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="PostgreSQL store"):
            await call
        assert time.monotonic() - started < 10

    await asyncio.to_thread(private_pg.start)
    await private_store.ping()  # the same store object, never reopened
    assert await private_store.get_session("before") == session("before")
    await private_store.create_session(session("after"))
    assert await private_store.get_session("during") is None  # nothing half-saved
    # Every pooled connection, not just one, works again.
    await asyncio.gather(*(private_store.list_sessions() for _ in range(10)))


async def test_open_while_the_server_is_down_raises_then_works(
        private_pg: PrivatePostgres) -> None:
    store = PostgresStore(schema_url(new_schema(), private_pg.url), timeout=2)
    await asyncio.to_thread(private_pg.stop)
    try:
        with pytest.raises(StoreUnavailable, match="cannot connect"):
            await store.open()
        with pytest.raises(StoreUnavailable, match="not open"):
            await store.ping()
    finally:
        await asyncio.to_thread(private_pg.start)
    await store.open()
    await store.ping()
    await store.close()


async def test_a_wedged_backend_times_out_instead_of_hanging(
        private_store: PostgresStore) -> None:
    # A server that stops answering (SIGSTOP on our backend; the private server only):
    # the command timeout ends the call, and the pool serves the next call afresh.
    pid = await _backend_pid(private_store)
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await private_store.ping()
        assert time.monotonic() - started < 10
    finally:
        os.kill(pid, signal.SIGCONT)
    await private_store.ping()


async def _backend_pid(store: PostgresStore) -> int:
    async with store._connection() as conn:  # the pool's only connection (min_size 1)
        [row] = await conn.fetch_all("SELECT pg_backend_pid() AS pid")
        return int(row["pid"])


async def test_a_server_that_never_answers_fails_open_within_the_timeout() -> None:
    with socket.socket() as listener:  # accepts TCP connections, never speaks
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        store = PostgresStore(f"postgresql://postgres@127.0.0.1:{port}/x", timeout=1)
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="cannot connect"):
            await store.open()
        assert time.monotonic() - started < 5


async def test_nothing_listening_fails_open_at_once() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        store = PostgresStore(f"postgresql://postgres@127.0.0.1:{port}/x")
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match=f"127.0.0.1:{port}/x"):
            await store.open()
        assert time.monotonic() - started < 5
