"""A village's first pull and an empty incremental pull through `POST /sync/pull` (issue 9 (b)).

A fresh data dir (SQLite, migrated, demo county), all of whose residents are moved into one village so
the first pull carries a large village (3,000 residents by default), plus the policy versions, the
issuer keys and the revocation list. One terminal is enrolled through `/sync/enrol` with a key of its
own; every request carries a fresh client assertion. The app runs in this process behind httpx's ASGI
transport, so "server time" is the whole server path (assertion check, queries, JSON, gzip) without a
network or a client process on the same two cores; RSS is this process's, i.e. the server's.

    .venv/bin/python bench/sync_pull.py                    # --people 3000 --limit 1000 --empty 200
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import resource
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

from api.app import create_app  # noqa: E402
from api.demo import load_demo_county  # noqa: E402
from api.migrate import upgrade  # noqa: E402
from api.people.models import Facility, InsuredPerson  # noqa: E402
from api.settings import Settings  # noqa: E402
from api.state import AppState  # noqa: E402
from api.terminals import service as terminals  # noqa: E402
from sync.assertion import make_assertion  # noqa: E402
from sync.vouchers import public_key_to_b64  # noqa: E402

VILLAGE = "340421100001"


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def main(people: int, limit: int, empty: int) -> dict[str, object]:
    data = Path(tempfile.mkdtemp(prefix="yibao-bench-pull-"))
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
        code = next(code for facility, code, _ in codes if facility.code == "BENCH-CLINIC")
    app = create_app(settings, state)
    key = Ed25519PrivateKey.generate()
    base = "http://yibao.bench"
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url=base) as http:
        enrolled = (
            await http.post(
                "/sync/enrol", json={"code": code, "publicKey": public_key_to_b64(key.public_key())}
            )
        ).json()
        terminal_id, audience = enrolled["terminalId"], enrolled["audience"]

        async def pull(checkpoint: str | None) -> tuple[dict[str, object], int, float]:
            headers = {
                "authorization": "Bearer " + make_assertion(key, terminal_id, audience),
                "accept-encoding": "gzip",
            }
            started = time.perf_counter()
            response = await http.post(
                "/sync/pull", json={"checkpoint": checkpoint, "limit": limit}, headers=headers
            )
            elapsed = time.perf_counter() - started
            assert response.status_code == 200, response.text[:300]
            wire = int(response.headers.get("content-length") or len(gzip.compress(response.content)))
            return response.json(), wire, elapsed

        rss_before = rss_mb()
        checkpoint = None
        first_s = 0.0
        first_bytes = 0
        trips = 0
        documents = 0
        while True:
            body, wire, elapsed = await pull(checkpoint)
            trips += 1
            first_s += elapsed
            first_bytes += wire
            documents += len(body["changes"])  # type: ignore[arg-type]
            checkpoint = body["checkpoint"]  # type: ignore[assignment]
            if not body["hasMore"]:
                break
        rss_first = rss_mb()
        empties = []
        for _ in range(empty):
            body, _, elapsed = await pull(checkpoint)
            assert body["changes"] == [] and not body["hasMore"]
            checkpoint = body["checkpoint"]  # type: ignore[assignment]
            empties.append(elapsed * 1000)
        empties.sort()
    await state.db.dispose()
    return {
        "residents": people,
        "limit": limit,
        "first_pull_round_trips": trips,
        "first_pull_documents": documents,
        "first_pull_server_s": round(first_s, 3),
        "first_pull_gzip_bytes": first_bytes,
        "empty_pull_p50_ms": round(statistics.median(empties), 2),
        "empty_pull_p99_ms": round(empties[int(len(empties) * 0.99) - 1], 2),
        "rss_mb_before": round(rss_before, 1),
        "rss_mb_after_first_pull": round(rss_first, 1),
        "rss_mb_peak": round(rss_mb(), 1),
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
    result = asyncio.run(main(args.people, args.limit, args.empty))
    if args.json:
        print(json.dumps(result))
    else:
        for name, value in result.items():
            print(f"{name:28} {value}")
