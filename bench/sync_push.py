"""Push throughput (issue 9 (a)): settlements/s through `api.replication.push.push`, with full
recomputation and exactly-once bookkeeping, next to the limit: the raw driver writing the same rows.

A fresh database (SQLite file, or PostgreSQL with --postgres URL) is migrated and given the demo county;
one village clinic gets `--villagers` of its people on its roster and `--terminals` enrolled terminals.
Each terminal's outbox holds card visits of roster people dated yesterday (1-3 bill items), with the
split a terminal computes offline from an empty year (so later visits of a person come back
`adjusted`, as after a real outage). Batches of 200 are pushed one after another in this process; the
figure is settlements applied per second of push() wall time (one core: the server's work, with its
database, no HTTP).

The limit: the rows that push wrote (settlements, pushed_mutations, change_log, settlement_adjustments)
are read back and written again by the raw driver into copies of those tables with the same indexes:
stdlib sqlite3 `executemany` in one transaction, or asyncpg `copy_records_to_table` (PostgreSQL COPY).

The set-up is frozen out of the cyclic GC before the push (`gc.freeze()`, as a server worker does
after its start-up; --no-freeze to measure without).

Both are also given in CPU time, which a machine shared with other jobs distorts far less than wall
time: this process's (SQLite runs in it) plus, on PostgreSQL, that of the server backends serving this
database (read from /proc: the server must run on this machine). Settlements per CPU-second is the
"per core" figure.

    .venv/bin/python bench/sync_push.py                                  # SQLite, 10 terminals x 600
    .venv/bin/python bench/sync_push.py --postgres postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import json
import os
import random
import sqlite3
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import select, text, update  # noqa: E402
from sqlmodel import col  # noqa: E402

from api.demo import load_demo_county  # noqa: E402
from api.migrate import upgrade  # noqa: E402
from api.people.models import Facility, InsuredPerson  # noqa: E402
from api.replication.push import push  # noqa: E402
from api.settings import Settings  # noqa: E402
from api.state import AppState  # noqa: E402
from api.terminals.models import Terminal  # noqa: E402
from api.vouchers import service as voucher_service  # noqa: E402
from sync.protocol import Bill, Mutation, MutationKind, SettlementCreate, Split, uuid7  # noqa: E402
from sync.settlement import BillItem, Visit, compute, load_default_policies  # noqa: E402

TABLES = ("settlements", "pushed_mutations", "change_log", "settlement_adjustments")
BATCH = 200


async def _admin_pg(base: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(base.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def setup(
    settings: Settings, people: int, villagers: int, terminals: int
) -> tuple[AppState, list[int], list[str]]:
    upgrade(settings.resolved_database_url)
    state = AppState.build(settings)
    await load_demo_county(state, people=people, seed=settings.demo_seed)
    async with state.db.session() as session:
        clinic = Facility(
            code="BENCH-PUSH", name="基准村卫生室", level="village", kind="clinic", region_code="340421",
            village_code="340421100077",
        )  # fmt: skip
        session.add(clinic)
        ids = list((await session.execute(select(col(InsuredPerson.id)).limit(villagers))).scalars())
        await session.execute(
            update(InsuredPerson).where(col(InsuredPerson.id).in_(ids)).values(village_code="340421100077")
        )
        await session.flush()
        assert clinic.id is not None
        rows = []
        for _ in range(terminals):
            row = Terminal(
                clinic_id=clinic.id,
                public_key=uuid.uuid4().hex[:43],
                enrolled_at=dt.datetime.now(dt.UTC) - dt.timedelta(days=30),
            )
            session.add(row)
            rows.append(row)
        await session.flush()
        refs = [(await voucher_service.person_ref(session, pid)).hex() for pid in ids if pid is not None]
        terminal_ids = [int(r.id or 0) for r in rows]
    return state, terminal_ids, refs


def outboxes(
    terminals: list[int], refs: list[str], per_terminal: int, seed: int
) -> dict[int, list[Mutation]]:
    rng = random.Random(seed)
    policies = load_default_policies()
    yesterday = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=8)).date() - dt.timedelta(days=1)
    at = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
    boxes: dict[int, list[Mutation]] = {}
    for terminal in terminals:
        box = []
        for seq in range(1, per_terminal + 1):
            items = tuple(
                BillItem(rng.randrange(2_000, 15_000), "class_a", 0, "A01", "诊疗费")
                for _ in range(rng.randint(1, 3))
            )
            visit = Visit(
                yesterday, "340421", "resident", "adult", "village", "local", "general_outpatient", items
            )
            result = compute(policies, visit, None, today=yesterday)
            payload = SettlementCreate(
                Bill(yesterday, "general_outpatient", "local", items, "village", False),
                Split.from_result(result),
                result.policy_version_id,
                person_ref=rng.choice(refs),
            ).to_payload()
            box.append(Mutation(uuid7(at), seq, MutationKind.SETTLEMENT_CREATE, at, payload))
        boxes[terminal] = box
    return boxes


def _proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a process on this machine (0 if it is gone or not ours to see)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _backends(state: AppState) -> dict[int, float]:
    """CPU so far of each PostgreSQL backend connected to this database (none on SQLite)."""
    if state.settings.is_sqlite:
        return {}
    async with state.db.sessionmaker() as session:
        pids = (
            await session.execute(text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()"))
        ).scalars()
        return {int(pid): _proc_cpu(int(pid)) for pid in pids}


async def run_push(state: AppState, boxes: dict[int, list[Mutation]]) -> tuple[float, float, dict[str, int]]:
    """Wall seconds, CPU seconds (this process and its database backends), outcomes."""
    outcome: dict[str, int] = {}
    backends = await _backends(state)
    cpu = time.process_time()
    started = time.perf_counter()
    for terminal_id, box in boxes.items():
        for start in range(0, len(box), BATCH):
            async with state.db.sessionmaker() as session:
                terminal = await session.get(Terminal, terminal_id)
                assert terminal is not None
                answer = await push(session, state, terminal, box[start : start + BATCH])
            for result in answer["results"]:
                outcome[result["status"]] = outcome.get(result["status"], 0) + 1
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu
    after = await _backends(state)  # (a backend that served the push and then closed is not counted)
    cpu += sum(spent - backends.get(pid, 0.0) for pid, spent in after.items())
    return elapsed, cpu, outcome


async def written_rows(state: AppState) -> dict[str, tuple[list[str], list[tuple[Any, ...]]]]:
    """What push wrote, table by table (columns, rows), to write again with the raw driver."""
    out = {}
    async with state.db.sessionmaker() as session:
        for table in TABLES:
            where = {
                "settlements": "terminal_id IS NOT NULL",
                "change_log": "id > (SELECT coalesce(max(id), 0) - 1000000 FROM change_log)",
            }.get(table, "1 = 1")
            result = await session.execute(text(f"SELECT * FROM {table} WHERE {where}"))
            out[table] = (list(result.keys()), [tuple(r) for r in result])
    return out


def raw_sqlite(path: str, rows: dict[str, tuple[list[str], list[tuple[Any, ...]]]]) -> tuple[float, float]:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    for table in TABLES:
        for (sql,) in conn.execute(
            "SELECT sql FROM sqlite_master WHERE tbl_name = ? AND sql IS NOT NULL ORDER BY type DESC",
            (table,),
        ).fetchall():
            conn.execute(sql.replace(f'"{table}"', f'"raw_{table}"').replace(f" {table} ", f" raw_{table} ")
                         .replace(f"ix_{table}", f"ix_raw_{table}").replace(f"uq_{table}", f"uq_raw_{table}"))  # fmt: skip
    conn.commit()
    cpu = time.process_time()
    started = time.perf_counter()
    with conn:
        for table, (columns, values) in rows.items():
            names = ", ".join(c for c in columns if c != "id")
            marks = ", ".join("?" for c in columns if c != "id")
            keep = [i for i, c in enumerate(columns) if c != "id"]
            conn.executemany(
                f"INSERT INTO raw_{table} ({names}) VALUES ({marks})",
                [tuple(_plain(v[i]) for i in keep) for v in values],
            )
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu
    conn.close()
    return elapsed, cpu


def _plain(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, dict | list) else value


async def raw_postgres(
    url: str, rows: dict[str, tuple[list[str], list[tuple[Any, ...]]]]
) -> tuple[float, float]:
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        for table in TABLES:
            await conn.execute(
                f"CREATE TABLE raw_{table} (LIKE {table} INCLUDING DEFAULTS INCLUDING INDEXES)"
            )
        backend = int(await conn.fetchval("SELECT pg_backend_pid()"))
        cpu = time.process_time() - _proc_cpu(backend)
        started = time.perf_counter()
        async with conn.transaction():
            for table, (columns, values) in rows.items():
                records = [tuple(_plain(v) if c in ("payload", "result", "visit", "terminal_split") else v
                                 for c, v in zip(columns, value, strict=True)) for value in values]  # fmt: skip
                await conn.copy_records_to_table(f"raw_{table}", records=records, columns=columns)
        elapsed = time.perf_counter() - started
        return elapsed, time.process_time() + _proc_cpu(backend) - cpu
    finally:
        await conn.close()


async def main(args: argparse.Namespace) -> dict[str, Any]:
    data = Path(tempfile.mkdtemp(prefix="yibao-bench-push-"))
    database = None
    if args.postgres:
        name = f"yibao_bench_push_{uuid.uuid4().hex[:8]}"
        await _admin_pg(args.postgres, f'CREATE DATABASE "{name}"')
        database = (
            args.postgres.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://") + "/" + name
        )
    settings = Settings(
        data_dir=data, database_url=database, demo_people=args.people, log_json=False, log_level="WARNING"
    )
    try:
        state, terminals, refs = await setup(settings, args.people, args.villagers, args.terminals)
        boxes = outboxes(terminals, refs, args.per_terminal, args.seed)
        if not args.no_freeze:
            # As a server worker does after its start-up (api/app.py's lifespan): what is alive now
            # (modules, the state, and here the terminals' outboxes, which a server never holds) is out
            # of the cyclic GC's reach, so its full collections walk only what the push allocates.
            gc.collect()
            gc.freeze()
        elapsed, push_cpu, outcome = await run_push(state, boxes)
        rows = await written_rows(state)
        await state.db.dispose()
        if database:
            raw, raw_cpu = await raw_postgres(database, rows)
        else:
            raw, raw_cpu = raw_sqlite(str(data / "yibao.db"), rows)
    finally:
        if database:
            await _admin_pg(args.postgres, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    total = sum(outcome.values())
    return {
        "database": "postgresql" if database else "sqlite",
        "settlements": total,
        "outcome": outcome,
        "push_s": round(elapsed, 3),
        "push_per_s": round(total / elapsed),
        "rows_written": {t: len(v) for t, (_, v) in rows.items()},
        "raw_driver_s": round(raw, 4),
        "raw_per_s": round(total / raw),
        "push_vs_raw": f"{raw / elapsed:.1%} of the raw driver's rate ({elapsed / raw:.1f}x slower)",
        "push_cpu_s": round(push_cpu, 3),
        "push_per_cpu_s": round(total / push_cpu),
        "raw_cpu_s": round(raw_cpu, 4),
        "raw_per_cpu_s": round(total / raw_cpu),
        "push_vs_raw_cpu": f"{push_cpu / raw_cpu:.1f}x the raw driver's CPU time",
        "gc_frozen": not args.no_freeze,
        "load_average": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--postgres", help="a PostgreSQL server URL (a fresh database is made and dropped)")
    parser.add_argument("--people", type=int, default=1000)
    parser.add_argument("--villagers", type=int, default=500)
    parser.add_argument("--terminals", type=int, default=10)
    parser.add_argument("--per-terminal", type=int, default=600)
    parser.add_argument("--seed", type=int, default=9)
    parser.add_argument(
        "--no-freeze",
        action="store_true",
        help="do not gc.freeze() the set-up before pushing (a server worker freezes its start-up heap; "
        "without it every full collection walks the demo county's leftovers and the outboxes)",
    )
    parser.add_argument("--json", action="store_true")
    arguments = parser.parse_args()
    figures = asyncio.run(main(arguments))
    if arguments.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key:14} {value}")
