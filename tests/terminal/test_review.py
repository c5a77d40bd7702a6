"""Regression tests for what a fresh-eyes review of the clinic agent found (issue 10): input an operator
types that crashed the agent, files it made readable by others, a lost database taken for a new
terminal, bills it accepted that the server then could not take or would refuse."""

from __future__ import annotations

import json
import random
import re
import stat
import subprocess
from pathlib import Path

from terminal.keys import load_or_create_key
from terminal.settle import MAX_PAYLOAD_BYTES, parse_item
from terminal.store import Store

from api.state import AppState
from tests.terminal.proxy import FaultyProxy
from tests.terminal.test_agent import enrolled, local, shanghai_today
from tests.terminal.world import (
    ROOT,
    TERMINAL,
    Server,
    agent,
    agent_env,
    enrolment_code,
    free_port,
    make_village,
)


def test_bill_arguments_that_are_not_plain_numbers_are_a_clear_message(tmp_path: Path) -> None:
    # Each of these raised a traceback (int() of "abc", of "²", of 5,000 digits) or was read as a
    # number (Arabic-Indic digits); the bill is read before the home is opened, so no server is needed.
    for item in ("乙:5:abc", "甲:²", "甲:5.٣", "甲:" + "9" * 5000, "乙:1:" + "1" * 5000):
        run = agent(tmp_path / "clinic", "settle", "--person", "1", "--item", item)
        assert run.status == 1 and "Traceback" not in run.stderr, (item, run.stdout, run.stderr)
        assert run.json["error"]["reason"] == "bad_bill" and run.json["error"]["field"] == "item"


def test_what_a_chinese_input_method_types_is_read_as_the_operator_meant() -> None:
    assert parse_item("甲：１２．５０").amount_fen == 1250
    item = parse_item("乙：30：100：阿莫西林")
    assert (item.item_class, item.amount_fen, item.self_pay_permille, item.name) == (
        "class_b",
        3000,
        100,
        "阿莫西林",
    )


def test_what_is_wrong_with_a_bill_is_said_in_chinese(tmp_path: Path) -> None:
    # The engine's checks are English ("visit.items[0].self_pay_permille: must be an integer per
    # mille ..."), which the operator got verbatim; now they keep it in `detail` only.
    home = tmp_path / "clinic"
    cases = {
        ("--item", "甲:0"): "费用合计为零",
        ("--item", "乙:5:5000"): "第 1 项费用的乙类先行自付比例",
        ("--item", "甲:1", "--item", "丁:5"): "第 2 项费用的类别",
        ("--item", "甲:5:10"): "不能有先行自付比例",
        ("--item", "甲:20000000"): "不能超过",
    }
    for args, said in cases.items():
        run = agent(home, "settle", "--person", "1", *args)
        error = run.json["error"]
        assert run.status == 1 and error["reason"] == "bad_bill" and said in error["message"], (args, error)
        assert not re.search(r"[A-Za-z]{3,}", error["message"].replace("visit", "")), error["message"]
        assert error["detail"]  # the engine's own words, for whoever maintains it
    stdin = json.dumps({"items": [{"item_class": "class_a", "amount_fen": -5}]})
    negative = agent(home, "settle", "--person", "1", "--bill", "-", stdin=stdin)
    assert "第 1 项费用的金额：不能为负数" in negative.json["error"]["message"], negative.stdout


def test_a_bill_file_nested_too_deep_is_a_clear_message(tmp_path: Path) -> None:
    deep = tmp_path / "bill.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    run = agent(tmp_path / "clinic", "settle", "--person", "1", "--bill", str(deep))
    assert run.status == 1 and "Traceback" not in run.stderr, run.stderr
    assert run.json["error"]["reason"] == "bad_bill" and "嵌套" in run.json["error"]["message"]


def test_a_damaged_key_file_is_a_clear_message(tmp_path: Path) -> None:
    home = tmp_path / "clinic"
    store = Store.open(home, create=True)
    store.set(identity={"server": "http://127.0.0.1:9", "terminalId": "1", "clinicId": "1", "audience": "x"})
    store.close()
    for damaged in (b"", b"-----BEGIN PRIVATE KEY-----\ngarbage\n", b"\x00" * 64):
        (home / "terminal.key").write_bytes(damaged)
        (home / "terminal.key").chmod(0o600)
        run = agent(home, "sync", "--attempts", "1")
        assert run.status == 3 and "Traceback" not in run.stderr, (damaged, run.stderr)
        assert run.json["error"]["reason"] == "bad_key" and "私钥" in run.json["error"]["message"]


def test_what_the_agent_writes_in_a_world_readable_home_is_readable_by_its_user_only(
    tmp_path: Path,
) -> None:
    home = tmp_path / "clinic"
    home.mkdir(mode=0o755)  # as an installer or systemd's StateDirectory= may make it
    home.chmod(0o755)
    # Nobody listens on that port: the store and the key are made, then the enrolment fails.
    server = f"http://127.0.0.1:{free_port()}"
    run = agent(home, "enrol", "--server", server, "--code", "X", "--attempts", "1", "--timeout", "2")
    assert run.status == 4, run.stdout + run.stderr
    made = sorted(p.name for p in home.iterdir())
    assert "terminal.db" in made and "terminal.key" in made
    for path in home.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, (path.name, oct(path.stat().st_mode))


def test_a_lost_database_beside_the_key_is_refused_not_taken_for_a_new_terminal(tmp_path: Path) -> None:
    home = tmp_path / "clinic"
    Store.open(home, create=True).close()
    load_or_create_key(home)
    for lose in ("empty", "deleted"):
        db = home / "terminal.db"
        if lose == "empty":
            db.write_bytes(b"")
        else:
            db.unlink()
        for command in (["status"], ["settle", "--person", "1", "--item", "甲:1"]):
            run = agent(home, *command)
            assert run.status == 3 and run.json["error"]["reason"] == "corrupt", (lose, command, run.stdout)
            assert "数据库不见了或是空的" in run.json["error"]["message"]
        enrol = agent(home, "enrol", "--server", "http://127.0.0.1:9", "--code", "X", "--attempts", "1")
        assert enrol.status == 3 and enrol.json["error"]["reason"] == "corrupt"
        assert not db.exists() or db.stat().st_size == 0  # no fresh, empty store made over the loss


def test_output_to_a_reader_that_went_away_is_not_a_traceback(tmp_path: Path) -> None:
    # `yibao-terminal status | head -1` and the like: the pipe is closed before the agent prints.
    process = subprocess.Popen(
        [*TERMINAL, "--home", str(tmp_path / "clinic"), "status"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=agent_env(),
        cwd=ROOT,
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()
    err = process.stderr.read().decode()
    assert process.wait(timeout=60) == 0 and "Traceback" not in err and "BrokenPipe" not in err, err


def _names(rng: random.Random, items: int) -> list[dict[str, object]]:
    """Bill items with long, incompressible Chinese names (as a hospital's drug list may have)."""
    return [
        {
            "item_class": "class_a",
            "amount_fen": 100 + n,
            "name": "".join(chr(rng.randint(0x4E00, 0x9FA5)) for _ in range(100)),
        }
        for n in range(items)
    ]


async def test_a_bill_too_large_to_push_is_refused_at_the_counter_and_every_bill_settled_is_pushed(
    state: AppState, sync_server: Server, home: Path, tmp_path: Path
) -> None:
    # Before: a 10,000-item bill was settled, then refused by the server (413) at every push, and it
    # held back every settlement queued after it, for good.
    village = await make_village(state, 2)
    await enrolled(state, sync_server, home, village.clinics[0])
    rng = random.Random(10)
    huge = tmp_path / "huge.json"
    huge.write_text(json.dumps({"items": _names(rng, 3000)}, ensure_ascii=False))
    refused = agent(home, "settle", "--person", str(village.people[0].id), "--bill", str(huge))
    assert refused.status == 1 and refused.json["error"]["reason"] == "bill_too_large", refused.stdout
    assert "账单过大" in refused.json["error"]["message"]
    assert local(home, "SELECT count(*) FROM mutations") == [(0,)]
    # The largest kind of bill it does take (just under its bound) is one the server takes.
    large = tmp_path / "large.json"
    large.write_text(json.dumps({"items": _names(rng, 1200)}, ensure_ascii=False))
    assert agent(home, "settle", "--person", str(village.people[0].id), "--bill", str(large)).status == 0
    ((stored,),) = local(home, "SELECT length(CAST(payload AS BLOB)) FROM mutations")
    assert 0.8 * MAX_PAYLOAD_BYTES < stored <= MAX_PAYLOAD_BYTES
    assert agent(home, "settle", "--person", str(village.people[1].id), "--item", "甲:3").status == 0
    synced = agent(home, "sync")
    assert synced.status == 0 and synced.json["pushed"] == 2 and synced.json["queueLeft"] == 0, synced.stdout


async def test_an_identical_second_bill_the_same_day_is_refused_before_the_patient_pays(
    state: AppState, sync_server: Server, home: Path
) -> None:
    # Before: the second receipt was printed (the patient paid the cash share on it) and the server
    # then rejected it as a duplicate visit.
    village = await make_village(state, 1)
    (who,) = village.people
    await enrolled(state, sync_server, home, village.clinics[0])
    bill = ["--item", "甲:30", "--item", "乙:20:100"]
    assert agent(home, "settle", "--person", str(who.id), *bill).status == 0
    again = agent(home, "settle", "--person", str(who.id), "--item", "乙:20:100", "--item", "甲:30")
    assert again.status == 1 and again.json["error"]["reason"] == "duplicate_visit", again.stdout
    assert again.json["error"]["seq"] == 1 and "重复结算" in again.json["error"]["message"]
    assert local(home, "SELECT count(*) FROM mutations") == [(1,)]
    # A different bill the same day is another visit, settled against the first.
    assert agent(home, "settle", "--person", str(who.id), "--item", "甲:31").status == 0
    synced = agent(home, "sync")
    assert synced.status == 0 and synced.json["rejected"] == 0 and synced.json["pushed"] == 2


def test_bad_arguments_are_told_in_chinese_and_as_json_under_json(tmp_path: Path) -> None:
    home = tmp_path / "clinic"
    # argparse's own complaints were English text on stderr only, and a scan number past SQLite's
    # integers an OverflowError traceback.
    for args in (
        ["settle", "--scan", "abc", "--item", "甲:1"],
        ["settle", "--scan", "9" * 30, "--item", "甲:1"],
        ["settle", "--category", "x", "--item", "甲:1"],
        ["frob"],
    ):
        run = agent(home, *args)
        assert run.status == 2 and "Traceback" not in run.stderr, (args, run.stdout, run.stderr)
        assert (
            run.json["error"]["reason"] == "bad_arguments" and "命令参数有误" in run.json["error"]["message"]
        )
    text = subprocess.run(
        [*TERMINAL, "--home", str(home), "settle", "--scan", "abc"],
        capture_output=True,
        text=True,
        env=agent_env(),
        cwd=ROOT,
    )
    assert text.returncode == 2 and "错误：命令参数有误" in text.stderr and "usage:" in text.stderr


async def test_a_page_from_something_else_with_a_wrong_date_does_not_set_the_clock(
    state: AppState, sync_server: Server, home: Path
) -> None:
    # A captive portal (or a proxy) answering in the server's place with a Date in 2099 used to move
    # the terminal's clock there: visits dated 2099, and then, the last server time seen kept as the
    # greatest, settling refused as "clock behind" even after a good sync, until 2099.
    village = await make_village(state, 1)
    (who,) = village.people
    proxy = FaultyProxy(sync_server.port)
    try:
        code = await enrolment_code(state, village.clinics[0])
        assert agent(home, "enrol", "--server", proxy.url, "--code", code).status == 0
        proxy.mode = "portal"
        portal = agent(home, "sync", "--attempts", "1")
        assert portal.status == 4 and portal.json["error"]["reason"] == "bad_response", portal.stdout
        during = agent(home, "settle", "--person", str(who.id), "--item", "甲:10")
        assert during.status == 0 and during.json["visitDate"] == shanghai_today().isoformat(), during.stdout
        proxy.mode = "pass"
        assert agent(home, "sync").status == 0
        after = agent(home, "settle", "--person", str(who.id), "--item", "甲:11")
        assert after.status == 0 and after.json["visitDate"] == shanghai_today().isoformat(), after.stdout
        assert agent(home, "status").json["clock"]["behind"] is False
    finally:
        proxy.close()
