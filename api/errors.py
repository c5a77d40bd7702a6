"""Domain errors with stable codes (DESIGN.md section 5).

Services raise these; the GraphQL layer turns them into ``extensions.code`` and the REST endpoints into
a 4xx JSON body. Messages are shown to residents, so they are zh-CN; codes are English and stable.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    UNAUTHENTICATED = "UNAUTHENTICATED"
    FORBIDDEN = "FORBIDDEN"
    NOT_FOUND = "NOT_FOUND"
    BAD_USER_INPUT = "BAD_USER_INPUT"
    CONFLICT = "CONFLICT"
    RATE_LIMITED = "RATE_LIMITED"
    UPSTREAM_UNAVAILABLE = "UPSTREAM_UNAVAILABLE"
    BAD_REQUEST = "BAD_REQUEST"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    GRAPHQL_PARSE_FAILED = "GRAPHQL_PARSE_FAILED"
    GRAPHQL_VALIDATION_FAILED = "GRAPHQL_VALIDATION_FAILED"
    INTERNAL_SERVER_ERROR = "INTERNAL_SERVER_ERROR"


HTTP_STATUS = {
    ErrorCode.UNAUTHENTICATED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.BAD_USER_INPUT: 422,
    ErrorCode.CONFLICT: 409,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.UPSTREAM_UNAVAILABLE: 503,
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.GRAPHQL_PARSE_FAILED: 400,
    ErrorCode.GRAPHQL_VALIDATION_FAILED: 400,
    ErrorCode.INTERNAL_SERVER_ERROR: 500,
}


class AppError(Exception):
    code: ErrorCode = ErrorCode.BAD_REQUEST
    default_message = "请求有误"

    def __init__(self, message: str | None = None, *, field: str | None = None, **extra: Any) -> None:
        self.message = message or self.default_message
        self.field = field
        self.extra = extra
        super().__init__(self.message)

    @property
    def extensions(self) -> dict[str, Any]:
        ext: dict[str, Any] = {"code": self.code.value, **self.extra}
        if self.field:
            ext["field"] = self.field
        return ext

    def as_json(self) -> dict[str, Any]:
        return {"error": {"message": self.message, **self.extensions}}


class Unauthenticated(AppError):
    code = ErrorCode.UNAUTHENTICATED
    default_message = "请先登录"


class Forbidden(AppError):
    code = ErrorCode.FORBIDDEN
    default_message = "没有权限执行此操作"


class NotFound(AppError):
    code = ErrorCode.NOT_FOUND
    default_message = "未找到"


class BadUserInput(AppError):
    code = ErrorCode.BAD_USER_INPUT
    default_message = "输入有误"


class Conflict(AppError):
    code = ErrorCode.CONFLICT
    default_message = "操作冲突，请刷新后重试"


class RateLimited(AppError):
    code = ErrorCode.RATE_LIMITED
    default_message = "操作过于频繁，请稍后再试"


class UpstreamUnavailable(AppError):
    code = ErrorCode.UPSTREAM_UNAVAILABLE
    default_message = "服务暂时不可用，请稍后再试"
