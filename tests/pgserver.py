"""PostgreSQL for tests: the shared server's throwaway schemas, and private servers.

* :func:`postgres_url` is the shared server every PostgreSQL test uses
  (``PROCTOR_TEST_POSTGRES``, default ``postgresql://postgres@127.0.0.1:5432/test``);
  tests never stop it. :func:`new_schema` names a fresh schema, :func:`schema_url` puts
  it in a store URL (``?schema=``: the store creates it), :func:`drop_schema` drops it.
* :class:`PrivatePostgres` is a server of the test's own (initdb in a temp dir,
  127.0.0.1 on a free port) for tests that stop, start or wedge the database::

      with PrivatePostgres() as pg:          # initdb + start; cleanup on exit
          store = PostgresStore(pg.url)
          pg.stop()                          # pg_ctl stop -m immediate
          pg.start()                         # same port and data, back again

  Run as root, it runs initdb, pg_ctl and the server as the ``postgres`` user (the
  server refuses to run as root), in a directory that user owns.
"""

from __future__ import annotations

import atexit
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

import asyncpg

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
_SERVER_OPTIONS = (
    # fsync=off: the machine never crashes under a test, only the server is killed, and
    # the OS keeps what was written. Not synchronous_commit=off: a killed server would
    # then lose its last commits, and an outage test would see data vanish.
    "-c fsync=off -c full_page_writes=off -c shared_buffers=16MB -c max_connections=40"
)


def postgres_url() -> str:
    """The shared test server (it must exist: PostgreSQL tests fail, not skip, without it)."""
    return os.environ.get("PROCTOR_TEST_POSTGRES", DEFAULT_POSTGRES_URL)


def new_schema() -> str:
    return f"proctor_test_{secrets.token_hex(6)}"


def schema_url(schema: str, base: str | None = None) -> str:
    """A store URL for ``schema`` in the ``base`` database (default: the shared one)."""
    base = base or postgres_url()
    return f"{base}{'&' if '?' in base else '?'}schema={schema}"


async def drop_schema(schema: str, base: str | None = None) -> None:
    conn = await asyncpg.connect(base or postgres_url(), timeout=10)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    finally:
        await conn.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def postgres_bin_dir() -> Path:
    """Where initdb and pg_ctl are: ``PROCTOR_TEST_PG_BIN``, else the newest Debian-style
    /usr/lib/postgresql/N/bin, else the PATH."""
    if env := os.environ.get("PROCTOR_TEST_PG_BIN"):
        return Path(env)
    installed = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                       key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit()
                       else 0)
    if installed:
        return installed[-1].parent
    found = shutil.which("initdb")
    if found is None:
        raise RuntimeError("initdb not found: install PostgreSQL or set PROCTOR_TEST_PG_BIN")
    return Path(found).parent


class PrivatePostgres:
    """A throwaway PostgreSQL server on 127.0.0.1 with trust auth for user postgres."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self._bin = postgres_bin_dir()
        self._root: Path | None = None
        self.running = False

    @property
    def root(self) -> Path:
        if self._root is None:
            self._root = self._make_root()
        return self._root

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        return self.root / "server.log"

    @property
    def url(self) -> str:
        """The ``postgres`` database as user ``postgres`` (no password)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self, timeout: float = 30) -> None:
        """initdb on the first start, then start and wait until it accepts connections."""
        if self.running:
            return
        if not (self.data_dir / "PG_VERSION").exists():
            self._run("initdb", "-D", str(self.data_dir), "-U", "postgres", "-A", "trust",
                      "-E", "UTF8", "--locale=C", "--no-sync")
        options = f"-k {self.root} -h 127.0.0.1 -p {self.port} {_SERVER_OPTIONS}"
        self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_path), "-w",
                  "-t", str(int(timeout)), "-o", options, "start")
        self.running = True
        atexit.register(self.cleanup)  # a crashed test must not leave a server behind

    def stop(self, mode: str = "immediate") -> None:
        """Stop the server: ``immediate`` (default) kills it like a crash would."""
        if self.running:
            self._run("pg_ctl", "-D", str(self.data_dir), "-w", "-m", mode, "stop")
            self.running = False

    def cleanup(self) -> None:
        """Stop the server and remove its files. Safe to repeat."""
        self.stop()
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None
        atexit.unregister(self.cleanup)

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def __enter__(self) -> PrivatePostgres:
        try:
            self.start()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.cleanup()

    # -- plumbing ------------------------------------------------------------------------

    def _make_root(self) -> Path:
        root = Path(tempfile.mkdtemp(prefix="proctor-pg-"))
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(root, user.pw_uid, user.pw_gid)
        return root

    def _run(self, tool: str, *args: str) -> None:
        # PostgreSQL refuses to run as root: run its tools as the postgres user then.
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        result = subprocess.run([*prefix, str(self._bin / tool), *args], capture_output=True,
                                text=True, timeout=60, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{tool} failed ({result.returncode}): {result.stderr.strip()}"
                               f"\n{self.log_tail()}")


__all__ = ["PrivatePostgres", "drop_schema", "free_port", "new_schema", "postgres_url",
           "schema_url"]
