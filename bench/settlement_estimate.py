"""预结算 over HTTP (issue 4): `estimateSettlement` through GraphQL on a live uvicorn, next to a bare
Starlette endpoint that runs the same service call (same DB reads, same engine) without GraphQL,
authentication or the app's middleware.

Both servers are separate processes on 127.0.0.1 with one uvicorn worker each, on the same SQLite
database (a fresh data dir with the demo county); the load generator is this process (httpx, asyncio,
a fixed number of concurrent clients, a bounded number of requests, rounds alternating bare/GraphQL).

Run: .venv/bin/python bench/settlement_estimate.py [--requests 3000] [--concurrency 16] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

from harness import BENCH, ROOT, free_port, load, login, start_server, stop_server, uvicorn_cmd

ESTIMATE = """query($input: EstimateSettlementInput!) { estimateSettlement(input: $input) {
  policyVersion totalFen compliantFen deductibleFen basicFen criticalIllnessFen assistanceFen
  personalAccountFen cashFen lines yearToDateAfter { year criticalOopFen criticalPaidFen } } }"""
# A small mix of bills, the same for both endpoints: village outpatient, pharmacy, admission.
BILLS: list[dict[str, Any]] = [
    {
        "category": "general_outpatient",
        "facilityLevel": "village",
        "items": [{"amountFen": 6_500}, {"amountFen": 2_000, "itemClass": "class_b", "selfPayPermille": 100}],
    },
    {"category": "pharmacy", "facilityLevel": "primary", "items": [{"amountFen": 12_800}]},
    {
        "category": "inpatient",
        "facilityLevel": "secondary",
        "items": [
            {"amountFen": 420_000},
            {"amountFen": 180_000, "itemClass": "class_b", "selfPayPermille": 100},
            {"amountFen": 25_000, "itemClass": "class_c"},
        ],
    },
]


# ------------------------------------------------------------------------------- bare endpoint


def bare_app() -> Any:
    """POST /estimate {"personId": n, "input": {...}}: the service call the GraphQL resolver makes."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from api.db import Database
    from api.errors import AppError
    from api.settings import Settings
    from api.settlement import service

    db = Database(Settings())

    async def estimate(request: Request) -> JSONResponse:
        body = await request.json()
        data = body["input"]
        req = service.EstimateRequest(
            category=data["category"],
            items=[
                service.ItemInput(i["amountFen"], i.get("itemClass", "class_a"), i.get("selfPayPermille", 0))
                for i in data["items"]
            ],
            facility_level=data.get("facilityLevel"),
        )
        async with db.sessionmaker() as session:
            try:
                e = await service.estimate(session, int(body["personId"]), req)
            except AppError as exc:
                return JSONResponse(exc.as_json(), status_code=422)
        r = e.result
        return JSONResponse(
            {
                "policyVersion": r.policy_version_id,
                "totalFen": r.total_fen,
                "compliantFen": r.compliant_fen,
                "deductibleFen": r.deductible_fen,
                "basicFen": r.basic_fen,
                "criticalIllnessFen": r.critical_illness_fen,
                "assistanceFen": r.assistance_fen,
                "personalAccountFen": r.personal_account_fen,
                "cashFen": r.cash_fen,
                "lines": list(r.lines),
                "yearToDateAfter": {
                    "year": r.ytd.year,
                    "criticalOopFen": r.ytd.critical_oop_fen,
                    "criticalPaidFen": r.ytd.critical_paid_fen,
                },
            }
        )

    return Starlette(routes=[Route("/estimate", estimate, methods=["POST"])])


# ------------------------------------------------------------------------------------- set-up


def prepare(data_dir: Path, people: int) -> int:
    """Migrated database with the demo county; returns the person id of the `resident` login."""
    from sqlalchemy import select
    from sqlmodel import col

    from api.auth.models import Account
    from api.demo import load_demo_county
    from api.migrate import upgrade
    from api.settings import Settings
    from api.state import AppState

    settings = Settings(data_dir=data_dir, demo_people=people)
    upgrade(settings.resolved_database_url)

    async def run() -> int:
        state = AppState.build(settings)
        try:
            await load_demo_county(state, people=people, seed=settings.demo_seed)
            async with state.db.session() as session:
                account = (
                    await session.execute(
                        select(Account).where(
                            col(Account.provider) == "demo", col(Account.subject) == "resident"
                        )
                    )
                ).scalar_one()
            assert account.person_id is not None
            return account.person_id
        finally:
            await state.db.dispose()

    return asyncio.run(run())


def _round(
    url: str, payloads: list[dict[str, Any]], headers: dict[str, str], n: int, concurrency: int
) -> dict[str, float]:
    """One round of `n` requests from this process (no warm-up inside: rounds follow a warm-up call)."""
    r = asyncio.run(load(url, payloads, concurrency, n, headers=headers, warmup=0, request_timeout=30))
    if r["errors"]:  # every answer is checked: a failing endpoint has no throughput to report
        raise RuntimeError(f"{r['errors']} of {n} requests to {url} failed")
    return {"requests": r["requests"], "req_per_s": r["rps"], "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=3000, help="timed requests per round and endpoint")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--people", type=int, default=300, help="demo county size")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="yibao-bench-") as tmp:
        data_dir = Path(tmp)
        person_id = prepare(data_dir, args.people)
        env = {
            **os.environ,
            "YIBAO_DATA_DIR": str(data_dir),
            "YIBAO_LOG_LEVEL": "WARNING",
            "PYTHONPATH": str(ROOT),
        }
        gql_port, bare_port = free_port(), free_port()
        servers = [start_server(uvicorn_cmd("api.app:app_factory", gql_port), env, gql_port, "/healthz")]
        try:
            # The bare app has only POST /estimate: the 405 to the readiness GET shows it serves.
            bare_cmd = uvicorn_cmd("settlement_estimate:bare_app", bare_port, app_dir=BENCH)
            servers.append(start_server(bare_cmd, env, bare_port, "/estimate"))
            gql_base, bare_base = f"http://127.0.0.1:{gql_port}", f"http://127.0.0.1:{bare_port}"
            token = login(gql_port)
            gql_payloads = [{"query": ESTIMATE, "variables": {"input": bill}} for bill in BILLS]
            bare_payloads = [{"personId": person_id, "input": bill} for bill in BILLS]
            targets: dict[str, tuple[str, list[dict[str, Any]], dict[str, str]]] = {
                "bare": (f"{bare_base}/estimate", bare_payloads, {}),
                "graphql": (
                    f"{gql_base}/graphql",
                    gql_payloads,
                    {"authorization": f"Bearer {token}", "accept": "application/graphql-response+json"},
                ),
            }
            for url, payloads, headers in targets.values():  # warm up: imports, caches, connections
                _round(url, payloads, headers, 300, args.concurrency)
            results: dict[str, list[dict[str, float]]] = {"bare": [], "graphql": []}
            for _ in range(args.rounds):
                for name, (url, payloads, headers) in targets.items():
                    results[name].append(_round(url, payloads, headers, args.requests, args.concurrency))
        finally:
            for server in servers:
                stop_server(server, timeout=10)

    best = {name: max(rs, key=lambda r: r["req_per_s"]) for name, rs in results.items()}
    ratio = best["graphql"]["req_per_s"] / best["bare"]["req_per_s"]
    report = {
        "date": dt.date.today().isoformat(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "requests": args.requests,
        "concurrency": args.concurrency,
        "rounds": args.rounds,
        "best": best,
        "all": results,
        "ratio": ratio,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(
        f"{args.rounds} rounds x {args.requests} requests, {args.concurrency} concurrent clients, best round:"
    )
    print(f"{'endpoint':<10} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for name, r in best.items():
        print(f"{name:<10} {r['req_per_s']:>8.0f} {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f}")
    print(f"GraphQL / bare throughput: {ratio:.0%} (target >= 40%)")


if __name__ == "__main__":
    main()
