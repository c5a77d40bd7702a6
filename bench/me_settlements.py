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
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

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


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _rss_kb(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:  # the server is gone; the run reports what it saw
        return 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def _load(
    url: str, token: str, connections: int, requests: int, body: dict[str, Any], rate: float = 0.0
) -> dict[str, float]:
    """Closed loop (rate 0): every connection sends its next request as soon as the last one answers,
    which measures the most the server can do. Open loop (rate > 0): requests start on a fixed schedule
    of `rate` per second over the connections, whatever the server does, which measures latency at that
    load (a late answer does not hold back the next request, so queueing shows in the figures)."""
    latencies: list[float] = []
    remaining = requests
    errors = 0
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(
        limits=limits, timeout=60, headers={"authorization": f"Bearer {token}"}
    ) as client:

        async def one() -> None:
            nonlocal errors
            started = time.perf_counter()
            response = await client.post(url, json=body)
            latencies.append(time.perf_counter() - started)
            if response.status_code != 200 or "errors" in response.json():
                errors += 1

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                await one()

        for _ in range(min(20, requests)):  # warm-up: caches, connections
            await client.post(url, json=body)
        started = time.perf_counter()
        if rate > 0:
            pending = []
            for n in range(requests):
                delay = started + n / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                pending.append(asyncio.create_task(one()))
            await asyncio.gather(*pending)
        else:
            await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "requests": len(latencies),
        "errors": errors,
        "rps": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
    }


def _run_load(
    url: str, token: str, connections: int, requests: int, body: dict[str, Any], rate: float
) -> dict[str, float]:
    """The load generator runs in its own process, so it does not share the server's interpreter."""
    code = (
        "import asyncio, json, sys; sys.path.insert(0, 'bench'); import me_settlements as m; "
        "a = json.loads(sys.argv[1]); print(json.dumps(asyncio.run(m._load(*a))))"
    )
    args = json.dumps([url, token, connections, requests, body, rate])
    done = subprocess.run([sys.executable, "-c", code, args], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"the load generator failed:\n{done.stderr}")
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def _measure(
    server_cmd: list[str],
    env: dict[str, str],
    port: int,
    path: str,
    token_from: str | None,
    args: argparse.Namespace,
    body: dict[str, Any],
    token: str | None = None,
) -> tuple[dict[str, float], str]:
    server = subprocess.Popen(server_cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = 0
    try:
        for _ in range(200):
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        if token is None:
            login = httpx.post(
                f"http://127.0.0.1:{port}/graphql",
                json={"query": 'mutation { login(provider: "demo", code: "resident") { accessToken } }'},
            ).json()
            token = login["data"]["login"]["accessToken"]
        stop = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not stop.is_set():
                peak = max(peak, _rss_kb(server.pid))
                time.sleep(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            result = _run_load(
                f"http://127.0.0.1:{port}{path}", token, args.connections, args.requests, body, args.rate
            )
        finally:
            stop.set()
            sampler.join()
        result["rss_mb"] = peak / 1024
        return result, token
    finally:
        server.terminate()
        server.wait(timeout=30)


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

    port = _free_port()
    uvicorn = [
        sys.executable,
        "-m",
        "uvicorn",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    graphql, token = _measure(
        [*uvicorn, "--factory", "api.app:app_factory"], env, port, "/graphql", None, args, {"query": QUERY}
    )
    bare_port = _free_port()
    bare_cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        "--host",
        "127.0.0.1",
        "--port",
        str(bare_port),
        "--no-access-log",
        "--log-level",
        "warning",
        "--factory",
        "me_settlements:bare_app",
        "--app-dir",
        "bench",
    ]
    # The bare app has no /healthz or login: it reuses the GraphQL run's token and waits on its port.
    bare, _ = _measure(bare_cmd, env, bare_port, "/bare", None, args, {}, token=token)
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
