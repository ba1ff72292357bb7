"""The Redis event bus (``bus: redis://...``): alerts and control messages across nodes.

How it works
- ``publish`` delivers to this process's subscribers at once (the same Fanout as the
  memory bus) and queues the message for Redis; one writer task PUBLISHes the queue in
  pipelined batches. The payload is an envelope ``{"origin": <this bus>, "message": ...}``
  and the reader skips its own origin, so local subscribers get each message once.
- One reader task owns one pub/sub connection: it SUBSCRIBEs the union of the local
  subscriptions' topics, hands what arrives to their bounded queues, UNSUBSCRIBEs topics
  nobody here wants any more, PINGs an idle connection to notice a dead one, and after
  any loss reconnects with jittered exponential backoff and subscribes every topic again.
  It drives a bare ``redis.asyncio`` Connection rather than ``PubSub``, because PubSub
  reconnects and resubscribes on its own inside whichever call meets the error; here the
  reader alone decides when to reconnect, and knows when Redis confirmed a SUBSCRIBE.

During a Redis outage
- Local delivery goes on; ``publish`` never raises for it nor waits for the network.
- Messages for other nodes wait in a bounded outbox (``outbox_size``; overflow drops the
  oldest status tick, else the oldest message) and go out when Redis answers again.
  Status ticks are not kept while Redis is away: the next tick supersedes them.
- Delivery to other nodes is at-least-once for what the outbox kept (a batch that failed
  half-way is sent again), and a node misses what was published while its own reader
  was away: flags are in the store, and a watcher gets them from the snapshot when it
  connects again.
- A bus started while Redis is down starts (a warning), serves local subscribers and
  connects in the background; ``ping`` raises BusUnavailable until it is subscribed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections import deque
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from proctor.bus.base import BusUnavailable
from proctor.bus.memory import DEFAULT_QUEUE, Fanout, MemorySubscription
from proctor.bus.messages import decode_envelope, encode_envelope, validate

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 2.0  # seconds; a vanished Redis must never hang publish, ping or close
SOCKET_TIMEOUT = 2.0
PING_EVERY = 5.0  # an idle pub/sub connection is PINGed this often...
DEAD_AFTER = PING_EVERY + SOCKET_TIMEOUT  # ...and given up when silent this long
RETRY_FIRST = 0.1  # reconnect backoff: 0.1 s doubling up to RETRY_CAP, jittered
RETRY_CAP = 5.0
OUTBOX_SIZE = 1000
PUBLISH_BATCH = 200  # messages per pipelined round trip
CLOSE_TIMEOUT = 3.0
_REDIS_ERRORS = (RedisError, OSError)  # OSError covers the builtin TimeoutError too

Handler = Callable[[str, bytes], None]


def redact(url: str) -> str:
    """The URL without its credentials, for logs and errors."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=netloc).geturl()


def _client(url: str) -> Redis:
    # No retries inside redis-py: a failed call fails fast, and the reader and the writer
    # own reconnection (with backoff), so publish and ping never wait on it.
    client: Redis = Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT,
                                   socket_timeout=SOCKET_TIMEOUT, retry=Retry(NoBackoff(), 0))
    return client


class Backoff:
    """Exponential backoff with jitter (each delay scaled by 0.5-1), so that nodes which
    lost Redis together do not all return in the same instant."""

    def __init__(self, first: float = RETRY_FIRST, cap: float = RETRY_CAP) -> None:
        self._first, self._cap = first, cap
        self._failures = 0

    def next(self) -> float:
        delay = min(self._cap, self._first * 2.0 ** min(self._failures, 30))
        self._failures += 1
        return delay * random.uniform(0.5, 1.0)

    def reset(self) -> None:
        self._failures = 0


async def _nap(wake: asyncio.Event, seconds: float) -> None:
    """Sleep, or less when ``wake`` is set (someone saw Redis answer)."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(wake.wait(), seconds)
    wake.clear()


@dataclass(frozen=True)
class _Outgoing:
    channel: str
    payload: bytes
    status: bool  # a status tick: superseded by the next, so the first to go


class _Outbox:
    """Messages on their way to Redis; bounded, with the subscriptions' overflow rule."""

    def __init__(self, maxlen: int) -> None:
        self._items: deque[_Outgoing] = deque()
        self._maxlen = maxlen
        self.dropped = 0
        self.ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def maxlen(self) -> int:
        return self._maxlen

    def put(self, item: _Outgoing) -> None:
        self._items.append(item)
        self._trim()
        self.ready.set()

    def take(self, count: int) -> list[_Outgoing]:
        batch = [self._items.popleft() for _ in range(min(count, len(self._items)))]
        if not self._items:
            self.ready.clear()
        return batch

    def put_back(self, batch: list[_Outgoing]) -> None:
        """A batch Redis did not take goes first again, less its status ticks."""
        self._items.extendleft(reversed([item for item in batch if not item.status]))
        self._trim()
        if self._items:
            self.ready.set()

    def drop_status(self) -> None:
        self._items = deque(item for item in self._items if not item.status)

    def _trim(self) -> None:
        while len(self._items) > self._maxlen:
            self.dropped += 1
            index = next((i for i, item in enumerate(self._items) if item.status), 0)
            del self._items[index]


class _Link:
    """One pub/sub connection and what it asked Redis for.

    Commands leave in order through one queue, so an UNSUBSCRIBE and a later SUBSCRIBE
    of the same topic cannot swap. Each SUBSCRIBE of a topic gets a future; Redis
    confirms SUBSCRIBEs in order, and each confirmation resolves the oldest one."""

    def __init__(self, conn: AbstractConnection) -> None:
        self.conn = conn
        self.asked: set[str] = set()
        self._pending: dict[str, deque[asyncio.Future[None]]] = {}
        self._commands: deque[tuple[str, ...]] = deque()
        self._wake = asyncio.Event()

    def want(self, topics: Iterable[str]) -> list[asyncio.Future[None]]:
        """Subscribe what is not asked for yet; the confirmations still to come."""
        wanted = set(topics)
        new = sorted(wanted - self.asked)
        if new:
            self.asked.update(new)
            self._send("SUBSCRIBE", *new)
            loop = asyncio.get_running_loop()
            for topic in new:
                self._pending.setdefault(topic, deque()).append(loop.create_future())
        return [self._pending[topic][-1] for topic in wanted if topic in self._pending]

    def unwant(self, topics: Iterable[str]) -> None:
        gone = sorted(set(topics) & self.asked)
        if gone:
            self.asked.difference_update(gone)
            self._send("UNSUBSCRIBE", *gone)

    def release(self) -> None:
        """The connection is gone: nobody waits for confirmations that cannot come."""
        for waiting in self._pending.values():
            for future in waiting:
                if not future.done():
                    future.set_result(None)
        self._pending.clear()

    def _send(self, *command: str) -> None:
        self._commands.append(command)
        self._wake.set()

    def _confirmed(self, topic: str) -> None:
        waiting = self._pending.get(topic)
        if not waiting:
            return
        future = waiting.popleft()
        if not future.done():
            future.set_result(None)
        if not waiting:
            del self._pending[topic]

    async def send_forever(self) -> None:
        while True:
            if not self._commands:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), PING_EVERY)
                except TimeoutError:
                    self._commands.append(("PING",))
            while self._commands:
                await self.conn.send_command(*self._commands.popleft(), check_health=False)

    async def read_forever(self, on_message: Handler) -> None:
        """Read until the connection fails (raises); a connection silent for DEAD_AFTER
        despite the PINGs is dead even if no error says so (a vanished host)."""
        loop = asyncio.get_running_loop()
        heard = loop.time()
        while True:
            reply = await self.conn.read_response(timeout=PING_EVERY)
            if reply is None:
                if loop.time() - heard > DEAD_AFTER:
                    raise RedisConnectionError("Redis stopped answering PING")
                continue
            heard = loop.time()
            self._on_reply(reply, on_message)

    def _on_reply(self, reply: Any, on_message: Handler) -> None:
        # Pub/sub frames are [kind, channel, data]; a PING answers "PONG" or [pong, ""].
        if not isinstance(reply, list) or len(reply) != 3 or not isinstance(reply[1], bytes):
            return
        kind, channel = reply[0], reply[1].decode("utf-8", "replace")
        if kind == b"message":
            on_message(channel, reply[2])
        elif kind == b"subscribe":
            self._confirmed(channel)


class RedisBus:
    """The event bus across nodes. Every instance has its own origin id, so two buses in
    one process (tests; a node restarted under the same id) still hear each other."""

    def __init__(self, url: str, *, node_id: str | None = None,
                 queue_size: int = DEFAULT_QUEUE, outbox_size: int = OUTBOX_SIZE,
                 retry_first: float = RETRY_FIRST, retry_cap: float = RETRY_CAP) -> None:
        self.node_id = node_id or uuid.uuid4().hex[:12]
        self._origin = f"{self.node_id}/{uuid.uuid4().hex[:8]}"
        self._where = redact(url)
        # ping has a client of its own: a pool connects under a lock, so a ping would
        # otherwise queue behind the writer's attempt on a silent host (twice the wait).
        self._client, self._probe = _client(url), _client(url)
        self._fanout = Fanout(queue_size, on_unwatched=self._unwatched)
        self._outbox = _Outbox(outbox_size)
        self._retry = (retry_first, retry_cap)
        self._link: _Link | None = None
        self._settled = asyncio.Event()  # set while no connection attempt is under way
        self._reader_wake = asyncio.Event()
        self._writer_wake = asyncio.Event()
        self._drained = asyncio.Event()  # the outbox is empty and nothing is in flight
        self._drained.set()
        self._publishing = True  # False while the writer cannot reach Redis
        self._down_since: float | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self.rejected = 0  # malformed payloads from Redis, logged and dropped

    @property
    def connected(self) -> bool:
        """The reader is connected and has (re)subscribed every topic."""
        return self._link is not None

    @property
    def publishing(self) -> bool:
        """False from a failed PUBLISH until one succeeds again."""
        return self._publishing

    @property
    def outbox_dropped(self) -> int:
        """Messages for other nodes lost to a full outbox (status ticks that an outage
        made stale are not counted)."""
        return self._outbox.dropped

    # Lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        """Start the reader and the writer and wait for the first connection attempt;
        a Redis that is down does not stop the start (the reader logs and retries)."""
        if self._tasks or self._closed:
            return
        self._spawn(self._read_forever(), "bus-redis-reader")
        self._spawn(self._write_forever(), "bus-redis-writer")
        await self._wait_settled()

    async def close(self) -> None:
        """Send what is queued (a session's last "ended" matters), stop the tasks, end
        the subscriptions, close the connections; each step bounded by a timeout."""
        if self._closed:
            return
        self._closed = True
        await self._flush()
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=CLOSE_TIMEOUT)
        self._fanout.close_all()
        for client in (self._client, self._probe):
            try:
                await asyncio.wait_for(client.aclose(), CLOSE_TIMEOUT)
            except (*_REDIS_ERRORS, TimeoutError) as exc:
                log.debug("bus: closing a Redis client: %s", exc)

    async def ping(self) -> None:
        try:
            await asyncio.wait_for(self._probe.ping(), CONNECT_TIMEOUT + SOCKET_TIMEOUT)
        except (*_REDIS_ERRORS, TimeoutError) as exc:
            raise BusUnavailable(f"Redis at {self._where} does not answer: "
                                 f"{exc or type(exc).__name__}") from exc
        if self._link is None:
            self._reader_wake.set()  # Redis answers: reconnect now, not after the backoff
            raise BusUnavailable(f"Redis at {self._where} answers, but this node's "
                                 "subscriber is still reconnecting")

    # Publish and subscribe --------------------------------------------------------

    async def publish(self, topic: str, message: Mapping[str, Any]) -> None:
        wire = validate(message)
        payload = encode_envelope(self._origin, wire)  # before delivery: fail consistently
        self._fanout.deliver(topic, wire)
        status = wire["type"] == "status"
        if self._closed or (status and not self._publishing):
            return
        self._outbox.put(_Outgoing(topic, payload, status))
        self._drained.clear()

    async def subscribe(self, topics: Iterable[str]) -> MemorySubscription:
        """Registered locally at once; then, if Redis is reachable, returns once Redis
        confirmed the SUBSCRIBE, so nothing published afterwards on any node is missed."""
        sub = self._fanout.add(topics)
        try:
            await self._wait_settled()
            link = self._link
            if link is not None and not sub.closed:
                pending = link.want(sub.topics)
                if pending:
                    await asyncio.wait(pending, timeout=SOCKET_TIMEOUT)
        except BaseException:  # cancelled while waiting: nobody could ever close it
            sub.close()
            raise
        return sub

    def _unwatched(self, topics: list[str]) -> None:
        if self._link is not None:
            self._link.unwant(topics)

    async def _wait_settled(self) -> None:
        """Wait out a connection attempt under way, unless Redis is known to be away:
        then the next reconnection subscribes every topic anyway, and waiting on a
        silent host would only hold the caller for the socket timeouts."""
        if not self._tasks or self._down_since is not None:
            return  # not started, or Redis known to be away
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._settled.wait(), CONNECT_TIMEOUT + SOCKET_TIMEOUT)

    # The reader -------------------------------------------------------------------

    async def _read_forever(self) -> None:
        backoff = Backoff(*self._retry)
        while True:
            self._settled.clear()
            try:
                await self._read_connection(backoff)
            except _REDIS_ERRORS as exc:
                self._reader_lost(exc)
            except Exception:
                log.exception("bus: the Redis reader failed; reconnecting")
            finally:
                self._settled.set()
            await _nap(self._reader_wake, backoff.next())

    async def _read_connection(self, backoff: Backoff) -> None:
        """One connection's life: subscribe everything wanted, then read until it fails."""
        # A connection of the pool's kind (TCP, TLS, unix socket) and settings, owned
        # by the reader alone: outside the pool, whose lock would queue it behind others.
        pool = self._client.connection_pool
        conn = pool.connection_class(**pool.connection_kwargs)
        link: _Link | None = None
        try:
            await conn.connect_check_health()  # what connect() does, but with type hints
            link = self._link = _Link(conn)
            link.want(self._fanout.topics)
            self._settled.set()
            backoff.reset()
            self._reader_back(len(link.asked))
            await self._run_link(link)
        finally:
            if link is not None:
                self._link = None
                link.release()
            with contextlib.suppress(*_REDIS_ERRORS, TimeoutError):
                await conn.disconnect(nowait=True)

    async def _run_link(self, link: _Link) -> None:
        tasks = {asyncio.create_task(link.read_forever(self._dispatch), name="bus-redis-read"),
                 asyncio.create_task(link.send_forever(), name="bus-redis-send")}
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            task.result()  # the error that ended the connection
        raise RedisConnectionError("the pub/sub connection ended")

    def _dispatch(self, channel: str, data: bytes) -> None:
        try:
            origin, message = decode_envelope(data)
        except ValueError as exc:
            self.rejected += 1
            log.warning("bus: dropped a malformed message on %s: %.200s", channel, exc)
            return
        if origin != self._origin:  # our own went to local subscribers at publish
            self._fanout.deliver(channel, message)

    def _reader_lost(self, exc: BaseException) -> None:
        if self._down_since is None:
            self._down_since = asyncio.get_running_loop().time()
            log.warning("bus: Redis at %s unavailable (%s); local delivery goes on, "
                        "reconnecting in the background", self._where, exc)
        else:
            log.debug("bus: Redis at %s still unavailable: %s", self._where, exc)

    def _reader_back(self, topics: int) -> None:
        self._writer_wake.set()  # whatever waits in the outbox can go now
        if self._down_since is not None:
            away = asyncio.get_running_loop().time() - self._down_since
            self._down_since = None
            log.info("bus: Redis at %s back after %.1f s; topics subscribed again: %d",
                     self._where, away, topics)

    # The writer -------------------------------------------------------------------

    async def _write_forever(self) -> None:
        backoff = Backoff(*self._retry)
        while True:
            await self._outbox.ready.wait()
            batch = self._outbox.take(PUBLISH_BATCH)
            try:
                await self._publish_batch(batch)
            except _REDIS_ERRORS as exc:
                self._outbox.put_back(batch)
                self._writer_lost(exc)
                await _nap(self._writer_wake, backoff.next())
                continue
            except Exception:  # not Redis's fault: sending it again would fail again
                log.exception("bus: dropped %d messages that could not be published",
                              len(batch))
                continue
            backoff.reset()
            self._writer_back()

    async def _publish_batch(self, batch: list[_Outgoing]) -> None:
        async with self._client.pipeline(transaction=False) as pipe:
            for item in batch:
                pipe.publish(item.channel, item.payload)
            await pipe.execute()

    def _writer_lost(self, exc: BaseException) -> None:
        if self._publishing:
            self._publishing = False
            self._outbox.drop_status()
            log.warning("bus: cannot publish to Redis at %s (%s); keeping up to %d "
                        "messages for other nodes", self._where, exc, self._outbox.maxlen)

    def _writer_back(self) -> None:
        if not self._publishing:
            self._publishing = True
            log.info("bus: publishing to Redis at %s again", self._where)
        if not self._outbox:
            self._drained.set()

    async def _flush(self) -> None:
        if not self._publishing or not self._tasks:
            return  # Redis is away: waiting would only delay the shutdown
        try:
            await asyncio.wait_for(self._drained.wait(), CLOSE_TIMEOUT)
        except TimeoutError:
            log.warning("bus: closing with %d messages not sent to Redis", len(self._outbox))

    # Tasks ------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("bus: task %s died", task.get_name(), exc_info=task.exception())
