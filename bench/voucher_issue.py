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
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from harness import BENCH, free_port, login, run_load_process, start_server, stop_server, uvicorn_cmd

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
    port = free_port()
    server = start_server(uvicorn_cmd("api.app:app_factory", port), env, port, "/healthz")
    try:
        token = login(port)
        headers = {"authorization": f"Bearer {token}"}
        graphql = run_load_process(
            f"http://127.0.0.1:{port}/graphql",
            [{"query": MUTATION}],
            args.connections,
            args.requests,
            headers=headers,
        )
    finally:
        stop_server(server)

    bare_port = free_port()
    bare_cmd = uvicorn_cmd("voucher_issue:bare_app", bare_port, app_dir=BENCH)
    server = start_server(bare_cmd, env, bare_port, "/healthz")
    try:  # the bare app ignores the token; it is sent so both sides carry the same headers
        bare = run_load_process(
            f"http://127.0.0.1:{bare_port}/bare", [{}], args.connections, args.requests, headers=headers
        )
    finally:
        stop_server(server)

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
