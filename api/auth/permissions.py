"""Strawberry permission classes: who may reach a field, declared on the field, not in resolvers."""

from __future__ import annotations

from typing import Any, ClassVar

from strawberry.permission import BasePermission

from api.auth.models import Role
from api.context import Info
from api.errors import Forbidden


class IsAuthenticated(BasePermission):
    message = "请先登录"

    async def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        # require_viewer raises UNAUTHENTICATED with the precise reason (expired, revoked, ...).
        await info.context.require_viewer()
        return True


class _HasRole(BasePermission):
    roles: ClassVar[frozenset[Role]] = frozenset()
    message = "没有权限执行此操作"

    async def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        viewer = await info.context.require_viewer()
        if viewer.role not in self.roles:
            raise Forbidden()
        return True


class IsResident(_HasRole):
    roles = frozenset({Role.RESIDENT})


class IsReviewer(_HasRole):
    roles = frozenset({Role.REVIEWER, Role.ADMIN})


class IsAdmin(_HasRole):
    roles = frozenset({Role.ADMIN})


class IsPharmacy(_HasRole):
    roles = frozenset({Role.PHARMACY, Role.TERMINAL})
