"""The sync loop: push the outbox, then pull, with backoff and jitter; resumable at any point.

Push sends the queued mutations in seq order, at most MAX_PUSH_BATCH at a time, and stores each
answer (one transaction per answer) before it sends the next batch. A mutation stays queued until its
answer is stored, so a crash, a lost reply or a server that applied a batch and died before answering
only means the same mutations are sent again, and the server, exactly-once, answers them with what it
stored. `expectedSeq` before our first queued seq means the server lost what it had answered (a
restored backup): those mutations are queued again and sent from there.

Pull runs once the outbox is drained (or the push is stuck: see below), so every settlement the server has answered is in the roster
totals the pull brings (the store relies on it to count each settlement once in a person's
year-to-date totals). Each page is stored with its checkpoint in one transaction; `{"resync": true}`
starts a new snapshot generation.

Failures: `Unreachable` is retried `attempts` times per request, waiting `Backoff.delay(n)` (full
jitter: uniformly random up to base * 2^n, capped, so 800 clinics coming back at once spread out), or,
when the server said when to come back (`Retry-After` of a 503 or 429), that long plus up to a second
of jitter (`Backoff.after`): the server spreads the terminals it turns away over its return schedule,
and a doubling guess on top would only leave its slots empty;
`TerminalRevoked` is remembered and stops everything. Any other `ServerRefused` of the push (a 4xx that
retrying will not change) leaves the outbox stuck: it is kept (`push_stuck`, shown by `status`) and the
pull still runs, so revocations, keys and the roster keep arriving. The refused batch was not applied,
so the roster totals do not count it; only a mutation of it that the server had applied before (its
reply lost) may count twice in the provisional totals until the push is fixed, and the server's answer
then corrects it. The error is kept in the store for `status`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

from sync.protocol import DEFAULT_PULL_LIMIT, MAX_PUSH_BATCH, ResultStatus
from terminal.client import SyncClient, TooLarge
from terminal.errors import ServerRefused, TerminalError, TerminalRevoked, Unreachable
from terminal.store import Store, utc_iso

T = TypeVar("T")

PROGRESS_ABOVE = 100
"""A progress bar (on a terminal screen) when at least this many mutations are queued."""
MAX_RESYNCS = 3
PUSH_STUCK_ADVICE = (
    "之后的结算都无法上传，但下载更新（注销清单、签发密钥、签约名单）照常进行。"
    "请不要删除或还原本机数据目录，也不要重复结算；请把终端号、序号和上面的原因告知医保经办机构或运维人员处理。"
)


@dataclass
class Backoff:
    base_s: float = 0.5
    cap_s: float = 30.0
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2^attempt)]."""
        return self.rng.uniform(0.0, min(self.cap_s, self.base_s * (2 ** min(attempt, 30))))

    def after(self, asked_s: float) -> float:
        """The server's `Retry-After`, never less, plus up to a second so that those told the same
        whole second do not come back at the same instant."""
        return asked_s + self.rng.uniform(0.0, 1.0)


@dataclass
class SyncReport:
    pushed: int = 0
    applied: int = 0
    adjusted: int = 0
    rejected: int = 0
    pulled: int = 0
    pages: int = 0
    resynced: bool = False
    pull_complete: bool = False
    queue_left: int = 0
    retries: int = 0
    push_stuck: dict[str, Any] | None = None  # the push was refused for good: see Syncer._stuck

    def to_dict(self) -> dict[str, Any]:
        return {
            "pushed": self.pushed,
            "applied": self.applied,
            "adjusted": self.adjusted,
            "rejected": self.rejected,
            "pulled": self.pulled,
            "pages": self.pages,
            "resynced": self.resynced,
            "pullComplete": self.pull_complete,
            "queueLeft": self.queue_left,
            "retries": self.retries,
            "pushStuck": self.push_stuck,
        }


class Syncer:
    def __init__(
        self,
        store: Store,
        client: SyncClient,
        *,
        attempts: int = 5,
        backoff: Backoff | None = None,
        progress: bool | None = None,
        batch: int = MAX_PUSH_BATCH,
        pull_limit: int = DEFAULT_PULL_LIMIT,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_retry: Callable[[TerminalError, float], None] | None = None,
    ) -> None:
        self.store = store
        self.client = client
        self.attempts = max(1, attempts)
        self.backoff = backoff or Backoff()
        self.progress = progress
        self.batch = max(1, min(batch, MAX_PUSH_BATCH))
        self.pull_limit = pull_limit
        self.sleep = sleep
        self.on_retry = on_retry
        self.report = SyncReport()

    async def run(self) -> SyncReport:
        try:
            try:
                await self.push_all()
            except TerminalRevoked:
                raise
            except ServerRefused as exc:
                # A refusal retrying will not change (a 409 seq conflict after a local backup was
                # restored, a mutation the server cannot take): the outbox is stuck until someone acts,
                # but the pull must go on, or revocations, keys and the roster stop arriving too.
                self._stuck(exc)
            else:
                if self.store.get("push_stuck", None) is not None:
                    self.store.set(push_stuck=None)
            self.report.queue_left = self.store.queue_stats()[0]
            if self.report.queue_left == 0 or self.report.push_stuck is not None:
                await self.pull_all()
        except TerminalRevoked as exc:
            self.store.set(revoked={"at": utc_iso(datetime.now(UTC)), "message": exc.message})
            self._remember(exc)
            raise
        except TerminalError as exc:
            self._remember(exc)
            raise
        finally:
            self._save_clock()
        now = utc_iso(datetime.now(UTC))
        if self.report.pull_complete and self.report.push_stuck is None:
            self.store.set(last_sync_at=now, last_error=None)
        return self.report

    def _stuck(self, exc: ServerRefused) -> None:
        first = self.store.queued(1)
        stuck = {
            "at": utc_iso(datetime.now(UTC)),
            "seq": first[0].seq if first else None,
            "queued": self.store.queue_stats()[0],
            "error": exc.to_dict(),
            "advice": PUSH_STUCK_ADVICE,
        }
        self.report.push_stuck = stuck
        self._remember(exc)
        with contextlib.suppress(TerminalError):
            self.store.set(push_stuck=stuck)

    def _remember(self, exc: TerminalError) -> None:
        # If the store cannot be written either, the caller reports the first error.
        with contextlib.suppress(TerminalError):
            self.store.set(last_error={"at": utc_iso(datetime.now(UTC)), **exc.to_dict()})

    def _save_clock(self) -> None:
        if self.client.clock_changed:
            try:
                self.store.set(clock=self.client.clock.to_dict())
                self.client.clock_changed = False
            except TerminalError:
                pass

    async def retrying(self, call: Callable[[], Awaitable[T]]) -> T:
        attempt = 0
        while True:
            try:
                return await call()
            except Unreachable as exc:
                attempt += 1
                if attempt >= self.attempts:
                    raise
                asked = exc.details.get("retryAfterS")
                if isinstance(asked, int | float) and asked > 0:
                    delay = self.backoff.after(float(asked))  # the server said when: then, not before
                else:
                    delay = self.backoff.delay(attempt)
                self.report.retries += 1
                if self.on_retry is not None:
                    self.on_retry(exc, delay)
                await self.sleep(delay)
            finally:
                self._save_clock()

    # ------------------------------------------------------------------------------------ push

    async def push_all(self) -> None:
        total, _ = self.store.queue_stats()
        bar = self._bar(total, "上传结算")
        size = self.batch
        stalls = 0
        try:
            while True:
                batch = self.store.queued(size)
                if not batch:
                    return
                try:
                    results, expected = await self.retrying(partial(self.client.push, batch))
                except TooLarge:
                    if size == 1:
                        raise ServerRefused(
                            "单笔结算数据超过服务器允许的大小，无法上传，请联系运维人员。",
                            status=413,
                            reason="too_large",
                            seq=batch[0].seq,
                        ) from None
                    size = max(1, size // 2)
                    continue
                if any(r.status == ResultStatus.REJECTED and r.reason == "terminal_revoked" for r in results):
                    # Not stored by the server either: the mutations stay queued, nothing is lost.
                    raise TerminalRevoked(
                        "终端已被停用：服务器不再接收本终端的结算，未上传的结算仍保存在本机。",
                        status=200,
                        reason="terminal_revoked",
                    )
                stored = self.store.record_answers(results, datetime.now(UTC))
                self._count(results)
                self.report.pushed += stored
                if bar is not None:
                    bar.update(stored)
                moved = stored
                if expected is not None and expected < batch[0].seq:
                    moved += self.store.requeue_from(expected)
                    if bar is not None:
                        bar.total = (bar.total or 0) + moved
                self.store.set(last_push_at=utc_iso(datetime.now(UTC)))
                stalls = 0 if moved else stalls + 1
                if stalls >= 3:
                    raise ServerRefused(
                        "服务器没有接收本终端的结算（序号不连续），请联系运维人员。",
                        status=200,
                        reason="no_progress",
                        expectedSeq=expected,
                        firstSeq=batch[0].seq,
                    )
        finally:
            if bar is not None:
                bar.close()

    def _count(self, results: list[Any]) -> None:
        for result in results:
            if result.status == ResultStatus.APPLIED:
                self.report.applied += 1
            elif result.status == ResultStatus.ADJUSTED:
                self.report.adjusted += 1
            else:
                self.report.rejected += 1

    # ------------------------------------------------------------------------------------ pull

    async def pull_all(self) -> None:
        checkpoint = self.store.checkpoint()
        bar = self._bar(None, "下载更新") if checkpoint is None else None
        resyncs = 0
        try:
            while True:
                page = await self.retrying(partial(self.client.pull, checkpoint, self.pull_limit))
                if page.get("resync") is True:
                    resyncs += 1
                    if resyncs > MAX_RESYNCS:
                        raise ServerRefused(
                            "服务器反复要求重新同步，请联系运维人员。", status=200, reason="resync_loop"
                        )
                    self.store.begin_resync()
                    self.report.resynced = True
                    checkpoint = None
                    continue
                changes = page["changes"]
                self.store.apply_page(changes, page["checkpoint"], page["hasMore"], datetime.now(UTC))
                self.report.pages += 1
                self.report.pulled += len(changes)
                if bar is not None:
                    bar.update(len(changes))
                checkpoint = page["checkpoint"]
                if not page["hasMore"]:
                    self.report.pull_complete = True
                    return
        finally:
            if bar is not None:
                bar.close()

    def _bar(self, total: int | None, what: str) -> Any:
        show = self.progress
        if show is None:
            show = sys.stderr.isatty() and (total is None or total >= PROGRESS_ABOVE)
        if not show:
            return None
        from tqdm import tqdm

        return tqdm(total=total, desc=what, unit="笔" if total else "条", file=sys.stderr, leave=True)
