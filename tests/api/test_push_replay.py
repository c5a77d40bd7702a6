"""A code accepted anywhere stays used for as long as a terminal may still push a visit with it
(review of issue 9: a code a pharmacy verified online was settled again at a terminal once the shared
replay store had purged it)."""

from __future__ import annotations

import datetime as dt

from api.state import AppState
from api.vouchers import service as voucher_service
from tests.api.test_push import (
    clinic,
    create,
    items,
    local_day,
    mutation,
    new_village,
    now,
    online_code,
    run,
    settlements_of,
    terminal,
    villager,
)


async def test_a_code_used_at_a_pharmacy_cannot_be_settled_again_at_a_terminal(state: AppState) -> None:
    village = new_village()
    term = await terminal(state, await clinic(state, village))
    who, other = await villager(state, village), await villager(state, village)
    shown = now() - dt.timedelta(minutes=10)
    code = online_code(state, who, shown)
    async with state.db.sessionmaker() as session:  # the pharmacy's online verification
        used = await voucher_service.verify(session, state.settings, state.voucher_keys, code, now=shown)
        assert used.result.valid
    # Any later verification purges what has expired from the shared replay store.
    later = shown + dt.timedelta(minutes=5)
    async with state.db.sessionmaker() as session:
        fresh = online_code(state, other, later)
        assert (
            await voucher_service.verify(session, state.settings, state.voucher_keys, fresh, now=later)
        ).result.valid
    answer = await run(
        state,
        term,
        [mutation(1, create(items(3_000), local_day(shown), voucher=code), shown + dt.timedelta(seconds=5))],
    )
    [result] = answer["results"]
    assert (result["status"], result["reason"]) == ("rejected", "voucher_replayed")
    assert await settlements_of(state, who.id) == []
