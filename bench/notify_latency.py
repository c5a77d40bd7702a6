"""Notification latency across workers (issue 11): from the commit of a notification to its arrival at
`notificationAdded` subscribers connected to the workers of a two-worker server on PostgreSQL.

A fresh PostgreSQL database (created here, dropped afterwards) gets the migrations and a small demo
county from `yibao serve --workers 2`; this process logs in as the demo `resident`, opens K WebSockets
(graphql-transport-ws, each a new connection, so the kernel spreads them over both workers) and
subscribes on each. Then, N times, one at a time: it writes a notification through
`api.notifications.service.notify` and commits it on its own connection (neither worker's), and waits
until every subscriber has it. The NOTIFY travels through PostgreSQL to each worker's LISTEN connection,
the worker reads the row and sends it. Latency = from the start of COMMIT to a subscriber's `next`
message, on this process's monotonic clock (the subscribers' sockets are read by this process too).

Run: .venv/bin/python bench/notify_latency.py [--events 500] [--subscribers 8]
     [--postgres postgresql+asyncpg://postgres@127.0.0.1:5432/postgres] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from harness import HOST, free_port, login, start_server, stop_server

SUBSCRIBE = "subscription { notificationAdded { id title } }"
PROTOCOL = "graphql-transport-ws"


def _url(base: str, database: str, driver: str | None = None) -> str:
    from sqlalchemy.engine import make_url

    url = make_url(base)
    return url.set(database=database, drivername=driver or url.drivername).render_as_string(
        hide_password=False
    )


async def _admin(base: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(_url(base, "postgres", "postgresql"))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


async def _listening_workers(db: Any) -> int:
    from sqlalchemy import text

    async with db.session() as session:
        names = await session.execute(
            text(
                "SELECT application_name FROM pg_stat_activity WHERE datname = current_database() "
                "AND application_name LIKE 'yibao-notifications %'"
            )
        )
        return len({name for name in names.scalars() if not name.endswith(f" {os.getpid()}")})


async def measure(
    url: str, port: int, token: str, events: int, subscribers: int, warmup: int
) -> dict[str, Any]:
    import httpx
    from websockets.asyncio.client import connect

    import api.models  # noqa: F401 - every table, so the notification's foreign keys resolve
    from api.db import Database
    from api.notifications import service
    from api.settings import Settings

    db = Database(Settings(database_url=url))
    async with httpx.AsyncClient() as http:
        me = (
            await http.post(
                f"http://{HOST}:{port}/graphql",
                json={"query": "{ me { id } }"},
                headers={"authorization": f"Bearer {token}"},
            )
        ).json()
    person_id = int(me["data"]["me"]["id"])
    deadline = time.monotonic() + 60
    while await _listening_workers(db) < 2:  # both workers LISTEN
        if time.monotonic() > deadline:
            raise RuntimeError("the two workers never both listened")
        await asyncio.sleep(0.1)

    sockets = []
    for i in range(subscribers):
        ws = await connect(f"ws://{HOST}:{port}/graphql", subprotocols=[PROTOCOL])  # type: ignore[list-item]
        await ws.send(
            json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}})
        )
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        await ws.send(json.dumps({"id": f"s{i}", "type": "subscribe", "payload": {"query": SUBSCRIBE}}))
        sockets.append(ws)

    arrivals: dict[int, list[float]] = {}
    waiting: dict[int, asyncio.Event] = {}

    async def reader(ws: Any) -> None:
        async for raw in ws:
            now = time.perf_counter()
            message = json.loads(raw)
            if message.get("type") != "next":
                raise RuntimeError(f"subscription failed: {message}")
            notification_id = int(message["payload"]["data"]["notificationAdded"]["id"])
            got = arrivals.setdefault(notification_id, [])
            got.append(now)
            if len(got) == subscribers and notification_id in waiting:
                waiting[notification_id].set()

    readers = [asyncio.create_task(reader(ws)) for ws in sockets]

    async def one(title: str) -> tuple[int, float, float]:
        async with db.sessionmaker() as session:
            row = await service.notify(session, person_id, "bench.latency", title, "通知延迟测量")
            assert row.id is not None
            waiting[row.id] = asyncio.Event()
            start = time.perf_counter()
            await session.commit()
            committed = time.perf_counter()
        return row.id, start, committed

    # Until every subscriber hears one: they are all registered on their workers.
    deadline = time.monotonic() + 60
    while True:
        notification_id, _, _ = await one("就绪探测")
        try:
            await asyncio.wait_for(waiting[notification_id].wait(), 1.0)
            break
        except TimeoutError:
            if time.monotonic() > deadline:
                raise RuntimeError("the subscribers never all heard a notification") from None
    for _ in range(warmup):
        notification_id, _, _ = await one("预热")
        await asyncio.wait_for(waiting[notification_id].wait(), 10)

    latencies: list[float] = []
    slowest: list[float] = []
    commits: list[float] = []
    for n in range(events):
        notification_id, start, committed = await one(f"测量 {n}")
        await asyncio.wait_for(waiting[notification_id].wait(), 10)
        each = [(t - start) * 1000 for t in arrivals[notification_id]]
        latencies += each
        slowest.append(max(each))
        commits.append((committed - start) * 1000)

    for task in readers:
        task.cancel()
    for ws in sockets:
        await ws.close()
    await db.dispose()
    return {
        "events": events,
        "subscribers": subscribers,
        "samples": len(latencies),
        "p50_ms": round(statistics.median(latencies), 2),
        "p99_ms": round(percentile(latencies, 99), 2),
        "max_ms": round(max(latencies), 2),
        "last_subscriber_p50_ms": round(statistics.median(slowest), 2),
        "last_subscriber_p99_ms": round(percentile(slowest, 99), 2),
        "commit_p50_ms": round(statistics.median(commits), 2),
        "commit_p99_ms": round(percentile(commits, 99), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=500)
    parser.add_argument("--subscribers", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument(
        "--postgres",
        default=os.environ.get(
            "YIBAO_BENCH_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
        ),
        help="a server and a role that may create databases (the database named is not used)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    name = f"yibao_bench_{uuid.uuid4().hex[:10]}"
    asyncio.run(_admin(args.postgres, f'CREATE DATABASE "{name}"'))
    url = _url(args.postgres, name)
    port = free_port()
    server = None
    try:
        with tempfile.TemporaryDirectory() as data_dir:
            env = {k: v for k, v in os.environ.items() if not k.startswith("YIBAO_")}
            env.update(
                YIBAO_DATA_DIR=data_dir,
                YIBAO_DATABASE_URL=url,
                YIBAO_DEMO_PEOPLE="60",
                YIBAO_LOG_LEVEL="WARNING",
            )
            yibao = Path(sys.executable).with_name("yibao")
            cmd = [str(yibao), "serve", "--host", HOST, "--port", str(port), "--workers", "2"]
            server = start_server(cmd, env, port, "/healthz", timeout=120)
            os.environ["YIBAO_DATA_DIR"] = data_dir  # this process's Settings: the same keys
            token = login(port)
            result = asyncio.run(measure(url, port, token, args.events, args.subscribers, args.warmup))
            stop_server(server)
            server = None
    finally:
        if server is not None:
            stop_server(server)
        asyncio.run(_admin(args.postgres, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    result["python"] = platform.python_version()
    if args.json:
        print(json.dumps(result))
        return
    print(f"{result['events']} events x {result['subscribers']} subscribers on 2 workers (PostgreSQL)")
    print("| measurement | p50 ms | p99 ms |")
    print("|---|---|---|")
    print(f"| commit → each subscriber | {result['p50_ms']} | {result['p99_ms']} |")
    print(
        f"| commit → last of the {result['subscribers']} | {result['last_subscriber_p50_ms']} | {result['last_subscriber_p99_ms']} |"
    )
    print(f"| the COMMIT itself | {result['commit_p50_ms']} | {result['commit_p99_ms']} |")
    print(f"max {result['max_ms']} ms over {result['samples']} deliveries")


if __name__ == "__main__":
    main()
