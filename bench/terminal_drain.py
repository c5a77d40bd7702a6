"""800 clinic terminals reconnecting at once after a 3-day outage (issue 10, benchmark).

Each terminal is a real agent home (terminal.store.Store: SQLite, WAL, synchronous=FULL) driven by the
terminal's own code: enrolled with its own Ed25519 key (terminal.client.SyncClient.enrol), first pull
(terminal.syncer.Syncer), then ~60 settlements recorded offline with terminal.settle.settle (55% by a
fresh e-voucher signed with the server's key, as the seed city's QR share; the rest by card), and
finally `Syncer.run()` (push then pull, with its backoff and jitter) for every terminal at the same
moment. A few driver processes (`--drivers`) each run their share of the terminals in one asyncio
loop, one HTTP connection per terminal.

Measured from the moment every driver is told to go: the time until every outbox is drained and every
terminal has completed its pull; the number of retries the terminals needed; and the server's peak
RSS (the uvicorn master and its workers, summed, sampled every 100 ms). Then checked: every mutation is
on the server exactly once (pushed_mutations = outboxes, settlements = applied + adjusted, one per
client ref) and every terminal holds an answer for each of its mutations.

    .venv/bin/python bench/terminal_drain.py --database sqlite --workers 1
    .venv/bin/python bench/terminal_drain.py --database postgres --workers 2 \\
        --postgres postgresql+asyncpg://postgres@127.0.0.1:5432/postgres
    (--terminals 800 --per-terminal 60 --people 40 --drivers 4; --json for machines)

The data set: the demo county (for policies and the admin account) plus `--terminals` village clinics,
each with its own village of `--people` residents (a tenth of them employees with a personal account).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(ROOT), str(ROOT / "clients" / "terminal")]

import httpx  # noqa: E402
from harness import free_port, rss_kb  # noqa: E402

REGION = "340421"


# ------------------------------------------------------------------------------------------ setup


async def build_world(settings: Any, terminals: int, people: int) -> list[dict[str, Any]]:
    """The demo county, then `terminals` clinics each with a village of `people`; one enrolment code
    per clinic. Returns each terminal's plan: clinic, code, villagers (id, voucher ref, type)."""
    from sqlalchemy import insert, select
    from sqlmodel import col

    from api.demo import load_demo_county
    from api.migrate import upgrade
    from api.people import idnumbers
    from api.people.models import Enrolment, Facility, InsuredPerson, PersonalAccount
    from api.state import AppState
    from api.terminals.service import demo_enrolment_codes
    from api.vouchers.models import VoucherSubject
    from sync.vouchers import new_ref

    upgrade(settings.resolved_database_url)
    state = AppState.build(settings)
    try:
        await load_demo_county(state, people=settings.demo_people, seed=settings.demo_seed)
        async with state.db.session() as session:
            clinics = []
            for n in range(terminals):
                village = f"{REGION}{900 + n // 1000:03d}{n % 1000:03d}"
                clinics.append(
                    {
                        "code": f"BD{n:05d}",
                        "name": f"压测村卫生室{n + 1}",
                        "level": "village",
                        "kind": "clinic",
                        "region_code": REGION,
                        "village_code": village,
                    }
                )
            await session.execute(insert(Facility), clinics)
            rows = (
                await session.execute(
                    select(col(Facility.id), col(Facility.village_code)).where(col(Facility.code).like("BD%"))
                )
            ).all()
            village_of = {village: fid for fid, village in rows}
            plan: dict[int, dict[str, Any]] = {fid: {"clinic": fid, "people": []} for fid, _ in rows}
            batch: list[dict[str, Any]] = []
            kinds: list[tuple[str, str]] = []
            serial = 0
            for village in village_of:
                for k in range(people):
                    # Distinct numbers by construction: (birth day, sequence) is one-to-one with `serial`.
                    birth = dt.date(1950, 1, 1) + dt.timedelta(days=serial % 20_000)
                    first17 = f"{REGION}{birth:%Y%m%d}{serial // 20_000:03d}"
                    serial += 1
                    number = first17 + idnumbers.check_digit(first17)
                    kind = "employee" if k % 10 == 0 else "resident"
                    batch.append(
                        {
                            "ref": uuid.uuid4().hex,
                            "name": "压测居民",
                            "id_number_cipher": state.id_numbers.encrypt(number),
                            "id_number_hash": state.id_numbers.lookup_hash(number),
                            "gender": idnumbers.gender(number),
                            "birth_date": birth,
                            "insurance_type": kind,
                            "region_code": REGION,
                            "village_code": village,
                            "chronic_diseases": [],
                            "two_diseases": [],
                        }
                    )
                    kinds.append((village, kind))
            for start in range(0, len(batch), 2000):
                await session.execute(insert(InsuredPerson), batch[start : start + 2000])
            people_rows = (
                await session.execute(
                    select(
                        col(InsuredPerson.id),
                        col(InsuredPerson.village_code),
                        col(InsuredPerson.insurance_type),
                    )
                    .where(col(InsuredPerson.village_code).in_(list(village_of)))
                    .order_by(col(InsuredPerson.id))
                )
            ).all()
            enrolments, accounts, subjects = [], [], []
            for pid, village, kind in people_rows:
                ref = new_ref().hex()
                enrolments.append(
                    {
                        "person_id": pid,
                        "insurance_type": kind,
                        "region_code": REGION,
                        "start_on": dt.date(2024, 1, 1),
                    }
                )
                if kind == "employee":
                    accounts.append({"person_id": pid, "balance_fen": 300_000})
                subjects.append({"person_id": pid, "ref": ref})
                plan[village_of[village]]["people"].append({"id": pid, "ref": ref, "type": kind})
            for rows_, model in (
                (enrolments, Enrolment),
                (accounts, PersonalAccount),
                (subjects, VoucherSubject),
            ):
                for start in range(0, len(rows_), 2000):
                    await session.execute(insert(model), rows_[start : start + 2000])
            await session.commit()
            issued = await demo_enrolment_codes(session, dt.timedelta(hours=6))
        for facility, code, _ in issued:
            if facility.id in plan:
                plan[facility.id]["code"] = code
        return list(plan.values())
    finally:
        await state.db.dispose()


def tree_rss_kb(pid: int) -> int:
    """RSS of a process and its children (uvicorn's master and workers)."""
    total = rss_kb(pid)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            total += rss_kb(int(entry.name))
    return total


def tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and its children so far (uvicorn's master and workers)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry.name) == pid or int(fields[1]) == pid:
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


class TreeRss:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kb = max(self.peak_kb, tree_rss_kb(self.pid))
            time.sleep(0.1)

    def __enter__(self) -> TreeRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# ----------------------------------------------------------------------------------------- driver


async def drive(plan: dict[str, Any]) -> None:
    """One driver process: prepares its terminals, says READY, waits for GO on stdin, drains."""
    from terminal.client import Identity, SyncClient
    from terminal.keys import load_or_create_key
    from terminal.settle import BillInput, Patient, settle
    from terminal.store import Store
    from terminal.syncer import Backoff, Syncer

    from api.auth.keys import KeyRing
    from api.vouchers.keys import VoucherKeys
    from sync.protocol import DEFAULT_PULL_LIMIT
    from sync.settlement import BillItem
    from sync.vouchers import issue_online_code, public_key_to_b64

    server, workdir, per = plan["server"], Path(plan["workdir"]), plan["perTerminal"]
    kid, signer = VoucherKeys(KeyRing.open(Path(plan["keyDir"]), allow_demo=True)).signer()
    rng = random.Random(plan["seed"])
    limits = httpx.Limits(
        max_connections=len(plan["terminals"]) + 10, max_keepalive_connections=len(plan["terminals"]) + 10
    )
    # The terminal's own defaults (terminal.client): 30 s per request, 10 s to connect.
    http = httpx.AsyncClient(
        timeout=httpx.Timeout(30.0, connect=10.0), limits=limits, headers={"accept-encoding": "gzip"}
    )
    homes: list[tuple[Store, SyncClient]] = []
    gate = asyncio.Semaphore(16)

    async def prepare(t: dict[str, Any]) -> None:
        home = workdir / f"t{t['clinic']}"
        store = Store.open(home, create=True)
        key = load_or_create_key(home)
        client = SyncClient(server, store.clock(), http=http)
        async with gate:
            answer = await Syncer(store, client, attempts=20).retrying(
                lambda: client.enrol(t["code"], public_key_to_b64(key.public_key()))
            )
            village = answer.get("villageCode")
            store.set(
                identity={
                    "server": server,
                    "terminalId": answer["terminalId"],
                    "clinicId": answer["clinicId"],
                    "clinicName": answer.get("clinicName"),
                    "villageCode": village,
                    "regionCode": str(village)[:6],
                    "facilityLevel": "village",
                    "audience": answer["audience"],
                },
                clock=client.clock.to_dict(),
            )
            client.identity = Identity(answer["terminalId"], key, answer["audience"])
            await Syncer(store, client, attempts=20, pull_limit=DEFAULT_PULL_LIMIT).run()
        # The outage: `per` visits settled offline, some people twice or more.
        for n in range(per):
            who = rng.choice(t["people"])
            items = tuple(
                BillItem(
                    rng.randint(500, 30_000),
                    rng.choice(["class_a", "class_a", "class_b", "class_c"]),
                    100 if n % 3 == 0 else 0,
                )
                for _ in range(rng.randint(1, 3))
            )
            items = tuple(
                i if i.item_class == "class_b" else BillItem(i.amount_fen, i.item_class) for i in items
            )
            bill = BillInput("general_outpatient", items, "local", who["type"] == "employee")
            if rng.random() < 0.55:
                code = issue_online_code(
                    signer, kid, bytes.fromhex(who["ref"]), None, dt.datetime.now(dt.UTC), 60
                )
                settle(store, Patient(code=code), bill)
            else:
                settle(store, Patient(person=str(who["id"])), bill)
        homes.append((store, client))

    await asyncio.gather(*(prepare(t) for t in plan["terminals"]))
    print(json.dumps({"ready": True, "terminals": len(homes)}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)

    causes: dict[str, int] = {}
    network: dict[str, int] = {}

    async def drain(store: Store, client: SyncClient) -> dict[str, Any]:
        queued = store.queue_stats()[0]
        waited = [0.0]  # seconds this terminal was told (or chose) to wait before asking again

        def retried(exc: Any, delay: float) -> None:
            cause = f"{exc.details.get('reason')}:{exc.details.get('status', '')}"
            causes[cause] = causes.get(cause, 0) + 1
            if exc.details.get("reason") == "network":
                network[str(exc)[:120]] = network.get(str(exc)[:120], 0) + 1
            waited[0] += delay

        syncer = Syncer(
            store,
            client,
            attempts=1000,
            backoff=Backoff(),  # the terminal's own: full jitter, 0.5 s doubling up to 30 s
            progress=False,
            on_retry=retried,
        )
        report = await syncer.run()
        return {
            "queued": queued,
            "done": time.time(),
            "waitedS": waited[0],
            **report.to_dict(),
            "left": store.queue_stats()[0],
        }

    cpu = time.process_time()
    results = await asyncio.gather(*(drain(s, c) for s, c in homes))
    cpu = time.process_time() - cpu
    await http.aclose()
    for store, _ in homes:
        store.close()
    print(json.dumps({"results": results, "causes": causes, "network": network, "cpuS": cpu}), flush=True)


# ------------------------------------------------------------------------------------------- main


def _spread(values: list[float]) -> dict[str, float]:
    ordered = sorted(values) or [0.0]
    return {
        "median": round(ordered[len(ordered) // 2], 1),
        "p90": round(ordered[int(len(ordered) * 0.9)], 1),
        "max": round(ordered[-1], 1),
    }


async def create_pg(url: str) -> tuple[str, str]:
    import asyncpg
    from sqlalchemy.engine import make_url

    name = f"yibao_bench_drain_{uuid.uuid4().hex[:8]}"
    base = make_url(url)
    conn = await asyncpg.connect(base.set(drivername="postgresql").render_as_string(hide_password=False))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return base.set(database=name).render_as_string(hide_password=False), name


async def drop_pg(url: str, name: str) -> None:
    import asyncpg
    from sqlalchemy.engine import make_url

    conn = await asyncpg.connect(
        make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    )
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def verify(settings: Any, expected: dict[int, int]) -> dict[str, int]:
    """Server side: every terminal's mutations exactly once."""
    from sqlalchemy import func, select
    from sqlmodel import col

    from api.db import Database
    from api.people.models import Settlement
    from api.replication.models import PushedMutation
    from api.terminals.models import Terminal

    db = Database(settings)
    try:
        async with db.session() as session:
            pushed = dict(
                (
                    await session.execute(
                        select(col(PushedMutation.terminal_id), func.count()).group_by(
                            col(PushedMutation.terminal_id)
                        )
                    )
                ).all()
            )
            last = dict((await session.execute(select(col(Terminal.id), col(Terminal.last_seq)))).all())
            settled, distinct = (
                await session.execute(
                    select(func.count(), func.count(func.distinct(col(Settlement.client_ref)))).where(
                        col(Settlement.source) == "terminal"
                    )
                )
            ).one()
            statuses = dict(
                (
                    await session.execute(
                        select(col(PushedMutation.status), func.count()).group_by(col(PushedMutation.status))
                    )
                ).all()
            )
    finally:
        await db.dispose()
    lost = sum(max(0, n - pushed.get(tid, 0)) for tid, n in expected.items())
    wrong_seq = sum(1 for tid, n in expected.items() if last.get(tid) != n)
    return {
        "pushedMutations": sum(pushed.values()),
        "settlements": int(settled),
        "distinctClientRefs": int(distinct),
        "lost": lost,
        "duplicated": int(settled)
        - int(distinct)
        + sum(max(0, pushed.get(t, 0) - n) for t, n in expected.items()),
        "wrongLastSeq": wrong_seq,
        **{f"server_{k}": int(v) for k, v in statuses.items()},
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    from api.settings import Settings

    workdir = Path(tempfile.mkdtemp(prefix="yibao-drain-"))
    data = workdir / "data"
    data.mkdir()
    pg_name = None
    if args.database == "postgres":
        url, pg_name = asyncio.run(create_pg(args.postgres))
    else:
        url = f"sqlite+aiosqlite:///{data / 'yibao.db'}"
    settings = Settings(data_dir=data, database_url=url, demo_people=50, log_json=False)
    server = None
    try:
        started = time.monotonic()
        plans = asyncio.run(build_world(settings, args.terminals, args.people))
        built = time.monotonic() - started
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("YIBAO_")}  # DRAIN_PROFILE passes
        env.update(
            YIBAO_DATA_DIR=str(data),
            YIBAO_DATABASE_URL=url,
            YIBAO_LOG_JSON="false",
            YIBAO_TERMINAL_ENROL_RATE_LIMIT="100000",
        )
        for setting in args.server_setting:  # e.g. sync_max_concurrent=8
            name, _, value = setting.partition("=")
            env[f"YIBAO_{name.upper()}"] = value
        cmd = [
            sys.executable,
            "-m",
            "uvicorn",
            "api.app:app_factory",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
            "--workers",
            str(args.workers),
            "--backlog",
            "4096",
        ]
        with (workdir / "server.log").open("wb") as log:
            server = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=log)
        for _ in range(600):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        homes = workdir / "homes"
        homes.mkdir()
        drivers = []
        for d in range(args.drivers):
            plan = {
                "server": f"http://127.0.0.1:{port}",
                "workdir": str(homes),
                "perTerminal": args.per_terminal,
                "keyDir": str(settings.resolved_key_dir),
                "seed": d,
                "terminals": plans[d :: args.drivers],
            }
            path = workdir / f"plan-{d}.json"
            path.write_text(json.dumps(plan))
            drivers.append(
                subprocess.Popen(
                    [sys.executable, __file__, "--driver", str(path)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                    cwd=ROOT,
                    env=env,
                )
            )
        for driver in drivers:
            line = driver.stdout.readline() if driver.stdout else ""
            if not line or not json.loads(line).get("ready"):
                raise RuntimeError(f"a driver did not get ready: {line!r}")
        prepared = time.monotonic() - started - built
        load_before = os.getloadavg()
        with TreeRss(server.pid) as rss:
            server_cpu = tree_cpu_s(server.pid)
            drivers_cpu_s = 0.0
            go = time.time()
            for driver in drivers:
                assert driver.stdin is not None
                driver.stdin.write("go\n")
                driver.stdin.flush()
            results: list[dict[str, Any]] = []
            causes: dict[str, int] = {}
            network: dict[str, int] = {}
            for driver in drivers:
                out, _ = driver.communicate(timeout=3600)
                answer = json.loads(out.strip().splitlines()[-1])
                results += answer["results"]
                for cause, n in answer["causes"].items():
                    causes[cause] = causes.get(cause, 0) + n
                for what, n in answer["network"].items():
                    network[what] = network.get(what, 0) + n
                drivers_cpu_s += answer["cpuS"]  # each driver's own, from "go" to its last terminal
            server_cpu = tree_cpu_s(server.pid) - server_cpu
        load_after = os.getloadavg()
        drain = max(r["done"] for r in results) - go
        expected: dict[int, int] = {}  # terminal id -> its outbox length, from every home
        from terminal.store import Store

        for home in homes.iterdir():
            store = Store.open(home, check=False)
            try:
                identity = store.identity() or {}
                expected[int(identity["terminalId"])] = int(
                    store.db.execute("SELECT count(*) FROM mutations").fetchone()[0]
                )
            finally:
                store.close()
        checked = asyncio.run(verify(settings, expected))
        queued = sum(r["queued"] for r in results)
        return {
            "database": args.database,
            "workers": args.workers,
            "terminals": len(results),
            "queued": queued,
            "drainS": round(drain, 1),
            "mutationsPerS": round(queued / drain, 1),
            "pushed": sum(r["pushed"] for r in results),
            "applied": sum(r["applied"] for r in results),
            "adjusted": sum(r["adjusted"] for r in results),
            "rejected": sum(r["rejected"] for r in results),
            "left": sum(r["left"] for r in results),
            "pulledAll": all(r["pullComplete"] for r in results),
            "retries": sum(r["retries"] for r in results),
            "retryCauses": causes,
            "networkErrors": network,
            # The last tenth to finish: how long they had been told (or chose) to wait in all.
            "slowestTenthWaitedS": _spread(
                [
                    r["waitedS"]
                    for r in sorted(results, key=lambda r: r["done"])[-max(1, len(results) // 10) :]
                ]
            ),
            "waitedS": _spread([r["waitedS"] for r in results]),
            "slowestTerminalS": round(drain, 1),
            "medianTerminalS": round(sorted(r["done"] - go for r in results)[len(results) // 2], 1),
            "serverPeakRssMb": round(rss.peak_kb / 1024, 1),
            # CPU seconds used during the drain: the server (master and workers; not PostgreSQL's
            # backends) and the drivers (the terminals' own code), against 2 cores x drainS.
            "serverCpuS": round(server_cpu, 1),
            "driversCpuS": round(drivers_cpu_s, 1),
            "loadBefore": [round(x, 2) for x in load_before],
            "loadAfter": [round(x, 2) for x in load_after],
            "setupS": round(built, 1),
            "prepareS": round(prepared, 1),
            **checked,
        }
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
        if pg_name is not None:
            asyncio.run(drop_pg(args.postgres, pg_name))
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--driver", help=argparse.SUPPRESS)
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--postgres", default="postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--terminals", type=int, default=800)
    parser.add_argument("--per-terminal", type=int, default=60)
    parser.add_argument("--people", type=int, default=40, help="residents per village")
    parser.add_argument("--drivers", type=int, default=4)
    parser.add_argument(
        "--server-setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a server setting for the run (api.settings), e.g. sync_max_concurrent=8; repeatable",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.driver:
        profile = os.environ.get("DRAIN_PROFILE")  # a directory: each driver's cProfile stats go there
        if profile:
            import cProfile

            with cProfile.Profile() as prof:
                asyncio.run(drive(json.loads(Path(args.driver).read_text())))
            prof.dump_stats(str(Path(profile) / f"{Path(args.driver).stem}.prof"))
            return
        asyncio.run(drive(json.loads(Path(args.driver).read_text())))
        return
    result = run(args)
    if args.json:
        print(json.dumps(result))
        return
    for key, value in result.items():
        print(f"{key:>22}: {value}")


if __name__ == "__main__":
    main()
