"""Hypothesis builds GraphQL requests, good and bad, against a live server: none may get a 500."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FIELDS = [
    "me",
    "name",
    "idNumberMasked",
    "settlements",
    "contributions",
    "accountFlows",
    "edges",
    "node",
    "pageInfo",
    "totalCount",
    "facility",
    "yearTotals",
    "personalAccount",
    "balanceFen",
    "__typename",
    "login",
    "refreshToken",
    "logout",
    "accessToken",
    "nope",
    "__schema",
    "types",
]
ARGS = ["first", "after", "from", "to", "provider", "code", "refreshToken", "bogus"]
SCALARS = st.one_of(
    st.integers(min_value=-(2**40), max_value=2**40).map(str),
    st.text(max_size=20).map(json.dumps),
    st.sampled_from(
        ["null", "true", "2025-01-01", '"2025-13-45"', '"2025-02-30"', "[1,2]", "{a: 1}", "$v", '""']
    ),
)


@st.composite
def selections(draw: st.DrawFn, depth: int = 0) -> str:
    parts = []
    for _ in range(draw(st.integers(1, 3))):
        field = draw(st.sampled_from(FIELDS))
        if draw(st.booleans()):
            args = draw(st.lists(st.tuples(st.sampled_from(ARGS), SCALARS), max_size=3))
            if args:
                field += "(" + ", ".join(f"{k}: {v}" for k, v in args) + ")"
        if depth < 4 and draw(st.booleans()):
            field += " { " + draw(selections(depth + 1)) + " }"
        parts.append(field)
    return " ".join(parts)


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["query", "mutation", "", "query($v: String)", "subscription"]))
    body = draw(selections())
    query = f"{kind} {{ {body} }}" if kind else f"{{ {body} }}"
    if draw(st.integers(0, 9)) == 0:
        cut = draw(st.integers(0, len(query)))
        query = query[:cut]  # truncated documents
    request: dict[str, Any] = {"query": query}
    if draw(st.booleans()):
        request["variables"] = draw(
            st.one_of(
                st.none(),
                st.dictionaries(
                    st.sampled_from(["v", "first", "x"]),
                    st.one_of(st.integers(), st.text(max_size=5)),
                    max_size=2,
                ),
                st.just([1]),
            )
        )
    if draw(st.integers(0, 4)) == 0:
        request["operationName"] = draw(st.one_of(st.text(max_size=8), st.integers()))
    return request


@pytest.fixture(scope="module")
def http(live_server: str) -> httpx.Client:
    with httpx.Client(base_url=live_server, timeout=30) as client:
        token = client.post(
            "/graphql",
            json={"query": 'mutation { login(provider: "demo", code: "resident") { accessToken } }'},
        ).json()["data"]["login"]["accessToken"]
        client.headers["x-fuzz-token"] = token
        yield client


def _check(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    body = response.json()
    for error in body.get("errors", []):
        assert error.get("extensions", {}).get("code"), body
        assert "Traceback" not in json.dumps(error)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    request=documents(),
    authenticated=st.booleans(),
    accept=st.sampled_from(["application/json", "application/graphql-response+json", "*/*"]),
)
def test_generated_graphql_requests_never_get_a_500(
    http: httpx.Client, request: dict[str, Any], authenticated: bool, accept: str
) -> None:
    headers = {"accept": accept}
    if authenticated:
        headers["authorization"] = "Bearer " + http.headers["x-fuzz-token"]
    _check(http.post("/graphql", json=request, headers=headers))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    raw=st.binary(max_size=300),
    content_type=st.sampled_from(
        ["application/json", "application/graphql", "multipart/form-data", "text/plain", ""]
    ),
)
def test_raw_bodies_never_get_a_500(http: httpx.Client, raw: bytes, content_type: str) -> None:
    response = http.post("/graphql", content=raw, headers={"content-type": content_type})
    assert response.status_code < 500, response.text
