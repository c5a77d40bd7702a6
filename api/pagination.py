"""Opaque, tamper-proof keyset cursors for Relay connections.

A cursor names the list it came from (which list, whose) and the sort key of its row, and carries a
MAC: a cursor from another user's list, or one edited by hand, is refused instead of leaking a page.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any, Generic, TypeVar
from zoneinfo import ZoneInfo

from api.errors import BadUserInput

SHANGHAI = ZoneInfo("Asia/Shanghai")
MAX_PAGE = 100
RowT = TypeVar("RowT")


@dataclass
class Page(Generic[RowT]):
    rows: list[RowT]
    cursors: list[str]
    has_next_page: bool
    count_query: Any = field(repr=False)
    """A SELECT count(*) with the page's filters, run only if the client asks for totalCount."""


_MAC_BYTES = 16


class CursorCodec:
    def __init__(self, key: bytes) -> None:
        self._key = key

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()[:_MAC_BYTES]

    def encode(self, scope: str, key: list[Any]) -> str:
        payload = json.dumps([scope, key], separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(self._mac(payload) + payload).rstrip(b"=").decode()

    def decode(self, scope: str, cursor: str, field: str = "after") -> list[Any]:
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
            mac, payload = raw[:_MAC_BYTES], raw[_MAC_BYTES:]
            if len(raw) > 512 or not hmac.compare_digest(mac, self._mac(payload)):
                raise ValueError("bad mac")
            cursor_scope, key = json.loads(payload)
        except (ValueError, binascii.Error, TypeError) as exc:
            raise BadUserInput("分页游标无效", field=field) from exc
        if cursor_scope != scope or not isinstance(key, list):
            raise BadUserInput("分页游标不属于此列表", field=field)
        return key


def page_size(first: int | None, default: int = 20) -> int:
    if first is None:
        return default
    if not 0 <= first <= MAX_PAGE:
        raise BadUserInput(f"每页数量须在 0 到 {MAX_PAGE} 之间", field="first")
    return first


EARLIEST = date(1900, 1, 1)
LATEST = date(2999, 12, 31)


def utc_range(start: date | None, end: date | None) -> tuple[datetime | None, datetime | None]:
    """Inclusive local dates (Asia/Shanghai) to a half-open UTC range."""
    for value, argument in ((start, "from"), (end, "to")):
        # Records start in the 20th century; the bounds also keep date arithmetic from overflowing.
        if value is not None and not EARLIEST <= value <= LATEST:
            raise BadUserInput(f"日期须在 {EARLIEST} 到 {LATEST} 之间", field=argument)
    if start is not None and end is not None and start > end:
        raise BadUserInput("开始日期不能晚于结束日期", field="from")
    lower = datetime.combine(start, time.min, SHANGHAI) if start else None
    upper = datetime.combine(end + timedelta(days=1), time.min, SHANGHAI) if end else None
    return lower, upper


def local_year(moment: datetime) -> int:
    return moment.astimezone(SHANGHAI).year


def local_today() -> date:
    """Today in Asia/Shanghai: the calendar day residents and insurance rules count in."""
    return datetime.now(SHANGHAI).date()
