"""Admission control of /sync/pull and /sync/push (api.replication.admission): the class itself, on a
fake clock, and a real uvicorn with one slot per worker and a push held in flight, talked to by the
terminal's own code (SyncClient, Syncer)."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlmodel import col
from terminal.client import Identity, SyncClient
from terminal.errors import TerminalError
from terminal.keys import load_or_create_key
from terminal.settle import BillInput, Patient, settle
from terminal.store import Store
from terminal.syncer import Syncer

from api.people.models import Settlement
from api.replication import push as pushing
from api.replication.admission import SERVICE_PRIOR_S, Admission, Refused, Slot, claimed_terminal
from api.replication.models import PushedMutation
from api.settings import Settings
from api.state import AppState
from sync.assertion import make_assertion
from sync.settlement import BillItem
from sync.vouchers import public_key_to_b64
from tests.conftest import serving
from tests.terminal.world import Village, enrolment_code, make_village

# ------------------------------------------------------------------------------ the class, pure


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def admission(limit: int = 1, *, waiting: int = 0, wait_s: float = 5.0, cap: int = 60) -> Admission:
    import random

    return Admission(
        limit,
        max_waiting=waiting,
        max_wait_s=wait_s,
        retry_after_max_s=cap,
        rng=random.Random(3),
        clock=Clock(),
    )


async def test_beyond_the_limit_requests_are_refused_with_return_times_spread_at_the_service_rate() -> None:
    gate = admission(1, cap=10)
    gate.service_s = 1.0  # one request a second
    first = await gate.admit("1")
    assert isinstance(first, Slot)
    answers = [await gate.admit(str(n)) for n in range(2, 32)]
    assert all(isinstance(a, Refused) and a.why == "full" for a in answers)
    # One return slot per refused request, a second apart, up to the cap: not all in the same second;
    # beyond the cap, anywhere up to it.
    waits = [a.retry_after_s for a in answers if isinstance(a, Refused)]
    assert waits[:10] == list(range(1, 11))
    assert all(1 <= w <= 10 for w in waits[10:]) and len(set(waits[10:])) > 3
    first.release()
    assert gate.in_flight == 0
    assert isinstance(await gate.admit("2"), Slot)


async def test_a_terminal_already_served_is_refused_its_second_request_at_once() -> None:
    gate = admission(4, waiting=4)
    slot = await gate.admit("7")
    assert isinstance(slot, Slot)
    slot.claim("7")  # its assertion verified
    again = await gate.admit("7")
    assert isinstance(again, Refused) and again.why == "duplicate" and again.retry_after_s >= 1
    assert isinstance(await gate.admit("8"), Slot)  # another terminal still gets in
    slot.release()
    slot.release()  # a second release does not free a second slot
    assert gate.in_flight == 1
    assert isinstance(await gate.admit("7"), Slot)


async def test_only_a_verified_request_holds_its_terminal_and_counts_as_service_time() -> None:
    now = [100.0]
    gate = admission(4, waiting=4)
    gate.clock = lambda: now[0]
    forged = await gate.admit("7")  # names terminal 7, refused at authentication: never claims
    assert isinstance(forged, Slot)
    real = await gate.admit("7")
    assert isinstance(real, Slot)  # not refused as a duplicate of the forgery
    now[0] += 0.001
    forged.release()
    assert gate.service_s == SERVICE_PRIOR_S  # the forgery's quick refusal is not service time
    real.claim("7")
    now[0] += 2.0
    assert isinstance(await gate.admit("7"), Refused)  # while the verified one is served
    real.release()
    assert gate.service_s > SERVICE_PRIOR_S
    assert isinstance(await gate.admit("7"), Slot)


async def test_a_waiting_request_gets_the_slot_a_finished_one_hands_over() -> None:
    gate = admission(1, waiting=1)
    first = await gate.admit("1")
    assert isinstance(first, Slot)
    queued = asyncio.ensure_future(gate.admit("2"))
    await asyncio.sleep(0)
    assert gate.waiting == 1
    third = await gate.admit("3")  # the queue is full
    assert isinstance(third, Refused) and third.why == "full"
    first.release()
    second = await queued
    assert isinstance(second, Slot) and gate.in_flight == 1 and gate.waiting == 0
    second.release()
    assert gate.in_flight == 0


async def test_a_waiter_not_served_in_time_is_refused_and_leaves_nothing_behind() -> None:
    gate = admission(1, waiting=2, wait_s=0.01)
    gate.service_s = 0.001  # so that a wait is expected to be short enough to queue for
    first = await gate.admit("1")
    assert isinstance(first, Slot)
    late = await gate.admit("2")  # nobody releases: it waits max_wait_s, then is told when to come back
    assert isinstance(late, Refused) and late.why == "waited"
    assert gate.waiting == 0 and isinstance(await gate.admit("2"), Refused)  # still full, but not a duplicate
    cancelled = asyncio.ensure_future(gate.admit("3"))
    await asyncio.sleep(0)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    first.release()
    assert gate.in_flight == 0 and gate.waiting == 0


async def test_a_wait_expected_to_be_long_is_not_queued() -> None:
    gate = admission(1, waiting=10, wait_s=2.0)
    gate.service_s = 3.0  # the next slot is expected in 3 s: longer than a request may wait
    assert isinstance(await gate.admit("1"), Slot)
    refused = await gate.admit("2")
    assert isinstance(refused, Refused) and refused.why == "full" and gate.waiting == 0


def test_the_claimed_terminal_is_read_without_verifying() -> None:
    def token(claims: Any) -> str:
        body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
        return f"Bearer eyJhbGciOiJFZERTQSJ9.{body}.c2ln"

    assert claimed_terminal(token({"iss": "42", "sub": "42"})) == "42"
    assert claimed_terminal(token({"iss": 42})) is None
    assert claimed_terminal(token(["iss"])) is None
    assert claimed_terminal("Bearer not-a-jwt") is None
    assert claimed_terminal("Bearer a.%%%.b") is None
    assert claimed_terminal("Basic eA==") is None
    assert claimed_terminal(None) is None
    assert claimed_terminal("Bearer " + "a" * 5000) is None


# ---------------------------------------------------------------------- over HTTP, one slot per worker


@pytest.fixture(scope="module")
def one_slot(settings: Settings, state: AppState) -> Iterator[str]:
    """The app on its own uvicorn (same database and keys), one sync request at a time, no queue."""
    narrow = settings.model_copy(update={"sync_max_concurrent": 1, "sync_max_waiting": 0})
    with serving(narrow, "the one-slot server") as url:
        yield url


class Held:
    """Pushes wait in the server (after admission, before any work) until `go` is set."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.entered = threading.Event()
        self.go = threading.Event()
        real = pushing.push

        async def held(*args: Any, **kwargs: Any) -> Any:
            self.entered.set()
            # The server's loop runs in another thread: wait for the test without blocking it.
            await asyncio.get_running_loop().run_in_executor(None, self.go.wait, 60)
            return await real(*args, **kwargs)

        monkeypatch.setattr(pushing, "push", held)

    async def in_flight(self) -> None:
        assert await asyncio.to_thread(self.entered.wait, 60), "the push never reached the server"


async def terminal(
    url: str, state: AppState, village: Village, home: Path, patient: int
) -> tuple[Store, SyncClient]:
    """A real terminal home, enrolled over HTTP and pulled once (its roster), with one visit of the
    village's `patient`-th villager queued (each terminal its own: the same bill twice is refused)."""
    store = Store.open(home, create=True)
    key = load_or_create_key(home)
    client = SyncClient(url, store.clock())
    code = await enrolment_code(state, village.clinics[0])
    answer = await client.enrol(code, public_key_to_b64(key.public_key()))
    store.set(
        identity={
            "server": url,
            "terminalId": answer["terminalId"],
            "clinicId": answer["clinicId"],
            "clinicName": answer.get("clinicName"),
            "villageCode": village.code,
            "regionCode": village.code[:6],
            "facilityLevel": "village",
            "audience": answer["audience"],
        },
        clock=client.clock.to_dict(),
    )
    client.identity = Identity(answer["terminalId"], key, answer["audience"])
    report = await Syncer(store, client).run()
    assert report.pull_complete
    who = village.people[patient]
    bill = BillInput("general_outpatient", (BillItem(8_800, "class_a"),), "local", False)
    settle(store, Patient(person=str(who.id)), bill)
    assert store.queue_stats()[0] == 1
    return store, client


async def on_server(state: AppState, terminal_id: str) -> tuple[int, int]:
    """(mutations stored, settlements) of one terminal on the server."""
    async with state.db.session() as session:
        pushed = (
            await session.execute(
                select(func.count()).where(col(PushedMutation.terminal_id) == int(terminal_id))
            )
        ).scalar_one()
        settled = (
            await session.execute(select(func.count()).where(col(Settlement.terminal_id) == int(terminal_id)))
        ).scalar_one()
    return int(pushed), int(settled)


async def test_with_one_slot_taken_the_next_request_is_a_503_with_retry_after_and_the_push_applies_once(
    one_slot: str, state: AppState, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    village = await make_village(state, 2)
    store_a, client_a = await terminal(one_slot, state, village, tmp_path / "a", 0)
    store_b, client_b = await terminal(one_slot, state, village, tmp_path / "b", 1)
    assert client_a.identity is not None and client_b.identity is not None
    held = Held(monkeypatch)
    pushing_a = asyncio.ensure_future(Syncer(store_a, client_a, attempts=1).push_all())
    await held.in_flight()

    async with httpx.AsyncClient(base_url=one_slot) as http:

        def bearer(identity: Identity) -> dict[str, str]:
            return {
                "authorization": "Bearer "
                + make_assertion(identity.key, identity.terminal_id, identity.audience)
            }

        for route, identity in (
            ("/sync/pull", client_b.identity),
            ("/sync/push", client_b.identity),
            ("/sync/pull", client_a.identity),
        ):
            body: dict[str, Any] = (
                {"checkpoint": None, "limit": 1} if route == "/sync/pull" else {"mutations": []}
            )
            busy = await http.post(route, json=body, headers=bearer(identity))
            assert busy.status_code == 503, (route, busy.text)
            assert busy.headers["retry-after"].isdigit() and int(busy.headers["retry-after"]) >= 1
            error = busy.json()["error"]
            assert error["code"] == "UPSTREAM_UNAVAILABLE" and error["reason"] == "overloaded"
            assert error["retryAfterS"] == int(busy.headers["retry-after"])

        held.go.set()
        await pushing_a
        assert store_a.queue_stats()[0] == 0
        # The slot is free again.
        assert (
            await http.post(
                "/sync/pull", json={"checkpoint": None, "limit": 1}, headers=bearer(client_b.identity)
            )
        ).status_code == 200
    assert await on_server(state, client_a.identity.terminal_id) == (1, 1)
    # Pushed again (the answer lost, say): the stored answer, not a second settlement.
    store_a.requeue_from(1)
    await Syncer(store_a, client_a, attempts=1).push_all()
    assert await on_server(state, client_a.identity.terminal_id) == (1, 1)
    for store, client in ((store_a, client_a), (store_b, client_b)):
        await client.aclose()
        store.close()


async def test_the_terminal_waits_the_retry_after_it_is_given_and_then_gets_through(
    one_slot: str, state: AppState, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    village = await make_village(state, 2)
    store_a, client_a = await terminal(one_slot, state, village, tmp_path / "a", 0)
    store_b, client_b = await terminal(one_slot, state, village, tmp_path / "b", 1)
    held = Held(monkeypatch)
    pushing_a = asyncio.ensure_future(Syncer(store_a, client_a, attempts=1).push_all())
    await held.in_flight()
    asked: list[Any] = []
    slept: list[float] = []

    def retried(exc: TerminalError, delay: float) -> None:
        asked.append(exc.details.get("retryAfterS"))

    async def sleep(seconds: float) -> None:  # instead of waiting: let the held push finish
        slept.append(seconds)
        held.go.set()
        await pushing_a

    sleeper: Callable[[float], Awaitable[None]] = sleep
    report = await Syncer(store_b, client_b, attempts=3, sleep=sleeper, on_retry=retried).run()
    assert report.retries == 1 and len(slept) == 1
    assert isinstance(asked[0], float) and asked[0] >= 1
    assert slept[0] >= asked[0]  # never sooner than the server said
    assert report.applied == 1 and report.queue_left == 0 and report.pull_complete
    assert store_a.queue_stats()[0] == 0
    assert client_a.identity is not None and client_b.identity is not None
    assert await on_server(state, client_a.identity.terminal_id) == (1, 1)
    assert await on_server(state, client_b.identity.terminal_id) == (1, 1)
    for store, client in ((store_a, client_a), (store_b, client_b)):
        await client.aclose()
        store.close()
