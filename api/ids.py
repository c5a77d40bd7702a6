"""Database ids as clients send them (GraphQL `ID`, a string): parsed once, the same way everywhere."""

from __future__ import annotations

from api.errors import BadUserInput


def parse_id(value: str | int, field: str) -> int:
    """A positive BIGINT, or BAD_USER_INPUT naming the field (never a driver overflow, never a 500)."""
    try:
        parsed = int(value)
    except (TypeError, ValueError):
        raise BadUserInput("编号格式有误", field=field) from None
    if not 0 < parsed < 2**63:
        raise BadUserInput("编号格式有误", field=field)
    return parsed
