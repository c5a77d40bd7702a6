"""Round trips, every reason code, revocation, replay, keys as data."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sync.vouchers import (
    MAX_CODE_CHARS,
    OFFLINE_PREFIX,
    ONLINE_PREFIX,
    Base45Error,
    Form,
    InMemoryReplayGuard,
    Reason,
    RevocationList,
    b45decode,
    b45encode,
    compose_offline_code,
    derive_kid,
    derive_ref,
    issue_device_certificate,
    issue_online_code,
    issuer_keys_from_jwks,
    new_ref,
    parse_device_certificate,
    public_key_from_b64,
    public_key_from_jwk,
    public_key_to_b64,
    public_key_to_jwk,
    verify_code,
)

NOW = 1_780_000_000
ISSUER = Ed25519PrivateKey.generate()
KID = derive_kid(ISSUER.public_key())
KEYS = {KID: ISSUER.public_key()}
DEVICE = Ed25519PrivateKey.generate()
PERSON = bytes.fromhex("0011223344556677")
OTHER = bytes.fromhex("8899aabbccddeeff")
LINK = bytes.fromhex("1010101010101010")
EMPTY = RevocationList()


def verify(code: str, now: int = NOW, **kw: Any) -> Reason | None:
    kw.setdefault("revocations", EMPTY)
    return verify_code(code, issuer_keys=KEYS, now=now, **kw).reason


def cert(person: bytes = PERSON, link: bytes | None = None, now: int = NOW - 3600, **kw: Any) -> bytes:
    return issue_device_certificate(ISSUER, KID, DEVICE.public_key(), person, link, now, **kw)


def test_online_round_trip_with_and_without_link() -> None:
    for link in (None, LINK):
        code = issue_online_code(ISSUER, KID, PERSON, link, NOW)
        assert code.startswith(ONLINE_PREFIX)
        r = verify_code(code, issuer_keys=KEYS, revocations=EMPTY, now=NOW + 30)
        assert r.valid and r.form is Form.ONLINE
        assert (r.person_ref, r.link_ref, r.kid) == (PERSON, link, KID)
        assert (r.issued_at, r.expires_at, r.cert_serial, r.counter) == (NOW, NOW + 60, None, None)
        assert r.replay_key is not None and len(r.replay_key) == 16


def test_offline_round_trip_with_and_without_link() -> None:
    for link in (None, LINK):
        c = cert(link=link, serial=b"serial-1")
        code = compose_offline_code(c, DEVICE, NOW, 42)
        assert code.startswith(OFFLINE_PREFIX)
        r = verify_code(code, issuer_keys=KEYS, revocations=EMPTY, now=NOW + 1)
        assert r.valid and r.form is Form.OFFLINE
        assert (r.person_ref, r.link_ref, r.cert_serial, r.counter) == (PERSON, link, b"serial-1", 42)
        assert (r.issued_at, r.expires_at, r.cert_not_after) == (NOW, NOW + 60, NOW - 3600 + 30 * 86400)


def test_datetimes_are_accepted_and_naive_ones_refused() -> None:
    when = datetime.fromtimestamp(NOW, UTC).astimezone(timezone(timedelta(hours=8)))
    code = issue_online_code(ISSUER, KID, PERSON, None, when)
    assert verify(code, now=when + timedelta(seconds=10)) is None  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        issue_online_code(ISSUER, KID, PERSON, None, datetime(2026, 1, 1))


def test_parse_device_certificate() -> None:
    c = parse_device_certificate(cert(link=LINK, serial=b"12345678", validity_s=7 * 86400))
    assert (c.kid, c.person_ref, c.link_ref, c.serial) == (KID, PERSON, LINK, b"12345678")
    assert c.device_public_key == DEVICE.public_key().public_bytes_raw()
    assert c.not_after - c.not_before == 7 * 86400


@pytest.mark.parametrize(
    "kwargs",
    [{"validity_s": 30 * 86400 + 60}, {"validity_s": 0}, {"validity_s": 90}, {"serial": b"short"}],
)
def test_certificate_arguments_are_checked(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        cert(**kwargs)


def test_issue_arguments_are_checked() -> None:
    with pytest.raises(ValueError):
        issue_online_code(ISSUER, KID, b"1234567", None, NOW)  # person ref too short
    with pytest.raises(ValueError):
        issue_online_code(ISSUER, KID, PERSON, b"", NOW)
    with pytest.raises(ValueError):
        issue_online_code(ISSUER, KID, PERSON, None, NOW, lifetime_s=0)
    with pytest.raises(ValueError):
        issue_online_code(ISSUER, "KID1", PERSON, None, NOW)
    with pytest.raises(ValueError):
        issue_online_code(ISSUER, KID, PERSON, None, NOW, nonce=b"1")
    with pytest.raises(ValueError):
        compose_offline_code(cert(), Ed25519PrivateKey.generate(), NOW, 1)  # not the certified key
    with pytest.raises(ValueError):
        compose_offline_code(cert(), DEVICE, NOW, 65536)
    with pytest.raises(ValueError):
        compose_offline_code(b"junk", DEVICE, NOW, 1)


def test_every_reason_code() -> None:
    online = issue_online_code(ISSUER, KID, PERSON, LINK, NOW)
    offline = compose_offline_code(cert(serial=b"SERIAL01"), DEVICE, NOW, 1)
    assert verify("garbage") is Reason.MALFORMED
    rogue = Ed25519PrivateKey.generate()
    assert (
        verify(issue_online_code(rogue, derive_kid(rogue.public_key()), PERSON, None, NOW))
        is Reason.UNKNOWN_KEY
    )
    assert verify(issue_online_code(rogue, KID, PERSON, None, NOW)) is Reason.BAD_SIGNATURE
    assert verify(online, now=NOW + 91) is Reason.EXPIRED
    assert verify(online, now=NOW - 31) is Reason.NOT_YET_VALID
    assert verify(offline, now=NOW + 91) is Reason.EXPIRED
    assert verify(offline, now=NOW - 31) is Reason.NOT_YET_VALID
    old = compose_offline_code(cert(now=NOW - 86400, validity_s=3600), DEVICE, NOW, 1)
    assert verify(old) is Reason.CERTIFICATE_EXPIRED
    early = compose_offline_code(cert(now=NOW + 3600), DEVICE, NOW, 1)
    assert verify(early) is Reason.CERTIFICATE_NOT_YET_VALID
    assert verify(online, revocations=RevocationList.build(1, link_refs=[LINK])) is Reason.REVOKED
    guard = InMemoryReplayGuard(clock=lambda: NOW)
    assert verify(offline, replay_guard=guard) is None
    assert verify(offline, replay_guard=guard) is Reason.REPLAYED
    assert {r.value for r in Reason} == {
        "malformed",
        "unknown_key",
        "bad_signature",
        "not_yet_valid",
        "expired",
        "certificate_not_yet_valid",
        "certificate_expired",
        "revoked",
        "replayed",
    }


@pytest.mark.parametrize("skew", [0, 5, 30, 120])
def test_skew_edges(skew: int) -> None:
    online = issue_online_code(ISSUER, KID, PERSON, None, NOW, lifetime_s=60)
    offline = compose_offline_code(cert(), DEVICE, NOW, 1)
    for code in (online, offline):
        assert verify(code, now=NOW - skew, skew_s=skew) is None
        assert verify(code, now=NOW - skew - 1, skew_s=skew) is Reason.NOT_YET_VALID
        assert verify(code, now=NOW + 60 + skew, skew_s=skew) is None
        assert verify(code, now=NOW + 60 + skew + 1, skew_s=skew) is Reason.EXPIRED
    c = cert(now=NOW, validity_s=3600)
    assert verify(compose_offline_code(c, DEVICE, NOW - skew, 1), now=NOW - skew, skew_s=skew) is None
    edge = compose_offline_code(c, DEVICE, NOW - skew - 1, 1)
    assert verify(edge, now=NOW - skew - 1, skew_s=skew) is Reason.CERTIFICATE_NOT_YET_VALID
    late = NOW + 3600 + skew
    assert verify(compose_offline_code(c, DEVICE, late, 1), now=late, skew_s=skew) is None
    late_code = compose_offline_code(c, DEVICE, late + 1, 1)
    assert verify(late_code, now=late + 1, skew_s=skew) is Reason.CERTIFICATE_EXPIRED
    with pytest.raises(ValueError):
        verify(online, skew_s=-1)


def test_certificate_of_one_person_cannot_vouch_for_another() -> None:
    # The offline code names no person: the certificate's person is the only one it can mean.
    code = compose_offline_code(cert(person=PERSON), DEVICE, NOW, 1)
    r = verify_code(code, issuer_keys=KEYS, revocations=EMPTY, now=NOW)
    assert r.valid and r.person_ref == PERSON
    # Rewriting the person inside the certificate breaks the issuer's signature ...
    payload = bytearray(b45decode(code[4:]))
    start = 2 + 4 + 8 + 32
    assert bytes(payload[start : start + 8]) == PERSON
    payload[start : start + 8] = OTHER
    assert verify(OFFLINE_PREFIX + b45encode(bytes(payload))) is Reason.BAD_SIGNATURE
    # ... and another person's genuine certificate does not carry this device's key.
    other_device = Ed25519PrivateKey.generate()
    other_cert = issue_device_certificate(ISSUER, KID, other_device.public_key(), OTHER, None, NOW - 60)
    with pytest.raises(ValueError):
        compose_offline_code(other_cert, DEVICE, NOW, 1)
    spliced = b45decode(compose_offline_code(other_cert, other_device, NOW, 1)[4:])
    forged_body = spliced[:-64]
    from sync.vouchers.format import CTX_OFFLINE

    forged = OFFLINE_PREFIX + b45encode(forged_body + DEVICE.sign(CTX_OFFLINE + forged_body))
    assert verify(forged) is Reason.BAD_SIGNATURE


def test_replay_of_both_forms() -> None:
    guard = InMemoryReplayGuard(clock=lambda: NOW)
    online = issue_online_code(ISSUER, KID, PERSON, None, NOW)
    offline_1 = compose_offline_code(cert(), DEVICE, NOW, 1)
    offline_2 = compose_offline_code(cert(), DEVICE, NOW, 2)  # next counter: a new code
    for code in (online, offline_1, offline_2):
        assert verify(code, replay_guard=guard) is None
    for code in (online, offline_1, offline_2):
        assert verify(code, now=NOW + 5, replay_guard=guard) is Reason.REPLAYED
    # The same person with a fresh code is fine.
    assert verify(issue_online_code(ISSUER, KID, PERSON, None, NOW), replay_guard=guard) is None


def test_failed_codes_never_reach_the_replay_store() -> None:
    seen: list[bytes] = []

    class Spy:
        def check_and_remember(self, key: bytes, expires_at: int) -> bool:
            seen.append(key)
            return True

    online = issue_online_code(ISSUER, KID, PERSON, LINK, NOW)
    rogue = Ed25519PrivateKey.generate()
    cases: list[tuple[str, dict[str, Any]]] = [
        ("YBS:garbage", {}),
        (issue_online_code(rogue, KID, PERSON, None, NOW), {}),
        (issue_online_code(rogue, derive_kid(rogue.public_key()), PERSON, None, NOW), {}),
        (online, {"now": NOW + 500}),
        (online, {"revocations": RevocationList.build(1, link_refs=[LINK])}),
    ]
    for code, kw in cases:
        assert verify(code, replay_guard=Spy(), **kw) is not None
    assert seen == []
    assert verify(online, replay_guard=Spy()) is None
    assert len(seen) == 1


@pytest.mark.parametrize("which", ["certificate", "link", "person"])
def test_revocations(which: str) -> None:
    serial = b"REVOKED1"
    code = compose_offline_code(cert(link=LINK, serial=serial), DEVICE, NOW, 1)
    revs = RevocationList.build(
        5,
        cert_serials=[serial] if which == "certificate" else [],
        link_refs=[LINK] if which == "link" else [],
        person_refs=[PERSON] if which == "person" else [],
    )
    r = verify_code(code, issuer_keys=KEYS, revocations=RevocationList.from_dict(revs.to_dict()), now=NOW)
    assert (r.reason, r.detail, r.person_ref) == (Reason.REVOKED, which, PERSON)
    assert verify(code, revocations=RevocationList.build(6, person_refs=[OTHER], link_refs=[OTHER])) is None


def test_revocation_list_as_data() -> None:
    revs = RevocationList.build(9, cert_serials=[b"\x01" * 8], link_refs=[LINK], person_refs=[PERSON, OTHER])
    data = revs.to_dict()
    assert data == {
        "version": 9,
        "cert_serials": ["0101010101010101"],
        "link_refs": [LINK.hex()],
        "person_refs": sorted([PERSON.hex(), OTHER.hex()]),
    }
    assert RevocationList.from_dict(data) == revs
    assert RevocationList.from_dict({"version": 0}) == RevocationList()
    for bad in (
        {},
        {"version": -1},
        {"version": True},
        {"version": 1, "link_refs": ["zz"]},
        {"version": 1, "link_refs": ["0011"]},
        {"version": 1, "link_refs": "0011223344556677"},
    ):
        with pytest.raises(ValueError):
            RevocationList.from_dict(bad)


def test_unknown_and_unusable_issuer_keys() -> None:
    code = issue_online_code(ISSUER, KID, PERSON, None, NOW)
    raw = ISSUER.public_key().public_bytes_raw()
    assert verify_code(code, issuer_keys={KID: raw}, revocations=EMPTY, now=NOW).valid
    assert verify_code(code, issuer_keys={}, revocations=EMPTY, now=NOW).reason is Reason.UNKNOWN_KEY
    assert (
        verify_code(code, issuer_keys={KID: b"short"}, revocations=EMPTY, now=NOW).reason
        is Reason.UNKNOWN_KEY
    )
    # Rotation: the old key stays in the synced set until its codes and certificates have expired.
    new = Ed25519PrivateKey.generate()
    new_kid = derive_kid(new.public_key())
    both = {KID: ISSUER.public_key(), new_kid: new.public_key()}
    new_code = issue_online_code(new, new_kid, PERSON, None, NOW)
    for c in (code, new_code):
        assert verify_code(c, issuer_keys=both, revocations=EMPTY, now=NOW).valid


def test_keys_as_data() -> None:
    pub = ISSUER.public_key()
    jwk = public_key_to_jwk(pub)
    assert jwk["kty"] == "OKP" and jwk["crv"] == "Ed25519" and jwk["kid"] == KID
    kid, key = public_key_from_jwk(jwk)
    assert kid == KID and key.public_bytes_raw() == pub.public_bytes_raw()
    assert public_key_from_b64(public_key_to_b64(pub)).public_bytes_raw() == pub.public_bytes_raw()
    import base64

    padded = base64.b64encode(pub.public_bytes_raw()).decode()
    assert public_key_from_b64(padded).public_bytes_raw() == pub.public_bytes_raw()
    jwks = {"keys": [jwk, {"kty": "RSA", "n": "x", "e": "AQAB"}, {**jwk, "kid": "not-hex"}]}
    assert list(issuer_keys_from_jwks(jwks)) == [KID]
    for bad in ({**jwk, "crv": "X25519"}, {**jwk, "x": "AAAA"}, {**jwk, "alg": "ES256"}):
        with pytest.raises(ValueError):
            public_key_from_jwk(bad)


def test_refs() -> None:
    assert len(new_ref()) == 8 and new_ref() != new_ref()
    a = derive_ref(b"secret", "person", "42")
    assert len(a) == 8 and a == derive_ref(b"secret", "person", "42")
    assert a != derive_ref(b"secret", "link", "42") and a != derive_ref(b"other", "person", "42")


def test_replay_guard_evicts_expired_entries_and_is_bounded() -> None:
    now = [1000.0]
    guard = InMemoryReplayGuard(max_entries=3, clock=lambda: now[0])
    assert guard.check_and_remember(b"a", 1010)
    assert guard.check_and_remember(b"b", 1020)
    assert guard.check_and_remember(b"c", 1030)
    assert not guard.check_and_remember(b"a", 1010)
    assert not guard.check_and_remember(b"d", 1040)  # full of live entries: fails closed
    now[0] = 1015
    assert guard.check_and_remember(b"d", 1040)  # "a" expired and was evicted
    assert len(guard) == 3
    now[0] = 1031
    assert len(guard) == 3  # eviction is lazy ...
    assert guard.check_and_remember(b"a", 1050)
    assert len(guard) == 2  # ... and happens on the next call
    with pytest.raises(ValueError):
        InMemoryReplayGuard(max_entries=0)


@pytest.mark.parametrize(
    "code",
    [
        "",
        "YBS:",
        "YBD:",
        "YBS",
        "ybs:0000",
        OFFLINE_PREFIX + "0" * (MAX_CODE_CHARS - 4 + 1),
        ONLINE_PREFIX + "A" * 10_000,
        "YBS:" + "\u00e9" * 9,
        "\x00" * 20,
    ],
)
def test_garbage_is_malformed(code: str) -> None:
    assert verify(code) is Reason.MALFORMED


def test_non_string_code_is_malformed() -> None:
    assert verify(b"YBS:...") is Reason.MALFORMED  # type: ignore[arg-type]
    assert verify(None) is Reason.MALFORMED  # type: ignore[arg-type]


def test_truncations_of_valid_codes_are_malformed() -> None:
    for code in (
        issue_online_code(ISSUER, KID, PERSON, LINK, NOW),
        compose_offline_code(cert(link=LINK), DEVICE, NOW, 7),
    ):
        for n in range(len(code)):
            assert verify(code[:n]) is Reason.MALFORMED


def test_base45_rejects_invalid_text() -> None:
    for bad in ("A", "GGW", "::", "abc", "A B C"):
        with pytest.raises(Base45Error):
            b45decode(bad)


def test_result_as_json() -> None:
    r = verify_code(
        compose_offline_code(cert(link=LINK, serial=b"\xab" * 8), DEVICE, NOW, 3),
        issuer_keys=KEYS,
        revocations=EMPTY,
        now=NOW,
    )
    d = r.to_dict()
    assert d["valid"] is True and d["reason"] is None and d["form"] == "offline"
    assert d["person_ref"] == PERSON.hex() and d["link_ref"] == LINK.hex() and d["cert_serial"] == "ab" * 8
    import json

    json.dumps(d)
    assert verify_code("x", issuer_keys=KEYS, revocations=EMPTY, now=NOW).to_dict()["reason"] == "malformed"
