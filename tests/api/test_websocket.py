"""WebSocket /graphql (graphql-transport-ws): the token travels in connection_init's payload."""

from __future__ import annotations

import json

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

PROTOCOL = "graphql-transport-ws"


def _ws(url: str) -> str:
    return url.replace("http://", "ws://") + "/graphql"


async def _init(live_server: str, payload: object) -> dict[str, object] | int:
    """The server's answer to connection_init: the ack message, or the close code."""
    async with connect(_ws(live_server), subprotocols=[PROTOCOL]) as ws:  # type: ignore[list-item]
        await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
        try:
            message: dict[str, object] = json.loads(await ws.recv())
        except ConnectionClosed as closed:
            assert closed.rcvd is not None
            return closed.rcvd.code
        return message


async def test_valid_token_in_connection_init_is_acknowledged(live_server: str) -> None:
    async with httpx.AsyncClient(base_url=live_server) as http:
        body = (
            await http.post(
                "/graphql",
                json={"query": 'mutation { login(provider: "demo", code: "resident") { accessToken } }'},
            )
        ).json()
    token = body["data"]["login"]["accessToken"]
    assert await _init(live_server, {"Authorization": f"Bearer {token}"}) == {"type": "connection_ack"}


@pytest.mark.parametrize(
    "payload", [{}, {"Authorization": "Bearer forged.token.here"}, {"Authorization": 42}]
)
async def test_missing_or_bad_token_closes_with_4403(live_server: str, payload: object) -> None:
    assert await _init(live_server, payload) == 4403


async def test_each_operation_on_a_socket_checks_the_login_again(live_server: str) -> None:
    # A socket outlives its first check: after a logout its next operation must be refused, and the
    # database session of each operation is released when it ends.
    async with httpx.AsyncClient(base_url=live_server) as http:
        login = (
            await http.post(
                "/graphql",
                json={
                    "query": 'mutation { login(provider: "demo", code: "stranger") { accessToken refreshToken } }'
                },
            )
        ).json()["data"]["login"]
        async with connect(_ws(live_server), subprotocols=[PROTOCOL]) as ws:  # type: ignore[list-item]
            await ws.send(
                json.dumps(
                    {
                        "type": "connection_init",
                        "payload": {"Authorization": f"Bearer {login['accessToken']}"},
                    }
                )
            )
            assert json.loads(await ws.recv())["type"] == "connection_ack"

            async def ask(op_id: str) -> dict[str, object]:
                await ws.send(
                    json.dumps({"id": op_id, "type": "subscribe", "payload": {"query": "{ me { name } }"}})
                )
                message: dict[str, object] = json.loads(await ws.recv())
                assert message["type"] == "next" and message["id"] == op_id
                assert json.loads(await ws.recv())["type"] == "complete"
                return message["payload"]  # type: ignore[return-value]

            first = await ask("1")
            assert first["data"] == {"me": {"name": first["data"]["me"]["name"]}}  # type: ignore[index]
            await http.post(
                "/graphql",
                json={
                    "query": "mutation($t: String!) { logout(refreshToken: $t) }",
                    "variables": {"t": login["refreshToken"]},
                },
            )
            second = await ask("2")
            assert second["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"  # type: ignore[index]
