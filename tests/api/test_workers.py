"""Several worker processes on one database (and PostgreSQL in CI's second leg): a logout and a key
rotation reach every worker, because nothing that matters lives in a worker's memory."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import jwt

from api.auth import keys as keystore

ME = {"query": "{ me { name } }"}


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
