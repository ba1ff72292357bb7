"""The store's local outbox (proctor/store/outbox.py): while the store is away, writes
queue in a durable file, in order; once it is back they are replayed exactly once; a
killed process leaves them for the next one; the bound refuses nothing.

"Away" is a real store that cannot serve: a closed SqliteStore (it raises
StoreUnavailable like a vanished server), or a private PostgreSQL server stopped with
``pg_ctl stop -m immediate``.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from proctor.flags.model import Severity
from proctor.store import PostgresStore, SqliteStore
from proctor.store.outbox import StoreOutbox
from signaling.app import create_app
from signaling.keys import SESSIONS_KEY, STORE_KEY
from tests.conftest import API_KEY, make_config
from tests.peers import bearer, connect, offer_sdp
from tests.pgserver import PrivatePostgres, new_schema, schema_url
from tests.store.factories import clip, event, flag, segment, session


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(tmp_path / "proctor.db")
    await store.open()
    await store.create_session(session("s1"))
    yield store
    await store.close()


@pytest.fixture
async def outbox(store: SqliteStore, tmp_path: Path) -> AsyncIterator[StoreOutbox]:
    box = StoreOutbox(store, tmp_path / "outbox.db")
    await box.open()
    yield box
    await box.close()


async def _until_empty(box: StoreOutbox) -> None:
    async with asyncio.timeout(30):
        while box.depth:
            await asyncio.sleep(0.05)


async def test_writes_go_straight_to_a_store_that_is_up(store: SqliteStore,
                                                        outbox: StoreOutbox) -> None:
    await outbox.save_flag(flag("f1"))
    await outbox.add_event(event("e1"))
    await outbox.add_transcript_segment(segment("t1"))
    kept = await outbox.save_clip(clip("k1"))
    assert outbox.depth == 0
    assert await store.get_flag("f1") == flag("f1")
    assert [e.event_id for e in await store.list_events("s1")] == ["e1"]
    assert [s.segment_id for s in await store.list_transcript("s1")] == ["t1"]
    assert await store.get_clip("k1") == kept == clip("k1")


async def test_an_outage_queues_in_order_and_replays_each_record_once(
        store: SqliteStore, outbox: StoreOutbox) -> None:
    opened = flag("f1")
    await store.close()  # the store goes away
    await outbox.save_flag(opened)
    await outbox.add_event(event("e1"))
    await outbox.save_flag(replace(opened, severity=Severity.HIGH))  # it rises ...
    await outbox.add_transcript_segment(segment("t1"))
    await outbox.save_clip(clip("k1"))
    await outbox.save_flag(replace(opened, severity=Severity.HIGH, end=25.0))  # ... closes
    assert outbox.depth == 6
    assert outbox.describe()["last_error"] is not None

    await store.open()  # back; a write made now queues behind the earlier ones
    await outbox.add_event(event("e2"))
    assert outbox.depth == 7 and await store.list_events("s1") == []
    await outbox.flush()

    assert outbox.depth == 0 and outbox.replayed == 7
    assert await store.list_flags("s1") == [replace(opened, severity=Severity.HIGH, end=25.0)]
    assert [e.event_id for e in await store.list_events("s1")] == ["e1", "e2"]
    assert [s.segment_id for s in await store.list_transcript("s1")] == ["t1"]
    assert await store.get_clip("k1") == clip("k1")
    await outbox.save_flag(flag("f2"))  # empty again: straight to the store
    assert outbox.depth == 0 and await store.get_flag("f2") is not None


async def test_a_record_the_store_already_holds_is_not_written_twice(
        store: SqliteStore, outbox: StoreOutbox) -> None:
    # As after a write that timed out once it had committed, or a replay cut short
    # between writing a record and forgetting it.
    for write in (store.save_flag(flag("f1")), store.add_event(event("e1")),
                  store.add_transcript_segment(segment("t1")), store.save_clip(clip("k1"))):
        await write
    await store.close()
    await outbox.save_flag(flag("f1"))
    await outbox.add_event(event("e1"))
    await outbox.add_transcript_segment(segment("t1"))
    await outbox.save_clip(clip("k1"))
    await store.open()
    await outbox.flush()
    assert outbox.depth == 0 and outbox.failed == 0
    assert await store.list_flags("s1") == [flag("f1")]
    assert [e.event_id for e in await store.list_events("s1")] == ["e1"]
    assert [s.segment_id for s in await store.list_transcript("s1")] == ["t1"]
    assert await store.list_clips("s1") == [clip("k1")]


async def test_a_record_whose_session_was_erased_does_not_block_the_rest(
        store: SqliteStore, outbox: StoreOutbox) -> None:
    await store.create_session(session("gone"))
    await store.close()
    await outbox.save_flag(flag("f-gone", session_id="gone"))
    await outbox.add_event(event("e1"))
    await store.open()
    await store.delete_session("gone")  # erased while its flag waited
    await outbox.flush()
    assert outbox.depth == 0
    assert await store.get_flag("f-gone") is None
    assert [e.event_id for e in await store.list_events("s1")] == ["e1"]


async def test_the_background_task_replays_once_the_store_is_back(
        store: SqliteStore, outbox: StoreOutbox) -> None:
    outbox.start()
    await store.close()
    for n in range(20):
        await outbox.add_event(event(f"e{n:02}"))
    await asyncio.sleep(0.5)  # it tries, and keeps everything while the store is away
    assert outbox.depth == 20
    await store.open()
    await _until_empty(outbox)
    assert [e.event_id for e in await store.list_events("s1")] == [f"e{n:02}" for n in range(20)]


async def test_the_bound_refuses_nothing_and_says_it_is_full(store: SqliteStore,
                                                              tmp_path: Path) -> None:
    box = StoreOutbox(store, tmp_path / "small.db", max_records=3)
    await box.open()
    try:
        await store.close()
        for n in range(5):  # past the bound: still kept (flags are evidence)
            await box.save_flag(flag(f"f{n}", start=float(n)))
        assert box.depth == 5 and box.full
        assert box.describe() == {"depth": 5, "max_records": 3, "full": True, "failed": 0,
                                  "last_error": box.last_error}
        await store.open()
        await box.flush()
        assert not box.full
        assert sorted(f.flag_id for f in await store.list_flags("s1")) == [
            f"f{n}" for n in range(5)]
    finally:
        await box.close()


# A process that queues records while its store is away, then is killed (SIGKILL):
# nothing it was told is kept may be lost.
_WRITER = """
import asyncio, os, signal, sys
from dataclasses import replace
from proctor.flags.model import Severity
from proctor.store import SqliteStore
from proctor.store.outbox import StoreOutbox
from tests.store.factories import event, flag

async def main() -> None:
    box = StoreOutbox(SqliteStore(sys.argv[2]), sys.argv[1])  # never opened: away
    await box.open()
    for n in range(50):
        await box.add_event(event(f"e{n:02}"))
    await box.save_flag(flag("f1"))
    await box.save_flag(replace(flag("f1"), severity=Severity.HIGH, end=30.0))
    print(box.depth, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)

asyncio.run(main())
"""


def _killed_writer(outbox_path: Path, store_path: Path) -> str:
    result = subprocess.run([sys.executable, "-c", _WRITER, str(outbox_path), str(store_path)],
                            capture_output=True, text=True, timeout=60,
                            cwd=Path(__file__).resolve().parents[2], check=False)
    assert result.returncode == -signal.SIGKILL, result.stderr
    return result.stdout.strip()


async def test_what_a_killed_process_queued_is_replayed_by_the_next(
        store: SqliteStore, tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    printed = await asyncio.to_thread(_killed_writer, path, store.path)
    assert printed == "52"
    box = StoreOutbox(store, path)  # the next process
    await box.open()
    try:
        assert box.depth == 52
        await box.flush()
    finally:
        await box.close()
    assert [e.event_id for e in await store.list_events("s1")] == [f"e{n:02}" for n in range(50)]
    [stored] = await store.list_flags("s1")
    assert (stored.severity, stored.end) == (Severity.HIGH, 30.0)


# A real outage: a private PostgreSQL server stopped and started.

def _rows_on_disk(path: Path) -> int:
    with sqlite3.connect(path) as conn:  # another connection: sees only what committed
        return int(conn.execute("SELECT count(*) FROM outbox").fetchone()[0])


@pytest.fixture(scope="module")
def private_pg() -> Iterator[PrivatePostgres]:
    with PrivatePostgres() as pg:
        yield pg


async def test_a_stopped_postgresql_gets_every_record_once_it_is_back(
        private_pg: PrivatePostgres, tmp_path: Path) -> None:
    pg_store = PostgresStore(schema_url(new_schema(), private_pg.url), timeout=2)
    await pg_store.open()
    box = StoreOutbox(pg_store, tmp_path / "outbox.db", retry_seconds=0.2)
    await box.open()
    box.start()
    try:
        await pg_store.create_session(session("s1"))
        await box.save_flag(flag("f1"))
        await asyncio.to_thread(private_pg.stop)
        await box.save_flag(replace(flag("f1"), severity=Severity.HIGH))
        await box.add_event(event("e1"))
        await box.save_flag(replace(flag("f1"), severity=Severity.HIGH, end=40.0))
        assert box.depth == 3
        assert _rows_on_disk(box.path) == 3  # committed to the file, not only in memory
        await asyncio.to_thread(private_pg.start)
        await _until_empty(box)
        [stored] = await pg_store.list_flags("s1")
        assert (stored.severity, stored.end) == (Severity.HIGH, 40.0)
        assert [e.event_id for e in await pg_store.list_events("s1")] == ["e1"]
    finally:
        await box.close()
        await pg_store.close()


def test_payloads_are_plain_json(tmp_path: Path) -> None:
    # The file is meant to be read by people in an incident: one JSON object a record.
    async def write() -> None:
        box = StoreOutbox(SqliteStore(tmp_path / "never-opened.db"), tmp_path / "o.db")
        await box.open()
        await box.save_flag(flag("f1"))
        await box.close()

    asyncio.run(write())
    with sqlite3.connect(tmp_path / "o.db") as conn:
        [(kind, payload)] = conn.execute("SELECT kind, payload FROM outbox").fetchall()
    assert kind == "flag" and json.loads(payload)["flag_id"] == "f1"


async def test_a_full_outbox_refuses_new_sessions_until_it_drains(
        tmp_path: Path, aiohttp_client: Callable[..., Awaitable[TestClient]]) -> None:
    # retry_seconds 30: once the store is back, replay waits for flush() below.
    config = make_config(tmp_path, outbox={"max_records": 2, "retry_seconds": 30})
    client = await aiohttp_client(create_app(config))
    created = await (await client.post("/api/v1/sessions", json={"candidate_id": "c-full"},
                                       headers=bearer(API_KEY))).json()
    sid = created["session_id"]
    store, service = client.app[STORE_KEY], client.app[SESSIONS_KEY]
    await store.close()  # away while records are written: they fill the outbox
    for n in range(3):
        await service.outbox.add_event(event(f"e{n}", session_id=sid))
    await store.open()

    ready = await client.get("/readyz")
    body = await ready.json()
    assert ready.status == 503 and body["outbox"]["full"] and not body["accepting"]
    assert body["checks"]["outbox"].startswith("full: 3 records")
    offer = await client.post(f"/api/v1/sessions/{sid}/offer",
                              headers=bearer(created["candidate_token"]),
                              json={"sdp": await offer_sdp(), "type": "offer"})
    assert offer.status == 503
    assert (await offer.json())["error"]["code"] == "store_backlog"
    assert offer.headers["Retry-After"]

    await service.outbox.flush()  # the store takes them: room again
    assert (await client.get("/readyz")).status == 200
    assert [e.event_id for e in await store.list_events(sid)] == ["e0", "e1", "e2"]
    peer = await connect(client, f"/api/v1/sessions/{sid}/offer", created["candidate_token"],
                         "proctor")
    await peer.pc.close()


