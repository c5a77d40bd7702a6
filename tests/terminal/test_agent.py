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


async def test_two_offline_clinics_pass_a_cap_the_second_is_adjusted_and_a_replayed_voucher_rejected(
    state: AppState, sync_server: Server, tmp_path: Path
) -> None:
    village = await make_village(state, 1, clinics=2)
    (alice,) = village.people
    one, two = tmp_path / "one", tmp_path / "two"
    await enrolled(state, sync_server, one, village.clinics[0])
    await enrolled(state, sync_server, two, village.clinics[1])

    # Both clinics offline: each settles her against the totals it synced (nothing used yet).
    shown_twice = online_code(state, alice)
    assert agent(one, "settle", "--voucher", shown_twice, "--item", "甲:500.00").json["basicFen"] == 30_000
    assert (
        agent(two, "settle", "--voucher", online_code(state, alice), "--item", "甲:500.00").json["basicFen"]
        == 30_000
    )
    # The same code shown at the second clinic too: its own replay store has never seen it.
    assert agent(two, "settle", "--voucher", shown_twice, "--item", "甲:20.00").status == 0

    assert agent(one, "sync").json["applied"] == 1
    second = agent(two, "sync").json
    assert (second["adjusted"], second["rejected"]) == (1, 1)

    status = agent(two, "status").json
    (adjusted,) = status["adjustments"]
    assert adjusted["reason"] == "recomputed" and adjusted["message"] == "按参保人最新年度累计重新结算"
    # The resident cap of 400 yuan: 300 paid at the first clinic leaves 100 here.
    assert adjusted["terminal"]["basicFen"] == 30_000 and adjusted["server"]["basicFen"] == 10_000
    assert adjusted["deltas"]["basicFen"] == -20_000 and adjusted["deltas"]["cashFen"] == 20_000
    (rejected,) = status["rejections"]
    assert rejected["reason"] == "voucher_replayed" and rejected["message"] == "医保码已被使用"
    human = _text(two, "status")
    assert (
        "医保中心调整的结算" in human and "基本医保 300.00元→100.00元" in human and "医保码已被使用" in human
    )

    # The pull after the push brought the server's totals: the next visit here knows the cap is used.
    assert (
        agent(two, "settle", "--voucher", online_code(state, alice), "--item", "甲:50.00").json["basicFen"]
        == 0
    )
    # Her settlements on the server add up to the cap, and each voucher was used once.
    stored = await settlements_of(state, alice.id)
    assert sum(s.basic_fen for s in stored) == 40_000
    refs = [s.voucher_ref for s in stored]
    assert len(refs) == len(set(refs)) == 2


def _text(home: Path, *args: str) -> str:
    import subprocess

    from tests.terminal.world import ROOT, TERMINAL, agent_env

    done = subprocess.run(
        [*TERMINAL, "--home", str(home), *args], capture_output=True, text=True, env=agent_env(), cwd=ROOT
    )
    return done.stdout + done.stderr


async def test_the_operator_reads_chinese_receipts_and_status(
    state: AppState, sync_server: Server, home: Path
) -> None:
    village = await make_village(state, 2, employees=1)
    worker, farmer = village.people
    await enrolled(state, sync_server, home, village.clinics[0])
    receipt = _text(
        home,
        "settle",
        "--voucher",
        online_code(state, worker),
        "--item",
        "甲:620.50:0:诊疗费",
        "--item",
        "乙:88:100:阿莫西林",
    )
    print(receipt)
    assert "【预结算/待同步】" in receipt and "费用合计：708.50元" in receipt and "个人账户支付" in receipt
    assert worker.name not in receipt and worker.name[0] in receipt  # masked
    card = _text(home, "settle", "--person", str(farmer.id), "--item", "丙:30")
    assert "社保卡" in card
    bill = {
        "category": "general_outpatient",
        "items": [{"item_class": "class_a", "amount_fen": 4_321, "name": "换药"}],
    }
    from_file = agent(home, "settle", "--person", str(farmer.id), "--bill", "-", stdin=json.dumps(bill))
    assert (
        from_file.status == 0 and from_file.json["totalFen"] == 4_321 and from_file.json["basicFen"] == 2_593
    )
    bad_file = agent(
        home, "settle", "--person", str(farmer.id), "--bill", "-", stdin='{"items": [], "extra": 1}'
    )
    assert bad_file.status == 1 and bad_file.json["error"]["reason"] == "bad_bill"
    status = _text(home, "status")
    print(status)
    assert "待上传结算：3 笔" in status
    synced = _text(home, "sync")
    print(synced)
    assert "同步完成：上传 3 笔（确认 3" in synced
    bad = _text(home, "settle", "--person", str(farmer.id), "--item", "甲:-3")
    print(bad)
    assert bad.startswith("错误：") and "金额" in bad


async def test_a_resync_pulls_everything_again_and_drops_only_what_the_new_snapshot_lacks(
    state: AppState, sync_server: Server, tmp_path: Path
) -> None:
    from sqlalchemy import update

    from api.people.models import InsuredPerson
    from api.replication import changelog

    village = await make_village(state, 3)
    moved, stays, _ = village.people
    home, other = tmp_path / "clinic", tmp_path / "other"
    await enrolled(state, sync_server, home, village.clinics[0])
    assert agent(home, "settle", "--person", str(moved.id), "--item", "甲:30").status == 0
    assert agent(home, "sync").json["applied"] == 1
    # Meanwhile: a villager moves away (written without a change-log entry, so only a full snapshot
    # can tell), another terminal's push and pull number new entries, and the log is compacted.
    async with state.db.session() as session:
        await session.execute(
            update(InsuredPerson).where(col(InsuredPerson.id) == moved.id).values(village_code=None)
        )
        await session.commit()
    elsewhere = await make_village(state, 1)
    await enrolled(state, sync_server, other, elsewhere.clinics[0])
    assert agent(other, "settle", "--person", str(elsewhere.people[0].id), "--item", "甲:5").status == 0
    assert agent(other, "sync").status == 0
    async with state.db.session() as session:
        assert await changelog.compact(session, dt.timedelta(0)) > 0

    assert agent(home, "settle", "--person", str(stays.id), "--item", "甲:40").status == 0
    synced = agent(home, "sync")
    assert synced.status == 0 and synced.json["resynced"] is True and synced.json["pullComplete"]
    assert sorted(int(r[0]) for r in local(home, "SELECT person_id FROM roster")) == sorted(
        p.id for p in village.people if p is not moved
    )
    # Nothing of the terminal's own is dropped: both settlements are there, answered.
    assert local(home, "SELECT status FROM settlements ORDER BY seq") == [("applied",), ("applied",)]
    assert agent(home, "status").json["synced"]["policies"] >= 1
