"""Routing errors answer JSON in the one error shape of DESIGN section 5, not Starlette's plain text."""

from __future__ import annotations

import httpx
import pytest


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH"])
async def test_a_method_graphql_does_not_take_is_a_json_405(client: httpx.AsyncClient, method: str) -> None:
    response = await client.request(method, "/graphql", content=b'{"query": "{ __typename }"}')
    assert response.status_code == 405
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"]["code"] == "BAD_REQUEST"
    assert set(response.headers["allow"].replace(" ", "").split(",")) >= {"GET", "POST"}


async def test_an_unknown_path_is_a_json_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/no-such-page")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {"error": {"message": "未找到", "code": "NOT_FOUND"}}
