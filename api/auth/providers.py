"""Identity providers: who the person logging in is, according to someone we trust.

In production the mini-program sends a one-time WeChat ``code`` that we exchange at WeChat's
code-to-session endpoint for the user's ``openid``. Locally a demo provider maps the documented
demo logins (DESIGN.md section 7) to accounts created by the demo data.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

import httpx

from api.errors import BadUserInput, Unauthenticated, UpstreamUnavailable
from api.settings import DEMO_PROVIDER, WECHAT_PROVIDER, Settings

log = logging.getLogger(__name__)

DEMO_LOGINS = ("resident", "elder", "spouse", "stranger", "pharmacy", "reviewer", "admin")
_MAX_CODE_LENGTH = 256


@dataclass(frozen=True)
class Identity:
    provider: str
    subject: str


class IdentityProvider(Protocol):
    name: str

    async def authenticate(self, code: str) -> Identity: ...


class DemoProvider:
    name = DEMO_PROVIDER

    async def authenticate(self, code: str) -> Identity:
        if code not in DEMO_LOGINS:
            raise Unauthenticated("演示账号不存在", reason="unknown_demo_login")
        return Identity(self.name, code)


class WeChatProvider:
    """Exchanges a mini-program login code at a code2session-style endpoint."""

    name = WECHAT_PROVIDER

    def __init__(self, url: str, app_id: str, app_secret: str, timeout_s: float) -> None:
        self.url = url
        self.app_id = app_id
        self.app_secret = app_secret
        self.timeout = httpx.Timeout(timeout_s)

    async def authenticate(self, code: str) -> Identity:
        params = {
            "appid": self.app_id,
            "secret": self.app_secret,
            "js_code": code,
            "grant_type": "authorization_code",
        }
        try:
            async with httpx.AsyncClient(timeout=self.timeout) as client:
                response = await client.get(self.url, params=params)
        except httpx.TimeoutException as exc:
            log.warning("wechat code2session timed out", extra={"error": str(exc)})
            raise UpstreamUnavailable(
                "微信登录服务响应超时，请稍后再试", reason="identity_provider_timeout"
            ) from exc
        except httpx.HTTPError as exc:
            log.warning("wechat code2session unreachable", extra={"error": str(exc)})
            raise UpstreamUnavailable(
                "微信登录服务暂时不可用", reason="identity_provider_unreachable"
            ) from exc
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code != 200 or not isinstance(body, dict):
            log.warning("wechat code2session answered garbage", extra={"status": response.status_code})
            raise UpstreamUnavailable("微信登录服务返回异常", reason="identity_provider_bad_answer")
        errcode = body.get("errcode", 0)
        if errcode not in (0, None):
            # 40029 invalid code, 40163 code used, 45011 frequency limit: all mean "no login".
            raise Unauthenticated("微信登录凭证无效或已使用，请重新登录", reason=f"wechat_errcode_{errcode}")
        openid = body.get("openid")
        if not isinstance(openid, str) or not 0 < len(openid) <= 128:
            raise UpstreamUnavailable("微信登录服务返回异常", reason="identity_provider_bad_answer")
        return Identity(self.name, openid)


def build_providers(settings: Settings) -> dict[str, IdentityProvider]:
    providers: dict[str, IdentityProvider] = {}
    if DEMO_PROVIDER in settings.identity_providers:
        providers[DEMO_PROVIDER] = DemoProvider()
    if WECHAT_PROVIDER in settings.identity_providers:
        providers[WECHAT_PROVIDER] = WeChatProvider(
            settings.wechat_code2session_url,
            settings.wechat_app_id,
            settings.wechat_app_secret.get_secret_value(),
            settings.wechat_timeout_s,
        )
    return providers


def check_code(code: str) -> str:
    if not code or len(code) > _MAX_CODE_LENGTH:
        raise BadUserInput("登录凭证格式有误", field="code")
    return code
