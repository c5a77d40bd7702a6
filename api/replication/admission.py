"""Admission control for /sync/push and /sync/pull: a reconnect storm is told when to come back.

When 800 clinic terminals reconnect at once (bench/terminal_drain.py), letting every request in makes
each one wait behind all the others, longer than the terminal's 30 s request timeout: the terminal
gives up and asks again while the server is still working for the request it abandoned, and the drain
collapses into retries. Instead each worker process

- serves at most `limit` sync requests at once (`Settings.sync_max_concurrent`, sized to its share of
  the database pool and of a CPU core: more in flight only makes each slower);
- lets a few more wait for a slot (`max_waiting`), and only while the wait it can expect is short
  (`max_wait_s`, from the recent service time), so that a request it takes finishes well within the
  terminal's timeout; a waiter not served by then is refused too;
- refuses the rest at once, with a `Retry-After` from a schedule: every refused request is given the
  next free return slot at the rate this worker serves (limit / recent service time), so refused
  terminals come back spread out at the rate they can be served instead of all in the same second;
  the seconds are rounded at random (and the terminal adds jitter of its own). Once the schedule
  reaches `retry_after_max_s`, the overflow is spread at random up to it.

The decision is made before the client assertion is verified, so a refusal costs no database
connection, no signature check and no write: a few microseconds. The trade-off: an unauthenticated
flood can take the slots and make terminals wait (what it cannot do is make the server work hard:
what it gets in is refused at authentication, which frees the slot within a database round trip).
Verifying the assertion first would cost every refused request a terminal look-up and a `jti` insert,
which is the work the storm must not cause. Fairness is kept cheaply per claimed terminal: the
assertion's unverified `iss` is read (base64 and JSON, no crypto), and a request is refused at once
while a request that has *proved* to be that terminal is being served (its retry after its own
timeout: `Slot.claim` after the assertion is verified). Only a verified claim counts, so a stranger's
forged request naming a terminal's (sequential, guessable) id cannot lock that terminal out; nor is
a request refused at authentication counted in the service time the return schedule is built on, so
fast-failing forgeries cannot make it promise slots the server does not have. A flood of strangers
can still take the slots for as long as their refusals take; per-address connection limits at the
reverse proxy in front bound it, and that is where a flood of strangers belongs.

Per worker, in its event loop: nothing here is shared between processes or threads.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

SERVICE_PRIOR_S = 0.5
"""Service time assumed before any request has been measured."""
SERVICE_EWMA_WEIGHT = 0.2
"""Weight of the newest request in the moving average of the service time."""
MAX_TOKEN_CHARS = 4096
"""A bearer token longer than this is not looked into for its `iss` (the assertion check refuses it)."""


@dataclass(frozen=True)
class Refused:
    """Not admitted: answer 503 and ask the client to come back in `retry_after_s` seconds."""

    retry_after_s: int
    why: str  # "full" (no slot, no place in the queue), "waited" (queued too long), "duplicate"


class Slot:
    """An admitted request; `release()` it (exactly once) when its answer is ready."""

    __slots__ = ("_admission", "_key", "_released", "_started")

    def __init__(self, admission: Admission, started: float) -> None:
        self._admission = admission
        self._key: str | None = None
        self._started = started
        self._released = False

    def claim(self, terminal: str) -> None:
        """The request has proved to be `terminal` (its assertion verified): until the release, that
        terminal's other requests are refused at once, and this one's time counts as service time."""
        if not self._released and self._key is None:
            self._key = terminal
            self._admission._holders[terminal] = self._admission._holders.get(terminal, 0) + 1

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._admission._release(self._key, self._started)


class Admission:
    def __init__(
        self,
        limit: int,
        *,
        max_waiting: int,
        max_wait_s: float,
        retry_after_max_s: int,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = max(1, limit)
        self.max_waiting = max(0, max_waiting)
        self.max_wait_s = max_wait_s
        self.retry_after_max_s = max(1, retry_after_max_s)
        self.rng = rng or random.Random()  # noqa: S311 -- spreading retries, not secrets
        self.clock = clock
        self.in_flight = 0
        self.service_s = SERVICE_PRIOR_S
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._holders: dict[str, int] = {}  # verified terminal ids being served -> their slots
        self._horizon = 0.0  # clock time up to which return slots have been handed out

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def _rate(self) -> float:
        """Requests per second this worker serves at its limit, by the recent service time."""
        return self.limit / max(self.service_s, 1e-3)

    async def admit(self, key: str | None) -> Slot | Refused:
        """A slot now, a slot after a short wait, or a refusal with when to come back. `key`: the
        terminal the request claims to be, unverified (None if it names none)."""
        if key is not None and key in self._holders:
            # That terminal, verified, is being served: this is its retry after its own timeout (or
            # a forgery naming it, which loses nothing by being refused).
            return Refused(self._round(max(1.0, self.service_s)), "duplicate")
        now = self.clock()
        if self.in_flight < self.limit and not self.waiting:
            return self._enter(now)
        waiting = self.waiting
        expected_wait = (waiting + 1) / self._rate()
        if waiting >= self.max_waiting or expected_wait > self.max_wait_s:
            return self._refuse(now, "full")
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await asyncio.wait({waiter}, timeout=self.max_wait_s)
        except BaseException:  # cancelled while waiting: a slot handed over meanwhile is given back
            if waiter.done():
                Slot(self, self.clock()).release()
            else:
                self._leave_queue(waiter)
            raise
        if not waiter.done():
            self._leave_queue(waiter)
            return self._refuse(self.clock(), "waited")
        return Slot(self, self.clock())  # _release handed its slot over: in_flight already counts it

    def _leave_queue(self, waiter: asyncio.Future[None]) -> None:
        waiter.cancel()
        self._waiters.remove(waiter)

    def _enter(self, now: float) -> Slot:
        self.in_flight += 1
        return Slot(self, now)

    def _release(self, key: str | None, started: float) -> None:
        if key is not None:
            # Only a verified request's time is service time: a forgery refused at authentication
            # is quick, and counting it would make the schedule promise slots the server lacks.
            elapsed = self.clock() - started
            self.service_s += SERVICE_EWMA_WEIGHT * (elapsed - self.service_s)
            left = self._holders.get(key, 0) - 1
            if left > 0:
                self._holders[key] = left
            else:
                self._holders.pop(key, None)
        if self._waiters:
            self._waiters.popleft().set_result(None)  # the slot passes on: in_flight is unchanged
        else:
            self.in_flight -= 1

    def _refuse(self, now: float, why: str) -> Refused:
        rate = self._rate()
        # Those already queued come first; then one return slot per refused request, at `rate`.
        start = now + self.waiting / rate
        slot = max(self._horizon, start) + 1.0 / rate
        cap = now + self.retry_after_max_s
        if slot > cap:
            # Booked up to the cap: anywhere in it at random, so that the overflow does not all come
            # back at the cap's second (the schedule is not moved: those slots are a guess already).
            return Refused(self._round(self.rng.uniform(start - now, self.retry_after_max_s)), why)
        self._horizon = slot
        return Refused(self._round(slot - now), why)

    def _round(self, seconds: float) -> int:
        """Whole seconds for the header, rounded up or down at random in proportion (so that the
        returns keep the schedule's rate on average), at least 1, at most the cap."""
        whole = math.floor(seconds)
        if self.rng.random() < seconds - whole:
            whole += 1
        return int(min(max(1, whole), self.retry_after_max_s))


def claimed_terminal(authorization: str | None) -> str | None:
    """The `iss` a client assertion claims, unverified (cheap: base64 and JSON, no signature check);
    None when there is none to read. Used only to keep one terminal from taking several slots."""
    if not authorization or len(authorization) > MAX_TOKEN_CHARS:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return None
    parts = token.strip().split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: "[[[[..." claims
        return None
    issuer = payload.get("iss") if isinstance(payload, dict) else None
    return issuer if isinstance(issuer, str) and 0 < len(issuer) <= 20 else None
