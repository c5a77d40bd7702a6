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
