"""Schemathesis fuzzes every Query and Mutation field against a live server, as each demo login and
anonymously: no 5xx, and every error carries a stable ``extensions.code`` that is never
``INTERNAL_SERVER_ERROR`` (nor a non-null field that resolved to null, which the view would code as
bad input).

Schemathesis generates each operation from the schema the server serves (introspection), both
positive (schema-valid) and negative (schema-invalid) documents. Its dictionaries plant real values
into the generated arguments part of the time (link, person and facility ids, demo names and ID
numbers, live voucher codes, spare refresh tokens, a certified device, policy categories...), so that
many requests get past the look-ups into the services instead of all stopping at NOT_FOUND.

The server runs on its own fresh database (a small demo county on SQLite), not on the suite's shared
one: every mutation is sent for real (end enrolments, unlink the demo family, store policy versions,
report devices lost, log out) without changing what the other tests see. On the PostgreSQL leg of CI
(YIBAO_TEST_POSTGRES_URL set) this database stays SQLite on purpose: the fuzz is about the GraphQL
surface and the services' input handling, and the rest of the suite runs those on PostgreSQL.

CI (CI set) replays a small, fixed (derandomized, profile "ci" of tests/conftest.py) set of examples
per operation and caller; developers' runs draw more, and new ones each run. YIBAO_FUZZ_EXAMPLES
overrides the count, e.g. ``YIBAO_FUZZ_EXAMPLES=200 scripts/test tests/api/test_schemathesis.py``.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig
from schemathesis.graphql import nodes
from schemathesis.specs.graphql.schemas import GraphQLSchema
from sqlalchemy import select
from sqlmodel import col

import graphql
from api.demo import COUNTY, load_demo_county
from api.family.models import FamilyLink
from api.migrate import upgrade
from api.people.models import Facility, InsuredPerson
from api.schema import print_schema
from api.settings import Settings
from api.settlement import service as settlement_service
from api.state import AppState
from sync.settlement.policy import load_default_policies
from sync.vouchers import compose_offline_code, public_key_to_b64
from tests.conftest import serving

ROLES = ["resident", "elder", "spouse", "stranger", "pharmacy", "reviewer", "admin"]
CALLERS = ["anonymous", *ROLES]
FUZZ_PEOPLE = 50  # the smallest county Settings allows: the demo logins and a few households
PLANT = 0.7  # how often a generated argument that has a dictionary gets one of its real values

if os.environ.get("YIBAO_FUZZ_EXAMPLES"):
    EXAMPLES = int(os.environ["YIBAO_FUZZ_EXAMPLES"])
elif os.environ.get("CI"):
    EXAMPLES = 3
else:
    EXAMPLES = 12


def _operations() -> list[str]:
    """Every Query and Mutation field the server has (graphql/schema.graphql is the same text:
    test_contract_files checks that)."""
    schema = graphql.build_schema(print_schema())
    return [
        f"{root.name}.{name}"
        for root in (schema.query_type, schema.mutation_type)
        if root is not None
        for name in root.fields
    ]


OPERATIONS = _operations()


# ---------------------------------------------------------------------------- the JSON scalar

_NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True)
_LEAVES = st.one_of(
    st.integers(min_value=-(2**53), max_value=2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
    st.booleans(),
    st.none(),
)


def _containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.lists(children, max_size=5), st.dictionaries(_NAMES, children, max_size=5))


_ANY_JSON: st.SearchStrategy[Any] = st.recursive(_LEAVES, _containers, max_leaves=20)


def _literal(value: Any) -> graphql.ValueNode:
    """A JSON value as a GraphQL literal (how hypothesis-graphql puts custom scalars in documents)."""
    if value is None:
        return nodes.Null
    if isinstance(value, bool):
        return nodes.Boolean(value)
    if isinstance(value, int):
        return nodes.Int(value)
    if isinstance(value, float):
        return nodes.Float(value)
    if isinstance(value, str):
        return nodes.String(value)
    if isinstance(value, list):
        return nodes.List([_literal(item) for item in value])
    return nodes.Object(
        [
            graphql.ObjectFieldNode(name=graphql.NameNode(value=key), value=_literal(item))
            for key, item in value.items()
        ]
    )


_SHIPPED_2025: dict[str, Any] = load_default_policies().get("cn-default-2025").to_dict()


@st.composite
def _policy_versions(draw: st.DrawFn) -> dict[str, Any]:
    """The shipped 2025 tables as a new future version, with one part replaced, dropped or kept."""
    body = copy.deepcopy(_SHIPPED_2025)
    body.pop("effective_to", None)
    start = dt.date.today() + dt.timedelta(days=draw(st.integers(-3, 800)))
    body.update(
        id=draw(st.from_regex(r"fuzz-[a-z0-9]{1,12}", fullmatch=True)),
        region=draw(st.sampled_from(["000000", COUNTY, "340422", "99999x"])),
        name=draw(st.text(max_size=12)),
        effective_from=start.isoformat(),
    )
    if draw(st.booleans()):
        body["effective_to"] = (start + dt.timedelta(days=draw(st.integers(-5, 400)))).isoformat()
    node: Any = body
    while isinstance(node, dict) and node and draw(st.integers(0, 3)):
        key = draw(st.sampled_from(sorted(node)))
        if not isinstance(node[key], dict) or not draw(st.integers(0, 2)):
            action = draw(st.sampled_from(["replace", "drop", "keep"]))
            if action == "replace":
                node[key] = draw(_ANY_JSON)
            elif action == "drop":
                del node[key]
            break
        node = node[key]
    return body


schemathesis.graphql.scalar("JSON", st.one_of(_ANY_JSON, _policy_versions()).map(_literal))


# ---------------------------------------------------------------------------- the fuzz server


class _ServerErrors(logging.Handler):
    """Collects what the server logs at ERROR: the tracebacks of masked or unhandled errors."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(self.format(record))


@dataclass
class FuzzDatabase:
    settings: Settings
    people: list[tuple[str, str, str]]  # id, name, ID number
    link_ids: list[str]
    facility_ids: list[str]


@dataclass
class FuzzServer:
    url: str
    schema: GraphQLSchema
    errors: _ServerErrors
    tokens: dict[str, tuple[str, float]] = field(default_factory=dict)

    def token(self, role: str) -> str:
        """An access token of the role's own login (never one the fuzz can log out), fresh enough
        for long runs: access tokens live 15 minutes."""
        if role not in self.tokens or time.monotonic() - self.tokens[role][1] > 600:
            with httpx.Client(timeout=30) as http:
                token = _call(http, self.url, LOGIN, code=role)["login"]["accessToken"]
            self.tokens[role] = (token, time.monotonic())
        return self.tokens[role][0]


@pytest.fixture(scope="module")
async def fuzz_database(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FuzzDatabase]:
    data_dir = tmp_path_factory.mktemp("fuzz")
    fuzz = Settings(
        data_dir=data_dir,
        database_url=f"sqlite+aiosqlite:///{data_dir / 'fuzz.db'}",
        demo_people=FUZZ_PEOPLE,
        log_json=False,
        # Limits that would soon answer RATE_LIMITED to everything: test_auth, test_family and
        # test_vouchers prove them; here they would only keep the fuzz out of the services.
        login_rate_limit=10_000,
        voucher_rate_limit=10_000,
        family_proof_failures_limit=10_000,
        voucher_ttl_s=600,
        # No internet in CI: a WeChat login fails at once (connection refused), not after a timeout.
        wechat_code2session_url="http://127.0.0.1:9/sns/jscode2session",
    )
    upgrade(fuzz.resolved_database_url)
    state = AppState.build(fuzz)
    try:
        await load_demo_county(state, people=fuzz.demo_people, seed=fuzz.demo_seed)
        async with state.db.session() as session:
            rows = (
                await session.execute(
                    select(
                        col(InsuredPerson.id), col(InsuredPerson.name), col(InsuredPerson.id_number_cipher)
                    )
                    .order_by(col(InsuredPerson.id))
                    .limit(8)
                )
            ).all()
            people = [(str(pid), name, state.id_numbers.decrypt(cipher)) for pid, name, cipher in rows]
            link_ids = [
                str(i)
                for i in (
                    await session.execute(select(col(FamilyLink.id)).order_by(col(FamilyLink.id)))
                ).scalars()
            ]
            first_facilities = select(col(Facility.id)).order_by(col(Facility.id)).limit(6)
            facility_ids = [str(i) for i in (await session.execute(first_facilities)).scalars()]
    finally:
        await state.db.dispose()
    yield FuzzDatabase(fuzz, people, link_ids, facility_ids)


def _call(http: httpx.Client, url: str, query: str, token: str | None = None, **variables: Any) -> Any:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    body = http.post(url, json={"query": query, "variables": variables}, headers=headers).json()
    assert "errors" not in body, body
    return body["data"]


LOGIN = 'mutation($code: String!) { login(provider: "demo", code: $code) { accessToken refreshToken } }'


def _policy_texts() -> list[str]:
    start = dt.date.today() + dt.timedelta(days=30)
    return [
        f'id = "fuzz-text-{n}"\nextends = "cn-default-2025"\nregion = "{region}"\n'
        f'name = "模糊测试{n}"\neffective_from = {start + dt.timedelta(days=n)}\n{extra}'
        for n, (region, extra) in enumerate(
            [
                (COUNTY, "[resident.critical]\nspecial_drug_ratio_permille = 900\n"),
                ("000000", ""),
                (COUNTY, "[employee.categories.inpatient]\nratio_permille = 2000\n"),
                ("340422", "[resident]\nbasic_annual_cap_fen = -1\n"),
            ]
        )
    ]


def _dictionaries(db: FuzzDatabase, http: httpx.Client, fuzz: FuzzServer) -> dict[str, Any]:
    """Schemathesis configuration: the real values to plant into which arguments."""
    # Spare logins whose refresh tokens the fuzz may rotate, reuse and log out; the access tokens the
    # fuzz sends (FuzzServer.token) belong to other logins, which it never learns the refresh tokens of.
    url = fuzz.url
    spare = [_call(http, url, LOGIN, code=role)["login"]["refreshToken"] for role in ROLES]
    resident = fuzz.token("resident")
    link = db.link_ids[0]
    issue = "mutation($linkId: ID) { issueVoucher(linkId: $linkId) { code } }"
    codes = [
        _call(http, url, issue, fuzz.token(role), linkId=None)["issueVoucher"]["code"]
        for role in ("resident", "elder", "spouse", "stranger")
    ]
    codes += [_call(http, url, issue, resident, linkId=str(link))["issueVoucher"]["code"] for _ in range(2)]
    device = Ed25519PrivateKey.generate()
    device_key = public_key_to_b64(device.public_key())
    certified = _call(
        http,
        url,
        "mutation($key: String!) { certifyDevice(publicKey: $key) { certificate serial } }",
        resident,
        key=device_key,
    )["certifyDevice"]
    now = int(time.time())
    certificate = base64.b64decode(certified["certificate"])
    codes += [compose_offline_code(certificate, device, now, counter) for counter in (1, 2, 3)]
    keys = [device_key] + [public_key_to_b64(Ed25519PrivateKey.generate().public_key()) for _ in range(3)]
    keys.append(base64.b64encode(Ed25519PrivateKey.generate().public_key().public_bytes_raw()).decode())

    ids = sorted({*db.link_ids, "1", "2", "3", "4", "5", "0", "99999"})
    values: dict[str, list[Any]] = {
        "link_ids": ids,
        "person_ids": [pid for pid, _, _ in db.people] + ["0", str(FUZZ_PEOPLE + 1)],
        "facility_ids": [*db.facility_ids, "0"],
        "names": [name for _, name, _ in db.people],
        "id_numbers": [number for _, _, number in db.people] + [db.people[0][2].lower()],
        "codes": codes,
        "refresh_tokens": spare,
        "providers": ["demo", "wechat"],
        "logins": ROLES,
        "public_keys": keys,
        "serials": [certified["serial"]],
        "categories": [
            "general_outpatient",
            "chronic_outpatient",
            "two_diseases_outpatient",
            "inpatient",
            "pharmacy",
            "special_drug",
        ],
        "levels": ["village", "primary", "secondary", "tertiary"],
        "localities": ["local", "registered", "unregistered"],
        "item_classes": ["class_a", "class_b", "class_c"],
        "amounts": [0, 1, 99, 2_500, 68_000, 1_250_000, 2_000_000_000, -1],
        "permille": [0, 1, 100, 500, 1000, 1001],
        "page_sizes": [0, 1, 2, 20, 100, 101, -1],
        "regions": ["000000", COUNTY, "340422"],
        "policy_texts": _policy_texts(),
    }
    bindings = {
        "*.*.linkId": "link_ids",
        "Mutation.respondFamilyLink.id": "link_ids",
        "Mutation.decideProxyLink.id": "link_ids",
        "Mutation.endEnrolment.personId": "person_ids",
        "Mutation.requestFamilyLink.input.name": "names",
        "Mutation.requestFamilyLink.input.idNumber": "id_numbers",
        "Mutation.verifyVoucher.code": "codes",
        "Mutation.refreshToken.refreshToken": "refresh_tokens",
        "Mutation.logout.refreshToken": "refresh_tokens",
        "Mutation.login.provider": "providers",
        "Mutation.login.code": "logins",
        "Mutation.certifyDevice.publicKey": "public_keys",
        "Mutation.reportDeviceLost.deviceKey": "public_keys",
        "Mutation.reportDeviceLost.certificateSerial": "serials",
        "Mutation.createPolicyVersion.input.text": "policy_texts",
        "Query.policyVersions.region": "regions",
        "Query.estimateSettlement.input.linkId": "link_ids",
        "Query.estimateSettlement.input.facilityId": "facility_ids",
        "Query.estimateSettlement.input.category": "categories",
        "Query.estimateSettlement.input.facilityLevel": "levels",
        "Query.estimateSettlement.input.locality": "localities",
        "Query.estimateSettlement.input.items[*].itemClass": "item_classes",
        "Query.estimateSettlement.input.items[*].amountFen": "amounts",
        "Query.estimateSettlement.input.items[*].selfPayPermille": "permille",
        "InsuredPerson.*.first": "page_sizes",
        "Query.accessAudit.first": "page_sizes",
    }
    return {
        "dictionaries": {name: {"values": entries} for name, entries in values.items()},
        "parameters": {key: {"dictionary": name, "probability": PLANT} for key, name in bindings.items()},
    }


@pytest.fixture(scope="module")
def fuzz_server(fuzz_database: FuzzDatabase) -> Iterator[FuzzServer]:
    """The app on its own uvicorn on loopback, on the fuzz database, with every demo role logged in."""
    errors = _ServerErrors()
    logging.getLogger().addHandler(errors)
    try:
        with serving(fuzz_database.settings, "the fuzz server") as base_url:
            url = f"{base_url}/graphql"
            # Dictionaries need the server (vouchers, a certified device); the schema needs them.
            fuzz = FuzzServer(url, schemathesis.graphql.from_url(url, timeout=30), errors)
            with httpx.Client(timeout=30) as http:
                config = SchemathesisConfig.from_dict(_dictionaries(fuzz_database, http, fuzz))
            fuzz.schema = schemathesis.graphql.from_url(url, config=config, timeout=30)
            yield fuzz
    finally:
        logging.getLogger().removeHandler(errors)


# ---------------------------------------------------------------------------- the checks


def _problems(response: requests.Response) -> list[str]:
    """What the issue forbids. Schemathesis's own `not_a_server_error` is not used: it counts every
    error that is not a validation error (FORBIDDEN, NOT_FOUND...) as a server error."""
    if response.status_code >= 500:
        return [f"HTTP {response.status_code}: {response.text[:2000]}"]
    try:
        body = response.json()
    except ValueError:
        return [f"HTTP {response.status_code}, a body that is not JSON: {response.text[:500]!r}"]
    if not isinstance(body, dict):
        return [f"HTTP {response.status_code}, a body that is not a JSON object: {body!r:.500}"]
    found = []
    for error in body.get("errors") or []:
        shown = json.dumps(error, ensure_ascii=False)
        extensions = error.get("extensions") if isinstance(error, dict) else None
        code = extensions.get("code") if isinstance(extensions, dict) else None
        if not isinstance(code, str) or not code:
            found.append(f"an error without extensions.code: {shown}")
        elif code == "INTERNAL_SERVER_ERROR":
            found.append(f"INTERNAL_SERVER_ERROR: {shown}")
        elif "Cannot return null for non-nullable field" in str(error.get("message")):
            found.append(f"a non-null field resolved to null: {shown}")
    return found


def test_the_fuzz_covers_every_operation_the_server_serves(fuzz_server: FuzzServer) -> None:
    served = [f"{root}.{name}" for root in fuzz_server.schema for name in fuzz_server.schema[root]]
    assert sorted(served) == sorted(OPERATIONS)


def _fuzz(fuzz_server: FuzzServer, label: str, caller: str, examples: int) -> None:
    operation = fuzz_server.schema.find_operation_by_label(label)
    assert operation is not None, f"the server has no {label}"
    headers = {"accept": "application/graphql-response+json"}
    if caller != "anonymous":
        headers["authorization"] = f"Bearer {fuzz_server.token(caller)}"
    cases = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE)
    )

    with requests.Session() as session:

        @settings(
            max_examples=examples,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(case=cases)
        def fuzz(case: Any) -> None:
            logged = len(fuzz_server.errors.records)
            response = case.call(session=session, headers=headers, timeout=30)
            problems = _problems(response)
            assert not problems, "\n".join(
                [
                    f"{label} as {caller}:",
                    str(case.body),
                    *problems,
                    "server log:",
                    *fuzz_server.errors.records[logged:],
                ]
            )

        fuzz()


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("label", OPERATIONS)
def test_schemathesis_finds_no_server_error(fuzz_server: FuzzServer, label: str, caller: str) -> None:
    _fuzz(fuzz_server, label, caller, EXAMPLES)


def test_a_masked_error_fails_the_fuzz_with_the_server_traceback(
    fuzz_server: FuzzServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("planted failure")

    monkeypatch.setattr(settlement_service, "list_versions", broken)
    with pytest.raises(AssertionError) as failure:
        _fuzz(fuzz_server, "Query.policyVersions", "resident", examples=3)
    report = str(failure.value)
    assert "Query.policyVersions as resident" in report and "INTERNAL_SERVER_ERROR" in report
    assert "RuntimeError: planted failure" in report  # the traceback from the server's log
