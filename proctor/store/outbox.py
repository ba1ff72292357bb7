"""A durable local outbox for the writes a live session must never lose.

Flags (and their updates), browser events, transcript segments and clip records are
evidence. When the store (PostgreSQL, usually) is away, such a write is appended to a
local SQLite file under the data directory instead (``synchronous = FULL``: each append
is fsynced before the caller goes on), and a background task replays the file, in
order, once the store answers again. So a live session keeps analysing through an
outage, and its flags still reach the candidate: "stored" means stored in the outbox.

Ordering: while anything waits in the outbox, every new write is appended behind it
(never written straight to the store), so a flag's later state never lands before an
earlier one. Writes of one flag are also serialised among themselves, since several of
the pipeline's tasks may update the same flag.

Idempotence: a replayed flag is an upsert by flag_id. Events, transcript segments and
clip records are inserts with their own ids; a replay that finds its row already there
(a write that timed out after it committed, or a replay cut short by a crash between
writing and forgetting the entry) counts as done. A row whose session is gone (erased
meanwhile) cannot land; it is logged and dropped.

The bound (``outbox.max_records``): nothing is ever dropped for want of room, because
every record is evidence. At the bound the outbox is *full*: the node stops admitting
new sessions (503 ``store_backlog``) and ``/readyz`` answers 503, until replay brings it
below the bound; sessions already live keep appending. Only a failing disk loses a
record, and that is logged as an error.

A record the store refuses for another reason (a bug) moves to the file's ``failed``
table, with the error, so it neither blocks the records behind it nor vanishes.

Other writers queue their own kinds too (:meth:`StoreOutbox.handle`): a webhook event
whose deliveries cannot be stored waits here as well, and is stored on replay with the
event id and time it was given when it happened.

A restart finds the file as it was left and replays it at start, before the node
finishes the sessions a crash left live (so their reports hold every flag).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite

from proctor.evidence.storage import ClipStorage
from proctor.flags.model import Evidence, Flag, FlagKind, Severity, utc_now_iso
from proctor.store.base import (
    ClipRecord,
    EventRecord,
    Store,
    StoreIntegrityError,
    StoreUnavailable,
    TranscriptSegment,
)
from proctor.tasks import BackgroundTasks

log = logging.getLogger("proctor.outbox")

DEFAULT_MAX_RECORDS = 50_000
DEFAULT_RETRY_SECONDS = 1.0
MAX_RETRY_SECONDS = 10.0  # the replay's back-off while the store stays away
REPLAY_BATCH = 200  # entries read from the file at a time

FLAG, EVENT, TRANSCRIPT, CLIP = "flag", "event", "transcript", "clip"
KINDS = (FLAG, EVENT, TRANSCRIPT, CLIP)

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
    "kind TEXT NOT NULL, session_id TEXT NOT NULL, payload TEXT NOT NULL, "
    "queued_at TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS failed (seq INTEGER PRIMARY KEY, kind TEXT NOT NULL, "
    "session_id TEXT NOT NULL, payload TEXT NOT NULL, queued_at TEXT NOT NULL, "
    "error TEXT NOT NULL, failed_at TEXT NOT NULL)",
)

Record = Flag | EventRecord | TranscriptSegment | ClipRecord
DepthHook = Callable[[int], None]
# Writes a queued entry of a kind registered by another part of the engine; raises
# StoreUnavailable while the store is away, and must be idempotent.
Handler = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class Entry:
    seq: int
    kind: str
    session_id: str
    payload: dict[str, Any]


class StoreOutbox:
    """The store's writes for live sessions, through a durable local outbox."""

    def __init__(self, store: Store, path: str | Path, *, clips: ClipStorage | None = None,
                 max_records: int = DEFAULT_MAX_RECORDS,
                 retry_seconds: float = DEFAULT_RETRY_SECONDS,
                 on_depth: DepthHook | None = None,
                 on_replayed: Callable[[int], None] | None = None) -> None:
        self.store = store
        self.path = Path(path)
        self._clips = clips  # clip bytes move into the store (clips: store) on replay too
        self.max_records = max_records
        self._retry_seconds = retry_seconds
        self._on_depth = on_depth or (lambda depth: None)
        self._on_replayed = on_replayed or (lambda count: None)
        self._db: aiosqlite.Connection | None = None
        self._file_lock = asyncio.Lock()  # one statement sequence on the file at a time
        self._drain_lock = asyncio.Lock()  # one replay at a time (the task, or flush())
        self._keys: dict[str, tuple[asyncio.Lock, list[int]]] = {}
        self._handlers: dict[str, Handler] = {}  # kinds other writers queue here
        self._wake = asyncio.Event()
        self._tasks = BackgroundTasks("outbox")
        self.depth = 0  # entries not yet in the store (counted before they are appended)
        self.failed = 0  # entries the store refused for good (kept in ``failed``)
        self.replayed = 0
        self.last_error: str | None = None  # why the store was last found away

    # Lifecycle ----------------------------------------------------------------------

    async def open(self) -> None:
        """Open (or create) the file and count what a previous run left in it."""
        if self._db is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(self.path, isolation_level=None)
        try:
            # FULL under WAL: every commit is fsynced, so an append survives a crash
            # of the process or the machine the moment it returns.
            await db.execute("PRAGMA journal_mode = WAL")
            await db.execute("PRAGMA synchronous = FULL")
            for statement in _SCHEMA:
                await db.execute(statement)
            self.depth = await _count(db, "outbox")
            self.failed = await _count(db, "failed")
        except BaseException:
            await db.close()
            raise
        self._db = db
        self._on_depth(self.depth)
        if self.depth:
            log.warning("outbox %s: %d record(s) from an earlier run wait for the store",
                        self.path, self.depth)
            self._wake.set()

    def start(self) -> None:
        """Start replaying in the background (named ``outbox-replay``, stopped by close)."""
        self._tasks.spawn(self._replay_loop(), "outbox-replay")

    async def close(self) -> None:
        """Stop replaying and close the file; what is still in it waits for next start."""
        await self._tasks.stop()
        if self._db is not None:
            db, self._db = self._db, None
            await db.close()
        if self.depth:
            log.warning("outbox %s: closed with %d record(s) not yet in the store; they "
                        "are replayed at the next start", self.path, self.depth)

    # State ---------------------------------------------------------------------------

    @property
    def full(self) -> bool:
        """At or over the bound: no new sessions until replay brings it below."""
        return self.depth >= self.max_records

    def describe(self) -> dict[str, Any]:
        """For /readyz: how much waits, the bound, and the store's last failure."""
        return {"depth": self.depth, "max_records": self.max_records, "full": self.full,
                "failed": self.failed, "last_error": self.last_error if self.depth else None}

    # Writes --------------------------------------------------------------------------

    async def save_flag(self, flag: Flag) -> None:
        async with self._hold(f"flag:{flag.flag_id}"):
            await self._write(FLAG, flag.session_id, flag)

    async def add_event(self, event: EventRecord) -> None:
        await self._write(EVENT, event.session_id, event)

    async def add_transcript_segment(self, segment: TranscriptSegment) -> None:
        await self._write(TRANSCRIPT, segment.session_id, segment)

    async def save_clip(self, clip: ClipRecord) -> ClipRecord:
        """Keep the clip (its bytes into the store, for ``clips: store``) and save its
        record; the record as kept, or as written while the store is away."""
        if self.depth == 0:
            try:
                return await self._save_clip(clip)
            except StoreUnavailable as exc:
                self._went_away(exc)
        await self._append(CLIP, clip.session_id, clip)
        return clip

    def handle(self, kind: str, apply: Handler) -> None:
        """Let another writer queue entries of ``kind`` (see :meth:`add`); ``apply``
        writes one. Register before :meth:`open`, so a restart can replay them."""
        if kind in KINDS or kind in self._handlers:
            raise ValueError(f"outbox kind {kind!r} is taken")
        self._handlers[kind] = apply

    async def add(self, kind: str, session_id: str, payload: dict[str, Any]) -> None:
        """Write a registered kind's entry: at once when nothing waits, else in turn."""
        apply = self._handlers[kind]
        if self.depth == 0:
            try:
                await apply(payload)
                return
            except StoreUnavailable as exc:
                self._went_away(exc)
        await self._append_payload(kind, session_id, payload)

    async def _write(self, kind: str, session_id: str, record: Record) -> None:
        if self.depth == 0:  # nothing waits: straight to the store
            try:
                await self._apply(kind, record)
                return
            except StoreUnavailable as exc:
                self._went_away(exc)
        await self._append(kind, session_id, record)

    def _went_away(self, exc: StoreUnavailable) -> None:
        if self.depth == 0:
            log.warning("store unavailable (%s): writes go to the outbox %s until it is back",
                        exc, self.path)
        self.last_error = str(exc)

    async def _append(self, kind: str, session_id: str, record: Record) -> None:
        await self._append_payload(kind, session_id, dataclasses.asdict(record))

    async def _append_payload(self, kind: str, session_id: str,
                              fields: dict[str, Any]) -> None:
        payload = json.dumps(fields, separators=(",", ":"))
        self.depth += 1  # at once: a write racing this one must queue behind it
        self._on_depth(self.depth)
        try:
            async with self._file_lock:
                await self._require_db().execute(
                    "INSERT INTO outbox (kind, session_id, payload, queued_at) "
                    "VALUES (?, ?, ?, ?)", (kind, session_id, payload, utc_now_iso()))
        except (sqlite3.Error, OSError, ValueError) as exc:
            self.depth -= 1
            self._on_depth(self.depth)
            log.error("outbox %s: could not keep a %s of session %s: %s", self.path, kind,
                      session_id, exc)
            raise StoreUnavailable(f"store and outbox both unavailable: {exc}") from exc
        if self.depth == self.max_records:
            log.error("outbox %s is full (%d records): new sessions are refused until the "
                      "store takes them", self.path, self.depth)
        self._wake.set()

    # Replay --------------------------------------------------------------------------

    async def flush(self) -> None:
        """Replay everything now; StoreUnavailable if the store is still away."""
        if self.depth == 0:
            return
        async with self._drain_lock:
            await self._drain()

    async def _replay_loop(self) -> None:
        delay = self._retry_seconds
        while True:
            await self._wake.wait()
            try:
                async with self._drain_lock:
                    await self._drain()
                delay = self._retry_seconds
            except StoreUnavailable as exc:
                self.last_error = str(exc)
                log.info("outbox: store still unavailable (%d waiting); retrying in %.1f s",
                         self.depth, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_RETRY_SECONDS)

    async def _drain(self) -> None:
        while True:
            entries = await self._read(REPLAY_BATCH)
            if not entries:
                self._wake.clear()
                return
            for entry in entries:
                await self._replay(entry)

    async def _replay(self, entry: Entry) -> None:
        key = f"flag:{entry.payload['flag_id']}" if entry.kind == FLAG else f"#{entry.seq}"
        async with self._hold(key):
            try:
                await self._apply_entry(entry)
            except StoreIntegrityError as exc:
                if not await self._landed(entry):
                    log.warning("outbox: %s of session %s cannot land (%s); its session "
                                "is gone, so it is dropped", entry.kind, entry.session_id, exc)
            except StoreUnavailable:
                raise
            except Exception as exc:  # a record this code cannot write: keep it aside
                log.exception("outbox: %s #%d of session %s failed; kept in %s (failed)",
                              entry.kind, entry.seq, entry.session_id, self.path)
                await self._set_aside(entry, exc)
                return
            await self._forget(entry)
        self.replayed += 1
        self._on_replayed(1)
        if self.depth == 0:
            log.info("outbox: replayed; the store holds every record again")

    async def _apply_entry(self, entry: Entry) -> None:
        if entry.kind in self._handlers:
            await self._handlers[entry.kind](entry.payload)
            return
        record = decode(entry.kind, entry.payload)
        if isinstance(record, ClipRecord):
            await self._save_clip(record)
        else:
            await self._apply(entry.kind, record)

    async def _apply(self, kind: str, record: Record) -> None:
        if isinstance(record, Flag):
            await self.store.save_flag(record)
        elif isinstance(record, EventRecord):
            await self.store.add_event(record)
        elif isinstance(record, TranscriptSegment):
            await self.store.add_transcript_segment(record)
        else:
            await self._save_clip(record)

    async def _save_clip(self, clip: ClipRecord) -> ClipRecord:
        kept = await self._clips.keep(clip) if self._clips is not None else clip
        await self.store.save_clip(kept)
        return kept

    async def _landed(self, entry: Entry) -> bool:
        """Whether an insert that broke a key finds its own row already there."""
        sid = entry.session_id
        if entry.kind in self._handlers:
            return False  # its handler deals with its own keys
        if entry.kind == FLAG:
            return await self.store.get_flag(entry.payload["flag_id"]) is not None
        if entry.kind == CLIP:
            return await self.store.get_clip(entry.payload["clip_id"]) is not None
        if entry.kind == EVENT:
            wanted = entry.payload["event_id"]
            return any(e.event_id == wanted for e in await self.store.list_events(sid))
        wanted = entry.payload["segment_id"]
        return any(s.segment_id == wanted for s in await self.store.list_transcript(sid))

    # The file ------------------------------------------------------------------------

    async def _read(self, limit: int) -> list[Entry]:
        async with self._file_lock:
            cursor = await self._require_db().execute(
                "SELECT seq, kind, session_id, payload FROM outbox ORDER BY seq LIMIT ?",
                (limit,))
            rows = list(await cursor.fetchall())
            await cursor.close()
        return [Entry(int(r[0]), str(r[1]), str(r[2]), json.loads(r[3])) for r in rows]

    async def _forget(self, entry: Entry) -> None:
        async with self._file_lock:
            await self._require_db().execute("DELETE FROM outbox WHERE seq = ?", (entry.seq,))
        self.depth -= 1
        self._on_depth(self.depth)

    async def _set_aside(self, entry: Entry, exc: Exception) -> None:
        async with self._file_lock:
            db = self._require_db()
            await db.execute("BEGIN IMMEDIATE")
            await db.execute(
                "INSERT INTO failed (seq, kind, session_id, payload, queued_at, error, "
                "failed_at) SELECT seq, kind, session_id, payload, queued_at, ?, ? "
                "FROM outbox WHERE seq = ?", (f"{type(exc).__name__}: {exc}"[:500],
                                              utc_now_iso(), entry.seq))
            await db.execute("DELETE FROM outbox WHERE seq = ?", (entry.seq,))
            await db.execute("COMMIT")
        self.failed += 1
        self.depth -= 1
        self._on_depth(self.depth)

    def _require_db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise ValueError(f"outbox {self.path} is not open")
        return self._db

    @asynccontextmanager
    async def _hold(self, key: str) -> AsyncIterator[None]:
        """One write of a given flag at a time (counted, so the lock goes when unused)."""
        lock, users = self._keys.setdefault(key, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if users[0] == 0:
                self._keys.pop(key, None)


def decode(kind: str, payload: dict[str, Any]) -> Record:
    """A record from its outbox payload (``dataclasses.asdict`` of it)."""
    if kind == FLAG:
        fields = dict(payload)
        evidence = fields.pop("evidence")
        return Flag(**{**fields, "kind": FlagKind(fields["kind"]),
                       "severity": Severity(fields["severity"])},
                    evidence=Evidence(clip_id=evidence["clip_id"],
                                      metrics=dict(evidence["metrics"])))
    if kind == EVENT:
        return EventRecord(**payload)
    if kind == TRANSCRIPT:
        return TranscriptSegment(**payload)
    if kind == CLIP:
        return ClipRecord(**payload)
    raise ValueError(f"unknown outbox record kind {kind!r}")


async def _count(db: aiosqlite.Connection, table: str) -> int:
    cursor = await db.execute(f"SELECT count(*) FROM {table}")
    row = await cursor.fetchone()
    await cursor.close()
    return int(row[0]) if row is not None else 0


__all__ = ["KINDS", "Entry", "StoreOutbox", "decode"]
