"""The fault test (issue 10 item 4), a bounded number of rounds; see tests/terminal/faults.py.

YIBAO_FAULT_SEED and YIBAO_FAULT_ROUNDS choose another run; the long run is
`.venv/bin/python -m tests.terminal.faults --seed S --rounds N` (bench/README.md has its figures)."""

from __future__ import annotations

import os
from pathlib import Path

from api.settings import Settings
from api.state import AppState
from tests.terminal.faults import run_faults

SEED = int(os.environ.get("YIBAO_FAULT_SEED", "20261201"))
ROUNDS = int(os.environ.get("YIBAO_FAULT_ROUNDS", "4"))


async def test_kills_a_bad_network_wrong_clocks_and_replays_leave_server_and_terminals_in_exact_agreement(
    state: AppState, settings: Settings, tmp_path: Path
) -> None:
    tally = await run_faults(state, settings, tmp_path, seed=SEED, rounds=ROUNDS)
    print(tally.to_dict())
    assert tally.rounds == ROUNDS and tally.receipts > 0
    # Round 0's replayed voucher and passed cap, whatever the faults did to the order of the pushes.
    assert tally.reject_reasons["voucher_replayed"] >= 1 and tally.adjusted >= 1
    assert tally.settlements_checked == tally.applied + tally.adjusted + tally.rejected
