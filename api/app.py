"""create_app(settings) -> Starlette: routes, the GraphQL endpoint, middleware."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import DEFAULT_EXCLUDED_CONTENT_TYPES, GZipMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from api.errors import ErrorCode
from api.filings.http import UPLOAD_BODY_BYTES, UPLOAD_PATH, filing_routes
from api.graphiql import graphiql_routes
from api.graphql_view import GraphQLView
from api.h5 import h5_routes
from api.middleware import BodySizeLimitMiddleware
from api.observability import RequestContextMiddleware
from api.replication.http import sync_routes
from api.schema import build_schema
from api.settings import Settings
from api.state import AppState

_HTTP_ERRORS = {
    404: ("未找到", ErrorCode.NOT_FOUND),
    405: ("不支持该请求方法", ErrorCode.BAD_REQUEST),
}


async def http_error(request: Request, exc: Exception) -> Response:
    """Routing errors (no such path, a method the route does not take) as JSON like every other 4xx,
    not Starlette's plain text: clients parse one error shape (DESIGN section 5)."""
    assert isinstance(exc, HTTPException)
    message, code = _HTTP_ERRORS.get(exc.status_code, ("请求有误", ErrorCode.BAD_REQUEST))
    if exc.status_code >= 500:
        message, code = "服务暂时不可用", ErrorCode.INTERNAL_SERVER_ERROR
    return JSONResponse(
        {"error": {"message": message, "code": code.value}},
        status_code=exc.status_code,
        headers=exc.headers,
    )


def create_app(settings: Settings | None = None, state: AppState | None = None) -> Starlette:
    settings = settings or Settings()
    state = state or AppState.build(settings)
    graphql = GraphQLView(
        state,
        schema=build_schema(settings),
        graphql_ide="graphiql" if settings.graphiql else None,
        allow_queries_via_get=True,
    )

    # Answers gzip-compressed when the client accepts it: a phone's first replication is ~126 KB of
    # JSON, ~10 KB compressed. Not multipart (incremental delivery, subscriptions over HTTP), whose parts
    # must reach the client as they come. No BREACH exposure: credentials travel in a header, never a
    # cookie, so another site cannot make an authenticated request whose answer size it could observe.
    graphql_http = GZipMiddleware(
        graphql,
        minimum_size=500,
        compresslevel=6,
        exclude_content_types=(*DEFAULT_EXCLUDED_CONTENT_TYPES, "multipart/mixed"),
    )

    async def healthz(request: Request) -> JSONResponse:
        ok = await state.db.ping()
        return JSONResponse(
            {"status": "ok" if ok else "database unavailable"}, status_code=200 if ok else 503
        )

    async def jwks(request: Request) -> JSONResponse:
        return JSONResponse(state.keys.jwks(), headers={"cache-control": "public, max-age=300"})

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await state.broker.start()  # this worker's live notifications (LISTEN on PostgreSQL)
        # The worker's long-lived heap (modules, schema, policies, mappers) is built by now: move it out
        # of the cyclic GC's reach, or every full collection walks it again (15-20% of a push's CPU,
        # bench/README issue 9). Collect first so no garbage is frozen for good. A process that runs
        # several apps at once or in turn (tests) freezes once, for the first, and that one thaws.
        froze = gc.get_freeze_count() == 0
        if froze:
            gc.collect()
            gc.freeze()
        try:
            yield
        finally:
            if froze:
                gc.unfreeze()
            await state.broker.stop()
            await state.db.dispose()

    middleware = []
    if settings.trusted_proxies:
        # The client's address from X-Forwarded-For, but only on requests from a named proxy.
        middleware.append(Middleware(ProxyHeadersMiddleware, trusted_hosts=settings.trusted_proxies))
    middleware += [
        Middleware(RequestContextMiddleware, metrics=state.metrics),
        Middleware(
            BodySizeLimitMiddleware,
            max_body_bytes=settings.max_body_bytes,
            overrides={UPLOAD_PATH: UPLOAD_BODY_BYTES},  # attachments: their own bound, streamed to disk
        ),
    ]
    if settings.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=settings.cors_origins,
                allow_methods=["GET", "POST"],
                allow_headers=["authorization", "content-type", "x-request-id"],
            )
        )
    app = Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/.well-known/jwks.json", jwks, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/graphql", graphql_http, methods=["GET", "POST"]),
            WebSocketRoute("/graphql", graphql),
            *sync_routes(state),  # /sync/enrol, /sync/pull, /sync/push: clinic terminals
            *filing_routes(state),  # /filings/{id}/attachments: upload and download
            *(graphiql_routes() if settings.graphiql else []),  # GraphiQL's assets, served offline
            *h5_routes(),  # /h5/: the mini-program's H5 twin
        ],
        middleware=middleware,
        exception_handlers={HTTPException: http_error},
        lifespan=lifespan,
    )
    app.state.yibao = state
    return app


def app_factory() -> Starlette:
    """Entry point for uvicorn workers (``--factory``): settings come from the environment."""
    from api.observability import configure_logging

    settings = Settings()
    configure_logging(settings.log_level, settings.log_json)
    return create_app(settings)
