"""Defects found by a review of issue 8 ("Harden the base") against a live server, as regression tests.
All are fixed now (4e2aad9, 3d6aaee, c24d884, 0fe8581, and the last two in the WebSocket token check and
jsonlimits.find_bad_text's bounded path); each test was checked to fail before its fix.

Waits on a WebSocket are bounded (WAIT) so that a server that never answers fails the test instead of
hanging it; nothing asserts how long anything took.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from api.auth.models import Role
from api.notifications import service as notifications
from api.state import AppState
from tests.api import familyworld as world
from tests.conftest import GraphQLClient, error_codes

GRJSON = "application/graphql-response+json"
PROTOCOL = "graphql-transport-ws"
WAIT = 15.0
"""Upper bound on waiting for one WebSocket message; never an assertion on how long anything took."""

HUGE_NUMBER = "1" * 4301
"""A JSON number past Python's int-string limit (4300 digits): int() raises ValueError, not
JSONDecodeError. A 4 KB body, anonymous."""


async def post_raw(client: httpx.AsyncClient, body: str) -> httpx.Response:
    return await client.post(
        "/graphql", content=body, headers={"content-type": "application/json", "accept": GRJSON}
    )


def _ws(url: str) -> str:
    return url.replace("http://", "ws://") + "/graphql"


async def _open(url: str, token: str) -> ClientConnection:
    ws = await connect(_ws(url), subprotocols=[PROTOCOL], max_size=2**24)  # type: ignore[list-item]
    await ws.send(json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}}))
    assert json.loads(await asyncio.wait_for(ws.recv(), WAIT)) == {"type": "connection_ack"}
    return ws


async def _receive(ws: ClientConnection, within: float = WAIT) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), within))
    return message


def _payload_errors(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The errors of a graphql-transport-ws `error` (a list) or `next` (a result) message."""
    payload = message.get("payload")
    if message.get("type") == "error":
        assert isinstance(payload, list), message
        return payload
    assert isinstance(payload, dict), message
    errors: list[dict[str, Any]] = payload.get("errors") or []
    return errors


# --- 1. a JSON number past Python's int-string limit is a 500 -------------------------------------


async def test_a_json_number_past_the_int_digit_limit_is_a_400_in_a_post(client: httpx.AsyncClient) -> None:
    response = await post_raw(client, '{"query": "{ __typename }", "variables": {"a": ' + HUGE_NUMBER + "}}")
    assert response.status_code == 400
    assert error_codes(response.json()) == ["BAD_REQUEST"]


async def test_a_json_number_past_the_int_digit_limit_is_a_400_in_get_variables(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get(
        "/graphql",
        params={"query": "{ __typename }", "variables": '{"a": ' + HUGE_NUMBER + "}"},
        headers={"accept": GRJSON},
    )
    assert response.status_code == 400
    assert error_codes(response.json()) == ["BAD_REQUEST"]


async def test_a_json_number_past_the_int_digit_limit_closes_a_websocket_with_4400(live_server: str) -> None:
    async with connect(_ws(live_server), subprotocols=[PROTOCOL]) as ws:  # type: ignore[list-item]
        await ws.send('{"type": "connection_init", "payload": {"a": ' + HUGE_NUMBER + "}}")
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), WAIT)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4400


@pytest.mark.parametrize("text", ['{"id": "x", "a": ' + HUGE_NUMBER + "}", 'id = "x"\na = ' + HUGE_NUMBER])
async def test_a_policy_text_with_a_huge_number_is_bad_input(gql: GraphQLClient, text: str) -> None:
    await gql.login("admin")
    body = await gql("mutation($t: String) { createPolicyVersion(input: {text: $t}) { id } }", {"t": text})
    assert error_codes(body) == ["BAD_USER_INPUT"], body


# --- 2. client text holding a lone surrogate, echoed raw, cannot be encoded -------------------------


async def test_an_operation_name_with_a_lone_surrogate_is_a_coded_400(client: httpx.AsyncClient) -> None:
    response = await post_raw(client, '{"query": "query A { __typename }", "operationName": "\\ud800"}')
    assert response.status_code == 400
    assert error_codes(response.json()) == ["BAD_REQUEST"]


async def test_a_websocket_operation_id_with_a_lone_surrogate_still_gets_an_answer(
    state: AppState, live_server: str
) -> None:
    me = await world.person(state)
    assert me.token
    ws = await _open(live_server, me.token)
    try:
        await ws.send('{"id": "\\ud800", "type": "subscribe", "payload": {"query": "{ __typename }"}}')
        message = await _receive(ws)
        assert message["id"] == "\ud800" and message["type"] in ("next", "error")
    finally:
        await ws.close()


@pytest.mark.parametrize(
    "message", ['{"id": "1", "type": "\\ud800"}', '{"id": "1", "type": "' + "t" * 300 + '"}']
)
async def test_a_websocket_refusal_quoting_client_text_still_closes_with_a_code(
    state: AppState, live_server: str, message: str
) -> None:
    """The close reason quotes the unknown message type: it must stay encodable and fit a close frame."""
    me = await world.person(state)
    assert me.token
    ws = await _open(live_server, me.token)
    try:
        await ws.send(message)
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), WAIT)
    finally:
        await ws.close()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4400


@pytest.mark.parametrize("name", ["\\ud800", "o" * 300])
async def test_an_unknown_operation_name_over_the_websocket_is_a_short_coded_error(
    state: AppState, live_server: str, name: str
) -> None:
    me = await world.person(state)
    assert me.token
    ws = await _open(live_server, me.token)
    try:
        await ws.send(
            '{"id": "1", "type": "subscribe", "payload": {"query": "query A { __typename }", "operationName": "'
            + name
            + '"}}'
        )
        errors = _payload_errors(await _receive(ws))
    finally:
        await ws.close()
    assert [e.get("extensions", {}).get("code") for e in errors] == ["BAD_REQUEST"], errors
    assert len(errors[0]["message"]) <= 300


# --- 3. errors echo their input -----------------------------------------------------------------------


async def test_an_unknown_operation_name_is_not_echoed_whole(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/graphql", json={"query": "query A { __typename }", "operationName": "x" * 900_000}
    )
    assert response.status_code == 400
    message = response.json()["errors"][0]["message"]
    assert len(message) <= 300, len(message)


async def test_the_field_named_for_unstorable_text_is_not_the_clients_key_whole(
    client: httpx.AsyncClient,
) -> None:
    key = "k" * 90_000
    response = await client.post(
        "/graphql",
        json={
            "query": "mutation($r: String!) { logout(refreshToken: $r) }",
            "variables": {"r": {key: "\x00"}},
        },
    )
    error = response.json()["errors"][0]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert len(json.dumps(error, ensure_ascii=False)) <= 600, len(json.dumps(error))


# --- 4. nothing sent over the WebSocket is classified --------------------------------------------------


async def test_a_validation_error_over_the_websocket_has_a_code(state: AppState, live_server: str) -> None:
    me = await world.person(state)
    assert me.token
    ws = await _open(live_server, me.token)
    try:
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": "{ nope }"}}))
        errors = _payload_errors(await _receive(ws))
    finally:
        await ws.close()
    assert [e.get("extensions", {}).get("code") for e in errors] == ["GRAPHQL_VALIDATION_FAILED"], errors


async def test_an_error_over_the_websocket_does_not_echo_its_input(state: AppState, live_server: str) -> None:
    me = await world.person(state)
    assert me.token
    ws = await _open(live_server, me.token)
    try:
        query = "{ " + "x" * 100_000 + " }"
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": query}}))
        errors = _payload_errors(await _receive(ws))
    finally:
        await ws.close()
    assert errors and all(len(e["message"]) <= 300 for e in errors), [len(e["message"]) for e in errors]


async def test_a_syntax_error_over_the_websocket_is_reported(state: AppState, live_server: str) -> None:
    me = await world.person(state)
    assert me.token
    ws = await _open(live_server, me.token)
    try:
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": "{ __typename "}}))
        message = await _receive(ws)
    finally:
        await ws.close()
    assert message["type"] in ("next", "error"), message
    assert [e.get("extensions", {}).get("code") for e in _payload_errors(message)] == ["GRAPHQL_PARSE_FAILED"]


# --- 5. InputGuard does not guard subscriptions ----------------------------------------------------------


async def test_two_subscriptions_without_an_operation_name_are_refused(
    state: AppState, live_server: str
) -> None:
    me = await world.person(state)
    assert me.token
    document = "subscription A { notificationAdded { id } } subscription B { notificationAdded { title } }"
    ws = await _open(live_server, me.token)
    try:
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": document}}))
        # A refusal arrives at once; a subscription that started is shown by the first notification it
        # delivers. Probe notifications until one of the two is heard.
        deadline = time.monotonic() + 60
        message: dict[str, Any] | None = None
        while message is None and time.monotonic() < deadline:
            async with state.db.session() as session:
                await notifications.notify(session, me.person_id, "filing.status", "探测", "探测", {})
            try:
                message = await _receive(ws, within=0.5)
            except TimeoutError:
                continue
    finally:
        await ws.close()
    assert message is not None and message["type"] in ("next", "error"), message
    codes = [e.get("extensions", {}).get("code") for e in _payload_errors(message)]
    assert codes == ["GRAPHQL_VALIDATION_FAILED"], message


# --- 6. a bad id names a field the operation does not have ------------------------------------------


async def test_a_bad_link_request_id_names_the_id_argument(gql: GraphQLClient, state: AppState) -> None:
    relative = await world.person(state)
    reviewer = await world.staff(state, Role.REVIEWER)
    answered = await gql(
        'mutation { respondFamilyLink(id: "１", accept: false) { id } }', token=relative.token
    )
    decided = await gql(
        'mutation { decideProxyLink(id: "１", approve: false, note: "x") { id } }', token=reviewer
    )
    for body in (answered, decided):
        assert body["errors"][0]["extensions"] == {"code": "BAD_USER_INPUT", "field": "id"}, body


async def test_a_bad_estimate_link_id_names_the_input_field(gql: GraphQLClient) -> None:
    await gql.login("resident")
    body = await gql(
        "query($i: EstimateSettlementInput!) { estimateSettlement(input: $i) { totalFen } }",
        {
            "i": {
                "category": "inpatient",
                "items": [{"amountFen": 100, "itemClass": "class_a"}],
                "facilityLevel": "village",
                "linkId": "１",
            }
        },
    )
    assert body["errors"][0]["extensions"] == {"code": "BAD_USER_INPUT", "field": "input.linkId"}, body


# --- open at 6e522cc, fixed since ------------------------------------------------------------------------


@pytest.mark.parametrize("token", ["Bearer \\ud800", "Bearer \\udfff.x.y"])
async def test_a_websocket_token_that_is_not_utf8_is_refused_with_4403(live_server: str, token: str) -> None:
    async with connect(_ws(live_server), subprotocols=[PROTOCOL]) as ws:  # type: ignore[list-item]
        await ws.send('{"type": "connection_init", "payload": {"Authorization": "' + token + '"}}')
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), WAIT)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403


async def test_sync_names_a_field_of_unstorable_text_with_a_short_prefix(client: httpx.AsyncClient) -> None:
    key = "k" * 90_000
    response = await client.post(
        "/sync/enrol", content=json.dumps({key: "\x00"}), headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "BAD_USER_INPUT"
    assert len(json.dumps(error, ensure_ascii=False)) <= 600, len(json.dumps(error))
