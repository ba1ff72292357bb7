"""Several ``proctor serve`` nodes as one deployment, for ``bench/load.py --nodes K``.

The K nodes of a managed round share a PostgreSQL store in a schema of the round's own
(``?schema=bench_<hex>``: the store creates it; :func:`drop_schema` removes it after the
round), a Redis bus, ``clips: store``, the token secret and the API key; each has its own
``nodes.id`` (``node-1`` .. ``node-K``). :func:`identify_nodes` asks every node, managed or
``--server``, who it is (its own row in ``GET /nodes``), so sessions can be told apart by
the node that holds their media.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aiohttp
import asyncpg

from proctor.store.postgres import parse_postgres_url, redact_url

API = "/api/v1"
DEFAULT_STORE = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_BUS = "redis://127.0.0.1:6379/0"


@dataclass
class Node:
    """One node a round talks to: its URL, the pid its CPU and memory are read from, and
    its ``nodes.id`` once :func:`identify_nodes` asked it."""

    url: str
    pid: int | None
    node_id: str | None = None

    @property
    def label(self) -> str:
        return self.node_id or self.url


def node_name(index: int) -> str:
    """``nodes.id`` of a managed deployment's node ``index`` (0-based): node-1, node-2..."""
    return f"node-{index + 1}"


def check_database_url(url: str) -> None:
    """ValueError unless ``url`` is a PostgreSQL URL without a schema of its own (the
    bench adds one per round)."""
    if parse_postgres_url(url).schema is not None:
        raise ValueError("the bench adds its own ?schema=bench_... per round: "
                         "give the database URL without one")


def backends(database: str, bus: str) -> str:
    """What a managed deployment's nodes share, without credentials, for the report."""
    return (f"store {parse_postgres_url(database).where} in a schema bench_<hex> per round, "
            f"bus {redact_url(bus)}, clips: store")


def _with_schema(url: str, schema: str) -> str:
    parts = urlsplit(url)
    query = [*parse_qsl(parts.query, keep_blank_values=True), ("schema", schema)]
    return urlunsplit(parts._replace(query=urlencode(query)))


@dataclass(frozen=True)
class Deployment:
    """What the K managed nodes of one round share, and each node's own settings."""

    database: str  # the --store URL, without the round's schema
    schema: str
    bus: str
    api_key: str
    token_secret: str

    @classmethod
    def new(cls, database: str, bus: str) -> Deployment:
        return cls(database, f"bench_{secrets.token_hex(6)}", bus, secrets.token_urlsafe(24),
                   secrets.token_hex(32))

    @property
    def store(self) -> str:
        return _with_schema(self.database, self.schema)

    def env(self, index: int) -> dict[str, str]:
        """The environment of node ``index`` (the API key is the server's own setting)."""
        return {"PROCTOR_STORE": self.store, "PROCTOR_BUS": self.bus,
                "PROCTOR_CLIPS": "store", "PROCTOR_AUTH__TOKEN_SECRET": self.token_secret,
                "PROCTOR_NODES__ID": node_name(index)}


async def drop_schema(deployment: Deployment) -> str | None:
    """``DROP SCHEMA ... CASCADE`` the round's schema; what went wrong, if anything."""
    try:
        conn = await asyncpg.connect(parse_postgres_url(deployment.database).dsn, timeout=10)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        return f"could not connect to drop schema {deployment.schema}: {exc!r}"
    try:
        # The name is ours (bench_ + hex): nothing to escape.
        await conn.execute(f'DROP SCHEMA IF EXISTS "{deployment.schema}" CASCADE')
    except asyncpg.PostgresError as exc:
        return f"could not drop schema {deployment.schema}: {exc!r}"
    finally:
        await conn.close()
    return None


async def _listed_nodes(http: aiohttp.ClientSession, url: str,
                        api_key: str) -> list[dict[str, Any]]:
    async with http.get(f"{url}{API}/nodes",
                        headers={"Authorization": f"Bearer {api_key}"}) as resp:
        if resp.status != 200:
            raise RuntimeError(f"GET /nodes -> {resp.status}: {(await resp.text())[:200]}")
        return list((await resp.json())["nodes"])


async def identify_nodes(http: aiohttp.ClientSession, nodes: list[Node],
                         api_key: str) -> list[str]:
    """Set each node's ``node_id`` from its own row in its ``GET /nodes``; return what
    is wrong (a node that does not answer, or sees fewer live nodes than the round uses)."""
    errors = []
    for node in nodes:
        try:
            listed = await _listed_nodes(http, node.url, api_key)
        except (RuntimeError, aiohttp.ClientError, TimeoutError, ValueError, KeyError,
                TypeError) as exc:
            errors.append(f"{node.url}: GET /nodes failed: {exc!r}")
            continue
        node.node_id = next((str(n["node_id"]) for n in listed if n.get("this_node")), None)
        alive = sorted(str(n["node_id"]) for n in listed if n.get("alive"))
        if len(alive) < len(nodes):
            errors.append(f"{node.label}: GET /nodes lists {len(alive)} live nodes "
                          f"({', '.join(alive) or 'none'}), the round uses {len(nodes)}")
    return errors
