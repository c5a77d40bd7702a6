"""Regression tests for the second review of the clinic agent (issue 10): plain http to another host,
a stale scan taken for the patient at the counter, and a push the server always refuses blocking the
pull (and so the revocations)."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

from terminal.keys import load_or_create_key
from terminal.settle import DEFAULT_SCAN_WINDOW
from terminal.store import Store

from api.state import AppState
from api.vouchers import revocations
from sync.vouchers import new_ref
from tests.terminal.test_agent import _text, enrolled, local
from tests.terminal.world import (
    ROOT,
    TERMINAL,
    Server,
    Villager,
    agent,
    agent_env,
    free_port,
    make_village,
    online_code,
    spawn,
)

# TEST-NET-1 (RFC 5737): never routed, so nothing there answers and nothing leaves this machine.
REMOTE = "http://192.0.2.1:9"


def test_enrol_over_plain_http_to_another_host_is_refused_unless_the_operator_insists(
    tmp_path: Path,
) -> None:
    home = tmp_path / "clinic"
    for server in (REMOTE, "http://ybj.example.cn", "http://10.0.0.5:8000/"):
        run = agent(home, "enrol", "--server", server, "--code", "X", "--attempts", "1", "--timeout", "1")
        assert run.status == 2 and run.json["error"]["reason"] == "insecure_http", (server, run.stdout)
        message = run.json["error"]["message"]
        assert "明文 http" in message and "签发密钥" in message and "--insecure-http" in message
        assert not (home / "terminal.db").exists() and not (home / "terminal.key").exists()
    # Explicitly accepted: it goes on to the network (where nobody answers).
    insisted = agent(
        home,
        "enrol",
        "--server",
        REMOTE,
        "--code",
        "X",
        "--attempts",
        "1",
        "--timeout",
        "1",
        "--insecure-http",
    )
    assert insisted.status == 4 and insisted.json["error"]["code"] == "unreachable", insisted.stdout


def test_plain_http_to_this_machine_is_still_accepted(tmp_path: Path) -> None:
    port = free_port()  # nobody listens: accepted means it reached the network step
    for n, server in enumerate(
        (f"http://localhost:{port}", f"http://127.0.0.2:{port}", f"http://[::1]:{port}")
    ):
        run = agent(tmp_path / f"c{n}", "enrol", "--server", server, "--code", "X", "--attempts", "1")
        assert run.status == 4 and run.json["error"]["code"] == "unreachable", (server, run.stdout)


def test_a_stored_plain_http_server_of_another_host_is_warned_about(tmp_path: Path) -> None:
    # As a home enrolled before plain http was refused would hold it.
    home = tmp_path / "clinic"
    store = Store.open(home, create=True)
    store.set(identity={"server": REMOTE, "terminalId": "1", "clinicId": "1", "audience": "x"})
    store.close()
    load_or_create_key(home)
    status = agent(home, "status")
    assert status.status == 0 and "明文 http" in (status.json["insecureServer"] or ""), status.stdout
    text = subprocess.run(
        [*TERMINAL, "--home", str(home), "status"], capture_output=True, text=True, env=agent_env(), cwd=ROOT
    )
    assert text.returncode == 0 and "明文 http" in text.stdout, text.stdout
    sync = subprocess.run(
        [*TERMINAL, "--home", str(home), "sync", "--attempts", "1", "--timeout", "1"],
        capture_output=True,
        text=True,
        env=agent_env(),
        cwd=ROOT,
    )
    assert sync.returncode == 4 and "警告" in sync.stderr and "明文 http" in sync.stderr, sync.stderr
    # https and loopback are not warned about.
    store = Store.open(home)
    store.set(
        identity={"server": "https://ybj.example.cn", "terminalId": "1", "clinicId": "1", "audience": "x"}
    )
    store.close()
    assert agent(home, "status").json["insecureServer"] is None


async def test_settle_without_a_patient_does_not_take_an_old_unsettled_scan(
    state: AppState, sync_server: Server, home: Path
) -> None:
    # Before: the latest unsettled scan was used however old, so a patient scanned in the morning who
    # left unsettled was billed for whoever came to the counter in the afternoon.
    village = await make_village(state, 2)
    alice, bob = village.people
    await enrolled(state, sync_server, home, village.clinics[0])
    scanned = agent(home, "scan", online_code(state, alice))
    assert scanned.status == 0, scanned.stdout
    later = DEFAULT_SCAN_WINDOW.total_seconds() + 60  # the settle runs on a clock this much later
    stale = agent(home, "settle", "--item", "甲:10", skew_s=later)
    assert stale.status == 1 and stale.json["error"]["reason"] == "scan_stale", stale.stdout
    assert stale.json["error"]["scan"] == scanned.json["scan"]
    assert "重新扫码" in stale.json["error"]["message"] and "--person" in stale.json["error"]["message"]
    assert local(home, "SELECT count(*) FROM mutations") == [(0,)]
    # Naming the scan still settles it; a fresh scan is taken by default as before.
    named = agent(home, "settle", "--scan", str(scanned.json["scan"]), "--item", "甲:10", skew_s=later)
    assert named.status == 0 and named.json["seq"] == 1, named.stdout
    fresh = agent(home, "scan", online_code(state, bob))
    assert fresh.status == 0, fresh.stdout
    default = agent(home, "settle", "--item", "甲:12")
    assert default.status == 0 and default.json["seq"] == 2, default.stdout
    assert local(home, "SELECT count(*) FROM scans WHERE mutation_id IS NULL") == [(0,)]


def _copy_db(source: Path, target: Path) -> None:
    """SQLite's online backup: what an operator's backup tool would save (WAL included)."""
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    src.close()
    dst.close()


async def _restored_backup(state: AppState, sync_server: Server, home: Path, tmp_path: Path) -> Villager:
    """A home restored from a backup taken before its seq 1 was pushed, with another settlement queued
    as seq 1: the server refuses it (409 seq_conflict) at every push. Returns a villager."""
    village = await make_village(state, 2)
    alice, bob = village.people
    await enrolled(state, sync_server, home, village.clinics[0])
    backup = tmp_path / "backup.db"
    _copy_db(home / "terminal.db", backup)
    assert agent(home, "settle", "--person", str(alice.id), "--item", "甲:10").status == 0
    assert agent(home, "sync").json["applied"] == 1
    for leftover in ("terminal.db-wal", "terminal.db-shm"):
        (home / leftover).unlink(missing_ok=True)
    _copy_db(backup, home / "terminal.db")  # the restore: seq 1 is free again here, not on the server
    assert agent(home, "settle", "--person", str(bob.id), "--item", "甲:20").json["seq"] == 1

    return alice


async def test_a_push_the_server_always_refuses_does_not_stop_the_pull_and_status_says_what_to_do(
    state: AppState, sync_server: Server, home: Path, tmp_path: Path
) -> None:
    # Before: a 409 seq conflict (a local backup restored after its seqs were pushed) stopped every
    # sync before the pull, so a revoked family link kept verifying at this clinic for good.
    alice = await _restored_backup(state, sync_server, home, tmp_path)

    link = new_ref()
    async with state.db.session() as session:
        await revocations.append(session, [("link", link.hex(), "unlinked")])
        await session.commit()
    stuck = agent(home, "sync", "--attempts", "1")
    assert stuck.status == 5 and stuck.json["ok"] is False, stuck.stdout
    report = stuck.json
    assert report["pullComplete"] is True and report["queueLeft"] == 1, report
    assert report["pushStuck"]["seq"] == 1 and report["pushStuck"]["error"]["reason"] == "seq_conflict"
    # The revocation arrived in spite of the stuck push.
    refused = agent(home, "scan", online_code(state, alice, link=link))
    assert refused.status == 1 and refused.json["reason"] == "revoked", refused.stdout

    shown = agent(home, "status").json
    assert shown["pushStuck"]["error"]["reason"] == "seq_conflict" and shown["queue"]["length"] == 1
    assert "运维人员" in shown["pushStuck"]["advice"] and shown["lastError"]["reason"] == "seq_conflict"
    text = _text(home, "status")
    assert "上传受阻：第 1 笔结算被服务器拒收" in text and "请不要删除或还原" in text, text
    # Nothing was dropped: the refused settlement is still queued, to be sorted out by a person.
    assert local(home, "SELECT count(*) FROM mutations WHERE answer IS NULL") == [(1,)]


async def test_watch_keeps_pulling_while_the_push_is_stuck(
    state: AppState, sync_server: Server, home: Path, tmp_path: Path
) -> None:
    # Before: watch stopped at the first refused push (exit 5), and with it every pull.
    await _restored_backup(state, sync_server, home, tmp_path)
    watcher = spawn(home, "watch", "--interval", "1", "--timeout", "5")
    try:
        deadline = time.monotonic() + 60
        pulls: set[str] = set()
        while len(pulls) < 2:  # it pulled on two rounds, and goes on
            assert watcher.poll() is None, "watch stopped"
            assert time.monotonic() < deadline, "watch did not pull while the push was stuck"
            shown = agent(home, "status").json
            if shown["pushStuck"] is not None:
                pulls.add(shown["lastPullAt"])
            await asyncio.sleep(0.5)
    finally:
        watcher.send_signal(signal.SIGTERM)
        out, err = watcher.communicate(timeout=30)
    assert watcher.returncode == 0, err
    events = [json.loads(line)["event"] for line in out.splitlines() if line.strip()]
    assert "push_stuck" in events and events[-1] == "stopped", events
