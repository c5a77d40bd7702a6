"""An incremental pull with nothing new reads only its first statement (api.replication.pull._START):
what it then skips must still arrive the moment it exists."""

from __future__ import annotations

import secrets

from api.replication import changelog
from api.state import AppState
from api.terminals.models import Terminal
from api.vouchers import revocations
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
