"""A village's first pull and an empty incremental pull through `POST /sync/pull` (issue 9 (b)).

A fresh data dir (SQLite, migrated, demo county) all of whose residents are moved into one village, so
the first pull carries a large village (3,000 residents by default), plus the policy versions, the
issuer keys and the revocation list. The server then runs alone in its own process (one uvicorn worker,
`yibao`'s app factory) and this process, the terminal, enrols through `/sync/enrol` with a key of its
own and pulls over loopback with `Accept-Encoding: gzip`, a fresh client assertion on every request.
Times are what the terminal waits per request on loopback (the server's work plus a loopback round
trip); bytes are the gzip bodies as sent; RSS is the server process's, sampled every 20 ms. The
server's CPU per empty pull (user + system, from /proc, over the empty pulls) is the figure to trust on
a loaded machine, where the waits are the neighbours' as much as the server's.

    .venv/bin/python bench/sync_pull.py                    # --people 3000 --limit 1000 --empty 200
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import update

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import harness  # noqa: E402

from api.demo import load_demo_county  # noqa: E402
from api.migrate import upgrade  # noqa: E402
from api.people.models import Facility, InsuredPerson  # noqa: E402
from api.settings import Settings  # noqa: E402
from api.state import AppState  # noqa: E402
from api.terminals import service as terminals  # noqa: E402
from sync.assertion import make_assertion  # noqa: E402
from sync.vouchers import public_key_to_b64  # noqa: E402

VILLAGE = "340421100001"


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process `pid` (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def prepare(data: Path, people: int) -> str:
    """The data dir with its demo county in one village; returns a one-time enrolment code."""
    settings = Settings(data_dir=data, demo_people=people, log_json=False, log_level="WARNING")
    upgrade(settings.resolved_database_url)
    state = AppState.build(settings)
    await load_demo_county(state, people=people, seed=settings.demo_seed)
    async with state.db.sessionmaker() as session:
        clinic = Facility(
            code="BENCH-CLINIC", name="基准村卫生室", level="village", kind="clinic", region_code="340421",
            village_code=VILLAGE,
        )  # fmt: skip
        session.add(clinic)
        await session.execute(update(InsuredPerson).values(village_code=VILLAGE))
        await session.commit()
        codes = await terminals.demo_enrolment_codes(session, timedelta(hours=1))
    await state.db.dispose()
    return next(code for facility, code, _ in codes if facility.code == "BENCH-CLINIC")


def main(people: int, limit: int, empty: int) -> dict[str, object]:
    data = Path(tempfile.mkdtemp(prefix="yibao-bench-pull-"))
    code = asyncio.run(prepare(data, people))
    port = harness.free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("YIBAO_")}
    env.update(YIBAO_DATA_DIR=str(data), YIBAO_LOG_LEVEL="WARNING")
    server = harness.start_server(harness.uvicorn_cmd("api.app:app_factory", port), env, port, "/healthz")
    base = f"http://127.0.0.1:{port}"
    key = Ed25519PrivateKey.generate()
    try:
        with httpx.Client(base_url=base, timeout=60) as http, harness.PeakRss(server.pid, 0.02) as rss:
            idle_mb = harness.rss_kb(server.pid) / 1024
            enrolled = http.post(
                "/sync/enrol", json={"code": code, "publicKey": public_key_to_b64(key.public_key())}
            ).json()
            terminal_id, audience = enrolled["terminalId"], enrolled["audience"]

            def pull(checkpoint: str | None) -> tuple[dict[str, object], int, float]:
                headers = {
                    "authorization": "Bearer " + make_assertion(key, terminal_id, audience),
                    "accept-encoding": "gzip",
                }
                started = time.perf_counter()
                response = http.post(
                    "/sync/pull", json={"checkpoint": checkpoint, "limit": limit}, headers=headers
                )
                elapsed = time.perf_counter() - started
                assert response.status_code == 200, response.text[:300]
                # Starlette's GZipMiddleware leaves bodies under 500 bytes (an empty pull) as they are.
                return response.json(), int(response.headers["content-length"]), elapsed

            checkpoint = None
            first_s, first_bytes, trips, documents = 0.0, 0, 0, 0
            while True:
                body, wire, elapsed = pull(checkpoint)
                trips += 1
                first_s += elapsed
                first_bytes += wire
                documents += len(body["changes"])  # type: ignore[arg-type]
                checkpoint = body["checkpoint"]  # type: ignore[assignment]
                if not body["hasMore"]:
                    break
            first_peak_mb = rss.peak_mb
            empties = []
            cpu_before = cpu_s(server.pid)
            for _ in range(empty):
                body, _, elapsed = pull(checkpoint)
                assert body["changes"] == [] and not body["hasMore"]
                checkpoint = body["checkpoint"]  # type: ignore[assignment]
                empties.append(elapsed * 1000)
            server_cpu_ms = (cpu_s(server.pid) - cpu_before) / empty * 1000
            empties.sort()
    finally:
        harness.stop_server(server)
    return {
        "residents": people,
        "limit": limit,
        "first_pull_round_trips": trips,
        "first_pull_documents": documents,
        "first_pull_s": round(first_s, 3),
        "first_pull_gzip_bytes": first_bytes,
        "empty_pull_p50_ms": round(statistics.median(empties), 2),
        "empty_pull_p99_ms": round(empties[max(0, int(len(empties) * 0.99) - 1)], 2),
        "empty_pull_server_cpu_ms": round(server_cpu_ms, 2),
        "server_rss_mb_idle": round(idle_mb, 1),
        "server_rss_mb_peak_first_pull": round(first_peak_mb, 1),
        "server_rss_mb_peak": round(rss.peak_mb, 1),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--people", type=int, default=3000)
    parser.add_argument("--limit", type=int, default=1000)
    parser.add_argument("--empty", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = main(args.people, args.limit, args.empty)
    if args.json:
        print(json.dumps(result))
    else:
        for name, value in result.items():
            print(f"{name:28} {value}")
