"""The shared test vectors: issuing gives exactly the pinned strings; verifying gives the pinned reasons."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sync.vouchers import (
    OFFLINE_PREFIX,
    InMemoryReplayGuard,
    RevocationList,
    b45decode,
    b45encode,
    compose_offline_code,
    issue_device_certificate,
    issue_online_code,
    issuer_keys_from_jwks,
    private_key_from_seed,
    public_key_from_b64,
    verify_code,
)
from sync.vouchers.format import CTX_OFFLINE
from sync.vouchers.vectors import VECTORS_PATH, render

VECTORS: dict[str, Any] = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))
KEYS = {label: private_key_from_seed(bytes.fromhex(k["seed"])) for label, k in VECTORS["keys"].items()}
ISSUER_KEYS = {kid: public_key_from_b64(b64) for kid, b64 in VECTORS["issuer_keys"].items()}


def _ref(value: str | None) -> bytes | None:
    return None if value is None else bytes.fromhex(value)


def test_key_table_matches_seeds() -> None:
    for label, entry in VECTORS["keys"].items():
        assert KEYS[label].public_key().public_bytes_raw().hex() == entry["public_key"]


def test_jwks_gives_the_same_issuer_keys() -> None:
    from_jwks = issuer_keys_from_jwks(VECTORS["issuer_jwks"])
    assert {k: v.public_bytes_raw() for k, v in from_jwks.items()} == {
        k: v.public_bytes_raw() for k, v in ISSUER_KEYS.items()
    }


@pytest.mark.parametrize("vector", VECTORS["issued"], ids=lambda v: v["name"])
def test_issuing_reproduces_the_vector(vector: dict[str, Any]) -> None:
    if vector["form"] == "online":
        args = vector["issue_online_code"]
        code = issue_online_code(
            KEYS[args["issuer"]],
            args["kid"],
            bytes.fromhex(args["person_ref"]),
            _ref(args["link_ref"]),
            args["now"],
            lifetime_s=args["lifetime_s"],
            nonce=bytes.fromhex(args["nonce"]),
        )
    else:
        args = vector["issue_device_certificate"]
        cert = issue_device_certificate(
            KEYS[args["issuer"]],
            args["kid"],
            KEYS[args["device"]].public_key(),
            bytes.fromhex(args["person_ref"]),
            _ref(args["link_ref"]),
            args["now"],
            validity_s=args["validity_s"],
            serial=bytes.fromhex(args["serial"]),
        )
        assert cert.hex() == vector["certificate_hex"]
        compose = vector["compose_offline_code"]
        if compose["device"] == args["device"]:
            code = compose_offline_code(cert, KEYS[compose["device"]], compose["now"], compose["counter"])
        else:
            # A forgery: compose_offline_code refuses a key that is not the certified one, so sign by hand.
            body = cert + compose["now"].to_bytes(4, "big") + compose["counter"].to_bytes(2, "big")
            code = OFFLINE_PREFIX + b45encode(body + KEYS[compose["device"]].sign(CTX_OFFLINE + body))
    assert code == vector["code"]
    assert b45decode(code[4:]).hex() == vector["payload_hex"]


@pytest.mark.parametrize("case", VECTORS["verify"], ids=lambda c: c["name"])
def test_verification_gives_the_pinned_reason(case: dict[str, Any]) -> None:
    revocations = RevocationList.from_dict(case.get("revocations", {"version": 0}))
    clock_now = [0]
    guard = InMemoryReplayGuard(clock=lambda: clock_now[0])
    for attempt in case["attempts"]:
        clock_now[0] = attempt["now"]
        result = verify_code(
            case["code"],
            issuer_keys=ISSUER_KEYS,
            revocations=revocations,
            now=attempt["now"],
            skew_s=case["skew_s"],
            replay_guard=guard,
        )
        assert (result.reason.value if result.reason else None) == attempt["reason"]
        if attempt["reason"] == "revoked":
            assert result.detail == case["detail"]


def test_vectors_file_is_what_the_generator_writes() -> None:
    # Fails when the format changed without regenerating (python -m sync.vouchers.vectors --write).
    assert VECTORS_PATH.read_text(encoding="utf-8") == render()


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (b"AB", "BB8"),
        (b"Hello!!", "%69 VD92EX0"),
        (b"base-45", "UJCLQE7W581"),
        (b"ietf!", "QED8WEX0"),
        (b"", ""),
    ],
)
def test_base45_rfc9285_examples(raw: bytes, text: str) -> None:
    assert b45encode(raw) == text
    assert b45decode(text) == raw
