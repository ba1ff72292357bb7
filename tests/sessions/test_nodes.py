"""Who is taken for dead: the node registry on a real SQLite store, with its clock
injected (heartbeats are wall-clock times, so the test moves the clock, not the sleep)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from proctor.config import Config
from proctor.sessions.nodes import NodeRegistry
from proctor.store.base import NodeRecord, NodeStatus, StoreUnavailable
from proctor.store.sqlite import SqliteStore
from tests.conftest import make_config

DEAD_AFTER = 15.0
START = 1_800_000_000.0  # any wall-clock moment


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "p.db")
    await s.open()
    yield s
    await s.close()


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return make_config(tmp_path, nodes={"dead_after_seconds": DEAD_AFTER,
                                        "heartbeat_seconds": 5.0})


def registry(config: Config, store: SqliteStore, clock: Clock,
             finished: list[str]) -> NodeRegistry:
    async def finish(node_id: str) -> None:
        finished.append(node_id)
    return NodeRegistry(config, store, "me", "http://127.0.0.1:1", clock=clock,
                        live_media_times=dict, capacity=lambda: 4, finish_dead_node=finish)


async def other_beat(store: SqliteStore, at: float) -> None:
    await store.heartbeat_node(NodeRecord(node_id="other", address="http://127.0.0.1:2",
                                          started_at="2027-01-15T00:00:00Z",
                                          heartbeat_at=at, live_sessions=1, capacity=4,
                                          status=NodeStatus.UP))


async def test_a_node_silent_for_dead_after_is_claimed(config: Config,
                                                       store: SqliteStore) -> None:
    clock, finished = Clock(), []
    nodes = registry(config, store, clock, finished)
    await other_beat(store, START)
    await nodes.beat()
    clock.now = START + DEAD_AFTER - 1  # other: silent just under the window
    await nodes.beat()
    assert await nodes.sweep() == [] and finished == []
    clock.now = START + DEAD_AFTER + 1  # ... and just over it
    await nodes.beat()
    assert await nodes.sweep() == ["other"] and finished == ["other"]


async def test_after_a_store_outage_nobody_is_taken_for_dead_at_once(
        config: Config, store: SqliteStore) -> None:
    """Both nodes' last beats are old when the store comes back; the other node beats
    again within its interval, so it must not be finished in the meantime."""
    clock, finished = Clock(), []
    nodes = registry(config, store, clock, finished)
    await other_beat(store, START)
    await nodes.beat()
    await store.close()  # the store goes away for 60 s
    clock.now = START + 5
    with pytest.raises(StoreUnavailable):
        await nodes.beat()
    await store.open()
    clock.now = START + 60  # back: this node beats first; "other" is 60 s stale
    await nodes.beat()
    assert await nodes.sweep() == [] and finished == []
    clock.now = START + 63
    await other_beat(store, clock.now)  # the other node is alive after all
    clock.now = START + 60 + DEAD_AFTER + 1
    await nodes.beat()
    assert await nodes.sweep() == [] and finished == []
    [other] = [n for n in await store.list_nodes() if n.node_id == "other"]
    assert other.status == NodeStatus.UP


async def test_a_node_dead_through_the_outage_is_claimed_a_window_later(
        config: Config, store: SqliteStore) -> None:
    clock, finished = Clock(), []
    nodes = registry(config, store, clock, finished)
    await other_beat(store, START)
    await store.close()
    clock.now = START + 5
    with pytest.raises(StoreUnavailable):
        await nodes.beat()
    await store.open()
    clock.now = START + 60
    await nodes.beat()
    assert await nodes.sweep() == []
    clock.now = START + 60 + DEAD_AFTER
    await nodes.beat()
    assert await nodes.sweep() == ["other"] and finished == ["other"]
