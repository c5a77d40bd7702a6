"""Shared by the terminal tests, the fault test and the drain benchmark: a real server in its own
process on the test database (killable, restartable), villages with clinics and villagers of their
own, enrolment codes, vouchers signed with the server's keys, and the agent run as a separate process.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from api.auth.models import Account, Role
from api.auth.service import Viewer
from api.people import idnumbers
from api.people.models import Enrolment, Facility, InsuredPerson, PersonalAccount
from api.settings import Settings
from api.state import AppState
from api.terminals import service as terminals
from api.vouchers import service as voucher_service
from sync.vouchers import compose_offline_code, issue_device_certificate, issue_online_code

REGION = "340421"
ROOT = Path(__file__).resolve().parents[2]
TERMINAL = [sys.executable, "-m", "terminal"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# ------------------------------------------------------------------------------------------ server


class Server:
    """uvicorn serving api.app:app_factory in its own process, on the test database, with a copy of
    the test's key directory (so codes signed with `state.voucher_keys` verify)."""

    def __init__(
        self, settings: Settings, workdir: Path, *, workers: int = 1, port: int | None = None
    ) -> None:
        self.port = port or free_port()
        self.workers = workers
        self.url = f"http://127.0.0.1:{self.port}"
        key_dir = workdir / "server-keys"
        if not key_dir.exists():
            shutil.copytree(settings.resolved_key_dir, key_dir)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("YIBAO_")}
        self.env.update(
            YIBAO_DATA_DIR=str(settings.data_dir),
            YIBAO_KEY_DIR=str(key_dir),
            YIBAO_DATABASE_URL=settings.resolved_database_url,
            YIBAO_LOGIN_RATE_LIMIT="10000",
            YIBAO_TERMINAL_ENROL_RATE_LIMIT="10000",
            YIBAO_LOG_JSON="false",
        )
        self.log = workdir / f"server-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, timeout: float = 90.0) -> None:
        cmd = [sys.executable, "-m", "uvicorn", "api.app:app_factory", "--factory"]
        cmd += ["--host", "127.0.0.1", "--port", str(self.port), "--no-access-log", "--log-level", "warning"]
        if self.workers > 1:
            cmd += ["--workers", str(self.workers)]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(cmd, env=self.env, cwd=ROOT, stdout=log, stderr=log)
        self.starts += 1
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL: no shutdown of any kind, like a power cut (of the whole process group)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)
            if self.workers > 1:
                time.sleep(0.5)  # uvicorn's worker processes notice their parent is gone
        self.process = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


# ----------------------------------------------------------------------------------------- villages


@dataclass
class Villager:
    id: int
    ref: str  # voucher ref, hex: what codes and roster entries name
    name: str
    insurance_type: str
    village: str

    @property
    def ref_bytes(self) -> bytes:
        return bytes.fromhex(self.ref)


@dataclass
class Village:
    code: str
    clinics: list[int]
    people: list[Villager]


def _id_number(birth: dt.date) -> str:
    first17 = f"34{secrets.randbelow(100):02d}{secrets.randbelow(100):02d}{birth:%Y%m%d}{secrets.randbelow(1000):03d}"
    return first17 + idnumbers.check_digit(first17)


_SURNAMES = "王李张刘陈杨赵黄周吴徐孙胡朱高林何郭马罗"
_GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华"


async def make_village(
    state: AppState,
    people: int,
    *,
    clinics: int = 1,
    employees: int = 0,
    balance_fen: int = 200_000,
    birth: dt.date = dt.date(1980, 5, 5),
    assistance: dict[int, str] | None = None,
) -> Village:
    """A fresh village of REGION with `clinics` village clinics and `people` insured villagers
    (the first `employees` of them employees with a personal account), enrolled since 2024."""
    code = f"{REGION}{secrets.randbelow(10**6):06d}"
    async with state.db.session() as session:
        clinic_ids = []
        for n in range(clinics):
            facility = Facility(
                code=f"TC{uuid.uuid4().hex[:12]}",
                name=f"测试村卫生室{n + 1}号",
                level="village",
                kind="clinic",
                region_code=REGION,
                village_code=code,
            )
            session.add(facility)
            await session.flush()
            assert facility.id is not None
            clinic_ids.append(facility.id)
        villagers = []
        for n in range(people):
            number = _id_number(birth)
            kind = "employee" if n < employees else "resident"
            name = secrets.choice(_SURNAMES) + secrets.choice(_GIVEN) + secrets.choice(_GIVEN)
            row = InsuredPerson(
                ref=uuid.uuid4().hex,
                name=name,
                id_number_cipher=state.id_numbers.encrypt(number),
                id_number_hash=state.id_numbers.lookup_hash(number),
                gender=idnumbers.gender(number),
                birth_date=birth,
                insurance_type=kind,
                region_code=REGION,
                village_code=code,
                assistance_category=(assistance or {}).get(n),
            )
            session.add(row)
            await session.flush()
            assert row.id is not None
            session.add(
                Enrolment(
                    person_id=row.id,
                    insurance_type=kind,
                    region_code=REGION,
                    start_on=dt.date(2024, 1, 1),
                )
            )
            if kind == "employee":
                session.add(PersonalAccount(person_id=row.id, balance_fen=balance_fen))
            ref = await voucher_service.person_ref(session, row.id)
            villagers.append(Villager(row.id, ref.hex(), name, kind, code))
        await session.commit()
    return Village(code, clinic_ids, villagers)


async def admin_viewer(state: AppState) -> Viewer:
    from sqlalchemy import select
    from sqlmodel import col

    async with state.db.session() as session:
        account_id = (
            await session.execute(
                select(col(Account.id)).where(
                    col(Account.provider) == "demo", col(Account.subject) == "admin"
                )
            )
        ).scalar_one()
    return Viewer(account_id=account_id, role=Role.ADMIN, session_id="test", person_id=None)


async def enrolment_code(state: AppState, clinic_id: int, ttl: dt.timedelta = dt.timedelta(hours=1)) -> str:
    viewer = await admin_viewer(state)
    async with state.db.session() as session:
        code, _ = await terminals.create_enrolment_code(session, viewer, clinic_id, ttl)
    return code


async def revoke(state: AppState, terminal_id: int) -> None:
    viewer = await admin_viewer(state)
    async with state.db.session() as session:
        await terminals.revoke(session, viewer, terminal_id)


def online_code(
    state: AppState, who: Villager, at: dt.datetime | None = None, link: bytes | None = None
) -> str:
    kid, key = state.voucher_keys.signer()
    return issue_online_code(key, kid, who.ref_bytes, link, at or dt.datetime.now(dt.UTC), 60)


def offline_code(state: AppState, who: Villager, at: dt.datetime | None = None) -> str:
    """What the villager's phone shows without signal: a device-signed code under our certificate."""
    at = at or dt.datetime.now(dt.UTC)
    kid, key = state.voucher_keys.signer()
    device = Ed25519PrivateKey.generate()
    certificate = issue_device_certificate(
        key, kid, device.public_key(), who.ref_bytes, None, at - dt.timedelta(days=1), validity_s=7 * 86400
    )
    return compose_offline_code(certificate, device, at, counter=secrets.randbelow(1000))


# ------------------------------------------------------------------------------------------- agent


@dataclass
class Run:
    status: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        lines = [line for line in self.stdout.splitlines() if line.strip()]
        return json.loads(lines[-1]) if lines else None

    def lines(self) -> list[Any]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]


def agent_env(skew_s: float = 0.0, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("YIBAO_")}
    if skew_s:
        env["YIBAO_TERMINAL_CLOCK_SKEW_S"] = str(skew_s)
    env.update(extra or {})
    return env


def agent(
    home: Path,
    *args: str,
    skew_s: float = 0.0,
    timeout: float = 120.0,
    stdin: str | None = None,
    env: dict[str, str] | None = None,
) -> Run:
    """`python -m terminal --home HOME --json ARGS` in its own process."""
    done = subprocess.run(
        [*TERMINAL, "--home", str(home), "--json", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or agent_env(skew_s),
        cwd=ROOT,
        input=stdin,
    )
    return Run(done.returncode, done.stdout, done.stderr)


def spawn(home: Path, *args: str, skew_s: float = 0.0) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*TERMINAL, "--home", str(home), "--json", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=agent_env(skew_s),
        cwd=ROOT,
    )


def replace(obj: Any, **changes: Any) -> Any:
    return dataclasses.replace(obj, **changes)
