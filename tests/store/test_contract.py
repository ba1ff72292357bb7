"""The Store contract, on SQLite and PostgreSQL alike (see conftest.py)."""

from __future__ import annotations

import asyncio
import os

import pytest

from proctor.flags.model import Evidence, Flag, FlagKind, Severity
from proctor.store import (
    ApiKeyRecord,
    ClipRecord,
    EventRecord,
    NodeStatus,
    SessionRecord,
    SessionStatus,
    Store,
    StoreIntegrityError,
    StoreUnavailable,
)
from proctor.store.migrations import LATEST_VERSION, MIGRATIONS
from tests.store.conftest import Backend
from tests.store.factories import clip, event, flag, node, segment, session

# -- schema ---------------------------------------------------------------------------


async def test_open_creates_schema_once(backend: Backend) -> None:
    first = backend.new_store()
    await first.open()
    assert await first.schema_version() == LATEST_VERSION
    await first.create_session(session())
    await first.close()

    recorded = await backend.rows("SELECT version, description FROM schema_migrations "
                                  "ORDER BY version")
    assert [tuple(r) for r in recorded] == [(m.version, m.description) for m in MIGRATIONS]

    second = backend.new_store()
    await second.open()
    assert await second.schema_version() == LATEST_VERSION
    assert await second.get_session("s1") == session()  # data survived the reopen
    await second.close()
    assert await backend.count_rows("schema_migrations") == len(MIGRATIONS)


async def test_database_newer_than_the_code_is_refused(backend: Backend) -> None:
    first = backend.new_store()
    await first.open()
    await first.close()
    async with backend.raw_connection() as conn:
        await conn.execute("INSERT INTO schema_migrations VALUES (999, 'future', 'now')")
    with pytest.raises(StoreUnavailable, match="999"):
        await backend.new_store().open()


async def test_two_stores_opening_at_once_migrate_once(backend: Backend) -> None:
    writer, reader = backend.new_store(), backend.new_store()
    await asyncio.gather(writer.open(), reader.open())
    try:
        await writer.create_session(session())
        assert await reader.get_session("s1") == session()
        assert await backend.count_rows("schema_migrations") == len(MIGRATIONS)
    finally:
        await writer.close()
        await reader.close()


async def test_foreign_keys_and_duplicate_ids_raise_integrity_errors(store: Store) -> None:
    with pytest.raises(StoreIntegrityError):
        await store.save_flag(flag("f1", session_id="no-such-session"))
    await store.create_session(session())
    with pytest.raises(StoreIntegrityError):
        await store.create_session(session())
    with pytest.raises(StoreIntegrityError):
        await store.save_clip_data("k1", "no-such-session", b"x")
    await store.ping()  # a caller's bug leaves the store working


# -- sessions -------------------------------------------------------------------------


async def test_session_round_trip_with_json_fields(store: Store) -> None:
    record = SessionRecord(
        session_id="s1", candidate_id="c1", exam_id="exam-7",
        policy={"rules": [{"kind": "gaze_away", "high": 30}], "strict": True},
        accommodations={"extra_time": 1.5, "notes": "ünïcode"},
        metadata={"browser": {"name": "chromium", "version": 120}},
        created_at="2024-01-01T00:00:00.000000Z", api_key_id="k1",
        owner_node="node-a", media_time=3600.125,
    )
    await store.create_session(record)
    loaded = await store.get_session("s1")
    assert loaded == record
    assert loaded is not None and loaded.status is SessionStatus.CREATED
    assert await store.get_session("missing") is None


async def test_update_session_status_times_and_report(store: Store) -> None:
    await store.create_session(session())
    await store.update_session("s1", status=SessionStatus.LIVE,
                               started_at="2024-01-01T00:01:00Z")
    live = await store.get_session("s1")
    assert live is not None
    assert (live.status, live.started_at, live.ended_at) == (
        SessionStatus.LIVE, "2024-01-01T00:01:00Z", None)

    report = {"risk": 42.5, "flags": [{"kind": "gaze_away", "count": 3}]}
    await store.update_session("s1", status="ended", ended_at="2024-01-01T01:00:00Z",
                               report=report)
    ended = await store.get_session("s1")
    assert ended is not None
    assert ended.status is SessionStatus.ENDED
    assert ended.ended_at == "2024-01-01T01:00:00Z"
    assert ended.report == report

    await store.update_session("s1", report=None)
    cleared = await store.get_session("s1")
    assert cleared is not None and cleared.report is None


async def test_update_session_owner_media_time_and_interrupted(store: Store) -> None:
    await store.create_session(session())
    await store.update_session("s1", owner_node="node-a", media_time=12.5,
                               status=SessionStatus.LIVE)
    await store.update_session("s1", media_time=90)  # an int is media seconds too
    owned = await store.get_session("s1")
    assert owned is not None
    assert (owned.owner_node, owned.media_time, owned.status) == (
        "node-a", 90.0, SessionStatus.LIVE)
    assert isinstance(owned.media_time, float)

    await store.update_session("s1", status=SessionStatus.INTERRUPTED,
                               ended_at="2024-01-01T02:00:00Z", owner_node=None)
    interrupted = await store.get_session("s1")
    assert interrupted is not None
    assert interrupted.status is SessionStatus.INTERRUPTED
    assert interrupted.owner_node is None and interrupted.media_time == 90.0
    listed = await store.list_sessions(status=SessionStatus.INTERRUPTED)
    assert [s.session_id for s in listed] == ["s1"]


async def test_update_session_rejects_other_fields_and_bad_values(store: Store) -> None:
    await store.create_session(session())
    with pytest.raises(ValueError, match="candidate_id"):
        await store.update_session("s1", candidate_id="someone-else")
    for bad in ({"status": "paused"}, {"report": ["not", "a", "dict"]},
                {"started_at": 12}, {"owner_node": 7}, {"media_time": "12.5"},
                {"media_time": True}):
        with pytest.raises(ValueError):
            await store.update_session("s1", **bad)
    assert await store.get_session("s1") == session()  # nothing changed


async def test_update_unknown_session_changes_nothing(store: Store) -> None:
    await store.update_session("missing", status=SessionStatus.LIVE)
    await store.update_session("missing")
    assert await store.list_sessions() == []


async def test_list_sessions_newest_first_with_filter_and_limit(store: Store) -> None:
    for i in range(4):
        await store.create_session(session(f"s{i}", created_at=f"2024-01-0{i + 1}T00:00:00Z"))
    await store.update_session("s1", status=SessionStatus.LIVE)
    await store.update_session("s3", status=SessionStatus.LIVE)

    assert [s.session_id for s in await store.list_sessions()] == ["s3", "s2", "s1", "s0"]
    assert [s.session_id for s in await store.list_sessions(limit=2)] == ["s3", "s2"]
    assert await store.list_sessions(limit=0) == []
    live = await store.list_sessions(status=SessionStatus.LIVE)
    assert [s.session_id for s in live] == ["s3", "s1"]
    assert await store.list_sessions(status=SessionStatus.ENDED) == []
    with pytest.raises(ValueError):
        await store.list_sessions(limit=-1)


async def test_list_candidate_sessions_newest_first(store: Store) -> None:
    for sid, cid, created in (("s1", "c1", "2024-01-01T00:00:00.000000Z"),
                              ("s2", "c2", "2024-01-02T00:00:00.000000Z"),
                              ("s3", "c1", "2024-01-03T00:00:00.000000Z")):
        await store.create_session(session(sid, cid, created))
    assert [s.session_id for s in await store.list_candidate_sessions("c1")] == ["s3", "s1"]
    assert await store.list_candidate_sessions("nobody") == []


async def test_list_owned_sessions_by_node_and_status(store: Store) -> None:
    for i, (owner, status) in enumerate([("a", SessionStatus.LIVE), ("a", SessionStatus.ENDED),
                                         ("b", SessionStatus.LIVE), (None, SessionStatus.LIVE),
                                         ("a", SessionStatus.LIVE)]):
        await store.create_session(session(f"s{i}", created_at=f"2024-01-0{i + 1}T00:00:00Z"))
        await store.update_session(f"s{i}", owner_node=owner, status=status)

    assert [s.session_id for s in await store.list_owned_sessions("a")] == ["s4", "s0"]
    everything = await store.list_owned_sessions("a", status=None)
    assert [s.session_id for s in everything] == ["s4", "s1", "s0"]
    ended = await store.list_owned_sessions("a", SessionStatus.ENDED)
    assert [s.session_id for s in ended] == ["s1"]
    assert [s.owner_node for s in await store.list_owned_sessions("b")] == ["b"]
    assert await store.list_owned_sessions("nobody") == []


# -- nodes ----------------------------------------------------------------------------


async def test_heartbeat_inserts_then_replaces_every_field(store: Store) -> None:
    await store.heartbeat_node(node("n2"))
    first = node("n1", heartbeat_at=1_000.5)
    await store.heartbeat_node(first)
    assert await store.list_nodes() == [first, node("n2")]  # by node_id

    later = node("n1", heartbeat_at=1_010.25)
    later.address, later.live_sessions, later.capacity = "http://10.0.0.9:8080", 7, 12
    later.started_at = "2024-01-02T00:00:00.000000Z"
    await store.heartbeat_node(later)
    nodes = await store.list_nodes()
    assert nodes == [later, node("n2")]
    assert nodes[0].status is NodeStatus.UP


async def test_set_node_status(store: Store) -> None:
    await store.heartbeat_node(node("n1"))
    await store.set_node_status("n1", NodeStatus.LEFT)
    [left] = await store.list_nodes()
    assert left.status is NodeStatus.LEFT
    await store.set_node_status("missing", NodeStatus.DEAD)  # changes nothing
    with pytest.raises(ValueError):
        await store.set_node_status("n1", "asleep")  # type: ignore[arg-type]
    assert [n.node_id for n in await store.list_nodes()] == ["n1"]


async def test_claim_stale_nodes_claims_each_up_node_once(store: Store) -> None:
    await store.heartbeat_node(node("fresh", heartbeat_at=2_000.0))
    await store.heartbeat_node(node("stale-b", heartbeat_at=900.0))
    await store.heartbeat_node(node("stale-a", heartbeat_at=1_000.0))
    await store.heartbeat_node(node("edge", heartbeat_at=1_500.0))
    await store.heartbeat_node(node("left", heartbeat_at=100.0, status=NodeStatus.LEFT))

    assert await store.claim_stale_nodes(1_500.0) == ["stale-a", "stale-b"]
    assert await store.claim_stale_nodes(1_500.0) == []  # already dead: nobody claims twice
    statuses = {n.node_id: n.status for n in await store.list_nodes()}
    assert statuses == {"edge": NodeStatus.UP, "fresh": NodeStatus.UP,
                        "left": NodeStatus.LEFT, "stale-a": NodeStatus.DEAD,
                        "stale-b": NodeStatus.DEAD}

    await store.heartbeat_node(node("stale-a", heartbeat_at=3_000.0))  # it came back
    assert await store.claim_stale_nodes(1_501.0) == ["edge"]


async def test_racing_survivors_claim_disjoint_sets(backend: Backend, store: Store) -> None:
    other = backend.new_store()
    await other.open()
    try:
        dead = [f"n{i:02d}" for i in range(40)]
        for node_id in dead:
            await store.heartbeat_node(node(node_id, heartbeat_at=10.0))
        # Several claims in flight from each store: on PostgreSQL they are concurrent
        # transactions on different connections.
        claims = await asyncio.gather(*(s.claim_stale_nodes(100.0)
                                        for _ in range(4) for s in (store, other)))
        claimed = [node_id for ids in claims for node_id in ids]
        assert sorted(claimed) == dead  # every dead node claimed, none twice
    finally:
        await other.close()


# -- flags ----------------------------------------------------------------------------


async def test_flag_upsert_keeps_one_row_with_final_values(store: Store,
                                                           backend: Backend) -> None:
    await store.create_session(session())
    opened = flag("f1")
    await store.save_flag(opened)
    stored = await store.get_flag("f1")
    assert stored == opened and stored.is_open

    opened.severity = Severity.MODERATE
    opened.confidence = 0.8
    opened.evidence.metrics = {"yaw": 41.5}
    await store.save_flag(opened)

    closed = Flag(session_id="s1", candidate_id="c1", kind=FlagKind.GAZE_AWAY,
                  severity=Severity.HIGH, start=10.0, end=42.25, confidence=0.93,
                  evidence=Evidence(clip_id="clip-1", metrics={"yaw": 55.0, "pitch": -3.5}),
                  source="gaze", flag_id="f1", created_at=opened.created_at)
    await store.save_flag(closed)

    assert await store.list_flags("s1") == [closed]
    assert await store.get_flag("f1") == closed
    assert await backend.count_rows("flags") == 1
    assert await store.get_flag("missing") is None


async def test_list_flags_by_start_then_created_at_for_one_session(store: Store) -> None:
    await store.create_session(session("s1"))
    await store.create_session(session("s2"))
    await store.save_flag(flag("late", start=30.0, created_at="2024-01-01T00:00:01Z"))
    await store.save_flag(flag("tie-b", start=5.0, created_at="2024-01-01T00:00:03Z"))
    await store.save_flag(flag("tie-a", start=5.0, created_at="2024-01-01T00:00:02Z"))
    await store.save_flag(flag("other", session_id="s2", start=1.0))

    assert [f.flag_id for f in await store.list_flags("s1")] == ["tie-a", "tie-b", "late"]
    assert [f.flag_id for f in await store.list_flags("s2")] == ["other"]


# -- clips, clip bytes, events, transcripts -------------------------------------------


async def test_clip_round_trip_and_order(store: Store) -> None:
    await store.create_session(session())
    later = clip("later", start=20.0)
    earlier = ClipRecord(clip_id="earlier", session_id="s1", flag_id="f1",
                         path="/clips/e.webm", start=2.5, end=9.75, size_bytes=5_000_000_000,
                         created_at="2024-01-01T00:00:09Z", content_type="video/webm")
    await store.save_clip(later)
    await store.save_clip(earlier)

    assert await store.get_clip("earlier") == earlier
    assert await store.get_clip("missing") is None
    assert await store.list_clips("s1") == [earlier, later]
    assert await store.list_clips("s2") == []


async def test_clip_data_round_trip_replace_and_delete(store: Store) -> None:
    await store.create_session(session())
    mp4 = os.urandom(3 * 1024 * 1024) + b"\x00" * 16  # a few MB, every byte value
    assert await store.get_clip_data("k1") is None
    await store.save_clip_data("k1", "s1", mp4)
    assert await store.get_clip_data("k1") == mp4

    await store.save_clip_data("k1", "s1", b"retried")  # saving again replaces
    assert await store.get_clip_data("k1") == b"retried"
    await store.save_clip_data("empty", "s1", b"")
    assert await store.get_clip_data("empty") == b""

    await store.delete_clip_data("k1")
    await store.delete_clip_data("k1")  # deleting what is gone is harmless
    assert await store.get_clip_data("k1") is None
    assert await store.get_clip_data("empty") == b""


async def test_event_round_trip_and_order(store: Store) -> None:
    await store.create_session(session())
    second = EventRecord(event_id="e2", session_id="s1", type="paste",
                         client_time=1_704_067_210.125, media_time=12.5,
                         received_at="2024-01-01T00:00:10Z", detail={"length": 120})
    first = event("e1", received_at="2024-01-01T00:00:05Z")
    await store.add_event(second)
    await store.add_event(first)

    assert await store.list_events("s1") == [first, second]
    assert await store.list_events("other") == []


async def test_transcript_round_trip_by_media_start(store: Store) -> None:
    await store.create_session(session())
    late = segment("g2", start=10.0, end=12.5, text="second")
    early = segment("g1", start=1.25, end=3.0, text="first, ünïcode")
    await store.add_transcript_segment(late)
    await store.add_transcript_segment(early)
    assert await store.list_transcript("s1") == [early, late]
    assert await store.list_transcript("other") == []


# -- API keys -------------------------------------------------------------------------


async def test_find_api_key_ignores_revoked_and_unknown(store: Store) -> None:
    active = ApiKeyRecord(key_id="k1", name="ci", key_hash="a" * 64, created_at="t1")
    revoked = ApiKeyRecord(key_id="k2", name="old", key_hash="b" * 64, created_at="t0",
                           revoked=True)
    await store.add_api_key(active)
    await store.add_api_key(revoked)

    assert await store.find_api_key("a" * 64) == active
    assert await store.find_api_key("b" * 64) is None
    assert await store.find_api_key("c" * 64) is None


async def test_find_api_key_prefers_the_unrevoked_of_a_shared_hash(store: Store) -> None:
    await store.add_api_key(ApiKeyRecord(key_id="k-old", name="old", key_hash="h",
                                         created_at="t0", revoked=True))
    await store.add_api_key(ApiKeyRecord(key_id="k-new", name="new", key_hash="h",
                                         created_at="t1"))
    found = await store.find_api_key("h")
    assert found is not None and found.key_id == "k-new" and not found.revoked


# -- deletion -------------------------------------------------------------------------


async def _session_with_children(store: Store, session_id: str, candidate_id: str) -> None:
    await store.create_session(session(session_id, candidate_id))
    await store.save_flag(flag(f"f-{session_id}", session_id=session_id))
    await store.save_clip(clip(f"clip-{session_id}", session_id=session_id))
    await store.save_clip_data(f"clip-{session_id}", session_id, b"mp4 of " + session_id.encode())
    await store.add_event(event(f"e-{session_id}", session_id=session_id))
    await store.add_transcript_segment(segment(f"t-{session_id}", session_id=session_id))


async def test_delete_session_cascades_and_returns_its_clips(store: Store,
                                                             backend: Backend) -> None:
    await _session_with_children(store, "s1", "c1")
    await _session_with_children(store, "s2", "c1")

    deleted = await store.delete_session("s1")

    assert deleted == [clip("clip-s1", session_id="s1")]
    assert await store.get_session("s1") is None
    assert await store.list_flags("s1") == []
    assert await store.list_clips("s1") == []
    assert await store.get_clip_data("clip-s1") is None
    assert await store.list_events("s1") == []
    assert await store.list_transcript("s1") == []
    for table in ("flags", "clips", "clip_data", "events", "transcripts"):
        assert await backend.count_rows(table) == 1  # only s2's rows are left
    assert await store.get_session("s2") is not None
    assert await store.get_clip_data("clip-s2") == b"mp4 of s2"
    assert await store.delete_session("s1") == []


async def test_delete_candidate_removes_all_their_sessions_only(store: Store) -> None:
    await _session_with_children(store, "a1", "alice")
    await _session_with_children(store, "a2", "alice")
    await _session_with_children(store, "b1", "bob")

    deleted = await store.delete_candidate("alice")

    assert sorted(c.clip_id for c in deleted) == ["clip-a1", "clip-a2"]
    assert all(c.path.endswith(".mp4") for c in deleted)
    assert [s.session_id for s in await store.list_sessions()] == ["b1"]
    assert await store.list_flags("a1") == [] and await store.list_events("a2") == []
    assert await store.get_clip_data("clip-a1") is None
    assert await store.get_clip_data("clip-a2") is None
    assert len(await store.list_clips("b1")) == 1
    assert await store.get_clip_data("clip-b1") == b"mp4 of b1"
    assert await store.delete_candidate("alice") == []


async def test_concurrent_transactions_do_not_interleave(store: Store) -> None:
    for i in range(10):
        await _session_with_children(store, f"s{i}", f"c{i}")
    deletes = [store.delete_candidate(f"c{i}") for i in range(10)]
    creates = [store.create_session(session(f"new{i}", "z")) for i in range(10)]
    deleted, _ = await asyncio.gather(asyncio.gather(*deletes), asyncio.gather(*creates))
    assert [len(clips) for clips in deleted] == [1] * 10
    assert len(await store.list_sessions()) == 10


# -- availability ---------------------------------------------------------------------


async def test_calls_before_open_and_after_close_raise_store_unavailable(
        backend: Backend) -> None:
    store = backend.new_store()
    with pytest.raises(StoreUnavailable, match="not open"):
        await store.get_session("s1")
    await store.open()
    await store.open()  # opening twice is harmless
    await store.ping()
    await store.close()
    await store.close()  # closing twice is harmless
    for call in (store.ping(), store.create_session(session()), store.list_flags("s1"),
                 store.list_nodes(), store.get_clip_data("k1")):
        with pytest.raises(StoreUnavailable, match="closed"):
            await call
