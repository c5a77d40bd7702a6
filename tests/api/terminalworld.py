"""Shared by the terminal tests: the demo resident's village clinic, enrolment through real HTTP
(an admin's GraphQL code, then POST /sync/enrol), and client assertions, honest or forged."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select
from sqlmodel import col

from api.auth.models import Account, Role
from api.auth.service import Viewer
from api.people.models import Facility, InsuredPerson
from api.state import AppState
from sync.assertion import make_assertion
from sync.vouchers import public_key_to_b64
from tests.conftest import GraphQLClient

ENROL_TERMINAL = "mutation($c: ID!) { enrolTerminal(clinicId: $c) { code expiresAt } }"
AUDIENCE = "http://yibao.test/sync"
"""What the server derives for the test client (base URL http://yibao.test) with no sync_audience."""


async def resident_clinic(state: AppState) -> Facility:
    """The village clinic of the demo `resident`'s village (her father's too)."""
    async with state.db.session() as session:
        village = (
            await session.execute(
                select(col(InsuredPerson.village_code))
                .join(Account, col(Account.person_id) == col(InsuredPerson.id))
                .where(col(Account.provider) == "demo", col(Account.subject) == "resident")
            )
        ).scalar_one()
        assert village is not None
        clinic = (
            await session.execute(select(Facility).where(col(Facility.village_code) == village))
        ).scalar_one()
    return clinic


async def admin_viewer(state: AppState) -> Viewer:
    async with state.db.session() as session:
        account_id = (
            await session.execute(
                select(col(Account.id)).where(
                    col(Account.provider) == "demo", col(Account.subject) == "admin"
                )
            )
        ).scalar_one()
    return Viewer(account_id=account_id, role=Role.ADMIN, session_id="test", person_id=None)


async def admin_code(client: httpx.AsyncClient, clinic_id: int | str) -> str:
    gql = GraphQLClient(client)
    await gql.login("admin")
    body = await gql(ENROL_TERMINAL, {"c": str(clinic_id)})
    assert "errors" not in body, body
    code: str = body["data"]["enrolTerminal"]["code"]
    return code


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


@dataclass
class Enrolled:
    terminal_id: str
    clinic_id: str
    key: Ed25519PrivateKey
    audience: str
    answer: dict[str, Any]

    def assertion(self, now: datetime | None = None, jti: str | None = None, **kw: Any) -> str:
        return make_assertion(self.key, self.terminal_id, self.audience, now=now, jti=jti, **kw)

    def headers(self, token: str | None = None) -> dict[str, str]:
        return {"authorization": f"Bearer {token or self.assertion()}"}


async def enrol(client: httpx.AsyncClient, state: AppState, clinic_id: int | None = None) -> Enrolled:
    if clinic_id is None:
        clinic = await resident_clinic(state)
        assert clinic.id is not None
        clinic_id = clinic.id
    code = await admin_code(client, clinic_id)
    key = Ed25519PrivateKey.generate()
    response = await client.post(
        "/sync/enrol", json={"code": code, "publicKey": public_key_to_b64(key.public_key())}
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    return Enrolled(answer["terminalId"], answer["clinicId"], key, answer["audience"], answer)


def forge(header: dict[str, Any], claims: dict[str, Any], sign: Any = None) -> str:
    """A JWT built by hand: any header (alg none, RS256, ...), `sign(signing_input) -> bytes`."""
    signing_input = (b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())).encode()
    signature = sign(signing_input) if sign is not None else b""
    return signing_input.decode() + "." + b64url(signature)


async def pull(client: httpx.AsyncClient, token: str, **body: Any) -> httpx.Response:
    return await client.post(
        "/sync/pull",
        json={"checkpoint": None, "limit": 1, **body},
        headers={"authorization": f"Bearer {token}"},
    )


def reason(response: httpx.Response) -> str | None:
    error: dict[str, Any] = response.json()["error"]
    value = error.get("reason")
    return None if value is None else str(value)
