"""GraphQL: login, refresh-token rotation, logout."""

from __future__ import annotations

from datetime import timedelta

import strawberry

from api import ratelimit
from api.auth import service
from api.context import Info


@strawberry.type(description="A fresh pair of tokens. Keep the refresh token secret; it works once.")
class AuthPayload:
    access_token: str
    refresh_token: str
    expires_in: int = strawberry.field(description="Seconds until the access token expires.")

    @classmethod
    def from_pair(cls, pair: service.TokenPair) -> AuthPayload:
        return cls(
            access_token=pair.access_token, refresh_token=pair.refresh_token, expires_in=pair.expires_in
        )


@strawberry.type
class AuthMutation:
    @strawberry.mutation(description="Log in with an identity provider's one-time code (`demo` or `wechat`).")
    async def login(self, info: Info, provider: str, code: str) -> AuthPayload:
        ctx = info.context
        async with ctx.db() as session:
            await ratelimit.hit(
                session, f"login:{ctx.client_address}", limit=ctx.state.settings.login_rate_limit, window_s=60
            )
            pair = await service.login(session, ctx.state.tokens, ctx.state.providers, provider, code)
        return AuthPayload.from_pair(pair)

    @strawberry.mutation(
        description=(
            "Trade a refresh token for a new pair; a reused token ends the login, except the one just"
            " traded, presented again within the server's grace window (refresh_reuse_grace_seconds, 30 s by"
            " default: a retry after a lost answer); that retry replaces the pair the first use gave."
        )
    )
    async def refresh_token(self, info: Info, refresh_token: str) -> AuthPayload:
        async with info.context.db() as session:
            state = info.context.state
            grace = timedelta(seconds=state.settings.refresh_reuse_grace_seconds)
            pair = await service.refresh(session, state.tokens, refresh_token, reuse_grace=grace)
        return AuthPayload.from_pair(pair)

    @strawberry.mutation(description="End the login that this refresh token belongs to, on every device.")
    async def logout(self, info: Info, refresh_token: str) -> bool:
        async with info.context.db() as session:
            await service.logout(session, info.context.state.tokens, refresh_token)
        return True
