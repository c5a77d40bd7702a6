"""Builds test_vectors.json: fixed keys, times and nonces → exact codes, plus verification cases.

Every implementation of the format (this one, the mini-program's JS) is tested against the JSON file,
which is the reference; this module only (re)writes it: `python -m sync.vouchers.vectors --write`.
Regenerating must not change the file unless the format changed on purpose (then bump the version).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .base45 import b45decode, b45encode
from .format import CTX_OFFLINE, CTX_ONLINE, MAX_CODE_CHARS, OFFLINE_PREFIX, ONLINE_PREFIX, SIGNATURE_BYTES
from .issue import compose_offline_code, issue_device_certificate, issue_online_code
from .keys import derive_kid, private_key_from_seed, public_key_to_b64, public_key_to_jwk
from .revocation import RevocationList

VECTORS_PATH = Path(__file__).with_name("test_vectors.json")

T0 = 1767225600  # 2026-01-01T00:00:00Z: certificates start here
T1 = T0 + 7200  # codes are made and scanned two hours later
SKEW = 30
DAY = 86400

PERSON_A = bytes.fromhex("a1a2a3a4a5a6a7a8")
PERSON_B = bytes.fromhex("b1b2b3b4b5b6b7b8")
LINK = bytes.fromhex("c1c2c3c4c5c6c7c8")
SERIAL_A = bytes.fromhex("5e1a100000000001")
SERIAL_B = bytes.fromhex("5e1a100000000002")
NONCE_1 = bytes.fromhex("0102030405060708")
NONCE_2 = bytes.fromhex("1112131415161718")


def _seed(label: str) -> bytes:
    return hashlib.sha256(b"yibao test vector key: " + label.encode()).digest()


KEY_LABELS = ("issuer", "rogue", "device_a", "device_b")


def _keys() -> dict[str, Ed25519PrivateKey]:
    return {label: private_key_from_seed(_seed(label)) for label in KEY_LABELS}


def _payload(code: str) -> bytes:
    return b45decode(code[4:])


def _replace(code: str, payload: bytes) -> str:
    return code[:4] + b45encode(payload)


def _flip(data: bytes, index: int) -> bytes:
    out = bytearray(data)
    out[index] ^= 0x01
    return bytes(out)


def build_vectors() -> dict[str, Any]:
    keys = _keys()
    issuer, rogue = keys["issuer"], keys["rogue"]
    kid = derive_kid(issuer.public_key())
    rogue_kid = derive_kid(rogue.public_key())
    key_table = {
        label: {
            "seed": _seed(label).hex(),
            "public_key": k.public_key().public_bytes_raw().hex(),
            "kid": derive_kid(k.public_key()),
        }
        for label, k in keys.items()
    }

    issued: list[dict[str, Any]] = []

    def online(name: str, person: bytes, link: bytes | None, nonce: bytes, lifetime: int = 60) -> str:
        code = issue_online_code(issuer, kid, person, link, T1, lifetime_s=lifetime, nonce=nonce)
        issued.append(
            {
                "name": name,
                "form": "online",
                "issue_online_code": {
                    "issuer": "issuer",
                    "kid": kid,
                    "person_ref": person.hex(),
                    "link_ref": link.hex() if link else None,
                    "now": T1,
                    "lifetime_s": lifetime,
                    "nonce": nonce.hex(),
                },
                "payload_hex": _payload(code).hex(),
                "code": code,
            }
        )
        return code

    def cert(
        person: bytes, link: bytes | None, device: str, serial: bytes, nb: int, validity: int, key: str
    ) -> tuple[bytes, dict[str, Any]]:
        signer = keys[key]
        spec = {
            "issuer": key,
            "kid": kid,
            "device": device,
            "person_ref": person.hex(),
            "link_ref": link.hex() if link else None,
            "now": nb,
            "validity_s": validity,
            "serial": serial.hex(),
        }
        raw = issue_device_certificate(
            signer, kid, keys[device].public_key(), person, link, nb, validity_s=validity, serial=serial
        )
        return raw, spec

    def offline(
        name: str,
        person: bytes,
        link: bytes | None,
        *,
        time: int = T1,
        counter: int = 1,
        device: str = "device_a",
        signer: str | None = None,
        serial: bytes = SERIAL_A,
        nb: int = T0,
        validity: int = 30 * DAY,
        cert_key: str = "issuer",
    ) -> str:
        raw, spec = cert(person, link, device, serial, nb, validity, cert_key)
        signer = signer or device
        code = compose_offline_code(raw, keys[device], time, counter)
        if signer != device:
            # A device signing with a certificate that is not its own: compose_offline_code refuses,
            # so sign by hand (as an attacker would).
            body = _payload(code)[:-SIGNATURE_BYTES]
            code = _replace(code, body + keys[signer].sign(CTX_OFFLINE + body))
        issued.append(
            {
                "name": name,
                "form": "offline",
                "issue_device_certificate": spec,
                "certificate_hex": raw.hex(),
                "compose_offline_code": {"device": signer, "now": time, "counter": counter},
                "payload_hex": _payload(code).hex(),
                "code": code,
            }
        )
        return code

    # Well-formed codes, valid or not, all made by the functions under test.
    on_own = online("online, own code", PERSON_A, None, NONCE_1)
    on_link = online("online, relative's code through a family link", PERSON_B, LINK, NONCE_2)
    off_own = offline("offline, own code", PERSON_A, None)
    off_link = offline(
        "offline, relative's code through a family link", PERSON_B, LINK, device="device_b", serial=SERIAL_B
    )
    off_old_cert = offline(
        "offline, certificate of 1 day that ran out", PERSON_A, None, nb=T0 - 2 * DAY, validity=DAY
    )
    off_future_cert = offline("offline, certificate starting tomorrow", PERSON_A, None, nb=T1 + DAY)
    off_wrong_device = offline(
        "offline, signed by a device that is not the certificate's", PERSON_A, None, signer="device_b"
    )
    off_rogue_cert = offline("offline, certificate signed by a rogue key", PERSON_A, None, cert_key="rogue")

    # Forgeries and damage made from the codes above.
    rogue_code = issue_online_code(rogue, rogue_kid, PERSON_A, None, T1, nonce=NONCE_1)
    on_payload = _payload(on_own)
    off_payload = _payload(off_own)
    flagged = bytearray(on_payload[:-SIGNATURE_BYTES])
    flagged[1] |= 0x80
    flagged_code = _replace(on_own, bytes(flagged) + issuer.sign(CTX_ONLINE + bytes(flagged)))
    # Person B's ref spliced into person A's certificate inside an otherwise genuine offline code.
    cert_start = 2 + 4 + 8 + 32
    spliced = off_payload[:cert_start] + PERSON_B + off_payload[cert_start + 8 :]

    cases: list[dict[str, Any]] = []

    def case(name: str, code: str, *attempts: tuple[int, str | None], **extra: Any) -> None:
        entry: dict[str, Any] = {"name": name, "code": code, "skew_s": SKEW}
        entry.update(extra)
        entry["attempts"] = [{"now": now, "reason": reason} for now, reason in attempts]
        cases.append(entry)

    revoked = RevocationList.build(7, cert_serials=[SERIAL_A], link_refs=[LINK], person_refs=[PERSON_A])

    case("online valid", on_own, (T1 + 10, None))
    case("online through a link valid", on_link, (T1, None))
    case("offline valid", off_own, (T1 + 5, None))
    case("offline through a link valid", off_link, (T1 + 5, None))
    case("online, last second of expiry + skew", on_own, (T1 + 60 + SKEW, None))
    case("online, one second past expiry + skew", on_own, (T1 + 60 + SKEW + 1, "expired"))
    case("online, earliest second of issue - skew", on_own, (T1 - SKEW, None))
    case("online, one second before issue - skew", on_own, (T1 - SKEW - 1, "not_yet_valid"))
    case("online, zero skew", on_own, (T1 + 61, "expired"), skew_s=0)
    case("offline, last second of code time + 60 + skew", off_own, (T1 + 60 + SKEW, None))
    case("offline, code too old", off_own, (T1 + 60 + SKEW + 1, "expired"))
    case("offline, code time in the future", off_own, (T1 - SKEW - 1, "not_yet_valid"))
    case("offline, certificate ran out", off_old_cert, (T1, "certificate_expired"))
    case("offline, certificate not yet valid", off_future_cert, (T1, "certificate_not_yet_valid"))
    case("online replayed", on_own, (T1, None), (T1 + 1, "replayed"))
    case("offline replayed", off_own, (T1, None), (T1 + 20, "replayed"))
    case(
        "offline, certificate revoked",
        off_own,
        (T1, "revoked"),
        revocations=RevocationList.build(3, cert_serials=[SERIAL_A]).to_dict(),
        detail="certificate",
    )
    case(
        "online, family link revoked",
        on_link,
        (T1, "revoked"),
        revocations=RevocationList.build(3, link_refs=[LINK]).to_dict(),
        detail="link",
    )
    case(
        "offline, family link revoked",
        off_link,
        (T1, "revoked"),
        revocations=RevocationList.build(3, link_refs=[LINK]).to_dict(),
        detail="link",
    )
    case(
        "online, person's enrolment ended",
        on_own,
        (T1, "revoked"),
        revocations=RevocationList.build(3, person_refs=[PERSON_A]).to_dict(),
        detail="person",
    )
    case(
        "offline, person's enrolment ended",
        off_own,
        (T1, "revoked"),
        revocations=RevocationList.build(3, person_refs=[PERSON_A]).to_dict(),
        detail="person",
    )
    case(
        "offline, unrelated revocations",
        off_link,
        (T1, None),
        revocations=revoked.to_dict() | {"link_refs": []},
    )
    case("unknown kid", rogue_code, (T1, "unknown_key"))
    case(
        "online, signature bit flipped",
        _replace(on_own, _flip(on_payload, len(on_payload) - 1)),
        (T1, "bad_signature"),
    )
    case("online, person ref changed", _replace(on_own, _flip(on_payload, 7)), (T1, "bad_signature"))
    case("online, issue time changed", _replace(on_own, _flip(on_payload, 17)), (T1, "bad_signature"))
    case(
        "offline, another person spliced into the certificate",
        _replace(off_own, spliced),
        (T1, "bad_signature"),
    )
    case("offline, counter changed", _replace(off_own, _flip(off_payload, 129)), (T1, "bad_signature"))
    case(
        "offline, device signature bit flipped",
        _replace(off_own, _flip(off_payload, len(off_payload) - 1)),
        (T1, "bad_signature"),
    )
    case("offline, signed by another device", off_wrong_device, (T1, "bad_signature"))
    case(
        "offline, certificate signed by a rogue key under the issuer's kid",
        off_rogue_cert,
        (T1, "bad_signature"),
    )
    case("empty", "", (T1, "malformed"))
    case("foreign QR code", "HTTPS://EXAMPLE.COM/PAY?ID=1", (T1, "malformed"))
    case("prefix only", ONLINE_PREFIX, (T1, "malformed"))
    case("online truncated by one character", on_own[:-1], (T1, "malformed"))
    case("online truncated by three characters", on_own[:-3], (T1, "malformed"))
    case("offline truncated by one byte", _replace(off_own, off_payload[:-1]), (T1, "malformed"))
    case("online with a byte appended", _replace(on_own, on_payload + b"\x00"), (T1, "malformed"))
    case("lower-case text", on_own[:4] + on_own[4:].lower(), (T1, "malformed"))
    case("Base45 triple out of range", ONLINE_PREFIX + ":::" * 46, (T1, "malformed"))
    case("oversized", OFFLINE_PREFIX + "0" * (MAX_CODE_CHARS + 1 - 4), (T1, "malformed"))
    case("online payload under the offline prefix", OFFLINE_PREFIX + on_own[4:], (T1, "malformed"))
    case("offline payload under the online prefix", ONLINE_PREFIX + off_own[4:], (T1, "malformed"))
    case("reserved flag bit set, properly signed", flagged_code, (T1, "malformed"))

    return {
        "format": "yibao e-voucher v1",
        "spec": "sync/vouchers/SPEC.md",
        "notes": [
            "Keys are RFC 8032 Ed25519 keys from the 32-byte seeds below.",
            "issuer_keys is what every verification case gets; revocations is empty unless given.",
            "Each case verifies its code once per attempt, with one fresh replay store per case.",
            "Reasons are null for a valid code; 'detail' applies to the 'revoked' attempt.",
        ],
        "keys": key_table,
        "issuer_keys": {kid: public_key_to_b64(issuer.public_key())},
        "issuer_jwks": {"keys": [public_key_to_jwk(issuer.public_key())]},
        "issued": issued,
        "verify": cases,
    }


def render() -> str:
    return json.dumps(build_vectors(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--write" in argv:
        VECTORS_PATH.write_text(text, encoding="utf-8")
    elif "--check" in argv:
        return 0 if VECTORS_PATH.read_text(encoding="utf-8") == text else 1
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
