"""The local store on its own (no server): transactions, outbox checks, damage found anywhere."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from terminal.errors import CorruptStore
from terminal.store import Store

from sync.protocol import Mutation, MutationKind, uuid7


def queue_one(store: Store, n: int) -> None:
    now = datetime.now(UTC)
    with store.write() as db:
        seq = Store.next_seq(db)
        Store.insert_mutation(db, Mutation(uuid7(now), seq, MutationKind.SETTLEMENT_VOID, now, {"n": n}), now)


def test_a_failed_write_leaves_nothing_behind(tmp_path: Path) -> None:
    store = Store.open(tmp_path, create=True)
    queue_one(store, 1)
    with pytest.raises(RuntimeError), store.write() as db:
        Store.insert_mutation(
            db,
            Mutation(uuid7(), Store.next_seq(db), MutationKind.SETTLEMENT_VOID, datetime.now(UTC), {}),
            datetime.now(UTC),
        )
        raise RuntimeError("power cut, as far as this transaction knows")
    assert store.queue_stats()[0] == 1 and Store.next_seq(store.db) == 2
    store.close()


def test_an_outbox_with_a_hole_is_refused_and_rescued(tmp_path: Path) -> None:
    store = Store.open(tmp_path, create=True)
    for n in range(3):
        queue_one(store, n)
    store.close()
    db = sqlite3.connect(tmp_path / "terminal.db")
    with db:
        db.execute("DELETE FROM mutations WHERE seq = 2")
    db.close()
    with pytest.raises(CorruptStore) as refused:
        Store.open(tmp_path)
    assert "2 mutations for seqs 1..3" in refused.value.details["detail"]
    rescued = json.loads(Path(refused.value.details["rescue"]).read_text())["mutations"]
    assert [m["seq"] for m in rescued] == [1, 3]


def test_damage_met_by_a_read_outside_a_transaction_is_explained_the_same_way(tmp_path: Path) -> None:
    store = Store.open(tmp_path, create=True)
    queue_one(store, 1)
    with store.write() as db:
        for n in range(400):
            db.execute(
                "INSERT INTO roster (person_id, voucher_ref, data, generation) VALUES (?, ?, ?, 1)",
                (str(n), f"{n:016x}", json.dumps({"name": "x" * 200})),
            )
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    (root,) = store.db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'roster'").fetchone()
    (size,) = store.db.execute("PRAGMA page_size").fetchone()
    store.close()
    with (tmp_path / "terminal.db").open("r+b") as handle:
        handle.seek((root - 1) * size)
        handle.write(b"\xff" * size)
    unchecked = Store.open(tmp_path, check=False)  # as if the damage came after the open's check
    with pytest.raises(sqlite3.DatabaseError) as met:
        unchecked.person_by_ref(f"{399:016x}")
    unchecked.close()
    explained = Store.explain(tmp_path, met.value)
    assert isinstance(explained, CorruptStore) and explained.details["rescued"] == 1
