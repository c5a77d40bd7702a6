"""Clinics and terminal identity (issue 9 item 1): admin GraphQL, one-time enrolment codes, strict
terminal keys, client assertions (EdDSA only, audience, lifetime, clock, jti once), revocation; the
demo county's villages; the enrolment codes `yibao serve` prints. Through real HTTP where a client
would go; the concurrent cases on two connections (PostgreSQL in CI's second leg)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select, text
from sqlmodel import col

from api.auth.models import Account
from api.dbtypes import utcnow
from api.errors import Unauthenticated
from api.people.models import Facility, InsuredPerson
from api.settings import Settings
from api.state import AppState
from api.terminals import service
from api.terminals.models import Terminal, TerminalAssertionReplay, TerminalEnrolmentCode
from sync.assertion import make_assertion
from sync.protocol import ASSERTION_TTL_S
from sync.vouchers import public_key_to_b64
from sync.vouchers.keys import SMALL_ORDER_POINTS
from tests.api import terminalworld as world
from tests.conftest import GraphQLClient, error_codes

CLINICS = "{ clinics { id code name villageCode terminals { id status enrolledAt lastPushAt lastPullAt lastSeq revokedAt } } }"
DEMO_CLINIC = re.compile(r"C340421\d{5}")
REVOKE = "mutation($id: ID!) { revokeTerminal(id: $id) { id status revokedAt } }"


async def fresh_code(state: AppState, clinic_id: int, **kw: Any) -> str:
    async with state.db.session() as session:
        code, _ = await service.create_enrolment_code(
            session, await world.admin_viewer(state), clinic_id, **kw
        )
    return code


# --- the demo county -------------------------------------------------------------------------


async def test_demo_village_clinics_have_villages_and_most_people_live_in_one(state: AppState) -> None:
    async with state.db.session() as session:
        clinics = list(
            (await session.execute(select(Facility).where(col(Facility.kind) == "clinic"))).scalars()
        )
        # The demo's people: loaded first, before any test added people of its own.
        demo_people = (
            select(col(InsuredPerson.village_code))
            .order_by(col(InsuredPerson.id))
            .limit(state.settings.demo_people)
        )
        people = list((await session.execute(demo_people)).scalars())
        hospitals = (
            await session.execute(
                select(func.count())
                .select_from(Facility)
                .where(col(Facility.kind) != "clinic", col(Facility.village_code).is_not(None))
            )
        ).scalar_one()
    # Other tests add clinics of their own; the demo's are the 24 with demo codes.
    demo = [c for c in clinics if DEMO_CLINIC.fullmatch(c.code)]
    assert len(demo) == 24 and all(c.level == "village" for c in demo)
    assert all(c.village_code is not None and re.fullmatch(r"340421\d{6}", c.village_code) for c in demo)
    assert len({c.village_code for c in demo}) == len(demo)
    assert hospitals == 0
    # (Other tests move a few people to villages of their own.)
    demo_villages = {c.village_code for c in demo}
    housed = sum(1 for v in people if v in demo_villages)
    assert housed >= 0.75 * len(people)
    assert None in people  # town communities (社区) without a village clinic exist too
    clinic = await world.resident_clinic(state)
    async with state.db.session() as session:
        elder = (
            await session.execute(
                select(col(InsuredPerson.village_code))
                .join(Account, col(Account.person_id) == col(InsuredPerson.id))
                .where(col(Account.subject) == "elder")
            )
        ).scalar_one()
    assert elder == clinic.village_code


# --- admin GraphQL ---------------------------------------------------------------------------


async def test_admin_lists_clinics_with_their_terminals(
    client: Any, gql: GraphQLClient, state: AppState
) -> None:
    enrolled = await world.enrol(client, state)
    await gql.login("admin")
    body = await gql(CLINICS)
    assert "errors" not in body, body
    clinics = {c["id"]: c for c in body["data"]["clinics"]}
    assert len([c for c in clinics.values() if DEMO_CLINIC.fullmatch(c["code"])]) == 24
    mine = clinics[enrolled.clinic_id]
    assert mine["villageCode"] == enrolled.answer["villageCode"]
    assert mine["name"] == enrolled.answer["clinicName"]
    terminal = next(t for t in mine["terminals"] if t["id"] == enrolled.terminal_id)
    assert terminal["status"] == "active"
    assert terminal["lastPushAt"] is None and terminal["revokedAt"] is None and terminal["lastSeq"] == 0


@pytest.mark.parametrize("login", [None, "resident", "elder", "spouse", "stranger", "pharmacy", "reviewer"])
async def test_terminal_administration_is_admin_only(
    gql: GraphQLClient, state: AppState, login: str | None
) -> None:
    clinic = await world.resident_clinic(state)
    if login is not None:
        await gql.login(login)
    expected = ["UNAUTHENTICATED"] if login is None else ["FORBIDDEN"]
    for query, variables in (
        (CLINICS, {}),
        (world.ENROL_TERMINAL, {"c": str(clinic.id)}),
        (REVOKE, {"id": "1"}),
    ):
        body = await gql(query, variables)
        assert error_codes(body) == expected, (query, body)
        assert body.get("data") is None


async def test_enrolment_codes_are_typeable_short_lived_and_stored_hashed(
    gql: GraphQLClient, state: AppState
) -> None:
    clinic = await world.resident_clinic(state)
    await gql.login("admin")
    before = datetime.now(UTC)
    body = await gql(world.ENROL_TERMINAL, {"c": str(clinic.id)})
    after = datetime.now(UTC)
    code = body["data"]["enrolTerminal"]["code"]
    expires = datetime.fromisoformat(body["data"]["enrolTerminal"]["expiresAt"])
    assert re.fullmatch(r"[0-9A-HJKMNP-TV-Z]{4}(-[0-9A-HJKMNP-TV-Z]{4}){4}", code)
    ttl = timedelta(hours=state.settings.terminal_enrolment_ttl_h)
    assert before + ttl - timedelta(seconds=1) <= expires <= after + ttl
    digest = hashlib.sha256(code.replace("-", "").encode()).hexdigest()
    async with state.db.session() as session:
        row = (
            await session.execute(
                select(TerminalEnrolmentCode).where(col(TerminalEnrolmentCode.code_hash) == digest)
            )
        ).scalar_one()
        stored = " ".join(str(v) for v in row.model_dump().values())
    assert row.clinic_id == clinic.id and row.used_at is None
    assert code.replace("-", "") not in stored and code not in stored
    second = await gql(world.ENROL_TERMINAL, {"c": str(clinic.id)})
    assert second["data"]["enrolTerminal"]["code"] != code


async def test_enrol_and_revoke_refuse_bad_and_unknown_ids(gql: GraphQLClient, state: AppState) -> None:
    await gql.login("admin")
    async with state.db.session() as session:
        hospital = (
            await session.execute(select(col(Facility.id)).where(col(Facility.kind) == "hospital").limit(1))
        ).scalar_one()
    for value, code, field in (
        ("abc", "BAD_USER_INPUT", "clinicId"),
        ("0", "BAD_USER_INPUT", "clinicId"),
        ("99999999999999999999", "BAD_USER_INPUT", "clinicId"),
        (str(hospital), "NOT_FOUND", "clinicId"),  # a hospital has no terminals
        ("987654321", "NOT_FOUND", "clinicId"),
    ):
        body = await gql(world.ENROL_TERMINAL, {"c": value})
        assert error_codes(body) == [code], (value, body)
        assert body["errors"][0]["extensions"]["field"] == field
    for value, code in (("x1", "BAD_USER_INPUT"), ("987654321", "NOT_FOUND")):
        body = await gql(REVOKE, {"id": value})
        assert error_codes(body) == [code], (value, body)


# --- enrolment over HTTP ---------------------------------------------------------------------


async def test_enrol_end_to_end(client: Any, state: AppState) -> None:
    clinic = await world.resident_clinic(state)
    code = await world.admin_code(client, clinic.id)  # type: ignore[arg-type]
    key = Ed25519PrivateKey.generate()
    typed = "  " + code.lower().replace("-", " ") + " "  # as someone types it off a slip of paper
    response = await client.post(
        "/sync/enrol", json={"code": typed, "publicKey": public_key_to_b64(key.public_key())}
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert set(answer) == {"terminalId", "clinicId", "clinicName", "villageCode", "audience"}
    assert answer["clinicId"] == str(clinic.id) and answer["clinicName"] == clinic.name
    assert answer["villageCode"] == clinic.village_code
    assert answer["audience"] == world.AUDIENCE
    assert re.fullmatch(r"[1-9][0-9]*", answer["terminalId"])
    async with state.db.session() as session:
        terminal = await session.get(Terminal, int(answer["terminalId"]))
        assert terminal is not None
        assert terminal.public_key == public_key_to_b64(key.public_key())
        assert terminal.status == "active" and terminal.clinic_id == clinic.id
        spent = await session.get(TerminalEnrolmentCode, terminal.enrolment_code_id)
        assert spent is not None and spent.used_at is not None
    # The code is spent: a second terminal cannot use it, whoever types it.
    again = await client.post(
        "/sync/enrol",
        json={"code": code, "publicKey": public_key_to_b64(Ed25519PrivateKey.generate().public_key())},
    )
    assert again.status_code == 401
    assert world.reason(again) == "enrolment_code_used"
    assert again.json()["error"]["field"] == "code"


async def test_expired_unknown_and_malformed_codes_are_refused(client: Any, state: AppState) -> None:
    clinic = await world.resident_clinic(state)
    assert clinic.id is not None
    expired = await fresh_code(state, clinic.id, ttl=timedelta(hours=1), now=utcnow() - timedelta(hours=2))
    key = public_key_to_b64(Ed25519PrivateKey.generate().public_key())
    for code, status, expected in (
        (expired, 401, "enrolment_code_expired"),
        (service.new_code(), 401, "enrolment_code_unknown"),  # well formed, never issued
        ("hello", 422, "malformed_code"),
        ("U" * 20, 422, "malformed_code"),  # U is not in Crockford's alphabet
        ("", 422, "malformed_code"),
    ):
        response = await client.post("/sync/enrol", json={"code": code, "publicKey": key})
        assert response.status_code == status, (code, response.text)
        assert world.reason(response) == expected
        assert response.json()["error"]["field"] == "code"


WEAK_KEYS = {
    **{f"small-order {raw.hex()[:8]}": raw for raw in sorted(SMALL_ORDER_POINTS)},
    "identity, non-canonical (x = 0 with the sign bit)": bytes.fromhex("01" + "00" * 30 + "80"),
    "non-canonical (y = p)": bytes.fromhex("ed" + "ff" * 30 + "7f"),
    "not on the curve": bytes.fromhex("02" + "00" * 31),
    "mixed order (C2SP/CCTV ed25519 vectors)": bytes.fromhex(
        "10eb7c3acfb2bed3e0d6ab89bf5a3d6afddd1176ce4812e38d9fd485058fdb1f"
    ),
}


@pytest.mark.parametrize("raw", list(WEAK_KEYS.values()), ids=list(WEAK_KEYS))
async def test_weak_terminal_keys_are_refused_and_do_not_burn_the_code(
    client: Any, state: AppState, raw: bytes
) -> None:
    clinic = await world.resident_clinic(state)
    assert clinic.id is not None
    code = await fresh_code(state, clinic.id)
    response = await client.post("/sync/enrol", json={"code": code, "publicKey": world.b64url(raw)})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == "publicKey"
    assert world.reason(response) in ("weak_key", "malformed_key")
    good = public_key_to_b64(Ed25519PrivateKey.generate().public_key())
    assert (await client.post("/sync/enrol", json={"code": code, "publicKey": good})).status_code == 200


@pytest.mark.parametrize(
    "text",
    [
        "",
        "AAAA",
        world.b64url(b"\x01" * 31),
        world.b64url(b"\x01" * 33),
        "!" * 43,
        base64.b64encode(b"\xfb" * 32).decode(),
    ],
)
async def test_malformed_terminal_keys_are_refused(client: Any, state: AppState, text: str) -> None:
    clinic = await world.resident_clinic(state)
    assert clinic.id is not None
    response = await client.post(
        "/sync/enrol", json={"code": await fresh_code(state, clinic.id), "publicKey": text}
    )
    assert response.status_code == 422, response.text
    assert world.reason(response) == "malformed_key"


async def test_enrolment_is_rate_limited_per_client(app: Any, state: AppState) -> None:
    import httpx

    from api.app import create_app

    limited = state.settings.model_copy(update={"terminal_enrol_rate_limit": 2})
    limited_app = create_app(limited, AppState(**{**vars(state), "settings": limited}))
    transport = httpx.ASGITransport(app=limited_app, client=("192.0.2.91", 5000))
    async with httpx.AsyncClient(transport=transport, base_url="http://yibao.test") as http:
        statuses = [
            (await http.post("/sync/enrol", json={"code": service.new_code(), "publicKey": "x"})).status_code
            for _ in range(4)
        ]
    assert statuses == [422, 422, 429, 429]


# --- client assertions -----------------------------------------------------------------------


async def test_an_honest_assertion_is_accepted_once(client: Any, state: AppState) -> None:
    enrolled = await world.enrol(client, state)
    token = enrolled.assertion()
    first = await world.pull(client, token)
    assert first.status_code == 200, first.text
    replay = await world.pull(client, token)
    assert replay.status_code == 401
    assert world.reason(replay) == "replayed"
    assert replay.headers["www-authenticate"].startswith("Bearer")
    assert replay.json()["error"]["code"] == "UNAUTHENTICATED"
    assert (await world.pull(client, enrolled.assertion())).status_code == 200  # a fresh jti is fine
    async with state.db.session() as session:
        terminal = await session.get(Terminal, int(enrolled.terminal_id))
        assert terminal is not None and terminal.last_pull_at is not None and terminal.last_push_at is None


def _claims(enrolled: world.Enrolled, **changes: Any) -> dict[str, Any]:
    now = int(datetime.now(UTC).timestamp())
    claims: dict[str, Any] = {
        "iss": enrolled.terminal_id,
        "sub": enrolled.terminal_id,
        "aud": enrolled.audience,
        "iat": now,
        "exp": now + 60,
        "jti": base64.urlsafe_b64encode(
            hashlib.sha256(repr(changes).encode() + str(now).encode()).digest()[:18]
        ).decode(),
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def _hmac(secret: bytes) -> Any:
    return lambda message: hmac.new(secret, message, hashlib.sha256).digest()


def _eddsa(enrolled: world.Enrolled, claims: dict[str, Any], key: Ed25519PrivateKey | None = None) -> str:
    # By hand: pyjwt's encoder would refuse some of the bad claims the server must refuse itself.
    signer = key or enrolled.key
    return world.forge({"alg": "EdDSA", "typ": "JWT"}, claims, signer.sign)


async def test_forged_and_wrong_assertions_are_refused_with_a_reason(client: Any, state: AppState) -> None:
    enrolled = await world.enrol(client, state)
    other = await world.enrol(client, state)
    now = int(datetime.now(UTC).timestamp())
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = enrolled.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    raw_public = enrolled.key.public_key().public_bytes_raw()
    cases: dict[str, tuple[str, str]] = {
        "alg none": (jwt.encode(_claims(enrolled), None, algorithm="none"), "alg_not_allowed"),
        "alg none, signature kept": (
            world.forge({"alg": "none"}, _claims(enrolled), lambda m: enrolled.key.sign(m)),
            "alg_not_allowed",
        ),
        # HS256 "signed" with the terminal's public key as the secret: the classic key confusion.
        # (pyjwt itself refuses to make that one, so it is made by hand.)
        "HS256 with the public key": (
            world.forge({"alg": "HS256", "typ": "JWT"}, _claims(enrolled), _hmac(public_pem)),
            "alg_not_allowed",
        ),
        "HS256 with the raw key": (
            jwt.encode(_claims(enrolled), raw_public, algorithm="HS256"),
            "alg_not_allowed",
        ),
        "HS256 with the stored key text": (
            world.forge(
                {"alg": "HS256"},
                _claims(enrolled),
                _hmac(public_key_to_b64(enrolled.key.public_key()).encode()),
            ),
            "alg_not_allowed",
        ),
        "RS256": (jwt.encode(_claims(enrolled), rsa_key, algorithm="RS256"), "alg_not_allowed"),
        "alg Ed25519 (another spelling)": (
            world.forge({"alg": "Ed25519"}, _claims(enrolled), lambda m: enrolled.key.sign(m)),
            "alg_not_allowed",
        ),
        "alg missing": (
            world.forge({"typ": "JWT"}, _claims(enrolled), lambda m: enrolled.key.sign(m)),
            "alg_not_allowed",
        ),
        "signed by another key": (
            _eddsa(enrolled, _claims(enrolled), Ed25519PrivateKey.generate()),
            "bad_signature",
        ),
        "another terminal's assertion, renamed": (
            _eddsa(enrolled, _claims(enrolled), other.key),
            "bad_signature",
        ),
        "claims altered after signing": (
            (
                lambda t: (
                    t.split(".")[0]
                    + "."
                    + world.b64url(b'{"iss":"' + enrolled.terminal_id.encode() + b'"}')
                    + "."
                    + t.split(".")[2]
                )
            )(_eddsa(enrolled, _claims(enrolled))),
            "bad_signature",
        ),
        "wrong audience": (
            _eddsa(enrolled, _claims(enrolled, aud="https://elsewhere.example/sync")),
            "wrong_audience",
        ),
        "audience list": (_eddsa(enrolled, _claims(enrolled, aud=[enrolled.audience])), "wrong_audience"),
        "unknown terminal": (
            _eddsa(enrolled, _claims(enrolled, iss="987654321", sub="987654321")),
            "unknown_terminal",
        ),
        "subject is another terminal": (
            _eddsa(enrolled, _claims(enrolled, sub=other.terminal_id)),
            "wrong_subject",
        ),
        "numeric issuer": (_eddsa(enrolled, _claims(enrolled, iss=int(enrolled.terminal_id))), "malformed"),
        "lifetime longer than allowed": (
            # iat pinned to the same `now`: _claims would take a later second on a slow machine
            _eddsa(enrolled, _claims(enrolled, iat=now, exp=now + ASSERTION_TTL_S + 1)),
            "lifetime_too_long",
        ),
        "an hour-long assertion issued long ago": (
            _eddsa(enrolled, _claims(enrolled, iat=now - 1800, exp=now + 1800)),
            "lifetime_too_long",
        ),
        "expired": (_eddsa(enrolled, _claims(enrolled, iat=now - 250, exp=now - 200)), "expired"),
        "exp before iat": (_eddsa(enrolled, _claims(enrolled, iat=now, exp=now - 10)), "malformed"),
        "no jti": (_eddsa(enrolled, _claims(enrolled, jti=None)), "malformed"),
        "short jti": (_eddsa(enrolled, _claims(enrolled, jti="abc")), "malformed"),
        "no exp": (_eddsa(enrolled, _claims(enrolled, exp=None)), "malformed"),
        "iat as text": (_eddsa(enrolled, _claims(enrolled, iat=str(now))), "malformed"),
        "not a JWT": ("garbage", "malformed"),
    }
    for name, (token, expected) in cases.items():
        response = await world.pull(client, token)
        assert response.status_code == 401, (name, response.text)
        assert world.reason(response) == expected, (name, response.json())
    for header, expected in (
        (None, "missing"),
        ("", "missing"),
        ("Basic dXNlcjpwYXNz", "malformed"),
        ("Bearer ", "malformed"),
        ("Bearer " + "a" * 5000, "malformed"),
    ):
        headers = {} if header is None else {"authorization": header}
        response = await client.post("/sync/pull", json={"checkpoint": None, "limit": 1}, headers=headers)
        assert response.status_code == 401, (header, response.text)
        assert world.reason(response) == expected
    # None of the refusals spent anything: an honest assertion still goes through.
    assert (await world.pull(client, enrolled.assertion())).status_code == 200


@pytest.mark.parametrize(
    "offset", [timedelta(days=-1), timedelta(days=1), timedelta(minutes=-20), timedelta(minutes=10)]
)
async def test_a_terminal_clock_far_off_is_told_so(client: Any, state: AppState, offset: timedelta) -> None:
    enrolled = await world.enrol(client, state)
    response = await world.pull(client, enrolled.assertion(now=datetime.now(UTC) + offset))
    assert response.status_code == 401, response.text
    error = response.json()["error"]
    assert error["reason"] == "clock_skew"
    assert "时间" in error["message"]
    server_time = datetime.fromisoformat(error["serverTime"])
    assert abs(server_time - datetime.now(UTC)) < timedelta(minutes=5)
    assert (error["skewS"] > 0) == (offset > timedelta(0))
    # Within the leeway a slightly wrong clock works.
    assert (
        await world.pull(client, enrolled.assertion(now=datetime.now(UTC) + timedelta(seconds=60)))
    ).status_code == 200


async def test_a_revoked_terminal_is_refused_at_its_next_request(
    client: Any, gql: GraphQLClient, state: AppState
) -> None:
    enrolled = await world.enrol(client, state)
    assert (await world.pull(client, enrolled.assertion())).status_code == 200
    await gql.login("admin")
    body = await gql(REVOKE, {"id": enrolled.terminal_id})
    assert "errors" not in body, body
    assert body["data"]["revokeTerminal"]["status"] == "revoked"
    revoked_at = body["data"]["revokeTerminal"]["revokedAt"]
    assert revoked_at is not None
    for path in ("/sync/pull", "/sync/push"):
        response = await client.post(path, json={}, headers=enrolled.headers())
        assert response.status_code == 401, response.text
        assert world.reason(response) == "terminal_revoked"
        assert response.json()["error"]["message"] == "终端已被停用"
    again = await gql(REVOKE, {"id": enrolled.terminal_id})  # revoking twice changes nothing
    assert again["data"]["revokeTerminal"]["revokedAt"] == revoked_at
    clinics = await gql(CLINICS)
    terminal = next(
        t for c in clinics["data"]["clinics"] for t in c["terminals"] if t["id"] == enrolled.terminal_id
    )
    assert terminal["status"] == "revoked" and terminal["revokedAt"] == revoked_at
    assert terminal["lastPullAt"] is not None


async def test_the_configured_audience_is_the_one_enrol_tells_and_the_only_one_accepted(
    app: Any, state: AppState
) -> None:
    import httpx

    from api.app import create_app

    configured = state.settings.model_copy(update={"sync_audience": "https://ybj.example.cn/sync"})
    other_app = create_app(configured, AppState(**{**vars(state), "settings": configured}))
    transport = httpx.ASGITransport(app=other_app, client=("192.0.2.92", 5000))
    async with httpx.AsyncClient(transport=transport, base_url="http://internal:8000") as http:
        enrolled = await world.enrol(http, state)
        assert enrolled.audience == "https://ybj.example.cn/sync"
        derived = make_assertion(enrolled.key, enrolled.terminal_id, "http://internal:8000/sync")
        refused = await world.pull(http, derived)
        assert world.reason(refused) == "wrong_audience"
        assert refused.json()["error"]["expected"] == "https://ybj.example.cn/sync"
        assert (await world.pull(http, enrolled.assertion())).status_code == 200


async def test_refusals_are_counted_by_reason(client: Any, state: AppState) -> None:
    enrolled = await world.enrol(client, state)
    registry = state.metrics.registry

    def value(name: str, labels: dict[str, str]) -> float:
        return registry.get_sample_value(name, labels) or 0.0

    before = value("yibao_sync_auth_failures_total", {"reason": "replayed"})
    ok_before = value("yibao_sync_requests_total", {"route": "pull", "outcome": "ok"})
    token = enrolled.assertion()
    await world.pull(client, token)
    await world.pull(client, token)
    assert value("yibao_sync_auth_failures_total", {"reason": "replayed"}) == before + 1
    assert value("yibao_sync_requests_total", {"route": "pull", "outcome": "ok"}) == ok_before + 1
    assert value("yibao_sync_requests_total", {"route": "pull", "outcome": "unauthenticated"}) >= 1
    text_metrics = (await client.get("/metrics")).text
    assert 'yibao_sync_requests_total{outcome="ok",route="enrol"}' in text_metrics


# --- two at once, and the replay store's housekeeping ----------------------------------------


async def _until_blocked(state: AppState, waiting: int) -> None:
    """PostgreSQL: returns once `waiting` backends wait on a lock (the contenders are in place)."""
    for _ in range(2000):
        async with state.db.session() as session:
            count = (
                await session.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                    )
                )
            ).scalar_one()
        if count >= waiting:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the concurrent requests never queued on the lock")


async def test_one_code_two_enrolments_at_once_make_one_terminal(state: AppState) -> None:
    clinic = await world.resident_clinic(state)
    assert clinic.id is not None
    code = await fresh_code(state, clinic.id)
    digest = service.code_hash(service.normalise_code(code) or "")
    locker = None
    if state.db.is_postgres:
        # Hold the code's row so both enrolments are inside their UPDATE when it is released.
        locker = state.db.sessionmaker()
        await locker.execute(
            select(TerminalEnrolmentCode)
            .where(col(TerminalEnrolmentCode.code_hash) == digest)
            .with_for_update()
        )

    async def attempt() -> Terminal | Unauthenticated:
        async with state.db.session() as session:
            try:
                return await service.enrol(
                    session, code, public_key_to_b64(Ed25519PrivateKey.generate().public_key())
                )
            except Unauthenticated as exc:
                return exc

    tasks = [asyncio.create_task(attempt()) for _ in range(2)]
    if locker is not None:
        await _until_blocked(state, 2)
        await locker.rollback()
        await locker.close()
    results = await asyncio.gather(*tasks)
    winners = [r for r in results if isinstance(r, Terminal)]
    losers = [r for r in results if isinstance(r, Unauthenticated)]
    assert len(winners) == 1 and len(losers) == 1
    assert losers[0].extra["reason"] == "enrolment_code_used"
    async with state.db.session() as session:
        code_id = (
            await session.execute(
                select(col(TerminalEnrolmentCode.id)).where(col(TerminalEnrolmentCode.code_hash) == digest)
            )
        ).scalar_one()
        count = (
            await session.execute(
                select(func.count()).select_from(Terminal).where(col(Terminal.enrolment_code_id) == code_id)
            )
        ).scalar_one()
    assert count == 1


async def _service_terminal(state: AppState) -> tuple[Terminal, Ed25519PrivateKey]:
    clinic = await world.resident_clinic(state)
    assert clinic.id is not None
    key = Ed25519PrivateKey.generate()
    async with state.db.session() as session:
        terminal = await service.enrol(
            session, await fresh_code(state, clinic.id), public_key_to_b64(key.public_key())
        )
    return terminal, key


async def test_one_jti_on_two_connections_at_once_is_accepted_once(state: AppState) -> None:
    terminal, key = await _service_terminal(state)
    jti = "concurrent-" + base64.urlsafe_b64encode(key.public_key().public_bytes_raw()[:12]).decode()
    header = "Bearer " + make_assertion(key, str(terminal.id), world.AUDIENCE, jti=jti)
    locker = None
    if state.db.is_postgres:
        # An uncommitted insert of the same jti: both requests queue on the unique key behind it.
        locker = state.db.sessionmaker()
        await locker.execute(
            TerminalAssertionReplay.__table__.insert().values(  # type: ignore[attr-defined]
                jti=jti, terminal_id=terminal.id, expires_at=utcnow() + timedelta(minutes=10)
            )
        )

    async def attempt() -> Terminal | Unauthenticated:
        async with state.db.session() as session:
            try:
                return await service.authenticate(session, state.settings, header, world.AUDIENCE)
            except Unauthenticated as exc:
                return exc

    tasks = [asyncio.create_task(attempt()) for _ in range(2)]
    if locker is not None:
        await _until_blocked(state, 2)
        await locker.rollback()
        await locker.close()
    results = await asyncio.gather(*tasks)
    assert len([r for r in results if isinstance(r, Terminal)]) == 1
    assert [r.extra["reason"] for r in results if isinstance(r, Unauthenticated)] == ["replayed"]


async def test_expired_jtis_are_purged_and_live_ones_kept(state: AppState) -> None:
    terminal, key = await _service_terminal(state)
    now = utcnow()
    async with state.db.session() as session:
        for n, age in enumerate((timedelta(hours=-2), timedelta(minutes=-1), timedelta(minutes=5))):
            session.add(
                TerminalAssertionReplay(
                    jti=f"purge-test-{terminal.id}-{n:04d}", terminal_id=terminal.id, expires_at=now + age
                )
            )
    async with state.db.session() as session:
        await service.purge_expired_assertions(session, now=now)
        left = set(
            (
                await session.execute(
                    select(col(TerminalAssertionReplay.jti)).where(
                        col(TerminalAssertionReplay.terminal_id) == terminal.id
                    )
                )
            ).scalars()
        )
    assert left == {f"purge-test-{terminal.id}-0002"}
    # A request runs the purge now and then by itself (here: its schedule is due).
    async with state.db.session() as session:
        session.add(
            TerminalAssertionReplay(
                jti=f"purge-test-{terminal.id}-old",
                terminal_id=terminal.id,
                expires_at=now - timedelta(hours=1),
            )
        )
    service._next_purge = 0.0
    async with state.db.session() as session:
        token = make_assertion(key, str(terminal.id), world.AUDIENCE)
        await service.authenticate(session, state.settings, f"Bearer {token}", world.AUDIENCE)
        left = set(
            (
                await session.execute(
                    select(col(TerminalAssertionReplay.jti)).where(
                        col(TerminalAssertionReplay.terminal_id) == terminal.id
                    )
                )
            ).scalars()
        )
    assert f"purge-test-{terminal.id}-old" not in left and len(left) == 2  # the live row and the new jti


# --- what `yibao serve` prints ---------------------------------------------------------------


async def test_serve_prints_a_fresh_enrolment_code_per_clinic_that_enrols(
    client: Any, settings: Settings, state: AppState
) -> None:
    from api import cli

    codes = await asyncio.to_thread(cli._enrolment_codes, settings)
    assert len([c for c, _, _ in codes if DEMO_CLINIC.fullmatch(c)]) == 24
    assert len({code for _, _, code in codes}) == len(codes)  # one fresh code per clinic
    banner = cli._banner(settings, "127.0.0.1", 8000, codes)
    clinic = await world.resident_clinic(state)
    mine = next(code for clinic_code, _, code in codes if clinic_code == clinic.code)
    assert f"{mine}  {clinic.code}  {clinic.name}" in banner
    assert "enrol --server http://127.0.0.1:8000 --code" in banner
    key = public_key_to_b64(Ed25519PrivateKey.generate().public_key())
    response = await client.post("/sync/enrol", json={"code": mine, "publicKey": key})
    assert response.status_code == 200, response.text
    assert response.json()["clinicId"] == str(clinic.id)
    assert "enrolment codes" not in cli._banner(settings, "127.0.0.1", 8000, [])
