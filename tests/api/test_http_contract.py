"""GraphQL over HTTP as the spec prescribes, and what bad requests get (never a 500)."""

from __future__ import annotations

import httpx

from tests.conftest import GraphQLClient, error_codes

GRJSON = "application/graphql-response+json"


async def test_healthz_jwks_metrics(client: httpx.AsyncClient) -> None:
    health = await client.get("/healthz")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    assert health.headers["x-request-id"]

    jwks = (await client.get("/.well-known/jwks.json")).json()
    assert jwks["keys"] and all(
        k["kty"] == "OKP" and k["crv"] == "Ed25519" and k["alg"] == "EdDSA" for k in jwks["keys"]
    )
    assert all("d" not in k for k in jwks["keys"]), "private key material must never be served"

    metrics = await client.get("/metrics")
    assert metrics.status_code == 200 and "yibao_http_requests_total" in metrics.text


async def test_request_id_is_echoed_or_replaced(client: httpx.AsyncClient) -> None:
    kept = await client.get("/healthz", headers={"x-request-id": "abc-123"})
    assert kept.headers["x-request-id"] == "abc-123"
    replaced = await client.get("/healthz", headers={"x-request-id": "bad id\twith junk"})
    assert replaced.headers["x-request-id"] != "bad id\twith junk"


async def test_query_over_get_and_post_with_media_types(client: httpx.AsyncClient) -> None:
    query = "{ __typename }"
    got = await client.get("/graphql", params={"query": query}, headers={"accept": GRJSON})
    assert got.status_code == 200
    assert got.headers["content-type"].startswith(GRJSON)
    assert got.json() == {"data": {"__typename": "Query"}}

    posted = await client.post("/graphql", json={"query": query}, headers={"accept": "application/json"})
    assert posted.status_code == 200 and posted.headers["content-type"].startswith("application/json")


async def test_mutation_over_get_is_method_not_allowed(client: httpx.AsyncClient) -> None:
    response = await client.get(
        "/graphql", params={"query": 'mutation { logout(refreshToken: "x") }'}, headers={"accept": GRJSON}
    )
    assert response.status_code == 405
    assert error_codes(response.json()) == ["BAD_REQUEST"]


async def test_malformed_json_is_400_with_json_body(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/graphql", content=b'{"query": ', headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert error_codes(response.json()) == ["BAD_REQUEST"]


async def test_wrong_content_type_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/graphql", content=b"{ __typename }", headers={"content-type": "text/plain"}
    )
    assert response.status_code == 400
    assert error_codes(response.json()) == ["BAD_REQUEST"]


async def test_unknown_field_is_a_request_error(gql: GraphQLClient) -> None:
    body = await gql("{ me { name shoeSize } }")
    assert gql.last is not None and gql.last.status_code == 400
    assert "data" not in body
    assert error_codes(body) == ["GRAPHQL_VALIDATION_FAILED"]

    legacy = await gql("{ nope }", accept="application/json")
    assert gql.last.status_code == 200 and error_codes(legacy) == ["GRAPHQL_VALIDATION_FAILED"]


async def test_syntax_error_has_parse_code(gql: GraphQLClient) -> None:
    body = await gql("{ me { ")
    assert gql.last is not None and gql.last.status_code == 400
    assert error_codes(body) == ["GRAPHQL_PARSE_FAILED"]


async def test_bad_variables_are_bad_user_input(gql: GraphQLClient) -> None:
    body = await gql("query($n: Int) { me { settlements(first: $n) { totalCount } } }", {"n": "lots"})
    assert gql.last is not None and gql.last.status_code == 400
    assert error_codes(body) == ["BAD_USER_INPUT"]


async def test_ten_megabyte_body_is_refused(client: httpx.AsyncClient) -> None:
    padding = "#" + "x" * (10 * 1024 * 1024)
    response = await client.post("/graphql", json={"query": padding + "\n{ __typename }"})
    assert response.status_code == 413
    assert error_codes(response.json()) == ["PAYLOAD_TOO_LARGE"]


async def test_streamed_body_without_length_is_limited_too(client: httpx.AsyncClient) -> None:
    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(40):
            yield b"x" * 65536

    response = await client.post("/graphql", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413


async def test_query_nested_fifty_deep_is_refused(gql: GraphQLClient) -> None:
    inner = "__typename"
    for _ in range(50):
        inner = f"me {{ {inner} }}"
    body = await gql("{ " + inner + " }")
    assert gql.last is not None and gql.last.status_code == 400
    assert set(error_codes(body)) <= {"GRAPHQL_VALIDATION_FAILED", "GRAPHQL_PARSE_FAILED"}


async def test_a_thousand_aliases_are_refused(gql: GraphQLClient) -> None:
    query = "{ " + " ".join(f"a{n}: __typename" for n in range(1000)) + " }"
    body = await gql(query)
    assert gql.last is not None and gql.last.status_code == 400
    assert error_codes(body) and set(error_codes(body)) <= {
        "GRAPHQL_VALIDATION_FAILED",
        "GRAPHQL_PARSE_FAILED",
    }


async def test_field_error_keeps_data_and_status_200(gql: GraphQLClient) -> None:
    body = await gql("{ me { name } }")  # no token: the field fails, the request itself was fine
    assert gql.last is not None and gql.last.status_code == 200
    assert "data" in body and body["data"] is None
    assert error_codes(body) == ["UNAUTHENTICATED"]


async def test_json_that_is_not_an_object_is_400(client: httpx.AsyncClient) -> None:
    for body in (b"0", b'"query"', b"null", b"true"):
        response = await client.post("/graphql", content=body, headers={"content-type": "application/json"})
        assert response.status_code == 400, body
        assert error_codes(response.json()) == ["BAD_REQUEST"]
