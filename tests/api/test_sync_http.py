"""The /sync HTTP layer: bodies (size, gzip, JSON depth, text), wire errors, error shapes, methods,
gzip answers, the 500 that never shows a traceback. Every answer here is JSON, whatever was sent."""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from api.state import AppState
from api.terminals import service
from sync.vouchers import public_key_to_b64
from tests.api import terminalworld as world

MB = 1024 * 1024
DEEP = b"[" * 10_000 + b"]" * 10_000


def _error(response: httpx.Response) -> dict[str, Any]:
    assert response.headers["content-type"].startswith("application/json"), response.text
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert isinstance(error["message"], str) and error["code"], error
    assert "Traceback" not in response.text
    return error


async def _enrol_body(state: AppState) -> dict[str, str]:
    clinic = await world.resident_clinic(state)
    assert clinic.id is not None
    async with state.db.session() as session:
        code, _ = await service.create_enrolment_code(session, await world.admin_viewer(state), clinic.id)
    return {"code": code, "publicKey": public_key_to_b64(Ed25519PrivateKey.generate().public_key())}


@pytest.mark.parametrize("path", ["/sync/enrol", "/sync/pull", "/sync/push"])
async def test_a_20_mb_body_is_a_413_json(client: httpx.AsyncClient, path: str) -> None:
    body = b'{"code": "' + b"A" * (20 * MB) + b'"}'
    declared = await client.post(path, content=body, headers={"content-type": "application/json"})
    assert declared.status_code == 413
    assert _error(declared)["code"] == "PAYLOAD_TOO_LARGE"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
        for start in range(0, len(body), MB):
            yield body[start : start + MB]

    streamed = await client.post(path, content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413
    assert _error(streamed)["code"] == "PAYLOAD_TOO_LARGE"


async def test_a_gzip_bomb_is_a_413_json_and_honest_gzip_works(
    client: httpx.AsyncClient, state: AppState
) -> None:
    bomb = gzip.compress(b'{"code": "' + b" " * (200 * MB) + b'"}', compresslevel=9)
    assert len(bomb) < MB  # through the size limit as sent; inflated it is 200 MB
    response = await client.post("/sync/enrol", content=bomb, headers={"content-encoding": "gzip"})
    assert response.status_code == 413
    error = _error(response)
    assert error["code"] == "PAYLOAD_TOO_LARGE"
    assert error["limitBytes"] == state.settings.sync_max_inflated_bytes
    # Authenticated, on push: the same.
    enrolled = await world.enrol(client, state)
    pushed = await client.post(
        "/sync/push", content=bomb, headers={"content-encoding": "gzip", **enrolled.headers()}
    )
    assert pushed.status_code == 413 and _error(pushed)["code"] == "PAYLOAD_TOO_LARGE"
    # A gzip body that is what it says enrols.
    honest = gzip.compress(json.dumps(await _enrol_body(state)).encode())
    ok = await client.post("/sync/enrol", content=honest, headers={"content-encoding": "gzip"})
    assert ok.status_code == 200, ok.text


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("not gzip at all", b"this is not gzip"),
        ("truncated", gzip.compress(b'{"code": "x", "publicKey": "y"}')[:-12]),
        ("trailing bytes", gzip.compress(b'{"code": "x", "publicKey": "y"}') + b"junk"),
        ("empty", b""),
    ],
)
async def test_garbage_gzip_is_a_400_json(client: httpx.AsyncClient, name: str, content: bytes) -> None:
    response = await client.post("/sync/enrol", content=content, headers={"content-encoding": "gzip"})
    assert response.status_code == 400, (name, response.text)
    assert _error(response)["reason"] == "bad_gzip"


async def test_json_nested_10000_deep_is_a_400_json(client: httpx.AsyncClient, state: AppState) -> None:
    for content, headers in ((DEEP, {}), (gzip.compress(DEEP), {"content-encoding": "gzip"})):
        response = await client.post("/sync/enrol", content=content, headers=headers)
        assert response.status_code == 400, response.text
        assert _error(response)["reason"] == "json_too_deep"
    enrolled = await world.enrol(client, state)
    for path in ("/sync/pull", "/sync/push"):
        response = await client.post(path, content=DEEP, headers=enrolled.headers())
        assert response.status_code == 400, response.text
        assert _error(response)["reason"] == "json_too_deep"
        # Without an assertion nothing is parsed at all: 401 first.
        anonymous = await client.post(path, content=DEEP)
        assert anonymous.status_code == 401 and _error(anonymous)["reason"] == "missing"


@pytest.mark.parametrize(
    ("content", "headers", "status", "reason"),
    [
        (b"{not json", {}, 400, "malformed_json"),
        (b"", {}, 400, "empty_body"),
        (b"\xff\xfe{}", {}, 400, "malformed_json"),
        (b'{"code": NaN}', {}, 400, "malformed_json"),
        (b'{"code": "x"}', {"content-encoding": "br"}, 400, "unsupported_encoding"),
        (b'{"code": "A\\u0000B", "publicKey": "x"}', {}, 422, "unstorable"),
        (b'{"code": "\\ud800", "publicKey": "x"}', {}, 422, "unstorable"),
        # The same surrogate as UTF-8 bytes (json.loads decodes with surrogatepass), and NUL in a key.
        (b'{"code": "\xed\xa0\x80", "publicKey": "x"}', {}, 422, "unstorable"),
        (b'{"code": "x", "publicKey": "x", "a\\u0000": 1}', {}, 422, "unstorable"),
        (b'{"code": "' + b"x" * 100_001 + b'", "publicKey": "x"}', {}, 422, "too_long"),
    ],
)
async def test_bad_bodies_are_4xx_json(
    client: httpx.AsyncClient, content: bytes, headers: dict[str, str], status: int, reason: str
) -> None:
    response = await client.post("/sync/enrol", content=content, headers=headers)
    assert response.status_code == status, response.text
    assert _error(response)["reason"] == reason


async def test_wire_errors_are_400_with_the_field(client: httpx.AsyncClient, state: AppState) -> None:
    for body, field in (
        ({"code": 5, "publicKey": "x"}, "code"),
        ({"code": "x"}, "publicKey"),
        ({"code": "x", "publicKey": "y", "extra": 1}, "body"),
        ([], "body"),
    ):
        response = await client.post("/sync/enrol", json=body)
        assert response.status_code == 400, response.text
        error = _error(response)
        assert error["code"] == "BAD_REQUEST" and error["field"] == field, error
        assert error["detail"]
    enrolled = await world.enrol(client, state)
    for path, body, field in (
        ("/sync/pull", {"checkpoint": None, "limit": 0}, "limit"),
        ("/sync/pull", {"checkpoint": 7}, "checkpoint"),
        ("/sync/pull", {"since": 1}, "body"),
        ("/sync/push", {"mutations": []}, "mutations"),
        ("/sync/push", {"mutations": [{"id": "x", "seq": 1}]}, "mutations[0].id"),
    ):
        response = await client.post(path, json=body, headers=enrolled.headers())
        assert response.status_code == 400, (path, body, response.text)
        assert _error(response)["field"] == field


async def test_domain_errors_keep_their_status(client: httpx.AsyncClient, state: AppState) -> None:
    body = await _enrol_body(state)
    weak = await client.post("/sync/enrol", json={**body, "publicKey": world.b64url(b"\x01" + b"\x00" * 31)})
    assert weak.status_code == 422 and _error(weak)["field"] == "publicKey"
    unknown = await client.post("/sync/enrol", json={**body, "code": service.new_code()})
    assert unknown.status_code == 401 and _error(unknown)["code"] == "UNAUTHENTICATED"


async def test_an_unexpected_error_is_a_500_json_without_a_traceback(
    client: httpx.AsyncClient,
    state: AppState,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(*args: object) -> object:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(service, "clinic_of", broken)
    with caplog.at_level(logging.ERROR, logger="api.sync"):
        response = await client.post("/sync/enrol", json=await _enrol_body(state))
    assert response.status_code == 500
    error = _error(response)
    assert error["code"] == "INTERNAL_SERVER_ERROR"
    assert "secret internals" not in response.text
    assert any("sync request failed" in r.getMessage() and r.exc_info for r in caplog.records)


async def test_wrong_methods_and_paths_are_json_too(client: httpx.AsyncClient) -> None:
    for method in ("GET", "PUT", "DELETE"):
        response = await client.request(method, "/sync/pull")
        assert response.status_code == 405, (method, response.text)
        assert response.headers["allow"] == "POST"
        _error(response)
    missing = await client.post("/sync/nothing-here", json={})
    assert missing.status_code == 404 and _error(missing)["code"] == "NOT_FOUND"


async def test_answers_are_gzipped_on_request(client: httpx.AsyncClient, state: AppState) -> None:
    enrolled = await world.enrol(client, state)
    body = {"checkpoint": None, "limit": 200}
    zipped = await client.post(
        "/sync/pull", json=body, headers={**enrolled.headers(), "accept-encoding": "gzip"}
    )
    assert zipped.status_code == 200, zipped.text
    assert zipped.headers["content-encoding"] == "gzip"
    assert "changes" in zipped.json() or "resync" in zipped.json()  # httpx inflates it
    plain = await client.post(
        "/sync/pull", json=body, headers={**enrolled.headers(), "accept-encoding": "identity"}
    )
    assert plain.status_code == 200 and "content-encoding" not in plain.headers
