"""Login, refresh-token rotation with reuse detection, logout, and access-token checks."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from api.auth.models import Account, AuthSession, RefreshToken, Role
from api.auth.providers import IdentityProvider, check_code
from api.auth.tokens import RefreshClaims, TokenCodec
from api.db import dialect_insert
from api.errors import BadUserInput, Unauthenticated

log = logging.getLogger("api.auth")

# A grace retry that finds its successor spent without a successor of its own (replaced by another
# grace retry) reads again. With the token's row locked first (PostgreSQL) or SQLite's one writer, the
# successor it reads is already the current one, so this is a bound, not an expected path; past it,
# reuse.
_GRACE_ROUNDS = 8


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int


@dataclass(frozen=True)
class Viewer:
    """The caller of one request, as proven by a live access token."""

    account_id: int
    role: Role
    session_id: str
    person_id: int | None


async def _issue_pair(
    session: AsyncSession,
    codec: TokenCodec,
    account: Account,
    session_id: str,
    now: datetime,
    jti: str | None = None,
) -> TokenPair:
    assert account.id is not None
    jti = jti or str(uuid.uuid4())
    session.add(
        RefreshToken(jti=jti, session_id=session_id, issued_at=now, expires_at=now + codec.refresh_ttl)
    )
    access = codec.issue_access(
        account_id=account.id, role=account.role, session_id=session_id, person_id=account.person_id, now=now
    )
    refresh = codec.issue_refresh(account_id=account.id, session_id=session_id, jti=jti, now=now)
    return TokenPair(access, refresh, int(codec.access_ttl.total_seconds()))


async def login(
    session: AsyncSession,
    codec: TokenCodec,
    providers: dict[str, IdentityProvider],
    provider_name: str,
    code: str,
    now: datetime | None = None,
) -> TokenPair:
    now = now or datetime.now(UTC)
    provider = providers.get(provider_name)
    if provider is None:
        raise BadUserInput("不支持的登录方式", field="provider")
    identity = await provider.authenticate(check_code(code))
    find = select(Account).where(
        col(Account.provider) == identity.provider, col(Account.subject) == identity.subject
    )
    account = (await session.execute(find)).scalar_one_or_none()
    if account is None:
        if provider_name == "demo":
            raise Unauthenticated("演示数据尚未加载", reason="demo_account_missing")
        # A first WeChat login creates a resident account; binding it to an insured person is a
        # separate, real-name step. Two first logins at once (a mini-program's double wx.login) must
        # both succeed: the loser of the insert race finds the winner's row.
        table = Account.__table__  # type: ignore[attr-defined]
        await session.execute(
            dialect_insert(session)(table)
            .values(
                provider=identity.provider,
                subject=identity.subject,
                role=Role.RESIDENT.value,
                display_name="",
                disabled=False,
                created_at=now,
            )
            .on_conflict_do_nothing(index_elements=["provider", "subject"])
        )
        account = (await session.execute(find)).scalar_one()
    if account.disabled:
        raise Unauthenticated("账号已停用", reason="account_disabled")
    auth_session = AuthSession(id=str(uuid.uuid4()), account_id=account.id, created_at=now)  # type: ignore[arg-type]
    session.add(auth_session)
    pair = await _issue_pair(session, codec, account, auth_session.id, now)
    await session.commit()
    return pair


async def _revoke_session(session: AsyncSession, session_id: str, reason: str, now: datetime) -> None:
    await session.execute(
        update(AuthSession)
        .where(col(AuthSession.id) == session_id, col(AuthSession.revoked_at).is_(None))
        .values(revoked_at=now, revoked_reason=reason)
    )


async def _reuse(session: AsyncSession, session_id: str, now: datetime) -> Unauthenticated:
    # A spent token came back: someone holds a copy. End the whole login for everyone.
    await _revoke_session(session, session_id, "refresh_token_reuse", now)
    await session.commit()
    return Unauthenticated("登录凭证已失效，请重新登录", reason="refresh_token_reused")


async def _spend_within_grace(
    session: AsyncSession, claims: RefreshClaims, new_jti: str, now: datetime, grace: timedelta
) -> None:
    """A spent refresh token presented again: the phone whose answer was lost, or a thief. Within
    `grace` of its own rotation, and only while the token it was traded for is still the session's
    current one (never presented), that successor is spent in its place and the caller gets a new
    pair: whoever held the successor is then the one whose next refresh ends the login. Anything else
    (an older token, a token replaced by a grace retry rather than presented, too late) is reuse."""
    # The token's row is locked before its successor's, by every grace retry: a refresh whose UPDATE
    # of the token waited on the winner already holds it (PostgreSQL keeps the row lock it took to
    # re-check the WHERE), and a retry that locked the successor first and then wanted the token
    # deadlocked with it. Tokens are locked oldest first along a login's chain, so none can cycle.
    # SQLite ignores the clause: its one writer already serialises these transactions.
    read = (
        select(col(RefreshToken.session_id), col(RefreshToken.used_at), col(RefreshToken.replaced_by))
        .where(col(RefreshToken.jti) == claims.jti)
        .with_for_update(key_share=True)
    )
    for _ in range(_GRACE_ROUNDS):
        row = (await session.execute(read)).first()
        if row is None:
            raise Unauthenticated("登录凭证无效，请重新登录", reason="unknown_refresh_token")
        session_id, used_at, successor = row
        # `now - used_at` may be negative (a duplicate whose clock read before the winner's, then waited
        # on its row lock; another worker's clock): that is within a grace, but a grace of 0 is none.
        if grace <= timedelta(0) or successor is None or used_at is None or now - used_at > grace:
            raise await _reuse(session, session_id, now)
        superseded = await session.execute(
            update(RefreshToken)
            .where(col(RefreshToken.jti) == successor, col(RefreshToken.used_at).is_(None))
            .values(used_at=now)
        )
        if superseded.rowcount == 1:  # type: ignore[attr-defined]
            await session.execute(
                update(RefreshToken)
                .where(col(RefreshToken.jti) == claims.jti, col(RefreshToken.replaced_by) == successor)
                .values(replaced_by=new_jti)
            )
            log.warning(
                "refresh token presented again within the grace window: its successor is replaced",
                extra={"session_id": session_id, "jti": claims.jti, "replaced": successor},
            )
            return
        # The successor is spent: presented itself (it has a successor of its own), this token is
        # older than the previous one; else replaced by another grace retry: read again.
        onward = (
            await session.execute(
                select(col(RefreshToken.replaced_by)).where(col(RefreshToken.jti) == successor)
            )
        ).scalar_one_or_none()
        if onward is not None:
            raise await _reuse(session, session_id, now)
    raise await _reuse(session, claims.session_id, now)


async def refresh(
    session: AsyncSession,
    codec: TokenCodec,
    token: str,
    now: datetime | None = None,
    *,
    reuse_grace: timedelta = timedelta(0),
) -> TokenPair:
    now = now or datetime.now(UTC)
    claims = codec.verify_refresh(token)
    new_jti = str(uuid.uuid4())
    # Spend the token atomically: of two concurrent refreshes with one token, exactly one wins (the
    # others may then only take over from it within the grace window, _spend_within_grace).
    spent = await session.execute(
        update(RefreshToken)
        .where(
            col(RefreshToken.jti) == claims.jti,
            col(RefreshToken.session_id) == claims.session_id,
            col(RefreshToken.used_at).is_(None),
        )
        .values(used_at=now, replaced_by=new_jti)
    )
    if spent.rowcount != 1:  # type: ignore[attr-defined]
        await _spend_within_grace(session, claims, new_jti, now, reuse_grace)
    auth_session = await session.get(AuthSession, claims.session_id)
    account = await session.get(Account, claims.account_id)
    if auth_session is None or auth_session.revoked_at is not None:
        await session.rollback()
        raise Unauthenticated("登录已退出，请重新登录", reason="session_revoked")
    if account is None or account.disabled:
        await session.rollback()
        raise Unauthenticated("账号已停用", reason="account_disabled")
    pair = await _issue_pair(session, codec, account, auth_session.id, now, new_jti)
    await session.commit()
    return pair


async def logout(session: AsyncSession, codec: TokenCodec, token: str, now: datetime | None = None) -> None:
    claims = codec.verify_refresh(token)
    await _revoke_session(session, claims.session_id, "logout", now or datetime.now(UTC))
    await session.commit()


async def authenticate(session: AsyncSession, codec: TokenCodec, token: str) -> Viewer:
    """Checks an access token, that its login has not been revoked since it was issued, and that the
    account is not disabled: one indexed look-up, so either takes effect on the very next request."""
    claims = codec.verify_access(token)
    state = (
        await session.execute(
            select(col(AuthSession.revoked_at), col(Account.disabled))
            .join(Account, col(Account.id) == col(AuthSession.account_id))
            .where(col(AuthSession.id) == claims.session_id)
        )
    ).first()
    if state is None or state[0] is not None:
        raise Unauthenticated("登录已退出，请重新登录", reason="session_revoked")
    if state[1]:
        raise Unauthenticated("账号已停用", reason="account_disabled")
    try:
        role = Role(claims.role)
    except ValueError as exc:
        raise Unauthenticated("登录凭证无效，请重新登录", reason="invalid_claims") from exc
    return Viewer(claims.account_id, role, claims.session_id, claims.person_id)
