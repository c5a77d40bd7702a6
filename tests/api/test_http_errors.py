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


async def test_graphql_answers_are_gzipped_when_the_client_accepts_it(client: httpx.AsyncClient) -> None:
    # Big enough to be worth compressing (the schema's type names), small enough to stay a unit test.
    query = {"query": "{ __schema { types { name description } } }"}
    plain = await client.post("/graphql", json=query, headers={"accept-encoding": "identity"})
    packed = await client.post("/graphql", json=query, headers={"accept-encoding": "gzip"})
    assert "content-encoding" not in plain.headers
    assert packed.headers["content-encoding"] == "gzip"
    assert int(packed.headers["content-length"]) < len(plain.content) / 2
    assert packed.json() == plain.json()  # httpx inflates it
