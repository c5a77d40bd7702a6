"""Strict readers for JSON-shaped input, shared by the policy loader and the visit/YTD parsers.

Every failure raises the caller's error type with the dotted path of the offending field. Money
and ratios must be real ``int``: ``bool`` (an ``int`` subclass) and ``float`` are refused, since a
float amount of fen is always a bug upstream.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from .errors import _FieldError

# 10 million yuan: the absurd-amount bound for one bill, item, balance or policy figure.
MAX_FEN = 1_000_000_000


def is_int(value: object) -> bool:
    return type(value) is int


class Reader:
    """Reads one mapping at a dotted path; ``done()`` refuses keys nobody asked for."""

    __slots__ = ("_data", "_err", "_path", "_seen")

    def __init__(self, data: object, path: str, err: type[_FieldError]) -> None:
        if not isinstance(data, Mapping):
            raise err(path or "<root>", "must be a table/object")
        self._data: Mapping[str, Any] = data
        self._path = path
        self._err = err
        self._seen: set[str] = set()

    def path(self, key: str) -> str:
        return f"{self._path}.{key}" if self._path else key

    def error(self, key: str, message: str) -> _FieldError:
        return self._err(self.path(key), message)

    def has(self, key: str) -> bool:
        return key in self._data

    def names(self) -> list[str]:
        return [str(k) for k in self._data]

    def raw(self, key: str) -> Any:
        self._seen.add(key)
        if key not in self._data:
            raise self.error(key, "is required")
        return self._data[key]

    def opt_raw(self, key: str) -> Any:
        self._seen.add(key)
        return self._data.get(key)

    def sub(self, key: str) -> Reader:
        return Reader(self.raw(key), self.path(key), self._err)

    def string(self, key: str) -> str:
        value = self.raw(key)
        if not isinstance(value, str) or not value:
            raise self.error(key, "must be a non-empty string")
        return value

    def opt_string(self, key: str) -> str | None:
        return None if self.opt_raw(key) is None else self.string(key)

    def boolean(self, key: str, default: bool | None = None) -> bool:
        if default is not None and self.opt_raw(key) is None:
            return default
        value = self.raw(key)
        if not isinstance(value, bool):
            raise self.error(key, "must be a boolean")
        return value

    def integer(self, key: str, *, lo: int = 0, hi: int = MAX_FEN) -> int:
        value = self.raw(key)
        if not is_int(value):
            raise self.error(key, f"must be an integer, not {type(value).__name__}")
        if value < lo:
            raise self.error(key, f"must be >= {lo}" if lo else "must not be negative")
        if value > hi:
            raise self.error(key, f"must be <= {hi}")
        return int(value)

    def opt_integer(self, key: str, *, lo: int = 0, hi: int = MAX_FEN) -> int | None:
        return None if self.opt_raw(key) is None else self.integer(key, lo=lo, hi=hi)

    def permille(self, key: str) -> int:
        value = self.raw(key)
        if is_int(value) and value > 1000:
            raise self.error(key, "ratio must not exceed 1000 per mille (100%)")
        return self.integer(key, hi=1000)

    def code(self, key: str, allowed: Mapping[str, str]) -> str:
        value = self.string(key)
        if value not in allowed:
            raise self.error(key, f"unknown code {value!r}; expected one of {sorted(allowed)}")
        return value

    def code_list(self, key: str, allowed: Mapping[str, str]) -> frozenset[str]:
        value = self.raw(key)
        if not isinstance(value, list | tuple | set | frozenset):
            raise self.error(key, "must be a list")
        out: set[str] = set()
        for i, item in enumerate(value):
            if not isinstance(item, str) or item not in allowed:
                raise self._err(f"{self.path(key)}[{i}]", f"unknown code {item!r}")
            out.add(item)
        return frozenset(out)

    def date(self, key: str) -> dt.date:
        return parse_date(self.raw(key), self.path(key), self._err)

    def opt_date(self, key: str) -> dt.date | None:
        return None if self.opt_raw(key) is None else self.date(key)

    def table(self, key: str, keys: Mapping[str, str] | tuple[str, ...], kind: str) -> dict[str, int]:
        """A table with exactly the given keys, each an int of ``kind`` ("fen" or "permille")."""
        sub = self.sub(key)
        out = {k: (sub.permille(k) if kind == "permille" else sub.integer(k)) for k in keys}
        sub.done()
        return out

    def done(self) -> None:
        for key in self._data:
            if key not in self._seen:
                raise self.error(str(key), "unknown key")


def parse_date(value: object, path: str, err: type[_FieldError]) -> dt.date:
    # datetime is a date subclass: refuse it, a visit is dated by calendar day.
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            pass
    raise err(path, "must be a date (YYYY-MM-DD)")
