"""Push: one mutation is held to its own bounds (sync/protocol.py: MAX_BILL_ITEMS, the text and code
fields, the roster copy of the person), not only to the size of the whole body. Past a bound the
mutation is `rejected` with `bad_payload` and the field, like any other bad payload (stored, answered
the same on a repeat, the rest of the batch applied); a batch past MAX_PUSH_BATCH is a 400."""

from __future__ import annotations

import httpx
import pytest

from api.state import AppState
from sync.protocol import MAX_BILL_ITEMS, MAX_PUSH_BATCH
from tests.api.test_push import (
    clinic,
    create,
    items,
    local_day,
    morning,
    mutation,
    now,
    online_code,
    pushed,
    run,
    settlements_of,
    statuses,
    terminal,
    villager,
)


async def test_a_bill_past_the_item_bound_is_rejected_and_the_rest_of_the_batch_applied(
    state: AppState,
) -> None:
    # Before: 2,001 (up to the engine's 10,000) items were settled and stored, bounded only by the body.
    place = await clinic(state)
    term = await terminal(state, place)
    who = await villager(state, place.village_code)
    at = morning()
    day = local_day(at)
    code = online_code(state, who, at)
    too_many = create(items(*[1] * (MAX_BILL_ITEMS + 1)), day, voucher=code)
    at_bound = create(items(*[1] * MAX_BILL_ITEMS), day, person_ref=who.roster_ref)
    batch = [mutation(1, too_many, at), mutation(2, at_bound, at)]
    answer = await run(state, term, batch)
    first, second = answer["results"]
    assert (first["status"], first["reason"], first["field"]) == (
        "rejected",
        "bad_payload",
        "payload.visit.items",
    )
    assert first["detail"] == f"more than {MAX_BILL_ITEMS} items"
    assert second["status"] == "applied" and second["settlement"]["totalFen"] == MAX_BILL_ITEMS
    assert await run(state, term, batch) == answer  # the stored answers, exactly once
    assert [row.seq for row in await pushed(state, term)] == [1, 2]
    # The code was not spent on the refused bill.
    again = await run(state, term, [mutation(3, create(items(1_000), day, voucher=code), at)])
    assert statuses(again) == ["applied"]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("region", "3" * 90_000),
        ("chronic_diseases", ["hypertension"] * 5_000),
        ("name", "药" * 101),
        ("item_class", "x" * 90_000),
    ],
)
async def test_a_huge_field_in_one_mutation_is_a_bad_payload(
    state: AppState, key: str, value: object
) -> None:
    # Before: the roster copy of the person took anything (a 90,000-character region was settled and
    # stored), and an unknown item class of any length was quoted back in the rejection.
    place = await clinic(state)
    term = await terminal(state, place)
    who = await villager(state, place.village_code)
    at = morning()
    payload = create(items(1_000), local_day(at), person_ref=who.roster_ref)
    if key in ("name", "item_class"):
        payload["visit"]["items"][0][key] = value
        field = f"payload.visit.items[0].{key}"
    else:
        payload["visit"][key] = value
        field = f"payload.visit.{key}"
    [result] = (await run(state, term, [mutation(1, payload, at)]))["results"]
    assert (result["status"], result["reason"], result["field"]) == ("rejected", "bad_payload", field)
    assert len(result["detail"]) < 200 and "xxxx" not in result["detail"]
    assert await settlements_of(state, who.id) == []


async def test_through_http_an_oversized_mutation_is_rejected_and_an_oversized_batch_is_a_400(
    client: httpx.AsyncClient, state: AppState
) -> None:
    terminalworld = pytest.importorskip("tests.api.terminalworld")

    place = await clinic(state)
    assert place.id is not None
    enrolled = await terminalworld.enrol(client, state, place.id)
    who = await villager(state, place.village_code)
    at = now()
    day = local_day(at)
    too_many = create(items(1_000), day, person_ref=who.roster_ref)
    too_many["visit"]["items"] = too_many["visit"]["items"] * (MAX_BILL_ITEMS + 1)
    body = {"mutations": [mutation(1, too_many, at).to_dict()]}
    answer = await client.post("/sync/push", json=body, headers=enrolled.headers())
    assert answer.status_code == 200, answer.text
    [result] = answer.json()["results"]
    assert (result["reason"], result["field"]) == ("bad_payload", "payload.visit.items")

    batch = [
        mutation(n, create(items(100 + n), day, person_ref=who.roster_ref), at)
        for n in range(2, 3 + MAX_PUSH_BATCH)
    ]
    refused = await client.post(
        "/sync/push", json={"mutations": [m.to_dict() for m in batch]}, headers=enrolled.headers()
    )
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert (error["code"], error["field"]) == ("BAD_REQUEST", "mutations")
    assert await settlements_of(state, who.id) == []
