"""What every JSON body the server parses is held to: a nesting bound, and text that can be stored.

One parser for GraphQL bodies (POST, GET `variables`/`extensions`, WebSocket messages) and the /sync
endpoints alike, so that no entry point parses JSON its own way. Nesting is bounded because the
standard library parser recurses (about 1,000 levels end in RecursionError, a 500) and so does
everything that walks the value afterwards; a few thousand brackets are only a few kilobytes.
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_JSON_DEPTH = 32
"""Containers inside containers: the deepest legitimate body (a push batch's bill items) needs 6."""

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
"""NUL (PostgreSQL text refuses it) and UTF-16 surrogates, which never stand alone in valid text."""


class JSONTooDeep(json.JSONDecodeError):
    """A JSONDecodeError, so that callers that refuse malformed JSON refuse this too."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"JSON nested deeper than {limit} levels", "", 0)
        self.limit = limit


def loads(data: str | bytes, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """json.loads with the nesting bound; raises json.JSONDecodeError (or JSONTooDeep) on bad input."""
    try:
        value = json.loads(data, parse_constant=_refuse_constant)
    except RecursionError:
        raise JSONTooDeep(max_depth) from None
    except UnicodeDecodeError as exc:
        raise json.JSONDecodeError("the body is not UTF-8", "", 0) from exc
    except ValueError as exc:  # e.g. an integer past the interpreter's 4,300-digit conversion limit
        raise json.JSONDecodeError("a number is too long", "", 0) from exc
    check_depth(value, max_depth)
    return value


def _refuse_constant(name: str) -> Any:
    raise json.JSONDecodeError(f"{name} is not JSON", "", 0)  # Python accepts NaN and Infinity; JSON does not


def check_depth(value: Any, max_depth: int = MAX_JSON_DEPTH) -> None:
    """Raises JSONTooDeep when containers nest deeper than `max_depth` (a bare scalar is depth 0)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth + 1 > max_depth:
            raise JSONTooDeep(max_depth)
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))


def unstorable_text(text: str) -> bool:
    """True for text with NUL or an unpaired UTF-16 surrogate: no database column can hold it."""
    return _UNSTORABLE.search(text) is not None


MAX_TEXT_CHARS = 100_000
"""The longest text any argument needs (a policy version's TOML is about 11,000 characters)."""


def text_problem(text: str, max_chars: int = MAX_TEXT_CHARS) -> str | None:
    """Why `text` cannot be accepted as client input (`unstorable` or `too_long`), or None."""
    if len(text) > max_chars:
        return "too_long"
    if unstorable_text(text):
        return "unstorable"
    return None


def find_bad_text(value: Any, path: str = "", max_chars: int = MAX_TEXT_CHARS) -> tuple[str, str] | None:
    """(dotted path, problem) of the first string, key or value, in a decoded JSON value that cannot be
    accepted, or None. List items add no segment: the path names the field, as a client needs it.
    The path is made of the client's own keys, so it comes back cut to a short, sendable prefix."""
    found = _find_bad_text(value, path, max_chars)
    return None if found is None else (shorten(found[0], 100), found[1])


def _find_bad_text(value: Any, path: str, max_chars: int) -> tuple[str, str] | None:
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            problem = text_problem(item, max_chars)
            if problem:
                return where, problem
        elif isinstance(item, dict):
            for key, child in item.items():
                if isinstance(key, str) and text_problem(key, max_chars):
                    return where, "unstorable"  # the key itself is not quotable
                stack.append((child, f"{where}.{key}" if where else str(key)))
        elif isinstance(item, list):
            stack.extend((child, where) for child in item)
    return None


ECHO_CHARS = 40
"""How much of a client's text an error message may quote."""


def shorten(text: str, limit: int = ECHO_CHARS) -> str:
    """At most `limit` characters of something a client sent, for an error message, with anything
    that cannot be encoded (an unpaired surrogate) replaced: an answer must always be sendable."""
    short = text if len(text) <= limit else text[:limit] + "…"
    return _UNSTORABLE.sub("\ufffd", short)
