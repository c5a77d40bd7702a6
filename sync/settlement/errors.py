"""The two error types of the settlement engine.

Both carry a dotted field path (e.g. ``visit.items[2].amount_fen``) and an English message, so the
server can map them to a GraphQL ``BAD_USER_INPUT`` error that names the field.
"""

from __future__ import annotations


class _FieldError(ValueError):
    __slots__ = ("field", "message")

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class PolicyError(_FieldError):
    """A policy file or dict is inconsistent; nothing from it is used."""


class SettlementInputError(_FieldError):
    """A visit, bill or year-to-date total cannot be settled; no amount is computed."""
