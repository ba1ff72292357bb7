"""The ``proctor`` command as a user runs it, in subprocesses."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import asyncpg
import pytest

from proctor.store.migrations import LATEST_VERSION
from tests.pgserver import drop_schema, new_schema, postgres_url, schema_url


def _run(tmp_path: Path, *args: str, env: dict[str, str] | None = None,
         timeout: float = 60) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PROCTOR_SERVER__DATA_DIR": str(tmp_path / "data"),
                "PROCTOR_STORE": f"sqlite:///{tmp_path}/data/proctor.db",
                "PROCTOR_CLIPS": f"file://{tmp_path}/data/clips", **(env or {})}
    return subprocess.run([sys.executable, "-m", "proctor.cli", *args], env=full_env,
                          capture_output=True, text=True, timeout=timeout, cwd=tmp_path)


def test_db_migrate_and_keys_create(tmp_path: Path) -> None:
    migrated = _run(tmp_path, "db", "migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert f"schema version {LATEST_VERSION}" in migrated.stdout
    created = _run(tmp_path, "keys", "create", "--name", "acme")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("pk_") and len(key) > 30
    db = (tmp_path / "data" / "proctor.db").read_bytes()
    assert key.encode() not in db  # stored hashed only


def test_db_migrate_on_postgresql_in_a_fresh_schema(tmp_path: Path) -> None:
    schema = new_schema()
    env = {"PROCTOR_STORE": schema_url(schema)}
    try:
        for _ in range(2):  # the second run finds nothing to do
            migrated = _run(tmp_path, "db", "migrate", env=env)
            assert migrated.returncode == 0, migrated.stderr
            assert f"schema version {LATEST_VERSION}" in migrated.stdout
        versions = asyncio.run(_fetch_versions(schema))
        assert versions == list(range(1, LATEST_VERSION + 1))
    finally:
        asyncio.run(drop_schema(schema))


async def _fetch_versions(schema: str) -> list[int]:
    conn = await asyncpg.connect(postgres_url())
    try:
        rows = await conn.fetch(f"SELECT version FROM {schema}.schema_migrations ORDER BY 1")
    finally:
        await conn.close()
    return [int(row["version"]) for row in rows]


def test_db_migrate_reports_an_unreachable_database(tmp_path: Path) -> None:
    url = f"postgresql://postgres:s3cret@127.0.0.1:{_free_port()}/test"  # nothing listens
    failed = _run(tmp_path, "db", "migrate", env={"PROCTOR_STORE": url})
    assert failed.returncode == 1
    assert "cannot connect to PostgreSQL 127.0.0.1" in failed.stderr
    assert "s3cret" not in failed.stderr + failed.stdout
    assert "Traceback" not in failed.stderr


def test_models_verify(tmp_path: Path) -> None:
    result = _run(tmp_path, "models", "verify")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "face_detection_short_range" in result.stdout and "ok" in result.stdout


def test_bad_config_stops_startup_naming_the_key(tmp_path: Path) -> None:
    result = _run(tmp_path, "serve", env={"PROCTOR_PIPELINE__ANALYSIS_FPS": "fast"})
    assert result.returncode == 2
    assert "pipeline.analysis_fps" in result.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.timeout(90)
def test_serve_starts_on_defaults_and_stops_cleanly(tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "PROCTOR_SERVER__PORT": str(port)}
    # Run in an empty directory with no overrides but the port: the embedded defaults
    # must be enough (SQLite and clips under ./data).
    server = subprocess.Popen([sys.executable, "-m", "proctor.cli", "serve"], cwd=tmp_path,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz") as response:
                    assert response.status == 200
                    break
            except OSError:
                assert server.poll() is None, server.stdout.read() if server.stdout else ""
                assert time.monotonic() < deadline, "server did not become ready"
                time.sleep(0.3)
        assert (tmp_path / "data" / "proctor.db").exists()
    finally:
        server.terminate()
        assert server.wait(timeout=20) == 0
