"""An exhausted database pool is overload, not a bug: /sync answers 503 with Retry-After and a JSON
body, so terminals reconnecting at once wait as told (bench/terminal_drain.py saw 500s)."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy.exc import TimeoutError as PoolTimeout

from api.terminals import service


@pytest.mark.parametrize("route", ["/sync/pull", "/sync/push"])
async def test_an_exhausted_pool_is_a_503_with_retry_after(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, route: str
) -> None:
    async def busy(*args: object, **kwargs: object) -> None:
        raise PoolTimeout("QueuePool limit of size 10 overflow 10 reached")

    monkeypatch.setattr(service, "authenticate", busy)
    response = await client.post(route, json={}, headers={"authorization": "Bearer x"})
    assert response.status_code == 503
    assert int(response.headers["retry-after"]) > 0
    assert response.json()["error"]["code"] == "UPSTREAM_UNAVAILABLE"
