"""The reviewers' queue over 100,000 filings (issue 11): filters and sorting by deadline, keyset pages.

A fresh database (SQLite in a temporary data dir, or a new PostgreSQL database dropped afterwards) is
migrated and given a small demo county (the people and accounts the filings point at), then N filings
are bulk-inserted: the four kinds, 12 regions (half the filings in the demo county's 340421), about 40%
waiting for a reviewer (submitted / in review / resubmitted, each with a stage and a due date from 60
days ago to 40 days ahead, a quarter of them claimed) and the rest decided (no due date, so outside the
queue's partial indexes).

Each scenario is one page of 20 (`first: 20`) measured three ways, in this process, one at a time:

- **graphql**: `POST /graphql` `reviewQueue(filter: …, first: 20)` with a reviewer's bearer token through
  the whole app (httpx ASGI transport: middleware, token and session check, validation, resolvers);
- **service**: `api.filings.service.review_queue` on an ORM session (what the resolver runs);
- **raw**: the same SELECT, compiled from the service's own statement, through the bare driver (stdlib
  sqlite3 / asyncpg), rows fetched and nothing else: the floor.

It prints p50 / p99 per scenario and layer, and the query plan (EXPLAIN QUERY PLAN on SQLite,
EXPLAIN ANALYZE on PostgreSQL) of each scenario's SELECT with the index it uses.

    .venv/bin/python bench/review_queue.py                       # SQLite, --filings 100000 --queries 300
    .venv/bin/python bench/review_queue.py --postgres postgresql+asyncpg://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import random
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import insert, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from api.app import create_app  # noqa: E402
from api.auth.models import Account, AuthSession, Role  # noqa: E402
from api.auth.service import Viewer  # noqa: E402
from api.demo import load_demo_county  # noqa: E402
from api.filings import service  # noqa: E402
from api.filings.models import Filing  # noqa: E402
from api.migrate import upgrade  # noqa: E402
from api.people.models import InsuredPerson  # noqa: E402
from api.settings import Settings  # noqa: E402
from api.state import AppState  # noqa: E402

KINDS = ("cross_region", "chronic_disease", "reimbursement", "maternity")
STAGES = {
    "cross_region": ("first_review", "second_review"),
    "chronic_disease": ("first_review", "second_review"),
    "reimbursement": ("first_review", "second_review", "payment"),
    "maternity": ("first_review", "second_review", "payment"),
}
REGIONS = ("340421",) * 11 + (
    "340402",
    "340403",
    "340404",
    "340405",
    "340406",
    "341001",
    "341002",
    "341003",
    "341004",
    "341005",
    "341021",
)
QUEUE = """query($filter: ReviewQueueFilter, $after: String) { reviewQueue(filter: $filter, first: 20, after: $after) {
  pageInfo { hasNextPage endCursor } edges { node { id kind status stage dueOn overdue regionCode claimedByMe } } } }"""


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def fill(state: AppState, count: int, seed: int) -> tuple[int, int]:
    """Bulk-inserts `count` filings; returns (a reviewer's account id, the number in the queue)."""
    rng = random.Random(seed)
    async with state.db.session() as session:
        people = [row for row in (await session.execute(select(InsuredPerson.id))).scalars()]
        accounts = [
            row
            for row in (
                await session.execute(select(Account.id).where(Account.role == Role.RESIDENT.value))
            ).scalars()
        ]
        reviewer = Account(
            provider="bench", subject=uuid.uuid4().hex, role=Role.REVIEWER.value, display_name="基准"
        )
        others = [
            Account(provider="bench", subject=uuid.uuid4().hex, role=Role.REVIEWER.value) for _ in range(5)
        ]
        session.add_all([reviewer, *others])
        await session.flush()
        claimers = [reviewer.id, *(o.id for o in others)]
    today = service.local_today(dt.datetime.now(dt.UTC))
    now = dt.datetime.now(dt.UTC)
    queued = 0
    batch: list[dict[str, Any]] = []
    for i in range(count):
        kind = rng.choice(KINDS)
        waiting = rng.random() < 0.4
        status = (
            rng.choice(("submitted", "in_review", "in_review", "resubmitted"))
            if waiting
            else rng.choice(("approved", "approved", "rejected", "withdrawn", "draft"))
        )
        queued += waiting
        batch.append(
            {
                "client_id": str(uuid.UUID(int=rng.getrandbits(128))),
                "request_digest": "0" * 64,
                "kind": kind,
                "person_id": rng.choice(people),
                "region_code": rng.choice(REGIONS),
                "filed_by_account_id": rng.choice(accounts),
                "status": status,
                "stage": rng.choice(STAGES[kind]) if waiting else None,
                "due_on": today + dt.timedelta(days=rng.randint(-60, 40)) if waiting else None,
                "due_estimated": False,
                "claimed_by_account_id": rng.choice(claimers)
                if waiting and status == "in_review" and rng.random() < 0.5
                else None,
                "fields": {"n": i},
                "requested": [],
                "materials_round": 0,
                "created_at": now,
                "updated_at": now,
                "version": 1,
            }
        )
        if len(batch) == 5000:
            async with state.db.session() as session:
                await session.execute(insert(Filing), batch)
            batch = []
    if batch:
        async with state.db.session() as session:
            await session.execute(insert(Filing), batch)
    async with state.db.engine.connect() as conn:
        await conn.exec_driver_sql("ANALYZE")
        await conn.commit()
    assert reviewer.id is not None
    return reviewer.id, queued


async def token_for(state: AppState, account_id: int) -> str:
    async with state.db.session() as session:
        auth = AuthSession(id=str(uuid.uuid4()), account_id=account_id)
        session.add(auth)
    return state.tokens.issue_access(
        account_id=account_id,
        role=Role.REVIEWER.value,
        session_id=auth.id,
        person_id=None,
        now=dt.datetime.now(dt.UTC),
    )


def scenarios(today: dt.date) -> dict[str, tuple[dict[str, Any], service.QueueFilter]]:
    """name -> (GraphQL filter, the service's filter)."""
    return {
        "all, by deadline": ({}, service.QueueFilter()),
        "kind": ({"kind": "REIMBURSEMENT"}, service.QueueFilter(kind="reimbursement")),
        "region (rare)": ({"region": "341021"}, service.QueueFilter(region="341021")),
        "kind + region + stage + status": (
            {"kind": "MATERNITY", "region": "340421", "stage": "payment", "status": "IN_REVIEW"},
            service.QueueFilter(kind="maternity", region="340421", stage="payment", status="in_review"),
        ),
        "due before (a week ahead)": (
            {"dueBefore": (today + dt.timedelta(days=7)).isoformat()},
            service.QueueFilter(due_before=today + dt.timedelta(days=7)),
        ),
        "overdue, unclaimed": (
            {"overdue": True, "claimed": "UNCLAIMED"},
            service.QueueFilter(overdue=True, claimed="unclaimed"),
        ),
        "claimed by me": ({"claimed": "MINE"}, service.QueueFilter(claimed="mine")),
    }


def literal_sql(statement: Any, is_postgres: bool) -> str:
    dialect = postgresql.dialect() if is_postgres else sqlite_dialect.dialect()  # type: ignore[no-untyped-call]
    return str(statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))


async def timed(n: int, warmup: int, call: Callable[[], Awaitable[Any]]) -> list[float]:
    for _ in range(warmup):
        await call()
    out = []
    for _ in range(n):
        start = time.perf_counter()
        await call()
        out.append((time.perf_counter() - start) * 1000)
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    pg_name = None
    with tempfile.TemporaryDirectory(prefix="yibao-bench-queue-") as tmp:
        if args.postgres:
            import asyncpg

            pg_name = f"yibao_bench_{uuid.uuid4().hex[:8]}"
            base = make_url(args.postgres)
            admin = await asyncpg.connect(
                base.set(drivername="postgresql").render_as_string(hide_password=False)
            )
            await admin.execute(f'CREATE DATABASE "{pg_name}"')
            await admin.close()
            url = base.set(database=pg_name).render_as_string(hide_password=False)
            settings = Settings(data_dir=Path(tmp), database_url=url, demo_people=args.people, log_json=False)
        else:
            settings = Settings(data_dir=Path(tmp), demo_people=args.people, log_json=False)
        try:
            return await measure(args, settings)
        finally:
            if pg_name is not None:
                import asyncpg

                admin = await asyncpg.connect(
                    make_url(args.postgres).set(drivername="postgresql").render_as_string(hide_password=False)
                )
                await admin.execute(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')
                await admin.close()


async def measure(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    url = settings.resolved_database_url
    await asyncio.to_thread(upgrade, url)
    state = AppState.build(settings)
    is_pg = state.db.is_postgres
    await load_demo_county(state, people=settings.demo_people, seed=1)
    started = time.perf_counter()
    reviewer_id, queued = await fill(state, args.filings, args.seed)
    fill_s = time.perf_counter() - started
    token = await token_for(state, reviewer_id)
    viewer = Viewer(reviewer_id, Role.REVIEWER, "bench", None)
    app = create_app(settings, state)
    today = service.local_today(dt.datetime.now(dt.UTC))

    raw_conn: Any
    if is_pg:
        import asyncpg

        raw_conn = await asyncpg.connect(
            make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        )
    else:
        raw_conn = sqlite3.connect(make_url(url).database or "")

    results: dict[str, Any] = {
        "database": "postgresql" if is_pg else "sqlite",
        "filings": args.filings,
        "queued": queued,
        "fillSeconds": round(fill_s, 1),
        "scenarios": {},
    }
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as http:
        for name, (gql_filter, flt) in scenarios(today).items():
            # The second page, so the keyset condition is part of every measured query.
            first = await http.post(
                "/graphql",
                json={"query": QUEUE, "variables": {"filter": gql_filter}},
                headers={"authorization": f"Bearer {token}"},
            )
            body = first.json()
            assert "errors" not in body, body
            after = body["data"]["reviewQueue"]["pageInfo"]["endCursor"]
            last = (
                body["data"]["reviewQueue"]["edges"][-1]["node"]
                if body["data"]["reviewQueue"]["edges"]
                else None
            )
            position = (dt.date.fromisoformat(last["dueOn"]), int(last["id"])) if last else None
            variables = {"filter": gql_filter, "after": after}

            async def graphql_call(variables: dict[str, Any] = variables) -> None:
                response = await http.post(
                    "/graphql",
                    json={"query": QUEUE, "variables": variables},
                    headers={"authorization": f"Bearer {token}"},
                )
                assert response.status_code == 200 and "errors" not in response.json()

            async def service_call(after: str | None = after, flt: service.QueueFilter = flt) -> None:
                async with state.db.sessionmaker() as session:
                    await service.review_queue(session, state.cursors, viewer, flt, first=20, after=after)

            statement = service.queue_statement(service.queue_filters(flt, viewer, today), position, 20)
            sql = literal_sql(statement, is_pg)

            async def raw_call(sql: str = sql) -> None:
                if is_pg:
                    await raw_conn.fetch(sql)
                else:
                    raw_conn.execute(sql).fetchall()

            layers = {}
            for layer, call in (("graphql", graphql_call), ("service", service_call), ("raw", raw_call)):
                samples = await timed(args.queries, 20, call)
                layers[layer] = {
                    "p50": round(statistics.median(samples), 2),
                    "p99": round(percentile(samples, 99), 2),
                    "max": round(max(samples), 2),
                }
            if is_pg:
                plan_rows = await raw_conn.fetch("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + sql)
                plan = [r[0] for r in plan_rows]
            else:
                plan = [row[3] for row in raw_conn.execute("EXPLAIN QUERY PLAN " + sql).fetchall()]
            results["scenarios"][name] = {"layers": layers, "plan": plan, "sql": sql}
    if is_pg:
        await raw_conn.close()
    else:
        raw_conn.close()
    await state.db.dispose()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--filings", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=300, help="measured requests per scenario and layer")
    parser.add_argument("--people", type=int, default=200, help="demo county size (the filings' people)")
    parser.add_argument("--seed", type=int, default=20261201)
    parser.add_argument("--postgres", help="a PostgreSQL URL whose role may create databases")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = asyncio.run(run(args))
    if args.json:
        print(json.dumps(results, ensure_ascii=False, indent=1))
        return
    print(
        f"{results['database']}: {results['filings']:,} filings, {results['queued']:,} in the queue (filled in {results['fillSeconds']} s)"
    )
    print(f"{'scenario':34} {'graphql p50/p99':>18} {'service p50/p99':>18} {'raw p50/p99':>16}")
    for name, s in results["scenarios"].items():
        cells = [
            f"{s['layers'][k]['p50']:.1f} / {s['layers'][k]['p99']:.1f}"
            for k in ("graphql", "service", "raw")
        ]
        print(f"{name:34} {cells[0]:>18} {cells[1]:>18} {cells[2]:>16}")
    for name, s in results["scenarios"].items():
        print(f"\n-- {name}\n" + "\n".join("   " + line for line in s["plan"]))


if __name__ == "__main__":
    main()
