"""Push (issue 9 item 5): exactly-once application of terminal outboxes, with the server's
recomputation; rejected and adjusted pushes for reviewers, clinics and residents (the stored bills of
item 2 are in test_stored_visits.py).

Each test builds its own village, clinic, terminals and villagers in the shared test database, and calls
api.replication.push.push directly with a real Terminal row (and once through POST /sync/push)."""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select
from sqlmodel import col

from api.auth.models import Account, AuthSession, Role
from api.errors import Conflict
from api.pagination import SHANGHAI
from api.people import idnumbers
from api.people.models import (
    AccountFlow,
    Enrolment,
    Facility,
    InsuredPerson,
    PersonalAccount,
    Settlement,
)
from api.replication import pull as pulling
from api.replication.models import ChangeLogEntry, PushedMutation
from api.replication.push import push
from api.settings import Settings
from api.settlement import service as settlement_service
from api.settlement.models import SettlementAdjustment
from api.state import AppState
from api.terminals.models import Terminal, TerminalStatus
from api.vouchers import service as voucher_service
from sync.protocol import (
    Bill,
    Mutation,
    MutationKind,
    SettlementCreate,
    SettlementVoid,
    Split,
    parse_push_answer,
    read_settlement_create,
    uuid7,
)
from sync.settlement import BillItem, Visit, YearToDate, compute, load_default_policies
from sync.vouchers import compose_offline_code, issue_device_certificate, issue_online_code
from tests.api import familyworld
from tests.conftest import GraphQLClient, error_codes

POLICIES = load_default_policies()
REGION = "340421"
BIRTH = dt.date(1980, 5, 5)  # an adult: no age bonus in the default policy

ISSUES = """query($clinic: ID, $status: TerminalIssueState, $outcome: TerminalIssueOutcome, $after: String) {
  terminalSettlementIssues(clinicId: $clinic, status: $status, outcome: $outcome, first: 10, after: $after) {
    totalCount pageInfo { hasNextPage endCursor }
    edges { node { id terminalId mutationId seq kind outcome reason reasonLabel clientTime receivedAt
      payload result settlementId resolved resolvedAt resolvedBy resolutionNote clinic { id name } } } } }"""
RESOLVE = """mutation($id: ID!, $note: String!) { resolveTerminalSettlementIssue(id: $id, note: $note) {
  id resolved resolvedAt resolvedBy resolutionNote } }"""
MY_SETTLEMENTS = """{ me { settlements(first: 20) { edges { node { id source voided voidedAt totalFen basicFen
  cashFen personalAccountFen policyVersion adjustment { reason reasonLabel basicDeltaFen criticalIllnessDeltaFen
  assistanceDeltaFen personalAccountDeltaFen cashDeltaFen terminalCashFen terminalPolicyVersion } } } }
  yearTotals { year settlementCount basicFen } personalAccount { balanceFen } } }"""


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def morning(days_ago: int = 1) -> dt.datetime:
    """10:00 in Shanghai a few days ago: a visit time whose neighbourhood stays on one calendar day."""
    day = dt.datetime.now(SHANGHAI).date() - dt.timedelta(days=days_ago)
    return dt.datetime.combine(day, dt.time(10), SHANGHAI).astimezone(dt.UTC)


def local_day(moment: dt.datetime) -> dt.date:
    return moment.astimezone(SHANGHAI).date()


# --------------------------------------------------------------------------------------- the world


@dataclass
class Villager:
    id: int
    ref: bytes  # the voucher ref: what codes and roster entries name
    village: str | None
    insurance_type: str = "resident"

    @property
    def roster_ref(self) -> str:
        return self.ref.hex()


def new_village() -> str:
    return f"{REGION}{secrets.randbelow(10**6):06d}"


async def clinic(state: AppState, village: str | None = None) -> Facility:
    async with state.db.session() as session:
        row = Facility(
            code=f"CT{uuid.uuid4().hex[:12]}",
            name="测试村卫生室",
            level="village",
            kind="clinic",
            region_code=REGION,
            village_code=village or new_village(),
        )
        session.add(row)
        await session.flush()
        return row


async def terminal(state: AppState, facility: Facility, **fields: Any) -> Terminal:
    assert facility.id is not None
    async with state.db.session() as session:
        fields.setdefault("enrolled_at", now() - dt.timedelta(days=60))  # before any visit of the tests
        row = Terminal(clinic_id=facility.id, public_key=secrets.token_urlsafe(32)[:43], **fields)
        session.add(row)
        await session.flush()
        return row


async def villager(
    state: AppState,
    village: str | None,
    *,
    insurance_type: str = "resident",
    balance: int | None = None,
    enrolled: tuple[dt.date, dt.date | None] = (dt.date(2024, 1, 1), None),
    person_id: int | None = None,
) -> Villager:
    """A fresh insured person of `village` (or the given existing person, moved there)."""
    async with state.db.session() as session:
        if person_id is None:
            number = familyworld._id_number(40)
            row = InsuredPerson(
                ref=uuid.uuid4().hex,
                name="测试村民",
                id_number_cipher=state.id_numbers.encrypt(number),
                id_number_hash=state.id_numbers.lookup_hash(number),
                gender=idnumbers.gender(number),
                birth_date=BIRTH,
                insurance_type=insurance_type,
                region_code=REGION,
                village_code=village,
            )
            session.add(row)
            await session.flush()
            assert row.id is not None
            session.add(
                Enrolment(
                    person_id=row.id,
                    insurance_type=insurance_type,
                    region_code=REGION,
                    start_on=enrolled[0],
                    end_on=enrolled[1],
                )
            )
            person_id = row.id
        else:
            found = await session.get(InsuredPerson, person_id)
            assert found is not None
            found.village_code, found.birth_date = village, BIRTH
        if balance is not None:  # credited by an allocation, so that the account agrees with its flows
            session.add(PersonalAccount(person_id=person_id, balance_fen=balance))
            at = now() - dt.timedelta(days=90)
            session.add(
                AccountFlow(
                    person_id=person_id,
                    occurred_at=at,
                    year=at.astimezone(SHANGHAI).year,
                    kind="allocation",
                    amount_fen=balance,
                    balance_after_fen=balance,
                )
            )
        ref = await voucher_service.person_ref(session, person_id)
    return Villager(person_id, ref, village, insurance_type)


def online_code(state: AppState, who: Villager, at: dt.datetime) -> str:
    kid, key = state.voucher_keys.signer()
    return issue_online_code(key, kid, who.ref, None, at, 60)


def offline_code(state: AppState, who: Villager, at: dt.datetime) -> str:
    """What the resident's phone shows without signal: a device-signed code under our certificate."""
    kid, key = state.voucher_keys.signer()
    device = Ed25519PrivateKey.generate()
    certificate = issue_device_certificate(
        key, kid, device.public_key(), who.ref, None, at - dt.timedelta(days=1), validity_s=7 * 86400
    )
    return compose_offline_code(certificate, device, at, counter=secrets.randbelow(1000))


def items(*amounts: int, item_class: str = "class_a") -> tuple[BillItem, ...]:
    return tuple(BillItem(a, item_class, 0, "A01", "诊疗费") for a in amounts)


def estimate(
    bill: tuple[BillItem, ...],
    day: dt.date,
    *,
    ytd: YearToDate | None = None,
    insurance_type: str = "resident",
    balance: int = 0,
    category: str = "general_outpatient",
) -> tuple[Split, str]:
    """What a terminal computes offline from its roster copy (here: an empty year, unless given)."""
    visit = Visit(
        visit_date=day,
        region=REGION,
        insurance_type=insurance_type,
        age_group="adult",
        facility_level="village",
        locality="local",
        category=category,
        items=bill,
        personal_account_balance_fen=balance,
        use_personal_account=balance > 0,
    )
    result = compute(POLICIES, visit, ytd, today=day)
    return Split.from_result(result), result.policy_version_id


def create(
    bill: tuple[BillItem, ...],
    day: dt.date,
    *,
    voucher: str | None = None,
    person_ref: str | None = None,
    split: Split | None = None,
    policy: str | None = None,
    clinic_id: str | None = None,
    balance: int = 0,
    insurance_type: str = "resident",
) -> dict[str, Any]:
    estimated, version = estimate(bill, day, balance=balance, insurance_type=insurance_type)
    return SettlementCreate(
        Bill(day, "general_outpatient", "local", bill, "village", balance > 0),
        split or estimated,
        policy or version,
        voucher=voucher,
        person_ref=person_ref,
        clinic_id=clinic_id,
    ).to_payload()


def mutation(
    seq: int, payload: dict[str, Any], at: dt.datetime, kind: MutationKind = MutationKind.SETTLEMENT_CREATE
) -> Mutation:
    return Mutation(uuid7(at), seq, kind, at, payload)


async def run(
    state: AppState, term: Terminal, batch: Sequence[Mutation], at: dt.datetime | None = None
) -> dict[str, Any]:
    async with state.db.session() as session:
        row = await session.get(Terminal, term.id)
        assert row is not None
        return await push(session, state, row, list(batch), now=at)


async def settlements_of(state: AppState, person_id: int) -> list[Settlement]:
    async with state.db.session() as session:
        rows = await session.execute(
            select(Settlement).where(col(Settlement.person_id) == person_id).order_by(col(Settlement.id))
        )
        return list(rows.scalars())


async def pushed(state: AppState, term: Terminal) -> list[PushedMutation]:
    async with state.db.session() as session:
        rows = await session.execute(
            select(PushedMutation)
            .where(col(PushedMutation.terminal_id) == term.id)
            .order_by(col(PushedMutation.seq))
        )
        return list(rows.scalars())


async def last_seq(state: AppState, term: Terminal) -> int:
    async with state.db.session() as session:
        row = await session.get(Terminal, term.id)
        assert row is not None
        return row.last_seq


def statuses(answer: dict[str, Any]) -> list[str]:
    return [r["status"] for r in answer["results"]]


# ------------------------------------------------------------------------------------- exactly once


async def test_a_batch_is_applied_once_and_a_repeat_gets_the_stored_answers(state: AppState) -> None:
    place = await clinic(state)
    term = await terminal(state, place)
    who = await villager(state, place.village_code)
    at = morning()
    day = local_day(at)
    batch = [
        mutation(1, create(items(10_000), day, voucher=online_code(state, who, at)), at),
        mutation(2, create(items(8_000), day, person_ref=who.roster_ref), at + dt.timedelta(minutes=5)),
    ]
    first = await run(state, term, batch, at + dt.timedelta(minutes=6))
    assert statuses(first) == ["applied", "applied"] and "expectedSeq" not in first
    assert [r["settlement"]["basicFen"] for r in first["results"]] == [6_000, 4_800]
    assert [r["settlement"]["identifiedBy"] for r in first["results"]] == ["voucher", "card"]
    assert parse_push_answer(first)[1] is None

    again = await run(state, term, batch, at + dt.timedelta(minutes=7))
    assert again == first
    stored = await settlements_of(state, who.id)
    assert len(stored) == 2 and [s.client_ref for s in stored] == [m.id for m in batch]
    assert all(s.source == "terminal" and s.terminal_id == term.id for s in stored)
    assert stored[0].voucher_ref is not None and stored[1].voucher_ref is None  # the card, recorded as such
    assert len(await pushed(state, term)) == 2 and await last_seq(state, term) == 2
    # Money adds up: what the answers said is what is stored.
    assert sum(s.basic_fen for s in stored) == sum(r["settlement"]["basicFen"] for r in first["results"])
    # The stored visit is the engine's input, built from the server's record: it replays to the amounts.
    replayed = compute(POLICIES, Visit.from_dict(stored[0].visit or {}), YearToDate(day.year), today=day)
    assert replayed.basic_fen == stored[0].basic_fen and replayed.cash_fen == stored[0].cash_fen


async def test_a_batch_replayed_after_a_restart_is_not_applied_again(
    state: AppState, settings: Settings
) -> None:
    place = await clinic(state)
    term = await terminal(state, place)
    who = await villager(state, place.village_code)
    at = morning()
    batch = [mutation(1, create(items(5_000), local_day(at), voucher=online_code(state, who, at)), at)]
    first = await run(state, term, batch)
    restarted = AppState.build(settings)  # a new process: nothing but the database is shared
    try:
        again = await run(restarted, term, batch)
    finally:
        await restarted.db.dispose()
    assert again == first and statuses(again) == ["applied"]
    assert len(await settlements_of(state, who.id)) == 1


async def test_a_gap_applies_nothing_past_it_and_answers_the_expected_seq(state: AppState) -> None:
    place = await clinic(state)
    term = await terminal(state, place)
    who = await villager(state, place.village_code)
    at = morning()
    day = local_day(at)

    def card(seq: int, amount: int) -> Mutation:
        return mutation(seq, create(items(amount), day, person_ref=who.roster_ref), at)

    early = await run(state, term, [card(2, 1_000), card(3, 1_100)])
    assert early == {"results": [], "expectedSeq": 1}
    one, two = card(1, 1_200), card(2, 1_300)
    answer = await run(state, term, [one, two, card(4, 1_400)])
    assert statuses(answer) == ["applied", "applied"] and answer["expectedSeq"] == 3
    # Repeats before a gap still get their stored answers; nothing past the gap is stored.
    repeat = await run(state, term, [one, two, card(5, 1_500)])
    assert repeat["results"] == answer["results"] and repeat["expectedSeq"] == 3
    assert [p.seq for p in await pushed(state, term)] == [1, 2]
    assert len(await settlements_of(state, who.id)) == 2


async def test_mutations_out_of_order_are_applied_in_seq_order(state: AppState) -> None:
    place = await clinic(state)
    term = await terminal(state, place)
    who = await villager(state, place.village_code)
    at = morning()
    day = local_day(at)
    first = mutation(1, create(items(3_000), day, person_ref=who.roster_ref), at)
    void = mutation(2, SettlementVoid(first.id).to_payload(), at, MutationKind.SETTLEMENT_VOID)
    answer = await run(state, term, [void, first])  # the void needs the create before it
    assert [(r["seq"], r["status"]) for r in answer["results"]] == [(1, "applied"), (2, "applied")]
    [settlement] = await settlements_of(state, who.id)
    assert settlement.voided_at is not None


async def test_a_seq_used_by_another_mutation_is_a_conflict_and_applies_nothing(state: AppState) -> None:
    place = await clinic(state)
    term = await terminal(state, place)
    who = await villager(state, place.village_code)
    at = morning()
    day = local_day(at)
    await run(state, term, [mutation(1, create(items(2_000), day, person_ref=who.roster_ref), at)])
    other = mutation(1, create(items(2_100), day, person_ref=who.roster_ref), at)
    follow = mutation(2, create(items(2_200), day, person_ref=who.roster_ref), at)
    with pytest.raises(Conflict) as caught:
        await run(state, term, [other, follow])
    assert caught.value.field == "mutations[0].seq"
    assert len(await settlements_of(state, who.id)) == 1 and await last_seq(state, term) == 1


async def test_a_revoked_terminal_gets_nothing_applied(state: AppState) -> None:
    place = await clinic(state)
    term = await terminal(state, place, status=TerminalStatus.REVOKED.value, revoked_at=now())
    who = await villager(state, place.village_code)
    at = morning()
    answer = await run(
        state, term, [mutation(1, create(items(2_000), local_day(at), person_ref=who.roster_ref), at)]
    )
    assert [(r["status"], r["reason"]) for r in answer["results"]] == [("rejected", "terminal_revoked")]
    assert await settlements_of(state, who.id) == [] and await pushed(state, term) == []
    assert await last_seq(state, term) == 0


# -------------------------------------------------------------------------------------- rejections


async def test_a_payload_for_another_clinic_is_rejected_and_kept(state: AppState) -> None:
    place, elsewhere = await clinic(state), await clinic(state)
    term = await terminal(state, place)
    who = await villager(state, place.village_code)
    at = morning()
    code = online_code(state, who, at)
    answer = await run(
        state,
        term,
        [mutation(1, create(items(2_000), local_day(at), voucher=code, clinic_id=str(elsewhere.id)), at)],
    )
    [result] = answer["results"]
    assert (result["status"], result["reason"], result["field"]) == (
        "rejected",
        "other_clinic",
        "payload.clinicId",
    )
    assert result["message"] == "非本机构的结算"
    [row] = await pushed(state, term)
    assert (row.status, row.reason, row.resolved_at, row.settlement_id) == (
        "rejected",
        "other_clinic",
        None,
        None,
    )
    assert await settlements_of(state, who.id) == []


@pytest.mark.parametrize(
    ("item", "field"),
    [
        ({"amount_fen": -100, "item_class": "class_a"}, "payload.visit.items[0].amount_fen"),
        ({"amount_fen": 10**12, "item_class": "class_a"}, "payload.visit.items[0].amount_fen"),
        ({"amount_fen": 99.5, "item_class": "class_a"}, "payload.visit.items[0].amount_fen"),
        ({"amount_fen": True, "item_class": "class_a"}, "payload.visit.items[0].amount_fen"),
        ({"amount_fen": 1_000, "item_class": "class_x"}, "payload.visit.items[0].item_class"),
        (
            {"amount_fen": 1_000, "item_class": "class_b", "self_pay_permille": 2_000},
            "payload.visit.items[0].self_pay_permille",
        ),
        ({"amount_fen": 1_000, "item_class": "class_a", "price": 3}, "payload.visit.items[0].price"),
    ],
)
async def test_a_bad_bill_is_rejected_with_the_engines_field_and_does_not_use_the_code(
    state: AppState, item: dict[str, Any], field: str
) -> None:
    place = await clinic(state)
    term = await terminal(state, place)
    who = await villager(state, place.village_code)
    at = morning()
    day = local_day(at)
    code = online_code(state, who, at)
    payload = create(items(1_000), day, voucher=code)
    payload["visit"]["items"] = [item]
    answer = await run(state, term, [mutation(1, payload, at)])
    [result] = answer["results"]
    assert (result["status"], result["reason"], result["field"]) == ("rejected", "bad_payload", field)
    # The code was not spent on a bill that never settled: the corrected visit goes through.
    retry = await run(state, term, [mutation(2, create(items(1_000), day, voucher=code), at)])
    assert statuses(retry) == ["applied"]


async def test_a_split_that_does_not_add_up_and_an_absurd_bill_total_are_bad_payloads(
    state: AppState,
) -> None:
    place = await clinic(state)
    term = await terminal(state, place)
    who = await villager(state, place.village_code)
    at = morning()
    day = local_day(at)
    crooked = create(items(1_000), day, person_ref=who.roster_ref, split=Split(600, 0, 0, 0, 500))
    huge = create(items(999_999_999), day, person_ref=who.roster_ref)
    huge["visit"]["items"] = huge["visit"]["items"] * 2  # each item within bounds, the total not
    answer = await run(state, term, [mutation(1, crooked, at), mutation(2, huge, at)])
    assert [(r["reason"], r["field"]) for r in answer["results"]] == [
        ("bad_payload", "payload.split"),
        ("bad_payload", "payload.visit.items"),
    ]
    assert await settlements_of(state, who.id) == []


async def test_card_visits_only_for_the_clinics_own_roster(state: AppState) -> None:
    place = await clinic(state)
    term = await terminal(state, place)
    neighbour = await villager(state, new_village())
    nobody = "0123456789abcdef"
    at = morning()
    day = local_day(at)
    answer = await run(
        state,
        term,
        [
            mutation(1, create(items(1_000), day, person_ref=neighbour.roster_ref), at),
            mutation(2, create(items(1_000), day, person_ref=nobody), at),
        ],
    )
    assert [r["reason"] for r in answer["results"]] == ["not_on_roster", "person_unknown"]
    # With the neighbour's own e-voucher the same visit is settled (the code proves who it is).
    code = online_code(state, neighbour, at)
    assert statuses(await run(state, term, [mutation(3, create(items(1_000), day, voucher=code), at)])) == [
        "applied"
    ]


async def test_not_insured_on_the_visit_day_and_a_duplicate_visit_are_rejected(state: AppState) -> None:
    place = await clinic(state)
    term = await terminal(state, place)
    at = morning()
    day = local_day(at)
    lapsed = await villager(
        state, place.village_code, enrolled=(dt.date(2024, 1, 1), day - dt.timedelta(days=1))
    )
    who = await villager(state, place.village_code)
    visit = create(items(4_000), day, person_ref=who.roster_ref)
    answer = await run(
        state,
        term,
        [
            mutation(1, create(items(4_000), day, person_ref=lapsed.roster_ref), at),
            mutation(2, visit, at),
            mutation(3, visit, at + dt.timedelta(minutes=1)),  # the same visit keyed in twice
        ],
    )
    assert [(r["status"], r.get("reason")) for r in answer["results"]] == [
        ("rejected", "not_insured"),
        ("applied", None),
        ("rejected", "duplicate_visit"),
    ]
    assert len(await settlements_of(state, who.id)) == 1


async def test_a_visit_voided_and_keyed_in_again_in_one_batch_is_no_duplicate(state: AppState) -> None:
    place = await clinic(state)
    term = await terminal(state, place)
    who = await villager(state, place.village_code)
    at = morning()
    day = local_day(at)
    visit = create(items(4_000), day, person_ref=who.roster_ref)
    first = mutation(1, visit, at)
    answer = await run(
        state,
        term,
        [
            first,
            mutation(2, SettlementVoid(first.id).to_payload(), at, MutationKind.SETTLEMENT_VOID),
            mutation(3, visit, at + dt.timedelta(minutes=1)),  # the corrected entry: same bill again
            mutation(4, visit, at + dt.timedelta(minutes=2)),  # and now a real duplicate of it
        ],
    )
    assert [(r["status"], r.get("reason")) for r in answer["results"]] == [
        ("applied", None),
        ("applied", None),
        ("applied", None),
        ("rejected", "duplicate_visit"),
    ]
    rows = await settlements_of(state, who.id)
    assert [r.voided_at is not None for r in rows] == [True, False]


async def test_a_voucher_used_at_two_offline_terminals_is_rejected_at_the_second_push(
    state: AppState, gql: GraphQLClient
) -> None:
    village = new_village()
    place, other = await clinic(state, village), await clinic(state, village)
    first_term, second_term = await terminal(state, place), await terminal(state, other)
    who = await villager(state, village)
    scanned = morning(2)  # both offline since; the phone was offline too
    code = offline_code(state, who, scanned)
    day = local_day(scanned)
    back_online = scanned + dt.timedelta(days=2)
    one = await run(
        state, first_term, [mutation(1, create(items(5_000), day, voucher=code), scanned)], back_online
    )
    assert statuses(one) == ["applied"]
    assert one["results"][0]["settlement"]["settledAt"] == scanned.isoformat()
    two = await run(
        state,
        second_term,
        [mutation(1, create(items(7_000), day, voucher=code), scanned + dt.timedelta(seconds=20))],
        back_online + dt.timedelta(hours=3),
    )
    [rejected] = two["results"]
    assert (rejected["status"], rejected["reason"], rejected["message"]) == (
        "rejected",
        "voucher_replayed",
        "医保码已被使用",
    )
    assert len(await settlements_of(state, who.id)) == 1

    # Not dropped: the reviewers see it until someone resolves it, and so does the other clinic.
    reviewer = await familyworld.staff(state, Role.REVIEWER)
    listed = await gql(ISSUES, {"clinic": str(other.id)}, token=reviewer)
    assert "errors" not in listed, listed
    [edge] = listed["data"]["terminalSettlementIssues"]["edges"]
    issue = edge["node"]
    assert issue["reason"] == "voucher_replayed" and issue["reasonLabel"] == "医保码已被使用"
    assert (issue["outcome"], issue["resolved"], issue["clinic"]["id"]) == ("REJECTED", False, str(other.id))
    assert issue["terminalId"] == str(second_term.id) and issue["result"] == rejected
    assert issue["payload"]["voucher"] == code

    counter = await clinic_login(state, other)
    own = await gql(ISSUES, {}, token=counter)
    assert [e["node"]["id"] for e in own["data"]["terminalSettlementIssues"]["edges"]] == [issue["id"]]
    assert error_codes(await gql(ISSUES, {"clinic": str(place.id)}, token=counter)) == ["FORBIDDEN"]
    assert error_codes(await gql(RESOLVE, {"id": issue["id"], "note": "已核实"}, token=counter)) == [
        "FORBIDDEN"
    ]

    async with state.db.session() as session:
        row = await session.get(Terminal, second_term.id)
        assert row is not None
        pulled = await pulling.pull(session, state, row, None, 500)
    documents = [c for c in pulled["changes"] if c["entity"] == "push_issue"]
    assert [d["data"]["reason"] for d in documents] == ["voucher_replayed"]

    resolved = await gql(
        RESOLVE, {"id": issue["id"], "note": "同一医保码在两个卫生室使用，已电话核实"}, token=reviewer
    )
    assert "errors" not in resolved, resolved
    node = resolved["data"]["resolveTerminalSettlementIssue"]
    assert node["resolved"] and node["resolvedAt"] and node["resolutionNote"].startswith("同一医保码")
    again = await gql(RESOLVE, {"id": issue["id"], "note": "再次"}, token=reviewer)
    assert error_codes(again) == ["CONFLICT"]
    assert (await gql(ISSUES, {"clinic": str(other.id)}, token=reviewer))["data"]["terminalSettlementIssues"][
        "totalCount"
    ] == 0
    done = await gql(ISSUES, {"clinic": str(other.id), "status": "RESOLVED"}, token=reviewer)
    assert [e["node"]["id"] for e in done["data"]["terminalSettlementIssues"]["edges"]] == [issue["id"]]
    async with state.db.session() as session:
        entries = await session.execute(
            select(func.count())
            .select_from(ChangeLogEntry)
            .where(col(ChangeLogEntry.entity) == "push_issue", col(ChangeLogEntry.entity_id) == issue["id"])
        )
        assert entries.scalar_one() == 2  # rejected, then resolved: the clinic's terminals pull both


async def clinic_login(state: AppState, facility: Facility) -> str:
    """A clinic's counter login (role terminal, bound to the clinic)."""
    async with state.db.session() as session:
        account = Account(
            provider="test", subject=uuid.uuid4().hex, role=Role.TERMINAL.value, facility_id=facility.id
        )
        session.add(account)
        await session.flush()
        assert account.id is not None
        auth = AuthSession(id=str(uuid.uuid4()), account_id=account.id)
        session.add(auth)
        await session.flush()
        return state.tokens.issue_access(
            account_id=account.id, role=Role.TERMINAL.value, session_id=auth.id, person_id=None, now=now()
        )


async def test_one_code_twice_in_a_batch_is_a_replay_the_second_time(state: AppState) -> None:
    place = await clinic(state)
    term = await terminal(state, place)
    who, other = await villager(state, place.village_code), await villager(state, place.village_code)
    at = morning()
    day = local_day(at)
    code = offline_code(state, who, at)
    answer = await run(
        state,
        term,
        [
            mutation(1, create(items(5_000), day, voucher=code), at),
            mutation(2, create(items(4_000), day, voucher=offline_code(state, other, at)), at),
            mutation(3, create(items(7_000), day, voucher=code), at + dt.timedelta(seconds=10)),
        ],
        at + dt.timedelta(hours=1),
    )
    assert [(r["status"], r.get("reason")) for r in answer["results"]] == [
        ("applied", None),
        ("applied", None),
        ("rejected", "voucher_replayed"),
    ]
    assert len(await settlements_of(state, who.id)) == 1


async def test_a_code_verified_elsewhere_while_the_batch_runs_makes_it_retry(state: AppState) -> None:
    """PostgreSQL: a pharmacy's online check stores the code's replay key in a transaction that commits
    after the batch read the stored keys. The batch must not settle the code too: it waits on that
    key, is rolled back and told to retry, and the retry finds the code used."""
    if state.settings.is_sqlite:
        pytest.skip("SQLite has one writer at a time: the batch's write lock comes first")
    place = await clinic(state)
    term = await terminal(state, place)
    who = await villager(state, place.village_code)
    at = now() - dt.timedelta(seconds=5)
    code = online_code(state, who, at)
    batch = [mutation(1, create(items(5_000), local_day(at), voucher=code), at)]
    async with state.db.sessionmaker() as pharmacy:
        checked = await voucher_service.verify(
            pharmacy, state.settings, state.voucher_keys, code, now=at, commit=False
        )
        assert checked.result.valid
        pushing = asyncio.ensure_future(run(state, term, batch))
        await asyncio.sleep(1.0)  # the batch has read the stored keys and waits on the pharmacy's
        assert not pushing.done()
        await pharmacy.commit()
    with pytest.raises(Conflict) as refused:
        await pushing
    assert refused.value.extensions.get("reason") == "retry"
    assert await pushed(state, term) == [] and await settlements_of(state, who.id) == []
    again = await run(state, term, batch)
    assert [(r["status"], r.get("reason")) for r in again["results"]] == [("rejected", "voucher_replayed")]


async def test_reading_issues_needs_a_reviewer_or_the_clinics_own_login(
    state: AppState, gql: GraphQLClient
) -> None:
    resident = await familyworld.person(state)
    assert error_codes(await gql(ISSUES, {}, token=resident.token)) == ["FORBIDDEN"]
    assert error_codes(await gql(ISSUES, {})) == ["UNAUTHENTICATED"]
    reviewer = await familyworld.staff(state, Role.REVIEWER)
    assert error_codes(await gql(RESOLVE, {"id": "999999999", "note": "x"}, token=reviewer)) == ["NOT_FOUND"]
    assert error_codes(await gql(RESOLVE, {"id": "abc", "note": "x"}, token=reviewer)) == ["BAD_USER_INPUT"]
    assert error_codes(await gql(ISSUES, {"clinic": "-1"}, token=reviewer)) == ["BAD_USER_INPUT"]


# ------------------------------------------------------------------------- dating, caps, money


async def test_a_terminal_clock_a_day_off_neither_breaks_nor_misdates_a_voucher_visit(
    state: AppState,
) -> None:
    place = await clinic(state)
    term = await terminal(state, place)
    who = await villager(state, place.village_code)
    at = morning()
    ahead = at + dt.timedelta(days=1)  # the terminal's clock
    code = online_code(state, who, at)  # signed by the server, at the real time
    answer = await run(
        state,
        term,
        [mutation(1, create(items(6_000), local_day(ahead), voucher=code), ahead)],
        at + dt.timedelta(minutes=2),
    )
    [result] = answer["results"]
    assert result["status"] == "adjusted" and result["adjustment"]["reason"] == "visit_date"
    assert result["settlement"]["settledAt"] == at.isoformat()  # the code's time, not the terminal's clock
    assert result["settlement"]["visitDate"] == local_day(at).isoformat()
    assert result["settlement"]["clockSkewS"] == 86_400
    assert result["adjustment"]["deltas"] == {k: 0 for k in Split(0, 0, 0, 0, 0).to_dict()}
    [stored] = await settlements_of(state, who.id)
    assert stored.settled_at == at
    [row] = await pushed(state, term)
    assert row.client_time == ahead  # kept, as the terminal sent it
    async with state.db.session() as session:
        found = await session.get(Terminal, term.id)
        assert found is not None and found.last_client_time == ahead


async def test_a_terminal_clock_a_day_off_on_card_visits_is_clamped_to_what_can_be_true(
    state: AppState,
) -> None:
    place = await clinic(state)
    term = await terminal(state, place, enrolled_at=now() - dt.timedelta(days=10))
    who = await villager(state, place.village_code)
    at = morning()
    behind, ahead = at - dt.timedelta(days=1), at + dt.timedelta(days=1)
    answer = await run(
        state,
        term,
        [
            mutation(1, create(items(2_000), local_day(behind), person_ref=who.roster_ref), behind),
            mutation(2, create(items(2_500), local_day(ahead), person_ref=who.roster_ref), ahead),
            mutation(
                3,
                create(items(2_600), local_day(at) - dt.timedelta(days=40), person_ref=who.roster_ref),
                at - dt.timedelta(days=40),
            ),
        ],
        at,
    )
    one, two, three = answer["results"]
    # A day behind cannot be told from a visit yesterday: taken as sent.
    assert one["status"] == "applied" and one["settlement"]["settledAt"] == behind.isoformat()
    # A day ahead is in the future: the visit happened at the latest now.
    assert two["status"] == "adjusted" and two["settlement"]["settledAt"] == at.isoformat()
    assert (three["status"], three["reason"]) == ("rejected", "visit_too_old")


async def test_two_offline_clinics_past_an_annual_cap_the_second_is_adjusted_not_lost(
    state: AppState,
) -> None:
    village = new_village()
    east, west = await clinic(state, village), await clinic(state, village)
    east_term, west_term = await terminal(state, east), await terminal(state, west)
    who = await villager(state, village)
    at = morning(2)
    day = local_day(at)
    # Each clinic, offline, saw an empty year: 60% of 50,000 fen each, while the 门诊统筹 cap is 40,000.
    bill = items(50_000)
    split, _ = estimate(bill, day)
    assert split.basic_fen == 30_000
    one = await run(
        state, east_term, [mutation(1, create(bill, day, voucher=online_code(state, who, at)), at)]
    )
    later = at + dt.timedelta(hours=2)
    two = await run(
        state, west_term, [mutation(1, create(bill, day, voucher=online_code(state, who, later)), later)]
    )
    assert statuses(one) == ["applied"] and statuses(two) == ["adjusted"]
    adjusted = two["results"][0]
    assert adjusted["settlement"]["basicFen"] == 10_000 and adjusted["settlement"]["cashFen"] == 40_000
    assert adjusted["adjustment"]["reason"] == "recomputed"
    assert adjusted["adjustment"]["deltas"]["basicFen"] == -20_000
    assert adjusted["adjustment"]["deltas"]["cashFen"] == 20_000
    assert adjusted["adjustment"]["terminal"]["basicFen"] == 30_000
    stored = await settlements_of(state, who.id)
    assert sum(s.basic_fen for s in stored) == 40_000 == 30_000 + adjusted["settlement"]["basicFen"]
    async with state.db.session() as session:
        [adjustment] = (
            await session.execute(
                select(SettlementAdjustment).where(col(SettlementAdjustment.settlement_id) == stored[1].id)
            )
        ).scalars()
        assert (adjustment.basic_delta_fen, adjustment.cash_delta_fen, adjustment.terminal_id) == (
            -20_000,
            20_000,
            west_term.id,
        )
        ytd = await settlement_service.year_to_date(session, who.id, day.year)
        assert ytd.basic_paid_fen == {"general_outpatient": 40_000}
        # The roster entry (its totals) and the settlements are in the change log, in the same commits.
        logged = {
            (e.entity, e.scope)
            for e in (
                await session.execute(
                    select(ChangeLogEntry).where(
                        col(ChangeLogEntry.entity_id).in_([str(who.id), str(stored[1].id)])
                    )
                )
            ).scalars()
        }
        assert ("person", f"village:{village}") in logged and ("settlement", f"person:{who.id}") in logged
        issues = (
            await session.execute(
                select(col(ChangeLogEntry.scope)).where(
                    col(ChangeLogEntry.entity) == "push_issue",
                    col(ChangeLogEntry.scope).in_([f"clinic:{east.id}", f"clinic:{west.id}"]),
                )
            )
        ).scalars()
        assert list(issues) == [f"clinic:{west.id}"]  # the adjusted one, for the clinic it concerns


async def test_personal_account_debit_void_and_what_the_resident_sees(
    state: AppState, gql: GraphQLClient
) -> None:
    place = await clinic(state)
    term = await terminal(state, place)
    member = await familyworld.person(state)  # with a resident login
    who = await villager(state, place.village_code, balance=3_000, person_id=member.person_id)
    at = morning()
    day = local_day(at)
    # The terminal's roster said 5,000 fen on the account; the server knows 3,000.
    payload = create(items(8_000), day, voucher=online_code(state, who, at), balance=5_000)
    answer = await run(state, term, [mutation(1, payload, at)])
    [result] = answer["results"]
    assert result["status"] == "adjusted"
    assert result["settlement"]["personalAccountFen"] == 3_000
    assert result["adjustment"]["deltas"]["personalAccountFen"] == -200
    [settlement] = await settlements_of(state, who.id)
    async with state.db.session() as session:
        account = await session.get(PersonalAccount, who.id)
        assert account is not None and account.balance_fen == 0
        [flow] = (
            await session.execute(select(AccountFlow).where(col(AccountFlow.settlement_id) == settlement.id))
        ).scalars()
        assert (flow.amount_fen, flow.balance_after_fen, flow.kind) == (-3_000, 0, "settlement")

    page = await gql(MY_SETTLEMENTS, token=member.token)
    assert "errors" not in page, page
    [node] = [e["node"] for e in page["data"]["me"]["settlements"]["edges"]]
    assert (node["source"], node["voided"], node["basicFen"]) == ("terminal", False, settlement.basic_fen)
    assert (
        node["adjustment"]["personalAccountDeltaFen"] == -200 and node["adjustment"]["reason"] == "recomputed"
    )
    assert node["adjustment"]["terminalCashFen"] == result["adjustment"]["terminal"]["cashFen"]

    first_id = uuid7(at)
    void = Mutation(
        uuid7(at), 2, MutationKind.SETTLEMENT_VOID, at, SettlementVoid(payload_id(answer)).to_payload()
    )
    answer = await run(
        state,
        term,
        [
            void,
            Mutation(
                uuid7(at),
                3,
                MutationKind.SETTLEMENT_VOID,
                at,
                SettlementVoid(payload_id(answer)).to_payload(),
            ),
            Mutation(uuid7(at), 4, MutationKind.SETTLEMENT_VOID, at, SettlementVoid(first_id).to_payload()),
        ],
    )
    assert [(r["status"], r.get("reason")) for r in answer["results"]] == [
        ("applied", None),
        ("rejected", "already_void"),
        ("rejected", "not_found"),
    ]
    assert answer["results"][0]["settlement"]["personalAccountRefundFen"] == 3_000
    async with state.db.session() as session:
        account = await session.get(PersonalAccount, who.id, populate_existing=True)
        assert account is not None and account.balance_fen == 3_000
        ytd = await settlement_service.year_to_date(session, who.id, day.year)
        assert ytd == YearToDate(day.year)  # a voided settlement counts nowhere
    page = await gql(MY_SETTLEMENTS, token=member.token)
    me = page["data"]["me"]
    [node] = [e["node"] for e in me["settlements"]["edges"]]
    assert node["voided"] and node["voidedAt"]
    assert all(t["year"] != day.year or t["settlementCount"] == 0 for t in me["yearTotals"])
    assert me["personalAccount"]["balanceFen"] == 3_000


def payload_id(answer: dict[str, Any]) -> str:
    result: str = answer["results"][0]["id"]
    return result


# ------------------------------------------------------------------------------------- concurrency


async def test_two_workers_pushing_the_same_batch_at_once_apply_it_once(
    state: AppState, settings: Settings
) -> None:
    at = morning()
    day = local_day(at)
    rounds = []
    for _ in range(3):  # three terminals at once, each pushing its batch through both workers
        place = await clinic(state)
        term = await terminal(state, place)
        who = await villager(state, place.village_code)
        batch = [
            mutation(1, create(items(3_000), day, voucher=online_code(state, who, at)), at),
            mutation(2, create(items(3_100), day, person_ref=who.roster_ref), at),
        ]
        rounds.append((term, who, batch))
    other = AppState.build(settings)  # a second worker: its own engine and connections
    try:
        answers = await asyncio.gather(
            *(run(worker, term, batch) for term, _, batch in rounds for worker in (state, other))
        )
    finally:
        await other.db.dispose()
    for n, (term, who, _) in enumerate(rounds):
        # One worker applied it; the other waited on the terminal's lock, then found the stored answers.
        mine, theirs = answers[2 * n], answers[2 * n + 1]
        assert mine == theirs and statuses(mine) == ["applied", "applied"]
        assert len(await settlements_of(state, who.id)) == 2 and len(await pushed(state, term)) == 2


async def test_concurrent_pushes_for_one_person_never_pay_past_the_cap(
    state: AppState, settings: Settings
) -> None:
    """Two clinics push at the same moment, for the same people, bills whose basic payments together
    pass the 400-yuan 门诊统筹 cap: the person rows' locks make one wait for the other's totals."""
    village = new_village()
    east, west = await clinic(state, village), await clinic(state, village)
    east_term, west_term = await terminal(state, east), await terminal(state, west)
    people = [await villager(state, village) for _ in range(6)]
    at = morning()
    day = local_day(at)
    bill = items(50_000)

    def batch(offset: int) -> list[Mutation]:
        when = at + dt.timedelta(seconds=offset)
        # Opposite orders on the two terminals: locking in id order keeps them out of a deadlock.
        ordered = people if offset == 0 else list(reversed(people))
        return [
            mutation(n + 1, create(bill, day, voucher=online_code(state, p, when)), when)
            for n, p in enumerate(ordered)
        ]

    other = AppState.build(settings)
    try:
        for worker in (state, other):  # both connected before they start: the batches overlap
            async with worker.db.session() as session:
                await session.execute(select(func.count()).select_from(Terminal))
        one, two = await asyncio.gather(run(state, east_term, batch(0)), run(other, west_term, batch(1)))
    finally:
        await other.db.dispose()
    results = one["results"] + two["results"]
    assert sorted(statuses(one) + statuses(two)) == ["adjusted"] * 6 + ["applied"] * 6
    for p in people:
        stored = await settlements_of(state, p.id)
        assert len(stored) == 2  # nothing lost
        assert sorted(s.basic_fen for s in stored) == [10_000, 30_000]  # the cap, to the fen
    assert sum(r["settlement"]["basicFen"] for r in results) == 6 * 40_000


# --------------------------------------------------------------------------------------- HTTP, wire


async def test_push_through_http(client: httpx.AsyncClient, state: AppState) -> None:
    terminalworld = pytest.importorskip("tests.api.terminalworld")  # enrolment over HTTP

    place = await clinic(state)
    assert place.id is not None
    enrolled = await terminalworld.enrol(client, state, place.id)
    who = await villager(state, place.village_code)
    at = now()  # a card visit cannot be dated before its terminal was enrolled, a moment ago
    day = local_day(at)
    batch = [
        mutation(1, create(items(4_000), day, voucher=online_code(state, who, at)), at),
        mutation(2, create(items(4_100), day, person_ref=who.roster_ref, clinic_id=enrolled.clinic_id), at),
    ]
    body = {"mutations": [m.to_dict() for m in batch]}
    first = await client.post("/sync/push", json=body, headers=enrolled.headers())
    assert first.status_code == 200, first.text
    results, expected = parse_push_answer(first.json())
    assert [r.status.value for r in results] == ["applied", "applied"] and expected is None
    again = await client.post("/sync/push", json=body, headers=enrolled.headers())
    assert again.status_code == 200 and again.json() == first.json()
    backwards = {"mutations": [batch[1].to_dict(), batch[0].to_dict()]}
    refused = await client.post("/sync/push", json=backwards, headers=enrolled.headers())
    assert refused.status_code == 400 and refused.json()["error"]["field"] == "mutations[1].seq"
    late = mutation(1, create(items(4_200), day, person_ref=who.roster_ref), at)
    conflict = await client.post(
        "/sync/push", json={"mutations": [late.to_dict()]}, headers=enrolled.headers()
    )
    assert conflict.status_code == 409 and conflict.json()["error"]["code"] == "CONFLICT"
    assert len(await settlements_of(state, who.id)) == 2


def test_the_payload_reader_refuses_what_the_server_would() -> None:
    day = dt.date(2026, 5, 1)
    good = create(items(1_000), day, person_ref="0123456789abcdef")
    parsed = read_settlement_create(good)
    assert parsed.bill.total_fen == 1_000 and parsed.person_ref == "0123456789abcdef"
    assert read_settlement_create(parsed.to_payload()) == parsed
    # Visit.to_dict() is accepted as it is; its person fields are the terminal's roster copy, unused.
    visit = Visit(day, REGION, "resident", "adult", "village", "local", "general_outpatient", items(1_000))
    assert read_settlement_create({**good, "visit": visit.to_dict()}).bill == Bill.from_visit(visit)
    from sync.protocol import WireError

    for broken, field in (
        ({**good, "voucher": "YBS:X"}, "payload.voucher"),
        ({k: v for k, v in good.items() if k != "personRef"}, "payload.voucher"),
        ({**good, "personRef": "ABC"}, "payload.personRef"),
        ({**good, "clinicId": 5}, "payload.clinicId"),
        ({**good, "extra": 1}, "payload.extra"),
        ({**good, "split": {**good["split"], "cashFen": -1}}, "payload.split.cashFen"),
        ({**good, "visit": {**good["visit"], "category": "spa"}}, "payload.visit.category"),
        ({**good, "visit": {**good["visit"], "items": []}}, "payload.visit.items"),
        ({**good, "visit": {**good["visit"], "visit_date": "2026-02-30"}}, "payload.visit.visit_date"),
    ):
        with pytest.raises(WireError) as caught:
            read_settlement_create(broken)
        assert caught.value.field == field, broken
