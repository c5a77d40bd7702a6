"""An incremental pull with nothing new reads only its first statement (api.replication.pull._START):
what it then skips must still arrive the moment it exists."""

from __future__ import annotations

import secrets
from typing import Any

from api.replication import changelog
from api.state import AppState
from api.terminals.models import Terminal
from api.vouchers import revocations
from tests.api import terminalworld as world
from tests.api.test_pull import _pull, _pull_all, village  # noqa: F401  (village: the fixture)


async def test_a_revocation_appended_after_an_empty_pull_is_sent_by_the_next(
    state: AppState,
    village: tuple[Terminal, list[int]],  # noqa: F811
) -> None:
    terminal, _ = village
    _, checkpoint, _ = await _pull_all(state, terminal, None, 1000)
    empty = await _pull(state, terminal, checkpoint, 100)
    assert empty["changes"] == [] and not empty["hasMore"]
    ref = secrets.token_hex(8)
    async with state.db.sessionmaker() as session:
        await revocations.append(session, [("subject", ref, "test")])
        await session.commit()
    answer = await _pull(state, terminal, empty["checkpoint"], 100)
    sent = [d for d in answer["changes"] if d["entity"] == "revocation"]
    assert [d["data"]["ref"] for d in sent] == [ref]
    again = await _pull(state, terminal, answer["checkpoint"], 100)
    assert again["changes"] == [] and not again["hasMore"]


async def test_an_empty_pull_moves_past_other_villages_entries(
    state: AppState,
    village: tuple[Terminal, list[int]],  # noqa: F811
) -> None:
    terminal, residents = village
    _, checkpoint, _ = await _pull_all(state, terminal, None, 1000)
    async with state.db.sessionmaker() as session:
        await changelog.record(session, changelog.person_changed(residents[0], "340421999999"))
        await session.commit()
    answer = await _pull(state, terminal, checkpoint, 100)
    assert answer["changes"] == [] and not answer["hasMore"]
    async with state.db.sessionmaker() as session:
        mark = await changelog.watermark(session)
    assert (
        state.cursors.decode(f"sync-pull:{terminal.id}", answer["checkpoint"], field="checkpoint")[1] == mark
    )


async def test_a_pull_refused_for_its_body_still_spends_its_assertion(client: Any, state: AppState) -> None:
    # The jti commits with the pull's transaction (http.py), so a refusal must commit it too.
    enrolled = await world.enrol(client, state)
    token = enrolled.assertion()
    for body in ({"checkpoint": "not-a-checkpoint", "limit": 10}, {"limit": "many"}):
        refused = await client.post("/sync/pull", json=body, headers=enrolled.headers(token))
        assert refused.status_code in (400, 422), refused.text
        again = await client.post(
            "/sync/pull", json={"checkpoint": None, "limit": 1}, headers=enrolled.headers(token)
        )
        assert again.status_code == 401 and world.reason(again) == "replayed", again.text
        token = enrolled.assertion()
    answered = await world.pull(client, token)
    assert answered.status_code == 200
    assert world.reason(await world.pull(client, token)) == "replayed"


async def test_a_pull_that_fails_still_spends_its_assertion(
    app: Any, state: AppState, monkeypatch: Any
) -> None:
    # A failure rolls the pull's transaction back, the jti with it: it is spent again on its own.
    import httpx

    from api.replication import pull as pulling
    from api.terminals import service as terminals_service

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug in the pull")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://yibao.test") as client:
        enrolled = await world.enrol(client, state)
        token = enrolled.assertion()
        monkeypatch.setattr(pulling, "pull", broken)
        # (No purge of old jtis in this request: its commit would save the jti by the way.)
        monkeypatch.setattr(terminals_service, "_next_purge", float("inf"))
        failed = await world.pull(client, token)
        assert failed.status_code == 500, failed.text
        monkeypatch.undo()
        again = await world.pull(client, token)
        assert again.status_code == 401 and world.reason(again) == "replayed", again.text
