"""亲情账户 through real GraphQL requests: proof, consent, proxy review, permissions, unlinking, audit."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update
from sqlmodel import col

from api.auth.models import Role
from api.family.models import OPEN_STATUSES, FamilyLink, LinkMethod, Permission
from api.state import AppState
from tests.api import familyworld as world
from tests.conftest import GraphQLClient, error_codes

LINK_FIELDS = (
    "id relationship method status myRole holderName relativeName relativeIdNumberMasked "
    "permissions requestedPermissions evidence decisionNote expiresAt"
)
REQUEST = f"""mutation($input: RequestFamilyLinkInput!) {{ requestFamilyLink(input: $input) {{ {LINK_FIELDS} }} }}"""
RESPOND = f"""mutation($id: ID!, $accept: Boolean!, $permissions: [LinkPermission!]) {{
  respondFamilyLink(id: $id, accept: $accept, permissions: $permissions) {{ {LINK_FIELDS} }} }}"""
UPDATE = f"""mutation($linkId: ID!, $permissions: [LinkPermission!]!) {{
  updateLinkPermissions(linkId: $linkId, permissions: $permissions) {{ {LINK_FIELDS} }} }}"""
UNLINK = f"mutation($linkId: ID!) {{ unlinkFamily(linkId: $linkId) {{ {LINK_FIELDS} }} }}"
ALL = ["SHOW_VOUCHER", "READ_RECORDS", "FILE_ON_BEHALF"]
LINKS = f"query($all: Boolean!) {{ familyLinks(includeClosed: $all) {{ {LINK_FIELDS} }} }}"
RELATIVE = "query($linkId: ID!) { relative(linkId: $linkId) { name idNumberMasked } }"
RELATIVE_RECORDS = """query($linkId: ID!) { relative(linkId: $linkId) {
  name settlements(first: 2) { totalCount edges { node { id totalFen } } } } }"""
AUDIT = """query { accessAudit(first: 50) { totalCount edges { node { action linkId actorName occurredAt } } } }"""
AUDIT_DETAIL = """query { accessAudit(first: 50) { edges { node { action detail linkId actorName } } } }"""
AUDIT_PAGE = """query($after: String) { accessAudit(first: 100, after: $after) {
  pageInfo { hasNextPage endCursor } edges { node { action detail linkId actorName actorRole } } } }"""
DETAILS = """query($linkId: ID!) { relative(linkId: $linkId) {
  name gender birthDate assistanceCategory chronicDiseases twoDiseases } }"""


def ask(relative: world.Member, relationship: str = "SPOUSE", **extra: Any) -> dict[str, Any]:
    return {
        "input": {
            "relationship": relationship,
            "name": relative.name,
            "idNumber": relative.id_number,
            **extra,
        }
    }


def data(body: dict[str, Any]) -> Any:
    assert "errors" not in body, body
    return body["data"]


async def everything_in_audit(gql: GraphQLClient, token: str | None = None) -> list[dict[str, Any]]:
    """The caller's whole access audit, newest first."""
    entries: list[dict[str, Any]] = []
    after = None
    while True:
        page = data(await gql(AUDIT_PAGE, {"after": after}, token=token))["accessAudit"]
        entries += [edge["node"] for edge in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            return entries
        after = page["pageInfo"]["endCursor"]


async def test_demo_holder_acts_for_the_elder_and_the_elder_sees_the_audit(gql: GraphQLClient) -> None:
    await gql.login("resident")
    links = data(await gql(LINKS, {"all": False}))["familyLinks"]
    elder = [link for link in links if link["method"] == "PROXY"]
    assert len(elder) == 1 and elder[0]["status"] == "ACTIVE" and elder[0]["myRole"] == "holder"
    assert set(elder[0]["permissions"]) == {"SHOW_VOUCHER", "READ_RECORDS", "FILE_ON_BEHALF"}
    link_id = elder[0]["id"]

    me = data(await gql("{ me { name } }"))["me"]
    person = data(await gql(RELATIVE_RECORDS, {"linkId": link_id}))["relative"]
    assert person["name"] == elder[0]["relativeName"] != me["name"]
    assert person["settlements"]["totalCount"] > 0

    await gql.login("elder")
    entries = [e["node"] for e in data(await gql(AUDIT))["accessAudit"]["edges"]]
    mine = [e for e in entries if e["linkId"] == link_id and e["action"].startswith("read:")]
    assert {"read:profile", "read:settlements"} <= {e["action"] for e in mine}
    assert all(e["actorName"] == me["name"] for e in mine)
    # The elder also sees how the link came about: her request in his name, and the reviewer's approval
    # (made before his own login existed, so it stays valid; he can end it, see the proxy tests).
    history = [
        (e["action"], e["actorRole"]) for e in await everything_in_audit(gql) if e["linkId"] == link_id
    ]
    assert history[-2:] == [("link_granted", "reviewer"), ("link_requested", "holder")]
    # The elder's own link list shows the link from the relative's side.
    theirs = data(await gql(LINKS, {"all": False}))["familyLinks"]
    assert [(link["id"], link["myRole"]) for link in theirs] == [(link_id, "relative")]


async def test_request_confirm_narrow_and_widen(gql: GraphQLClient, state: AppState) -> None:
    holder, spouse = await world.couple(state)
    body = data(await gql(REQUEST, ask(spouse, "SPOUSE"), token=holder.token))["requestFamilyLink"]
    assert body["status"] == "PENDING" and body["method"] == "CONFIRMATION" and body["permissions"] == []
    assert len(body["requestedPermissions"]) == 3 and body["expiresAt"]
    link_id = body["id"]
    # Not yet confirmed: nothing can be read.
    assert error_codes(await gql(RELATIVE, {"linkId": link_id}, token=holder.token)) == ["FORBIDDEN"]

    pending = data(await gql(LINKS, {"all": False}, token=spouse.token))["familyLinks"]
    assert [(p["id"], p["myRole"]) for p in pending] == [(link_id, "relative")]
    accepted = data(
        await gql(
            RESPOND, {"id": link_id, "accept": True, "permissions": ["SHOW_VOUCHER"]}, token=spouse.token
        )
    )
    assert accepted["respondFamilyLink"]["status"] == "ACTIVE"
    assert accepted["respondFamilyLink"]["permissions"] == ["SHOW_VOUCHER"]
    # The relative's audit shows the consent itself: who granted what through which link.
    granted = [e["node"] for e in data(await gql(AUDIT_DETAIL, token=spouse.token))["accessAudit"]["edges"]]
    assert {
        "action": "link_granted",
        "detail": "show_voucher",
        "linkId": link_id,
        "actorName": spouse.name,
    } in granted

    assert (
        data(await gql(RELATIVE, {"linkId": link_id}, token=holder.token))["relative"]["name"] == spouse.name
    )
    assert error_codes(await gql(RELATIVE_RECORDS, {"linkId": link_id}, token=holder.token)) == ["FORBIDDEN"]

    # The relative grants more, within what was asked; the holder's very next request may read.
    more = await gql(
        UPDATE, {"linkId": link_id, "permissions": ["SHOW_VOUCHER", "READ_RECORDS"]}, token=spouse.token
    )
    assert set(data(more)["updateLinkPermissions"]["permissions"]) == {"SHOW_VOUCHER", "READ_RECORDS"}
    assert data(await gql(RELATIVE_RECORDS, {"linkId": link_id}, token=holder.token))["relative"][
        "settlements"
    ]

    # The holder drops a permission: it applies at once, and asking for more needs a new grant.
    dropped = data(
        await gql(UPDATE, {"linkId": link_id, "permissions": ["SHOW_VOUCHER"]}, token=holder.token)
    )
    assert dropped["updateLinkPermissions"]["permissions"] == ["SHOW_VOUCHER"]
    assert error_codes(await gql(RELATIVE_RECORDS, {"linkId": link_id}, token=holder.token)) == ["FORBIDDEN"]
    # The relative cannot grant what the holder no longer asks for.
    too_much = await gql(UPDATE, {"linkId": link_id, "permissions": ["READ_RECORDS"]}, token=spouse.token)
    assert error_codes(too_much) == ["BAD_USER_INPUT"]


async def test_decline(gql: GraphQLClient, state: AppState) -> None:
    holder, spouse = await world.couple(state)
    link_id = data(await gql(REQUEST, ask(spouse, "SPOUSE"), token=holder.token))["requestFamilyLink"]["id"]
    # The holder cannot answer their own request.
    assert error_codes(await gql(RESPOND, {"id": link_id, "accept": True}, token=holder.token)) == [
        "NOT_FOUND"
    ]
    declined = data(await gql(RESPOND, {"id": link_id, "accept": False}, token=spouse.token))
    assert declined["respondFamilyLink"]["status"] == "DECLINED"
    assert error_codes(await gql(RESPOND, {"id": link_id, "accept": True}, token=spouse.token)) == [
        "CONFLICT"
    ]
    # A declined request does not block a new one.
    again = data(await gql(REQUEST, ask(spouse, "SPOUSE"), token=holder.token))
    assert again["requestFamilyLink"]["status"] == "PENDING"


async def test_wrong_name_or_id_is_refused_and_rate_limited_across_workers(
    client: httpx.AsyncClient, state: AppState
) -> None:
    holder, relative = await world.couple(state)  # asked as her spouse (ask()'s default)
    _, other_app = world.second_worker(state)
    transport = httpx.ASGITransport(app=other_app, client=("10.9.9.9", 1))
    async with httpx.AsyncClient(transport=transport, base_url="http://worker-b") as other_http:
        workers = [GraphQLClient(client), GraphQLClient(other_http)]
        wrong = [
            {**ask(relative)["input"], "name": relative.name + "某"},
            {**ask(relative)["input"], "idNumber": world._id_number(40)},  # a valid number of nobody
        ]
        limit = state.settings.family_proof_failures_limit
        for n in range(limit):
            body = await workers[n % 2](REQUEST, {"input": wrong[n % 2]}, token=holder.token)
            assert error_codes(body) == ["BAD_USER_INPUT"], body
            assert body["errors"][0]["extensions"]["field"] == "idNumber"
            # No oracle: the same message whether the number exists or the name is wrong.
            assert body["errors"][0]["message"] == "姓名与身份证号码不匹配，请核对后重试"
        # Over the limit, on either worker, even the right pair is refused.
        for gq in workers:
            body = await gq(REQUEST, ask(relative), token=holder.token)
            assert error_codes(body) == ["RATE_LIMITED"]
        await transport.aclose()
    # Another account is not affected.
    other = await world.person(state, gender="F")
    assert error_codes(await GraphQLClient(client)(REQUEST, ask(relative), token=other.token)) == []


@pytest.mark.parametrize("id_number", ["123", "34042119800101001X", "", "1" * 200])
async def test_malformed_id_number(gql: GraphQLClient, state: AppState, id_number: str) -> None:
    holder = await world.person(state)
    body = await gql(
        REQUEST,
        {"input": {"relationship": "SPOUSE", "name": "张三", "idNumber": id_number}},
        token=holder.token,
    )
    assert error_codes(body) == ["BAD_USER_INPUT"] and body["errors"][0]["extensions"]["field"] == "idNumber"


async def test_linking_oneself_duplicates_and_cycles(gql: GraphQLClient, state: AppState) -> None:
    holder, relative = await world.person(state), await world.person(state, age=70)
    me = ask(holder, "SPOUSE")
    body = await gql(REQUEST, me, token=holder.token)
    assert error_codes(body) == ["BAD_USER_INPUT"]

    assert data(await gql(REQUEST, ask(relative, "PARENT"), token=holder.token))
    duplicate = await gql(REQUEST, ask(relative, "PARENT"), token=holder.token)
    assert (
        error_codes(duplicate) == ["CONFLICT"]
        and duplicate["errors"][0]["extensions"]["reason"] == "duplicate"
    )
    cycle = await gql(REQUEST, ask(holder, "CHILD"), token=relative.token)
    assert error_codes(cycle) == ["CONFLICT"] and cycle["errors"][0]["extensions"]["reason"] == "cycle"


async def test_cap_on_linked_relatives(client: httpx.AsyncClient, state: AppState) -> None:
    _, capped_app = world.variant(state, family_max_links=2)
    transport = httpx.ASGITransport(app=capped_app, client=("10.8.8.8", 1))
    async with httpx.AsyncClient(transport=transport, base_url="http://capped") as http:
        gq = GraphQLClient(http)
        holder = await world.person(state, gender="F")
        relatives = [await world.person(state, gender="M") for _ in range(3)]  # asked as spouses
        first = data(await gq(REQUEST, ask(relatives[0]), token=holder.token))["requestFamilyLink"]["id"]
        assert data(await gq(REQUEST, ask(relatives[1]), token=holder.token))
        capped = await gq(REQUEST, ask(relatives[2]), token=holder.token)
        assert (
            error_codes(capped) == ["CONFLICT"]
            and capped["errors"][0]["extensions"]["reason"] == "cap_reached"
        )
        # Withdrawing a pending request frees a place.
        assert (
            data(await gq(UNLINK, {"linkId": first}, token=holder.token))["unlinkFamily"]["status"]
            == "REMOVED"
        )
        assert data(await gq(REQUEST, ask(relatives[2]), token=holder.token))


async def test_minor_in_household_is_linked_on_household_data(gql: GraphQLClient, state: AppState) -> None:
    holder = await world.person(state)
    child = await world.person(state, age=9, household_id=holder.household_id, account=False)
    body = data(await gql(REQUEST, ask(child, "CHILD"), token=holder.token))["requestFamilyLink"]
    assert body["status"] == "ACTIVE" and body["method"] == "HOUSEHOLD" and len(body["permissions"]) == 3
    assert (
        data(await gql(RELATIVE_RECORDS, {"linkId": body["id"]}, token=holder.token))["relative"]["name"]
        == child.name
    )

    elsewhere = await world.person(state, age=9, account=False)
    body = await gql(REQUEST, ask(elsewhere, "GUARDIAN"), token=holder.token)
    assert error_codes(body) == ["FORBIDDEN"]
    adult = await world.person(state, age=30)
    body = await gql(REQUEST, ask(adult, "GUARDIAN"), token=holder.token)
    assert (
        error_codes(body) == ["BAD_USER_INPUT"] and body["errors"][0]["extensions"]["field"] == "relationship"
    )


async def test_proxy_link_needs_evidence_and_a_reviewer(gql: GraphQLClient, state: AppState) -> None:
    holder = await world.person(state, gender="F")
    father = await world.person(state, age=82, account=False, gender="M")  # asked as a spouse
    no_account = await gql(REQUEST, ask(father), token=holder.token)
    assert (
        error_codes(no_account) == ["BAD_USER_INPUT"]
        and no_account["errors"][0]["extensions"]["field"] == "proxy"
    )
    no_evidence = await gql(REQUEST, ask(father, proxy=True), token=holder.token)
    assert error_codes(no_evidence) == ["BAD_USER_INPUT"]
    body = data(
        await gql(REQUEST, ask(father, proxy=True, evidence="户口簿首页及本人页"), token=holder.token)
    )
    link_id = body["requestFamilyLink"]["id"]
    assert body["requestFamilyLink"]["status"] == "PENDING" and body["requestFamilyLink"]["method"] == "PROXY"

    decide = """mutation($id: ID!, $approve: Boolean!, $note: String) {
      decideProxyLink(id: $id, approve: $approve, note: $note) { id status decisionNote evidence permissions } }"""
    assert error_codes(await gql(decide, {"id": link_id, "approve": True}, token=holder.token)) == [
        "FORBIDDEN"
    ]
    reviewer = await world.staff(state, Role.REVIEWER)
    queue = data(await gql("{ pendingProxyLinks { id evidence relativeName } }", token=reviewer))[
        "pendingProxyLinks"
    ]
    mine = [q for q in queue if q["id"] == link_id]
    assert mine and mine[0]["evidence"] == "户口簿首页及本人页" and mine[0]["relativeName"] == father.name
    assert error_codes(await gql(decide, {"id": link_id, "approve": False}, token=reviewer)) == [
        "BAD_USER_INPUT"
    ]
    approved = data(await gql(decide, {"id": link_id, "approve": True, "note": "材料齐全"}, token=reviewer))
    assert (
        approved["decideProxyLink"]["status"] == "ACTIVE"
        and approved["decideProxyLink"]["decisionNote"] == "材料齐全"
    )

    # The reviewer narrows a proxy link (the relative has no login to do it).
    narrowed = await gql(UPDATE, {"linkId": link_id, "permissions": ["SHOW_VOUCHER"]}, token=reviewer)
    assert data(narrowed)["updateLinkPermissions"]["permissions"] == ["SHOW_VOUCHER"]
    assert error_codes(await gql(RELATIVE_RECORDS, {"linkId": link_id}, token=holder.token)) == ["FORBIDDEN"]


async def test_pending_request_expires(gql: GraphQLClient, state: AppState) -> None:
    holder, spouse = await world.couple(state)
    link_id = data(await gql(REQUEST, ask(spouse, "SPOUSE"), token=holder.token))["requestFamilyLink"]["id"]
    async with state.db.session() as session:
        past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
        await session.execute(update(FamilyLink).where(FamilyLink.id == int(link_id)).values(expires_at=past))  # type: ignore[arg-type]
    body = await gql(RESPOND, {"id": link_id, "accept": True}, token=spouse.token)
    assert error_codes(body) == ["CONFLICT"] and body["errors"][0]["extensions"]["reason"] == "expired"
    closed = data(await gql(LINKS, {"all": True}, token=holder.token))["familyLinks"]
    assert [c["status"] for c in closed if c["id"] == link_id] == ["EXPIRED"]
    assert data(await gql(REQUEST, ask(spouse, "SPOUSE"), token=holder.token))


async def test_changes_apply_to_issued_tokens_in_every_worker(
    client: httpx.AsyncClient, state: AppState
) -> None:
    holder, relative = await world.person(state), await world.person(state)
    link_id = str(await world.link(state, holder, relative, set(Permission)))
    _, other_app = world.second_worker(state)
    transport = httpx.ASGITransport(app=other_app, client=("10.7.7.7", 1))
    async with httpx.AsyncClient(transport=transport, base_url="http://worker-b") as other_http:
        a, b = GraphQLClient(client), GraphQLClient(other_http)
        assert data(await b(RELATIVE_RECORDS, {"linkId": link_id}, token=holder.token))
        # The relative narrows on worker A; the holder's existing token on worker B feels it at once.
        assert data(
            await a(UPDATE, {"linkId": link_id, "permissions": ["SHOW_VOUCHER"]}, token=relative.token)
        )
        assert error_codes(await b(RELATIVE_RECORDS, {"linkId": link_id}, token=holder.token)) == [
            "FORBIDDEN"
        ]
        assert data(await b(RELATIVE, {"linkId": link_id}, token=holder.token))
        # The relative unlinks on worker B; worker A refuses the holder's next request.
        assert (
            data(await b(UNLINK, {"linkId": link_id}, token=relative.token))["unlinkFamily"]["status"]
            == "REMOVED"
        )
        assert error_codes(await a(RELATIVE, {"linkId": link_id}, token=holder.token)) == ["FORBIDDEN"]
        # Unlinking twice is harmless; a removed link cannot be re-granted.
        assert data(await a(UNLINK, {"linkId": link_id}, token=holder.token))
        body = await a(UPDATE, {"linkId": link_id, "permissions": ["SHOW_VOUCHER"]}, token=relative.token)
        assert error_codes(body) == ["CONFLICT"]
        await transport.aclose()


async def test_another_holders_link_id_reveals_nothing(gql: GraphQLClient, state: AppState) -> None:
    holder, relative, stranger = (
        await world.person(state),
        await world.person(state),
        await world.person(state),
    )
    link_id = str(await world.link(state, holder, relative, set(Permission)))
    for query in (RELATIVE, RELATIVE_RECORDS):
        assert error_codes(await gql(query, {"linkId": link_id}, token=stranger.token)) == ["NOT_FOUND"]
    # Nor may the relative themselves use the holder's side of the link.
    assert error_codes(await gql(RELATIVE, {"linkId": link_id}, token=relative.token)) == ["NOT_FOUND"]
    for mutation in (UNLINK,):
        assert error_codes(await gql(mutation, {"linkId": link_id}, token=stranger.token)) == ["NOT_FOUND"]
    assert error_codes(await gql(UPDATE, {"linkId": link_id, "permissions": []}, token=stranger.token)) == [
        "NOT_FOUND"
    ]
    for bad in ("abc", "-1", "99999999999"):
        assert error_codes(await gql(RELATIVE, {"linkId": bad}, token=holder.token)) in (
            ["BAD_USER_INPUT"],
            ["NOT_FOUND"],
        )


async def test_audit_records_every_read_and_belongs_to_the_relative(
    gql: GraphQLClient, state: AppState
) -> None:
    holder, relative = await world.person(state), await world.person(state)
    link_id = str(await world.link(state, holder, relative, set(Permission)))
    query = """query($linkId: ID!) { relative(linkId: $linkId) { name
      settlements(first: 1) { totalCount } contributions(first: 1) { totalCount }
      accountFlows(first: 1) { totalCount } personalAccount { balanceFen } enrolments { startOn }
      yearTotals { year } } }"""
    assert data(await gql(query, {"linkId": link_id}, token=holder.token))
    entries = [e["node"] for e in data(await gql(AUDIT, token=relative.token))["accessAudit"]["edges"]]
    assert sorted(e["action"] for e in entries) == sorted(
        [
            "read:profile",
            "read:settlements",
            "read:contributions",
            "read:account_flows",
            "read:personal_account",
            "read:enrolments",
            "read:year_totals",
        ]
    )
    assert {e["linkId"] for e in entries} == {link_id} and {e["actorName"] for e in entries} == {holder.name}
    # The holder's own audit holds none of it: it is the relative's data.
    assert data(await gql(AUDIT, token=holder.token))["accessAudit"]["totalCount"] == 0


async def test_cap_holds_under_concurrent_requests(client: httpx.AsyncClient, state: AppState) -> None:
    # Right proofs reserve an attempt until they are done, so a burst of them can meet the proof limit:
    # raise it, this test is about the cap.
    _, capped_app = world.variant(state, family_max_links=2, family_proof_failures_limit=50)
    transport = httpx.ASGITransport(app=capped_app, client=("10.8.8.9", 1))
    async with httpx.AsyncClient(transport=transport, base_url="http://capped") as http:
        gq = GraphQLClient(http)
        holder = await world.person(state, gender="F")
        relatives = [await world.person(state, gender="M") for _ in range(6)]  # asked as spouses
        bodies = await asyncio.gather(*(gq(REQUEST, ask(r), token=holder.token) for r in relatives))
    assert sum(1 for b in bodies if not error_codes(b)) == 2, bodies
    refused = [b for b in bodies if error_codes(b)]
    assert all(
        error_codes(b) == ["CONFLICT"] and b["errors"][0]["extensions"]["reason"] == "cap_reached"
        for b in refused
    ), [(error_codes(b), b["errors"][0]["extensions"]) for b in refused]
    async with state.db.session() as session:
        open_links = (
            await session.execute(
                select(func.count())
                .select_from(FamilyLink)
                .where(
                    col(FamilyLink.holder_person_id) == holder.person_id,
                    col(FamilyLink.status).in_(OPEN_STATUSES),
                )
            )
        ).scalar_one()
    assert open_links == 2


async def test_concurrent_guesses_cannot_exceed_the_proof_limit(
    client: httpx.AsyncClient, state: AppState
) -> None:
    """A burst of guesses at once gets no more distinguishable answers than the limit allows (before,
    every guess of a burst read the counter before any failure was counted, so the right one among
    any number of guesses answered differently from the rest: an ID oracle)."""
    limit = 3
    _, limited_app = world.variant(state, family_proof_failures_limit=limit)
    transport = httpx.ASGITransport(app=limited_app, client=("10.8.8.10", 1))
    async with httpx.AsyncClient(transport=transport, base_url="http://limited") as http:
        gq = GraphQLClient(http)
        holder, relative, later = (  # the relatives asked as her spouse (ask()'s default)
            await world.person(state, gender="F"),
            await world.person(state, gender="M"),
            await world.person(state, gender="M"),
        )
        guesses = [{**ask(relative)["input"], "idNumber": world._id_number(40)} for _ in range(12)]
        bodies = await asyncio.gather(
            *(gq(REQUEST, {"input": guess}, token=holder.token) for guess in guesses),
            gq(REQUEST, ask(relative), token=holder.token),
        )
        failed = [b for b in bodies if error_codes(b) == ["BAD_USER_INPUT"]]
        proved = [b for b in bodies if not error_codes(b)]
        limited = [b for b in bodies if error_codes(b) == ["RATE_LIMITED"]]
        # Each answer other than RATE_LIMITED tells a wrong guess apart: at most the allowance of them
        # is told apart, however many arrive at once (before the fix, all twelve were). A right pair
        # checked within the allowance may succeed (it reveals nothing not already guessed); while its
        # attempt is reserved, one wrong guess fewer gets through.
        assert limit - len(proved) <= len(failed) <= limit, bodies
        assert len(proved) <= 1
        assert len(failed) + len(proved) + len(limited) == len(bodies), bodies
        # The burst used the whole allowance: even a right pair is refused now.
        assert error_codes(await gq(REQUEST, ask(later), token=holder.token)) == ["RATE_LIMITED"]


async def test_right_guesses_do_not_use_up_the_proof_limit(
    client: httpx.AsyncClient, state: AppState
) -> None:
    limit = 2
    _, limited_app = world.variant(state, family_proof_failures_limit=limit, family_max_links=10)
    transport = httpx.ASGITransport(app=limited_app, client=("10.8.8.11", 1))
    async with httpx.AsyncClient(transport=transport, base_url="http://limited") as http:
        gq = GraphQLClient(http)
        holder = await world.person(state, gender="F")
        for _ in range(limit + 2):
            assert data(await gq(REQUEST, ask(await world.person(state, gender="M")), token=holder.token))
        wrong = {**ask(holder)["input"], "idNumber": world._id_number(40)}
        for _ in range(limit):
            assert error_codes(await gq(REQUEST, {"input": wrong}, token=holder.token)) == ["BAD_USER_INPUT"]
        assert error_codes(await gq(REQUEST, {"input": wrong}, token=holder.token)) == ["RATE_LIMITED"]


async def test_health_and_welfare_details_need_read_records(gql: GraphQLClient, state: AppState) -> None:
    holder, relative = await world.person(state), await world.person(state)
    voucher_only = str(await world.link(state, holder, relative, {Permission.SHOW_VOUCHER}))
    body = await gql(DETAILS, {"linkId": voucher_only}, token=holder.token)
    assert set(error_codes(body)) == {"FORBIDDEN"} and body["data"] is None, body
    for field in ("gender", "birthDate", "assistanceCategory", "chronicDiseases", "twoDiseases"):
        query = f"query($linkId: ID!) {{ relative(linkId: $linkId) {{ name {field} }} }}"
        assert error_codes(await gql(query, {"linkId": voucher_only}, token=holder.token)) == ["FORBIDDEN"]
    # The name and the masked ID number stay visible: they identify whose voucher is shown.
    assert data(await gql(RELATIVE, {"linkId": voucher_only}, token=holder.token))["relative"]["name"]

    other_holder, other = await world.person(state), await world.person(state)
    reading = str(await world.link(state, other_holder, other, {Permission.READ_RECORDS}))
    shown = data(await gql(DETAILS, {"linkId": reading}, token=other_holder.token))["relative"]
    assert shown["birthDate"] and shown["gender"] and isinstance(shown["chronicDiseases"], list)
    # One audit entry for the details, however many of them were asked for.
    entries = [e["node"]["action"] for e in data(await gql(AUDIT, token=other.token))["accessAudit"]["edges"]]
    assert sorted(entries) == ["read:profile", "read:profile_details"]
    # My own details need no link and write no audit.
    mine = data(
        await gql(
            "{ me { gender birthDate assistanceCategory chronicDiseases twoDiseases } }", token=holder.token
        )
    )
    assert mine["me"]["birthDate"]
    assert data(await gql(AUDIT, token=holder.token))["accessAudit"]["totalCount"] == 0


async def test_reviewer_may_only_narrow_a_proxy_link_and_every_change_is_audited(
    gql: GraphQLClient, state: AppState
) -> None:
    holder = await world.person(state)
    father = await world.person(state, age=82)  # has a login now, so he manages his own consent
    link_id = str(await world.link(state, holder, father, set(Permission), method=LinkMethod.PROXY))
    reviewer = await world.staff(state, Role.REVIEWER)
    reviewer_id = state.tokens.verify_access(reviewer).account_id

    def granted(body: dict[str, Any]) -> set[str]:
        return set(data(body)["updateLinkPermissions"]["permissions"])

    # The relative withdraws reading records.
    withdrawn = await gql(
        UPDATE, {"linkId": link_id, "permissions": ["SHOW_VOUCHER", "FILE_ON_BEHALF"]}, token=father.token
    )
    assert granted(withdrawn) == {"SHOW_VOUCHER", "FILE_ON_BEHALF"}
    # A reviewer cannot give it back over the relative's head.
    body = await gql(UPDATE, {"linkId": link_id, "permissions": ALL}, token=reviewer)
    assert error_codes(body) == ["FORBIDDEN"], body
    links = data(await gql(LINKS, {"all": False}, token=holder.token))["familyLinks"]
    assert {p for link in links if link["id"] == link_id for p in link["permissions"]} == {
        "SHOW_VOUCHER",
        "FILE_ON_BEHALF",
    }
    assert error_codes(await gql(RELATIVE_RECORDS, {"linkId": link_id}, token=holder.token)) == ["FORBIDDEN"]
    # Narrowing is what a reviewer may do.
    assert granted(
        await gql(UPDATE, {"linkId": link_id, "permissions": ["SHOW_VOUCHER"]}, token=reviewer)
    ) == {"SHOW_VOUCHER"}
    # The relative may grant again, within what the holder asks for; the holder may drop.
    assert granted(
        await gql(
            UPDATE, {"linkId": link_id, "permissions": ["SHOW_VOUCHER", "READ_RECORDS"]}, token=father.token
        )
    ) == {"SHOW_VOUCHER", "READ_RECORDS"}
    assert granted(
        await gql(UPDATE, {"linkId": link_id, "permissions": ["READ_RECORDS"]}, token=holder.token)
    ) == {"READ_RECORDS"}

    entries = [e["node"] for e in data(await gql(AUDIT_DETAIL, token=father.token))["accessAudit"]["edges"]]
    changes = [e for e in reversed(entries) if e["action"] == "update_permissions"]
    assert [(e["actorName"], e["detail"]) for e in changes] == [
        (father.name, "show_voucher,read_records,file_on_behalf → show_voucher,file_on_behalf"),
        (f"经办人员（账号{reviewer_id}）", "show_voucher,file_on_behalf → show_voucher"),
        (father.name, "show_voucher → show_voucher,read_records"),
        (
            holder.name,
            "show_voucher,read_records → read_records"
            " (requested show_voucher,read_records,file_on_behalf → read_records)",
        ),
    ]
    assert {e["linkId"] for e in changes} == {link_id}


# --- Issue 8, item 3: a proxy link never skips the consent of an adult who can give it -------------

DECIDE = """mutation($id: ID!, $approve: Boolean!, $note: String) {
  decideProxyLink(id: $id, approve: $approve, note: $note) { id status permissions } }"""
EVIDENCE = "户口簿首页及本人页"


async def test_a_relative_with_a_login_confirms_in_person_not_by_proxy(
    gql: GraphQLClient, state: AppState
) -> None:
    holder, mother = await world.person(state), await world.person(state, age=68)
    body = await gql(REQUEST, ask(mother, "PARENT", proxy=True, evidence=EVIDENCE), token=holder.token)
    assert error_codes(body) == ["BAD_USER_INPUT"], body
    assert body["errors"][0]["extensions"]["field"] == "proxy"
    assert "本人" in body["errors"][0]["message"]
    # Nothing was opened: the ordinary request, which she confirms herself, goes through.
    pending = data(await gql(REQUEST, ask(mother, "PARENT"), token=holder.token))["requestFamilyLink"]
    assert (pending["method"], pending["status"]) == ("CONFIRMATION", "PENDING")


async def test_the_reviewer_cannot_approve_once_the_relative_has_a_login(
    gql: GraphQLClient, state: AppState
) -> None:
    holder = await world.person(state)
    father = await world.person(state, age=81, account=False)
    proxy = ask(father, "PARENT", proxy=True, evidence=EVIDENCE)
    link_id = data(await gql(REQUEST, proxy, token=holder.token))["requestFamilyLink"]["id"]
    reviewer = await world.staff(state, Role.REVIEWER)

    # He opens his own login while the request waits: from now on it is his consent that counts.
    await world.add_login(state, father)
    body = await gql(DECIDE, {"id": link_id, "approve": True, "note": "材料齐全"}, token=reviewer)
    assert error_codes(body) == ["CONFLICT"], body
    assert body["errors"][0]["extensions"]["reason"] == "relative_can_confirm"
    assert error_codes(await gql(RELATIVE, {"linkId": link_id}, token=holder.token)) == ["FORBIDDEN"]

    # He learns of the request made in his name, sees it among his links and ends it himself.
    entries = await everything_in_audit(gql, father.token)
    assert [(e["action"], e["linkId"], e["actorName"]) for e in entries] == [
        ("link_requested", link_id, holder.name)
    ]
    theirs = data(await gql(LINKS, {"all": False}, token=father.token))["familyLinks"]
    assert [(t["id"], t["myRole"], t["method"], t["status"]) for t in theirs] == [
        (link_id, "relative", "PROXY", "PENDING")
    ]
    ended = data(await gql(UNLINK, {"linkId": link_id}, token=father.token))["unlinkFamily"]
    assert ended["status"] == "REMOVED"
    assert error_codes(await gql(DECIDE, {"id": link_id, "approve": True}, token=reviewer)) == ["CONFLICT"]
    assert [(e["action"], e["actorRole"]) for e in await everything_in_audit(gql, father.token)] == [
        ("link_removed", "relative"),
        ("link_requested", "holder"),
    ]


async def test_a_relative_with_a_new_login_answers_a_pending_proxy_request_themselves(
    gql: GraphQLClient, state: AppState
) -> None:
    holder = await world.person(state)
    mother = await world.person(state, age=77, account=False)
    proxy = ask(mother, "PARENT", proxy=True, evidence=EVIDENCE)
    link_id = data(await gql(REQUEST, proxy, token=holder.token))["requestFamilyLink"]["id"]
    await world.add_login(state, mother)
    accepted = data(
        await gql(
            RESPOND, {"id": link_id, "accept": True, "permissions": ["SHOW_VOUCHER"]}, token=mother.token
        )
    )["respondFamilyLink"]
    assert (accepted["status"], accepted["method"], accepted["permissions"]) == (
        "ACTIVE",
        "CONFIRMATION",
        ["SHOW_VOUCHER"],
    )
    reviewer = await world.staff(state, Role.REVIEWER)
    assert error_codes(await gql(DECIDE, {"id": link_id, "approve": True}, token=reviewer)) == ["NOT_FOUND"]
    assert [(e["action"], e["actorRole"]) for e in await everything_in_audit(gql, mother.token)] == [
        ("link_granted", "relative"),
        ("link_requested", "holder"),
    ]


async def test_the_relative_ends_an_approved_proxy_link_and_a_pending_request(
    gql: GraphQLClient, state: AppState
) -> None:
    holder = await world.person(state)
    father = await world.person(state, age=84, account=False)
    reviewer = await world.staff(state, Role.REVIEWER)
    link_id = data(
        await gql(REQUEST, ask(father, "PARENT", proxy=True, evidence=EVIDENCE), token=holder.token)
    )["requestFamilyLink"]["id"]
    assert data(await gql(DECIDE, {"id": link_id, "approve": True, "note": "材料齐全"}, token=reviewer))
    # Approved before he had a login: it stays valid until he (or the holder) ends it.
    await world.add_login(state, father)
    assert data(await gql(RELATIVE, {"linkId": link_id}, token=holder.token))
    assert data(await gql(UNLINK, {"linkId": link_id}, token=father.token))["unlinkFamily"]["status"] == (
        "REMOVED"
    )
    assert error_codes(await gql(RELATIVE, {"linkId": link_id}, token=holder.token)) == ["FORBIDDEN"]

    # A pending confirmation request can be ended by the relative too, instead of answering it.
    sister = await world.person(state)
    other = await world.person(state, age=70)
    pending = data(await gql(REQUEST, ask(other, "PARENT"), token=sister.token))["requestFamilyLink"]["id"]
    assert data(await gql(UNLINK, {"linkId": pending}, token=other.token))["unlinkFamily"]["status"] == (
        "REMOVED"
    )
    assert error_codes(await gql(RESPOND, {"id": pending, "accept": True}, token=other.token)) == ["CONFLICT"]


@pytest.mark.parametrize(
    ("holder_age", "relative_age", "gender", "relationship", "plausible"),
    [
        (40, 35, None, "CHILD", False),  # the case: a 35-year-old is not a 40-year-old's child
        (40, 45, None, "PARENT", False),
        (40, 28, None, "PARENT", False),  # younger than the holder
        (30, 30, None, "CHILD", False),
        (40, 70, None, "PARENT", True),
        (60, 30, None, "CHILD", True),
        (40, 19, "F", "SPOUSE", False),  # 民法典 第1047条: women marry from 20, men from 22
        (40, 21, "M", "SPOUSE", False),
        (40, 20, "F", "SPOUSE", True),
        (40, 22, "M", "SPOUSE", True),
    ],
)
async def test_the_relationship_must_be_plausible(
    gql: GraphQLClient,
    state: AppState,
    holder_age: int,
    relative_age: int,
    gender: str | None,
    relationship: str,
    plausible: bool,
) -> None:
    spouse_of = {"F": "M", "M": "F"}  # a spouse's age is tested here, not their gender
    holder = await world.person(state, age=holder_age, gender=spouse_of.get(gender or ""))
    relative = await world.person(state, age=relative_age, gender=gender)
    for extra in ({}, {"proxy": True, "evidence": EVIDENCE}):
        body = await gql(REQUEST, ask(relative, relationship, **extra), token=holder.token)
        if plausible:
            # Confirmation opens a request; a proxy request for someone with a login is refused as such.
            assert error_codes(body) == ([] if not extra else ["BAD_USER_INPUT"]), body
            if extra:
                assert body["errors"][0]["extensions"]["field"] == "proxy"
        else:
            assert error_codes(body) == ["BAD_USER_INPUT"], body
            assert body["errors"][0]["extensions"]["field"] == "relationship"


async def test_implausible_links_to_people_without_a_login_and_to_minors(
    gql: GraphQLClient, state: AppState
) -> None:
    holder = await world.person(state, age=40)
    # A proxy request is checked against the data we hold just the same.
    peer = await world.person(state, age=44, account=False)
    body = await gql(REQUEST, ask(peer, "PARENT", proxy=True, evidence=EVIDENCE), token=holder.token)
    assert (
        error_codes(body) == ["BAD_USER_INPUT"] and body["errors"][0]["extensions"]["field"] == "relationship"
    )
    # A minor in the household is a child only with a plausible age gap; a spouse is never a minor.
    young_holder = await world.person(state, age=19)
    sibling = await world.person(state, age=9, household_id=young_holder.household_id, account=False)
    body = await gql(REQUEST, ask(sibling, "CHILD"), token=young_holder.token)
    assert (
        error_codes(body) == ["BAD_USER_INPUT"] and body["errors"][0]["extensions"]["field"] == "relationship"
    )
    # A guardian is an adult (民法典 第27条); a 16-year-old cannot be one.
    teen = await world.person(state, age=16, gender="F")
    little = await world.person(state, age=6, household_id=teen.household_id, account=False)
    body = await gql(REQUEST, ask(little, "GUARDIAN"), token=teen.token)
    assert (
        error_codes(body) == ["BAD_USER_INPUT"] and body["errors"][0]["extensions"]["field"] == "relationship"
    )
    # The holder's age counts for a spouse too.
    adult = await world.person(state, age=30, gender="M")
    body = await gql(REQUEST, ask(adult, "SPOUSE"), token=teen.token)
    assert (
        error_codes(body) == ["BAD_USER_INPUT"] and body["errors"][0]["extensions"]["field"] == "relationship"
    )


async def test_every_request_made_in_a_persons_name_is_in_their_audit(
    gql: GraphQLClient, state: AppState
) -> None:
    holder, spouse = await world.couple(state)
    data(await gql(REQUEST, ask(spouse, "SPOUSE", permissions=["SHOW_VOUCHER"]), token=holder.token))
    entries = await everything_in_audit(gql, spouse.token)
    assert [(e["action"], e["actorName"], e["actorRole"]) for e in entries] == [
        ("link_requested", holder.name, "holder")
    ]
    assert "show_voucher" in entries[0]["detail"] and "confirmation" in entries[0]["detail"]

    # A minor linked on household data at once: the audit (read by the guardian or, later, by the
    # child) still shows who linked them and with what.
    child = await world.person(state, age=12, household_id=holder.household_id)
    link_id = data(await gql(REQUEST, ask(child, "CHILD"), token=holder.token))["requestFamilyLink"]["id"]
    actions = [(e["action"], e["linkId"]) for e in await everything_in_audit(gql, child.token)]
    assert actions == [("link_granted", link_id), ("link_requested", link_id)]


# --- Issue 8, item 4: acceptance grants exactly what the relative was shown ----------------------


async def test_changing_a_pending_request_makes_a_new_request(gql: GraphQLClient, state: AppState) -> None:
    holder, spouse = await world.couple(state)
    shown = data(await gql(REQUEST, ask(spouse, "SPOUSE", permissions=["SHOW_VOUCHER"]), token=holder.token))[
        "requestFamilyLink"
    ]
    assert shown["requestedPermissions"] == ["SHOW_VOUCHER"]
    # The relative has seen the request (voucher only); the holder now asks for everything.
    widened = data(await gql(UPDATE, {"linkId": shown["id"], "permissions": ALL}, token=holder.token))[
        "updateLinkPermissions"
    ]
    assert widened["id"] != shown["id"] and widened["status"] == "PENDING"
    assert set(widened["requestedPermissions"]) == set(ALL) and widened["permissions"] == []
    assert widened["expiresAt"] >= shown["expiresAt"]

    # Her "yes" to what she was shown cannot grant what she was not shown.
    body = await gql(RESPOND, {"id": shown["id"], "accept": True}, token=spouse.token)
    assert error_codes(body) == ["CONFLICT"], body
    assert body["errors"][0]["extensions"]["reason"] == "link_superseded"
    assert error_codes(await gql(RELATIVE, {"linkId": shown["id"]}, token=holder.token)) == ["FORBIDDEN"]
    closed = data(await gql(LINKS, {"all": True}, token=spouse.token))["familyLinks"]
    assert {c["id"]: c["status"] for c in closed} == {shown["id"]: "SUPERSEDED", widened["id"]: "PENDING"}

    # The new request is answered on its own terms: exactly what it shows, or the subset she picks.
    accepted = data(
        await gql(
            RESPOND,
            {"id": widened["id"], "accept": True, "permissions": ["SHOW_VOUCHER", "READ_RECORDS"]},
            token=spouse.token,
        )
    )["respondFamilyLink"]
    assert set(accepted["permissions"]) == {"SHOW_VOUCHER", "READ_RECORDS"}
    history = [(e["action"], e["linkId"]) for e in await everything_in_audit(gql, spouse.token)]
    assert history == [
        ("link_granted", widened["id"]),
        ("link_requested", widened["id"]),
        ("link_request_changed", shown["id"]),
        ("link_requested", shown["id"]),
    ]


async def test_an_unchanged_or_narrowed_pending_request(gql: GraphQLClient, state: AppState) -> None:
    holder, spouse = await world.couple(state)
    asked = data(await gql(REQUEST, ask(spouse, "SPOUSE"), token=holder.token))["requestFamilyLink"]
    # Asking again for the same is no change: the same request, nothing new in the audit.
    same = data(await gql(UPDATE, {"linkId": asked["id"], "permissions": ALL}, token=holder.token))
    assert same["updateLinkPermissions"]["id"] == asked["id"]
    # Narrowing is a change as well: a new request, and the old one is closed.
    narrowed = data(
        await gql(UPDATE, {"linkId": asked["id"], "permissions": ["READ_RECORDS"]}, token=holder.token)
    )["updateLinkPermissions"]
    assert narrowed["id"] != asked["id"] and narrowed["requestedPermissions"] == ["READ_RECORDS"]
    accepted = data(await gql(RESPOND, {"id": narrowed["id"], "accept": True}, token=spouse.token))
    assert accepted["respondFamilyLink"]["permissions"] == ["READ_RECORDS"]
    # The first request stays closed, whatever is asked of it.
    body = await gql(RESPOND, {"id": asked["id"], "accept": True, "permissions": ALL}, token=spouse.token)
    assert error_codes(body) == ["CONFLICT"]


async def test_a_reviewer_decides_only_the_request_as_it_stands(gql: GraphQLClient, state: AppState) -> None:
    holder = await world.person(state)
    father = await world.person(state, age=80, account=False)
    reviewer = await world.staff(state, Role.REVIEWER)
    first = data(
        await gql(
            REQUEST,
            ask(father, "PARENT", proxy=True, evidence=EVIDENCE, permissions=["READ_RECORDS"]),
            token=holder.token,
        )
    )["requestFamilyLink"]["id"]
    second = data(await gql(UPDATE, {"linkId": first, "permissions": ALL}, token=holder.token))[
        "updateLinkPermissions"
    ]
    assert second["id"] != first and second["method"] == "PROXY" and second["evidence"] == EVIDENCE
    queue = {
        q["id"] for q in data(await gql("{ pendingProxyLinks { id } }", token=reviewer))["pendingProxyLinks"]
    }
    assert second["id"] in queue and first not in queue
    body = await gql(DECIDE, {"id": first, "approve": True, "note": "同意"}, token=reviewer)
    assert error_codes(body) == ["CONFLICT"]
    approved = data(await gql(DECIDE, {"id": second["id"], "approve": True, "note": "同意"}, token=reviewer))
    assert set(approved["decideProxyLink"]["permissions"]) == set(ALL)


async def test_a_pending_request_changed_while_answered_opens_one_link_at_most(
    client: httpx.AsyncClient, state: AppState
) -> None:
    """The relative's answer and the holder's change race: whichever wins, the pair has one open link,
    and an accepted link holds only permissions of a request the relative answered."""
    _, other_app = world.second_worker(state)
    transport = httpx.ASGITransport(app=other_app, client=("10.7.7.8", 1))
    async with httpx.AsyncClient(transport=transport, base_url="http://worker-b") as other_http:
        a, b = GraphQLClient(client), GraphQLClient(other_http)
        for _ in range(3):
            holder, spouse = await world.couple(state)
            link_id = data(
                await a(REQUEST, ask(spouse, "SPOUSE", permissions=["SHOW_VOUCHER"]), token=holder.token)
            )["requestFamilyLink"]["id"]
            await asyncio.gather(
                a(RESPOND, {"id": link_id, "accept": True}, token=spouse.token),
                b(UPDATE, {"linkId": link_id, "permissions": ALL}, token=holder.token),
            )
            links = data(await a(LINKS, {"all": False}, token=spouse.token))["familyLinks"]
            assert len(links) == 1, links
            if links[0]["status"] == "ACTIVE":
                assert links[0]["permissions"] == ["SHOW_VOUCHER"], links
        await transport.aclose()


# --- Issue 8, item 6: every change to a link is in the relative's audit, with who did it -----------


@pytest.mark.parametrize("side", ["holder", "relative"])
async def test_unlinking_is_audited_on_the_relative(gql: GraphQLClient, state: AppState, side: str) -> None:
    holder, relative = await world.person(state), await world.person(state)
    link_id = str(await world.link(state, holder, relative, set(Permission)))
    by = holder if side == "holder" else relative
    assert data(await gql(UNLINK, {"linkId": link_id}, token=by.token))
    assert data(await gql(UNLINK, {"linkId": link_id}, token=by.token))  # twice: harmless, one entry
    entries = await everything_in_audit(gql, relative.token)
    assert [(e["action"], e["linkId"], e["actorName"], e["actorRole"]) for e in entries] == [
        ("link_removed", link_id, by.name, side)
    ]
    assert data(await gql(AUDIT, token=holder.token))["accessAudit"]["totalCount"] == 0


async def test_a_reviewers_decisions_name_the_reviewer(gql: GraphQLClient, state: AppState) -> None:
    holder = await world.person(state)
    father = await world.person(state, age=83, account=False)
    reviewer = await world.staff(state, Role.REVIEWER)
    reviewer_id = state.tokens.verify_access(reviewer).account_id
    proxy = ask(father, "PARENT", proxy=True, evidence=EVIDENCE)
    rejected = data(await gql(REQUEST, proxy, token=holder.token))["requestFamilyLink"]["id"]
    assert data(await gql(DECIDE, {"id": rejected, "approve": False, "note": "材料不全"}, token=reviewer))
    approved = data(await gql(REQUEST, proxy, token=holder.token))["requestFamilyLink"]["id"]
    assert data(await gql(DECIDE, {"id": approved, "approve": True, "note": "材料齐全"}, token=reviewer))
    await world.add_login(state, father)
    entries = await everything_in_audit(gql, father.token)
    assert [(e["action"], e["linkId"], e["actorRole"], e["actorName"]) for e in entries] == [
        ("link_granted", approved, "reviewer", f"经办人员（账号{reviewer_id}）"),
        ("link_requested", approved, "holder", holder.name),
        ("link_refused", rejected, "reviewer", f"经办人员（账号{reviewer_id}）"),
        ("link_requested", rejected, "holder", holder.name),
    ]


async def test_a_named_reviewer_is_shown_by_name(gql: GraphQLClient, state: AppState) -> None:
    holder = await world.person(state)
    father = await world.person(state, age=80, account=False)
    link_id = str(await world.link(state, holder, father, set(Permission), method=LinkMethod.PROXY))
    await world.add_login(state, father)
    await gql.login("reviewer")  # the demo reviewer's account has a display name
    assert data(await gql(UPDATE, {"linkId": link_id, "permissions": ["SHOW_VOUCHER"]}))
    entries = await everything_in_audit(gql, father.token)
    assert [(e["action"], e["actorName"], e["actorRole"]) for e in entries] == [
        ("update_permissions", "经办人员（医保经办审核员）", "reviewer")
    ]


@pytest.mark.parametrize("gender", ["F", "M"])
async def test_spouses_of_the_same_recorded_gender_are_refused(
    gql: GraphQLClient, state: AppState, gender: str
) -> None:
    # Before: a SPOUSE link between two women (or two men) was requested and could be confirmed.
    holder = await world.person(state, gender=gender)
    relative = await world.person(state, gender=gender)
    proxied = await world.person(state, gender=gender, account=False)
    for who, extra in ((relative, {}), (proxied, {"proxy": True, "evidence": EVIDENCE})):
        body = await gql(REQUEST, ask(who, "SPOUSE", **extra), token=holder.token)
        assert error_codes(body) == ["BAD_USER_INPUT"], body
        extensions = body["errors"][0]["extensions"]
        assert (extensions["field"], extensions["reason"]) == ("relationship", "spouse_same_gender")
        assert "一男一女" in body["errors"][0]["message"]
    # Nothing was opened: the same pair may still be linked by a relationship that fits.
    assert data(await gql(LINKS, {"all": True}, token=holder.token))["familyLinks"] == []
    elder = await world.person(state, age=70, gender=gender)
    assert data(await gql(REQUEST, ask(elder, "PARENT"), token=holder.token))
    husband, wife = await world.person(state, gender="M"), await world.person(state, gender="F")
    assert data(await gql(REQUEST, ask(wife, "SPOUSE"), token=husband.token))


async def _expire(state: AppState, link_id: str) -> None:
    async with state.db.session() as session:
        past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
        await session.execute(update(FamilyLink).where(FamilyLink.id == int(link_id)).values(expires_at=past))  # type: ignore[arg-type]


def _expiries(entries: list[dict[str, Any]], link_id: str) -> list[tuple[str, str]]:
    return [
        (e["actorRole"], e["actorName"])
        for e in entries
        if e["action"] == "link_expired" and e["linkId"] == link_id
    ]


async def test_an_expired_request_is_in_the_relatives_audit_once(gql: GraphQLClient, state: AppState) -> None:
    # Before: a request in the relative's name lapsed without a trace in their audit.
    holder, spouse = await world.couple(state)
    swept = data(await gql(REQUEST, ask(spouse, "SPOUSE"), token=holder.token))["requestFamilyLink"]["id"]
    await _expire(state, swept)
    # Noticed by a read (the sweep of pending links), then by every later read and answer: one entry.
    for token in (holder.token, holder.token, spouse.token):
        data(await gql(LINKS, {"all": True}, token=token))
    late = await gql(RESPOND, {"id": swept, "accept": True}, token=spouse.token)
    assert error_codes(late) == ["CONFLICT"] and late["errors"][0]["extensions"]["reason"] == "link_expired"
    entries = await everything_in_audit(gql, spouse.token)
    assert _expiries(entries, swept) == [("system", "系统")]
    [entry] = [e for e in entries if e["action"] == "link_expired"]
    assert entry["detail"].startswith("confirmation spouse: unanswered by ")
    assert not _expiries(await everything_in_audit(gql, holder.token), swept)  # the relative's audit

    # Noticed by the answer itself (the link read for change): one entry too.
    answered = data(await gql(REQUEST, ask(spouse, "SPOUSE"), token=holder.token))["requestFamilyLink"]["id"]
    await _expire(state, answered)
    body = await gql(RESPOND, {"id": answered, "accept": True}, token=spouse.token)
    assert error_codes(body) == ["CONFLICT"] and body["errors"][0]["extensions"]["reason"] == "expired"
    data(await gql(LINKS, {"all": True}, token=spouse.token))
    assert _expiries(await everything_in_audit(gql, spouse.token), answered) == [("system", "系统")]


async def test_unlinking_a_request_that_lapsed_records_the_lapse(gql: GraphQLClient, state: AppState) -> None:
    # Before: a request past its expiry that nobody had read since was "removed" by the holder's
    # unlink (link_removed pending), and the relative's audit never said that it had lapsed.
    holder, spouse = await world.couple(state)
    lapsed = data(await gql(REQUEST, ask(spouse, "SPOUSE"), token=holder.token))["requestFamilyLink"]["id"]
    await _expire(state, lapsed)
    ended = data(await gql(UNLINK, {"linkId": lapsed}, token=holder.token))["unlinkFamily"]
    assert ended["status"] == "EXPIRED"
    data(await gql(UNLINK, {"linkId": lapsed}, token=spouse.token))  # again, by the other side
    entries = [e for e in await everything_in_audit(gql, spouse.token) if e["linkId"] == lapsed]
    assert _expiries(entries, lapsed) == [("system", "系统")]
    assert "link_removed" not in [e["action"] for e in entries]


async def test_the_audit_actions_are_all_described(gql: GraphQLClient) -> None:
    # Before: a filing's bank-account reveal wrote `reveal:bank_account`, which the description omitted.
    body = await gql('{ __type(name: "AccessAuditEntry") { fields { name description } } }')
    fields = {f["name"]: f["description"] for f in data(body)["__type"]["fields"]}
    for action in ("reveal:bank_account", "link_expired", "link_removed", "issue_voucher", "filing:create"):
        assert f"`{action}`" in fields["action"], action
    assert "`system`" in fields["actorRole"]
