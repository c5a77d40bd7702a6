"""Review r3 of the terminal agent (issue 10): defects confirmed by a reviewer, kept as strict xfails
until they are fixed (then drop the marker). Whatever answers on the way (our server, a proxy, a
captive portal), the agent must turn it into a TerminalError: `watch` re-raises anything else and dies."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from terminal.client import Identity, SyncClient
from terminal.clock import ClockState
from terminal.errors import TerminalError, Unreachable


async def _pull_through(answer: Callable[[httpx.Request], httpx.Response]) -> BaseException:
    http = httpx.AsyncClient(transport=httpx.MockTransport(answer))
    identity = Identity("1", Ed25519PrivateKey.generate(), "http://yibao.test/sync")
    client = SyncClient("http://yibao.test", ClockState(), identity, http=http)
    try:
        await client.pull(None, 10)
    except BaseException as exc:  # the test asks which kind
        return exc
    finally:
        await http.aclose()
    raise AssertionError("the pull was answered")


async def test_a_retry_after_that_is_not_ascii_digits_is_ignored() -> None:
    exc = await _pull_through(
        lambda r: httpx.Response(503, headers=[(b"retry-after", b"\xb2")], content=b"{}")
    )
    assert isinstance(exc, Unreachable), repr(exc)


@pytest.mark.parametrize("status", [200, 400, 401])
async def test_a_deeply_nested_answer_is_a_bad_response_not_a_crash(status: int) -> None:
    exc = await _pull_through(lambda r: httpx.Response(status, content=b"[" * 100_000))
    assert isinstance(exc, TerminalError), repr(exc)


async def test_watch_waits_at_least_the_retry_after_of_an_overloaded_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from terminal import cli
    from terminal.keys import load_or_create_key
    from terminal.store import Store

    home = tmp_path / "home"
    store = Store.open(home, create=True)
    key = load_or_create_key(home)
    store.set(
        identity={
            "server": "http://yibao.test",
            "terminalId": "1",
            "clinicId": "1",
            "clinicName": "测试村卫生室",
            "villageCode": "110101001001",
            "regionCode": "110101",
            "facilityLevel": "village",
            "audience": "http://yibao.test/sync",
        }
    )
    overloaded = {"error": {"message": "服务繁忙", "code": "UPSTREAM_UNAVAILABLE", "reason": "overloaded"}}
    http = httpx.AsyncClient(
        transport=httpx.MockTransport(
            lambda r: httpx.Response(503, headers={"retry-after": "30"}, json=overloaded)
        )
    )

    def client(store: Store, home: Path, timeout: float) -> SyncClient:
        return SyncClient(
            "http://yibao.test",
            store.clock(),
            Identity("1", key, "http://yibao.test/sync"),
            http=http,
        )

    waits: list[float] = []

    async def wait_or_stop(stop: asyncio.Event, store: Store, seconds: float) -> None:
        waits.append(seconds)
        stop.set()

    monkeypatch.setattr(cli, "_client", client)
    monkeypatch.setattr(cli, "_wait_or_stop", wait_or_stop)
    args = argparse.Namespace(home=home, interval=60.0, max_wait=300.0, timeout=5.0, json=True)
    try:
        assert await cli._watch(args, store) == 0
    finally:
        await http.aclose()
        store.close()
    assert waits and waits[0] >= 30, waits
