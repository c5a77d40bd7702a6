"""The WeChat-style provider against a small real HTTP server on loopback playing code2session."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import httpx
import jwt
import pytest
from pydantic import SecretStr

from api.app import create_app
from api.auth.providers import WeChatProvider, build_providers
from api.errors import UpstreamUnavailable
from api.settings import Settings
from api.state import AppState
from tests.conftest import GraphQLClient, error_codes

LOGIN = 'mutation($c: String!) { login(provider: "wechat", code: $c) { accessToken refreshToken } }'


class FakeWeChat(BaseHTTPRequestHandler):
    """Answers like WeChat's jscode2session; the code chooses the behaviour."""

    def do_GET(self) -> None:
        query = parse_qs(urlparse(self.path).query)
        code = query.get("js_code", [""])[0]
        if query.get("appid") != ["wx-test"] or query.get("secret") != ["s3cret"]:
            self._send(200, {"errcode": 40013, "errmsg": "invalid appid"})
        elif code.startswith("good-"):
            self._send(200, {"openid": "o-" + code[5:], "session_key": "k", "unionid": "u"})
        elif code == "used":
            self._send(200, {"errcode": 40163, "errmsg": "code been used"})
        elif code == "slow":
            time.sleep(1.5)
            self._send(200, {"openid": "late"})
        elif code == "garbage":
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"<html>not json")
        elif code == "no-openid":
            self._send(200, {"session_key": "k"})
        else:
            self._send(502, {"error": "bad gateway"})

    def _send(self, status: int, body: dict[str, object]) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        with contextlib.suppress(BrokenPipeError):  # the client gave up waiting: the timeout test's point
            self.wfile.write(payload)

    def log_message(self, *args: object) -> None:  # keep test output quiet
        return


@pytest.fixture(scope="module")
def wechat_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeWeChat)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/sns/jscode2session"
    finally:
        server.shutdown()


@pytest.fixture
async def wechat_gql(settings: Settings, state: AppState, wechat_url: str) -> AsyncIterator[GraphQLClient]:
    configured = settings.model_copy(
        update={
            "wechat_code2session_url": wechat_url,
            "wechat_app_id": "wx-test",
            "wechat_app_secret": SecretStr("s3cret"),
            "wechat_timeout_s": 0.5,
        }
    )
    app_state = AppState(**{**vars(state), "settings": configured, "providers": build_providers(configured)})
    transport = httpx.ASGITransport(app=create_app(configured, app_state))
    async with httpx.AsyncClient(transport=transport, base_url="http://yibao.test") as http:
        yield GraphQLClient(http)


async def test_wechat_login_creates_then_reuses_the_account(wechat_gql: GraphQLClient) -> None:
    first = (await wechat_gql(LOGIN, {"c": "good-alice"}))["data"]["login"]
    again = (await wechat_gql(LOGIN, {"c": "good-alice"}))["data"]["login"]

    def account_of(token: str) -> str:
        return str(jwt.decode(token, options={"verify_signature": False})["sub"])

    assert account_of(first["accessToken"]) == account_of(again["accessToken"])
    # A fresh WeChat account is not yet bound to an insured person.
    body = await wechat_gql("{ me { name } }", token=first["accessToken"])
    assert error_codes(body) == ["NOT_FOUND"]


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("used", "UNAUTHENTICATED"),
        ("slow", "UPSTREAM_UNAVAILABLE"),
        ("garbage", "UPSTREAM_UNAVAILABLE"),
        ("no-openid", "UPSTREAM_UNAVAILABLE"),
        ("server-error", "UPSTREAM_UNAVAILABLE"),
    ],
)
async def test_wechat_failures_give_a_clear_error_and_no_login(
    wechat_gql: GraphQLClient, code: str, expected: str
) -> None:
    body = await wechat_gql(LOGIN, {"c": code})
    assert error_codes(body) == [expected]
    assert body["data"] is None


async def test_unreachable_wechat_is_upstream_unavailable() -> None:
    provider = WeChatProvider("http://127.0.0.1:9/sns/jscode2session", "wx", "s", 0.5)
    with pytest.raises(UpstreamUnavailable):
        await provider.authenticate("good-x")


async def test_two_first_logins_at_once_both_succeed_with_one_account(wechat_gql: GraphQLClient) -> None:
    import asyncio

    first, second = await asyncio.gather(*(wechat_gql(LOGIN, {"c": "good-twin"}) for _ in range(2)))
    assert "errors" not in first and "errors" not in second, (first, second)
    subjects = {
        jwt.decode(body["data"]["login"]["accessToken"], options={"verify_signature": False})["sub"]
        for body in (first, second)
    }
    assert len(subjects) == 1
