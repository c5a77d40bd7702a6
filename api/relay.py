"""Relay-style connections shared by every capability's lists."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

import strawberry

from api.context import Info
from api.pagination import Page

NodeT = TypeVar("NodeT")


@strawberry.type
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None


@strawberry.type
class Edge(Generic[NodeT]):
    node: NodeT
    cursor: str


@strawberry.type
class Connection(Generic[NodeT]):
    edges: list[Edge[NodeT]]
    page_info: PageInfo
    _count_query: strawberry.Private[Any]

    @strawberry.field(description="All rows matching the filters, on every page.")
    async def total_count(self, info: Info) -> int:
        async with info.context.db() as session:
            return int((await session.execute(self._count_query)).scalar_one())

    @classmethod
    def from_page(
        cls, page: Page[Any], to_node: Callable[[Any], NodeT], *, after: str | None
    ) -> Connection[NodeT]:
        edges = [
            Edge(node=to_node(row), cursor=cursor)
            for row, cursor in zip(page.rows, page.cursors, strict=True)
        ]
        return cls(
            edges=edges,
            page_info=PageInfo(
                has_next_page=page.has_next_page,
                has_previous_page=after is not None,
                start_cursor=page.cursors[0] if page.cursors else None,
                end_cursor=page.cursors[-1] if page.cursors else None,
            ),
            _count_query=page.count_query,
        )
