"""Several worker processes on one database (and PostgreSQL in CI's second leg): a logout and a key
rotation reach every worker, because nothing that matters lives in a worker's memory."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest

from api.auth import keys as keystore
from api.settings import Settings
from api.state import AppState

ME = {"query": "{ me { name } }"}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def two_workers(settings: Settings, state: AppState, tmp_path: Path) -> Iterator[str]:
    port = _free_port()
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


def _fresh_connection_calls(url: str, token: str, n: int = 12) -> list[str | None]:
    """Each call on a new connection, so the kernel spreads them over both workers."""
    codes = []
    for _ in range(n):
        with httpx.Client(base_url=url, headers={"authorization": f"Bearer {token}"}) as http:
            body = http.post("/graphql", json=ME).json()
        codes.append(body["errors"][0]["extensions"]["code"] if "errors" in body else None)
    return codes


def _login(url: str, code: str = "resident") -> dict[str, str]:
    body = httpx.post(
        url + "/graphql",
        json={
            "query": f'mutation {{ login(provider: "demo", code: "{code}") {{ accessToken refreshToken }} }}'
        },
    ).json()
    tokens: dict[str, str] = body["data"]["login"]
    return tokens


def test_logout_reaches_every_worker(two_workers: str) -> None:
    tokens = _login(two_workers)
    assert _fresh_connection_calls(two_workers, tokens["accessToken"]) == [None] * 12
    logout = "mutation($t: String!) { logout(refreshToken: $t) }"
    httpx.post(two_workers + "/graphql", json={"query": logout, "variables": {"t": tokens["refreshToken"]}})
    assert _fresh_connection_calls(two_workers, tokens["accessToken"]) == ["UNAUTHENTICATED"] * 12


def test_key_rotation_reaches_every_worker_without_logging_anyone_out(
    two_workers: str, tmp_path: Path
) -> None:
    before = _login(two_workers)
    new_kid = keystore.rotate(tmp_path / "keys")
    time.sleep(1.2)  # workers notice a changed key manifest within a second, or at once on an unknown kid
    after = _login(two_workers)
    assert jwt.get_unverified_header(after["accessToken"])["kid"] == new_kid
    assert jwt.get_unverified_header(before["accessToken"])["kid"] != new_kid
    assert _fresh_connection_calls(two_workers, before["accessToken"]) == [None] * 12
    assert _fresh_connection_calls(two_workers, after["accessToken"]) == [None] * 12
    kids = {key["kid"] for key in httpx.get(two_workers + "/.well-known/jwks.json").json()["keys"]}
    assert new_kid in kids and jwt.get_unverified_header(before["accessToken"])["kid"] in kids
