"""Replay detection: a code is accepted once. The store only ever sees authenticated codes."""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable
from typing import Protocol


class ReplayGuard(Protocol):
    def check_and_remember(self, key: bytes, expires_at: int) -> bool:
        """Remember `key` until `expires_at` (Unix seconds); False if it was already remembered.

        Must be atomic (check and insert in one step): a server implementation would use
        `INSERT ... ON CONFLICT DO NOTHING` or Redis `SET key 1 NX EXAT expires_at`.
        """
        ...


class InMemoryReplayGuard:
    """The terminal's guard: bounded, forgetting entries once their code can no longer verify.

    When full of live entries it refuses new codes (fails closed) rather than forgetting a live one,
    which would let that code be replayed. Only signed, unexpired codes reach it, and a clinic sees
    nowhere near `max_entries` codes within one code lifetime, so this is a safety bound, not a limit.
    """

    def __init__(self, max_entries: int = 100_000, clock: Callable[[], float] = time.time) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be positive")
        self._max = max_entries
        self._clock = clock
        self._expiry: dict[bytes, int] = {}
        self._heap: list[tuple[int, bytes]] = []  # (expires_at, key), to evict in expiry order
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._expiry)

    def _evict_expired(self, now: float) -> None:
        while self._heap and self._heap[0][0] < now:
            expires_at, key = heapq.heappop(self._heap)
            if self._expiry.get(key) == expires_at:
                del self._expiry[key]

    def check_and_remember(self, key: bytes, expires_at: int) -> bool:
        with self._lock:
            self._evict_expired(self._clock())
            if key in self._expiry:
                return False
            if len(self._expiry) >= self._max:
                return False
            self._expiry[key] = expires_at
            heapq.heappush(self._heap, (expires_at, key))
            return True
