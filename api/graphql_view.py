"""GraphQL over HTTP (the GraphQL-over-HTTP spec) on strawberry's ASGI view, plus stable error codes.

- ``Accept: application/graphql-response+json``: that media type; a request error (unparsable or
  invalid document, bad variables) answers 400 and has no ``data``; a field error answers 200.
- ``Accept: application/json`` (or none): 200 for every well-formed GraphQL response, as the spec asks.
- A body that is not a GraphQL request at all (malformed JSON, wrong content type): 400 with a JSON body.
- Every error carries ``extensions.code``; an unexpected exception is logged and masked.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

from cross_web import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import ASGIWebSocketAdapter, GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.extensions import SchemaExtension
from strawberry.http import GraphQLHTTPResponse, process_result
from strawberry.schema.exceptions import CannotGetOperationTypeError
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import BaseGraphQLTransportWSHandler
from strawberry.types import ExecutionResult
from strawberry.types.unset import UNSET, UnsetType

from api import jsonlimits
from api.context import Context
from api.errors import AppError, ErrorCode
from api.state import AppState
from graphql import GraphQLError, GraphQLSyntaxError

log = logging.getLogger(__name__)

GRAPHQL_RESPONSE_JSON = "application/graphql-response+json"


_LONG_WORD = re.compile(rf"\S{{{jsonlimits.ECHO_CHARS + 1},}}")
MAX_MESSAGE_CHARS = 300
_VARIABLE_RULE = re.compile(
    r"is never used|is not defined|used in position expecting|cannot be non-input type"
)
"""Validation rules about variables (a bad document); other "Variable …" errors are bad values."""


def short_message(message: str, *, ours: bool = False) -> str:
    """A message quotes at most a short prefix of what the client sent. graphql-core's messages quote
    names and values whole (a 900 KB field name made a 900 KB error); their own words are short
    English ones, so any longer run without a space is client text and is cut. Our own messages
    (zh-CN, without spaces) quote nothing; for them only the overall bound applies."""
    if not ours:
        message = _LONG_WORD.sub(lambda m: jsonlimits.shorten(m[0]), message)
    return jsonlimits.shorten(message, MAX_MESSAGE_CHARS)


def _rebuilt(
    error: GraphQLError, message: str, extensions: dict[str, Any], *, ours: bool = False
) -> GraphQLError:
    return GraphQLError(
        short_message(message, ours=ours),
        error.nodes,
        error.source,
        error.positions,
        error.path,
        extensions=extensions,
    )


def _with_code(error: GraphQLError, code: ErrorCode, message: str | None = None) -> GraphQLError:
    return _rebuilt(error, message or error.message, {"code": code.value})


def _unexpected(original: Exception | None) -> bool:
    """What a scalar raises when a variable does not coerce is a ValueError or TypeError (or a GraphQL
    error); anything else without a path is a failure of ours: strawberry wraps what a subscription's
    generator raises mid-stream (a database error, say) with no path, and its text (SQL) must not
    reach the client as if it were the client's bad input."""
    return original is not None and not isinstance(original, (ValueError, TypeError, GraphQLError))


def classify(error: GraphQLError) -> GraphQLError:
    """Gives every error a stable ``extensions.code`` and a short message; masks anything unexpected.
    Idempotent: the schema extension and the HTTP view may both classify one error."""
    original = error.original_error
    if isinstance(original, AppError):
        return _rebuilt(error, original.message, original.extensions, ours=True)
    if (error.extensions or {}).get("code"):
        return error  # classified before (or made by us with a code): already short
    if isinstance(error, GraphQLSyntaxError):
        return _with_code(error, ErrorCode.GRAPHQL_PARSE_FAILED)
    if isinstance(original, CannotGetOperationTypeError):  # no such operationName: as over HTTP
        return _with_code(error, ErrorCode.BAD_REQUEST)
    if error.path is None and not _unexpected(original):
        # Before execution: variables that do not coerce (the scalar raised), or a document that the
        # validation rules (including depth, alias and token limits) refused.
        if original is not None or (
            error.message.startswith("Variable ") and not _VARIABLE_RULE.search(error.message)
        ):
            return _with_code(error, ErrorCode.BAD_USER_INPUT)
        return _with_code(error, ErrorCode.GRAPHQL_VALIDATION_FAILED)
    if original is None or isinstance(original, GraphQLError):
        return _with_code(error, ErrorCode.BAD_USER_INPUT)  # a value the schema could not accept or serialise
    log.error("unexpected error in GraphQL execution", exc_info=original)
    return _rebuilt(
        error, "服务器内部错误，请稍后再试", {"code": ErrorCode.INTERNAL_SERVER_ERROR.value}, ours=True
    )


class ErrorCodes(SchemaExtension):
    def on_operation(self) -> Iterator[None]:
        yield
        result = self.execution_context.result
        if result is not None and result.errors:
            result.errors = [classify(error) for error in result.errors]
            context = self.execution_context.context
            if isinstance(context, Context):
                for error in result.errors:
                    code = (error.extensions or {}).get("code", "UNKNOWN")
                    context.state.metrics.graphql_errors.labels(str(code)).inc()


class OperationScope(SchemaExtension):
    """One operation, one identity check, one database session, released when the operation ends."""

    async def on_operation(self) -> AsyncIterator[None]:
        context = self.execution_context.context
        if isinstance(context, Context):
            context.begin_operation()
        try:
            yield
        finally:
            if isinstance(context, Context):
                await context.close()


def _wants_graphql_response_json(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return GRAPHQL_RESPONSE_JSON in accept


def _error_body(message: str, code: ErrorCode) -> dict[str, Any]:
    return {"errors": [{"message": message, "extensions": {"code": code.value}}]}


def classify_in_place(errors: list[GraphQLError]) -> None:
    """`classify`, written into the errors themselves, for the paths that send them as they are."""
    for error in errors:
        classified = classify(error)
        if classified is not error:
            error.message = classified.message
            error.extensions = classified.extensions


class TransportWSHandler(BaseGraphQLTransportWSHandler[Context, None]):
    """graphql-transport-ws with the house rules: a document that cannot run (unparsable, no such
    operation) is an `error` message with a code, as over HTTP, not a closed socket quoting the
    client's text; the socket itself is closed only for protocol errors."""

    async def _handle_pre_execution_error(self, operation: Any, result: Any) -> None:
        classify_in_place(result.errors)
        await operation.send_initial_errors(result.errors)


class WebSocketAdapter(ASGIWebSocketAdapter):
    async def close(self, code: int, reason: str) -> None:
        # strawberry's close reasons may quote the client (an operation id, a message type); a close
        # frame carries at most 123 bytes of UTF-8, and nothing unencodable.
        short = jsonlimits.shorten(reason, 60)
        while len(short.encode()) > 123:
            short = short[:-2] + "…"
        await super().close(code, short)


class GraphQLView(GraphQL[Context, None]):
    graphql_transport_ws_handler_class = TransportWSHandler
    websocket_adapter_class = WebSocketAdapter

    def __init__(self, state: AppState, **kwargs: Any) -> None:
        self.state = state
        super().__init__(**kwargs)

    async def render_graphql_ide(self, request: Request) -> Response:
        """GraphiQL from this server's own assets (api/graphiql.py), not strawberry's CDN page."""
        from api.graphiql import graphiql_page

        return graphiql_page(request)

    def decode_json(self, data: str | bytes) -> object:
        # POST bodies, GET variables/extensions and WebSocket messages all come through here.
        value = jsonlimits.loads(data)  # JSONDecodeError (strawberry's 400, a WebSocket's 4400) on bad input
        if not isinstance(value, dict | list):  # strawberry would call .get() on a bare 0 or "x"
            raise HTTPException(400, "The request body must be a JSON object")
        return value

    def parse_json(self, data: str | bytes) -> Any:
        try:
            return super().parse_json(data)
        except HTTPException as exc:
            if isinstance(exc.__cause__, jsonlimits.JSONTooDeep):
                raise HTTPException(400, f"JSON nested deeper than {exc.__cause__.limit} levels") from None
            raise

    def encode_json(self, data: object) -> str:
        # UTF-8, not \\u-escapes: half the bytes for Chinese text, and readable in a terminal. A value
        # that UTF-8 cannot carry (an unpaired surrogate some message quoted) falls back to escapes:
        # an answer must always be sendable.
        text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
        if jsonlimits.unstorable_text(text):
            return json.dumps(data, separators=(",", ":"))
        return text

    async def get_context(self, request: Request | WebSocket, response: Response | WebSocket) -> Context:
        context = Context(request, response, self.state)
        if isinstance(request, Request):
            request.state.graphql_context = context  # closed by __call__ once the response is built
        return context

    async def on_ws_connect(self, context: Context) -> UnsetType | dict[str, object] | None:
        """Browsers and mini-programs cannot set headers on a WebSocket: the access token travels in
        `connection_init` as {"Authorization": "Bearer …"}. No valid token, no connection (4403)."""
        params = context.connection_params or {}
        token = params.get("Authorization", params.get("authorization"))
        if not isinstance(token, str):
            raise ConnectionRejectionError({"code": ErrorCode.UNAUTHENTICATED.value})
        context.authorization = token
        try:
            await context.require_viewer()
        except AppError as exc:
            raise ConnectionRejectionError(exc.extensions) from exc
        finally:
            await context.close()  # do not hold a pooled connection for the socket's lifetime
        return UNSET

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        request = Request(scope, receive)
        graphql_json = _wants_graphql_response_json(request)
        try:
            response = await self.run(request)
        except HTTPException as exc:
            code = ErrorCode.BAD_REQUEST
            status = exc.status_code
            if status == 400 and request.method == "GET" and "mutation" in exc.reason.lower():
                status = 405  # the spec: a mutation over GET is "method not allowed"
            response = JSONResponse(
                _error_body(short_message(exc.reason), code),  # e.g. "Unknown operation named …"
                status_code=status,
                media_type=GRAPHQL_RESPONSE_JSON if graphql_json else "application/json",
                headers={"allow": "POST"} if status == 405 else None,
            )
        finally:
            context = getattr(request.state, "graphql_context", None)
            if context is not None:
                await context.close()
        if graphql_json and response.media_type == "application/json":
            response.headers["content-type"] = GRAPHQL_RESPONSE_JSON + "; charset=utf-8"
            if getattr(request.state, "graphql_request_error", False):
                response.status_code = 400
        await response(scope, receive, send)

    async def process_result(self, request: Request, result: ExecutionResult) -> GraphQLHTTPResponse:
        if result.errors:
            # Parse errors end the operation before schema extensions see the result: classify here too.
            result.errors = [classify(error) for error in result.errors]
        response = process_result(result)
        errors = result.errors or []
        # Field errors always carry a path; errors without one (parse, validation, variables) are
        # request errors: execution never began, and the spec says the response has no data entry.
        if result.data is None and errors and all(error.path is None for error in errors):
            response.pop("data", None)
            request.state.graphql_request_error = True
        return response
