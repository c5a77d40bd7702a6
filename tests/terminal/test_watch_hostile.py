"""`watch` against a path that answers with everything hostile SyncClient refuses: every answer is
an offline round (or a sync), never an exception out of `watch` (review r3, issue 10)."""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from terminal.client import Identity, SyncClient
from terminal.store import Store

PAGE = {"changes": [], "checkpoint": "c1", "hasMore": False}
HOSTILE = [
    httpx.Response(200, content=b"[" * 100_000),
    httpx.Response(401, content=b'{"error": {"message": ' + b"[" * 500 + b"]" * 500 + b"}}"),
    httpx.Response(503, headers=[(b"retry-after", b"\xb2")], content=b"{}"),
    httpx.Response(
        200,
        content=b'{"changes": [{"entity": "person", "id": "\\udc00", "op": "upsert", '
        b'"data": {"voucherRef": "\\ud800"}}], "checkpoint": "c", "hasMore": false}',
    ),
    httpx.Response(
        200,
        content=b'{"changes": [{"entity": "revocation", "id": "r", "op": "upsert", '
        b'"data": {"version": 99999999999999999999, "kind": "k", "ref": "x"}}], "checkpoint": "c", "hasMore": false}',
    ),
    httpx.Response(200, headers={"date": "Fri, 31 Dec 9999 23:59:59 GMT"}, json=PAGE),
    httpx.Response(
        401,
        json={
            "error": {"message": "时钟", "reason": "clock_skew", "serverTime": "9999-12-31T23:59:59+00:00"}
        },
    ),
    httpx.Response(
        200,
        headers={"content-encoding": "gzip, gzip"},
        content=gzip.compress(gzip.compress(json.dumps(PAGE).encode())),
    ),
    httpx.Response(200, json=PAGE),  # and then it still signs and syncs
]


def _enrolled(tmp_path: Path) -> tuple[Store, Path, Any]:
    from terminal.keys import load_or_create_key

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
    return store, home, key


async def _watch_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, responses: list[httpx.Response]
) -> tuple[int, Store, list[str]]:
    """watch, answered `responses` in turn, stopped once they are all spent: (its status, the
    store, the paths asked). The store is closed by the caller."""
    from terminal import cli

    store, home, key = _enrolled(tmp_path)
    answers = list(responses)
    asked: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.path)
        return answers.pop(0)

    http = httpx.AsyncClient(transport=httpx.MockTransport(answer))

    def client(store: Store, home: Path, timeout: float) -> SyncClient:
        return SyncClient(
            "http://yibao.test", store.clock(), Identity("1", key, "http://yibao.test/sync"), http=http
        )

    async def wait_or_stop(stop: asyncio.Event, store: Store, seconds: float) -> None:
        if not answers:
            stop.set()

    monkeypatch.setattr(cli, "_client", client)
    monkeypatch.setattr(cli, "_wait_or_stop", wait_or_stop)
    args = argparse.Namespace(home=home, interval=60.0, max_wait=300.0, timeout=5.0, json=True)
    try:
        return await cli._watch(args, store), store, asked
    finally:
        await http.aclose()


async def test_watch_survives_every_hostile_answer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    status, store, asked = await _watch_through(tmp_path, monkeypatch, HOSTILE)
    try:
        assert status == 0
        assert len(asked) == len(HOSTILE)
        assert store.get("last_sync_at", None) is not None  # the last, good answer was a sync
        store.clock().corrected_now()
    finally:
        store.close()


async def test_watch_stops_and_says_why_on_a_413_to_a_pull(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    status, store, _ = await _watch_through(
        tmp_path, monkeypatch, [httpx.Response(413, json={"error": {"message": "请求过大"}})]
    )
    try:
        assert status == 5
        assert store.get("last_error", None)["status"] == 413
    finally:
        store.close()
