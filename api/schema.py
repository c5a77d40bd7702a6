"""Assembles the strawberry schema from the capabilities, with the limits every request is held to."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import strawberry
from strawberry.extensions import (
    DisableIntrospection,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    ParserCache,
    QueryDepthLimiter,
    SchemaExtension,
    ValidationCache,
)
from strawberry.types import ExecutionContext

from api.auth.schema import AuthMutation
from api.graphql_view import ErrorCodes
from api.people.schema import PeopleQuery
from api.settings import Settings
from graphql import GraphQLError


@strawberry.type
class Query(PeopleQuery):
    pass


@strawberry.type
class Mutation(AuthMutation):
    pass


class YibaoSchema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        # ErrorCodes logs the unexpected ones with their traceback; expected errors are not log noise.
        return None


def build_schema(settings: Settings | None = None) -> strawberry.Schema:
    settings = settings or Settings()
    extensions: list[Callable[[], SchemaExtension] | type[SchemaExtension]] = [
        ErrorCodes,
        lambda: MaxTokensLimiter(max_token_count=settings.query_max_tokens),
        lambda: ParserCache(maxsize=256),
        lambda: QueryDepthLimiter(max_depth=settings.query_max_depth),
        lambda: MaxAliasesLimiter(max_alias_count=settings.query_max_aliases),
        lambda: ValidationCache(maxsize=256),
    ]
    if not settings.introspection:
        extensions.append(DisableIntrospection)
    return YibaoSchema(query=Query, mutation=Mutation, extensions=extensions)


def print_schema() -> str:
    schema: Any = build_schema(Settings())
    return str(schema.as_str()) + "\n"
