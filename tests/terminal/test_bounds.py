"""The terminal refuses at the counter, in Chinese, what the server rejects as a bad payload for its
size: more than MAX_BILL_ITEMS items, an item's text past MAX_ITEM_TEXT_CHARS (sync/protocol.py's
constants, shared with the server); and a bill at those bounds is one the server takes."""

from __future__ import annotations

import json
from pathlib import Path

from api.state import AppState
from sync.protocol import MAX_BILL_ITEMS, MAX_ITEM_TEXT_CHARS
from tests.terminal.test_agent import enrolled, local
from tests.terminal.world import Server, agent, make_village


def bill(path: Path, count: int, **item: object) -> str:
    path.write_text(json.dumps({"items": [{"item_class": "class_a", "amount_fen": 1, **item}] * count}))
    return str(path)


async def test_a_bill_of_too_many_items_is_refused_at_the_counter_and_one_at_the_bound_is_pushed(
    state: AppState, sync_server: Server, home: Path, tmp_path: Path
) -> None:
    # Before: 2,001 small items (well under the 512 KiB bound) were settled and printed as 预结算,
    # and the server rejected the settlement at push.
    village = await make_village(state, 1)
    (who,) = village.people
    await enrolled(state, sync_server, home, village.clinics[0])
    over = bill(tmp_path / "over.json", MAX_BILL_ITEMS + 1)
    refused = agent(home, "settle", "--person", str(who.id), "--bill", over)
    assert refused.status == 1, refused.stdout + refused.stderr
    error = refused.json["error"]
    assert (error["reason"], error["field"]) == ("bill_too_large", "visit.items")
    assert (error["items"], error["maxItems"]) == (MAX_BILL_ITEMS + 1, MAX_BILL_ITEMS)
    assert f"最多 {MAX_BILL_ITEMS} 项" in error["message"] and "合并明细" in error["message"]
    assert local(home, "SELECT count(*) FROM mutations") == [(0,)]

    at_bound = bill(tmp_path / "at.json", MAX_BILL_ITEMS)
    settled = agent(home, "settle", "--person", str(who.id), "--bill", at_bound)
    assert settled.status == 0, settled.stdout + settled.stderr
    synced = agent(home, "sync")
    assert synced.status == 0 and synced.json["pushed"] == 1 and synced.json["rejected"] == 0, synced.stdout


async def test_an_item_text_past_its_bound_is_refused_at_the_counter(
    state: AppState, sync_server: Server, home: Path, tmp_path: Path
) -> None:
    village = await make_village(state, 1)
    (who,) = village.people
    await enrolled(state, sync_server, home, village.clinics[0])
    long_name = "药" * (MAX_ITEM_TEXT_CHARS + 1)
    typed = agent(home, "settle", "--person", str(who.id), "--item", f"甲:3:0:{long_name}")
    assert typed.status == 1 and typed.json["error"]["reason"] == "bad_bill", typed.stdout
    assert f"名称：应为不超过 {MAX_ITEM_TEXT_CHARS} 字的文字" in typed.json["error"]["message"]
    filed = agent(
        home, "settle", "--person", str(who.id), "--bill", bill(tmp_path / "c.json", 1, code="X" * 101)
    )
    assert filed.status == 1 and filed.json["error"]["field"] == "visit.items[0].code", filed.stdout
    assert "编码" in filed.json["error"]["message"]
    huge_class = bill(tmp_path / "k.json", 1, item_class="x" * 50_000)
    unknown = agent(home, "settle", "--person", str(who.id), "--bill", huge_class)
    assert unknown.status == 1 and "类别：无法识别" in unknown.json["error"]["message"], unknown.stdout
    assert len(unknown.stdout) < 2_000  # the 50,000 characters are not quoted back
    assert local(home, "SELECT count(*) FROM mutations") == [(0,)]


async def test_an_item_text_no_database_can_hold_is_refused_at_the_counter(
    state: AppState, sync_server: Server, home: Path, tmp_path: Path
) -> None:
    # Before: a NUL in a bill file's item name (or a byte that is not UTF-8 in a typed one, which
    # Python reads as an unpaired surrogate) was settled and printed as 预结算; the server then refused
    # every push carrying it (400, unstorable text) and the outbox could never drain.
    village = await make_village(state, 1)
    (who,) = village.people
    await enrolled(state, sync_server, home, village.clinics[0])
    nul = agent(
        home, "settle", "--person", str(who.id), "--bill", bill(tmp_path / "n.json", 1, name="A\x00B")
    )
    assert nul.status == 1, nul.stdout + nul.stderr
    error = nul.json["error"]
    assert (error["reason"], error["field"]) == ("bad_bill", "visit.items[0].name"), error
    assert "无法保存的字符" in error["message"]
    typed = agent(home, "settle", "--person", str(who.id), "--item", "甲:3:0:药\udcff")  # argv b"\xff"
    assert typed.status == 1, typed.stdout + typed.stderr
    assert typed.json["error"]["field"] == "visit.items[0].name", typed.stdout
    assert local(home, "SELECT count(*) FROM mutations") == [(0,)]
    synced = agent(home, "sync")
    assert synced.status == 0 and synced.json["pushed"] == 0, synced.stdout + synced.stderr
