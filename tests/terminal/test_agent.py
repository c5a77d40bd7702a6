"""The clinic agent end to end (issue 10 items 1-3): each command run as its own process against a
real server process on the test database."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import stat
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlmodel import col

from api.people.models import Settlement
from api.replication.models import PushedMutation
from api.settlement import service as settlement_service
from api.state import AppState
from sync.protocol import Split
from sync.settlement import BillItem, Visit, YearToDate, compute, load_default_policies
from tests.terminal.world import (
    REGION,
    Server,
    agent,
    enrolment_code,
    make_village,
    online_code,
)

POLICIES = load_default_policies()


def shanghai_today() -> dt.date:
    return dt.datetime.now(dt.timezone(dt.timedelta(hours=8))).date()


async def enrolled(state: AppState, server: Server, home: Path, clinic: int, *extra: str) -> dict[str, Any]:
    code = await enrolment_code(state, clinic)
    run = agent(home, "enrol", "--server", server.url, "--code", code, *extra)
    assert run.status == 0, run.stdout + run.stderr
    result: dict[str, Any] = run.json
    return result


async def pushed_rows(state: AppState, terminal_id: str) -> list[PushedMutation]:
    async with state.db.session() as session:
        rows = await session.execute(
            select(PushedMutation)
            .where(col(PushedMutation.terminal_id) == int(terminal_id))
            .order_by(col(PushedMutation.seq))
        )
        return list(rows.scalars())


async def settlements_of(state: AppState, person_id: int) -> list[Settlement]:
    async with state.db.session() as session:
        rows = await session.execute(
            select(Settlement).where(col(Settlement.person_id) == person_id).order_by(col(Settlement.id))
        )
        return list(rows.scalars())


def local(home: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(home / "terminal.db")
    try:
        return db.execute(sql, params).fetchall()
    finally:
        db.close()


def expected_split(
    items: tuple[BillItem, ...], ytd: YearToDate | None, insurance: str = "resident"
) -> tuple[Split, YearToDate]:
    day = shanghai_today()
    visit = Visit(
        visit_date=day,
        region=REGION,
        insurance_type=insurance,
        age_group="adult",
        facility_level="village",
        locality="local",
        category="general_outpatient",
        items=items,
    )
    result = compute(POLICIES, visit, ytd, today=day)
    return Split.from_result(result), result.ytd


async def test_enrol_scan_settle_offline_then_sync_agrees_with_the_server(
    state: AppState, sync_server: Server, home: Path
) -> None:
    village = await make_village(state, 3)
    alice, bob, _ = village.people
    identity = await enrolled(state, sync_server, home, village.clinics[0])
    assert identity["clinicId"] == str(village.clinics[0]) and identity["sync"]["pullComplete"]
    assert stat.S_IMODE((home / "terminal.key").stat().st_mode) == 0o600
    assert local(home, "SELECT count(*) FROM roster") == [(3,)]

    # Offline from here on (nothing below talks to the server until `sync`).
    code = online_code(state, alice)
    scanned = agent(home, "scan", code)
    assert scanned.status == 0, scanned.stdout
    assert (
        scanned.json["patient"]["nameMasked"].startswith(alice.name[0])
        and "*" in scanned.json["patient"]["nameMasked"]
    )
    again = agent(home, "scan", code)
    assert again.status == 1 and again.json["reason"] == "replayed"  # the replay store outlives the process

    first = agent(
        home, "settle", "--scan", str(scanned.json["scan"]), "--item", "甲:150.00", "--item", "丙:20.00"
    )
    assert first.status == 0, first.stdout + first.stderr
    receipt = first.json
    assert (
        receipt["status"] == "pending" and receipt["statusLabel"] == "预结算/待同步" and receipt["seq"] == 1
    )
    items1 = (BillItem(15_000, "class_a"), BillItem(2_000, "class_c"))
    split1, after1 = expected_split(items1, None)
    assert {k: receipt[k] for k in split1.to_dict()} == split1.to_dict()

    # Her second visit during the outage is computed against the first.
    second = agent(home, "settle", "--voucher", online_code(state, alice), "--item", "甲:600.00")
    assert second.status == 0, second.stdout
    split2, _ = expected_split((BillItem(60_000, "class_a"),), after1)
    assert {k: second.json[k] for k in split2.to_dict()} == split2.to_dict()
    fresh, _ = expected_split((BillItem(60_000, "class_a"),), None)
    assert split2 != fresh  # the first visit's deductible or cap use shows

    # Bob has no phone: his card and the roster.
    card = agent(home, "settle", "--person", str(bob.id), "--item", "甲:80.00")
    assert card.status == 0 and card.json["identifiedBy"] == "card"
    status = agent(home, "status")
    assert status.json["queue"]["length"] == 3 and status.json["settlements"]["pending"] == 3

    synced = agent(home, "sync")
    assert synced.status == 0, synced.stdout + synced.stderr
    assert synced.json["pushed"] == 3 and synced.json["applied"] == 3 and synced.json["pullComplete"]
    after = agent(home, "status").json
    assert after["queue"]["length"] == 0 and after["settlements"]["applied"] == 3
    assert after["adjustments"] == [] and after["rejections"] == []

    rows = await pushed_rows(state, identity["terminalId"])
    ids = [r[0] for r in local(home, "SELECT id FROM mutations ORDER BY seq")]
    assert [r.mutation_id for r in rows] == ids and [r.seq for r in rows] == [1, 2, 3]
    stored = await settlements_of(state, alice.id)
    assert [s.basic_fen for s in stored] == [split1.basic_fen, split2.basic_fen]
    # The roster pulled after the push carries the server's totals: local and server agree.
    async with state.db.session() as session:
        ytd = await settlement_service.year_to_date(session, alice.id, shanghai_today().year)
    assert sum(ytd.basic_paid_fen.values()) == split1.basic_fen + split2.basic_fen
    roster = json.loads(local(home, "SELECT data FROM roster WHERE person_id = ?", str(alice.id))[0][0])
    assert sum(roster["yearToDate"]["basicPaidFen"].values()) == split1.basic_fen + split2.basic_fen
