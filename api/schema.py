"""Assembles the strawberry schema from the capabilities, with the limits every request is held to."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import suppress
from typing import Any

import strawberry
from starlette.websockets import WebSocket
from strawberry.extensions import (
    AddValidationRules,
    DisableIntrospection,
    MaxTokensLimiter,
    ParserCache,
    SchemaExtension,
    ValidationCache,
)
from strawberry.extensions.max_aliases import create_validator as alias_validator
from strawberry.extensions.query_depth_limiter import create_validator as depth_validator
from strawberry.types import ExecutionContext
from strawberry.types.graphql import OperationType

from api.auth.schema import AuthMutation
from api.context import Context
from api.errors import AppError
from api.family.schema import FamilyMutation, FamilyQuery
from api.filings.schema import FilingMutation, FilingQuery
from api.graphql_view import ErrorCodes, OperationScope, classify_in_place
from api.input_guard import InputGuard
from api.notifications.schema import NotificationMutation, NotificationQuery, NotificationSubscription
from api.people.schema import PeopleMutation, PeopleQuery
from api.replication.mobile.schema import (
    MobileReplicationMutation,
    MobileReplicationQuery,
    MobileReplicationSubscription,
)
from api.replication.schema import ReplicationMutation, ReplicationQuery
from api.settings import Settings
from api.settlement.schema import SettlementMutation, SettlementQuery
from api.terminals.schema import TerminalMutation, TerminalQuery
from api.vouchers.schema import VoucherMutation
from graphql import GraphQLError


@strawberry.type
class Query(
    PeopleQuery,
    FamilyQuery,
    SettlementQuery,
    TerminalQuery,
    NotificationQuery,
    FilingQuery,
    ReplicationQuery,
    MobileReplicationQuery,
):
    pass


@strawberry.type
class Mutation(
    AuthMutation,
    PeopleMutation,
    FamilyMutation,
    VoucherMutation,
    SettlementMutation,
    TerminalMutation,
    NotificationMutation,
    FilingMutation,
    ReplicationMutation,
    MobileReplicationMutation,
):
    pass


@strawberry.type
class Subscription(NotificationSubscription, MobileReplicationSubscription):
    pass


class SubscriptionsOverWebSocket(SchemaExtension):
    """Subscriptions run on the WebSocket (graphql-transport-ws) only: over plain HTTP graphql-core
    would execute one like a query and fail on its null root."""

    def on_execute(self) -> Iterator[None]:
        context = self.execution_context.context
        if self.execution_context.operation_type is OperationType.SUBSCRIPTION and not (
            isinstance(context, Context) and isinstance(context.connection, WebSocket)
        ):
            raise AppError("订阅需通过 WebSocket（graphql-transport-ws）连接 /graphql")
        yield


class SafeParserCache(ParserCache):
    """ParserCache, except that a document that does not parse is left to strawberry's own parse:
    ParserCache raises from inside the parsing hook, which strawberry's streaming path (every
    WebSocket operation) does not catch, so a syntax error there ended in a traceback and a bare
    `complete` instead of a GRAPHQL_PARSE_FAILED error."""

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        with suppress(GraphQLError):  # then parsed again by strawberry, which reports it everywhere
            context.graphql_document = self.cached_parse_document(context.query, **context.parse_options)
        yield


class YibaoSchema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        """Every error strawberry is about to send, on every transport, gets its code and its short
        message here, in place: over a WebSocket the messages go out before a schema extension's
        `on_operation` ends. `classify` logs the unexpected ones with their traceback (expected
        errors are not log noise) and masks them."""
        classify_in_place(errors)


def build_schema(settings: Settings | None = None) -> strawberry.Schema:
    settings = settings or Settings()
    # The depth and alias rules are built once: QueryDepthLimiter and MaxAliasesLimiter would make new
    # rule classes per request, and the validation cache, keyed by the rules, would never hit.
    limits = (
        depth_validator(settings.query_max_depth, None, None),
        alias_validator(settings.query_max_aliases),
    )
    extensions: list[Callable[[], SchemaExtension] | type[SchemaExtension]] = [
        ErrorCodes,
        OperationScope,
        SubscriptionsOverWebSocket,
        lambda: MaxTokensLimiter(max_token_count=settings.query_max_tokens),
        lambda: SafeParserCache(maxsize=256),
        lambda: AddValidationRules(list(limits)),
        lambda: ValidationCache(maxsize=256),
        InputGuard,
    ]
    if not settings.introspection:
        extensions.append(DisableIntrospection)
    return YibaoSchema(query=Query, mutation=Mutation, subscription=Subscription, extensions=extensions)


def print_schema() -> str:
    schema: Any = build_schema(Settings())
    return str(schema.as_str()) + "\n"
