"""Issue 5 benchmark: `issueVoucher { code qrSvg }` through GraphQL next to a bare Starlette endpoint
that signs the same online code with the same key and renders the same SVG, in one run.

The GraphQL side does everything a real request does: token check, the per-account rate limit in the
database, the enrolment check, the person reference, signing, SVG. The bare side only signs and
renders. Each server is one uvicorn worker on 127.0.0.1 (SQLite demo county); the load generator runs
in another process with a fixed number of requests over N keep-alive connections.

    .venv/bin/python bench/voucher_issue.py                        # 20 connections, 2000 requests each
    .venv/bin/python bench/voucher_issue.py --connections 50 --requests 3000 --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

MUTATION = "mutation { issueVoucher { code qrSvg expiresAt } }"


def bare_app() -> Any:
    """Sign + SVG only: the floor any voucher endpoint pays, without GraphQL, auth or database."""
    from datetime import UTC, datetime

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from api.auth.keys import KeyRing
    from api.settings import Settings
    from api.vouchers.keys import VoucherKeys
    from api.vouchers.service import QrCode
    from sync.vouchers import issue_online_code, new_ref

    settings = Settings()
    keys = VoucherKeys(KeyRing.open(settings.resolved_key_dir, allow_demo=True))
    person_ref = new_ref()

    async def issue(request: Request) -> JSONResponse:
        kid, private_key = keys.signer()
        now = int(datetime.now(UTC).timestamp())
        code = issue_online_code(private_key, kid, person_ref, None, now, settings.voucher_ttl_s)
        expires = datetime.fromtimestamp(now + settings.voucher_ttl_s, UTC).isoformat()
        return JSONResponse(
            {"data": {"issueVoucher": {"code": code, "qrSvg": QrCode(code).svg(), "expiresAt": expires}}}
        )

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return Starlette(routes=[Route("/bare", issue, methods=["POST"]), Route("/healthz", healthz)])


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _load(
    url: str, token: str, connections: int, requests: int, body: dict[str, Any]
) -> dict[str, float]:
    latencies: list[float] = []
    remaining = requests
    errors = 0
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    headers = {"authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(limits=limits, timeout=60, headers=headers) as client:

        async def worker() -> None:
            nonlocal remaining, errors
            while remaining > 0:
                remaining -= 1
                started = time.perf_counter()
                response = await client.post(url, json=body)
                latencies.append(time.perf_counter() - started)
                if response.status_code != 200 or "errors" in response.json():
                    errors += 1

        for _ in range(min(20, requests)):  # warm-up
            await client.post(url, json=body)
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "requests": len(latencies),
        "errors": errors,
        "rps": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[max(int(len(latencies) * 0.99) - 1, 0)] * 1000,
    }


def _run_load(
    url: str, token: str, connections: int, requests: int, body: dict[str, Any]
) -> dict[str, float]:
    code = (
        "import asyncio, json, sys; sys.path.insert(0, 'bench'); import voucher_issue as m; "
        "a = json.loads(sys.argv[1]); print(json.dumps(asyncio.run(m._load(*a))))"
    )
    args = json.dumps([url, token, connections, requests, body])
    out = subprocess.run(
        [sys.executable, "-c", code, args], check=True, capture_output=True, text=True
    ).stdout
    result: dict[str, float] = json.loads(out)
    return result


def _serve(cmd: list[str], env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return server
        except httpx.TransportError:
            time.sleep(0.1)
    server.terminate()
    raise RuntimeError(f"server on port {port} did not start")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not 1 <= args.requests <= 100_000 or not 1 <= args.connections <= 500:
        parser.error("bounded runs only: --requests 1..100000, --connections 1..500")

    data_dir = Path(tempfile.mkdtemp(prefix="yibao-bench-"))
    env = {
        **os.environ,
        "YIBAO_DATA_DIR": str(data_dir),
        "YIBAO_LOG_LEVEL": "WARNING",
        "YIBAO_LOGIN_RATE_LIMIT": "1000",
        "YIBAO_VOUCHER_RATE_LIMIT": "1000000",  # the limiter still runs (a DB write per request); it just never trips
        "YIBAO_DEMO_PEOPLE": "200",
    }
    yibao = str(Path(sys.executable).with_name("yibao"))
    subprocess.run([yibao, "migrate"], env=env, check=True, stdout=subprocess.DEVNULL)
    subprocess.run([yibao, "demo"], env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    uvicorn = [
        sys.executable,
        "-m",
        "uvicorn",
        "--host",
        "127.0.0.1",
        "--no-access-log",
        "--log-level",
        "warning",
    ]

    port = _free_port()
    server = _serve([*uvicorn, "--port", str(port), "--factory", "api.app:app_factory"], env, port)
    try:
        login = httpx.post(
            f"http://127.0.0.1:{port}/graphql",
            json={"query": 'mutation { login(provider: "demo", code: "resident") { accessToken } }'},
        ).json()
        token = login["data"]["login"]["accessToken"]
        graphql = _run_load(
            f"http://127.0.0.1:{port}/graphql", token, args.connections, args.requests, {"query": MUTATION}
        )
    finally:
        server.terminate()
        server.wait(timeout=30)

    bare_port = _free_port()
    bare_cmd = [
        *uvicorn,
        "--port",
        str(bare_port),
        "--factory",
        "voucher_issue:bare_app",
        "--app-dir",
        "bench",
    ]
    server = _serve(bare_cmd, env, bare_port)
    try:
        bare = _run_load(f"http://127.0.0.1:{bare_port}/bare", token, args.connections, args.requests, {})
    finally:
        server.terminate()
        server.wait(timeout=30)

    report = {
        "graphql": graphql,
        "bare": bare,
        "ratio": graphql["rps"] / bare["rps"],
        "connections": args.connections,
        "requests": args.requests,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{'':10}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}")
    for name in ("graphql", "bare"):
        r = report[name]
        assert isinstance(r, dict)
        print(f"{name:10}{r['rps']:>10.0f}{r['p50_ms']:>10.1f}{r['p99_ms']:>10.1f}{r['errors']:>8.0f}")
    print(
        f"GraphQL reaches {report['ratio']:.0%} of the bare endpoint's throughput "
        f"({args.connections} connections, {args.requests} requests each)"
    )


if __name__ == "__main__":
    main()
