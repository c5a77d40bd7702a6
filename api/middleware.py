"""Request-body size limit, enforced on the declared length and on the bytes actually received."""

from __future__ import annotations

import re
from collections.abc import Mapping

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import ErrorCode


class _BodyTooLarge(Exception):
    pass


def _too_large(limit: int, path: str = "") -> JSONResponse:
    message = f"请求内容过大（上限 {limit} 字节）"
    if path.startswith(("/sync/", "/filings/")):  # the REST endpoints' error shape (DESIGN.md section 5)
        rest = {"error": {"message": message, "code": ErrorCode.PAYLOAD_TOO_LARGE, "limitBytes": limit}}
        return JSONResponse(rest, status_code=413)
    body = {
        "errors": [
            {
                "message": f"请求内容过大（上限 {limit} 字节）",
                "extensions": {"code": ErrorCode.PAYLOAD_TOO_LARGE},
            }
        ]
    }
    return JSONResponse(body, status_code=413)


class BodySizeLimitMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int, overrides: Mapping[str, int] | None = None) -> None:
        """`overrides`: a bound of their own for the paths matching a regular expression (an upload
        route takes more than the JSON routes' `max_body_bytes`)."""
        self.app = app
        self.default_limit = max_body_bytes
        self.overrides = [(re.compile(pattern), limit) for pattern, limit in (overrides or {}).items()]

    def limit_for(self, path: str) -> int:
        return next(
            (limit for pattern, limit in self.overrides if pattern.fullmatch(path)), self.default_limit
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope.get("path", ""))
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _too_large(limit, scope.get("path", ""))(scope, receive, send)
            return

        received = 0
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not response_started:
                await _too_large(limit, scope.get("path", ""))(scope, receive, send)
