"""Pull (issue 9 item 4): snapshot paging, deltas from the change log, resync answers, and the committed
watermark under concurrent writers that commit out of order (PostgreSQL)."""

from __future__ import annotations

import asyncio
import random
import secrets
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlmodel import col

from api.dbtypes import utcnow
from api.errors import BadUserInput
from api.people.models import Facility, InsuredPerson
from api.replication import changelog
from api.replication.changelog import Change
from api.replication.models import ChangeLogEntry, ReplicationState
from api.replication.pull import pull
from api.state import AppState
from api.terminals.models import Terminal

VILLAGE = "340421999001"


@pytest.fixture
async def village(state: AppState) -> AsyncIterator[tuple[Terminal, list[int]]]:
    """A clinic of its own village with eight residents and one enrolled terminal."""
    code = f"3404219{secrets.randbelow(10**5):05d}"
    async with state.db.sessionmaker() as session:
        clinic = Facility(
            code=f"T{secrets.token_hex(6)}", name="测试村卫生室", level="village", kind="clinic",
            region_code="340421", village_code=code,
        )  # fmt: skip
        session.add(clinic)
        await session.flush()
        ids = list(
            (
                await session.execute(
                    select(col(InsuredPerson.id)).where(col(InsuredPerson.village_code).is_(None)).limit(8)
                )
            ).scalars()
        )
        await session.execute(
            update(InsuredPerson).where(col(InsuredPerson.id).in_(ids)).values(village_code=code)
        )
        assert clinic.id is not None
        terminal = Terminal(clinic_id=clinic.id, public_key="x" * 43)
        session.add(terminal)
        await session.commit()
        await session.refresh(terminal)
    yield terminal, [i for i in ids if i is not None]
    async with state.db.sessionmaker() as session:
        await session.execute(
            update(InsuredPerson).where(col(InsuredPerson.id).in_(ids)).values(village_code=None)
        )
        await session.commit()


async def _pull(state: AppState, terminal: Terminal, checkpoint: str | None, limit: int) -> dict[str, Any]:
    async with state.db.sessionmaker() as session:
        return await pull(session, state, terminal, checkpoint, limit)


async def _pull_all(
    state: AppState, terminal: Terminal, checkpoint: str | None, limit: int
) -> tuple[list[dict[str, Any]], str, int]:
    """Pulls until hasMore is false; (documents, final checkpoint, round trips)."""
    documents: list[dict[str, Any]] = []
    trips = 0
    while True:
        answer = await _pull(state, terminal, checkpoint, limit)
        trips += 1
        assert "resync" not in answer
        assert len(answer["changes"]) <= limit
        documents.extend(answer["changes"])
        checkpoint = answer["checkpoint"]
        if not answer["hasMore"]:
            return documents, checkpoint, trips
        assert trips < 500


def _ids(documents: list[dict[str, Any]], entity: str) -> set[str]:
    return {d["id"] for d in documents if d["entity"] == entity and d["op"] == "upsert"}


async def test_first_pull_pages_the_whole_snapshot_whatever_the_limit(
    state: AppState, village: tuple[Terminal, list[int]]
) -> None:
    terminal, residents = village
    whole, _, trips_whole = await _pull_all(state, terminal, None, 1000)
    paged, _, trips_paged = await _pull_all(state, terminal, None, 3)
    assert _ids(whole, "person") == {str(i) for i in residents}
    assert _ids(paged, "person") == _ids(whole, "person")
    assert _ids(paged, "policy_version") == _ids(whole, "policy_version") != set()
    assert _ids(paged, "issuer_keys") == {"voucher"}
    assert trips_paged > trips_whole
    entry = next(d for d in whole if d["entity"] == "person")["data"]
    assert "*" in entry["idNumberMasked"] and len(entry["voucherRef"]) == 16
    assert entry["yearToDate"]["year"] >= 2026 and isinstance(entry["personalAccountBalanceFen"], int)
    assert all(isinstance(v, int) for v in entry["yearToDate"]["basicPaidFen"].values())


async def test_an_incremental_pull_sends_what_changed_and_nothing_else(
    state: AppState, village: tuple[Terminal, list[int]]
) -> None:
    terminal, residents = village
    _, checkpoint, _ = await _pull_all(state, terminal, None, 500)
    empty = await _pull(state, terminal, checkpoint, 100)
    assert empty["changes"] == [] and empty["hasMore"] is False
    async with state.db.sessionmaker() as session:
        await changelog.record(session, changelog.person_changed(residents[0], VILLAGE))  # another village
        await changelog.record(session, changelog.person_changed(residents[1], None))  # own data only
        person = await session.get(InsuredPerson, residents[2])
        assert person is not None
        await changelog.record(session, changelog.person_changed(residents[2], person.village_code))
        await session.commit()
    answer = await _pull(state, terminal, empty["checkpoint"], 100)
    assert [(d["entity"], d["id"], d["op"]) for d in answer["changes"]] == [
        ("person", str(residents[2]), "upsert")
    ]
    again = await _pull(state, terminal, answer["checkpoint"], 100)
    assert again["changes"] == [] and not again["hasMore"]


async def test_a_resident_who_left_the_village_is_a_tombstone(
    state: AppState, village: tuple[Terminal, list[int]]
) -> None:
    terminal, residents = village
    _, checkpoint, _ = await _pull_all(state, terminal, None, 500)
    async with state.db.sessionmaker() as session:
        person = await session.get(InsuredPerson, residents[3])
        assert person is not None and person.village_code
        old = person.village_code
        person.village_code = VILLAGE
        await changelog.record(session, changelog.person_changed(residents[3], old))
        await session.commit()
    answer = await _pull(state, terminal, checkpoint, 100)
    assert answer["changes"] == [{"entity": "person", "id": str(residents[3]), "op": "delete"}]


async def test_checkpoints_that_cannot_be_honoured(
    state: AppState, village: tuple[Terminal, list[int]]
) -> None:
    terminal, _ = village
    _, checkpoint, _ = await _pull_all(state, terminal, None, 500)
    for garbled in ("", "x", checkpoint[:-2], checkpoint[::-1], "A" * 500):
        with pytest.raises(BadUserInput):
            await _pull(state, terminal, garbled, 10)
    other = Terminal(id=(terminal.id or 0) + 10_000, clinic_id=terminal.clinic_id, public_key="y")
    with pytest.raises(BadUserInput):  # bound to the terminal it was given to
        await _pull(state, other, checkpoint, 10)
    codec = state.cursors
    scope = f"sync-pull:{terminal.id}"
    epoch, seq, revocations, keys, phase, after = codec.decode(scope, checkpoint)
    future = codec.encode(scope, [epoch, seq + 10**6, revocations, keys, phase, after])
    assert await _pull(state, terminal, future, 10) == {"resync": True}
    elsewhere = codec.encode(scope, ["another-database", seq, revocations, keys, phase, after])
    assert await _pull(state, terminal, elsewhere, 10) == {"resync": True}


async def test_a_checkpoint_older_than_the_retention_resyncs(
    state: AppState, village: tuple[Terminal, list[int]]
) -> None:
    terminal, residents = village
    _, checkpoint, _ = await _pull_all(state, terminal, None, 500)
    async with state.db.sessionmaker() as session:
        await changelog.record(session, changelog.person_changed(residents[0], None))
        await session.commit()
        await changelog.sequence(session)
        # Age every entry past a one-day retention, then compact.
        await session.execute(update(ChangeLogEntry).values(created_at=utcnow() - timedelta(days=2)))
        await session.commit()
        assert await changelog.compact(session, timedelta(days=1)) > 0
    assert await _pull(state, terminal, checkpoint, 10) == {"resync": True}
    fresh, _, _ = await _pull_all(state, terminal, None, 500)  # a resync is a new snapshot
    assert _ids(fresh, "person") == {str(i) for i in residents}


# -- the committed watermark --------------------------------------------------------------------------


async def _reader(state: AppState, scope: str, after: int) -> tuple[list[str], int]:
    async with state.db.sessionmaker() as session:
        mark = await changelog.sequence(session)
        entries = await changelog.read(session, [scope], after, mark, 10_000)
        await session.commit()
    return [e.entity_id for e in entries], (entries[-1].seq if entries else after)


async def test_a_transaction_that_commits_late_is_not_skipped(state: AppState) -> None:
    """Transaction A writes first and commits last; a reader in between has moved past B's entry.
    With ids as the pull order A's entry would sit below the reader's checkpoint for ever."""
    if state.settings.is_sqlite:
        pytest.skip("SQLite has one writer at a time: no transaction commits out of order")
    scope = f"test:{secrets.token_hex(4)}"
    async with state.db.sessionmaker() as first, state.db.sessionmaker() as second:
        await changelog.record(first, [Change("probe", "A", scope)])
        await first.flush()
        await changelog.record(second, [Change("probe", "B", scope)])
        await second.commit()
        seen, checkpoint = await _reader(state, scope, 0)
        assert seen == ["B"]
        await first.commit()
    later, _ = await _reader(state, scope, checkpoint)
    assert later == ["A"]
    ids = {entity_id: (row_id, seq) for entity_id, row_id, seq in (await _session_rows(state, scope))}
    assert ids["A"][0] < ids["B"][0] and ids["A"][1] > ids["B"][1]  # inserted first, numbered last


async def test_sequencers_running_beside_writers_number_every_entry_once(state: AppState) -> None:
    """Several pulls number the change log while pushes keep committing entries (SQLite: a transaction
    runs its statements before its first write outside it, so a sequencer that read the watermark and
    then waited for the write lock saw entries another sequencer had numbered meanwhile, numbered new
    ones from its stale watermark and broke the unique seq: HTTP 500 in the 800-terminal drain)."""
    scope = f"test:{secrets.token_hex(4)}"
    rng = random.Random(11)
    stop = asyncio.Event()

    async def writer(n: int) -> None:
        for i in range(25):
            async with state.db.sessionmaker() as session:
                await changelog.record(session, [Change("probe", f"{n}-{i}", scope)])
                await session.flush()
                await asyncio.sleep(rng.random() * 0.005)
                await session.commit()

    async def sequencer() -> None:
        while not stop.is_set():
            async with state.db.sessionmaker() as session:
                await changelog.sequence(session)
            await asyncio.sleep(0)

    sequencers = [asyncio.ensure_future(sequencer()) for _ in range(4)]
    try:
        await asyncio.gather(*(writer(n) for n in range(4)))
    finally:
        stop.set()
        await asyncio.gather(*sequencers)
    async with state.db.sessionmaker() as session:
        await changelog.sequence(session)
    seqs = [seq for _, _, seq in await _session_rows(state, scope)]
    assert len(seqs) == 100 and 0 not in seqs and len(set(seqs)) == 100


async def _session_rows(state: AppState, scope: str) -> list[tuple[str, int, int]]:
    async with state.db.sessionmaker() as session:
        rows = await session.execute(
            select(col(ChangeLogEntry.entity_id), col(ChangeLogEntry.id), col(ChangeLogEntry.seq)).where(
                col(ChangeLogEntry.scope) == scope
            )
        )
        return [(e, int(i or 0), int(s or 0)) for e, i, s in rows]


async def test_concurrent_writers_and_a_reader_never_skip_a_change(state: AppState) -> None:
    """Writers on their own connections hold their transactions open for random times (so they commit
    out of order) while a reader pulls in a loop; at the end the reader has seen every entry once."""
    scope = f"test:{secrets.token_hex(4)}"
    rng = random.Random(7)
    writers, per_writer = (6, 15) if not state.settings.is_sqlite else (3, 10)
    written: list[str] = []
    done = asyncio.Event()

    async def writer(n: int) -> None:
        for i in range(per_writer):
            async with state.db.sessionmaker() as session:
                name = f"{n}-{i}"
                await changelog.record(session, [Change("probe", name, scope)])
                await session.flush()
                await asyncio.sleep(rng.random() * 0.02)
                if rng.random() < 0.15:
                    await session.rollback()  # rolled back: never seen, and leaves no hole
                    continue
                await session.commit()
                written.append(name)

    seen: list[str] = []

    async def reader() -> None:
        checkpoint = 0
        while not done.is_set():
            got, checkpoint = await _reader(state, scope, checkpoint)
            seen.extend(got)
            await asyncio.sleep(0.003)
        got, checkpoint = await _reader(state, scope, checkpoint)
        seen.extend(got)

    reading = asyncio.create_task(reader())
    await asyncio.gather(*(writer(n) for n in range(writers)))
    done.set()
    await reading
    assert sorted(seen) == sorted(written)
    assert len(seen) == len(set(seen))


async def test_the_sequencer_keeps_its_watermark_in_one_row(state: AppState) -> None:
    async with state.db.sessionmaker() as session:
        before = (await session.get(ReplicationState, 1, populate_existing=True)).last_seq  # type: ignore[union-attr]
        await changelog.record(session, [Change("probe", "x", "test:mark")])
        await session.commit()
        after = await changelog.sequence(session)
        assert after == before + 1 or after > before  # other tests may write concurrently
        assert await changelog.watermark(session) == after
