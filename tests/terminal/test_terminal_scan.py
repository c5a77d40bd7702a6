"""The terminal verifies vouchers with no network, from what its store holds (no server here: the
store is filled the way a pull fills it)."""

from __future__ import annotations

import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

from terminal.store import Store

from sync.vouchers import (
    derive_kid,
    issue_online_code,
    new_ref,
    private_key_from_seed,
    public_key_to_b64,
)
from tests.terminal.world import TERMINAL, agent

IDENTITY = {
    "server": "http://127.0.0.1:9",
    "terminalId": "7",
    "clinicId": "3",
    "clinicName": "测试村卫生室",
    "villageCode": "340421001001",
    "regionCode": "340421",
    "facilityLevel": "village",
    "audience": "http://127.0.0.1:9/sync",
}


def pulled(home: Path, keys: dict[str, str], revoked_links: tuple[bytes, ...] = ()) -> None:
    store = Store.open(home, create=True)
    try:
        store.set(identity=IDENTITY)
        changes = [{"entity": "issuer_keys", "id": "voucher", "op": "upsert", "data": {"keys": keys}}]
        changes += [
            {
                "entity": "revocation",
                "id": str(n),
                "op": "upsert",
                "data": {"version": n, "kind": "link", "ref": ref.hex(), "reason": "unlinked"},
            }
            for n, ref in enumerate(revoked_links, start=1)
        ]
        store.apply_page(changes, "checkpoint", False, datetime.now(UTC))
    finally:
        store.close()


def test_scan_verifies_offline_and_refuses_revoked_or_forged(tmp_path: Path) -> None:
    issuer = private_key_from_seed(b"\x01" * 32)
    kid = derive_kid(issuer.public_key())
    person, link = new_ref(), new_ref()

    assert agent(tmp_path, "status").json == {"enrolled": False}
    code = issue_online_code(issuer, kid, person, link, int(time.time()))
    assert agent(tmp_path, "scan", code).status == 2  # not enrolled, nothing synced: cannot vouch

    pulled(tmp_path, {})
    refused = agent(tmp_path, "scan", code)
    assert refused.status == 2 and refused.json["error"]["reason"] == "no_trust"

    pulled(tmp_path, {kid: public_key_to_b64(issuer.public_key())})
    ok = agent(tmp_path, "scan", code)
    assert ok.status == 0 and ok.json["reason"] is None and ok.json["patient"]["viaFamilyLink"] is True
    assert ok.json["patient"]["onRoster"] is False  # nobody of that ref in this (empty) roster

    stranger = private_key_from_seed(b"\x02" * 32)
    forged = issue_online_code(stranger, kid, person, None, int(time.time()))
    bad = agent(tmp_path, "scan", forged)
    assert bad.status == 1 and bad.json["reason"] == "bad_signature" and "伪造" in bad.json["message"]

    pulled(tmp_path, {kid: public_key_to_b64(issuer.public_key())}, revoked_links=(link,))
    fresh = issue_online_code(issuer, kid, person, link, int(time.time()))
    revoked = agent(tmp_path, "scan", fresh)
    assert revoked.status == 1 and revoked.json["reason"] == "revoked" and revoked.json["detail"] == "link"
    status = agent(tmp_path, "status").json
    assert status["synced"]["issuerKeys"] == 1 and status["synced"]["revocationVersion"] == 1


def test_json_flag_is_accepted_after_the_command_too(tmp_path: Path) -> None:
    done = subprocess.run(
        [*TERMINAL, "--home", str(tmp_path), "status", "--json"], capture_output=True, text=True
    )
    assert done.returncode == 0 and done.stdout.strip() == '{"enrolled": false}'
    text = subprocess.run([*TERMINAL, "--home", str(tmp_path), "status"], capture_output=True, text=True)
    assert "尚未登记" in text.stdout
