"""The /sync endpoints of clinic terminals (DESIGN.md sections 4 and 7): JSON over HTTP, gzip both ways.

    POST /sync/enrol  {"code", "publicKey"}     -> {"terminalId", "clinicId", "clinicName", "villageCode",
                                                    "audience"}
    POST /sync/pull   {"checkpoint", "limit"}   -> api.replication.pull.pull's answer
    POST /sync/push   {"mutations": [...]}      -> api.replication.push.push's answer

Pull and push pass admission control (below), then authenticate the terminal's client assertion
before anything else (api.terminals.service.authenticate, audience: `Settings.sync_audience`, or this
server's base URL + "/sync"; enrol tells the terminal which). Bodies: at most `max_body_bytes` as sent (BodySizeLimitMiddleware, 413), gzip request bodies
(`Content-Encoding: gzip`) inflate to at most `sync_max_inflated_bytes` (413, so a gzip bomb never
exhausts memory), and every body goes through api.jsonlimits.loads (too deep: 400). Answers are
gzip-compressed when the client accepts it.

Every error is JSON, ``{"error": {"message", "code", ...}}``: a wire error 400 with its `field`, a
domain error the status of its code (a bad assertion 401 with its `reason`), anything unexpected is
logged and answered 500 without a traceback. Overload is a 503 `UPSTREAM_UNAVAILABLE` (reason
`overloaded`) with `Retry-After`: pull and push pass admission control first (api.replication.admission:
at most `sync_max_concurrent` at once per worker, a short queue, the rest refused at once and told
when to come back), and an exhausted database pool is answered the same way.
"""

from __future__ import annotations

import json
import logging
import re
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Mount, Route

from api import jsonlimits, ratelimit
from api.errors import HTTP_STATUS, AppError, BadUserInput, ErrorCode, Unauthenticated, UpstreamUnavailable
from api.replication.admission import Admission, Refused, Slot, claimed_terminal
from api.state import AppState
from api.terminals import service
from api.terminals.models import Terminal
from sync.assertion import audience_for
from sync.protocol import WireError, parse_pull, parse_push

log = logging.getLogger("api.sync")

_ANY_METHOD = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
"""Routes take every method, so that a wrong one gets a JSON 405 too, not Starlette's plain text."""

Handler = Callable[[Request, AsyncSession, bytes], Awaitable[dict[str, Any]]]


class PayloadTooLarge(AppError):
    code = ErrorCode.PAYLOAD_TOO_LARGE
    default_message = "请求内容过大"


OVERLOAD_RETRY_AFTER_S = 5
"""What a server whose database pool ran dry asks a terminal to wait (with jitter of its own)."""


class BadRequest(AppError):
    code = ErrorCode.BAD_REQUEST
    default_message = "请求格式有误"


class MethodNotAllowed(AppError):
    code = ErrorCode.BAD_REQUEST  # answered 405
    default_message = "只接受POST请求"


class InternalError(AppError):
    code = ErrorCode.INTERNAL_SERVER_ERROR
    default_message = "服务器内部错误，请稍后重试"


def inflate(body: bytes, limit: int) -> bytes:
    """A gzip body inflated, at most `limit` bytes of it: zlib stops at limit + 1, so a bomb costs
    no more memory than that. Garbage, a truncated stream or bytes after it are a 400."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error:
        raise BadRequest("请求内容不是有效的gzip数据", reason="bad_gzip") from None
    if len(out) > limit:
        raise PayloadTooLarge(f"解压后的请求内容过大（上限 {limit} 字节）", limitBytes=limit)
    if not inflater.eof or inflater.unused_data:
        raise BadRequest("请求内容不是完整的gzip数据", reason="bad_gzip")
    return out


_MAYBE_UNSTORABLE = re.compile(rb"\\u|\x00|\xed[\xa0-\xbf]")
"""Where a NUL or a UTF-16 surrogate can come from in a JSON body: a \\u escape (also the false alarm
of an escaped backslash before a u), a NUL byte (raw in a string it is malformed JSON, but it also
makes json.loads guess UTF-16/32), or a surrogate encoded as UTF-8 (json.loads decodes bytes with
surrogatepass)."""


def _may_hold_bad_text(raw: bytes) -> bool:
    """False when no string or key decoded from `raw` can fail jsonlimits.text_problem: the bytes
    cannot hold one longer than MAX_TEXT_CHARS, nor a NUL or a surrogate. One scan in C instead of
    a walk over every string of a push batch (about 1,400 for 60 settlements)."""
    return len(raw) > jsonlimits.MAX_TEXT_CHARS or _MAYBE_UNSTORABLE.search(raw) is not None


def decode_body(request: Request, raw: bytes, inflated_limit: int) -> Any:
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("gzip", "x-gzip"):
        raw = inflate(raw, inflated_limit)
    elif encoding != "identity":
        raise BadRequest("不支持该内容编码（只接受gzip）", reason="unsupported_encoding")
    if not raw.strip():
        raise BadRequest("请求内容为空", reason="empty_body")
    try:
        body = jsonlimits.loads(raw)
    except jsonlimits.JSONTooDeep as exc:
        raise BadRequest(f"JSON嵌套过深（上限 {exc.limit} 层）", reason="json_too_deep") from None
    except json.JSONDecodeError:
        raise BadRequest("请求内容不是有效的JSON", reason="malformed_json") from None
    bad = jsonlimits.find_bad_text(body) if _may_hold_bad_text(raw) else None
    if bad is not None:
        where, problem = bad
        message = "内容过长" if problem == "too_long" else "内容包含无法保存的字符"
        raise BadUserInput(message, field=where or "body", reason=problem)
    return body


def audience(request: Request, state: AppState) -> str:
    configured = state.settings.sync_audience
    return configured if configured else audience_for(str(request.base_url))


def _error(exc: AppError) -> JSONResponse:
    headers = (
        {"www-authenticate": 'Bearer error="invalid_token"'}
        if exc.code == ErrorCode.UNAUTHENTICATED
        else None
    )
    return JSONResponse(exc.as_json(), status_code=HTTP_STATUS[exc.code], headers=headers)


def _overloaded(retry_after_s: int) -> JSONResponse:
    response = _error(
        UpstreamUnavailable("服务繁忙，请稍后再同步", reason="overloaded", retryAfterS=retry_after_s)
    )
    response.headers["retry-after"] = str(retry_after_s)
    return response


def sync_routes(state: AppState) -> list[BaseRoute]:
    metrics = state.metrics
    settings = state.settings
    # One per worker process (each builds its own app): the limit is per worker, as its pool is.
    admission = Admission(
        settings.sync_max_concurrent,
        max_waiting=settings.sync_max_waiting,
        max_wait_s=settings.sync_max_wait_s,
        retry_after_max_s=settings.sync_retry_after_max_s,
    )

    async def authenticated(request: Request, session: AsyncSession, *, commit: bool = True) -> Terminal:
        try:
            terminal = await service.authenticate(
                session,
                settings,
                request.headers.get("authorization"),
                audience(request, state),
                commit=commit,
            )
        except Unauthenticated as exc:
            metrics.sync_auth_failures.labels(str(exc.extra.get("reason", "unknown"))).inc()
            raise
        slot: Slot | None = getattr(request.state, "admission_slot", None)
        if slot is not None:
            slot.claim(str(terminal.id))  # proved: its other requests wait until this one is done
        return terminal

    def body_of(request: Request, raw: bytes) -> Any:
        return decode_body(request, raw, settings.sync_max_inflated_bytes)

    async def enrol(request: Request, session: AsyncSession, raw: bytes) -> dict[str, Any]:
        body = body_of(request, raw)
        if not isinstance(body, dict) or set(body) - {"code", "publicKey"}:
            raise WireError("body", 'must be {"code": string, "publicKey": string}')
        for name in ("code", "publicKey"):
            if not isinstance(body.get(name), str):
                raise WireError(name, "must be a string")
        client = request.client.host if request.client else "unknown"
        await ratelimit.hit(
            session, f"terminal-enrol:{client}", limit=settings.terminal_enrol_rate_limit, window_s=60
        )
        terminal = await service.enrol(session, body["code"], body["publicKey"])
        clinic = await service.clinic_of(session, terminal)
        return {
            "terminalId": str(terminal.id),
            "clinicId": str(clinic.id),
            "clinicName": clinic.name,
            "villageCode": clinic.village_code,
            "audience": audience(request, state),
        }

    async def pull(request: Request, session: AsyncSession, raw: bytes) -> dict[str, Any]:
        from api.replication import pull as pulling  # imported here: pull imports much of the server

        # Before the body is even inflated. The assertion's jti commits with the pull's first commit
        # (an empty pull: one transaction, not two), always before the answer, a refusal's too.
        terminal = await authenticated(request, session, commit=False)
        try:
            checkpoint, limit = parse_pull(body_of(request, raw))
            answer = await pulling.pull(session, state, terminal, checkpoint, limit)
        except (WireError, AppError):
            await session.commit()
            raise
        except Exception:
            # A failure (a bug, the database gone): the rollback takes the jti with it, so spend it
            # again in a transaction of its own; the assertion must not work twice whatever happened.
            await session.rollback()
            await service.keep_spent(session)
            raise
        assert terminal.id is not None
        await service.record_sync(session, terminal, pulled=True)
        return answer

    async def push(request: Request, session: AsyncSession, raw: bytes) -> dict[str, Any]:
        from api.replication import push as pushing

        terminal = await authenticated(request, session)
        mutations = parse_push(body_of(request, raw))
        answer = await pushing.push(session, state, terminal, mutations)
        assert terminal.id is not None
        await service.record_sync(session, terminal, pulled=False)
        return answer

    def endpoint(
        route: str, handler: Handler, *, admitted: bool = False
    ) -> Callable[[Request], Awaitable[JSONResponse]]:
        async def run(request: Request) -> JSONResponse:
            outcome = "ok"
            slot: Slot | None = None
            try:
                if request.method != "POST":
                    outcome = "method_not_allowed"
                    response = _error(MethodNotAllowed())
                    response.status_code = 405
                    response.headers["allow"] = "POST"
                    return response
                try:
                    raw = await request.body()
                except Exception:
                    # Past max_body_bytes receiving raises, and BodySizeLimitMiddleware answers 413
                    # itself (or the client went away): not this handler's to answer.
                    outcome = "body_not_received"
                    raise
                if admitted:
                    # Before the assertion is checked: a refusal must cost no connection and no write.
                    decision = await admission.admit(claimed_terminal(request.headers.get("authorization")))
                    if isinstance(decision, Refused):
                        outcome = "shed_" + decision.why
                        return _overloaded(decision.retry_after_s)
                    slot = decision
                    request.state.admission_slot = slot
                try:
                    async with state.db.session() as session:
                        answer = await handler(request, session, raw)
                except WireError as exc:
                    outcome = "bad_request"
                    return _error(BadRequest("同步请求格式有误", field=exc.field, detail=exc.message))
                except AppError as exc:
                    outcome = exc.code.value.lower()
                    return _error(exc)
                except PoolTimeout:
                    # Overload (every database connection busy, e.g. 800 clinics reconnecting at once),
                    # not a bug: say so, and when to come back, so terminals wait as told.
                    outcome = "overloaded"
                    return _overloaded(OVERLOAD_RETRY_AFTER_S)
                except Exception:
                    outcome = "internal_error"
                    log.exception("sync request failed", extra={"route": route})
                    return _error(InternalError())
                return JSONResponse(answer)
            finally:
                if slot is not None:
                    slot.release()
                metrics.sync_requests.labels(route, outcome).inc()

        return run

    async def not_found(request: Request) -> JSONResponse:
        return JSONResponse(
            {"error": {"message": "未找到", "code": ErrorCode.NOT_FOUND.value}}, status_code=404
        )

    routes: list[BaseRoute] = [
        Route("/enrol", endpoint("enrol", enrol), methods=_ANY_METHOD),
        Route("/pull", endpoint("pull", pull, admitted=True), methods=_ANY_METHOD),
        Route("/push", endpoint("push", push, admitted=True), methods=_ANY_METHOD),
        Route("/{rest:path}", not_found, methods=_ANY_METHOD),
    ]
    return [
        Mount(
            "/sync", routes=routes, middleware=[Middleware(GZipMiddleware, minimum_size=500, compresslevel=6)]
        )
    ]
