"""The fault test (issue 10 item 4): real terminal agents against a real server, for many rounds of
SIGKILLs, a misbehaving network, wrong clocks and replayed vouchers; then the server and every
terminal must agree exactly, and the money must add up.

The world: village V with clinics A (terminals T1, T2) and B (T3); village W with clinic C (T4). V's
people are on the rosters of T1-T3; T4 also sees V's residents, by voucher only (not on its roster).
Every agent reaches the server through a FaultyProxy (tests/terminal/proxy.py) in "random" mode.

Each round, from a seeded RNG:
- maybe a terminal's clock jumps (its skew is redrawn within a day either way);
- every terminal settles 0-2 visits: a fresh online or offline voucher, a card, or a voucher already
  shown at another terminal (a replay); each settle process may be SIGKILLed at a random moment;
- some terminals sync (push then pull), with retries; each sync process may be SIGKILLed;
- maybe the server is SIGKILLed at a random moment and restarted.
Round 0 also settles, without faults, a replayed voucher and a pair of visits of one resident at two
clinics that together pass her annual cap, so a run always holds a rejection and an adjustment.

Then the network heals, every terminal syncs until its outbox is empty, and `check` compares
everything (see its docstring). What the driver itself knows is checked too: every settle that printed
a receipt is there (nothing lost), every refusal wrote nothing, a killed settle wrote nothing or one.

Seed and rounds: `run_faults(..., seed, rounds)`. The test runs a bounded number
(YIBAO_FAULT_SEED, YIBAO_FAULT_ROUNDS override it); the long run is a script:

    .venv/bin/python -m tests.terminal.faults --seed 1 --rounds 1000 [--postgres URL] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlmodel import col
from terminal.status import status
from terminal.store import Store

from api.people.models import Settlement
from api.replication.models import PushedMutation
from api.settings import Settings
from api.settlement import service as settlement_service
from api.settlement.models import SettlementAdjustment
from api.state import AppState
from api.terminals.models import Terminal
from sync.settlement import Visit, compute
from tests.terminal.proxy import FaultyProxy
from tests.terminal.world import (
    ROOT,
    TERMINAL,
    Server,
    Villager,
    agent,
    agent_env,
    enrolment_code,
    make_village,
    offline_code,
    online_code,
)

ALLOWED_REFUSALS = {
    "voucher_replayed",  # a code shown twice at one terminal
    "voucher_expired",  # a clock that jumped ahead since the last sync
    "voucher_not_yet_valid",  # ... or back
    "voucher_certificate_not_yet_valid",
    "clock_behind",  # a clock that jumped back since the last sync
    "duplicate_visit",  # the same random bill drawn twice for one person on one day (rare)
}
SPLIT_NAMES = ("basicFen", "criticalIllnessFen", "assistanceFen", "personalAccountFen", "cashFen")


@dataclass
class Tally:
    rounds: int = 0
    settles: int = 0
    receipts: int = 0
    refusals: Counter[str] = field(default_factory=Counter)
    settle_kills: int = 0
    syncs: int = 0
    syncs_ok: int = 0
    syncs_failed: int = 0
    sync_kills: int = 0
    server_kills: int = 0
    clock_jumps: int = 0
    replays_across: int = 0
    proxy_modes: dict[str, int] = field(default_factory=dict)
    applied: int = 0
    adjusted: int = 0
    rejected: int = 0
    reject_reasons: Counter[str] = field(default_factory=Counter)
    adjust_reasons: Counter[str] = field(default_factory=Counter)
    settlements_checked: int = 0
    people_checked: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("refusals", "reject_reasons", "adjust_reasons"):
            data[key] = dict(getattr(self, key))
        return data


@dataclass
class Agent:
    name: str
    home: Path
    clinic: int
    village: str
    skew_s: float = 0.0
    terminal_id: str = ""
    receipts: list[str] = field(default_factory=list)  # mutation ids of settles that printed a receipt
    lock: threading.Lock = field(default_factory=threading.Lock)

    def mutation_count(self) -> int:
        db = sqlite3.connect(self.home / "terminal.db", timeout=30)
        try:
            return int(db.execute("SELECT count(*) FROM mutations").fetchone()[0])
        finally:
            db.close()


class FaultRun:
    def __init__(self, state: AppState, settings: Settings, workdir: Path, *, seed: int, rounds: int) -> None:
        self.state = state
        self.settings = settings
        self.workdir = workdir
        self.seed = seed
        self.rounds = rounds
        self.rng = random.Random(seed)
        self.tally = Tally()
        self.server = Server(settings, workdir)
        self.proxy: FaultyProxy | None = None
        self.agents: list[Agent] = []
        self.v_people: list[Villager] = []
        self.w_people: list[Villager] = []
        self.shown: list[
            tuple[float, str, Villager, str]
        ] = []  # (time, agent, owner, code) of vouchers shown
        self.server_lock = threading.Lock()

    # ------------------------------------------------------------------------------------- setup

    async def setup(self) -> None:
        v = await make_village(self.state, 6, clinics=2, employees=2, assistance={3: "dibao"})
        w = await make_village(self.state, 3, clinics=1, employees=1)
        self.v_people, self.w_people = v.people, w.people
        self.server.start()
        self.proxy = FaultyProxy(self.server.port, seed=self.seed)
        self.proxy.weights = {
            "pass": 10,
            "drop": 1,
            "truncate": 1,
            "gzip": 1,
            "garbage": 1,
            "error": 1,
            "delay": 1,
            "refuse": 1,
            "silent": 0.3,
        }
        self.proxy.delay_s = 1.0
        plan = [
            ("T1", v.clinics[0], v.code),
            ("T2", v.clinics[0], v.code),
            ("T3", v.clinics[1], v.code),
            ("T4", w.clinics[0], w.code),
        ]
        for name, clinic, village in plan:
            a = Agent(name, self.workdir / name, clinic, village)
            code = await enrolment_code(self.state, clinic)
            run = agent(a.home, "enrol", "--server", self.proxy.url, "--code", code)
            if run.status != 0:
                raise AssertionError(f"{name} did not enrol: {run.stdout} {run.stderr}")
            a.terminal_id = run.json["terminalId"]
            self.agents.append(a)
        self.proxy.mode = "random"

    def close(self) -> None:
        if self.proxy is not None:
            self.tally.proxy_modes = dict(self.proxy.seen)
            self.proxy.close()
        self.server.stop()

    # ------------------------------------------------------------------------------------ actions

    def _code(self, a: Agent, who: Villager, rng: random.Random, *, replay: bool) -> tuple[Villager, str]:
        """A voucher for `who`, or (a replay) one already shown at another terminal, with its owner."""
        now = time.time()
        if replay:
            fresh = [(owner, code) for t, name, owner, code in self.shown if name != a.name and now - t < 45]
            if fresh:
                self.tally.replays_across += 1
                return rng.choice(fresh)
        code = online_code(self.state, who) if rng.random() < 0.6 else offline_code(self.state, who)
        self.shown = [s for s in self.shown if now - s[0] < 60] + [(now, a.name, who, code)]
        return who, code

    def _bill(self, rng: random.Random) -> list[str]:
        if rng.random() < 0.12:  # an admission: deductibles, 大病 thresholds
            return [
                "--category",
                "inpatient",
                "--item",
                f"甲:{rng.randint(2_000, 30_000)}.{rng.randint(0, 99):02d}",
                "--item",
                f"乙:{rng.randint(100, 3_000)}:100",
            ]
        items = []
        for _ in range(rng.randint(1, 3)):
            cls = rng.choice(["甲", "甲", "乙", "丙"])
            amount = f"{rng.randint(5, 400)}.{rng.randint(0, 99):02d}"
            items += ["--item", f"{cls}:{amount}:100" if cls == "乙" else f"{cls}:{amount}"]
        if rng.random() < 0.2:
            items.append("--no-personal-account")
        return items

    def settle(
        self,
        a: Agent,
        rng: random.Random,
        *,
        kill: bool,
        forced: tuple[Villager, str | None, list[str]] | None = None,
    ) -> None:
        if forced is not None:
            who, code, bill = forced
        else:
            home_people, others = (
                (self.v_people, self.w_people)
                if a.village == self.v_people[0].village
                else (self.w_people, self.v_people)
            )
            who = rng.choice(home_people if rng.random() < 0.8 else others)
            draw = rng.random()
            code = None
            if who.village != a.village or draw >= 0.25:  # a card only for the clinic's own villagers
                who, code = self._code(a, who, rng, replay=draw > 0.85)
            bill = self._bill(rng)
        args = (
            ["--voucher", code, "--insurance-type", who.insurance_type] if code else ["--person", str(who.id)]
        )
        delay = rng.uniform(0.05, 1.6) if kill else None
        with a.lock:
            before = a.mutation_count()
            self.tally.settles += 1
            process = subprocess.Popen(
                [*TERMINAL, "--home", str(a.home), "--json", "settle", *args, *bill],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=agent_env(a.skew_s),
                cwd=ROOT,
            )
            try:
                out, err = process.communicate(timeout=delay)
                killed = False
            except subprocess.TimeoutExpired:
                process.send_signal(signal.SIGKILL)
                out, err = process.communicate()
                killed = True
            after = a.mutation_count()
        if killed:
            self.tally.settle_kills += 1
            assert after - before in (0, 1), f"{a.name}: a killed settle wrote {after - before} mutations"
            if after - before == 1 or not out.strip():
                return
        result = json.loads(out.strip().splitlines()[-1]) if out.strip() else None
        if process.returncode == 0 and result and "mutationId" in result:
            assert after == before + 1, f"{a.name}: a receipt without exactly one mutation"
            a.receipts.append(result["mutationId"])
            self.tally.receipts += 1
            return
        assert result is not None and result.get("ok") is False, f"{a.name}: settle failed oddly: {out} {err}"
        reason = result["error"].get("reason")
        assert reason in ALLOWED_REFUSALS, f"{a.name}: unexpected refusal {result} (skew {a.skew_s})"
        assert after == before, f"{a.name}: a refused settle wrote something"
        self.tally.refusals[reason] += 1

    def sync(self, a: Agent, rng: random.Random, *, kill: bool, attempts: int = 2) -> int | None:
        delay = rng.uniform(0.3, 4.0) if kill else None
        self.tally.syncs += 1
        process = subprocess.Popen(
            [
                *TERMINAL,
                "--home",
                str(a.home),
                "--json",
                "sync",
                "--attempts",
                str(attempts),
                "--timeout",
                "3",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=agent_env(a.skew_s),
            cwd=ROOT,
        )
        try:
            out, err = process.communicate(timeout=delay if delay is not None else 300)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            process.communicate()
            self.tally.sync_kills += 1
            return None
        if process.returncode == 0:
            self.tally.syncs_ok += 1
        else:
            self.tally.syncs_failed += 1
            last = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
            code = last.get("error", {}).get("code")
            reason = last.get("error", {}).get("reason")
            # Down, or the lock of a sync that is still running: anything else is a failure.
            assert process.returncode == 4 or (process.returncode == 2 and reason == "sync_running"), (
                f"{a.name}: sync failed with {process.returncode} {code} {reason}: {out} {err}"
            )
        return process.returncode

    def kill_server(self, rng: random.Random) -> None:
        time.sleep(rng.uniform(0.2, 3.0))
        with self.server_lock:
            self.server.kill()
            self.tally.server_kills += 1
            time.sleep(rng.uniform(0.0, 1.0))
            self.server.start()

    # ------------------------------------------------------------------------------------- rounds

    def forced_round(self) -> None:
        """Settled with no faults before the first round: a voucher shown at two terminals (the second
        push of it is rejected) and one resident's card at two clinics whose amounts together pass her
        annual cap (the second push is adjusted), whichever pushes first."""
        t1, _, t3, _ = self.agents
        rng = random.Random(self.seed)
        capped, shown = [p for p in self.v_people if p.insurance_type == "resident"][:2]
        code = online_code(self.state, shown)
        self.settle(t1, rng, kill=False, forced=(shown, code, ["--item", "甲:20"]))
        self.settle(t3, rng, kill=False, forced=(shown, code, ["--item", "甲:22"]))
        self.settle(t1, rng, kill=False, forced=(capped, None, ["--item", "甲:500"]))
        self.settle(t3, rng, kill=False, forced=(capped, None, ["--item", "甲:510"]))

    def round(self, n: int) -> None:
        rng = random.Random(self.rng.getrandbits(64))
        self.tally.rounds += 1
        if rng.random() < 0.2:
            a = rng.choice(self.agents)
            a.skew_s = float(rng.choice([0, 0, rng.randint(-86_400, 86_400), rng.randint(-600, 600)]))
            self.tally.clock_jumps += 1
        jobs: list[Callable[[], Any]] = []
        for a in self.agents:
            count = rng.choice([0, 1, 1, 2])
            seeds = [rng.getrandbits(64) for _ in range(count)]
            kills = [rng.random() < 0.2 for _ in range(count)]
            sync_after = rng.random() < 0.55
            sync_kill = rng.random() < 0.3
            sync_seed = rng.getrandbits(64)

            def work(
                a: Agent = a,
                seeds: list[int] = seeds,
                kills: list[bool] = kills,
                sync_after: bool = sync_after,
                sync_kill: bool = sync_kill,
                sync_seed: int = sync_seed,
            ) -> None:
                for s, k in zip(seeds, kills, strict=True):
                    self.settle(a, random.Random(s), kill=k)
                if sync_after:
                    self.sync(a, random.Random(sync_seed), kill=sync_kill)

            jobs.append(work)
        if rng.random() < 0.3:
            server_seed = rng.getrandbits(64)
            jobs.append(lambda: self.kill_server(random.Random(server_seed)))
        with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
            for future in [pool.submit(job) for job in jobs]:
                future.result()
        if not self.server.running:
            self.server.start()

    def heal(self) -> None:
        assert self.proxy is not None
        self.proxy.mode = "pass"
        if not self.server.running:
            self.server.start()
        for _ in range(2):  # twice: the second pull brings what the others pushed after one's first
            for a in self.agents:
                for attempt in range(5):
                    run = agent(a.home, "sync", "--attempts", "5", skew_s=a.skew_s)
                    if run.status == 0 and run.json["queueLeft"] == 0 and run.json["pullComplete"]:
                        break
                    assert attempt < 4, f"{a.name} could not sync after the faults: {run.stdout} {run.stderr}"

    # -------------------------------------------------------------------------------------- check

    async def check(self) -> None:
        """Exactly the same on both sides, for every terminal:
        - its mutations are seqs 1..n with no gap, every one answered, and every receipt it printed is
          among them; the server's pushed_mutations for it are the same ids, seqs, kinds, payloads,
          and answers (status, reason and the whole stored result), and its last_seq is n;
        - each applied or adjusted mutation has exactly one settlement on the server (client_ref = the
          mutation id, this terminal) with the amounts the terminal stored; a rejected one has none;
          an adjusted one has exactly one adjustment whose reason and deltas the terminal stored;
        - every terminal of a clinic holds exactly the clinic's rejected and adjusted mutations as push
          issues, as the server keeps them.
        And the money: no voucher settled twice; per person and year, the server's year-to-date totals
        are the sums over their settlements, those sums are what the terminals hold as answers, the
        terminals' rosters carry the server's totals, and replaying the person's settlements in the
        order they were applied through the engine gives every stored amount to the fen."""
        async with self.state.db.session() as session:
            policies = await settlement_service.policy_set(session)
            by_clinic: dict[int, list[PushedMutation]] = {}
            answered_by_person: dict[int, list[dict[str, int]]] = {}
            for a in self.agents:
                terminal = await session.get(Terminal, int(a.terminal_id))
                assert terminal is not None
                rows = list(
                    (
                        await session.execute(
                            select(PushedMutation)
                            .where(col(PushedMutation.terminal_id) == terminal.id)
                            .order_by(col(PushedMutation.seq))
                        )
                    ).scalars()
                )
                by_clinic.setdefault(a.clinic, []).extend(
                    r for r in rows if r.status in ("rejected", "adjusted")
                )
                local = _local(a.home)
                seqs = [m["seq"] for m in local["mutations"]]
                assert seqs == list(range(1, len(seqs) + 1)), f"{a.name}: outbox seqs {seqs}"
                assert all(m["answer"] is not None for m in local["mutations"]), f"{a.name}: unanswered left"
                assert set(a.receipts) <= {m["id"] for m in local["mutations"]}, (
                    f"{a.name}: a printed settlement is gone"
                )
                assert terminal.last_seq == len(seqs), (
                    f"{a.name}: server last_seq {terminal.last_seq} != {len(seqs)}"
                )
                assert [(r.mutation_id, r.seq, r.kind) for r in rows] == [
                    (m["id"], m["seq"], m["kind"]) for m in local["mutations"]
                ]
                for row, mine in zip(rows, local["mutations"], strict=True):
                    assert row.payload == mine["payload"], f"{a.name}: payload of {row.seq} differs"
                    assert row.result == mine["answer"], f"{a.name}: answer of {row.seq} differs"
                    assert row.status == mine["answer"]["status"] and row.reason == (
                        mine["answer"].get("reason") or (mine["answer"].get("adjustment") or {}).get("reason")
                    )
                settled = {
                    s.client_ref: s
                    for s in (
                        await session.execute(
                            select(Settlement).where(col(Settlement.terminal_id) == terminal.id)
                        )
                    ).scalars()
                }
                adjustments = {
                    adj.settlement_id: adj
                    for adj in (
                        await session.execute(
                            select(SettlementAdjustment).where(
                                col(SettlementAdjustment.terminal_id) == terminal.id
                            )
                        )
                    ).scalars()
                }
                assert len(settled) == sum(1 for r in rows if r.status != "rejected")
                for s in local["settlements"]:
                    answer = json.loads(s["server"])
                    assert s["status"] == answer["status"]
                    self.tally.settlements_checked += 1
                    if s["status"] == "rejected":
                        assert s["mutation_id"] not in settled
                        self.tally.rejected += 1
                        self.tally.reject_reasons[answer["reason"]] += 1
                        continue
                    row = settled[s["mutation_id"]]
                    server = answer["settlement"]
                    stored = {
                        "basicFen": row.basic_fen,
                        "criticalIllnessFen": row.critical_illness_fen,
                        "assistanceFen": row.assistance_fen,
                        "personalAccountFen": row.personal_account_fen,
                        "cashFen": row.cash_fen,
                    }
                    assert {k: server[k] for k in SPLIT_NAMES} == stored and server[
                        "totalFen"
                    ] == row.total_fen
                    assert row.source == "terminal" and server["id"] == str(row.id)
                    answered_by_person.setdefault(row.person_id, []).append(stored)
                    adjustment = adjustments.get(row.id)
                    if s["status"] == "adjusted":
                        self.tally.adjusted += 1
                        assert adjustment is not None, f"{a.name}: adjusted without an adjustment row"
                        deltas = answer["adjustment"]["deltas"]
                        self.tally.adjust_reasons[answer["adjustment"]["reason"]] += 1
                        assert adjustment.reason == answer["adjustment"]["reason"]
                        assert deltas == {
                            "basicFen": adjustment.basic_delta_fen,
                            "criticalIllnessFen": adjustment.critical_illness_delta_fen,
                            "assistanceFen": adjustment.assistance_delta_fen,
                            "personalAccountFen": adjustment.personal_account_delta_fen,
                            "cashFen": adjustment.cash_delta_fen,
                        }
                        terminal_split = json.loads(s["terminal_split"])
                        assert {k: terminal_split[k] + deltas[k] for k in SPLIT_NAMES} == stored
                    else:
                        self.tally.applied += 1
                        assert adjustment is None
                        assert json.loads(s["terminal_split"]) == stored
            # Push issues: each terminal of a clinic holds the clinic's, as the server keeps them.
            for a in self.agents:
                issues = {i["id"]: i for i in _local(a.home)["issues"]}
                expected = {str(r.id): r for r in by_clinic.get(a.clinic, [])}
                assert set(issues) == set(expected), (
                    f"{a.name}: push issues {sorted(issues)} != {sorted(expected)}"
                )
                for key, row in expected.items():
                    data = issues[key]["data"]
                    assert (data["mutationId"], data["status"], data["reason"], data["result"]) == (
                        row.mutation_id,
                        row.status,
                        row.reason,
                        row.result,
                    )
            # What `status` shows each clinic: its own adjustments and rejections, and its colleagues'.
            for a in self.agents:
                store = Store.open(a.home)
                try:
                    shown = status(store)
                finally:
                    store.close()
                clinic_rows = by_clinic.get(a.clinic, [])
                own = [r for r in clinic_rows if r.terminal_id == int(a.terminal_id)]
                assert sorted(x["mutationId"] for x in shown["adjustments"]) == sorted(
                    r.mutation_id for r in own if r.status == "adjusted"
                ), a.name
                assert sorted(x["mutationId"] for x in shown["rejections"]) == sorted(
                    r.mutation_id for r in own if r.status == "rejected"
                ), a.name
                assert all(x["message"] for x in shown["adjustments"] + shown["rejections"]), a.name
                assert sorted(
                    (x["terminalId"], x["seq"], x["status"], x["reason"]) for x in shown["clinicIssues"]
                ) == sorted(
                    (str(r.terminal_id), r.seq, r.status, r.reason)
                    for r in clinic_rows
                    if r.terminal_id != int(a.terminal_id)
                ), a.name
                assert shown["queue"]["length"] == 0 and shown["lastError"] is None, a.name
            # The money.
            people = [p.id for p in [*self.v_people, *self.w_people]]
            rows = list(
                (
                    await session.execute(
                        select(Settlement)
                        .where(col(Settlement.person_id).in_(people))
                        .order_by(col(Settlement.id))
                    )
                ).scalars()
            )
            refs = [s.voucher_ref for s in rows if s.voucher_ref is not None]
            assert len(refs) == len(set(refs)), "a voucher was settled twice"
            rosters = {a.name: _local(a.home)["roster"] for a in self.agents}
            for person in people:
                mine = [s for s in rows if s.person_id == person and s.voided_at is None]
                years = {s.year for s in mine} | {dt.datetime.now(dt.timezone(dt.timedelta(hours=8))).year}
                for year in years:
                    of_year = [s for s in mine if s.year == year]
                    ytd = await settlement_service.year_to_date(session, person, year)
                    assert sum(ytd.basic_paid_fen.values()) == sum(s.basic_fen for s in of_year)
                    assert sum(ytd.deductible_used_fen.values()) == sum(s.deductible_fen for s in of_year)
                    assert ytd.critical_paid_fen == sum(s.critical_illness_fen for s in of_year)
                    assert ytd.assistance_paid_fen == sum(s.assistance_fen for s in of_year)
                    for name, roster in rosters.items():
                        entry = roster.get(str(person))
                        if entry is not None and entry["yearToDate"]["year"] == year:
                            held = entry["yearToDate"]
                            assert sum(held["basicPaidFen"].values()) == sum(ytd.basic_paid_fen.values()), (
                                name
                            )
                            assert held["criticalPaidFen"] == ytd.critical_paid_fen, name
                            assert held["assistancePaidFen"] == ytd.assistance_paid_fen, name
                # What the terminals were answered, summed, is what the server paid.
                answered = answered_by_person.get(person, [])
                for name in SPLIT_NAMES:
                    column = {
                        "basicFen": "basic_fen",
                        "criticalIllnessFen": "critical_illness_fen",
                        "assistanceFen": "assistance_fen",
                        "personalAccountFen": "personal_account_fen",
                        "cashFen": "cash_fen",
                    }[name]
                    assert sum(x[name] for x in answered) == sum(getattr(s, column) for s in mine)
                # Replayed in the order applied, the engine gives every stored amount.
                running: dict[int, Any] = {}
                for s in mine:
                    assert s.visit is not None
                    visit = Visit.from_dict(s.visit)
                    result = compute(policies, visit, running.get(s.year), today=visit.visit_date)
                    running[s.year] = result.ytd
                    assert (
                        result.basic_fen,
                        result.critical_illness_fen,
                        result.assistance_fen,
                        result.personal_account_fen,
                        result.cash_fen,
                    ) == (
                        s.basic_fen,
                        s.critical_illness_fen,
                        s.assistance_fen,
                        s.personal_account_fen,
                        s.cash_fen,
                    ), f"person {person}: settlement {s.id} does not replay"
                self.tally.people_checked += 1


def _local(home: Path) -> dict[str, Any]:
    db = sqlite3.connect(home / "terminal.db", timeout=30)
    db.row_factory = sqlite3.Row
    try:
        mutations = [
            {
                "seq": r["seq"],
                "id": r["id"],
                "kind": r["kind"],
                "payload": json.loads(r["payload"]),
                "answer": json.loads(r["answer"]) if r["answer"] else None,
            }
            for r in db.execute("SELECT * FROM mutations ORDER BY seq")
        ]
        settlements = [dict(r) for r in db.execute("SELECT * FROM settlements ORDER BY seq")]
        issues = [
            {"id": r["id"], "data": json.loads(r["data"])} for r in db.execute("SELECT * FROM push_issues")
        ]
        roster = {r["person_id"]: json.loads(r["data"]) for r in db.execute("SELECT * FROM roster")}
    finally:
        db.close()
    return {"mutations": mutations, "settlements": settlements, "issues": issues, "roster": roster}


async def run_faults(
    state: AppState,
    settings: Settings,
    workdir: Path,
    *,
    seed: int,
    rounds: int,
    log: Callable[[str], None] | None = None,
) -> Tally:
    started = time.monotonic()
    run = FaultRun(state, settings, workdir, seed=seed, rounds=rounds)
    try:
        await run.setup()
        run.forced_round()
        for n in range(rounds):
            await asyncio.to_thread(run.round, n)
            if log is not None and (n + 1) % 10 == 0:
                log(f"round {n + 1}/{rounds}: {run.tally.to_dict()}")
        await asyncio.to_thread(run.heal)
        await run.check()
    finally:
        run.close()
        run.tally.seconds = round(time.monotonic() - started, 1)
    return run.tally


# ---------------------------------------------------------------------------- the long run, a script


async def _main(argv: list[str] | None = None) -> int:
    from api.demo import load_demo_county
    from api.migrate import upgrade

    parser = argparse.ArgumentParser(description="the terminal fault test, for as many rounds as you like")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=1000)
    parser.add_argument("--postgres", help="a PostgreSQL URL (postgresql+asyncpg://...) of an empty database")
    parser.add_argument("--json", type=Path, help="write the tally here")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="yibao-faults-"))
    data = workdir / "data"
    data.mkdir()
    url = args.postgres or f"sqlite+aiosqlite:///{data / 'yibao.db'}"
    settings = Settings(
        data_dir=data, database_url=url, demo_people=60, login_rate_limit=10_000, log_json=False
    )
    upgrade(settings.resolved_database_url)
    state = AppState.build(settings)
    try:
        await load_demo_county(state, people=settings.demo_people, seed=settings.demo_seed)
        tally = await run_faults(
            state, settings, workdir, seed=args.seed, rounds=args.rounds, log=lambda s: print(s, flush=True)
        )
    finally:
        await state.db.dispose()
    print(json.dumps(tally.to_dict(), ensure_ascii=False, indent=2))
    if args.json:
        args.json.write_text(json.dumps(tally.to_dict(), ensure_ascii=False, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(_main()))
