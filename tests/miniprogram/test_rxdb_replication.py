"""A real RxDB database (the `rxdb` npm package, memory storage, in Node) synced against a running server
through the SDK's replication wiring (clients/miniprogram/src/replication.ts, built into dist/): the
first sync of every collection, a filing draft made offline and pushed, a change made on the server that
arrives over graphql-ws, and a conflict (a draft edited offline while the server submitted it)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlmodel import col

from api.family.models import FamilyLink, LinkStatus, Permission
from api.notifications import service as notifications
from api.people.models import AccountFlow, Contribution, Settlement
from api.settings import Settings
from api.state import AppState
from tests.api import familyworld
from tests.api.test_mobile_replication import seed_records
from tests.conftest import serving
from tests.miniprogram.node import NODE_TIMEOUT_S, SDK_DIR, require_node

SCRIPT = SDK_DIR.parents[1] / "tests" / "miniprogram" / "rxdb_replication.mjs"


def node_flags() -> list[str]:
    """Node 20 has a WebSocket only behind a flag (the bundle uses the platform's, as a browser does)."""
    version = subprocess.run(["node", "--version"], capture_output=True, text=True, check=True).stdout
    return ["--experimental-websocket"] if int(version.lstrip("v").split(".")[0]) < 22 else []


def run_script(base_url: str, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    proc = subprocess.run(
        ["node", *node_flags(), str(SCRIPT), base_url, *args],
        cwd=SCRIPT.parent,
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT_S,
        check=False,
        env={**os.environ, **(env or {})},
    )
    lines = proc.stdout.strip().splitlines()
    try:
        report: dict[str, Any] = json.loads(lines[-1])
    except (IndexError, ValueError):
        # A crash in the bundle prints its (minified) source line: keep every line short.
        stderr = "\n".join(line[:300] for line in proc.stderr.splitlines()[-30:])
        pytest.fail(f"no report (exit {proc.returncode}):\n{proc.stdout[-4000:]}\n{stderr}")
    if "error" in report:
        pytest.fail(f"{report['error']}\nsteps: {report['steps']}\n{proc.stderr[-4000:]}")
    return report


async def reader_relatives(state: AppState, holder: int) -> set[int]:
    """Relatives whose records the holder may read now (active link with read_records)."""
    async with state.db.session() as session:
        rows = await session.execute(
            select(col(FamilyLink.relative_person_id)).where(
                col(FamilyLink.holder_person_id) == holder,
                col(FamilyLink.status) == LinkStatus.ACTIVE.value,
                col(FamilyLink.can_read_records).is_(True),
            )
        )
        return {int(r) for (r,) in rows}


async def record_counts(state: AppState, person_id: int) -> dict[str, int]:
    counts = {}
    async with state.db.session() as session:
        for name, model in (
            ("Settlement", Settlement),
            ("Contribution", Contribution),
            ("AccountFlow", AccountFlow),
        ):
            counts[name] = int(
                (
                    await session.execute(
                        select(func.count()).select_from(model).where(col(model.person_id) == person_id)
                    )
                ).scalar_one()
            )
    return counts


async def test_rxdb_syncs_pushes_streams_and_resolves_a_conflict(live_server: str, state: AppState) -> None:
    require_node()
    report = await asyncio.to_thread(run_script, live_server)
    me = report["me"]

    # 1. First sync: every collection, paged (batch of 7), the resident's own rows all there.
    first = report["first"]
    assert set(first) == {"Settlement", "Contribution", "AccountFlow", "Filing", "FamilyLink", "Notification"}
    relatives = await reader_relatives(state, int(me))
    assert relatives, "the demo resident has a relative whose records they may read"
    for person in {int(me), *relatives}:
        for name, count in (await record_counts(state, person)).items():
            assert first[name]["byPerson"].get(str(person), 0) == count, (name, person, first[name])
    for name in ("Settlement", "Contribution", "AccountFlow"):
        assert set(first[name]["byPerson"]) <= {me, *map(str, relatives)}, first[name]["byPerson"]
        assert first[name]["byPerson"][me] > 7, name  # more than one page of 7
    assert first["FamilyLink"]["count"] >= 1

    # 2. The offline draft reached the server as a draft with the client's id, and came back with its ids.
    draft = report["offlineDraft"]
    [on_server] = draft["onServer"]
    assert on_server["status"] == "DRAFT"
    assert draft["local"]["serverId"] == on_server["id"]
    assert draft["local"]["version"] is not None

    # 3. The submission made through the API arrived over graphql-ws (a streamFiling event naming the
    # draft, or the server's resync signal followed by a pull).
    change = report["streamedChange"]
    assert change["submittedStatus"] == "SUBMITTED"
    assert change["local"]["status"] == "submitted"
    filing_events = [m for m in change["messages"] if m.get("field") == "streamFiling"]
    assert any(draft["id"] in m["ids"] for m in filing_events), change["messages"]

    # 4. The conflict: the push assumed the draft, the server answered with its master (submitted);
    # the server's state won in the replica and the offline edit was not written.
    conflict = report["conflict"]
    answered = [doc for push in conflict["pushes"] for doc in push["answer"]["data"]["pushFiling"]]
    assert [d["status"] for d in answered if d["id"] == conflict["id"]] == ["submitted"], conflict["pushes"]
    assert conflict["serverNow"]["status"] == "SUBMITTED"
    assert conflict["serverNow"]["fields"]["reason"] == "第二份"
    assert conflict["resolved"]["status"] == "submitted"
    assert conflict["resolved"]["fields"]["reason"] == "第二份"


SHORT_TTL_S = 30  # the shortest access-token lifetime the settings allow


@pytest.fixture
def short_token_server(settings: Settings, state: AppState) -> Iterator[str]:
    """The app on its own uvicorn (same database and keys) whose access tokens last 30 s."""
    short = settings.model_copy(update={"access_token_ttl_s": SHORT_TTL_S})
    with serving(short, "the short-token server") as url:
        yield url


async def test_a_token_that_expires_while_streaming_is_refreshed_and_the_streams_resume(
    short_token_server: str,
) -> None:
    require_node()
    report = await asyncio.to_thread(run_script, short_token_server, "expiry", str(SHORT_TTL_S))
    expiry = report["expiry"]
    # The createFiling with the expired token was refused, refreshed once and retried.
    assert expiry["refreshes"] == 1
    assert expiry["tokenChanged"] is True
    # The server ended the streams (UNAUTHENTICATED); they started again and the change arrived.
    assert any("UNAUTHENTICATED" in json.dumps(m["error"]) for m in expiry["streamErrors"]), expiry
    assert expiry["restarts"] >= 1
    assert expiry["local"] == {
        "id": expiry["filing"]["clientId"],
        "serverId": expiry["filing"]["id"],
        "status": "draft",
    }


async def test_a_revoked_link_removes_the_relatives_documents_from_the_holders_replica(
    live_server: str, state: AppState
) -> None:
    require_node()
    holder = await familyworld.person(state)
    relative = await familyworld.person(state, age=70)
    link_id = await familyworld.link(state, holder, relative, {Permission.READ_RECORDS})
    await seed_records(state, relative.person_id, count=3)
    assert holder.token is not None
    report = await asyncio.to_thread(
        run_script,
        live_server,
        "revoke",
        str(link_id),
        str(relative.person_id),
        env={"YIBAO_TEST_TOKEN": holder.token},
    )
    before, after = report["revoke"]["before"], report["revoke"]["after"]
    # Replicated while linked: the relative's three settlements and flows, their contribution, the link.
    assert (before["Settlement"]["relative"], before["AccountFlow"]["relative"]) == (3, 3)
    assert before["Contribution"]["relative"] == 1
    assert before["FamilyLink"]["links"] == 1
    # Gone from the replica once the link ended; nothing else was there to lose.
    for name in ("Settlement", "AccountFlow", "Contribution"):
        assert after[name] == {"relative": 0, "links": 0, "all": 0}, (name, after)
    assert after["FamilyLink"]["links"] == 0
    # They went through the stream's resync signal (RESYNC: pull again from the checkpoint, which
    # brings the tombstones), not through a delta naming them.
    messages = report["revoke"]["messages"]
    assert any(m["field"] == "streamSettlement" and m["resync"] for m in messages), messages


async def test_a_push_whose_answer_is_lost_is_sent_again_without_a_second_filing(
    live_server: str, state: AppState
) -> None:
    require_node()
    me = await familyworld.person(state)
    assert me.token is not None
    report = await asyncio.to_thread(
        run_script, live_server, "lossy", str(me.person_id), env={"YIBAO_TEST_TOKEN": me.token}
    )
    lossy = report["lossy"]
    # The first push was written, but its answer (no conflicts) never reached the phone.
    assert [answer["data"]["pushFiling"] for answer in lossy["lost"]] == [[]]
    # The repeat was the same draft again: the server took it as the draft it has (created once,
    # idempotent on the client's id), so there is one filing, and the replica has its server id.
    repeats = [p for p in lossy["pushes"] if lossy["id"] in p["rows"]]
    assert len(repeats) == 1
    assert lossy["onServer"] == [
        {"id": lossy["local"]["serverId"], "clientId": lossy["id"], "status": "DRAFT"}
    ]
    assert lossy["local"]["status"] == "draft" and lossy["local"]["version"] is not None


async def test_a_draft_the_server_refuses_is_reported_and_does_not_hold_up_the_next(
    live_server: str, state: AppState
) -> None:
    """RxDB sends a failed push's rows again as they were, forever: one refused draft (a typo made
    offline) would keep every later draft off the server, with nothing said. The SDK sends the rows of
    a refused push one at a time, reports the refused one and lets the rest through."""
    require_node()
    me = await familyworld.person(state)
    assert me.token is not None
    report = await asyncio.to_thread(
        run_script, live_server, "refused", str(me.person_id), env={"YIBAO_TEST_TOKEN": me.token}
    )
    refused = report["refused"]
    assert refused["onServer"] == [refused["good"]]  # the good draft, once; the refused one never
    assert refused["synced"]
    assert refused["kept"] == {"serverId": None, "region": "31011"}  # still on the phone, as typed
    [refusal] = {(r["collection"], r["id"], r["code"], r["field"], r["message"]) for r in refused["refusals"]}
    assert refusal[:4] == (
        "Filing",
        refused["bad"],
        "BAD_USER_INPUT",
        "rows[0].newDocumentState.fields.destinationRegion",
    )
    assert "行政区划代码" in refusal[4]


async def test_the_mini_program_path_wx_request_and_wx_connect_socket(
    live_server: str, state: AppState
) -> None:
    """The replica over a `wx` object as a mini-program has it: pulls over wx.request, the streams over
    wx.connectSocket (the SDK's wxWebSocket), the session in wx storage."""
    require_node()
    me = await familyworld.person(state)
    await seed_records(state, me.person_id, count=2)
    assert me.token is not None
    report = await asyncio.to_thread(
        run_script, live_server, "wx", str(me.person_id), env={"YIBAO_TEST_TOKEN": me.token}
    )
    wx = report["wx"]
    assert wx["settlements"] == 2
    assert wx["pulls"] >= 6  # every collection pulled over wx.request
    assert wx["local"] == {
        "id": wx["filing"]["clientId"],
        "serverId": wx["filing"]["id"],
        "personId": str(me.person_id),
    }
    [socket] = wx["sockets"]  # one socket for the six streams
    assert socket["url"] == live_server.replace("http", "ws", 1) + "/graphql"
    assert socket["protocols"] == ["graphql-transport-ws"]


async def test_a_notification_read_offline_is_marked_read_on_the_server(
    live_server: str, state: AppState
) -> None:
    require_node()
    me = await familyworld.person(state)
    async with state.db.session() as session:
        row = await notifications.notify(session, me.person_id, "filing.status", "测试", "您的申请已更新。")
    assert me.token is not None and row.id is not None
    report = await asyncio.to_thread(
        run_script, live_server, "read", str(row.id), env={"YIBAO_TEST_TOKEN": me.token}
    )
    read = report["read"]
    assert read["before"] == {"id": str(row.id), "readAt": None}
    [on_server] = read["server"]
    assert on_server["id"] == str(row.id) and on_server["readAt"] is not None
    assert read["unread"] == 0
