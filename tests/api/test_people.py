"""`me` and its records through real GraphQL requests: pagination, filters, totals, masking."""

from __future__ import annotations

import re
from typing import Any

import pytest
from sqlalchemy import event

from api.state import AppState
from tests.conftest import GraphQLClient, error_codes

SETTLEMENTS = """
query($first: Int, $after: String, $from: Date, $to: Date) {
  me {
    settlements(first: $first, after: $after, from: $from, to: $to) {
      totalCount
      pageInfo { hasNextPage endCursor }
      edges { cursor node { id settledAt year totalFen basicFen criticalIllnessFen assistanceFen
                            personalAccountFen cashFen policyVersion facility { name level } } }
    }
  }
}"""


async def _all_settlements(gql: GraphQLClient, **filters: Any) -> tuple[list[dict[str, Any]], int]:
    nodes: list[dict[str, Any]] = []
    after = None
    total = -1
    while True:
        body = await gql(SETTLEMENTS, {"first": 7, "after": after, **filters})
        assert "errors" not in body, body
        conn = body["data"]["me"]["settlements"]
        total = conn["totalCount"]
        nodes += [edge["node"] for edge in conn["edges"]]
        if not conn["pageInfo"]["hasNextPage"]:
            return nodes, total
        after = conn["pageInfo"]["endCursor"]


async def test_me_profile_masks_the_id_number(gql: GraphQLClient) -> None:
    await gql.login("resident")
    body = await gql("{ me { name idNumberMasked insuranceType gender birthDate enrolments { startOn } } }")
    me = body["data"]["me"]
    assert re.fullmatch(r"\d{4}\*{12}[\dX]{2}", me["idNumberMasked"])
    assert me["insuranceType"] == "employee" and me["enrolments"]
    assert gql.last is not None
    assert not re.search(r"\d{17}[\dX]", gql.last.text), "a full ID number leaked into a response"


async def test_pages_cover_every_settlement_once_newest_first(gql: GraphQLClient) -> None:
    await gql.login("resident")
    nodes, total = await _all_settlements(gql)
    assert total == len(nodes) > 40
    assert len({n["id"] for n in nodes}) == len(nodes)
    stamps = [(n["settledAt"], int(n["id"])) for n in nodes]
    assert stamps == sorted(stamps, reverse=True)
    for n in nodes:
        layers = (
            n["basicFen"]
            + n["criticalIllnessFen"]
            + n["assistanceFen"]
            + n["personalAccountFen"]
            + n["cashFen"]
        )
        assert layers == n["totalFen"], "layers must add up to the bill to the fen"
        assert n["policyVersion"]


async def test_year_totals_match_the_records(gql: GraphQLClient) -> None:
    await gql.login("resident")
    nodes, _ = await _all_settlements(gql)
    body = await gql("{ me { yearTotals { year settlementCount totalFen cashFen contributionsFen } } }")
    totals = {t["year"]: t for t in body["data"]["me"]["yearTotals"]}
    assert set(totals) == {2024, 2025, 2026}
    for year, t in totals.items():
        mine = [n for n in nodes if n["year"] == year]
        assert t["settlementCount"] == len(mine)
        assert t["totalFen"] == sum(n["totalFen"] for n in mine)
        assert t["cashFen"] == sum(n["cashFen"] for n in mine)
        assert t["contributionsFen"] > 0


async def test_date_filter_is_inclusive_local_dates(gql: GraphQLClient) -> None:
    await gql.login("resident")
    everything, _ = await _all_settlements(gql)
    in_2025, total = await _all_settlements(gql, **{"from": "2025-01-01", "to": "2025-12-31"})
    assert total == len(in_2025) == len([n for n in everything if n["year"] == 2025]) > 0


async def test_swapped_date_range_is_bad_user_input(gql: GraphQLClient) -> None:
    await gql.login("resident")
    body = await gql(SETTLEMENTS, {"from": "2025-12-31", "to": "2025-01-01"})
    assert error_codes(body) == ["BAD_USER_INPUT"]
    assert body["errors"][0]["extensions"]["field"] == "from"


async def test_cursor_from_another_users_list_is_refused(gql: GraphQLClient) -> None:
    await gql.login("elder")
    body = await gql(SETTLEMENTS, {"first": 1})
    foreign = body["data"]["me"]["settlements"]["pageInfo"]["endCursor"]
    assert foreign
    await gql.login("resident")
    body = await gql(SETTLEMENTS, {"first": 5, "after": foreign})
    assert error_codes(body) == ["BAD_USER_INPUT"]


@pytest.mark.parametrize("cursor", ["garbage", "", "a" * 600, "eyJ4IjoxfQ"])
async def test_tampered_cursor_is_refused(gql: GraphQLClient, cursor: str) -> None:
    await gql.login("resident")
    body = await gql(SETTLEMENTS, {"first": 5, "after": cursor})
    assert error_codes(body) == ["BAD_USER_INPUT"]


async def test_edited_cursor_is_refused(gql: GraphQLClient) -> None:
    await gql.login("resident")
    body = await gql(SETTLEMENTS, {"first": 1})
    cursor = body["data"]["me"]["settlements"]["pageInfo"]["endCursor"]
    flipped = cursor[:-2] + ("A" if cursor[-2] != "A" else "B") + cursor[-1]
    assert error_codes(await gql(SETTLEMENTS, {"first": 5, "after": flipped})) == ["BAD_USER_INPUT"]


@pytest.mark.parametrize("first", [-1, 101])
async def test_page_size_bounds(gql: GraphQLClient, first: int) -> None:
    await gql.login("resident")
    body = await gql(SETTLEMENTS, {"first": first})
    assert error_codes(body) == ["BAD_USER_INPUT"]


async def test_contributions_and_account_flows(gql: GraphQLClient) -> None:
    await gql.login("resident")
    body = await gql(
        "{ me { personalAccount { balanceFen } contributions(first: 3) { totalCount edges { node { period amountFen } } }"
        " accountFlows(first: 100) { totalCount edges { node { kind amountFen balanceAfterFen } } } } }"
    )
    me = body["data"]["me"]
    assert me["contributions"]["totalCount"] >= 30  # three years of monthly employee contributions
    flows = me["accountFlows"]["edges"]
    assert flows and flows[0]["node"]["balanceAfterFen"] == me["personalAccount"]["balanceFen"]


async def test_a_page_of_fifty_with_facilities_takes_bounded_queries(
    gql: GraphQLClient, state: AppState
) -> None:
    await gql.login("resident")
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    engine = state.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        body = await gql(SETTLEMENTS, {"first": 50})
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert len(body["data"]["me"]["settlements"]["edges"]) == 50
    # session check + person + page + count + one batched facility look-up
    assert len(statements) <= 5, statements
    assert sum("FROM facilities" in s for s in statements) == 1


async def test_me_needs_a_resident(gql: GraphQLClient) -> None:
    await gql.login("reviewer")
    assert error_codes(await gql("{ me { name } }")) == ["FORBIDDEN"]


@pytest.mark.parametrize(
    ("variables", "field"),
    [
        ({"to": "9999-12-31"}, "to"),
        ({"from": "0001-01-01"}, "from"),
        ({"from": "0001-01-01", "to": "0001-01-02"}, "from"),
    ],
)
async def test_extreme_dates_are_bad_user_input(
    gql: GraphQLClient, variables: dict[str, str], field: str
) -> None:
    await gql.login("resident")
    body = await gql(SETTLEMENTS, variables)
    assert error_codes(body) == ["BAD_USER_INPUT"]
    assert body["errors"][0]["extensions"]["field"] == field


async def test_end_enrolment_refuses_a_future_date_and_absurd_ids(
    gql: GraphQLClient, state: AppState
) -> None:
    import datetime as dt

    from api.auth.models import Role
    from tests.api import familyworld as world

    member = await world.person(state)
    admin = await world.staff(state, Role.ADMIN)
    end = "mutation($p: ID!, $d: Date!) { endEnrolment(personId: $p, endOn: $d) { endOn } }"
    tomorrow = (dt.datetime.now(dt.UTC) + dt.timedelta(days=2)).date().isoformat()
    body = await gql(end, {"p": str(member.person_id), "d": tomorrow}, token=admin)
    assert error_codes(body) == ["BAD_USER_INPUT"] and body["errors"][0]["extensions"]["field"] == "endOn"
    for absurd in ("99999999999999999999", "-1", "x"):
        body = await gql(end, {"p": absurd, "d": "2025-01-01"}, token=admin)
        assert error_codes(body) in (["NOT_FOUND"], ["BAD_USER_INPUT"]), body


async def test_demo_personal_accounts_agree_with_their_flows(state: AppState) -> None:
    from sqlalchemy import func, select

    from api.people.models import AccountFlow, PersonalAccount

    async with state.db.session() as session:
        sums = dict(
            (
                await session.execute(
                    select(AccountFlow.person_id, func.sum(AccountFlow.amount_fen)).group_by(
                        AccountFlow.person_id
                    )
                )
            ).all()
        )
        accounts = (await session.execute(select(PersonalAccount))).scalars().all()
    assert accounts
    for account in accounts:
        assert account.balance_fen == sums.get(account.person_id, 0), account.person_id
