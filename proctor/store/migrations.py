"""Versioned schema migrations, and the one runner both stores use.

Each migration is ``(version, description, sql)``. The SQL sticks to types and syntax
that SQLite and PostgreSQL both accept, so both stores run the same list:

* ``TEXT``, ``INTEGER``, ``BIGINT`` and ``DOUBLE PRECISION`` only. ``DOUBLE PRECISION`` rather than
  ``REAL`` because PostgreSQL's ``REAL`` is a 4-byte float, which would round media
  seconds after a few hours of session; SQLite gives the name REAL affinity anyway.
* The one dialect difference is the binary type: write ``{BLOB}`` and the runner puts
  the connection's type there (``BLOB`` on SQLite, ``BYTEA`` on PostgreSQL). Nothing
  else is substituted; no other braces may appear.
* No ``AUTOINCREMENT``; every key is an application-made id.
* JSON lives in ``TEXT`` columns; booleans are ``INTEGER`` 0/1.
* ``end`` is a reserved word in both dialects, so media times are ``media_start`` and
  ``media_end``.
* Statements are separated by ``;`` and split on it, so the SQL must not contain a
  semicolon anywhere else (in a literal or a comment), nor a ``?`` (the PostgreSQL
  connection turns ``?`` placeholders into ``$n``).

Migrations are append-only: never edit one that has shipped, add a new version.

Concurrency: every migration runs in its own transaction under the connection's
exclusive lock (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: ``pg_advisory_xact_lock``), and
re-reads the applied versions under it, so two nodes starting at once apply each
migration once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

from proctor.flags.model import utc_now_iso
from proctor.store.base import StoreUnavailable

if TYPE_CHECKING:  # sql.py imports this module at run time
    from proctor.store.sql_base import SqlConnection

BLOB = "{BLOB}"


class Migration(NamedTuple):
    version: int
    description: str
    sql: str


_V1_SQL = """
CREATE TABLE api_keys (
    key_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    key_hash TEXT NOT NULL,
    created_at TEXT NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX api_keys_key_hash_idx ON api_keys (key_hash);

CREATE TABLE sessions (
    session_id TEXT PRIMARY KEY,
    candidate_id TEXT NOT NULL,
    exam_id TEXT,
    status TEXT NOT NULL,
    policy TEXT NOT NULL,
    accommodations TEXT NOT NULL,
    metadata TEXT NOT NULL,
    created_at TEXT NOT NULL,
    started_at TEXT,
    ended_at TEXT,
    report TEXT,
    api_key_id TEXT
);
CREATE INDEX sessions_candidate_id_idx ON sessions (candidate_id);
CREATE INDEX sessions_created_at_idx ON sessions (created_at);

CREATE TABLE flags (
    flag_id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions (session_id) ON DELETE CASCADE,
    candidate_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    severity TEXT NOT NULL,
    media_start DOUBLE PRECISION NOT NULL,
    media_end DOUBLE PRECISION,
    confidence DOUBLE PRECISION NOT NULL,
    clip_id TEXT,
    metrics TEXT NOT NULL,
    source TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX flags_session_id_idx ON flags (session_id);

CREATE TABLE clips (
    clip_id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions (session_id) ON DELETE CASCADE,
    flag_id TEXT,
    path TEXT NOT NULL,
    media_start DOUBLE PRECISION NOT NULL,
    media_end DOUBLE PRECISION NOT NULL,
    size_bytes BIGINT NOT NULL,
    content_type TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX clips_session_id_idx ON clips (session_id);

CREATE TABLE events (
    event_id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions (session_id) ON DELETE CASCADE,
    type TEXT NOT NULL,
    client_time DOUBLE PRECISION,
    media_time DOUBLE PRECISION,
    received_at TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX events_session_id_idx ON events (session_id)
"""
# No foreign keys on sessions.api_key_id, flags.clip_id or clips.flag_id: keys may come
# from the config rather than the table, and a flag names its clip before the clip
# writer has finished (and saved) it.

_V2_SQL = """
CREATE TABLE enrollments (
    candidate_id TEXT PRIMARY KEY,
    ciphertext TEXT NOT NULL,
    nonce TEXT NOT NULL,
    model TEXT NOT NULL,
    quality TEXT NOT NULL,
    created_at TEXT NOT NULL
)
"""
# ciphertext and nonce are base64 TEXT: BLOB and BYTEA differ between the two dialects.
# No foreign key to sessions: a candidate enrolls before (and apart from) any session.

_V3_SQL = """
CREATE TABLE transcripts (
    segment_id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions (session_id) ON DELETE CASCADE,
    media_start DOUBLE PRECISION NOT NULL,
    media_end DOUBLE PRECISION NOT NULL,
    text TEXT NOT NULL,
    confidence DOUBLE PRECISION NOT NULL,
    language TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX transcripts_session_start_idx ON transcripts (session_id, media_start)
"""
# The index serves the one read (a session's segments in media order) without a sort.

_V4_SQL = """
ALTER TABLE sessions ADD COLUMN owner_node TEXT;
ALTER TABLE sessions ADD COLUMN media_time DOUBLE PRECISION;
CREATE INDEX sessions_owner_status_idx ON sessions (owner_node, status);

CREATE TABLE nodes (
    node_id TEXT PRIMARY KEY,
    address TEXT NOT NULL,
    started_at TEXT NOT NULL,
    heartbeat_at DOUBLE PRECISION NOT NULL,
    live_sessions INTEGER NOT NULL,
    capacity INTEGER NOT NULL,
    status TEXT NOT NULL
);

CREATE TABLE clip_data (
    clip_id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions (session_id) ON DELETE CASCADE,
    data {BLOB} NOT NULL
);
CREATE INDEX clip_data_session_id_idx ON clip_data (session_id)
"""
# sessions (owner_node, status): recovery reads a dead node's live sessions.
# nodes has no index beyond its key: one row per node, read whole.
# clip_data keys on clip_id but references sessions, not clips: the clip writer saves
# the bytes before the clip row, and the cascade must follow session deletion. Its
# session index makes that cascade a lookup rather than a scan.

_V5_SQL = """
CREATE TABLE flag_reviews (
    review_id TEXT PRIMARY KEY,
    flag_id TEXT NOT NULL,
    session_id TEXT NOT NULL REFERENCES sessions (session_id) ON DELETE CASCADE,
    verdict TEXT NOT NULL,
    note TEXT NOT NULL,
    actor TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX flag_reviews_session_idx ON flag_reviews (session_id, created_at);

CREATE TABLE decisions (
    decision_id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions (session_id) ON DELETE CASCADE,
    decision TEXT NOT NULL,
    note TEXT NOT NULL,
    actor TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX decisions_session_idx ON decisions (session_id, created_at);

CREATE TABLE breaks (
    break_id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions (session_id) ON DELETE CASCADE,
    media_start DOUBLE PRECISION NOT NULL,
    media_end DOUBLE PRECISION,
    reason TEXT NOT NULL,
    actor TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX breaks_session_idx ON breaks (session_id, media_start);

CREATE TABLE audit (
    entry_id TEXT PRIMARY KEY,
    session_id TEXT,
    candidate_id TEXT,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    details TEXT NOT NULL
);
CREATE INDEX audit_session_idx ON audit (session_id, at)
"""
# Reviews and decisions are rows, never updates: the latest counts, every one is kept.
# audit has no foreign key: an erasure deletes the session and leaves its entry (with
# ids only, no personal data); candidate_id lets an erasure of a candidate find theirs.

_V6_SQL = """
CREATE TABLE webhooks (
    webhook_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    url TEXT NOT NULL,
    events TEXT NOT NULL,
    secret TEXT NOT NULL,
    created_at TEXT NOT NULL,
    active INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX webhooks_owner_idx ON webhooks (owner);

CREATE TABLE webhook_deliveries (
    delivery_id TEXT PRIMARY KEY,
    webhook_id TEXT NOT NULL REFERENCES webhooks (webhook_id) ON DELETE CASCADE,
    event_id TEXT NOT NULL,
    type TEXT NOT NULL,
    session_id TEXT,
    body TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    next_attempt_at DOUBLE PRECISION NOT NULL,
    lease_until DOUBLE PRECISION,
    last_status_code INTEGER,
    last_error TEXT,
    created_at TEXT NOT NULL,
    delivered_at TEXT
);
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (status, next_attempt_at);
CREATE INDEX webhook_deliveries_webhook_idx ON webhook_deliveries (webhook_id, created_at);

CREATE TABLE webhook_attempts (
    attempt_id TEXT PRIMARY KEY,
    delivery_id TEXT NOT NULL REFERENCES webhook_deliveries (delivery_id) ON DELETE CASCADE,
    at TEXT NOT NULL,
    status_code INTEGER,
    error TEXT,
    duration_ms DOUBLE PRECISION NOT NULL
);
CREATE INDEX webhook_attempts_delivery_idx ON webhook_attempts (delivery_id, at)
"""
# A delivery is stored before it is attempted; a node claims due ones by setting
# lease_until (atomically), so each is attempted by one node at a time. owner is the API
# key id that made the webhook; it receives the events of the sessions that key made.

_V7_SQL = """
ALTER TABLE api_keys ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';
ALTER TABLE sessions ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';
CREATE INDEX sessions_tenant_created_idx ON sessions (tenant, created_at);
CREATE INDEX sessions_tenant_candidate_idx ON sessions (tenant, candidate_id);

CREATE TABLE tenant_enrollments (
    tenant TEXT NOT NULL,
    candidate_id TEXT NOT NULL,
    ciphertext TEXT NOT NULL,
    nonce TEXT NOT NULL,
    model TEXT NOT NULL,
    quality TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (tenant, candidate_id)
);
INSERT INTO tenant_enrollments (tenant, candidate_id, ciphertext, nonce, model, quality,
                                created_at)
    SELECT 'default', candidate_id, ciphertext, nonce, model, quality, created_at
    FROM enrollments;
DROP TABLE enrollments;
ALTER TABLE tenant_enrollments RENAME TO enrollments;

UPDATE webhooks SET owner = 'default'
"""
# Tenants: every key, session, enrollment and webhook belongs to one; rows made before
# this migration belong to "default" (as do config keys). Candidate ids are per tenant,
# so enrollments key on (tenant, candidate_id): SQLite cannot alter a primary key, hence
# the new table, the copy and the rename. webhooks.owner held the making key's id; it
# now holds the tenant (every key before this migration was of "default").

_V8_SQL = """
CREATE TABLE kb_documents (
    doc_id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    kind TEXT NOT NULL,
    role TEXT,
    level TEXT,
    topic TEXT,
    title TEXT NOT NULL,
    text TEXT NOT NULL,
    model TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX kb_documents_tenant_idx ON kb_documents (tenant, created_at);

CREATE TABLE kb_chunks (
    chunk_id TEXT PRIMARY KEY,
    doc_id TEXT NOT NULL REFERENCES kb_documents (doc_id) ON DELETE CASCADE,
    tenant TEXT NOT NULL,
    seq INTEGER NOT NULL,
    text TEXT NOT NULL,
    vector {BLOB} NOT NULL
);
CREATE INDEX kb_chunks_tenant_idx ON kb_chunks (tenant, doc_id, seq);

CREATE TABLE interview_questions (
    session_id TEXT NOT NULL REFERENCES sessions (session_id) ON DELETE CASCADE,
    question_id TEXT NOT NULL,
    text TEXT NOT NULL,
    asked_at DOUBLE PRECISION NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (session_id, question_id)
);
CREATE INDEX interview_questions_order_idx ON interview_questions (session_id, asked_at);

CREATE TABLE answer_scores (
    session_id TEXT NOT NULL REFERENCES sessions (session_id) ON DELETE CASCADE,
    question_id TEXT NOT NULL,
    score DOUBLE PRECISION NOT NULL,
    scorer TEXT NOT NULL,
    result TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (session_id, question_id)
)
"""
# The knowledge base is per tenant (every read filters on it); a chunk repeats its
# document's tenant so a search reads one table by one index. vector is the chunk's
# sentence embedding (float32, little-endian) of the model named on its document: BM25
# and the vector search run in process, so no extension (pgvector) is needed.
# Questions and answer scores belong to a session and go with it (erasure, retention);
# scoring replaces a session's answer_scores whole, so rescoring is idempotent.

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "api keys, sessions, flags, clips, events", _V1_SQL),
    Migration(2, "enrollments (sealed face embeddings)", _V2_SQL),
    Migration(3, "transcripts (timed speech-to-text segments)", _V3_SQL),
    Migration(4, "many nodes: session owners, node heartbeats, clip bytes", _V4_SQL),
    Migration(5, "reviews, decisions, breaks, audit", _V5_SQL),
    Migration(6, "webhooks, their deliveries and attempts", _V6_SQL),
    Migration(7, "tenants: keys, sessions, enrollments and webhooks", _V7_SQL),
    Migration(8, "interviews: knowledge base, questions, answer scores", _V8_SQL),
)
LATEST_VERSION = MIGRATIONS[-1].version

_BOOTSTRAP_SQL = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    description TEXT NOT NULL,
    applied_at TEXT NOT NULL
)
"""


def split_statements(sql: str) -> list[str]:
    """The statements of a migration, for drivers that run one statement per call."""
    return [stmt.strip() for stmt in sql.split(";") if stmt.strip()]


def render(sql: str, blob_type: str) -> str:
    """The migration's SQL for one dialect: ``{BLOB}`` becomes its binary type."""
    return sql.replace(BLOB, blob_type)


async def applied_versions(conn: SqlConnection) -> set[int]:
    rows = await conn.fetch_all("SELECT version FROM schema_migrations")
    return {int(row["version"]) for row in rows}


async def current_version(conn: SqlConnection) -> int:
    """The highest applied version, 0 for an empty database."""
    return max(await applied_versions(conn), default=0)


async def migrate(
    conn: SqlConnection, migrations: Sequence[Migration] = MIGRATIONS
) -> list[int]:
    """Apply pending migrations in order, one locked transaction each; return their
    versions (empty when another node applied them first)."""
    _check_order(migrations)
    async with conn.transaction(lock=True):
        # Under the lock too: two PostgreSQL sessions running CREATE TABLE IF NOT EXISTS
        # at once can both try to create it, and one fails.
        await conn.execute(_BOOTSTRAP_SQL)
    done = await applied_versions(conn)
    newest_known = migrations[-1].version if migrations else 0
    if done and max(done) > newest_known:
        # Running old code on a newer schema could corrupt data it does not understand.
        raise StoreUnavailable(
            f"database schema version {max(done)} is newer than this server's "
            f"{newest_known}; upgrade the server"
        )
    applied: list[int] = []
    for migration in migrations:
        if migration.version not in done and await _apply(conn, migration):
            applied.append(migration.version)
    return applied


def _check_order(migrations: Sequence[Migration]) -> None:
    versions = [m.version for m in migrations]
    if versions != sorted(set(versions)) or (versions and versions[0] < 1):
        raise ValueError(f"migration versions must be positive and increasing: {versions}")


async def _apply(conn: SqlConnection, migration: Migration) -> bool:
    """Apply one migration atomically; False when another process got there first."""
    # The transaction (and so the lock) covers the check, so a second node waits here,
    # then finds the version applied and skips it.
    async with conn.transaction(lock=True):
        if migration.version in await applied_versions(conn):
            return False
        for statement in split_statements(render(migration.sql, conn.blob_type)):
            await conn.execute(statement)
        await conn.execute(
            "INSERT INTO schema_migrations (version, description, applied_at) "
            "VALUES (?, ?, ?)",
            (migration.version, migration.description, utc_now_iso()),
        )
    return True
