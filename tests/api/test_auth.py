"""Login, tokens and their abuse: forged, expired, algorithm confusion, `alg: none`, refresh reuse."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from api.auth import keys as keystore
from api.auth.keys import KeyRing, KeyStoreError
from api.auth.tokens import TokenCodec
from api.settings import Settings
from api.state import AppState
from tests.conftest import GraphQLClient, error_codes

ME = "{ me { name } }"
REFRESH = "mutation($t: String!) { refreshToken(refreshToken: $t) { accessToken refreshToken expiresIn } }"
LOGOUT = "mutation($t: String!) { logout(refreshToken: $t) }"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims_of(token: str) -> dict[str, object]:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))  # type: ignore[no-any-return]


async def _reason(gql: GraphQLClient, token: str) -> str:
    body = await gql(ME, token=token)
    assert error_codes(body) == ["UNAUTHENTICATED"], body
    return str(body["errors"][0]["extensions"].get("reason"))


async def test_login_gives_short_lived_eddsa_tokens(gql: GraphQLClient, state: AppState) -> None:
    tokens = await gql.login("resident")
    header = jwt.get_unverified_header(tokens["accessToken"])
    assert header["alg"] == "EdDSA" and header["kid"] == state.keys.active.kid
    assert 0 < tokens["expiresIn"] <= 900
    claims = _claims_of(tokens["accessToken"])
    assert claims["typ"] == "access" and claims["role"] == "resident"
    assert "name" in (await gql(ME))["data"]["me"]


@pytest.mark.parametrize(
    ("provider", "code", "expected"),
    [
        ("demo", "nobody", "UNAUTHENTICATED"),
        ("facebook", "resident", "BAD_USER_INPUT"),
        ("demo", "", "BAD_USER_INPUT"),
    ],
)
async def test_bad_logins(gql: GraphQLClient, provider: str, code: str, expected: str) -> None:
    body = await gql(
        "mutation($p: String!, $c: String!) { login(provider: $p, code: $c) { accessToken } }",
        {"p": provider, "c": code},
    )
    assert error_codes(body) == [expected]


async def test_forged_token_signed_by_another_key(gql: GraphQLClient, state: AppState) -> None:
    tokens = await gql.login("resident")
    claims = _claims_of(tokens["accessToken"])
    claims["role"] = "admin"
    forged = jwt.encode(
        claims, Ed25519PrivateKey.generate(), algorithm="EdDSA", headers={"kid": state.keys.active.kid}
    )
    assert await _reason(gql, forged) == "invalid_token"


async def test_tampered_payload_fails_signature(gql: GraphQLClient) -> None:
    tokens = await gql.login("resident")
    head, _payload, signature = tokens["accessToken"].split(".")
    claims = _claims_of(tokens["accessToken"])
    claims["pid"] = 4
    tampered = ".".join([head, _b64(json.dumps(claims).encode()), signature])
    assert await _reason(gql, tampered) == "invalid_token"


async def test_expired_token(gql: GraphQLClient, state: AppState) -> None:
    tokens = await gql.login("resident")
    claims = _claims_of(tokens["accessToken"])
    past = datetime.now(UTC) - timedelta(hours=1)
    claims.update(iat=int(past.timestamp()), exp=int((past + timedelta(minutes=15)).timestamp()))
    key = state.keys.active
    expired = jwt.encode(claims, key.private_key, algorithm="EdDSA", headers={"kid": key.kid})
    assert await _reason(gql, expired) == "token_expired"


async def test_hs256_signed_with_the_public_key_is_refused(gql: GraphQLClient, state: AppState) -> None:
    tokens = await gql.login("resident")
    claims = _claims_of(tokens["accessToken"])
    public_pem = state.keys.active.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": state.keys.active.kid}).encode())
    body = _b64(json.dumps(claims).encode())
    import hashlib
    import hmac

    mac = hmac.new(public_pem, f"{header}.{body}".encode(), hashlib.sha256).digest()
    assert await _reason(gql, f"{header}.{body}.{_b64(mac)}") == "algorithm_not_allowed"


async def test_alg_none_is_refused(gql: GraphQLClient, state: AppState) -> None:
    tokens = await gql.login("resident")
    claims = _claims_of(tokens["accessToken"])
    header = _b64(json.dumps({"alg": "none", "typ": "JWT", "kid": state.keys.active.kid}).encode())
    unsigned = f"{header}.{_b64(json.dumps(claims).encode())}."
    assert await _reason(gql, unsigned) == "algorithm_not_allowed"


@pytest.mark.parametrize("header", ["Basic abc", "Bearer", "Bearer not.a.jwt", "Bearer " + "x" * 3000])
async def test_garbage_authorization_headers(gql: GraphQLClient, header: str) -> None:
    response = await gql.http.post("/graphql", json={"query": ME}, headers={"authorization": header})
    assert response.status_code == 200
    assert error_codes(response.json()) == ["UNAUTHENTICATED"]


async def test_refresh_token_is_not_an_access_token(gql: GraphQLClient) -> None:
    tokens = await gql.login("resident")
    assert await _reason(gql, tokens["refreshToken"]) == "wrong_token_type"
    body = await gql(REFRESH, {"t": tokens["accessToken"]})
    assert error_codes(body) == ["UNAUTHENTICATED"]


async def test_refresh_rotates_and_reuse_revokes_the_family(gql: GraphQLClient) -> None:
    first = await gql.login("spouse")
    second = (await gql(REFRESH, {"t": first["refreshToken"]}))["data"]["refreshToken"]
    assert second["refreshToken"] != first["refreshToken"]
    third = (await gql(REFRESH, {"t": second["refreshToken"]}))["data"]["refreshToken"]
    assert "name" in (await gql(ME, token=third["accessToken"]))["data"]["me"]

    # The first refresh token comes back: someone copied it. The whole login ends.
    reused = await gql(REFRESH, {"t": first["refreshToken"]})
    assert error_codes(reused) == ["UNAUTHENTICATED"]
    assert reused["errors"][0]["extensions"]["reason"] == "refresh_token_reused"
    assert error_codes(await gql(REFRESH, {"t": third["refreshToken"]})) == ["UNAUTHENTICATED"]
    assert await _reason(gql, third["accessToken"]) == "session_revoked"

    # Another login of the same person is a different family and keeps working.
    other = await gql.login("spouse")
    assert "name" in (await gql(ME, token=other["accessToken"]))["data"]["me"]


async def test_logout_revokes_access_and_refresh(gql: GraphQLClient) -> None:
    tokens = await gql.login("stranger")
    assert (await gql(LOGOUT, {"t": tokens["refreshToken"]}))["data"]["logout"] is True
    assert await _reason(gql, tokens["accessToken"]) == "session_revoked"
    assert error_codes(await gql(REFRESH, {"t": tokens["refreshToken"]})) == ["UNAUTHENTICATED"]


def test_key_rotation_keeps_old_tokens_valid(tmp_path: Path) -> None:
    keystore.rotate(tmp_path, demo=True)
    ring = KeyRing(tmp_path)
    codec = TokenCodec(ring, issuer="yibao", access_ttl=timedelta(minutes=15), refresh_ttl=timedelta(days=1))
    now = datetime.now(UTC)
    old_kid = ring.active.kid
    old = codec.issue_access(account_id=1, role="resident", session_id="s", person_id=1, now=now)
    stale = KeyRing(tmp_path)  # another worker, opened before the rotation

    new_kid = keystore.rotate(tmp_path)
    ring.reload()
    assert ring.active.kid == new_kid != old_kid
    new = codec.issue_access(account_id=1, role="resident", session_id="s", person_id=1, now=now)
    assert jwt.get_unverified_header(new)["kid"] == new_kid
    assert codec.verify_access(old).account_id == codec.verify_access(new).account_id == 1
    assert {k["kid"] for k in ring.jwks()["keys"]} == {old_kid, new_kid}

    # The other worker verifies the new key's tokens: meeting an unknown kid makes it re-read the keys.
    stale_codec = TokenCodec(
        stale, issuer="yibao", access_ttl=timedelta(minutes=15), refresh_ttl=timedelta(days=1)
    )
    assert stale_codec.verify_access(new).account_id == 1

    # After the longest token lifetime, pruning drops the retired key and its tokens stop verifying.
    dropped = keystore.prune(tmp_path, keep_for=timedelta(0), now=now + timedelta(seconds=1))
    assert dropped == [old_kid]
    fresh = KeyRing(tmp_path)
    assert TokenCodec(
        fresh, issuer="yibao", access_ttl=timedelta(minutes=15), refresh_ttl=timedelta(days=1)
    ).verify_access(new)


def test_production_refuses_demo_settings(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="demo identity provider"):
        Settings(production=True, data_dir=tmp_path)
    with pytest.raises(ValidationError, match="GraphiQL"):
        Settings(production=True, identity_providers=["wechat"], wechat_app_secret="s", introspection=False)
    with pytest.raises(ValidationError, match="YIBAO_SYNC_AUDIENCE"):
        Settings(
            production=True, identity_providers=["wechat"], wechat_app_secret="s", graphiql=False,
            introspection=False,
        )  # fmt: skip
    ok = Settings(
        production=True,
        identity_providers=["wechat"],
        wechat_app_secret="s",
        graphiql=False,
        introspection=False,
        sync_audience="https://ybj.example.cn/sync",
        data_dir=tmp_path,
    )
    # ...and refuses demo (auto-generated) keys.
    keystore.rotate(ok.resolved_key_dir, demo=True)
    with pytest.raises(KeyStoreError, match="demo key"):
        AppState.build(ok)


async def test_login_is_rate_limited_per_client(app: object, settings: Settings) -> None:
    import httpx

    limited = settings.model_copy(update={"login_rate_limit": 3})
    from api.app import create_app

    state = app.state.yibao  # type: ignore[attr-defined]
    state_limited = AppState(**{**vars(state), "settings": limited})
    limited_app = create_app(limited, state_limited)
    transport = httpx.ASGITransport(app=limited_app, client=("192.0.2.77", 5000))
    async with httpx.AsyncClient(transport=transport, base_url="http://yibao.test") as http:
        gql = GraphQLClient(http)
        codes = []
        for _ in range(5):
            body = await gql('mutation { login(provider: "demo", code: "nobody") { accessToken } }')
            codes.append(error_codes(body)[0])
    assert codes[:3] == ["UNAUTHENTICATED"] * 3
    assert codes[3:] == ["RATE_LIMITED"] * 2


async def test_concurrent_refreshes_with_one_token_leave_one_live_pair(
    gql: GraphQLClient, state: AppState
) -> None:
    # Real concurrent transactions (separate connections; on PostgreSQL in CI's second leg): the
    # conditional UPDATE lets exactly one spend the token; the others, within the grace window, take
    # over from it in turn (each replacing the pair before), so in the end one refresh token is live.
    import asyncio

    from sqlalchemy import select
    from sqlmodel import col

    from api.auth.models import AuthSession, RefreshToken

    tokens = await gql.login("spouse")
    sid = str(_claims_of(tokens["refreshToken"])["sid"])
    bodies = await asyncio.gather(*(gql(REFRESH, {"t": tokens["refreshToken"]}) for _ in range(6)))
    winners = [b["data"]["refreshToken"] for b in bodies if "errors" not in b]
    assert winners and all(error_codes(b) == ["UNAUTHENTICATED"] for b in bodies if "errors" in b)
    unspent = select(col(RefreshToken.jti)).where(
        col(RefreshToken.session_id) == sid, col(RefreshToken.used_at).is_(None)
    )
    async with state.db.session() as session:
        live = (await session.execute(unspent)).scalars().all()
        login = await session.get(AuthSession, sid)
        assert login is not None and login.revoked_at is None
    assert len(live) == 1
    (survivor,) = [w for w in winners if _claims_of(w["refreshToken"])["jti"] == live[0]]
    assert "errors" not in await gql(REFRESH, {"t": survivor["refreshToken"]})


async def _age_rotation(state: AppState, refresh_token: str, seconds: float) -> None:
    """Moves the rotation of `refresh_token` `seconds` into the past (instead of waiting for it)."""
    from sqlalchemy import select, update
    from sqlmodel import col

    from api.auth.models import RefreshToken

    jti = str(_claims_of(refresh_token)["jti"])
    async with state.db.session() as session:
        query = select(col(RefreshToken.used_at)).where(col(RefreshToken.jti) == jti)
        used_at = (await session.execute(query)).scalar_one()
        assert used_at is not None
        await session.execute(
            update(RefreshToken)
            .where(col(RefreshToken.jti) == jti)
            .values(used_at=used_at - timedelta(seconds=seconds))
        )
        await session.commit()


async def test_refresh_retried_after_lost_answers_keeps_the_login(gql: GraphQLClient) -> None:
    # The phone sends its refresh token, the server rotates, the answer is lost (twice): the phone
    # retries with the token it still has and gets a pair; the login goes on.
    first = await gql.login("spouse")
    lost = (await gql(REFRESH, {"t": first["refreshToken"]}))["data"]["refreshToken"]
    lost_again = (await gql(REFRESH, {"t": first["refreshToken"]}))["data"]["refreshToken"]
    retried = await gql(REFRESH, {"t": first["refreshToken"]})
    assert "errors" not in retried, retried
    pair = retried["data"]["refreshToken"]
    assert len({lost["refreshToken"], lost_again["refreshToken"], pair["refreshToken"]}) == 3
    assert "name" in (await gql(ME, token=pair["accessToken"]))["data"]["me"]
    onward = await gql(REFRESH, {"t": pair["refreshToken"]})
    assert "errors" not in onward, onward
    assert "name" in (await gql(ME, token=onward["data"]["refreshToken"]["accessToken"]))["data"]["me"]


async def test_a_pair_replaced_by_a_grace_retry_is_dead(gql: GraphQLClient) -> None:
    # Whoever holds the pair the retry replaced (the thief who replayed the old token, or the phone
    # whose answer was not lost after all) ends the login with it: that is still reuse.
    first = await gql.login("spouse")
    replaced = (await gql(REFRESH, {"t": first["refreshToken"]}))["data"]["refreshToken"]
    current = (await gql(REFRESH, {"t": first["refreshToken"]}))["data"]["refreshToken"]
    reused = await gql(REFRESH, {"t": replaced["refreshToken"]})
    assert reused["errors"][0]["extensions"]["reason"] == "refresh_token_reused"
    assert error_codes(await gql(REFRESH, {"t": current["refreshToken"]})) == ["UNAUTHENTICATED"]
    assert await _reason(gql, current["accessToken"]) == "session_revoked"


async def test_refresh_retried_after_the_grace_window_ends_the_login(
    gql: GraphQLClient, state: AppState, settings: Settings
) -> None:
    first = await gql.login("spouse")
    second = (await gql(REFRESH, {"t": first["refreshToken"]}))["data"]["refreshToken"]
    await _age_rotation(state, first["refreshToken"], settings.refresh_reuse_grace_seconds + 1)
    reused = await gql(REFRESH, {"t": first["refreshToken"]})
    assert reused["errors"][0]["extensions"]["reason"] == "refresh_token_reused"
    assert error_codes(await gql(REFRESH, {"t": second["refreshToken"]})) == ["UNAUTHENTICATED"]
    assert await _reason(gql, second["accessToken"]) == "session_revoked"


async def test_only_the_token_just_rotated_gets_the_grace(gql: GraphQLClient) -> None:
    # Within seconds, but two rotations back: the token before the previous one is a copy.
    first = await gql.login("spouse")
    second = (await gql(REFRESH, {"t": first["refreshToken"]}))["data"]["refreshToken"]
    third = (await gql(REFRESH, {"t": second["refreshToken"]}))["data"]["refreshToken"]
    reused = await gql(REFRESH, {"t": first["refreshToken"]})
    assert reused["errors"][0]["extensions"]["reason"] == "refresh_token_reused"
    assert await _reason(gql, third["accessToken"]) == "session_revoked"
    # Nor does the previous one revive the revoked login.
    assert error_codes(await gql(REFRESH, {"t": second["refreshToken"]})) == ["UNAUTHENTICATED"]


async def test_grace_retry_after_logout_gets_nothing(gql: GraphQLClient) -> None:
    first = await gql.login("stranger")
    second = (await gql(REFRESH, {"t": first["refreshToken"]}))["data"]["refreshToken"]
    assert (await gql(LOGOUT, {"t": second["refreshToken"]}))["data"]["logout"] is True
    retried = await gql(REFRESH, {"t": first["refreshToken"]})
    assert error_codes(retried) == ["UNAUTHENTICATED"] and not retried.get("data"), retried
    assert retried["errors"][0]["extensions"]["reason"] == "session_revoked"


async def test_rate_limit_windows_are_counted_per_key_and_stale_ones_purged(state: AppState) -> None:
    from sqlalchemy import func, select

    from api import ratelimit
    from api.auth.models import RateLimitWindow
    from api.errors import RateLimited

    now = 2_000_000_000.0
    async with state.db.session() as session:
        for _ in range(3):
            await ratelimit.hit(session, "test:a", limit=3, window_s=60, now=now)
        with pytest.raises(RateLimited) as refused:
            await ratelimit.hit(session, "test:a", limit=3, window_s=60, now=now)
        assert refused.value.extra["retry_after_s"] >= 1
        await ratelimit.hit(session, "test:b", limit=3, window_s=60, now=now)  # another key, its own count
        await ratelimit.hit(session, "test:a", limit=3, window_s=60, now=now + 60)  # the next window
        stale = (
            select(func.count())
            .select_from(RateLimitWindow)
            .where(RateLimitWindow.window_start < now - 86_400)
        )
        session.add(RateLimitWindow(key="test:old", window_start=int(now) - 200_000, count=1))
        await session.commit()
        assert (await session.execute(stale)).scalar_one() >= 1
        await ratelimit.hit(session, "test:c", limit=3, window_s=60, now=now)  # a window opens: purge
        assert (await session.execute(stale)).scalar_one() == 0


async def test_disabling_an_account_stops_its_live_tokens(gql: GraphQLClient, state: AppState) -> None:
    from sqlalchemy import update

    from api.auth.models import Account

    tokens = await gql.login("stranger")
    claims = _claims_of(tokens["accessToken"])
    async with state.db.session() as session:
        await session.execute(
            update(Account).where(Account.id == int(str(claims["sub"]))).values(disabled=True)
        )
    try:
        assert await _reason(gql, tokens["accessToken"]) == "account_disabled"
    finally:
        async with state.db.session() as session:
            await session.execute(
                update(Account).where(Account.id == int(str(claims["sub"]))).values(disabled=False)
            )


async def test_concurrent_first_hits_with_stale_windows_do_not_deadlock(state: AppState) -> None:
    # On PostgreSQL (CI's second leg) the purge of stale windows once made concurrent first hits of
    # different keys lock each other's rows in opposite orders: "deadlock detected" instead of an answer.
    import asyncio

    from api import ratelimit
    from api.auth.models import RateLimitWindow

    now = 2_100_000_000.0
    for round_ in range(8):
        keys = [f"dl:{round_}:{n}" for n in range(4)]
        async with state.db.session() as session:
            for key in keys:
                session.add(RateLimitWindow(key=key, window_start=int(now) - 2 * 86_400 - round_, count=1))

        async def first_hit(key: str, at: float) -> None:
            async with state.db.session() as session:
                await ratelimit.hit(session, key, limit=10, window_s=60, now=at)

        await asyncio.gather(*(first_hit(key, now + round_ * 60) for key in keys))


@pytest.mark.parametrize("offset_s", [0, -1])
async def test_without_a_grace_window_a_second_use_is_always_reuse(
    gql: GraphQLClient, state: AppState, offset_s: int
) -> None:
    # reuse_grace=0 (refresh_reuse_grace_seconds = 0, "turns the grace off"): a second use at the same
    # instant, or by a request whose clock read a moment before the winner's (it then waited on the
    # winner's row lock, or runs on a worker whose clock is behind), is reuse like any other.
    from api.auth import service
    from api.errors import Unauthenticated

    first = await gql.login("spouse")
    now = datetime.now(UTC)
    async with state.db.session() as session:
        second = await service.refresh(session, state.tokens, first["refreshToken"], now=now)
    async with state.db.session() as session:
        with pytest.raises(Unauthenticated) as refused:
            await service.refresh(
                session, state.tokens, first["refreshToken"], now=now + timedelta(seconds=offset_s)
            )
    assert refused.value.extensions.get("reason") == "refresh_token_reused"
    assert await _reason(gql, second.access_token) == "session_revoked"


async def test_a_grace_retry_for_a_disabled_account_gets_nothing_and_spends_nothing(
    gql: GraphQLClient, state: AppState
) -> None:
    from sqlalchemy import update
    from sqlmodel import col

    from api.auth.models import Account

    first = await gql.login("stranger")
    second = (await gql(REFRESH, {"t": first["refreshToken"]}))["data"]["refreshToken"]
    account = col(Account.id) == int(str(_claims_of(first["accessToken"])["sub"]))
    async with state.db.session() as session:
        await session.execute(update(Account).where(account).values(disabled=True))
        await session.commit()
    try:
        retried = await gql(REFRESH, {"t": first["refreshToken"]})
        assert retried["errors"][0]["extensions"]["reason"] == "account_disabled", retried
        assert not retried.get("data")
    finally:
        async with state.db.session() as session:
            await session.execute(update(Account).where(account).values(disabled=False))
            await session.commit()
    # The refused retry replaced nothing: the phone's pair goes on.
    assert "errors" not in await gql(REFRESH, {"t": second["refreshToken"]})
