"""Issue 3 benchmark: `me { settlements(first: 50) { ... } }` through GraphQL next to a bare Starlette
endpoint that runs the same SQL and returns the same JSON, in one run.

Each server runs alone in its own process (one uvicorn worker, SQLite demo county) while a load
generator in another process keeps N connections busy on 127.0.0.1 for a fixed number of requests.
Reported: requests/s, p50/p99 latency, the server's peak RSS, and the GraphQL/bare throughput ratio.

    .venv/bin/python bench/me_settlements.py                 # 100 connections, 3000 requests each
    .venv/bin/python bench/me_settlements.py --connections 50 --requests 2000 --json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from harness import (
    BENCH,
    LoadResult,
    PeakRss,
    free_port,
    login,
    run_load_process,
    start_server,
    stop_server,
    uvicorn_cmd,
)

QUERY = """{ me { settlements(first: 50) { totalCount pageInfo { hasNextPage endCursor }
  edges { cursor node { id settledAt category totalFen basicFen criticalIllnessFen assistanceFen
  personalAccountFen cashFen policyVersion facility { name level } } } } } }"""


def bare_app() -> Any:
    """The same work without GraphQL: token check, person, page of 51, count, one facility batch."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from api.auth import service as auth_service
    from api.people import service
    from api.settings import Settings
    from api.state import AppState

    state = AppState.build(Settings())

    async def me_settlements(request: Request) -> JSONResponse:
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        async with state.db.sessionmaker() as session:
            viewer = await auth_service.authenticate(session, state.tokens, token)
            assert viewer.person_id is not None
            await service.get_person(session, viewer.person_id)
            page = await service.list_records(
                session,
                state.cursors,
                service.SETTLEMENTS,
                viewer.person_id,
                first=50,
                after=None,
                start=None,
                end=None,
            )
            total = (await session.execute(page.count_query)).scalar_one()
            facilities = await service.facilities_by_ids(
                session, sorted({row.facility_id for row in page.rows})
            )
        by_id = {f.id: f for f in facilities if f is not None}
        edges = [
            {
                "cursor": cursor,
                "node": {
                    "id": str(row.id),
                    "settledAt": row.settled_at.isoformat(),
                    "category": row.category,
                    "totalFen": row.total_fen,
                    "basicFen": row.basic_fen,
                    "criticalIllnessFen": row.critical_illness_fen,
                    "assistanceFen": row.assistance_fen,
                    "personalAccountFen": row.personal_account_fen,
                    "cashFen": row.cash_fen,
                    "policyVersion": row.policy_version,
                    "facility": {"name": by_id[row.facility_id].name, "level": by_id[row.facility_id].level},
                },
            }
            for row, cursor in zip(page.rows, page.cursors, strict=True)
        ]
        return JSONResponse(
            {
                "data": {
                    "me": {
                        "settlements": {
                            "totalCount": total,
                            "pageInfo": {
                                "hasNextPage": page.has_next_page,
                                "endCursor": page.cursors[-1] if page.cursors else None,
                            },
                            "edges": edges,
                        }
                    }
                }
            }
        )

    return Starlette(routes=[Route("/bare", me_settlements, methods=["POST"])])


class Measured(LoadResult):
    rss_mb: float  # the server's peak RSS during the load


def _measure(
    cmd: list[str],
    env: dict[str, str],
    port: int,
    path: str,
    args: argparse.Namespace,
    body: dict[str, Any],
    token: str | None = None,
) -> tuple[Measured, str]:
    """One server alone: start it, log in unless given a token, load it from another process while
    sampling its RSS, stop it."""
    # Any answer on /healthz means ready: the bare app has no such route and answers 404.
    server = start_server(cmd, env, port, "/healthz")
    try:
        if token is None:
            token = login(port)
        with PeakRss(server.pid) as rss:
            result = run_load_process(
                f"http://127.0.0.1:{port}{path}",
                [body],
                args.connections,
                args.requests,
                headers={"authorization": f"Bearer {token}"},
                rate=args.rate,
            )
        return {**result, "rss_mb": rss.peak_mb}, token
    finally:
        stop_server(server)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument(
        "--rate", type=float, default=0.0, help="open loop: requests per second (0: closed loop)"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="yibao-bench-"))
    env = {
        **os.environ,
        "YIBAO_DATA_DIR": str(data_dir),
        "YIBAO_LOG_LEVEL": "WARNING",
        "YIBAO_LOGIN_RATE_LIMIT": "1000",
    }
    yibao = str(Path(sys.executable).with_name("yibao"))
    subprocess.run([yibao, "demo"], env=env, check=True, stdout=subprocess.DEVNULL)

    port = free_port()
    graphql, token = _measure(
        uvicorn_cmd("api.app:app_factory", port), env, port, "/graphql", args, {"query": QUERY}
    )
    bare_port = free_port()
    # The bare app has no login: it reuses the GraphQL run's token.
    bare, _ = _measure(
        uvicorn_cmd("me_settlements:bare_app", bare_port, app_dir=BENCH),
        env,
        bare_port,
        "/bare",
        args,
        {},
        token=token,
    )
    report = {
        "graphql": graphql,
        "bare": bare,
        "ratio": graphql["rps"] / bare["rps"],
        "connections": args.connections,
        "requests": args.requests,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{'':10}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'RSS MB':>10}{'errors':>8}")
    for name in ("graphql", "bare"):
        r = report[name]
        assert isinstance(r, dict)
        print(
            f"{name:10}{r['rps']:>10.0f}{r['p50_ms']:>10.1f}{r['p99_ms']:>10.1f}{r['rss_mb']:>10.0f}{r['errors']:>8.0f}"
        )
    if args.rate:
        print(
            f"open loop at {args.rate:g} req/s over {args.connections} connections, {args.requests} requests each"
        )
    else:
        print(
            f"GraphQL reaches {report['ratio']:.0%} of the bare endpoint's throughput "
            f"(closed loop, {args.connections} connections, {args.requests} requests each)"
        )


if __name__ == "__main__":
    main()
