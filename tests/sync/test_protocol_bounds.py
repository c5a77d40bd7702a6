"""Per-mutation bounds of a `settlement.create` payload (sync/protocol.py): a single mutation inside a
push batch is held to its own bounds (items, text fields, codes, the roster copy of the person), not
only to the size of the whole body."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from sync.protocol import (
    MAX_BILL_ITEMS,
    MAX_CODE_VALUE_CHARS,
    MAX_ITEM_TEXT_CHARS,
    MAX_PERSON_CODES,
    Bill,
    SettlementCreate,
    Split,
    WireError,
    read_settlement_create,
)
from sync.settlement import BillItem

DAY = dt.date(2026, 5, 1)


def payload(count: int = 1, **visit: object) -> dict[str, Any]:
    items = tuple(BillItem(1, "class_a", 0, "A01", "诊疗费") for _ in range(count))
    good = SettlementCreate(
        Bill(DAY, "general_outpatient", "local", items, "village"),
        Split(0, 0, 0, 0, count),
        "v1",
        person_ref="0123456789abcdef",
    ).to_payload()
    good["visit"].update(visit)
    return good


def refused(data: dict[str, Any]) -> WireError:
    with pytest.raises(WireError) as caught:
        read_settlement_create(data)
    return caught.value


def test_a_bill_at_the_item_bound_is_read_and_one_item_more_is_refused() -> None:
    assert len(read_settlement_create(payload(MAX_BILL_ITEMS)).bill.items) == MAX_BILL_ITEMS
    error = refused(payload(MAX_BILL_ITEMS + 1))
    assert (error.field, error.message) == ("payload.visit.items", f"more than {MAX_BILL_ITEMS} items")
    # 100,000 items are refused on their count, before any item is read.
    many = payload(1)
    many["visit"]["items"] = [{"bad": n} for n in range(100_000)]
    assert refused(many).field == "payload.visit.items"


@pytest.mark.parametrize("key", ["code", "name"])
def test_an_item_text_past_its_bound_is_refused(key: str) -> None:
    at_bound = payload()
    at_bound["visit"]["items"][0][key] = "药" * MAX_ITEM_TEXT_CHARS
    assert read_settlement_create(at_bound)
    past = payload()
    past["visit"]["items"][0][key] = "药" * (MAX_ITEM_TEXT_CHARS + 1)
    assert refused(past).field == f"payload.visit.items[0].{key}"


@pytest.mark.parametrize("key", ["category", "locality", "facility_level", "item_class"])
def test_a_huge_code_is_refused_without_being_quoted_back(key: str) -> None:
    data = payload()
    huge = "x" * 90_000
    if key == "item_class":
        data["visit"]["items"][0][key] = huge
        field = "payload.visit.items[0].item_class"
    else:
        data["visit"][key] = huge
        field = f"payload.visit.{key}"
    error = refused(data)
    assert error.field == field and len(error.message) < 200, error.message
    # A short unknown code is still named, as before.
    data = payload(category="spa")
    assert "'spa'" in refused(data).message


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("region", "3" * 90_000),
        ("assistance_category", "x" * (MAX_CODE_VALUE_CHARS + 1)),
        ("chronic_diseases", ["hypertension"] * (MAX_PERSON_CODES + 1)),
        ("two_diseases", [{"nested": "x" * 1000}]),
        ("chronic_diseases", {"not": "a list"}),
        ("personal_account_balance_fen", 10**30),
    ],
)
def test_the_roster_copy_of_the_person_is_bounded_though_never_used(key: str, value: object) -> None:
    error = refused(payload(1, **{key: value}))
    assert error.field == f"payload.visit.{key}" and len(error.message) < 200


def test_the_roster_copy_as_visit_to_dict_writes_it_is_still_accepted() -> None:
    data = payload(
        region="340421",
        insurance_type="resident",
        age_group="adult",
        assistance_category=None,
        chronic_diseases=["hypertension", "diabetes"],
        two_diseases=[],
        personal_account_balance_fen=12_000,
    )
    assert read_settlement_create(data).bill.total_fen == 1


@pytest.mark.parametrize("bad", ["\x00", "\ud800", "A\udcff"])
@pytest.mark.parametrize("key", ["code", "name"])
def test_an_item_text_no_column_can_hold_is_refused(key: str, bad: str) -> None:
    # NUL (PostgreSQL's text refuses it) or an unpaired surrogate (a terminal reads one from a
    # command line that is not UTF-8): the server refuses the whole push body for it (400), so a
    # terminal that settled such a bill would resend its outbox forever. Refused here, the check both
    # sides share, it is refused at the counter.
    data = payload()
    data["visit"]["items"][0][key] = f"x{bad}y"
    error = refused(data)
    assert error.field == f"payload.visit.items[0].{key}"
    assert error.message == "must not hold NUL or an unpaired surrogate"
