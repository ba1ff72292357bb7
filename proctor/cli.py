"""The ``proctor`` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Sequence

from proctor.config import Config, ConfigError, load_config

log = logging.getLogger("proctor")


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

    db = commands.add_parser("db", help="database schema")
    db_commands = db.add_subparsers(required=True, metavar="ACTION")
    db_commands.add_parser("migrate", help="apply pending migrations").set_defaults(
        run=_db_migrate)

    keys = commands.add_parser("keys", help="integrator API keys")
    key_commands = keys.add_subparsers(required=True, metavar="ACTION")
    create = key_commands.add_parser("create", help="make a key; printed once on stdout")
    create.add_argument("--name", required=True, help="who the key is for")
    create.set_defaults(run=_keys_create)

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

    from signaling.app import create_app

    log.info("proctor serving on http://%s:%d (store %s, bus %s, clips %s)",
             config.server.host, config.server.port, config.store, config.bus, config.clips)
    web.run_app(create_app(config), host=config.server.host, port=config.server.port,
                print=None, shutdown_timeout=10.0, handle_signals=True)
    return 0


def _db_migrate(args: argparse.Namespace, config: Config) -> int:
    from proctor.store import open_store_from_url

    async def migrate() -> int:
        store = open_store_from_url(config.store)
        await store.open()  # opening applies pending migrations
        try:
            return await store.schema_version()
        finally:
            await store.close()

    print(f"schema version {asyncio.run(migrate())} ({config.store})")
    return 0


def _keys_create(args: argparse.Namespace, config: Config) -> int:
    from proctor.flags.model import new_id, utc_now_iso
    from proctor.store import ApiKeyRecord, open_store_from_url
    from signaling.auth import hash_api_key, new_api_key

    key = new_api_key()

    async def save() -> None:
        store = open_store_from_url(config.store)
        await store.open()
        try:
            await store.add_api_key(ApiKeyRecord(key_id=new_id(), name=args.name,
                                                 key_hash=hash_api_key(key),
                                                 created_at=utc_now_iso()))
        finally:
            await store.close()

    asyncio.run(save())
    print(key)
    print(f"key for {args.name!r} stored hashed; it will not be shown again", file=sys.stderr)
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
