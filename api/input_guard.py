"""Checks on a GraphQL operation's input that the schema's types cannot express, made once per
operation before anything executes (HTTP and WebSocket alike):

- a document with several operations needs `operationName` (the GraphQL spec; strawberry would
  silently run the first one);
- no text argument, inline or in variables, may hold what cannot be stored (NUL, an unpaired UTF-16
  surrogate) or be absurdly long: BAD_USER_INPUT naming the field, never a 500 from the driver.
"""

from __future__ import annotations

from collections.abc import Iterator

from strawberry.extensions import SchemaExtension

from api.errors import ErrorCode
from api.jsonlimits import find_bad_text, text_problem
from graphql import (
    ArgumentNode,
    DocumentNode,
    GraphQLError,
    Node,
    ObjectFieldNode,
    OperationDefinitionNode,
    StringValueNode,
)

PROBLEM_MESSAGES = {
    "unstorable": "包含无法识别的字符，请检查后重新输入",
    "too_long": "内容过长",
}


def _bad_literal(document: DocumentNode) -> tuple[str, str] | None:
    """(argument path, problem) of the first inline string literal that cannot be accepted."""
    stack: list[tuple[Node, str]] = [(document, "")]
    while stack:
        node, where = stack.pop()
        if isinstance(node, StringValueNode):
            problem = text_problem(node.value)
            if problem:
                return where, problem
            continue
        if isinstance(node, ArgumentNode | ObjectFieldNode):
            where = f"{where}.{node.name.value}" if where else node.name.value
        for key in node.keys:
            child = getattr(node, key, None)
            if isinstance(child, Node):
                stack.append((child, where))
            elif isinstance(child, tuple | list):
                stack.extend((item, where) for item in child if isinstance(item, Node))
    return None


_CHECKED: dict[str, tuple[int, tuple[str, str] | None]] = {}
_CHECKED_MAX = 256


def _document_check(query: str, document: DocumentNode) -> tuple[int, tuple[str, str] | None]:
    """(number of operations, bad literal), remembered per query text as strawberry remembers the
    parsed document; the oldest entry goes first when full."""
    found = _CHECKED.get(query)
    if found is None:
        operations = sum(isinstance(d, OperationDefinitionNode) for d in document.definitions)
        found = (operations, _bad_literal(document))
        if len(_CHECKED) >= _CHECKED_MAX:
            _CHECKED.pop(next(iter(_CHECKED)))
        _CHECKED[query] = found
    return found


def _refusal(message: str, code: ErrorCode, field: str | None = None) -> GraphQLError:
    extensions: dict[str, object] = {"code": code.value}
    if field:
        extensions["field"] = field
    return GraphQLError(message, extensions=extensions)


class InputGuard(SchemaExtension):
    """Runs with validation, before it (after strawberry's ValidationCache, listed earlier, has put the
    cached validation errors in place): a refusal added to `pre_execution_errors` then ends the
    operation as a validation error would, on every path (HTTP, and WebSocket queries and
    subscriptions alike), before anything executes."""

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        document = context.graphql_document
        if document is not None:
            refusal = self._check(document)
            if refusal is not None:
                # A new list: ValidationCache hands out the same cached list for every request.
                context.pre_execution_errors = [*(context.pre_execution_errors or []), refusal]
        yield

    def _check(self, document: DocumentNode) -> GraphQLError | None:
        context = self.execution_context
        if context.query is not None:
            operations, literal = _document_check(context.query, document)
        else:
            operations, literal = 0, _bad_literal(document)
        # strawberry keeps the name the client gave apart from the one it falls back on (the first).
        named = getattr(context, "_provided_operation_name", None)
        if operations > 1 and not named:
            return _refusal(
                "文档包含多个操作时须指定 operationName", ErrorCode.GRAPHQL_VALIDATION_FAILED, "operationName"
            )
        bad = literal or find_bad_text(context.variables or {})
        if bad:
            field, problem = bad
            return _refusal(PROBLEM_MESSAGES[problem], ErrorCode.BAD_USER_INPUT, field or None)
        return None
