"""What pushed_mutations keeps of a payload: a rejected one past MAX_KEPT_REJECTED_PAYLOAD is a
stand-in (cut, its size, its sha256, a prefix), everything else whole; the answer is kept whole and
replayed on a repeat, and the reviewers' and the clinic's views of the issue still work."""

from __future__ import annotations

import hashlib
import json

from sqlalchemy import inspect as sa_inspect

from api.auth.models import Role
from api.replication import pull as pulling
from api.replication import push as push_module
from api.replication.push import KEPT_PAYLOAD_PREFIX, MAX_KEPT_REJECTED_PAYLOAD
from api.state import AppState
from api.terminals.models import Terminal
from sync.settlement import BillItem
from tests.api import familyworld
from tests.api.test_push import (
    ISSUES,
    clinic,
    clinic_login,
    create,
    items,
    local_day,
    morning,
    mutation,
    pushed,
    run,
    terminal,
    villager,
)
from tests.conftest import GraphQLClient


async def test_a_large_rejected_payload_is_kept_as_a_stand_in_and_its_answer_whole(
    state: AppState, gql: GraphQLClient
) -> None:
    place = await clinic(state)
    term = await terminal(state, place)
    who = await villager(state, place.village_code)
    at = morning()
    payload = create(items(1_000), local_day(at), person_ref=who.roster_ref)
    payload["junk"] = "医" * 200_000  # \u-escaped in the stored JSON: 1.2 MB
    sent = mutation(1, payload, at)
    [result] = (await run(state, term, [sent]))["results"]
    assert (result["reason"], result["field"]) == ("bad_payload", "payload.junk")

    [row] = await pushed(state, term)
    text = json.dumps(payload, sort_keys=True)
    assert row.payload == {
        "truncated": True,
        "bytes": len(text),
        "sha256": hashlib.sha256(text.encode()).hexdigest(),
        "prefix": text[:KEPT_PAYLOAD_PREFIX],
    }
    assert len(json.dumps(row.payload)) <= MAX_KEPT_REJECTED_PAYLOAD
    assert row.result == result  # the answer is not cut

    # A repeat of the push gets the stored answer back, and nothing new is stored.
    assert (await run(state, term, [sent]))["results"] == [result]
    assert [r.id for r in await pushed(state, term)] == [row.id]

    # The reviewers and the clinic's counter still read the issue.
    reviewer = await familyworld.staff(state, Role.REVIEWER)
    for token in (reviewer, await clinic_login(state, place)):
        listed = await gql(ISSUES, {"clinic": str(place.id)}, token=token)
        assert "errors" not in listed, listed
        [edge] = listed["data"]["terminalSettlementIssues"]["edges"]
        assert edge["node"]["payload"] == row.payload and edge["node"]["result"] == result
        assert edge["node"]["reason"] == "bad_payload"

    # The terminal's issue document carries the answer, never the payload.
    async with state.db.session() as session:
        found = await session.get(Terminal, term.id)
        assert found is not None
        pulled = await pulling.pull(session, state, found, None, 500)
    [document] = [c for c in pulled["changes"] if c["entity"] == "push_issue"]
    assert document["id"] == str(row.id) and document["data"]["result"] == result
    assert "payload" not in document["data"]


async def test_a_rejected_payload_within_the_bound_is_kept_whole(state: AppState) -> None:
    place = await clinic(state)
    term = await terminal(state, place)
    who = await villager(state, place.village_code)
    at = morning()
    payload = create(items(1_000), local_day(at), person_ref=who.roster_ref)
    payload["junk"] = "x" * (MAX_KEPT_REJECTED_PAYLOAD - len(json.dumps(payload)) - len(', "junk": ""'))
    assert len(json.dumps(payload)) == MAX_KEPT_REJECTED_PAYLOAD
    [result] = (await run(state, term, [mutation(1, payload, at)]))["results"]
    assert (result["status"], result["reason"]) == ("rejected", "bad_payload")
    [row] = await pushed(state, term)
    assert row.payload == payload


async def test_an_applied_payload_past_the_bound_is_kept_whole(state: AppState) -> None:
    place = await clinic(state)
    term = await terminal(state, place)
    who = await villager(state, place.village_code)
    at = morning()
    bill = tuple(BillItem(100, "class_a", 0, f"XA{n:08d}", "阿莫西林胶囊0.25g") for n in range(600))
    payload = create(bill, local_day(at), person_ref=who.roster_ref)
    assert len(json.dumps(payload)) > MAX_KEPT_REJECTED_PAYLOAD
    [result] = (await run(state, term, [mutation(1, payload, at)]))["results"]
    assert result["status"] in {"applied", "adjusted"}, result
    [row] = await pushed(state, term)
    assert row.payload == payload


async def test_a_repeat_is_answered_without_loading_the_stored_payloads(state: AppState) -> None:
    place = await clinic(state)
    term = await terminal(state, place)
    who = await villager(state, place.village_code)
    at = morning()
    sent = mutation(1, create(items(1_000), local_day(at), person_ref=who.roster_ref), at)
    answer = await run(state, term, [sent])
    async with state.db.session() as session:
        assert term.id is not None
        [row] = await push_module._stored(session, term.id, [sent])
        assert row.result == answer["results"][0]
        assert "payload" in sa_inspect(row).unloaded
    assert await run(state, term, [sent]) == answer
