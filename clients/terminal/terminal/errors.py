"""What can go wrong at a clinic terminal, each with a zh-CN message for the operator, a stable code
for machines (`--json`) and the exit status of the command.

Exit statuses: 0 done; 1 refused (a voucher that does not verify, a bill that does not add up, a
patient who cannot be settled here); 2 not ready (not enrolled, nothing synced yet, a clock that went
back); 3 local storage (disk full, read-only home, damaged database); 4 the server could not be
reached or answered badly, after retries; 5 the server refused this terminal (revoked, enrolment
code spent or wrong).
"""

from __future__ import annotations

from typing import Any

REFUSED = 1
NOT_READY = 2
STORAGE = 3
UNREACHABLE = 4
FORBIDDEN = 5


class TerminalError(Exception):
    code = "terminal_error"
    exit_status = REFUSED

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, **self.details}


class Refused(TerminalError):
    """A request the terminal will not carry out (bad voucher, bad bill, unknown patient, ...)."""

    code = "refused"

    def __init__(self, message: str, *, reason: str, **details: Any) -> None:
        super().__init__(message, reason=reason, **details)
        self.reason = reason


class NotReady(TerminalError):
    code = "not_ready"
    exit_status = NOT_READY

    def __init__(self, message: str, *, reason: str, **details: Any) -> None:
        super().__init__(message, reason=reason, **details)
        self.reason = reason


class StorageError(TerminalError):
    """The home directory cannot be written (full, read-only) or its database is damaged. Whatever
    was being written was rolled back: nothing is half-written."""

    code = "storage"
    exit_status = STORAGE

    def __init__(self, message: str, *, reason: str, **details: Any) -> None:
        super().__init__(message, reason=reason, **details)
        self.reason = reason


class CorruptStore(StorageError):
    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message, reason="corrupt", **details)


class Unreachable(TerminalError):
    """No usable answer from the server: network down, timeout, 5xx, garbage, a truncated body."""

    code = "unreachable"
    exit_status = UNREACHABLE

    def __init__(self, message: str, *, reason: str, **details: Any) -> None:
        super().__init__(message, reason=reason, **details)
        self.reason = reason


class ServerRefused(TerminalError):
    """The server answered with a 4xx that retrying will not change."""

    code = "server_refused"
    exit_status = FORBIDDEN

    def __init__(self, message: str, *, status: int, reason: str | None, **details: Any) -> None:
        super().__init__(message, status=status, reason=reason, **details)
        self.status = status
        self.reason = reason


class TerminalRevoked(ServerRefused):
    code = "terminal_revoked"
