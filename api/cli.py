"""The `yibao` command: serve, migrate, demo data, keys, schema."""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import timedelta
from pathlib import Path

from api.settings import Settings


def _settings() -> Settings:
    try:
        return Settings()
    except ValueError as exc:  # pydantic's ValidationError is a ValueError; say it plainly and stop
        sys.exit(f"yibao: invalid settings: {exc}")


def _prepare(settings: Settings) -> None:
    """Data dir, keys and migrations: everything a worker needs before it starts."""
    from api.auth.keys import KeyRing, KeyStoreError
    from api.migrate import upgrade
    from api.secrets import DataKeys

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        KeyRing.open(settings.resolved_key_dir, allow_demo=not settings.production)
        explicit = settings.data_key.get_secret_value() if settings.data_key else None
        DataKeys.load(settings.resolved_key_dir, explicit=explicit, allow_create=not settings.production)
    except (KeyStoreError, RuntimeError) as exc:
        sys.exit(f"yibao: {exc}")
    upgrade(settings.resolved_database_url)
    _seed_policies(settings)


def _seed_policies(settings: Settings) -> None:
    """Policy versions added to the shipped file since the last start (the migration seeded the rest)."""
    from api.db import Database
    from api.settlement.service import seed_default_policies

    async def run() -> None:
        db = Database(settings)
        try:
            async with db.session() as session:
                await seed_default_policies(session)
        finally:
            await db.dispose()

    asyncio.run(run())


def _load_demo(settings: Settings, *, force: bool = False) -> bool:
    from api.demo import load_demo_county
    from api.state import AppState

    async def run() -> bool:
        state = AppState.build(settings)
        try:
            return await load_demo_county(
                state, people=settings.demo_people, seed=settings.demo_seed, force=force
            )
        finally:
            await state.db.dispose()

    return asyncio.run(run())


def _enrolment_codes(settings: Settings) -> list[tuple[str, str, str]]:
    """A fresh one-time enrolment code for every clinic (outside production only): (clinic code,
    clinic name, enrolment code). Older unused codes that expired are dropped."""
    from api.db import Database
    from api.terminals.service import demo_enrolment_codes

    async def run() -> list[tuple[str, str, str]]:
        db = Database(settings)
        try:
            async with db.session() as session:
                ttl = timedelta(hours=settings.terminal_enrolment_ttl_h)
                issued = await demo_enrolment_codes(session, ttl)
        finally:
            await db.dispose()
        return [(clinic.code, clinic.name, code) for clinic, code, _ in issued]

    return asyncio.run(run())


def _banner(
    settings: Settings, host: str, port: int, enrolment_codes: list[tuple[str, str, str]] | None = None
) -> str:
    from api.auth.providers import DEMO_LOGINS

    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # noqa: S104
    lines = [
        "",
        f"  yibao is serving on http://{shown}:{port}",
        f"  GraphQL (GraphiQL in a browser): http://{shown}:{port}/graphql",
        f"  Health: http://{shown}:{port}/healthz   JWKS: http://{shown}:{port}/.well-known/jwks.json",
        f"  Database: {settings.resolved_database_url}",
    ]
    if "demo" in settings.identity_providers:
        lines += [
            "",
            '  Demo logins: mutation { login(provider: "demo", code: "<login>") { accessToken refreshToken } }',
            "    " + ", ".join(DEMO_LOGINS),
        ]
    if enrolment_codes:
        lines += [
            "",
            f"  Clinic terminal enrolment codes (one-time, valid {settings.terminal_enrolment_ttl_h} h):",
            f"    yibao-terminal --home DIR enrol --server http://{shown}:{port} --code <code>",
            *(f"    {code}  {clinic}  {name}" for clinic, name, code in enrolment_codes),
        ]
    return "\n".join(lines) + "\n"


def cmd_serve(args: argparse.Namespace) -> None:
    import uvicorn

    settings = _settings()
    _prepare(settings)
    if not settings.production and not args.no_demo and _load_demo(settings):
        print("  Loaded the demo county into the empty database.", flush=True)
    codes = [] if settings.production else _enrolment_codes(settings)
    print(_banner(settings, args.host, args.port, codes), flush=True)
    uvicorn.run(
        "api.app:app_factory",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level="warning",
        access_log=False,
        proxy_headers=False,  # the app honours X-Forwarded-For itself, from YIBAO_TRUSTED_PROXIES only
    )


def cmd_migrate(args: argparse.Namespace) -> None:
    settings = _settings()
    _prepare(settings)
    print(f"migrated {settings.resolved_database_url}")


def cmd_revision(args: argparse.Namespace) -> None:
    from api.migrate import revision

    settings = _settings()
    _prepare(settings)  # autogenerate diffs the models against a database at head
    revision(settings.resolved_database_url, args.message)


def cmd_demo(args: argparse.Namespace) -> None:
    settings = _settings()
    _prepare(settings)
    if args.people:
        settings.demo_people = args.people
    loaded = _load_demo(settings, force=args.force)
    print(
        "demo county loaded"
        if loaded
        else "the database already has data; use --force to add the demo anyway"
    )


def cmd_generate_city(args: argparse.Namespace) -> None:
    from api.demo import generate_city

    generate_city(Path(args.out), people=args.people, seed=args.seed)


def cmd_keys_rotate(args: argparse.Namespace) -> None:
    from api.auth.keys import rotate

    settings = _settings()
    kid = rotate(settings.resolved_key_dir, demo=False)
    print(f"new signing key {kid} is active; older keys keep verifying until pruned")


def cmd_keys_prune(args: argparse.Namespace) -> None:
    from api.auth.keys import prune

    settings = _settings()
    # The keys also sign device certificates for offline vouchers: keep them while any may still be valid.
    keep = timedelta(
        seconds=max(
            settings.refresh_token_ttl_s,
            settings.access_token_ttl_s,
            settings.device_cert_validity_days * 86_400 + settings.voucher_skew_s,
        )
    )
    dropped = prune(settings.resolved_key_dir, keep_for=keep)
    print("pruned: " + (", ".join(dropped) if dropped else "nothing"))


def cmd_compact(args: argparse.Namespace) -> None:
    """Drops change-log entries older than YIBAO_SYNC_RETENTION_DAYS (run it daily, e.g. from cron)."""
    import asyncio
    from datetime import timedelta

    from api.db import Database
    from api.replication import changelog

    settings = _settings()
    _prepare(settings)

    async def run() -> int:
        db = Database(settings)
        try:
            async with db.sessionmaker() as session:
                return await changelog.compact(session, timedelta(days=settings.sync_retention_days))
        finally:
            await db.dispose()

    print(f"dropped {asyncio.run(run())} change-log entries older than {settings.sync_retention_days} days")


def cmd_schema(args: argparse.Namespace) -> None:
    from api.schema import print_schema

    text = print_schema()
    if args.out:
        Path(args.out).write_text(text)
    else:
        sys.stdout.write(text)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="yibao", description="yibao medical-insurance service")
    sub = root.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="migrate, load the demo county into an empty database, and serve")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument("--no-demo", action="store_true", help="do not load demo data into an empty database")
    serve.set_defaults(func=cmd_serve)

    sub.add_parser("migrate", help="apply database migrations").set_defaults(func=cmd_migrate)
    rev = sub.add_parser("revision", help="autogenerate a migration from the models (developers)")
    rev.add_argument("-m", "--message", required=True)
    rev.set_defaults(func=cmd_revision)

    demo = sub.add_parser("demo", help="load the demo county")
    demo.add_argument("--people", type=int)
    demo.add_argument("--force", action="store_true")
    demo.set_defaults(func=cmd_demo)

    city = sub.add_parser("generate-city", help="write a city-sized data set (CSV files) for benchmarks")
    city.add_argument("--people", type=int, default=2_000_000)
    city.add_argument("--seed", type=int, default=20260101)
    city.add_argument("--out", default="city-data")
    city.set_defaults(func=cmd_generate_city)

    keys = sub.add_parser("keys", help="token-signing keys").add_subparsers(
        dest="keys_command", required=True
    )
    keys.add_parser("rotate", help="create a new active signing key").set_defaults(func=cmd_keys_rotate)
    keys.add_parser("prune", help="drop keys retired longer than any token lives").set_defaults(
        func=cmd_keys_prune
    )

    sub.add_parser(
        "compact-changelog", help="drop sync change-log entries past the retention (terminals then resync)"
    ).set_defaults(func=cmd_compact)
    schema = sub.add_parser("schema", help="print the GraphQL schema (SDL)")
    schema.add_argument("--out")
    schema.set_defaults(func=cmd_schema)
    return root


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
