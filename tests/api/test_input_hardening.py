"""What odd input gets (issue 8): nested JSON, unstorable text, echoes, odd ids, ambiguous documents,
forwarded headers, and UTF-8 answers. Every String and ID argument of the schema is walked."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from api import jsonlimits
from api.app import create_app
from api.errors import BadUserInput
from api.ids import parse_id
from api.schema import build_schema
from api.settings import Settings
from api.state import AppState
from graphql import (
    GraphQLArgument,
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLScalarType,
)
from tests.conftest import GraphQLClient, error_codes

GRJSON = "application/graphql-response+json"
DEPTH = jsonlimits.MAX_JSON_DEPTH


def nested(depth: int) -> str:
    """A JSON array nested `depth` deep: "[[...]]"."""
    return "[" * depth + "]" * depth


async def post_raw(client: httpx.AsyncClient, body: str | bytes) -> httpx.Response:
    return await client.post(
        "/graphql", content=body, headers={"content-type": "application/json", "accept": GRJSON}
    )


# -- 1. nesting ---------------------------------------------------------------------------------------


def test_the_bound_itself_parses_and_one_past_it_does_not() -> None:
    assert jsonlimits.loads(nested(DEPTH)) is not None
    with pytest.raises(jsonlimits.JSONTooDeep):
        jsonlimits.loads(nested(DEPTH + 1))
    with pytest.raises(jsonlimits.JSONTooDeep):
        jsonlimits.loads(nested(100_000))  # past the interpreter's recursion limit too
    with pytest.raises(json.JSONDecodeError):
        jsonlimits.loads("[NaN]")


@pytest.mark.parametrize("where", ["body", "variables", "extensions"])
async def test_deep_nesting_in_a_post_is_400_with_a_json_body(client: httpx.AsyncClient, where: str) -> None:
    deep = nested(2000)
    body = {
        "body": deep,
        "variables": '{"query": "{ __typename }", "variables": {"a": ' + deep + "}}",
        "extensions": '{"query": "{ __typename }", "extensions": {"a": ' + deep + "}}",
    }[where]
    response = await post_raw(client, body)
    assert response.status_code == 400
    assert error_codes(response.json()) == ["BAD_REQUEST"]
    assert "nested" in response.json()["errors"][0]["message"]


@pytest.mark.parametrize("param", ["variables", "extensions"])
async def test_deep_nesting_in_get_parameters_is_400(client: httpx.AsyncClient, param: str) -> None:
    response = await client.get(
        "/graphql",
        params={"query": "{ __typename }", param: '{"a": ' + nested(2000) + "}"},
        headers={"accept": GRJSON},
    )
    assert response.status_code == 400 and error_codes(response.json()) == ["BAD_REQUEST"]


async def test_nesting_at_the_bound_is_not_refused_for_depth(client: httpx.AsyncClient) -> None:
    # The body object itself and the variables object take two levels.
    at_bound = '{"query": "{ __typename }", "variables": {"a": ' + nested(DEPTH - 2) + "}}"
    ok = await post_raw(client, at_bound)
    assert "nested" not in ok.text and ok.status_code != 500
    past = '{"query": "{ __typename }", "variables": {"a": ' + nested(DEPTH - 1) + "}}"
    assert (await post_raw(client, past)).status_code == 400


async def test_deep_nesting_in_a_websocket_message_closes_the_socket_cleanly(live_server: str) -> None:
    url = live_server.replace("http://", "ws://") + "/graphql"
    async with connect(url, subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
        await ws.send('{"type": "connection_init", "payload": ' + nested(5000) + "}")
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4400


async def test_a_deeply_nested_list_literal_in_the_document_is_a_parse_error(gql: GraphQLClient) -> None:
    body = await gql("{ policyVersions(region: " + nested(1400) + ") { region } }")
    assert error_codes(body) == ["GRAPHQL_PARSE_FAILED"]


# -- the schema's String and ID arguments -------------------------------------------------------------

SCHEMA = build_schema(Settings()).as_str()
_GRAPHQL_SCHEMA = build_schema(Settings())._schema


def _unwrap(type_: Any) -> Any:
    while isinstance(type_, GraphQLNonNull | GraphQLList):
        type_ = type_.of_type
    return type_


def _dummy(type_: Any) -> Any:
    """A value that coerces to `type_`: validation must pass so that the input checks are reached."""
    if isinstance(type_, GraphQLNonNull):
        return _dummy(type_.of_type)
    if isinstance(type_, GraphQLList):
        return [_dummy(type_.of_type)]
    if isinstance(type_, GraphQLEnumType):
        return next(iter(type_.values))
    if isinstance(type_, GraphQLInputObjectType):
        return {
            name: _dummy(field.type)
            for name, field in type_.fields.items()
            if isinstance(field.type, GraphQLNonNull)
        }
    assert isinstance(type_, GraphQLScalarType)
    return {
        "String": "x",
        "ID": "1",
        "Int": 1,
        "Float": 1.0,
        "Boolean": True,
        "Date": "2026-01-01",
        "DateTime": "2026-01-01T00:00:00+00:00",
        "JSON": {},
    }[type_.name]


def _string_slots(arg: GraphQLArgument) -> Iterator[tuple[list[str], Any]]:
    """Paths inside one argument where a String goes: [] for the argument itself, [field] inside an
    input object (one level down is where every input of this schema keeps its text)."""
    named = _unwrap(arg.type)
    if isinstance(named, GraphQLScalarType) and named.name == "String":
        yield [], arg.type
    if isinstance(named, GraphQLInputObjectType):
        for name, field in named.fields.items():
            inner = _unwrap(field.type)
            if isinstance(inner, GraphQLScalarType) and inner.name == "String":
                yield [name], field.type


def _operations() -> Iterator[tuple[str, str, dict[str, GraphQLArgument]]]:
    for kind, root in (("query", _GRAPHQL_SCHEMA.query_type), ("mutation", _GRAPHQL_SCHEMA.mutation_type)):
        assert root is not None
        for name, field in root.fields.items():
            selection = "" if isinstance(_unwrap(field.type), GraphQLScalarType) else "{ __typename }"
            yield kind, f"{name} {selection}", field.args


def _document(kind: str, field: str, args: dict[str, GraphQLArgument]) -> str:
    declared = ", ".join(f"${name}: {arg.type}" for name, arg in args.items())
    passed = ", ".join(f"{name}: ${name}" for name in args)
    name, _, selection = field.partition(" ")
    return f"{kind}({declared}) {{ {name}({passed}) {selection} }}" if args else f"{kind} {{ {field} }}"


def _string_cases() -> list[tuple[str, str, dict[str, Any], str]]:
    cases = []
    for kind, field, args in _operations():
        for arg_name, arg in args.items():
            for path, _ in _string_slots(arg):
                variables = {name: _dummy(a.type) for name, a in args.items()}
                target = variables
                key = arg_name
                for segment in path:
                    target = target[key]
                    if isinstance(target, list):  # a list of input objects: text goes in its first item
                        target = target[0]
                    key = segment
                target[key] = "__TEXT__"
                cases.append((kind, field, variables, ".".join([arg_name, *path])))
    return cases


STRING_CASES = _string_cases()
ID_CASES = [
    (kind, field, args, name)
    for kind, field, args in _operations()
    for name, arg in args.items()
    if isinstance(_unwrap(arg.type), GraphQLScalarType) and _unwrap(arg.type).name == "ID"
]


def test_the_walk_covers_the_arguments_the_issue_names() -> None:
    fields = {(field.split(" ")[0], path) for _, field, _, path in STRING_CASES}
    for expected in [
        ("refreshToken", "refreshToken"),
        ("logout", "refreshToken"),
        ("policyVersions", "region"),
        ("reportDeviceLost", "reason") if "reportDeviceLost(reason" in SCHEMA else ("login", "code"),
        ("requestFamilyLink", "input.evidence"),
    ]:
        assert expected in fields, expected
    assert len(ID_CASES) >= 8


def _body(variables: dict[str, Any], text: str, document: str) -> str:
    """The request body with the placeholder replaced by raw JSON text (which may hold a lone
    surrogate escape: json.dumps would write one, but httpx would refuse to encode the str)."""
    body = json.dumps({"query": document, "variables": variables})
    return body.replace('"__TEXT__"', text)


@pytest.mark.parametrize(("kind", "field", "variables", "path"), STRING_CASES)
async def test_every_string_argument_refuses_unstorable_text_naming_the_field(
    client: httpx.AsyncClient, kind: str, field: str, variables: dict[str, Any], path: str
) -> None:
    args = {name: a for k, f, a in _operations() if (k, f) == (kind, field) for name in a}
    document = _document(kind, field, next(a for k, f, a in _operations() if (k, f) == (kind, field)))
    assert args
    for text in ('"\\ud800"', '"tail\\udfff"', '"nul\\u0000byte"'):
        response = await post_raw(client, _body(variables, text, document))
        assert response.status_code == 400, (field, text, response.text)
        errors = response.json()["errors"]
        assert errors[0]["extensions"] == {"code": "BAD_USER_INPUT", "field": path}, (field, errors)


@pytest.mark.parametrize(("kind", "field", "variables", "path"), STRING_CASES)
async def test_every_string_argument_with_a_megabyte_of_text_gets_a_coded_4xx(
    client: httpx.AsyncClient, kind: str, field: str, variables: dict[str, Any], path: str
) -> None:
    document = _document(kind, field, next(a for k, f, a in _operations() if (k, f) == (kind, field)))
    # A megabyte of UTF-8 (past the body limit), and 360 KB: under it, but past the text bound.
    for chars in (350_000, jsonlimits.MAX_TEXT_CHARS + 20_000):
        text = json.dumps("文" * chars, ensure_ascii=False)
        response = await post_raw(client, _body(variables, text, document))
        assert 400 <= response.status_code < 500, (field, response.status_code)
        error = response.json()["errors"][0]
        assert error["extensions"]["code"] in ("PAYLOAD_TOO_LARGE", "BAD_USER_INPUT")
        assert len(error["message"]) < 200


async def test_inline_text_that_cannot_be_stored_names_the_argument(gql: GraphQLClient) -> None:
    body = await gql('{ policyVersions(region: "a\\u0000b") { region } }')
    assert body["errors"][0]["extensions"] == {"code": "BAD_USER_INPUT", "field": "region"}
    assert gql.last is not None and gql.last.status_code == 400
    # An unpaired surrogate escape in the document is refused by the GraphQL parser itself.
    assert error_codes(await gql('{ policyVersions(region: "\\ud800") { region } }')) == [
        "GRAPHQL_PARSE_FAILED"
    ]


# -- 8. messages quote a short prefix at most ----------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "variables"),
    [
        ("{ " + "x" * 900_000 + " }", {}),
        ("query($d: Date) { policyVersions(region: $d) { region } }", {"d": "y" * 900_000}),
        ("query($n: Int) { me { settlements(first: $n) { totalCount } } }", {"n": "9" * 90_000}),
        ("query($e: LinkPermission!) { __typename @include(if: true) }", {"e": "z" * 90_000}),
        ("mutation($t: String!) { logout(refreshToken: $t) }", {"t": "t" * 900_000}),
        ("{ __typename } fragment " + "f" * 90_000 + " on Query { __typename }", {}),
    ],
)
async def test_errors_never_echo_megabytes(
    client: httpx.AsyncClient, query: str, variables: dict[str, Any]
) -> None:
    response = await client.post("/graphql", json={"query": query, "variables": variables})
    assert response.status_code < 500
    for error in response.json()["errors"]:
        assert error["extensions"]["code"]
        assert len(error["message"]) <= 300, error["message"][:100]
        assert "x" * (jsonlimits.ECHO_CHARS + 1) not in error["message"]


# -- 9. ids are ASCII digits ---------------------------------------------------------------------------


@pytest.mark.parametrize("spelling", ["１", " 1", "1 ", "٣", "+1", "1_0", "01", "1.0", "-1", "0", "", "1e3"])
def test_parse_id_takes_plain_ascii_digits_only(spelling: str) -> None:
    with pytest.raises(BadUserInput):
        parse_id(spelling, "id")


def test_parse_id_takes_what_we_hand_out() -> None:
    assert parse_id("1", "id") == 1 and parse_id(str(2**63 - 1), "id") == 2**63 - 1


@pytest.mark.parametrize(("kind", "field", "args", "id_arg"), ID_CASES)
async def test_every_id_argument_refuses_full_width_digits(
    client: httpx.AsyncClient, kind: str, field: str, args: dict[str, GraphQLArgument], id_arg: str
) -> None:
    """As every role that may call the field: never a row, and BAD_USER_INPUT for whoever gets that far."""
    document = _document(kind, field, args)
    variables = {name: _dummy(a.type) for name, a in args.items()}
    variables[id_arg] = "１"
    codes = set()
    for login in ("resident", "reviewer", "admin", "pharmacy"):
        gql = GraphQLClient(client)
        await gql.login(login)
        body = await gql(document, variables)
        name = field.split(" ")[0]
        assert (body.get("data") or {}).get(name) is None, (login, body)
        codes.update(error_codes(body))
    assert "BAD_USER_INPUT" in codes, (field, codes)


# -- 10. several operations need a name --------------------------------------------------------------


async def test_two_operations_without_operation_name_are_refused(client: httpx.AsyncClient) -> None:
    document = "query A { __typename } query B { me { name } }"
    refused = await client.post("/graphql", json={"query": document}, headers={"accept": GRJSON})
    assert refused.status_code == 400
    assert error_codes(refused.json()) == ["GRAPHQL_VALIDATION_FAILED"]
    assert "data" not in refused.json()
    chosen = await client.post("/graphql", json={"query": document, "operationName": "A"})
    assert chosen.json() == {"data": {"__typename": "Query"}}
    single = await client.post("/graphql", json={"query": "query A { __typename }"})
    assert single.json() == {"data": {"__typename": "Query"}}


# -- 13. UTF-8 -----------------------------------------------------------------------------------------


async def test_chinese_text_is_sent_as_utf8_not_escapes(gql: GraphQLClient) -> None:
    await gql.login("resident")
    body = await gql("{ me { name insuranceTypeLabel } }")
    assert gql.last is not None
    raw = gql.last.content
    assert b"\\u" not in raw
    assert body["data"]["me"]["insuranceTypeLabel"].encode("utf-8") in raw
    assert gql.last.headers["content-type"].endswith("charset=utf-8")


# -- 11. forwarded headers only from trusted proxies ------------------------------------------------------


def _app_with(settings: Settings, **changes: Any) -> Starlette:
    """The app with other settings, on the session's (migrated, demo-loaded) database."""
    changed = settings.model_copy(update=changes)
    return create_app(changed, AppState.build(changed))


async def _login_codes(app: Starlette, peer: str, forwarded: list[str]) -> list[list[str]]:
    transport = httpx.ASGITransport(app=app, client=(peer, 4321))
    async with httpx.AsyncClient(transport=transport, base_url="http://yibao.test") as http:
        codes = []
        for address in forwarded:
            response = await http.post(
                "/graphql",
                json={"query": 'mutation { login(provider: "demo", code: "stranger") { expiresIn } }'},
                headers={"x-forwarded-for": address},
            )
            codes.append(error_codes(response.json()))
        return codes


async def test_a_client_cannot_walk_around_the_login_limit_with_x_forwarded_for(
    settings: Settings, state: AppState
) -> None:
    app = _app_with(settings, login_rate_limit=3)
    # A loopback address of its own: other tests' logins must not share this window.
    local = f"127.{secrets.randbelow(250) + 1}.{secrets.randbelow(250) + 1}.1"
    codes = await _login_codes(app, local, [f"203.0.113.{i}" for i in range(5)])
    assert codes[:3] == [[], [], []]
    assert codes[3:] == [["RATE_LIMITED"], ["RATE_LIMITED"]]


async def test_x_forwarded_for_from_a_trusted_proxy_names_the_client(
    settings: Settings, state: AppState
) -> None:
    app = _app_with(settings, login_rate_limit=3, trusted_proxies=["10.99.0.0/16"])
    # Each resident behind the balancer has their own window; a spoofed left-most entry changes nothing.
    net = secrets.randbelow(250) + 1  # addresses of this test's own, whatever ran before
    codes = await _login_codes(app, "10.99.0.7", [f"198.51.{net}.{i}" for i in range(5)])
    assert codes == [[]] * 5
    spoofed = await _login_codes(app, "10.99.0.7", [f"1.1.1.{i}, 198.51.{net}.200" for i in range(4)])
    assert spoofed[3] == ["RATE_LIMITED"]
    # The same header from an untrusted peer is ignored.
    untrusted = await _login_codes(app, f"192.0.{net}.10", [f"198.51.{net}.{i}" for i in range(4)])
    assert untrusted[3] == ["RATE_LIMITED"]


def test_trusted_proxies_must_be_addresses_or_networks() -> None:
    with pytest.raises(ValueError, match="trusted proxy"):
        Settings(trusted_proxies=["*"])
    assert Settings(trusted_proxies=["10.0.0.1", "fd00::/8"]).trusted_proxies == ["10.0.0.1", "fd00::/8"]


async def test_an_unused_variable_is_a_validation_error_and_a_bad_value_is_bad_input(
    gql: GraphQLClient,
) -> None:
    unused = await gql("query($r: String) { __typename }", {"r": "x"})
    assert error_codes(unused) == ["GRAPHQL_VALIDATION_FAILED"]
    bad = await gql("query($n: Int) { me { settlements(first: $n) { totalCount } } }", {"n": "x"})
    assert error_codes(bad) == ["BAD_USER_INPUT"]
