"""Shared fixtures: one migrated database with a small demo county per test run, the ASGI app on it,
and an httpx client that talks real HTTP semantics to the app.

The suite runs on SQLite by default. With YIBAO_TEST_POSTGRES_URL set (CI's PostgreSQL leg) it creates
a fresh PostgreSQL database for the run, runs the same tests against it, and drops it afterwards.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import settings as hypothesis_settings
from sqlalchemy.engine import make_url
from starlette.applications import Starlette

from api.app import create_app
from api.demo import load_demo_county
from api.migrate import upgrade
from api.settings import Settings
from api.state import AppState

TEST_PEOPLE = 120

# In CI the property and fuzz tests replay a fixed sequence of examples, so a run is reproducible and a
# landing never hinges on a lucky draw; on developers' machines they explore new examples each run.
hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")


def _postgres_database() -> tuple[str, str] | None:
    base = os.environ.get("YIBAO_TEST_POSTGRES_URL")
    if not base:
        return None
    name = f"yibao_test_{uuid.uuid4().hex[:10]}"
    return base, name


def _pg_url(base_url: str, *, database: str | None = None, drivername: str | None = None) -> str:
    """base_url naming another database or driver, its credentials and query kept."""
    url = make_url(base_url)
    url = url.set(database=database or url.database, drivername=drivername or url.drivername)
    return url.render_as_string(hide_password=False)


async def _admin_pg(base_url: str, sql: str) -> None:
    """Runs one statement on base_url's server, connected to the database base_url names or, when
    that one does not exist (a server with only the maintenance database), to `postgres`."""
    import asyncpg

    try:
        conn = await asyncpg.connect(_pg_url(base_url, drivername="postgresql"))
    except asyncpg.InvalidCatalogNameError:
        conn = await asyncpg.connect(_pg_url(base_url, drivername="postgresql", database="postgres"))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    pg = _postgres_database()
    if pg is None:
        yield f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('db') / 'yibao.db'}"
        return
    base, name = pg
    asyncio.run(_admin_pg(base, f'CREATE DATABASE "{name}"'))
    try:
        yield _pg_url(base, database=name)
    finally:
        asyncio.run(_admin_pg(base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Settings:
    data_dir: Path = tmp_path_factory.mktemp("data")
    return Settings(
        data_dir=data_dir,
        database_url=database_url,
        demo_people=TEST_PEOPLE,
        login_rate_limit=10_000,
        log_json=False,
    )


@pytest.fixture(scope="session")
async def state(settings: Settings) -> AsyncIterator[AppState]:
    upgrade(settings.resolved_database_url)
    app_state = AppState.build(settings)
    await load_demo_county(app_state, people=settings.demo_people, seed=settings.demo_seed)
    yield app_state
    await app_state.db.dispose()


@pytest.fixture(scope="session")
def app(settings: Settings, state: AppState) -> Starlette:
    return create_app(settings, state)


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=(f"10.0.{uuid.uuid4().int % 250}.1", 1234))
    async with httpx.AsyncClient(transport=transport, base_url="http://yibao.test") as http:
        yield http


class GraphQLClient:
    """Thin helper: POSTs a document, returns the decoded body; the raw response stays available."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.token: str | None = None
        self.last: httpx.Response | None = None

    async def __call__(
        self,
        query: str,
        variables: dict[str, Any] | None = None,
        *,
        token: str | None = None,
        accept: str = "application/graphql-response+json",
    ) -> dict[str, Any]:
        headers = {"accept": accept}
        bearer = token or self.token
        if bearer:
            headers["authorization"] = f"Bearer {bearer}"
        self.last = await self.http.post(
            "/graphql", json={"query": query, "variables": variables or {}}, headers=headers
        )
        assert self.last.status_code != 500, self.last.text
        body: dict[str, Any] = self.last.json()
        return body

    async def login(self, code: str) -> dict[str, Any]:
        body = await self(
            'mutation($code: String!) { login(provider: "demo", code: $code) '
            "{ accessToken refreshToken expiresIn } }",
            {"code": code},
        )
        assert "errors" not in body, body
        tokens: dict[str, Any] = body["data"]["login"]
        self.token = tokens["accessToken"]
        return tokens


@pytest.fixture
def gql(client: httpx.AsyncClient) -> GraphQLClient:
    return GraphQLClient(client)


def error_codes(body: dict[str, Any]) -> list[str]:
    return [error.get("extensions", {}).get("code") for error in body.get("errors", [])]


@contextmanager
def serving(settings: Settings, what: str = "the live server") -> Iterator[str]:
    """The app on a real uvicorn on loopback, in a thread with its own event loop and engine; its URL."""
    import threading

    import uvicorn

    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=free_port(), log_level="warning", lifespan="on"
        )
    )
    port = server.config.port
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError(f"{what} did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="session")
def live_server(settings: Settings, state: AppState) -> Iterator[str]:
    with serving(settings) as url:
        yield url


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def two_workers(settings: Settings, state: AppState, tmp_path: Path) -> Iterator[str]:
    """`yibao serve --workers 2` on the test run's database (migrated, demo loaded), with a copy of its
    key directory: what several-worker tests (logout, key rotation, replays, notifications) talk to."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("YIBAO_")}
    # The test's own database (already migrated, demo loaded) and a copy of its key directory.
    key_dir = tmp_path / "keys"
    key_dir.mkdir()
    for item in settings.resolved_key_dir.iterdir():
        (key_dir / item.name).write_bytes(item.read_bytes())
    env.update(
        YIBAO_DATA_DIR=str(settings.data_dir),
        YIBAO_KEY_DIR=str(key_dir),
        YIBAO_DATABASE_URL=settings.resolved_database_url,
        YIBAO_LOGIN_RATE_LIMIT="10000",
    )
    yibao = Path(sys.executable).with_name("yibao")
    process = subprocess.Popen(
        [str(yibao), "serve", "--port", str(port), "--workers", "2", "--no-demo"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, "workers did not start"
            time.sleep(0.2)
        yield url
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
