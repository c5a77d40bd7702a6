"""Per-request GraphQL context: the caller, one database session, the request's dataloaders."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import HTTPConnection
from strawberry.types import Info as StrawberryInfo

from api.auth import service as auth_service
from api.auth.service import Viewer
from api.errors import Unauthenticated
from api.state import AppState

T = TypeVar("T")


class Context:
    def __init__(self, connection: HTTPConnection, response: Any, state: AppState) -> None:
        self.connection = connection
        self.response = response
        self.state = state
        self.authorization: str | None = connection.headers.get("authorization")
        self.connection_params: dict[str, object] | None = None
        """graphql-transport-ws `connection_init` payload: where a WebSocket client puts its token."""
        self._session: AsyncSession | None = None
        # GraphQL resolves sibling fields concurrently, but one AsyncSession must not be used
        # concurrently: the lock takes turns on it within the request.
        self._lock = asyncio.Lock()
        self._viewer: Viewer | None = None
        self._viewer_checked = False
        self._loaders: dict[str, Any] = {}

    def begin_operation(self) -> None:
        """Each operation checks the caller afresh and gets fresh dataloaders. On HTTP a context serves
        one operation anyway; a WebSocket's context lives as long as the socket, and a logout, a revoked
        login or an expired token must stop its next operation."""
        self._viewer = None
        self._viewer_checked = False
        self._loaders.clear()

    @asynccontextmanager
    async def db(self) -> AsyncIterator[AsyncSession]:
        async with self._lock:
            if self._session is None:
                self._session = self.state.db.sessionmaker()
            yield self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def viewer(self) -> Viewer | None:
        """The authenticated caller, or None without credentials; a bad token is an error, not anonymity."""
        if not self._viewer_checked:
            if self.authorization:
                scheme, _, token = self.authorization.partition(" ")
                if scheme.lower() != "bearer" or not token.strip():
                    raise Unauthenticated("登录凭证格式有误", reason="malformed_authorization")
                async with self.db() as session:
                    self._viewer = await auth_service.authenticate(session, self.state.tokens, token.strip())
            self._viewer_checked = True
        return self._viewer

    async def require_viewer(self) -> Viewer:
        viewer = await self.viewer()
        if viewer is None:
            raise Unauthenticated()
        return viewer

    def loader(self, name: str, factory: Callable[[Context], T]) -> T:
        """One dataloader of each kind per request, so its cache never outlives the request."""
        if name not in self._loaders:
            self._loaders[name] = factory(self)
        loader: T = self._loaders[name]
        return loader

    @property
    def client_address(self) -> str:
        return self.connection.client.host if self.connection.client else "unknown"


Info = StrawberryInfo[Context, None]
