"""Bad input and faults at the clinic (issue 10, "Bad input and faults to cover"): every one gets a
clear message and a distinct exit status, and nothing is half-written or lost."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlmodel import col
from terminal.settle import BillInput, Patient, settle
from terminal.store import Store

from api.people.models import Settlement
from api.replication.models import PushedMutation
from api.state import AppState
from api.terminals.models import Terminal
from api.vouchers import revocations
from sync.settlement import BillItem
from sync.vouchers import new_ref
from tests.terminal.proxy import FaultyProxy
from tests.terminal.test_agent import _text, enrolled, local
from tests.terminal.world import (
    Server,
    agent,
    enrolment_code,
    make_village,
    online_code,
    revoke,
    spawn,
)


def queue(home: Path) -> int:
    return int(local(home, "SELECT count(*) FROM mutations WHERE answer IS NULL")[0][0])


def mutations(home: Path) -> int:
    return int(local(home, "SELECT count(*) FROM mutations")[0][0])


async def server_view(state: AppState, terminal_id: str) -> tuple[int, int]:
    """(pushed mutations, settlements) the server holds for a terminal."""
    async with state.db.session() as session:
        pushed = (
            await session.execute(
                select(func.count())
                .select_from(PushedMutation)
                .where(col(PushedMutation.terminal_id) == int(terminal_id))
            )
        ).scalar_one()
        settled = (
            await session.execute(
                select(func.count())
                .select_from(Settlement)
                .where(col(Settlement.terminal_id) == int(terminal_id))
            )
        ).scalar_one()
    return int(pushed), int(settled)


@pytest.fixture
def proxy(sync_server: Server) -> Iterator[FaultyProxy]:
    faulty = FaultyProxy(sync_server.port)
    try:
        yield faulty
    finally:
        faulty.close()


# ------------------------------------------------------------------------------------- enrolment


async def test_a_second_enrol_over_an_enrolled_home_is_refused_and_changes_nothing(
    state: AppState, sync_server: Server, home: Path
) -> None:
    village = await make_village(state, 1)
    first = await enrolled(state, sync_server, home, village.clinics[0], "--no-sync")
    key = (home / "terminal.key").read_bytes()
    again = agent(
        home, "enrol", "--server", sync_server.url, "--code", await enrolment_code(state, village.clinics[0])
    )
    assert again.status == 2 and again.json["error"]["reason"] == "already_enrolled"
    assert "不能重复登记" in again.json["error"]["message"]
    assert (home / "terminal.key").read_bytes() == key
    assert agent(home, "status").json["terminalId"] == first["terminalId"]


async def test_a_wrong_or_spent_code_is_a_clear_message_and_a_good_one_then_enrols(
    state: AppState, sync_server: Server, tmp_path: Path
) -> None:
    village = await make_village(state, 1)
    wrong = agent(tmp_path / "a", "enrol", "--server", sync_server.url, "--code", "0000-0000-0000-0000-0000")
    assert wrong.status == 5 and wrong.json["error"]["reason"] == "enrolment_code_unknown"
    assert wrong.json["error"]["message"] == "注册码无效"
    assert agent(tmp_path / "a", "status").json["enrolled"] is False

    code = await enrolment_code(state, village.clinics[0])
    assert (
        agent(tmp_path / "b", "enrol", "--server", sync_server.url, "--code", code, "--no-sync").status == 0
    )
    spent = agent(tmp_path / "a", "enrol", "--server", sync_server.url, "--code", code)
    assert spent.status == 5 and spent.json["error"]["reason"] == "enrolment_code_used"
    assert "已被使用" in spent.json["error"]["message"]
    # The home that failed twice keeps its key and enrols with a fresh code.
    fresh = agent(
        tmp_path / "a",
        "enrol",
        "--server",
        sync_server.url,
        "--code",
        await enrolment_code(state, village.clinics[0]),
    )
    assert (
        fresh.status == 0 and fresh.json["terminalId"] != agent(tmp_path / "b", "status").json["terminalId"]
    )


async def test_an_enrolment_whose_answer_was_lost_is_answered_again(
    state: AppState, proxy: FaultyProxy, home: Path
) -> None:
    """The server enrolled the terminal, the answer never arrived: the agent asks again with the
    same key and the same code, and gets its terminal instead of a spent code."""
    village = await make_village(state, 1)
    code = await enrolment_code(state, village.clinics[0])
    proxy.script = ["drop"]
    run = agent(home, "enrol", "--server", proxy.url, "--code", code, "--no-sync")
    assert run.status == 0, run.stdout + run.stderr
    assert proxy.seen["drop"] == 1
    async with state.db.session() as session:
        rows = (
            await session.execute(select(Terminal).where(col(Terminal.clinic_id) == village.clinics[0]))
        ).scalars()
        (terminal,) = list(rows)
    assert str(terminal.id) == run.json["terminalId"]
    # Another key with the spent code still gets nothing.
    other = agent(home.with_name("other"), "enrol", "--server", proxy.url, "--code", code)
    assert other.status == 5 and other.json["error"]["reason"] == "enrolment_code_used"


# ---------------------------------------------------------------------------------------- vouchers


async def test_a_relatives_code_names_the_relative_and_a_revoked_link_is_refused(
    state: AppState, sync_server: Server, home: Path
) -> None:
    village = await make_village(state, 2)
    elder, _ = village.people
    await enrolled(state, sync_server, home, village.clinics[0])
    link = new_ref()
    shown = agent(home, "scan", online_code(state, elder, link=link))
    assert shown.status == 0
    patient = shown.json["patient"]
    assert patient["personId"] == str(elder.id) and patient["viaFamilyLink"] is True
    text = _text(home, "scan", online_code(state, elder, link=link))
    assert "亲情账户" in text and "就诊人为上述参保人本人" in text

    async with state.db.session() as session:
        await revocations.append(session, [("link", link.hex(), "unlinked")])
        await session.commit()
    assert agent(home, "sync").status == 0
    refused = agent(home, "scan", online_code(state, elder, link=link))
    assert refused.status == 1 and refused.json["reason"] == "revoked" and refused.json["detail"] == "link"
    # His own code (no link) still works.
    assert agent(home, "scan", online_code(state, elder)).status == 0


# ------------------------------------------------------------------------------ policy and clock


async def test_a_policy_version_the_terminal_has_not_synced_refuses_to_settle(
    state: AppState, sync_server: Server, home: Path
) -> None:
    village = await make_village(state, 1)
    await enrolled(state, sync_server, home, village.clinics[0])
    db = sqlite3.connect(home / "terminal.db")
    with db:
        # What a terminal that synced before this year's version was published holds.
        db.execute("DELETE FROM policies WHERE json_extract(data, '$.effective_to') IS NULL")
    db.close()
    refused = agent(home, "settle", "--person", str(village.people[0].id), "--item", "甲:10")
    assert refused.status == 2 and refused.json["error"]["reason"] == "policy_not_synced"
    assert "尚未同步就诊日" in refused.json["error"]["message"]
    assert mutations(home) == 0


async def test_settling_with_a_clock_before_the_last_synced_server_time_is_refused(
    state: AppState, sync_server: Server, home: Path
) -> None:
    village = await make_village(state, 1)
    (who,) = village.people
    await enrolled(state, sync_server, home, village.clinics[0])
    behind = agent(home, "settle", "--person", str(who.id), "--item", "甲:10", skew_s=-7200)
    assert behind.status == 2 and behind.json["error"]["reason"] == "clock_behind"
    assert "请校准本机时钟" in behind.json["error"]["message"]
    assert (
        agent(home, "scan", online_code(state, who), skew_s=-7200).json["error"]["reason"] == "clock_behind"
    )
    assert mutations(home) == 0
    # Syncing teaches the terminal its offset: from then on its corrected clock is right again.
    assert agent(home, "sync", skew_s=-7200).status == 0
    ok = agent(home, "settle", "--voucher", online_code(state, who), "--item", "甲:10", skew_s=-7200)
    assert ok.status == 0, ok.stdout
    assert abs(dt.datetime.fromisoformat(ok.json["clientTime"]) - dt.datetime.now(dt.UTC)) < dt.timedelta(
        minutes=2
    )


async def test_a_clock_a_few_minutes_behind_since_the_last_sync_still_syncs(
    state: AppState, sync_server: Server, home: Path
) -> None:
    """Five minutes behind: the server finds the fresh assertion expired rather than skewed; that
    is our clock too (found by the fault test: such a terminal stopped syncing)."""
    village = await make_village(state, 1)
    await enrolled(state, sync_server, home, village.clinics[0])
    assert agent(home, "settle", "--person", str(village.people[0].id), "--item", "甲:10").status == 0
    synced = agent(home, "sync", skew_s=-300)
    assert synced.status == 0, synced.stdout
    assert synced.json["applied"] == 1


async def test_a_genuine_voucher_from_a_terminal_a_minute_fast_is_not_refused_as_from_the_future(
    state: AppState, sync_server: Server, home: Path
) -> None:
    """The clock ran 70 s ahead since the last sync: the code still verifies at the counter, and the
    visit, pushed at once, must not be dated in the server's future and rejected (found by the long
    fault run: 12 genuine codes rejected `voucher_invalid`/`not_yet_valid`)."""
    village = await make_village(state, 1)
    (who,) = village.people
    await enrolled(state, sync_server, home, village.clinics[0])
    assert (
        agent(home, "settle", "--voucher", online_code(state, who), "--item", "甲:10", skew_s=70).status == 0
    )
    synced = agent(home, "sync", skew_s=70)
    assert synced.status == 0 and synced.json["rejected"] == 0, synced.stdout
    assert synced.json["applied"] + synced.json["adjusted"] == 1


async def test_a_terminal_a_day_off_from_the_start_settles_on_the_right_day(
    state: AppState, sync_server: Server, home: Path
) -> None:
    village = await make_village(state, 1)
    (who,) = village.people
    code = await enrolment_code(state, village.clinics[0])
    assert agent(home, "enrol", "--server", sync_server.url, "--code", code, skew_s=-86400).status == 0
    receipt = agent(
        home, "settle", "--voucher", online_code(state, who), "--item", "甲:10", skew_s=-86400
    ).json
    assert receipt["visitDate"] == dt.datetime.now(dt.timezone(dt.timedelta(hours=8))).date().isoformat()
    assert agent(home, "sync", skew_s=-86400).json["applied"] == 1


async def test_a_clock_that_jumped_a_day_ahead_is_adjusted_by_the_server(
    state: AppState, sync_server: Server, home: Path
) -> None:
    village = await make_village(state, 1)
    (who,) = village.people
    await enrolled(state, sync_server, home, village.clinics[0])
    # The jump happened after the last sync: the terminal cannot know, and dates the visit tomorrow.
    ahead = agent(home, "settle", "--person", str(who.id), "--item", "甲:10", skew_s=86400).json
    today = dt.datetime.now(dt.timezone(dt.timedelta(hours=8))).date()
    assert ahead["visitDate"] == (today + dt.timedelta(days=1)).isoformat()
    # A voucher signed a minute ago looks expired to that clock: refused at the counter.
    refused = agent(home, "settle", "--voucher", online_code(state, who), "--item", "甲:10", skew_s=86400)
    assert refused.status == 1 and refused.json["error"]["reason"] == "voucher_expired"
    synced = agent(home, "sync", skew_s=86400)  # its first assertion is refused (clock_skew), then fixed
    assert synced.status == 0 and synced.json["adjusted"] == 1
    (adjusted,) = agent(home, "status").json["adjustments"]
    assert adjusted["reason"] == "visit_date" and adjusted["serverVisitDate"] == today.isoformat()
    # The operator reads to which day it was moved, not only the day the wrong clock gave it.
    assert f"{(today + dt.timedelta(days=1)).isoformat()}→{today.isoformat()}" in _text(home, "status")


# --------------------------------------------------------------------------------- the server side


async def test_a_server_that_fails_in_every_way_loses_nothing_and_applies_each_mutation_once(
    state: AppState, proxy: FaultyProxy, home: Path
) -> None:
    village = await make_village(state, 1)
    (who,) = village.people
    code = await enrolment_code(state, village.clinics[0])
    enrolled_ = agent(home, "enrol", "--server", proxy.url, "--code", code)
    assert enrolled_.status == 0
    modes = ["error", "busy", "garbage", "gzip", "truncate", "drop", "refuse", "silent"]
    assert agent(home, "settle", "--person", str(who.id), "--item", "甲:1").status == 0
    for mode in modes:
        proxy.mode = mode
        failed = agent(home, "sync", "--attempts", "1", "--timeout", "2")
        assert failed.status == 4, (mode, failed.stdout, failed.stderr)
        assert failed.json["error"]["code"] == "unreachable"
        if mode == "busy":
            assert failed.json["error"]["retryAfterS"] == 2.0
        assert queue(home) == 1  # nothing answered is dropped
    assert agent(home, "status").json["lastError"]["code"] == "unreachable"
    # The server applied that batch in several of those modes; only its answers never came.
    assert await server_view(state, enrolled_.json["terminalId"]) == (1, 1)
    proxy.mode = "pass"
    synced = agent(home, "sync")
    assert synced.status == 0 and queue(home) == 0 and synced.json["pushed"] == 1
    assert await server_view(state, enrolled_.json["terminalId"]) == (1, 1)
    assert {row[0] for row in local(home, "SELECT status FROM settlements")} == {"applied"}
    assert agent(home, "status").json["lastError"] is None


async def test_an_operator_sees_each_retry_and_then_why_it_gave_up(
    state: AppState, proxy: FaultyProxy, home: Path
) -> None:
    village = await make_village(state, 1)
    code = await enrolment_code(state, village.clinics[0])
    assert agent(home, "enrol", "--server", proxy.url, "--code", code, "--no-sync").status == 0
    proxy.mode = "error"
    text = _text(home, "sync", "--attempts", "3")
    assert text.count("秒后重试") == 2 and "错误：服务器暂时出错（HTTP 500）" in text, text
    assert "Traceback" not in text


async def test_a_revoked_terminal_stops_pushing_says_why_and_keeps_its_outbox(
    state: AppState, sync_server: Server, home: Path
) -> None:
    village = await make_village(state, 1)
    (who,) = village.people
    identity = await enrolled(state, sync_server, home, village.clinics[0])
    assert agent(home, "settle", "--person", str(who.id), "--item", "甲:10").status == 0
    await revoke(state, int(identity["terminalId"]))
    refused = agent(home, "sync")
    assert refused.status == 5 and refused.json["error"]["code"] == "terminal_revoked"
    assert "终端已被停用" in refused.json["error"]["message"]
    status = agent(home, "status").json
    assert status["revoked"] is not None and status["queue"]["length"] == 1
    again = agent(home, "settle", "--person", str(who.id), "--item", "甲:11")
    assert again.status == 5 and again.json["error"]["code"] == "terminal_revoked"
    assert await server_view(state, identity["terminalId"]) == (0, 0)


# ------------------------------------------------------------------------------------ local storage


def remount(path: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(path)], check=True)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


@contextlib.contextmanager
def small_disk(path: Path, size: str = "4m") -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip("needs a tmpfs mount (root) to fill a disk or make it read-only")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


async def test_a_full_disk_is_a_clear_message_with_nothing_half_written(
    state: AppState, sync_server: Server, tmp_path: Path
) -> None:
    village = await make_village(state, 2)
    with small_disk(tmp_path / "disk") as disk:
        home = disk / "clinic"
        await enrolled(state, sync_server, home, village.clinics[0])
        assert agent(home, "settle", "--person", str(village.people[0].id), "--item", "甲:10").status == 0
        db = sqlite3.connect(home / "terminal.db")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the next write must grow the log
        db.close()
        filler = disk / "filler"
        with contextlib.suppress(OSError), filler.open("wb") as handle:
            while True:
                handle.write(b"\0" * 65536)
        full = agent(
            home, "settle", "--person", str(village.people[1].id), "--item", "甲:20" + ":0:" + "药" * 100
        )
        # SQLite says "disk I/O error" when it is the log or its index that cannot grow: still a full disk.
        assert full.status == 3 and full.json["error"]["reason"] == "disk_full", full.stdout
        assert "磁盘空间已满" in full.json["error"]["message"]
        assert "没有保存任何内容" in full.json["error"]["message"]
        status = agent(home, "status")  # what is queued can still be read off a full disk
        assert status.status == 0, status.stdout
        assert status.json["queue"]["length"] == 1 and status.json["unwritable"] == "disk_full"
        assert "磁盘空间已满" in _text(home, "status")
        filler.unlink()
        assert mutations(home) == 1 and queue(home) == 1
        assert agent(home, "settle", "--person", str(village.people[1].id), "--item", "甲:20").status == 0
        assert [r[0] for r in local(home, "SELECT seq FROM mutations ORDER BY seq")] == [1, 2]


async def test_a_read_only_home_is_a_clear_message(
    state: AppState, sync_server: Server, tmp_path: Path
) -> None:
    village = await make_village(state, 1)
    with small_disk(tmp_path / "disk") as disk:
        home = disk / "clinic"
        await enrolled(state, sync_server, home, village.clinics[0])
        assert agent(home, "settle", "--person", str(village.people[0].id), "--item", "甲:10").status == 0
        remount(disk, "ro")
        refused = agent(home, "settle", "--person", str(village.people[0].id), "--item", "甲:11")
        assert refused.status == 3 and refused.json["error"]["reason"] == "read_only", refused.stdout
        assert "只读" in refused.json["error"]["message"]
        status = agent(home, "status")  # still readable: what is queued, and that the home is read-only
        assert status.status == 0 and status.json["queue"]["length"] == 1 and status.json["readOnly"] is True
        remount(disk, "rw")
        assert mutations(home) == 1


async def test_a_corrupted_database_is_detected_and_its_outbox_rescued_never_dropped(
    state: AppState, sync_server: Server, home: Path
) -> None:
    village = await make_village(state, 3)
    await enrolled(state, sync_server, home, village.clinics[0])
    backlog(home, village.people, 3)
    db = sqlite3.connect(home / "terminal.db")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    (root,) = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'roster'").fetchone()
    (page_size,) = db.execute("PRAGMA page_size").fetchone()
    db.close()
    with (home / "terminal.db").open("r+b") as handle:
        handle.seek((root - 1) * page_size)
        handle.write(b"\xde\xad\xbe\xef" * (page_size // 4))
    damaged = (home / "terminal.db").read_bytes()

    for command in (
        ["status"],
        ["settle", "--person", str(village.people[0].id), "--item", "甲:1"],
        ["sync"],
    ):
        run = agent(home, *command)
        assert run.status == 3 and run.json["error"]["reason"] == "corrupt", (command, run.stdout, run.stderr)
        assert "本地数据库已损坏" in run.json["error"]["message"]
    rescue = Path(run.json["error"]["rescue"])
    saved = read_json(rescue)["mutations"]
    assert [m["seq"] for m in saved] == [1, 2, 3] and all(not m["answered"] for m in saved)
    assert saved[0]["payload"]["personRef"] == village.people[0].ref
    assert (home / "terminal.db").read_bytes() == damaged  # never replaced by a fresh, empty store


# ------------------------------------------------------------------------------ crash, watch, progress


def backlog(home: Path, people: list[Any], count: int) -> None:
    """`count` card settlements recorded through the agent's own code (quicker than `count` processes)."""
    store = Store.open(home)
    try:
        for n in range(count):
            who = people[n % len(people)]
            settle(
                store, Patient(person=str(who.id)), BillInput("general_outpatient", (BillItem(1_000 + n),))
            )
    finally:
        store.close()


async def test_sync_killed_at_random_moments_resumes_and_applies_everything_exactly_once(
    state: AppState, sync_server: Server, home: Path
) -> None:
    village = await make_village(state, 4)
    identity = await enrolled(state, sync_server, home, village.clinics[0])
    backlog(home, village.people, 300)
    for delay in (0.8, 1.4, 2.0, 2.6):
        process = spawn(home, "sync", "--no-progress")
        await asyncio.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait()
    left = queue(home)
    done = agent(home, "sync", "--progress")  # what is left of the backlog, with a progress bar
    assert done.status == 0 and queue(home) == 0
    assert done.json["pushed"] == left and "上传结算" in done.stderr
    # The bar counts what the killed runs left: all of it, or (when they happened to push everything
    # before the kill) nothing, which tqdm shows as a bare count without a total.
    assert (f"{left}/{left}" if left else "上传结算: 0条") in done.stderr
    assert await server_view(state, identity["terminalId"]) == (300, 300)
    seqs = [r[0] for r in local(home, "SELECT seq FROM mutations ORDER BY seq")]
    assert seqs == list(range(1, 301))


def test_no_progress_bar_for_a_small_backlog_or_off_a_screen(tmp_path: Path) -> None:
    from terminal.syncer import PROGRESS_ABOVE, Syncer

    store = Store.open(tmp_path, create=True)
    try:
        syncer = Syncer(store, None, progress=None)  # type: ignore[arg-type]
        assert syncer._bar(PROGRESS_ABOVE * 5, "x") is None  # pytest's stderr is no terminal
        forced = Syncer(store, None, progress=True)._bar(5, "x")  # type: ignore[arg-type]
        assert forced is not None
        forced.close()
    finally:
        store.close()


async def test_watch_syncs_when_the_network_is_back_and_stops_cleanly_on_sigterm(
    state: AppState, proxy: FaultyProxy, home: Path
) -> None:
    village = await make_village(state, 1)
    (who,) = village.people
    code = await enrolment_code(state, village.clinics[0])
    assert agent(home, "enrol", "--server", proxy.url, "--code", code).status == 0
    proxy.mode = "refuse"  # the network is down
    watcher = spawn(home, "watch", "--interval", "1", "--max-wait", "2", "--timeout", "3")
    try:
        assert agent(home, "settle", "--person", str(who.id), "--item", "甲:10").status == 0
        deadline = time.monotonic() + 60
        while agent(home, "status").json["lastError"] is None:
            assert time.monotonic() < deadline, "watch never tried"
            await asyncio.sleep(0.5)
        assert queue(home) == 1
        proxy.mode = "pass"  # the network is back
        while queue(home):
            assert time.monotonic() < deadline + 60, "watch did not sync when the network came back"
            await asyncio.sleep(0.5)
        # Stopped while a request hangs on a silent server: it stops at once, the visit stays queued.
        proxy.mode = "silent"
        assert agent(home, "settle", "--person", str(who.id), "--item", "甲:11").status == 0
        while proxy.seen["silent"] == 0:
            assert time.monotonic() < deadline + 120, "watch did not notice the new settlement"
            await asyncio.sleep(0.2)
    finally:
        watcher.send_signal(signal.SIGTERM)
        out, err = watcher.communicate(timeout=30)
    assert watcher.returncode == 0, err
    events = [json.loads(line)["event"] for line in out.splitlines() if line.strip()]
    assert "offline" in events and "synced" in events and events[-1] == "stopped"
    assert queue(home) == 1
