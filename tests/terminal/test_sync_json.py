"""`sync --json` says what the human output says: the plain-http warning and every retry with its
cause, also when the sync fails (the agent in its own process, against a port nobody listens on)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from terminal.keys import load_or_create_key
from terminal.store import Store

from tests.terminal.world import ROOT, TERMINAL, agent, agent_env, free_port

# TEST-NET-1 (RFC 5737): never routed, so nothing there answers and nothing leaves this machine.
REMOTE = "http://192.0.2.1:9"


def enrolled_home(home: Path, server: str) -> Path:
    """A home enrolled with `server` (as enrol stores it), without a server to enrol with."""
    store = Store.open(home, create=True)
    store.set(identity={"server": server, "terminalId": "1", "clinicId": "1", "audience": "x"})
    store.close()
    load_or_create_key(home)
    return home


def test_a_failed_sync_under_json_carries_each_retry_and_its_cause(tmp_path: Path) -> None:
    # Before: the human output told each retry and its cause on stderr, `--json` only the last error.
    home = enrolled_home(tmp_path / "clinic", f"http://127.0.0.1:{free_port()}")
    run = agent(home, "sync", "--attempts", "3", "--timeout", "2")
    assert run.status == 4, run.stdout + run.stderr
    answer = run.json
    assert answer["ok"] is False and answer["error"]["code"] == "unreachable"
    assert answer["error"]["reason"] == "network"
    retries = answer["warnings"]
    assert [w["reason"] for w in retries] == ["retry", "retry"], answer
    for warning in retries:
        assert warning["error"]["reason"] == "network" and warning["retryInS"] >= 0
        assert warning["message"].startswith(warning["error"]["message"]) and "秒后重试" in warning["message"]
    assert run.stderr == ""  # nothing for the operator's eyes mixed into the machine's output
    # The human output of the same failure says the same: each retry, then the error.
    text = subprocess.run(
        [*TERMINAL, "--home", str(home), "sync", "--attempts", "3", "--timeout", "2"],
        capture_output=True,
        text=True,
        env=agent_env(),
        cwd=ROOT,
    )
    lines = text.stderr.splitlines()
    assert text.returncode == 4 and len(lines) == 3, text.stderr
    assert all(retries[0]["error"]["message"] in line and "秒后重试" in line for line in lines[:2])
    assert lines[2] == f"错误：{answer['error']['message']}"


def test_a_failed_sync_to_a_plain_http_server_under_json_carries_the_warning(tmp_path: Path) -> None:
    # Before: {"ok": false, "error": ...} without the plain-http warning the human output starts with.
    home = enrolled_home(tmp_path / "clinic", REMOTE)
    run = agent(home, "sync", "--attempts", "1", "--timeout", "1")
    assert run.status == 4 and run.json["error"]["code"] == "unreachable", run.stdout + run.stderr
    [warning] = run.json["warnings"]
    assert warning["reason"] == "insecure_http" and "明文 http" in warning["message"]


def test_a_sync_that_never_started_has_no_warnings(tmp_path: Path) -> None:
    run = agent(tmp_path / "nowhere", "sync", "--attempts", "1")
    assert run.status == 2 and run.json["error"]["reason"] == "not_enrolled", run.stdout
    assert "warnings" not in run.json
