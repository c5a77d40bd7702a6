"""Every document in graphql/operations/ (what the SDK sends) is valid against graphql/schema.graphql,
and every operation is named once, so a schema change that breaks the mini-program fails here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from graphql import GraphQLSchema, OperationDefinitionNode, build_schema, parse, validate
from tests.miniprogram.node import require_node, run_node

ROOT = Path(__file__).resolve().parents[2]
OPERATIONS = sorted((ROOT / "graphql" / "operations").glob("*.graphql"))


@pytest.fixture(scope="module")
def schema() -> GraphQLSchema:
    return build_schema((ROOT / "graphql" / "schema.graphql").read_text(encoding="utf-8"))


def test_there_are_operations() -> None:
    names = {path.stem for path in OPERATIONS}
    assert {"auth", "records", "vouchers", "family", "filings", "notifications"} <= names


@pytest.mark.parametrize("path", OPERATIONS, ids=lambda p: p.name)
def test_operations_file_is_valid_against_the_schema(schema: GraphQLSchema, path: Path) -> None:
    errors = validate(schema, parse(path.read_text(encoding="utf-8")))
    assert not errors, [error.message for error in errors]


def test_operation_names_are_unique_across_files() -> None:
    seen: dict[str, str] = {}
    for path in OPERATIONS:
        for definition in parse(path.read_text(encoding="utf-8")).definitions:
            if isinstance(definition, OperationDefinitionNode):
                assert definition.name is not None, f"{path.name}: an operation without a name"
                name = definition.name.value
                assert name not in seen, f"{name} in {path.name} and {seen[name]}"
                seen[name] = path.name


def test_a_broken_operation_would_be_caught(schema: GraphQLSchema) -> None:
    errors = validate(schema, parse("query Me { me { noSuchField } }"))
    assert errors


def test_replication_documents_are_valid_against_the_schema(schema: GraphQLSchema) -> None:
    """The pull, stream and push documents that src/replication.ts builds for RxDB, per collection."""
    require_node()
    script = (
        "const m = await import('./dist/yibao-replication.js');"
        "const out = [];"
        "for (const [name, spec] of Object.entries(m.COLLECTIONS)) {"
        "  out.push(m.pullQuery(name), m.streamQuery(name));"
        "  if (spec.writable) out.push(m.pushQuery(name));"
        "}"
        "console.log(JSON.stringify(out));"
    )
    proc = run_node("--input-type=module", "-e", script)
    assert proc.returncode == 0, proc.stderr
    documents = json.loads(proc.stdout)
    assert len(documents) == 6 * 2 + 2
    for document in documents:
        errors = validate(schema, parse(document))
        assert not errors, (document, [error.message for error in errors])
