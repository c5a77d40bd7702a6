"""The checked-in contract and migrations agree with the code."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.script import ScriptDirectory

from api.migrate import alembic_config
from api.schema import print_schema
from api.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_schema_graphql_is_printed_from_the_code() -> None:
    checked_in = (ROOT / "graphql" / "schema.graphql").read_text()
    assert checked_in == print_schema(), (
        "graphql/schema.graphql drifted: run `yibao schema --out graphql/schema.graphql`"
    )


def test_public_contract_names_exist() -> None:
    sdl = print_schema()
    for name in ("login(", "refreshToken(", "logout(", "me:"):
        assert name in sdl


def test_migrations_have_one_head_and_match_the_models(settings: Settings, state: object) -> None:
    # `state` has migrated the test database to head; `check` fails if the models need a new migration.
    config = alembic_config(settings.resolved_database_url)
    assert len(ScriptDirectory.from_config(config).get_heads()) == 1
    command.check(config)


async def test_migrations_go_down_and_up_again_on_a_populated_database(tmp_path: Path) -> None:
    # Its own SQLite file with a small demo county: SQLite's table-copying ALTERs are where a
    # downgrade trips over foreign keys, and data must not block a step back.
    from api.demo import load_demo_county
    from api.migrate import upgrade
    from api.state import AppState

    settings = Settings(data_dir=tmp_path, demo_people=60)
    url = settings.resolved_database_url
    upgrade(url)
    state = AppState.build(settings)
    try:
        await load_demo_county(state, people=60, seed=1)
    finally:
        await state.db.dispose()
    config = alembic_config(url)
    # Alembic's env runs its own event loop: give it a thread, as api.migrate.upgrade does.
    for step, target in (
        ("downgrade", "-1"),
        ("upgrade", "head"),
        ("downgrade", "base"),
        ("upgrade", "head"),
    ):
        await asyncio.to_thread(getattr(command, step), config, target)
    await asyncio.to_thread(command.check, config)
