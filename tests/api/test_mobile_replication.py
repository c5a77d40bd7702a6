"""The mini-program's replication (issue 12 item 1), server half, through real HTTP (and graphql-ws):
pull paging and checkpoints, visibility through family links, resync and tombstones when a link or a
permission goes, forged checkpoints and bounds, pushes of filing drafts and read marks, the stream."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import random
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from sqlalchemy import func, select, update
from sqlmodel import col
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from api.auth.models import AuthSession, Role
from api.family.models import Permission
from api.filings import service as filings
from api.filings.models import Filing, FilingInvoice
from api.notifications import service as notifications
from api.notifications.models import Notification
from api.people.models import AccountFlow, Contribution, Facility, PersonalAccount, Settlement
from api.replication import changelog
from api.replication.mobile import service as mobile
from api.replication.mobile.documents import iso
from api.replication.models import ChangeLogEntry, ReplicationState
from api.settlement.models import PolicyVersionRow
from api.state import AppState
from tests.api import familyworld as world
from tests.api.filingworld import cross_region, invoice_number, reimbursement, visit
from tests.conftest import GraphQLClient, error_codes

FIELDS = {
    "Settlement": "id personId updatedAt _deleted settledAt year category categoryLabel visitScope facilityName "
    "facilityLevel totalFen compliantFen deductibleFen basicFen criticalIllnessFen assistanceFen "
    "personalAccountFen cashFen policyVersion source voided voidedAt",
    "Contribution": "id personId updatedAt _deleted year period insuranceType paidAt amountFen subsidyFen",
    "AccountFlow": "id personId updatedAt _deleted occurredAt year kind kindLabel amountFen balanceAfterFen "
    "settlementId",
    "Filing": "id serverId personId updatedAt _deleted kind kindLabel status statusLabel stage fields amountFen "
    "linkId filedByPersonId dueOn decisionReason createdAt submittedAt decidedAt version",
    "FamilyLink": "id personId updatedAt _deleted relationship relationshipLabel method status myRole "
    "holderPersonId relativePersonId holderName relativeName relativeIdNumberMasked permissions "
    "requestedPermissions createdAt expiresAt decidedAt",
    "Notification": "id personId updatedAt _deleted kind title body data createdAt readAt linkId",
}
COLLECTIONS = list(FIELDS)
WAIT = 15.0


def pull_query(name: str) -> str:
    return (
        f"query($checkpoint: ReplicationCheckpointInput, $limit: Int!) {{ pull{name}(checkpoint: $checkpoint, "
        f"limit: $limit) {{ documents {{ {FIELDS[name]} }} checkpoint {{ token }} }} }}"
    )


def push_query(name: str) -> str:
    return f"mutation($rows: [{name}PushRow!]!) {{ push{name}(rows: $rows) {{ {FIELDS[name]} }} }}"


async def pull(
    gql: GraphQLClient, name: str, token: str | None, limit: int, *, bearer: str | None = None
) -> dict[str, Any]:
    body = await gql(
        pull_query(name),
        {"checkpoint": {"token": token} if token else None, "limit": limit},
        token=bearer,
    )
    return body


async def pull_all(
    gql: GraphQLClient, name: str, token: str | None, limit: int, *, bearer: str | None = None
) -> tuple[list[dict[str, Any]], str, int]:
    """Pulls as RxDB does, until the first short page; checks every earlier page is exactly `limit`."""
    documents: list[dict[str, Any]] = []
    trips = 0
    while True:
        body = await pull(gql, name, token, limit, bearer=bearer)
        assert "errors" not in body, body
        answer = body["data"][f"pull{name}"]
        trips += 1
        assert len(answer["documents"]) <= limit
        documents.extend(answer["documents"])
        assert answer["checkpoint"]["token"]
        token = answer["checkpoint"]["token"]
        if len(answer["documents"]) < limit:
            return documents, token, trips
        assert trips < 400


def latest(documents: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The replica RxDB would hold: the last state of each id."""
    replica: dict[str, dict[str, Any]] = {}
    for document in documents:
        replica[document["id"]] = document
    return replica


def bad_field(body: dict[str, Any]) -> str | None:
    assert error_codes(body) == ["BAD_USER_INPUT"], body
    field: str | None = body["errors"][0]["extensions"].get("field")
    return field


async def demo_person(state: AppState, key: str) -> int:
    async with state.db.session() as session:
        from api.auth.models import Account

        found = (
            await session.execute(
                select(col(Account.person_id)).where(
                    col(Account.provider) == "demo", col(Account.subject) == key
                )
            )
        ).scalar_one()
        assert found is not None
        return int(found)


async def seed_records(state: AppState, person_id: int, count: int = 2) -> list[int]:
    """Settlements with an account flow each and a contribution, written as a writer would: with the
    settlement's change-log entry (which stands for its flows) in the same transaction."""
    ids = []
    async with state.db.session() as session:
        facility = (await session.execute(select(col(Facility.id)).limit(1))).scalar_one()
        policy = (await session.execute(select(func.max(col(PolicyVersionRow.id))))).scalar_one()
        session.add(
            Contribution(
                person_id=person_id, year=2026, period="2026", insurance_type="resident",
                paid_at=dt.datetime(2026, 1, 5, tzinfo=dt.UTC), amount_fen=40000, subsidy_fen=67000,
            )
        )  # fmt: skip
        for i in range(count):
            row = Settlement(
                person_id=person_id, facility_id=facility, settled_at=dt.datetime(2026, 3, 1 + i, tzinfo=dt.UTC),
                year=2026, category="outpatient", total_fen=10000, compliant_fen=9000, basic_fen=4000,
                critical_illness_fen=0, assistance_fen=0, personal_account_fen=1000, cash_fen=5000,
                policy_version=policy,
            )  # fmt: skip
            session.add(row)
            await session.flush()
            assert row.id is not None
            # A person with a personal account has it moved, as a writer would: the account always
            # equals the sum of its flows (test_people checks that over the shared database).
            moved = await session.execute(
                update(PersonalAccount)
                .where(col(PersonalAccount.person_id) == person_id)
                .values(balance_fen=col(PersonalAccount.balance_fen) - 1000)
                .returning(col(PersonalAccount.balance_fen))
            )
            after = moved.scalar_one_or_none()
            session.add(
                AccountFlow(
                    person_id=person_id, occurred_at=row.settled_at, year=2026, kind="settlement",
                    amount_fen=-1000, balance_after_fen=0 if after is None else after, settlement_id=row.id,
                )
            )  # fmt: skip
            await changelog.record(
                session, [changelog.Change("settlement", str(row.id), changelog.person_scope(person_id))]
            )
            ids.append(row.id)
    return ids


# --- first pull, incremental pull ------------------------------------------------------------------


async def test_first_full_pull_of_every_collection_for_the_demo_resident(
    state: AppState, gql: GraphQLClient
) -> None:
    await gql.login("resident")
    resident, elder = await demo_person(state, "resident"), await demo_person(state, "elder")
    expected_people = {"Settlement": {resident, elder}, "Contribution": {resident, elder}}
    async with state.db.session() as session:
        counts = {
            "Settlement": (
                await session.execute(
                    select(func.count()).where(col(Settlement.person_id).in_([resident, elder]))
                )
            ).scalar_one(),
            "Contribution": (
                await session.execute(
                    select(func.count()).where(col(Contribution.person_id).in_([resident, elder]))
                )
            ).scalar_one(),
            "AccountFlow": (
                await session.execute(
                    select(func.count()).where(col(AccountFlow.person_id).in_([resident, elder]))
                )
            ).scalar_one(),
        }
    for name in COLLECTIONS:
        documents, token, trips = await pull_all(gql, name, None, 3)
        replica = latest(documents)
        people = {int(d["personId"]) for d in replica.values()}
        if name in counts:
            assert len([d for d in replica.values() if not d["_deleted"]]) == counts[name], name
        if name in expected_people:
            assert people == expected_people[name], name
        if name == "Notification":
            assert people <= {resident}
        if name == "FamilyLink":
            link = next(d for d in replica.values() if d["relativePersonId"] == str(elder))
            assert link["myRole"] == "holder" and link["status"] == "active" and not link["_deleted"]
            assert "*" in link["relativeIdNumberMasked"]
        assert all(d["updatedAt"].endswith("Z") for d in replica.values())
        # The checkpoint is accepted back; with nothing new the next pull is empty.
        again = await pull(gql, name, token, 3)
        assert again["data"][f"pull{name}"]["documents"] == [], name
        assert trips >= 1


async def test_a_page_is_exactly_limit_while_more_remain(state: AppState, gql: GraphQLClient) -> None:
    me = await world.person(state)
    await seed_records(state, me.person_id, count=7)
    documents, token, trips = await pull_all(gql, "Settlement", None, 2, bearer=me.token)
    assert len(documents) == 7 and trips == 4  # 2 + 2 + 2 + 1
    flows, _, _ = await pull_all(gql, "AccountFlow", None, 7, bearer=me.token)
    assert len(flows) == 7 and trips  # a full page, then an empty one
    # New rows after the snapshot come as deltas (the settlement's entry brings its flow too).
    await seed_records(state, me.person_id, count=1)
    more, _, _ = await pull_all(gql, "Settlement", token, 2, bearer=me.token)
    assert len(more) == 1 and not more[0]["_deleted"]


# --- visibility through links ------------------------------------------------------------------------


UNLINK = "mutation($linkId: ID!) { unlinkFamily(linkId: $linkId) { id status } }"
PERMISSIONS = """mutation($linkId: ID!, $permissions: [LinkPermission!]!) {
  updateLinkPermissions(linkId: $linkId, permissions: $permissions) { id permissions } }"""


async def test_a_revoked_link_sends_the_relatives_documents_deleted(
    state: AppState, gql: GraphQLClient
) -> None:
    holder, relative = await world.person(state), await world.person(state, age=70)
    link_id = await world.link(state, holder, relative, set(Permission))
    await seed_records(state, relative.person_id)
    await seed_records(state, holder.person_id, count=1)
    tokens = {}
    for name in ("Settlement", "AccountFlow", "Contribution", "FamilyLink"):
        documents, tokens[name], _ = await pull_all(gql, name, None, 50, bearer=holder.token)
        assert {d["personId"] for d in documents} == (
            {str(holder.person_id)}
            if name == "FamilyLink"
            else {str(holder.person_id), str(relative.person_id)}
        )
    assert data_ok(await gql(UNLINK, {"linkId": str(link_id)}, token=holder.token))
    for name in ("Settlement", "AccountFlow", "Contribution"):
        documents, _, _ = await pull_all(gql, name, tokens[name], 50, bearer=holder.token)
        theirs = [d for d in documents if d["personId"] == str(relative.person_id)]
        assert theirs and all(d["_deleted"] for d in theirs), name
        assert not [d for d in documents if d["personId"] == str(holder.person_id)], name  # mine stay
    # The unlink itself is in the change log: both sides' replicas see the link closed.
    links, _, _ = await pull_all(gql, "FamilyLink", tokens["FamilyLink"], 50, bearer=holder.token)
    assert [(d["id"], d["status"], d["_deleted"]) for d in links] == [(str(link_id), "removed", True)]


def data_ok(body: dict[str, Any]) -> bool:
    assert "errors" not in body, body
    return True


async def test_read_records_withdrawn_deletes_records_but_not_filings(
    state: AppState, gql: GraphQLClient
) -> None:
    holder, relative = await world.person(state), await world.person(state, age=70)
    link_id = await world.link(state, holder, relative, {Permission.READ_RECORDS, Permission.FILE_ON_BEHALF})
    await seed_records(state, relative.person_id)
    draft = str(uuid.uuid4())
    rows = [{"newDocumentState": filing_doc(draft, relative.person_id)}]
    assert (await gql(push_query("Filing"), {"rows": rows}, token=holder.token))["data"]["pushFiling"] == []
    settlements, s_token, _ = await pull_all(gql, "Settlement", None, 10, bearer=holder.token)
    filings, f_token, _ = await pull_all(gql, "Filing", None, 10, bearer=holder.token)
    assert len(settlements) == 2 and [f["id"] for f in filings] == [draft]
    assert data_ok(
        await gql(
            PERMISSIONS, {"linkId": str(link_id), "permissions": ["FILE_ON_BEHALF"]}, token=holder.token
        )
    )
    settlements, _, _ = await pull_all(gql, "Settlement", s_token, 10, bearer=holder.token)
    assert len(settlements) == 2 and all(d["_deleted"] for d in settlements)
    filings, _, _ = await pull_all(gql, "Filing", f_token, 10, bearer=holder.token)
    assert filings == []  # still shared through file_on_behalf: nothing to change


async def test_a_permission_granted_sends_the_relatives_records(state: AppState, gql: GraphQLClient) -> None:
    holder, relative = await world.person(state), await world.person(state, age=70)
    link_id = await world.link(state, holder, relative, {Permission.FILE_ON_BEHALF})
    await seed_records(state, relative.person_id, count=3)
    assert holder.token and relative.token
    documents, token, _ = await pull_all(gql, "Settlement", None, 2, bearer=holder.token)
    assert documents == []
    granted = await gql(
        PERMISSIONS,
        {"linkId": str(link_id), "permissions": ["FILE_ON_BEHALF", "READ_RECORDS"]},
        token=relative.token,
    )
    assert data_ok(granted)
    documents, _, trips = await pull_all(gql, "Settlement", token, 2, bearer=holder.token)
    assert len(documents) == 3 and trips == 2 and not any(d["_deleted"] for d in documents)
    assert {d["personId"] for d in documents} == {str(relative.person_id)}


async def test_a_stranger_gets_nothing_of_others(state: AppState, gql: GraphQLClient) -> None:
    stranger = await world.person(state)
    for name in COLLECTIONS:
        documents, _, _ = await pull_all(gql, name, None, 100, bearer=stranger.token)
        assert documents == [], name
    # The resident's checkpoint is bound to her login: the stranger cannot use it.
    await gql.login("resident")
    _, token, _ = await pull_all(gql, "Settlement", None, 500)
    assert bad_field(await pull(gql, "Settlement", token, 10, bearer=stranger.token)) == "checkpoint"


async def test_forged_and_foreign_checkpoints_and_limits_are_bad_input(
    state: AppState, gql: GraphQLClient
) -> None:
    me = await world.person(state)
    _, token, _ = await pull_all(gql, "Notification", None, 10, bearer=me.token)
    tampered = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
    assert bad_field(await pull(gql, "Notification", tampered, 10, bearer=me.token)) == "checkpoint"
    assert bad_field(await pull(gql, "Notification", "not-a-token", 10, bearer=me.token)) == "checkpoint"
    # A checkpoint of another collection is not this one's.
    assert bad_field(await pull(gql, "Settlement", token, 10, bearer=me.token)) == "checkpoint"
    for limit in (0, -1, mobile.MAX_LIMIT + 1):
        assert bad_field(await pull(gql, "Notification", None, limit, bearer=me.token)) == "limit"
    assert "errors" not in await pull(gql, "Notification", None, mobile.MAX_LIMIT, bearer=me.token)
    # Unauthenticated: no replication at all.
    body = await gql(pull_query("Notification"), {"limit": 10})
    assert error_codes(body) == ["UNAUTHENTICATED"]


async def test_a_checkpoint_of_another_database_or_from_the_future_is_refused(
    state: AppState, gql: GraphQLClient
) -> None:
    """Signed with this server's key, but naming another log epoch (a restored backup) or a seq this
    database never reached: the phone must start over, never silently skip."""
    me = await world.person(state)
    assert me.account_id is not None
    from api.auth.service import Viewer

    viewer = Viewer(account_id=me.account_id, role=Role.RESIDENT, session_id="x", person_id=me.person_id)
    coll = mobile.collection("Notification")
    async with state.db.session() as session:
        epoch = (await session.get(ReplicationState, 1)).epoch  # type: ignore[union-attr]
    for checkpoint in (mobile.Checkpoint("another-epoch", 0), mobile.Checkpoint(epoch, 10**12)):
        token = mobile.encode(state, viewer, coll, checkpoint)
        assert bad_field(await pull(gql, "Notification", token, 10, bearer=me.token)) == "checkpoint"


async def test_too_many_push_rows_are_bad_input(state: AppState, gql: GraphQLClient) -> None:
    me = await world.person(state)
    rows = [{"newDocumentState": filing_doc(str(uuid.uuid4()), me.person_id)}] * (mobile.MAX_PUSH_ROWS + 1)
    assert bad_field(await gql(push_query("Filing"), {"rows": rows}, token=me.token)) == "rows"


# --- push: filing drafts -------------------------------------------------------------------------------


def filing_doc(client_id: str, person_id: int, **overrides: Any) -> dict[str, Any]:
    return {
        "id": client_id,
        "personId": str(person_id),
        "kind": "cross_region",
        "status": "draft",
        "fields": cross_region(),
        "_deleted": False,
        **overrides,
    }


def as_input(document: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """What RxDB sends back: the document as pulled, with the local changes."""
    return {**document, **changes}


async def test_an_offline_draft_is_created_edited_and_discarded(state: AppState, gql: GraphQLClient) -> None:
    me = await world.person(state)
    client_id = str(uuid.uuid4())
    push = push_query("Filing")
    assert (
        await gql(push, {"rows": [{"newDocumentState": filing_doc(client_id, me.person_id)}]}, token=me.token)
    )["data"]["pushFiling"] == []
    documents, token, _ = await pull_all(gql, "Filing", None, 10, bearer=me.token)
    [master] = documents
    assert master["id"] == client_id and master["serverId"] and master["version"] == 1
    assert master["status"] == "draft" and not master["_deleted"]
    # Edited offline, pushed with the master it assumed.
    edited = as_input(master, fields={**master["fields"], "reason": "到上海照顾外孙期间就医"})
    assert (
        await gql(
            push, {"rows": [{"assumedMasterState": master, "newDocumentState": edited}]}, token=me.token
        )
    )["data"]["pushFiling"] == []
    documents, token, _ = await pull_all(gql, "Filing", token, 10, bearer=me.token)
    [fresh] = documents
    assert fresh["version"] == 2 and fresh["fields"]["reason"] == "到上海照顾外孙期间就医"
    # A stale assumed master: a conflict, the master returned and nothing written.
    stale = as_input(master, fields={**master["fields"], "reason": "旧设备上的修改"})
    answer = await gql(
        push, {"rows": [{"assumedMasterState": master, "newDocumentState": stale}]}, token=me.token
    )
    [conflict] = answer["data"]["pushFiling"]
    assert conflict["version"] == 2 and conflict["fields"]["reason"] == "到上海照顾外孙期间就医"
    async with state.db.session() as session:
        row = (await session.execute(select(Filing).where(col(Filing.client_id) == client_id))).scalar_one()
        assert row.version == 2 and row.fields["reason"] == "到上海照顾外孙期间就医"
    # Discarded offline: the draft is withdrawn and leaves the replica.
    gone = as_input(fresh, _deleted=True)
    assert (
        await gql(push, {"rows": [{"assumedMasterState": fresh, "newDocumentState": gone}]}, token=me.token)
    )["data"]["pushFiling"] == []
    documents, _, _ = await pull_all(gql, "Filing", token, 10, bearer=me.token)
    assert [(d["id"], d["_deleted"], d["status"]) for d in documents] == [(client_id, True, "withdrawn")]
    # A repeat of the create after a lost answer changes nothing.
    repeat = await gql(
        push, {"rows": [{"newDocumentState": filing_doc(client_id, me.person_id)}]}, token=me.token
    )
    assert "errors" not in repeat


async def test_a_draft_for_a_relative_needs_file_on_behalf(state: AppState, gql: GraphQLClient) -> None:
    holder, relative = await world.person(state), await world.person(state, age=70)
    await world.link(state, holder, relative, {Permission.READ_RECORDS})
    client_id = str(uuid.uuid4())
    body = await gql(
        push_query("Filing"),
        {"rows": [{"newDocumentState": filing_doc(client_id, relative.person_id)}]},
        token=holder.token,
    )
    assert error_codes(body) == ["FORBIDDEN"], body
    stranger = await world.person(state)
    body = await gql(
        push_query("Filing"),
        {"rows": [{"newDocumentState": filing_doc(str(uuid.uuid4()), stranger.person_id)}]},
        token=holder.token,
    )
    assert error_codes(body) == ["NOT_FOUND"], body
    async with state.db.session() as session:
        assert (
            await session.execute(select(Filing).where(col(Filing.client_id) == client_id))
        ).first() is None


async def test_a_submitted_filing_cannot_be_changed_by_push(state: AppState, gql: GraphQLClient) -> None:
    me = await world.person(state)
    client_id = str(uuid.uuid4())
    await gql(
        push_query("Filing"),
        {"rows": [{"newDocumentState": filing_doc(client_id, me.person_id)}]},
        token=me.token,
    )
    [master], _, _ = await pull_all(gql, "Filing", None, 10, bearer=me.token)
    submitting = as_input(master, status="submitted")
    answer = await gql(
        push_query("Filing"),
        {"rows": [{"assumedMasterState": master, "newDocumentState": submitting}]},
        token=me.token,
    )
    [conflict] = answer["data"]["pushFiling"]
    assert conflict["status"] == "draft" and conflict["version"] == 1


# --- push: notification read marks ---------------------------------------------------------------------


async def test_a_notification_is_marked_read_by_push(state: AppState, gql: GraphQLClient) -> None:
    me = await world.person(state)
    async with state.db.session() as session:
        row = await notifications.notify(session, me.person_id, "filing.status", "测试", "您的申请已更新。")
        notification_id = row.id
    [document], token, _ = await pull_all(gql, "Notification", None, 10, bearer=me.token)
    assert document["readAt"] is None
    read = as_input(document, readAt="2026-12-01T00:00:00Z")
    answer = await gql(
        push_query("Notification"),
        {"rows": [{"assumedMasterState": document, "newDocumentState": read}]},
        token=me.token,
    )
    assert answer["data"]["pushNotification"] == []
    async with state.db.session() as session:
        stored = await session.get(Notification, notification_id)
        assert stored is not None and stored.read_at is not None
    [marked], _, _ = await pull_all(gql, "Notification", token, 10, bearer=me.token)
    assert marked["readAt"] is not None
    # Unread again, or another title: conflicts, the master returned.
    for change in ({"readAt": None}, {"title": "改过的标题"}):
        answer = await gql(
            push_query("Notification"),
            {"rows": [{"assumedMasterState": marked, "newDocumentState": as_input(marked, **change)}]},
            token=me.token,
        )
        assert [d["id"] for d in answer["data"]["pushNotification"]] == [str(notification_id)], change
    # Someone else's notification: passed over.
    other = await world.person(state)
    answer = await gql(
        push_query("Notification"),
        {"rows": [{"newDocumentState": as_input(marked, readAt=None)}]},
        token=other.token,
    )
    assert answer["data"]["pushNotification"] == []


# --- nothing skipped under concurrent writers ------------------------------------------------------------


async def test_concurrent_writers_and_a_pulling_phone_never_skip_a_change(
    state: AppState, gql: GraphQLClient
) -> None:
    """Writers hold their transactions open for random times (on PostgreSQL they commit out of order)
    while the phone pulls in a loop over HTTP; at the end its replica holds every committed row once."""
    me = await world.person(state)
    rng = random.Random(12)
    writers, per_writer = (5, 12) if not state.settings.is_sqlite else (3, 6)
    written: set[str] = set()
    done = asyncio.Event()

    async def writer() -> None:
        for _ in range(per_writer):
            async with state.db.sessionmaker() as session:
                row = await notifications.notify(session, me.person_id, "test.race", "并发", "并发写入。")
                await asyncio.sleep(rng.random() * 0.02)
                if rng.random() < 0.15:
                    await session.rollback()
                    continue
                await session.commit()
                written.add(str(row.id))

    seen: list[str] = []

    async def reader() -> None:
        token = None
        while True:
            finished = done.is_set()
            documents, token, _ = await pull_all(gql, "Notification", token, 4, bearer=me.token)
            seen.extend(d["id"] for d in documents)
            if finished:
                return
            await asyncio.sleep(0.003)

    reading = asyncio.create_task(reader())
    await asyncio.gather(*(writer() for _ in range(writers)))
    done.set()
    await reading
    assert set(seen) == written


# --- stream over graphql-transport-ws ---------------------------------------------------------------------


def _ws(url: str) -> str:
    return url.replace("http://", "ws://") + "/graphql"


@asynccontextmanager
async def streaming(url: str, token: str, name: str) -> AsyncIterator[ClientConnection]:
    async with connect(_ws(url), subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
        await ws.send(
            json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}})
        )
        assert json.loads(await asyncio.wait_for(ws.recv(), WAIT)) == {"type": "connection_ack"}
        query = f"subscription {{ stream{name} {{ documents {{ {FIELDS[name]} }} checkpoint {{ token }} resync }} }}"
        await ws.send(json.dumps({"id": "s", "type": "subscribe", "payload": {"query": query}}))
        yield ws


async def event(ws: ClientConnection, name: str) -> dict[str, Any]:
    message = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
    assert message["type"] == "next", message
    result: dict[str, Any] = message["payload"]["data"][f"stream{name}"]
    return result


async def test_the_stream_sends_a_server_side_change_and_resyncs_when_a_link_goes(
    state: AppState, gql: GraphQLClient, live_server: str
) -> None:
    holder, relative = await world.person(state), await world.person(state, age=70)
    link_id = await world.link(state, holder, relative, set(Permission))
    assert holder.token is not None
    async with streaming(live_server, holder.token, "Notification") as ws:
        first = await event(ws, "Notification")
        assert first == {"documents": [], "checkpoint": None, "resync": True}  # pull from your checkpoint
        async with state.db.session() as session:
            row = await notifications.notify(
                session, holder.person_id, "filing.status", "审核通过", "您的申请已通过。"
            )
        change = await event(ws, "Notification")
        assert not change["resync"] and [d["id"] for d in change["documents"]] == [str(row.id)]
        assert change["documents"][0]["title"] == "审核通过"
        # Its checkpoint is one a pull accepts.
        assert "errors" not in await pull(
            gql, "Notification", change["checkpoint"]["token"], 10, bearer=holder.token
        )
    async with streaming(live_server, holder.token, "Settlement") as ws:
        assert (await event(ws, "Settlement"))["resync"]
        [settlement_id] = await seed_records(state, relative.person_id, count=1)
        change = await event(ws, "Settlement")
        assert [d["id"] for d in change["documents"]] == [str(settlement_id)]
        assert data_ok(await gql(UNLINK, {"linkId": str(link_id)}, token=holder.token))
        assert await event(ws, "Settlement") == {"documents": [], "checkpoint": None, "resync": True}


async def test_a_stream_refuses_a_reviewer_and_a_forged_login(state: AppState, live_server: str) -> None:
    async with connect(_ws(live_server), subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
        await ws.send(json.dumps({"type": "connection_init", "payload": {"Authorization": "Bearer forged"}}))
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), WAIT)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403
    reviewer = await world.staff(state, Role.REVIEWER)
    async with streaming(live_server, reviewer, "Filing") as ws:
        message = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
        assert message["type"] == "error", message
        assert [e["extensions"]["code"] for e in message["payload"]] == ["FORBIDDEN"]


async def test_a_logout_ends_a_live_stream_before_its_next_event(state: AppState, live_server: str) -> None:
    me = await world.person(state)
    assert me.token is not None
    async with streaming(live_server, me.token, "Notification") as ws:
        assert (await event(ws, "Notification"))["resync"]
        async with state.db.session() as session:
            await session.execute(
                update(AuthSession)
                .where(col(AuthSession.account_id) == me.account_id)
                .values(revoked_at=func.now(), revoked_reason="logout")
            )
        async with state.db.session() as session:
            await notifications.notify(session, me.person_id, "filing.status", "登出之后", "不应送达。")
        message = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
        assert message["type"] == "next" and message["payload"]["data"] is None, message
        assert [e["extensions"]["code"] for e in message["payload"]["errors"]] == ["UNAUTHENTICATED"]


async def test_a_stream_that_cannot_carry_everything_at_once_says_resync(
    state: AppState, live_server: str
) -> None:
    me = await world.person(state)
    assert me.token is not None
    async with streaming(live_server, me.token, "Notification") as ws:
        assert (await event(ws, "Notification"))["resync"]
        async with state.db.session() as session:  # one transaction: the stream sees them all at once
            for i in range(mobile.STREAM_MAX_CHANGES + 1):
                await notifications.notify(session, me.person_id, "test.burst", "批量", f"第{i}条")
        assert await event(ws, "Notification") == {"documents": [], "checkpoint": None, "resync": True}


# --- the change log of family links ---------------------------------------------------------------------


async def test_family_link_writes_are_in_the_change_log(state: AppState, gql: GraphQLClient) -> None:
    holder, relative = await world.person(state), await world.person(state, age=70)
    link_id = await world.link(state, holder, relative, set(Permission))
    _, token, _ = await pull_all(gql, "FamilyLink", None, 10, bearer=relative.token)
    assert data_ok(
        await gql(PERMISSIONS, {"linkId": str(link_id), "permissions": ["READ_RECORDS"]}, token=holder.token)
    )
    [changed], _, _ = await pull_all(gql, "FamilyLink", token, 10, bearer=relative.token)
    assert changed["id"] == str(link_id) and changed["permissions"] == ["read_records"]
    assert changed["myRole"] == "relative" and changed["personId"] == str(relative.person_id)
    async with state.db.session() as session:
        entries = await session.execute(
            select(func.count()).where(
                col(ChangeLogEntry.entity) == "family_link",
                col(ChangeLogEntry.entity_id) == str(link_id),
            )
        )
        assert entries.scalar_one() == 2  # one per side


# --- what a terminal's push writes replicates --------------------------------------------------------------


async def test_a_terminal_push_and_its_void_replicate_settlement_and_account_flows(
    state: AppState, gql: GraphQLClient
) -> None:
    """Through the terminal's real push: the sale's debit and the void's refund reach the resident's
    replica (the settlement's change-log entry stands for the flows written with it)."""
    from sync.protocol import Mutation, MutationKind, SettlementVoid, uuid7
    from tests.api import test_push as terminals

    place = await terminals.clinic(state)
    term = await terminals.terminal(state, place)
    member = await world.person(state)
    who = await terminals.villager(state, place.village_code, balance=3_000, person_id=member.person_id)
    _, flows_token, _ = await pull_all(gql, "AccountFlow", None, 50, bearer=member.token)
    _, settlements_token, _ = await pull_all(gql, "Settlement", None, 50, bearer=member.token)
    at = terminals.morning()
    payload = terminals.create(
        terminals.items(8_000),
        terminals.local_day(at),
        voucher=terminals.online_code(state, who, at),
        balance=3_000,
    )
    answer = await terminals.run(state, term, [terminals.mutation(1, payload, at)])
    [flow], flows_token, _ = await pull_all(gql, "AccountFlow", flows_token, 50, bearer=member.token)
    assert (flow["amountFen"], flow["kind"], flow["balanceAfterFen"]) == (-3_000, "settlement", 0)
    void = Mutation(
        uuid7(at),
        2,
        MutationKind.SETTLEMENT_VOID,
        at,
        SettlementVoid(answer["results"][0]["id"]).to_payload(),
    )
    await terminals.run(state, term, [void])
    flows, _, _ = await pull_all(gql, "AccountFlow", flows_token, 50, bearer=member.token)
    assert sorted((f["amountFen"], f["kind"]) for f in flows) == [
        (-3_000, "settlement"),
        (3_000, "settlement_void"),
    ]
    settlements, _, _ = await pull_all(gql, "Settlement", settlements_token, 50, bearer=member.token)
    assert [(s["source"], s["voided"]) for s in latest(settlements).values()] == [("terminal", True)]


async def test_an_expired_access_token_is_unauthenticated(state: AppState, gql: GraphQLClient) -> None:
    me = await world.person(state)
    assert me.account_id is not None
    async with state.db.session() as session:
        auth = AuthSession(id=str(uuid.uuid4()), account_id=me.account_id)
        session.add(auth)
    expired = state.tokens.issue_access(
        account_id=me.account_id, role="resident", session_id=auth.id, person_id=me.person_id,
        now=dt.datetime.now(dt.UTC) - dt.timedelta(days=2),
    )  # fmt: skip
    for name in ("Filing", "Notification"):
        body = await pull(gql, name, None, 10, bearer=expired)
        assert error_codes(body) == ["UNAUTHENTICATED"], body


# --- review (V1) --------------------------------------------------------------------------------------


TOMBSTONE_KEEPS = {"id", "personId", "updatedAt", "_deleted"}


async def test_a_tombstone_of_a_relative_no_longer_shared_carries_none_of_their_data(
    state: AppState, gql: GraphQLClient
) -> None:
    """After the link ends, what the ex-holder's phone is sent about the relative says only "gone": not
    the rows' contents, and not a visit the relative made after the link ended (its amounts, facility,
    time), nor a filing's later decision reached through the filer's change-log scope."""
    holder, relative = await world.person(state), await world.person(state, age=70)
    link_id = await world.link(state, holder, relative, set(Permission))
    await seed_records(state, relative.person_id, count=1)
    draft = str(uuid.uuid4())
    rows = [{"newDocumentState": filing_doc(draft, relative.person_id)}]
    assert (await gql(push_query("Filing"), {"rows": rows}, token=holder.token))["data"]["pushFiling"] == []
    tokens = {}
    for name in ("Settlement", "AccountFlow", "Contribution", "Filing"):
        _, tokens[name], _ = await pull_all(gql, name, None, 50, bearer=holder.token)
    ended = mobile_iso(dt.datetime.now(dt.UTC))
    assert data_ok(await gql(UNLINK, {"linkId": str(link_id)}, token=holder.token))
    await seed_records(state, relative.person_id, count=1)  # a visit after the link ended
    async with state.db.session() as session:  # the relative's draft changes after it (seen in the
        # holder's scope, the filer's): a stand-in for a reviewer's later decision
        filing = (await session.execute(select(Filing).where(col(Filing.client_id) == draft))).scalar_one()
        filing.decision_reason = "不予受理：材料不全"
        await changelog.record(session, filings._changes(filing))
        await session.commit()
    for name in ("Settlement", "AccountFlow", "Contribution", "Filing"):
        documents, _, _ = await pull_all(gql, name, tokens[name], 50, bearer=holder.token)
        theirs = [d for d in documents if d["personId"] == str(relative.person_id)]
        assert theirs and all(d["_deleted"] for d in theirs), name
        for document in theirs:
            carried = {
                k: v
                for k, v in document.items()
                if k not in TOMBSTONE_KEEPS and v not in ("", 0, None, [], {})
            }
            assert carried == {}, (name, carried)
            assert document["updatedAt"] >= ended  # when it left the replica, not when the row changed


def mobile_iso(moment: dt.datetime) -> str:
    text = iso(moment)
    assert text is not None
    return text


@pytest.mark.parametrize("odd", ["²", "١", "1\u0663"])
async def test_ids_in_unicode_digits_are_bad_input_not_a_crash(
    state: AppState, gql: GraphQLClient, odd: str
) -> None:
    me = await world.person(state)
    rows = [{"newDocumentState": filing_doc(str(uuid.uuid4()), me.person_id, personId=odd)}]
    body = await gql(push_query("Filing"), {"rows": rows}, token=me.token)
    assert bad_field(body) == "rows[0].newDocumentState.personId"
    note = {"id": odd, "personId": str(me.person_id), "kind": "x", "title": "t", "body": "b", "data": {}}
    note["createdAt"] = "2026-12-01T00:00:00Z"
    body = await gql(push_query("Notification"), {"rows": [{"newDocumentState": note}]}, token=me.token)
    assert bad_field(body) == "rows[0].newDocumentState.id"


async def test_a_new_drafts_bad_fields_are_named_in_the_push_row(state: AppState, gql: GraphQLClient) -> None:
    """The filings service names its input `input.*`; a push names the row it came in."""
    me = await world.person(state)
    good = filing_doc(str(uuid.uuid4()), me.person_id)
    cases = {
        "rows[1].newDocumentState.fields.evil": {"fields": {**cross_region(), "evil": 1}},
        "rows[1].newDocumentState.fields.endOn": {"fields": cross_region(endOn="2020-01-01")},
        "rows[1].newDocumentState.kind": {"kind": "nonsense"},
    }
    for expected, change in cases.items():
        bad = filing_doc(str(uuid.uuid4()), me.person_id, **change)
        rows = [{"newDocumentState": good}, {"newDocumentState": bad}]
        assert bad_field(await gql(push_query("Filing"), {"rows": rows}, token=me.token)) == expected


async def test_a_draft_edited_to_a_submitted_invoice_is_refused_as_its_create_would_be(
    state: AppState, gql: GraphQLClient
) -> None:
    """An edit is validated as a create: naming an invoice another filing has already submitted is the
    same CONFLICT (invoice_used) at the same field, and the draft stays as it was."""
    me = await world.person(state)
    other = await world.person(state)
    taken = invoice_number()
    async with state.db.session() as session:  # another resident's submitted filing holds the invoice
        holder = Filing(
            client_id=str(uuid.uuid4()), request_digest="x", kind="reimbursement", person_id=other.person_id,
            region_code="340421", filed_by_account_id=other.account_id, status="submitted", fields={},
        )  # fmt: skip
        session.add(holder)
        await session.flush()
        assert holder.id is not None
        session.add(FilingInvoice(invoice_number=taken, filing_id=holder.id))
        await session.commit()
    refused = filing_doc(str(uuid.uuid4()), me.person_id, kind="reimbursement")
    refused["fields"] = reimbursement(visits=[visit(invoiceNumber=taken)])
    body = await gql(push_query("Filing"), {"rows": [{"newDocumentState": refused}]}, token=me.token)
    assert error_codes(body) == ["CONFLICT"], body
    expected = body["errors"][0]["extensions"]
    assert expected["field"] == "rows[0].newDocumentState.fields.visits[0].invoiceNumber"
    draft = filing_doc(str(uuid.uuid4()), me.person_id, kind="reimbursement", fields=reimbursement())
    body = await gql(push_query("Filing"), {"rows": [{"newDocumentState": draft}]}, token=me.token)
    assert body["data"]["pushFiling"] == [], body
    [master], _, _ = await pull_all(gql, "Filing", None, 10, bearer=me.token)
    fields = {**master["fields"], "visits": [visit(invoiceNumber=taken)]}
    rows = [{"assumedMasterState": master, "newDocumentState": as_input(master, fields=fields)}]
    body = await gql(push_query("Filing"), {"rows": rows}, token=me.token)
    assert error_codes(body) == ["CONFLICT"], body
    assert body["errors"][0]["extensions"] == expected
    [after], _, _ = await pull_all(gql, "Filing", None, 10, bearer=me.token)
    assert after == master


async def test_another_residents_draft_or_notification_cannot_be_touched_through_its_id(
    state: AppState, gql: GraphQLClient
) -> None:
    """Their draft's client id, pushed as mine (edited, discarded, or as a new draft): NOT_FOUND, the
    draft unchanged. Their unread notification pushed as read: passed over, still unread. My own
    unread one with readAt and another title: a conflict, and not marked read either."""
    me, other = await world.person(state), await world.person(state)
    theirs = filing_doc(str(uuid.uuid4()), other.person_id)
    assert (await gql(push_query("Filing"), {"rows": [{"newDocumentState": theirs}]}, token=other.token))[
        "data"
    ]["pushFiling"] == []
    [master], _, _ = await pull_all(gql, "Filing", None, 10, bearer=other.token)
    attempts = [
        {
            "assumedMasterState": master,
            "newDocumentState": as_input(master, fields=cross_region(reason="改")),
        },
        {"assumedMasterState": master, "newDocumentState": as_input(master, _deleted=True)},
        {"newDocumentState": {**theirs, "personId": str(me.person_id)}},
    ]
    for row in attempts:
        body = await gql(push_query("Filing"), {"rows": [row]}, token=me.token)
        assert error_codes(body) == ["NOT_FOUND"], (row, body)
    [after], _, _ = await pull_all(gql, "Filing", None, 10, bearer=other.token)
    assert after == master
    async with state.db.session() as session:
        their_note = await notifications.notify(
            session, other.person_id, "filing.status", "他人", "他人的通知。"
        )
        my_note = await notifications.notify(session, me.person_id, "filing.status", "我的", "我的通知。")
        ids = (their_note.id, my_note.id)
    [their_doc], _, _ = await pull_all(gql, "Notification", None, 10, bearer=other.token)
    [my_doc], _, _ = await pull_all(gql, "Notification", None, 10, bearer=me.token)
    rows = [
        {
            "assumedMasterState": their_doc,
            "newDocumentState": as_input(their_doc, readAt="2026-12-01T00:00:00Z"),
        },
        {
            "assumedMasterState": my_doc,
            "newDocumentState": as_input(my_doc, readAt="2026-12-01T00:00:00Z", title="改"),
        },
    ]
    answer = await gql(push_query("Notification"), {"rows": rows}, token=me.token)
    assert [d["id"] for d in answer["data"]["pushNotification"]] == [str(my_note.id)]
    async with state.db.session() as session:
        for notification_id in ids:
            stored = await session.get(Notification, notification_id)
            assert stored is not None and stored.read_at is None
