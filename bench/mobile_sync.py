"""A resident's mini-program replication (issue 12): first full replication and an empty incremental one.

A fresh database (SQLite file, or PostgreSQL with --postgres URL: a fresh database made and dropped) is
migrated and given a small demo county; one resident of it gets about three years of records in the
bench's own rows: a settlement a week or so with its personal-account flow, a contribution a year,
filings, notifications, and an active link to a parent (read_records, file_on_behalf) whose own
settlements and flows replicate too. The app runs in this process; the phone is httpx over ASGI (real
HTTP semantics, no socket), pulling the six collections as RxDB does (`limit` per page until the first
short page). Figures: round trips, response bytes (as sent, and gzip-compressed as a phone on a weak
network would receive them), and server time, which is `service.pull` itself (the resolver's work with
its database, no HTTP) measured on the same calls. The baseline is the raw driver (stdlib sqlite3,
or asyncpg) reading the same rows with one SELECT per table.

    .venv/bin/python bench/mobile_sync.py                                                   # SQLite
    .venv/bin/python bench/mobile_sync.py --postgres postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gzip
import json
import os
import secrets
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select
from sqlmodel import col

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from api.app import create_app  # noqa: E402
from api.auth.models import Account, AuthSession, Role  # noqa: E402
from api.auth.service import Viewer  # noqa: E402
from api.demo import load_demo_county  # noqa: E402
from api.family.models import FamilyLink, LinkMethod, LinkStatus, Permission  # noqa: E402
from api.family.service import pair_key  # noqa: E402
from api.filings.models import Filing  # noqa: E402
from api.migrate import upgrade  # noqa: E402
from api.notifications.models import Notification  # noqa: E402
from api.people import idnumbers  # noqa: E402
from api.people.models import AccountFlow, Contribution, Facility, InsuredPerson, Settlement  # noqa: E402
from api.replication.mobile import service  # noqa: E402
from api.settings import Settings  # noqa: E402
from api.state import AppState  # noqa: E402

COLLECTIONS = ("Settlement", "Contribution", "AccountFlow", "Filing", "FamilyLink", "Notification")
FIELDS = {
    "Settlement": "id personId updatedAt _deleted settledAt year category categoryLabel visitScope facilityName "
    "facilityLevel totalFen compliantFen deductibleFen basicFen criticalIllnessFen assistanceFen "
    "personalAccountFen cashFen policyVersion source voided voidedAt",
    "Contribution": "id personId updatedAt _deleted year period insuranceType paidAt amountFen subsidyFen",
    "AccountFlow": "id personId updatedAt _deleted occurredAt year kind kindLabel amountFen balanceAfterFen "
    "settlementId",
    "Filing": "id serverId personId updatedAt _deleted kind kindLabel status statusLabel stage fields amountFen "
    "linkId filedByPersonId dueOn decisionReason createdAt submittedAt decidedAt version",
    "FamilyLink": "id personId updatedAt _deleted relationship relationshipLabel method status myRole "
    "holderPersonId relativePersonId holderName relativeName relativeIdNumberMasked permissions "
    "requestedPermissions createdAt expiresAt decidedAt",
    "Notification": "id personId updatedAt _deleted kind title body data createdAt readAt linkId",
}
TABLES = {
    "settlements": "person_id",
    "account_flows": "person_id",
    "contributions": "person_id",
    "filings": "person_id",
    "notifications": "person_id",
}


async def _admin_pg(base: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(base.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _person(state: AppState, age: int, name: str) -> InsuredPerson:
    birth = dt.date.today() - dt.timedelta(days=int(age * 365.25) + 30)
    first17 = f"340421{birth:%Y%m%d}{secrets.randbelow(1000):03d}"
    id_number = first17 + idnumbers.check_digit(first17)
    return InsuredPerson(
        ref=uuid.uuid4().hex, name=name, id_number_cipher=state.id_numbers.encrypt(id_number),
        id_number_hash=state.id_numbers.lookup_hash(id_number), gender=idnumbers.gender(id_number),
        birth_date=birth, insurance_type="resident", region_code="340421",
    )  # fmt: skip


async def build(state: AppState, years: int) -> tuple[Viewer, str, list[int]]:
    """The bench resident, her parent, three years of rows; (viewer, access token, the two ids)."""
    rng = secrets.SystemRandom()
    async with state.db.session() as session:
        me, parent = _person(state, 40, "本基准"), _person(state, 72, "本基准父")
        session.add_all([me, parent])
        await session.flush()
        assert me.id is not None and parent.id is not None
        facility = (await session.execute(select(col(Facility.id)).limit(1))).scalar_one()
        account = Account(
            provider="bench", subject=uuid.uuid4().hex, role=Role.RESIDENT.value, person_id=me.id
        )
        session.add(account)
        await session.flush()
        assert account.id is not None
        auth = AuthSession(id=str(uuid.uuid4()), account_id=account.id)
        session.add(auth)
        link = FamilyLink(
            ref=secrets.token_hex(8), holder_person_id=me.id, relative_person_id=parent.id, relationship="parent",
            method=LinkMethod.PROXY.value, status=LinkStatus.ACTIVE.value, pair_key=pair_key(me.id, parent.id),
            requested_by_account_id=account.id, decided_at=dt.datetime.now(dt.UTC),
        )  # fmt: skip
        link.set_wanted(set(Permission))
        link.set_granted(set(Permission))
        session.add(link)
        start = dt.datetime.now(dt.UTC) - dt.timedelta(days=365 * years)
        for person, visits in ((me.id, 30 * years), (parent.id, 15 * years)):
            for i in range(visits):
                when = start + dt.timedelta(days=i * 365 * years // visits, hours=rng.randint(0, 8))
                row = Settlement(
                    person_id=person, facility_id=facility, settled_at=when, year=when.year, category="outpatient",
                    total_fen=12000, compliant_fen=11000, basic_fen=5000, critical_illness_fen=0,
                    assistance_fen=0, personal_account_fen=2000, cash_fen=5000, policy_version="bench",
                )  # fmt: skip
                session.add(row)
                await session.flush()
                session.add(
                    AccountFlow(
                        person_id=person, occurred_at=when, year=when.year, kind="settlement", amount_fen=-2000,
                        balance_after_fen=100000 - 2000 * i, settlement_id=row.id,
                    )
                )  # fmt: skip
        for year in range(years):
            session.add(
                Contribution(
                    person_id=me.id, year=start.year + year, period=str(start.year + year),
                    insurance_type="resident", paid_at=start + dt.timedelta(days=365 * year), amount_fen=40000,
                    subsidy_fen=67000,
                )
            )  # fmt: skip
        for i in range(6 * years):
            session.add(
                Filing(
                    client_id=str(uuid.uuid4()), request_digest="0" * 64, kind="cross_region", person_id=me.id,
                    region_code=me.region_code, filed_by_account_id=account.id, filed_by_person_id=me.id,
                    status="approved", fields={"reason": f"探亲就医 {i}"}, created_at=start, updated_at=start,
                )
            )  # fmt: skip
        for i in range(12 * years):
            session.add(
                Notification(
                    person_id=me.id, kind="filing.status", title="申请已通过", body=f"您的申请已审核通过。（{i}）",
                    data={"filingId": str(i)}, created_at=start + dt.timedelta(days=30 * i),
                )
            )  # fmt: skip
        await session.flush()
        token = state.tokens.issue_access(
            account_id=account.id, role=Role.RESIDENT.value, session_id=auth.id, person_id=me.id,
            now=dt.datetime.now(dt.UTC),
        )  # fmt: skip
        viewer = Viewer(account_id=account.id, role=Role.RESIDENT, person_id=me.id, session_id=auth.id)
        return viewer, token, [me.id, parent.id]


def query(name: str) -> str:
    return (
        f"query($checkpoint: ReplicationCheckpointInput, $limit: Int!) {{ pull{name}(checkpoint: $checkpoint, "
        f"limit: $limit) {{ documents {{ {FIELDS[name]} }} checkpoint {{ token }} }} }}"
    )


async def timed_pull(state: AppState, viewer: Viewer, name: str, token: str | None, limit: int) -> float:
    async with state.db.sessionmaker() as session:
        started = time.perf_counter()
        await service.pull(session, state, viewer, service.collection(name), token, limit)
        return time.perf_counter() - started


async def first_replication(
    http: httpx.AsyncClient, headers: dict[str, str], state: AppState, viewer: Viewer, limit: int
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Every collection from a null checkpoint to its first short page, as RxDB pulls."""
    collections: dict[str, dict[str, Any]] = {}
    checkpoints: dict[str, str] = {}
    for name in COLLECTIONS:
        documents = trips = raw_bytes = gz_bytes = 0
        server = wall = 0.0
        checkpoint: str | None = None
        while True:
            body = {
                "query": query(name),
                "variables": {"checkpoint": {"token": checkpoint} if checkpoint else None, "limit": limit},
            }
            # The server's own time on the same call (the request after it repeats it over HTTP).
            took = await timed_pull(state, viewer, name, checkpoint, limit)
            server += took
            if os.environ.get("BENCH_DEBUG"):
                print(name, round(took * 1000, 1), file=sys.stderr)
            started = time.perf_counter()
            response = await http.post("/graphql", json=body, headers=headers)
            wall += time.perf_counter() - started
            trips += 1
            raw_bytes += len(response.content)
            gz_bytes += len(gzip.compress(response.content))
            answer = response.json()["data"][f"pull{name}"]
            documents += len(answer["documents"])
            checkpoint = answer["checkpoint"]["token"]
            if len(answer["documents"]) < limit:
                break
        assert checkpoint is not None
        checkpoints[name] = checkpoint
        collections[name] = {
            "documents": documents, "round_trips": trips, "bytes": raw_bytes, "gzip_bytes": gz_bytes,
            "server_ms": server * 1000, "http_ms": wall * 1000,
        }  # fmt: skip
    return collections, checkpoints


async def replicate(state: AppState, viewer: Viewer, token: str, limit: int, runs: int) -> dict[str, Any]:
    app = create_app(state.settings, state)
    transport = httpx.ASGITransport(app=app)
    figures: dict[str, Any] = {}
    async with httpx.AsyncClient(transport=transport, base_url="http://yibao.bench") as http:
        headers = {"authorization": f"Bearer {token}", "accept": "application/graphql-response+json"}
        results = [await first_replication(http, headers, state, viewer, limit) for _ in range(runs)]
    checkpoints = results[-1][1]
    collections = {
        name: {
            **results[-1][0][name],
            "server_ms": round(statistics.median(r[0][name]["server_ms"] for r in results), 1),
            "http_ms": round(statistics.median(r[0][name]["http_ms"] for r in results), 1),
        }
        for name in COLLECTIONS
    }
    figures["collections"] = collections
    totals = collections.values()
    figures["first"] = {
        "runs": runs,
        "documents": sum(c["documents"] for c in totals),
        "round_trips": sum(c["round_trips"] for c in totals),
        "bytes": sum(c["bytes"] for c in totals),
        "gzip_bytes": sum(c["gzip_bytes"] for c in totals),
        "server_ms_median": round(
            statistics.median(sum(r[0][n]["server_ms"] for n in COLLECTIONS) for r in results), 1
        ),
        "http_ms_median": round(
            statistics.median(sum(r[0][n]["http_ms"] for n in COLLECTIONS) for r in results), 1
        ),
    }
    # Incremental with nothing new: one pull per collection from its checkpoint, many times.
    per_pull: list[float] = []
    rounds: list[float] = []
    for _ in range(60):
        round_s = 0.0
        for name in COLLECTIONS:
            took = await timed_pull(state, viewer, name, checkpoints[name], limit)
            per_pull.append(took)
            round_s += took
        rounds.append(round_s)
    per_pull.sort()
    rounds.sort()
    figures["empty"] = {
        "pulls": len(per_pull),
        "per_pull_p50_ms": round(statistics.median(per_pull) * 1000, 2),
        "per_pull_p99_ms": round(per_pull[int(len(per_pull) * 0.99) - 1] * 1000, 2),
        "six_collections_p50_ms": round(statistics.median(rounds) * 1000, 2),
    }
    return figures


def raw_sqlite(path: str, people: list[int]) -> float:
    connection = sqlite3.connect(path)
    try:
        started = time.perf_counter()
        marks = ",".join("?" * len(people))
        for table, column in TABLES.items():
            connection.execute(
                f"SELECT * FROM {table} WHERE {column} IN ({marks}) ORDER BY id", people
            ).fetchall()
        connection.execute(
            "SELECT * FROM family_links WHERE holder_person_id = ? OR relative_person_id = ?",
            (people[0], people[0]),
        ).fetchall()
        return time.perf_counter() - started
    finally:
        connection.close()


async def raw_postgres(url: str, people: list[int]) -> float:
    import asyncpg

    connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        started = time.perf_counter()
        for table, column in TABLES.items():
            await connection.fetch(
                f"SELECT * FROM {table} WHERE {column} = ANY($1::bigint[]) ORDER BY id", people
            )
        await connection.fetch(
            "SELECT * FROM family_links WHERE holder_person_id = $1 OR relative_person_id = $1", people[0]
        )
        return time.perf_counter() - started
    finally:
        await connection.close()


async def main(args: argparse.Namespace) -> dict[str, Any]:
    data = Path(tempfile.mkdtemp(prefix="yibao-bench-mobile-"))
    database = name = None
    if args.postgres:
        name = f"yibao_bench_mobile_{uuid.uuid4().hex[:8]}"
        await _admin_pg(args.postgres, f'CREATE DATABASE "{name}"')
        database = (
            args.postgres.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://") + "/" + name
        )
    settings = Settings(
        data_dir=data, database_url=database, demo_people=args.people, log_json=False, log_level="WARNING"
    )
    try:
        upgrade(settings.resolved_database_url)
        state = AppState.build(settings)
        await load_demo_county(state, people=args.people, seed=settings.demo_seed)
        viewer, token, people = await build(state, args.years)
        if database:
            await _admin_pg(database, "ANALYZE")  # as autovacuum would have, on a database this fresh
        figures = await replicate(state, viewer, token, args.limit, args.runs)
        await state.db.dispose()
        raws = []
        for _ in range(20):
            raws.append(
                await raw_postgres(database, people)
                if database
                else raw_sqlite(str(data / "yibao.db"), people)
            )
        figures["raw_driver_ms"] = round(statistics.median(raws) * 1000, 2)
    finally:
        if args.postgres and name and not os.environ.get("BENCH_KEEP"):
            await _admin_pg(args.postgres, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    figures["database"] = "postgresql" if database else "sqlite"
    figures["limit"] = args.limit
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--postgres", help="a PostgreSQL server URL (a fresh database is made and dropped)")
    parser.add_argument("--people", type=int, default=200)
    parser.add_argument("--years", type=int, default=3)
    parser.add_argument("--limit", type=int, default=50, help="documents per pull (RxDB's batchSize)")
    parser.add_argument("--runs", type=int, default=5, help="first replications (medians reported)")
    print(json.dumps(asyncio.run(main(parser.parse_args())), indent=2, ensure_ascii=False))
