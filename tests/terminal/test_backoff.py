"""Backoff with full jitter, and the retry loop that uses it (pure: no server, no store writes)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from terminal.clock import ClockState
from terminal.errors import ServerRefused, Unreachable
from terminal.store import Store
from terminal.syncer import Backoff, Syncer


def test_delays_are_uniform_up_to_a_doubling_capped_bound() -> None:
    backoff = Backoff(base_s=0.5, cap_s=30.0, rng=random.Random(7))
    for attempt in range(12):
        bound = min(30.0, 0.5 * 2**attempt)
        draws = [backoff.delay(attempt) for _ in range(400)]
        assert all(0.0 <= d <= bound for d in draws)
        assert max(draws) > 0.8 * bound and min(draws) < 0.2 * bound  # spread over the whole range
    assert backoff.delay(10_000) <= 30.0


async def test_retrying_waits_between_tries_and_gives_up_after_attempts(tmp_path: Path) -> None:
    store = Store.open(tmp_path, create=True)
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    class Client:
        clock = ClockState()
        clock_changed = False

    syncer = Syncer(store, Client(), attempts=4, backoff=Backoff(rng=random.Random(1)), sleep=sleep)  # type: ignore[arg-type]
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise Unreachable("x", reason="network")
        return "ok"

    assert await syncer.retrying(flaky) == "ok" and calls == 3 and len(slept) == 2

    async def down() -> str:
        raise Unreachable("down", reason="network")

    slept.clear()
    with pytest.raises(Unreachable):
        await syncer.retrying(down)
    assert len(slept) == 3 and syncer.report.retries == 5

    async def busy() -> str:
        raise Unreachable("busy", reason="server_error", status=503, retryAfterS=7.0)

    slept.clear()
    with pytest.raises(Unreachable):
        await syncer.retrying(busy)
    assert len(slept) == 3 and all(s >= 7.0 for s in slept)  # never sooner than the server asked

    async def refused() -> str:
        raise ServerRefused("no", status=400, reason="bad")

    slept.clear()
    with pytest.raises(ServerRefused):
        await syncer.retrying(refused)
    assert slept == []  # a refusal is not retried
    store.close()
