"""The terminal verifies vouchers with no network, from what its home holds."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from terminal.home import Home

from sync.vouchers import (
    RevocationList,
    derive_kid,
    issue_online_code,
    new_ref,
    private_key_from_seed,
    public_key_to_jwk,
)

TERMINAL = str(Path(sys.executable).with_name("yibao-terminal"))


def _run(home: Path, *args: str) -> tuple[int, dict[str, object]]:
    done = subprocess.run([TERMINAL, "--home", str(home), "--json", *args], capture_output=True, text=True)
    return done.returncode, json.loads(done.stdout)


def test_scan_verifies_offline_and_refuses_revoked_or_foreign(tmp_path: Path) -> None:
    issuer = private_key_from_seed(b"\x01" * 32)
    kid = derive_kid(issuer.public_key())
    person, link = new_ref(), new_ref()
    home = Home(tmp_path)

    assert _run(tmp_path, "status") == (0, {"trusted_keys": 0, "revocation_version": None})
    code = issue_online_code(issuer, kid, person, link, int(time.time()))
    assert _run(tmp_path, "scan", code)[0] == 2  # nothing synced: cannot vouch for anything

    home.save_trust({"keys": [public_key_to_jwk(issuer.public_key(), kid)]}, RevocationList.build(1))
    status, result = _run(tmp_path, "scan", code)
    assert status == 0 and result["reason"] is None

    stranger = private_key_from_seed(b"\x02" * 32)
    forged = issue_online_code(stranger, kid, person, None, int(time.time()))
    status, result = _run(tmp_path, "scan", forged)
    assert status == 1 and result["reason"] == "bad_signature"

    home.save_trust(
        {"keys": [public_key_to_jwk(issuer.public_key(), kid)]}, RevocationList.build(2, link_refs=[link])
    )
    status, result = _run(tmp_path, "scan", code)
    assert status == 1 and result["reason"] == "revoked"
    assert _run(tmp_path, "status") == (0, {"trusted_keys": 1, "revocation_version": 2})


def test_json_flag_is_accepted_after_the_command_too(tmp_path: Path) -> None:
    done = subprocess.run(
        [TERMINAL, "--home", str(tmp_path), "status", "--json"], capture_output=True, text=True
    )
    assert done.returncode == 0 and json.loads(done.stdout)["trusted_keys"] == 0
