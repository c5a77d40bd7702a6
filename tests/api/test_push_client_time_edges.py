"""A mutation's clientTime at the edge of the calendar: a WireError (a 400 with the field) when its
UTC instant is outside what a datetime holds, and nothing past the parse breaks on the extreme instants
that do fit (the terminal's clock is recorded, never trusted)."""

from __future__ import annotations

import datetime as dt

import pytest

from api.state import AppState
from sync.protocol import Mutation, MutationKind, WireError, parse_push, uuid7
from tests.api.test_push import (
    clinic,
    create,
    items,
    local_day,
    morning,
    online_code,
    pushed,
    run,
    terminal,
    villager,
)


@pytest.mark.parametrize(
    "client_time",
    [
        "9999-12-31T23:59:59-23:59",
        "9999-12-31T23:59:59.999999-00:00:01",
        "0001-01-01T00:00:00+23:59",
        "0001-01-01T00:00:00+00:00:01",
    ],
)
def test_a_client_time_past_the_calendar_in_utc_is_a_wire_error_naming_the_field(client_time: str) -> None:
    body = {
        "mutations": [
            {"id": uuid7(), "seq": 1, "kind": "settlement.create", "clientTime": client_time, "payload": {}}
        ]
    }
    with pytest.raises(WireError) as caught:
        parse_push(body)
    assert caught.value.field == "mutations[0].clientTime"


@pytest.mark.parametrize(
    "client_time", ["9999-12-31T00:00:00-23:59", "9999-12-31T23:59:59+00:00", "0001-01-01T00:00:00+00:00"]
)
def test_the_extreme_client_times_that_fit_are_read(client_time: str) -> None:
    body = {
        "mutations": [
            {"id": uuid7(), "seq": 1, "kind": "settlement.create", "clientTime": client_time, "payload": {}}
        ]
    }
    [mutation] = parse_push(body)
    assert mutation.client_time.tzinfo is dt.UTC
    assert mutation.client_time == dt.datetime.fromisoformat(client_time)


@pytest.mark.parametrize("year", [1, 9999])
async def test_a_push_at_the_extreme_client_times_is_answered_and_stored(state: AppState, year: int) -> None:
    client_time = dt.datetime.min if year == 1 else dt.datetime.max.replace(microsecond=0)
    client_time = client_time.replace(tzinfo=dt.UTC)
    place = await clinic(state)
    term = await terminal(state, place)
    who = await villager(state, place.village_code)
    at = morning()
    by_card = create(items(1_000), local_day(at), person_ref=who.roster_ref)
    by_code = create(items(1_200), local_day(at), voucher=online_code(state, who, at))
    batch = [
        Mutation(uuid7(at), seq, MutationKind.SETTLEMENT_CREATE, client_time, payload)
        for seq, payload in ((1, by_card), (2, by_code))
    ]
    answer = await run(state, term, batch, at + dt.timedelta(seconds=30))
    card, code = answer["results"]
    if year == 1:
        assert (card["status"], card["reason"]) == ("rejected", "visit_too_old")
    else:  # in the future: the visit happened at the latest at the push
        assert card["status"] in {"applied", "adjusted"}
        assert "clockSkewS" in card["settlement"]
    # The code's own signed time dates the visit whatever the terminal's clock says.
    assert code["status"] in {"applied", "adjusted"}
    assert code["settlement"]["settledAt"] == at.isoformat()
    rows = await pushed(state, term)
    assert [row.client_time for row in rows] == [client_time, client_time]
