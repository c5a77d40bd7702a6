"""Database ids as clients send them (GraphQL `ID`, a string): parsed once, the same way everywhere."""

from __future__ import annotations

import re

from api.errors import BadUserInput

_DECIMAL = re.compile(r"[1-9][0-9]{0,18}", re.ASCII)
"""ASCII digits only: Python's int() also takes "１", "٣", " 1", "+1" and "1_0", which would name rows
under spellings no client should use (and that caches, logs and audits would not recognise)."""


def parse_id(value: str | int, field: str) -> int:
    """A positive BIGINT, or BAD_USER_INPUT naming the field (never a driver overflow, never a 500)."""
    if isinstance(value, bool):
        raise BadUserInput("编号格式有误", field=field)
    if isinstance(value, int):
        parsed = value
    elif isinstance(value, str) and _DECIMAL.fullmatch(value):
        parsed = int(value)
    else:
        raise BadUserInput("编号格式有误", field=field)
    if not 0 < parsed < 2**63:
        raise BadUserInput("编号格式有误", field=field)
    return parsed
