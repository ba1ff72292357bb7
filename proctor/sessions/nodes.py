"""Nodes of one deployment: who is up, what each holds, and who died.

Every node writes a heartbeat row (``nodes`` table) every ``nodes.heartbeat_seconds``
with its live sessions and capacity, and stores each of its live sessions' media time,
so that whoever finishes a session for a dead node knows where its media stopped. Each
beat it also claims nodes silent for ``nodes.dead_after_seconds``: the claim is atomic
in the store, so exactly one survivor finishes each dead node's sessions.

A node judges others only once it has itself beaten without a break for a whole
``nodes.dead_after_seconds``: after a store outage every node's last beat is old, and
the living need that long to show they are alive again. Without the wait, the first
node back would take every other node for dead and interrupt their sessions.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

from proctor.config import Config
from proctor.flags.model import utc_now_iso
from proctor.store.base import NodeRecord, NodeStatus, Store, StoreUnavailable

log = logging.getLogger("proctor.nodes")


def node_identity(config: Config) -> tuple[str, str]:
    """This node's id and address, from ``nodes.*`` or derived from the server's."""
    node_id = config.nodes.id or f"{socket.gethostname()}:{config.server.port}"
    address = config.nodes.address or f"http://{config.server.host}:{config.server.port}"
    return node_id, address


def is_alive(node: NodeRecord, config: Config, now: float | None = None) -> bool:
    now = time.time() if now is None else now
    return (node.status == NodeStatus.UP
            and now - node.heartbeat_at < config.nodes.dead_after_seconds)


def describe_node(node: NodeRecord, config: Config, own_id: str) -> dict[str, Any]:
    """``GET /nodes``'s shape for one node."""
    return {"node_id": node.node_id, "address": node.address, "status": str(node.status),
            "alive": is_alive(node, config), "this_node": node.node_id == own_id,
            "started_at": node.started_at,
            "heartbeat_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(node.heartbeat_at)),
            "heartbeat_age_seconds": round(max(0.0, time.time() - node.heartbeat_at), 1),
            "live_sessions": node.live_sessions, "capacity": node.capacity}


class NodeRegistry:
    def __init__(self, config: Config, store: Store, node_id: str, address: str, *,
                 live_media_times: Callable[[], dict[str, float]],
                 capacity: Callable[[], int],
                 finish_dead_node: Callable[[str], Awaitable[None]],
                 clock: Callable[[], float] = time.time) -> None:
        self._config = config
        self._clock = clock
        self._beating_since: float | None = None  # first beat since start or a failure
        self._store = store
        self.node_id = node_id
        self.address = address
        self._live_media_times = live_media_times
        self._capacity = capacity
        self._finish_dead_node = finish_dead_node
        self._started_at = utc_now_iso()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.beat()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="node-heartbeat")

    async def close(self) -> None:
        """Stop beating and say so: a node that left is not mistaken for a dead one."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        try:
            await self._store.set_node_status(self.node_id, NodeStatus.LEFT)
        except StoreUnavailable as exc:
            log.warning("node %s: could not record leaving: %s", self.node_id, exc)

    async def every(self) -> list[NodeRecord]:
        return await self._store.list_nodes()

    async def alive(self) -> list[NodeRecord]:
        now = time.time()
        return [n for n in await self._store.list_nodes() if is_alive(n, self._config, now)]

    async def beat(self) -> None:
        media_times = self._live_media_times()
        now = self._clock()
        try:
            await self._store.heartbeat_node(NodeRecord(
                node_id=self.node_id, address=self.address, started_at=self._started_at,
                heartbeat_at=now, live_sessions=len(media_times),
                capacity=self._capacity(), status=NodeStatus.UP))
        except StoreUnavailable:
            self._beating_since = None
            raise
        if self._beating_since is None:
            self._beating_since = now
        for session_id, media_time in media_times.items():
            await self._store.update_session(session_id, media_time=media_time)

    async def sweep(self) -> list[str]:
        """Claim the nodes that stopped beating and finish their sessions (none until
        this node has beaten for a whole ``dead_after_seconds`` itself)."""
        now, window = self._clock(), self._config.nodes.dead_after_seconds
        if self._beating_since is None or now - self._beating_since < window:
            return []
        stale_before = now - window
        dead = [n for n in await self._store.claim_stale_nodes(stale_before)
                if n != self.node_id]
        for node_id in dead:
            log.warning("node %s stopped beating; finishing its live sessions", node_id)
            await self._finish_dead_node(node_id)
        return dead

    async def _run(self) -> None:
        interval = self._config.nodes.heartbeat_seconds
        while True:
            await asyncio.sleep(interval)
            try:
                await self.beat()
                await self.sweep()
            except StoreUnavailable as exc:
                log.warning("node %s: heartbeat failed: %s", self.node_id, exc)
            except Exception:
                log.exception("node %s: heartbeat failed", self.node_id)
