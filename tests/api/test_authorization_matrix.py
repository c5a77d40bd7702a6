"""Every field and mutation that touches person data, asked by every kind of caller.

Callers: holders with all permissions and without each one, the relative, a stranger, a reviewer, a
pharmacy, nobody; then the demo logins against the demo link (resident → elder). `ok` means data
without errors; anything else is the expected `extensions.code`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from api.auth.models import Role
from api.family.models import Permission
from api.state import AppState
from sync.vouchers import public_key_to_b64
from tests.api import familyworld as world
from tests.conftest import GraphQLClient, error_codes

ALL = ["SHOW_VOUCHER", "READ_RECORDS", "FILE_ON_BEHALF"]
RECORDS = {
    "settlements": "settlements(first: 1) { totalCount }",
    "contributions": "contributions(first: 1) { totalCount }",
    "accountFlows": "accountFlows(first: 1) { totalCount }",
    "personalAccount": "personalAccount { balanceFen }",
    "enrolments": "enrolments { startOn }",
    "yearTotals": "yearTotals { year }",
    # Health and welfare data (门诊慢特病, 两病, 救助类别) and birth date/gender: as private as records.
    "profileDetails": "gender birthDate assistanceCategory chronicDiseases twoDiseases",
}
OPERATIONS: dict[str, str] = {
    "me": "{ me { name idNumberMasked } }",
    "me.profileDetails": f"{{ me {{ name {RECORDS['profileDetails']} }} }}",
    "relative": "query($link: ID!) { relative(linkId: $link) { name idNumberMasked } }",
    **{
        f"relative.{name}": f"query($link: ID!) {{ relative(linkId: $link) {{ name {selection} }} }}"
        for name, selection in RECORDS.items()
    },
    "familyLinks": "{ familyLinks { id } }",
    "accessAudit": "{ accessAudit { totalCount } }",
    "pendingProxyLinks": "{ pendingProxyLinks { id } }",
    "issueVoucher(self)": "mutation { issueVoucher { code } }",
    "issueVoucher(link)": "mutation($link: ID!) { issueVoucher(linkId: $link) { code } }",
    "certifyDevice(link)": "mutation($link: ID!, $key: String!) { certifyDevice(publicKey: $key, linkId: $link) { serial } }",
    "verifyVoucher": 'mutation { verifyVoucher(code: "YBS:GARBAGE") { valid reason } }',
    # Non-destructive: re-asks (holder) or re-grants (relative) what the link already has.
    "updateLinkPermissions": f"mutation($link: ID!) {{ updateLinkPermissions(linkId: $link, permissions: [{', '.join(ALL)}]) {{ id }} }}",
    "decideProxyLink": 'mutation($link: ID!) { decideProxyLink(id: $link, approve: true, note: "x") { id } }',
    "unlinkFamily": "mutation($link: ID!) { unlinkFamily(linkId: $link) { status } }",
}
OK, NF, FB, UA = "ok", "NOT_FOUND", "FORBIDDEN", "UNAUTHENTICATED"
SKIP = None  # destructive for that caller: covered by test_family.py


def expectations(default_records: str, **kw: str | None) -> dict[str, str | None]:
    row: dict[str, str | None] = dict.fromkeys(OPERATIONS, OK)
    for name in RECORDS:
        row[f"relative.{name}"] = default_records
    row.update({k.replace("__", "."): v for k, v in kw.items()})
    return row


def holder(**kw: str | None) -> dict[str, str | None]:
    base: dict[str, str | None] = {
        "pendingProxyLinks": FB,
        "verifyVoucher": FB,
        "decideProxyLink": FB,
        "unlinkFamily": SKIP,
    }
    return {**expectations(kw.pop("records", OK)), **base, **kw}


RESIDENT_OUTSIDER = {
    "relative": NF,
    "issueVoucher(link)": NF,
    "certifyDevice(link)": NF,
    "pendingProxyLinks": FB,
    "verifyVoucher": FB,
    "decideProxyLink": FB,
}
STAFF = {
    "me": FB,
    "me.profileDetails": FB,
    "relative": FB,
    "familyLinks": FB,
    "accessAudit": FB,
    "issueVoucher(self)": FB,
    "issueVoucher(link)": FB,
    "certifyDevice(link)": FB,
    "unlinkFamily": FB,
}

MATRIX: dict[str, dict[str, str | None]] = {
    "holder(all)": holder(),
    "holder(no show_voucher)": holder(**{"issueVoucher(link)": FB, "certifyDevice(link)": FB}),
    "holder(no read_records)": holder(records=FB),
    "holder(no file_on_behalf)": holder(),
    "relative": {**expectations(NF), **RESIDENT_OUTSIDER, "unlinkFamily": SKIP},
    "stranger": {**expectations(NF), **RESIDENT_OUTSIDER, "updateLinkPermissions": NF, "unlinkFamily": NF},
    "reviewer": {
        **expectations(FB),
        **STAFF,
        "verifyVoucher": FB,
        "updateLinkPermissions": NF,  # reviewers manage proxy links only; this one was confirmed
        "decideProxyLink": NF,
    },
    "pharmacy": {
        **expectations(FB),
        **STAFF,
        "pendingProxyLinks": FB,
        "updateLinkPermissions": NF,
        "decideProxyLink": FB,
    },
    "nobody": dict.fromkeys(OPERATIONS, UA),
}

LINK_PERMISSIONS = {
    "holder(all)": set(Permission),
    "holder(no show_voucher)": set(Permission) - {Permission.SHOW_VOUCHER},
    "holder(no read_records)": set(Permission) - {Permission.READ_RECORDS},
    "holder(no file_on_behalf)": set(Permission) - {Permission.FILE_ON_BEHALF},
}


@dataclass
class Caller:
    token: str | None
    link_id: str


@pytest.fixture(scope="module")
async def callers(state: AppState) -> dict[str, Caller]:
    out: dict[str, Caller] = {}
    relative = await world.person(state)
    shared_link = ""
    for name, permissions in LINK_PERMISSIONS.items():
        h = await world.person(state)
        # Each variant links its own relative (one open link per pair); "all" links the shared one.
        r = relative if name == "holder(all)" else await world.person(state)
        link_id = str(await world.link(state, h, r, permissions))
        out[name] = Caller(h.token, link_id)
        if name == "holder(all)":
            shared_link = link_id
    out["relative"] = Caller(relative.token, shared_link)
    out["stranger"] = Caller((await world.person(state)).token, shared_link)
    out["reviewer"] = Caller(await world.staff(state, Role.REVIEWER), shared_link)
    out["pharmacy"] = Caller(await world.staff(state, Role.PHARMACY), shared_link)
    out["nobody"] = Caller(None, shared_link)
    return out


def _outcome(body: dict[str, Any]) -> str:
    codes = error_codes(body)
    if not codes:
        assert body.get("data"), body
        return OK
    assert len(set(codes)) == 1, body
    return str(codes[0])


CASES = [(who, op) for who, row in MATRIX.items() for op, expected in row.items() if expected is not None]


@pytest.mark.parametrize(("who", "operation"), CASES, ids=[f"{w}:{o}" for w, o in CASES])
async def test_matrix(gql: GraphQLClient, callers: dict[str, Caller], who: str, operation: str) -> None:
    caller = callers[who]
    document = OPERATIONS[operation]
    variables: dict[str, Any] = {}
    if "$link" in document:
        variables["link"] = caller.link_id
    if "$key" in document:
        variables["key"] = public_key_to_b64(Ed25519PrivateKey.generate().public_key())
    gql.token = None
    body = await gql(document, variables, token=caller.token)
    assert _outcome(body) == MATRIX[who][operation], body


DEMO_OPERATIONS = ("relative", "relative.settlements", "relative.profileDetails", "issueVoucher(link)")
DEMO: dict[str, dict[str, str]] = {
    login: {**dict.fromkeys(DEMO_OPERATIONS, outcome), "familyLinks": OK if outcome != FB else FB}
    for login, outcome in {
        "resident": OK,
        "elder": NF,
        "spouse": NF,
        "stranger": NF,
        "reviewer": FB,
        "pharmacy": FB,
        "admin": FB,
    }.items()
}


@pytest.mark.parametrize("login", list(DEMO))
async def test_demo_logins_against_the_demo_link(gql: GraphQLClient, login: str) -> None:
    await gql.login("resident")
    links = (await gql("{ familyLinks { id method } }"))["data"]["familyLinks"]
    link_id = next(link["id"] for link in links if link["method"] == "PROXY")
    await gql.login(login)
    for operation, expected in DEMO[login].items():
        body = await gql(OPERATIONS[operation], {"link": link_id} if "$link" in OPERATIONS[operation] else {})
        assert _outcome(body) == expected, (operation, body)
