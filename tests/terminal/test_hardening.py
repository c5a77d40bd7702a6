"""Regression tests for the second review of the clinic agent (issue 10): plain http to another host,
a stale scan taken for the patient at the counter, and a push the server always refuses blocking the
pull (and so the revocations)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from terminal.keys import load_or_create_key
from terminal.settle import DEFAULT_SCAN_WINDOW
from terminal.store import Store

from api.state import AppState
from tests.terminal.test_agent import enrolled, local
from tests.terminal.world import (
    ROOT,
    TERMINAL,
    Server,
    agent,
    agent_env,
    free_port,
    make_village,
    online_code,
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
