"""Review of the push-throughput work (statements built once with expanding IN parameters, the
terminal's and clinic's values as plain attributes of the batch, executemany rows merged with defaults):
the cases where a statement built once, a snapshot or a merge could go wrong."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select, update
from sqlmodel import col

from api.replication.models import PushedMutation
from api.replication.push import _insert, push
from api.settlement import service as settlement_service
from api.state import AppState
from api.terminals.models import Terminal, TerminalStatus
from tests.api.test_push import (
    clinic,
    create,
    items,
    last_seq,
    local_day,
    morning,
    mutation,
    now,
    pushed,
    run,
    settlements_of,
    statuses,
    terminal,
    villager,
)


async def test_rows_lacking_a_column_an_earlier_row_has_take_its_default(state: AppState) -> None:
    """The executemany merge: a later row without a column the first row has still gets the model's
    default (not an error, not another row's value), and a later row's own value is kept."""
    place = await clinic(state)
    term = await terminal(state, place)
    at = now()

    def row(seq: int, **extra: object) -> dict[str, object]:
        return {
            "terminal_id": term.id,
            "seq": seq,
            "mutation_id": f"review-{term.id}-{seq}",
            "kind": "settlement.create",
            "payload": {},
            "status": "rejected",
            "result": {},
            **extra,
        }

    rows = [
        row(1, reason="bad_payload", received_at=at),
        row(2),  # lacks what the first has: the defaults (NULL reason, received now)
        row(3, resolution_note="已核对"),  # has what the first lacks
    ]
    async with state.db.session() as session:
        ids = await _insert(session, PushedMutation, rows, key="mutation_id")
    assert len(ids) == 3
    stored = await pushed(state, term)
    assert [(p.seq, p.reason, p.resolution_note) for p in stored] == [
        (1, "bad_payload", None),
        (2, None, None),
        (3, None, "已核对"),
    ]
    assert all(p.received_at is not None for p in stored)


async def test_year_to_date_of_nobody_is_empty(state: AppState) -> None:
    """The GROUP BY built once with an expanding IN: an empty list (a village without people) is no
    query error on either database."""
    async with state.db.session() as session:
        assert await settlement_service.year_to_date_many(session, [], 2026) == {}
        assert await settlement_service.year_to_date_many(session, [], 2026, before=now()) == {}


async def test_a_terminal_revoked_after_its_row_was_read_gets_nothing_applied(state: AppState) -> None:
    """The batch's plain copies of the terminal are taken after its row is locked and read again: a
    revocation committed after the request authenticated (the session's object is stale) is seen."""
    place = await clinic(state)
    term = await terminal(state, place)
    who = await villager(state, place.village_code)
    at = morning()
    batch = [mutation(1, create(items(2_000), local_day(at), person_ref=who.roster_ref), at)]
    async with state.db.session() as session:
        stale = await session.get(Terminal, term.id)
        assert stale is not None and stale.status == TerminalStatus.ACTIVE.value
        await session.commit()  # as the authentication's transaction ends before the push's lock
        async with state.db.session() as other:
            await other.execute(
                update(Terminal)
                .where(col(Terminal.id) == term.id)
                .values(status=TerminalStatus.REVOKED.value, revoked_at=now())
            )
        answer = await push(session, state, stale, batch)
    assert [(r["status"], r["reason"]) for r in answer["results"]] == [("rejected", "terminal_revoked")]
    assert await settlements_of(state, who.id) == [] and await last_seq(state, term) == 0


async def test_the_statements_built_once_read_each_batchs_own_clinic_and_terminal(state: AppState) -> None:
    """One person, one bill, one day: a duplicate at the clinic that settled it (another terminal of it),
    not at another clinic. The duplicate-visit read is one statement built once; its clinic, people and
    totals are the batch's, not the previous batch's."""
    here = await clinic(state)
    there = await clinic(state, here.village_code)  # the same village's second clinic
    first, second, third = (
        await terminal(state, here),
        await terminal(state, here),
        await terminal(state, there),
    )
    who = await villager(state, here.village_code)
    at = morning()
    visit = create(items(3_300), local_day(at), person_ref=who.roster_ref)
    assert statuses(await run(state, first, [mutation(1, visit, at)])) == ["applied"]
    again = await run(state, second, [mutation(1, visit, at + dt.timedelta(minutes=1))])
    assert [(r["status"], r.get("reason")) for r in again["results"]] == [("rejected", "duplicate_visit")]
    elsewhere = await run(state, third, [mutation(1, visit, at + dt.timedelta(minutes=2))])
    assert statuses(elsewhere) in (["applied"], ["adjusted"])
    stored = await settlements_of(state, who.id)
    assert [(s.facility_id, s.terminal_id) for s in stored] == [(here.id, first.id), (there.id, third.id)]
    async with state.db.session() as session:
        rows = await session.execute(
            select(col(PushedMutation.terminal_id), col(PushedMutation.status)).where(
                col(PushedMutation.terminal_id).in_([first.id, second.id, third.id])
            )
        )
        assert sorted(tuple(r) for r in rows) == sorted(
            [(first.id, "applied"), (second.id, "rejected"), (third.id, elsewhere["results"][0]["status"])]
        )
