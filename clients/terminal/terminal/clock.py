"""The terminal's sense of time.

A clinic PC's clock is often wrong: a flat CMOS battery puts it back years, a careless setting a day
off. The server never trusts it (it dates visits by what is signed, DESIGN.md section 4), but the
terminal needs a usable clock too: to verify a 60-second voucher, to date a visit, to sign a client
assertion the server accepts. So it keeps the offset between its own clock and the server's, learned
from the server's `Date` header at every exchange (and from the `serverTime` of a `clock_skew`
refusal), and works on `local clock + offset`.

That corrects a clock that is consistently off. A clock that moved *back* since the last exchange (it
now reads earlier than it did then) makes the offset meaningless: `corrected_now()` is then before the
last server time the terminal saw, and settling or scanning is refused until the clock is set right
or the terminal syncs again (`ClockBehind`).

``YIBAO_TERMINAL_CLOCK_SKEW_S`` (seconds, may be negative) shifts the local clock: a diagnostic and test
aid that simulates a wrong hardware clock; leave it unset in a clinic.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime

SKEW_ENV = "YIBAO_TERMINAL_CLOCK_SKEW_S"
BEHIND_TOLERANCE_S = 300
"""How far before the last server time the corrected clock may read before settling is refused:
Date headers have one-second resolution and a request takes a while; five minutes is plenty."""


def local_time() -> float:
    """The machine's clock (Unix seconds), shifted by YIBAO_TERMINAL_CLOCK_SKEW_S when set."""
    skew = os.environ.get(SKEW_ENV)
    return time.time() + (float(skew) if skew else 0.0)


@dataclass
class ClockState:
    """What the terminal learned at its last exchange with the server (stored in the home)."""

    offset_s: float = 0.0
    """server clock - local clock."""
    server_time: float | None = None
    """The server's time (Unix seconds) at the last exchange."""

    def corrected(self, local: float | None = None) -> float:
        return (local_time() if local is None else local) + self.offset_s

    def corrected_now(self) -> datetime:
        return datetime.fromtimestamp(self.corrected(), UTC)

    def behind_by(self, local: float | None = None) -> float:
        """Seconds by which the corrected clock reads before the last server time seen (0 if not)."""
        if self.server_time is None:
            return 0.0
        return max(0.0, self.server_time - self.corrected(local))

    def is_behind(self) -> bool:
        return self.behind_by() > BEHIND_TOLERANCE_S

    def observe(self, server_time: float, sent_local: float, received_local: float) -> None:
        """A server time read from an answer to a request sent at `sent_local` and answered at
        `received_local` (local clock): the server stamped it somewhere in between."""
        self.offset_s = server_time - (sent_local + received_local) / 2
        # The latest, not the greatest: one wrong time seen once (a server clock stepped back, an
        # answer from something else) must not hold settling back until the real time catches up.
        self.server_time = server_time

    def to_dict(self) -> dict[str, float | None]:
        return {"offsetS": self.offset_s, "serverTime": self.server_time}

    @classmethod
    def from_dict(cls, data: object) -> ClockState:
        if not isinstance(data, dict):
            return cls()
        offset = data.get("offsetS")
        server = data.get("serverTime")
        return cls(
            float(offset) if isinstance(offset, int | float) else 0.0,
            float(server) if isinstance(server, int | float) else None,
        )


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")
