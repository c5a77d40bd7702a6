"""The checked-in contract and migrations agree with the code."""

from __future__ import annotations

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
