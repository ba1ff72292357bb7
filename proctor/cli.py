"""The ``proctor`` command."""

from __future__ import annotations

import os

# The detectors run many small matrix products on a shared thread pool; BLAS spreading
# each over every core makes them slower, not faster (measured: 116 ms → 23 ms for a
# speaker window on a busy machine). Set before numpy loads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from proctor.config import Config, ConfigError, load_config

log = logging.getLogger("proctor")
T = TypeVar("T")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if not args.quiet else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = _config(args)
    except ConfigError as exc:
        print(f"proctor: {exc}", file=sys.stderr)
        return 2
    command: Callable[[argparse.Namespace, Config], int] = args.run
    return command(args, config)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="proctor", description=__doc__)
    parser.add_argument("--config", help="a YAML file merged over the defaults")
    parser.add_argument("--quiet", action="store_true", help="warnings and errors only")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the server")
    serve.add_argument("--host", help="overrides server.host")
    serve.add_argument("--port", type=int, help="overrides server.port")
    serve.set_defaults(run=_serve)

    analyze = commands.add_parser("analyze", help="analyse a recording offline")
    analyze.add_argument("video", help="any file PyAV opens")
    analyze.add_argument("--enroll", metavar="PHOTO", help="the candidate's photo, to verify")
    analyze.add_argument("--out", metavar="REPORT_JSON", help="write the report here")
    analyze.add_argument("--html", metavar="REPORT_HTML", help="and a page a person reads")
    analyze.set_defaults(run=_analyze)

    db = commands.add_parser("db", help="database schema")
    db_commands = db.add_subparsers(required=True, metavar="ACTION")
    db_commands.add_parser("migrate", help="apply pending migrations").set_defaults(
        run=_db_migrate)

    keys = commands.add_parser("keys", help="integrator API keys")
    key_commands = keys.add_subparsers(required=True, metavar="ACTION")
    create = key_commands.add_parser("create", help="make a key; printed once on stdout")
    create.add_argument("--name", required=True, help="who the key is for")
    create.add_argument("--tenant", help="whose objects it makes and sees (default: NAME)")
    create.set_defaults(run=_keys_create)
    key_commands.add_parser("list", help="name, tenant, created, revoked (never the key)"
                            ).set_defaults(run=_keys_list)
    revoke = key_commands.add_parser("revoke", help="revoke every key of this name, at once")
    revoke.add_argument("name", metavar="NAME")
    revoke.set_defaults(run=_keys_revoke)

    purge = commands.add_parser("purge", help="remove data older than retention.* allows")
    purge.add_argument("--dry-run", action="store_true",
                       help="print what would be removed, remove nothing")
    purge.set_defaults(run=_purge)

    models = commands.add_parser("models", help="model files")
    model_commands = models.add_subparsers(required=True, metavar="ACTION")
    model_commands.add_parser("list", help="which models are present").set_defaults(
        run=_models_list)
    model_commands.add_parser("verify", help="check every model's sha256").set_defaults(
        run=_models_verify)
    model_commands.add_parser("fetch", help="download optional models").set_defaults(
        run=_models_fetch)
    return parser


def _config(args: argparse.Namespace) -> Config:
    overrides: dict[str, dict[str, object]] = {"server": {}}
    if getattr(args, "host", None):
        overrides["server"]["host"] = args.host
    if getattr(args, "port", None):
        overrides["server"]["port"] = args.port
    return load_config(args.config, overrides=overrides)


def _serve(args: argparse.Namespace, config: Config) -> int:
    from aiohttp import web

    from signaling.accesslog import RedactingAccessLogger
    from signaling.app import create_app

    log.info("proctor serving on http://%s:%d (store %s, bus %s, clips %s)",
             config.server.host, config.server.port, config.store, config.bus, config.clips)
    web.run_app(create_app(config), host=config.server.host, port=config.server.port,
                print=None, shutdown_timeout=10.0, handle_signals=True,
                access_log_class=RedactingAccessLogger, loop=_event_loop())
    return 0


def _event_loop() -> asyncio.AbstractEventLoop:
    """uvloop where it is installed (Linux, macOS), else asyncio's own loop.

    The one event loop reads every live session's packets (VP8 at 640x480 and Opus
    come as well over a hundred datagrams a second per session). Receiving one costs
    that thread ~2 µs of CPU on uvloop against ~19 µs on asyncio's selector loop;
    aiortc's own work per packet (DTLS demux, SRTP, RTP parsing, jitter buffer) stays.
    """
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _analyze(args: argparse.Namespace, config: Config) -> int:
    import json
    from pathlib import Path

    from proctor.detectors.registry import build_detectors
    from proctor.media.file import MediaError
    from proctor.pipeline.offline import analyze_video
    from proctor.report_html import render_report_html

    detectors = build_detectors(config.detectors)
    try:
        enrollment = _enrollment(args.enroll, detectors) if args.enroll else None
        report = asyncio.run(analyze_video(Path(args.video), config, detectors,
                                           enrollment=enrollment, progress=_progress_bar()))
    except (MediaError, OSError) as exc:
        print(f"\nproctor analyze: {exc}", file=sys.stderr)
        return 1
    print(file=sys.stderr)
    text = json.dumps(report, indent=2)
    if args.out:
        Path(args.out).write_text(text)
    if args.html:
        Path(args.html).write_text(render_report_html(report))
    if not args.out:
        print(text)
    speed = report["pipeline"].get("speed")
    print(f"{report['recommendation']}  integrity {report['integrity_score']:.2f}  "
          f"{len(report['flags'])} flags  {speed}x real time", file=sys.stderr)
    return 0


def _enrollment(photo: str, detectors: list[Any]) -> Any:
    from pathlib import Path

    from proctor.media.file import decode_image

    identity = next((d for d in detectors if d.name == "identity"), None)
    if identity is None:
        raise OSError("--enroll needs the identity detector (detectors.identity.enabled)")
    result = identity.embed(decode_image(Path(photo).read_bytes()))
    if result.embedding is None:
        raise OSError(f"no usable face in {photo}")
    return result.embedding


def _progress_bar(width: int = 40) -> Callable[[float, float], None]:
    """A one-line bar on stderr, redrawn only when it changes."""
    drawn = [""]

    def draw(done: float, total: float) -> None:
        if total <= 0:
            line = f"analysing: {int(done)} s of media"
        else:
            share = min(1.0, done / total)
            filled = int(share * width)
            line = f"[{'#' * filled}{'.' * (width - filled)}] {share:4.0%} of {total:.0f} s"
        if line != drawn[0]:
            drawn[0] = line
            print("\r" + line, end="", file=sys.stderr, flush=True)

    return draw


def _db_migrate(args: argparse.Namespace, config: Config) -> int:
    """Apply pending migrations on either backend (SQLite file or PostgreSQL URL)."""
    from proctor.store import StoreUnavailable, open_store_from_url
    from proctor.store.postgres import redact_url

    async def migrate() -> int:
        store = open_store_from_url(config.store)
        await store.open()  # opening applies pending migrations, under the backend's lock
        try:
            return await store.schema_version()
        finally:
            await store.close()

    try:
        version = asyncio.run(migrate())
    except ValueError as exc:  # a store URL the config check let through (its parameters)
        print(f"proctor db migrate: {exc}", file=sys.stderr)
        return 2
    except StoreUnavailable as exc:  # unreachable, or a schema newer than this server
        print(f"proctor db migrate: {exc}", file=sys.stderr)
        return 1
    # The URL may carry a PostgreSQL password: never print it.
    print(f"schema version {version} ({redact_url(config.store)})")
    return 0


def _keys_create(args: argparse.Namespace, config: Config) -> int:
    from proctor.flags.model import new_id, utc_now_iso
    from proctor.store import ApiKeyRecord
    from signaling.auth import hash_api_key, new_api_key

    key = new_api_key()
    tenant = args.tenant or args.name
    record = ApiKeyRecord(key_id=new_id(), name=args.name, key_hash=hash_api_key(key),
                          created_at=utc_now_iso(), tenant=tenant)
    _with_store(config, lambda store: store.add_api_key(record))
    print(key)
    print(f"key for {args.name!r} (tenant {tenant!r}) stored hashed; it will not be shown "
          "again", file=sys.stderr)
    return 0


def _keys_list(args: argparse.Namespace, config: Config) -> int:
    keys = _with_store(config, lambda store: store.list_api_keys())
    print(f"{'NAME':24} {'TENANT':24} {'CREATED':28} REVOKED")
    for key in keys:
        print(f"{key.name:24} {key.tenant:24} {key.created_at:28} "
              f"{'yes' if key.revoked else 'no'}")
    return 0


def _keys_revoke(args: argparse.Namespace, config: Config) -> int:
    count = _with_store(config, lambda store: store.revoke_api_key(args.name))
    if not count:
        print(f"proctor keys revoke: no unrevoked key named {args.name!r}", file=sys.stderr)
        return 1
    print(f"revoked {count} key(s) named {args.name!r}")
    return 0


def _with_store(config: Config, action: Callable[[Any], Awaitable[T]]) -> T:
    """Open the configured store, run one call on it, close it."""
    from proctor.store import open_store_from_url

    async def run() -> T:
        store = open_store_from_url(config.store)
        await store.open()
        try:
            return await action(store)
        finally:
            await store.close()

    return asyncio.run(run())


def _purge(args: argparse.Namespace, config: Config) -> int:
    """Apply retention once and print the counts per kind (SPEC "Retention")."""
    from proctor.evidence.storage import clip_storage
    from proctor.retention import purge
    from proctor.store import StoreUnavailable, open_store_from_url

    async def run() -> dict[str, int]:
        store = open_store_from_url(config.store)
        await store.open()
        try:
            return await purge(store, clip_storage(store, config.clips_in_store),
                               config.retention, dry_run=args.dry_run, actor="cli")
        finally:
            await store.close()

    try:
        counts = asyncio.run(run())
    except StoreUnavailable as exc:
        print(f"proctor purge: {exc}", file=sys.stderr)
        return 1
    verb = "would remove" if args.dry_run else "removed"
    print(f"{verb}: " + ", ".join(f"{kind} {n}" for kind, n in counts.items()))
    return 0


def _models_list(args: argparse.Namespace, config: Config) -> int:
    return _print_models(verify=False)


def _models_verify(args: argparse.Namespace, config: Config) -> int:
    return _print_models(verify=True)


def _print_models(verify: bool) -> int:
    from proctor.models import check, load_manifest

    bad = 0
    for entry in load_manifest():
        status = check(entry, verify)
        bad += status.state != "ok" and entry.default
        print(f"{entry.name:36} {status.state:18} {entry.package:28} {entry.licence:12} "
              f"{status.path or '-'}")
    return 1 if bad else 0


def _models_fetch(args: argparse.Namespace, config: Config) -> int:
    print("every model in use ships inside an installed package; nothing to fetch")
    return 0


if __name__ == "__main__":
    sys.exit(main())
