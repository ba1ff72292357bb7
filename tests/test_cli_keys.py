"""``proctor keys create|list|revoke`` as a user runs them, in subprocesses, on a temp
SQLite store."""

from __future__ import annotations

import asyncio
from pathlib import Path

from proctor.store.base import ApiKeyRecord
from proctor.store.sqlite import SqliteStore
from signaling.auth import hash_api_key
from tests.test_cli import _run


def _find(tmp_path: Path, key: str) -> ApiKeyRecord | None:
    async def find() -> ApiKeyRecord | None:
        store = SqliteStore(tmp_path / "data" / "proctor.db")
        await store.open()
        try:
            return await store.find_api_key(hash_api_key(key))
        finally:
            await store.close()

    return asyncio.run(find())


def test_keys_create_list_and_revoke(tmp_path: Path) -> None:
    acme = _run(tmp_path, "keys", "create", "--name", "acme")
    assert acme.returncode == 0, acme.stderr
    lms = _run(tmp_path, "keys", "create", "--name", "lms", "--tenant", "acme")
    other = _run(tmp_path, "keys", "create", "--name", "globex")
    keys = [r.stdout.strip() for r in (acme, lms, other)]
    found = [_find(tmp_path, key) for key in keys]
    assert [(f.name, f.tenant) for f in found if f] == [
        ("acme", "acme"), ("lms", "acme"), ("globex", "globex")]  # default tenant: the name

    listed = _run(tmp_path, "keys", "list")
    assert listed.returncode == 0, listed.stderr
    rows = [line.split() for line in listed.stdout.splitlines()[1:]]
    assert [(r[0], r[1], r[-1]) for r in rows] == [
        ("acme", "acme", "no"), ("lms", "acme", "no"), ("globex", "globex", "no")]
    assert not any(key in listed.stdout + listed.stderr for key in keys)  # never the key

    revoked = _run(tmp_path, "keys", "revoke", "lms")
    assert revoked.returncode == 0, revoked.stderr
    assert _find(tmp_path, keys[1]) is None  # refused from the next request on
    assert _find(tmp_path, keys[0]) is not None
    listed = _run(tmp_path, "keys", "list")
    assert [line.split()[-1] for line in listed.stdout.splitlines()[1:]] == [
        "no", "yes", "no"]

    again = _run(tmp_path, "keys", "revoke", "lms")
    assert again.returncode == 1 and "no unrevoked key named 'lms'" in again.stderr
