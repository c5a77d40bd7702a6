"""Review r3 of the /sync server (issue 9): defects a reviewer confirmed, now fixed (strict xfails until
then). Every answer to bad input must be a 4xx JSON, never a 500."""

from __future__ import annotations

import asyncio
import base64
import random

import httpx
import pytest
from starlette.applications import Starlette

from api.replication.admission import Admission, Refused, Slot
from api.state import AppState
from sync.protocol import uuid7
from tests.api import terminalworld as world


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _no_raise(app: Starlette) -> httpx.AsyncClient:
    """A client that sees the 500 a real server would send, not the exception."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://yibao.test")


@pytest.mark.parametrize("path", ["/sync/pull", "/sync/push"])
async def test_deeply_nested_assertion_claims_are_a_401_not_a_500(app: Starlette, path: str) -> None:
    token = _b64(b'{"alg":"EdDSA"}') + "." + _b64(b"[" * 1400) + ".AAAA"
    async with _no_raise(app) as client:
        response = await client.post(path, content=b"{}", headers={"authorization": f"Bearer {token}"})
    assert response.status_code == 401, (response.status_code, response.text[:200])


@pytest.mark.parametrize("path", ["/sync/pull", "/sync/push"])
async def test_deeply_nested_assertion_header_is_a_401_not_a_500(app: Starlette, path: str) -> None:
    token = _b64(b"[" * 1400) + "." + _b64(b"{}") + ".AAAA"
    async with _no_raise(app) as client:
        response = await client.post(path, content=b"{}", headers={"authorization": f"Bearer {token}"})
    assert response.status_code == 401, (response.status_code, response.text[:200])


@pytest.mark.parametrize("client_time", ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59"])
async def test_a_client_time_at_the_edge_of_the_calendar_is_a_400_not_a_500(
    app: Starlette, client: httpx.AsyncClient, state: AppState, client_time: str
) -> None:
    enrolled = await world.enrol(client, state)
    body = {
        "mutations": [
            {"id": uuid7(), "seq": 1, "kind": "settlement.create", "clientTime": client_time, "payload": {}}
        ]
    }
    async with _no_raise(app) as raw:
        response = await raw.post("/sync/push", json=body, headers=enrolled.headers())
    assert response.status_code == 400, (response.status_code, response.text[:200])


async def test_a_forged_request_naming_a_terminal_does_not_lock_that_terminal_out() -> None:
    gate = Admission(1, max_waiting=4, max_wait_s=5.0, retry_after_max_s=60, rng=random.Random(3))
    busy = await gate.admit("1")  # some other terminal is being served
    assert isinstance(busy, Slot)
    forged = asyncio.ensure_future(gate.admit("7"))  # a stranger's garbage signature, iss "7"
    await asyncio.sleep(0)
    assert gate.waiting == 1
    real = asyncio.ensure_future(gate.admit("7"))  # terminal 7 itself, queue not full
    await asyncio.sleep(0)
    try:
        # The real terminal should be queued like anyone else, not refused because of the forgery.
        assert not (real.done() and isinstance(real.result(), Refused)), real.result()
    finally:
        busy.release()
        for task in (forged, real):
            outcome = await task
            if isinstance(outcome, Slot):
                outcome.release()


async def test_a_rejected_oversized_payload_is_not_stored_whole(state: AppState) -> None:
    import json

    from tests.api.test_push import (
        clinic,
        create,
        items,
        local_day,
        morning,
        mutation,
        pushed,
        run,
        terminal,
        villager,
    )

    place = await clinic(state)
    term = await terminal(state, place)
    who = await villager(state, place.village_code)
    at = morning()
    payload = create(items(1_000), local_day(at), person_ref=who.roster_ref)
    payload["junk"] = "x" * 5_000_000
    [result] = (await run(state, term, [mutation(1, payload, at)]))["results"]
    assert (result["status"], result["reason"]) == ("rejected", "bad_payload")
    [row] = await pushed(state, term)
    assert len(json.dumps(row.payload)) <= 64 * 1024
