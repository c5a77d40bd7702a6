"""Property tests: nothing a scanner can read makes the verifier raise or accept a changed code."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sync.vouchers import (
    Form,
    Reason,
    RevocationList,
    b45decode,
    b45encode,
    compose_offline_code,
    issue_device_certificate,
    issue_online_code,
    private_key_from_seed,
    verify_code,
)
from sync.vouchers.base45 import ALPHABET

NOW = 1_780_000_000
ISSUER = private_key_from_seed(b"\x11" * 32)
KID = "0badcafe"
KEYS = {KID: ISSUER.public_key()}
DEVICE = private_key_from_seed(b"\x22" * 32)
PERSON = b"\x01" * 8
LINK = b"\x02" * 8
CERT = issue_device_certificate(ISSUER, KID, DEVICE.public_key(), PERSON, LINK, NOW - 60, serial=b"\x03" * 8)
CODES = {
    Form.ONLINE: issue_online_code(ISSUER, KID, PERSON, LINK, NOW, nonce=b"\x04" * 8),
    Form.OFFLINE: compose_offline_code(CERT, DEVICE, NOW, 9),
}
EMPTY = RevocationList()
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check(code: str) -> Reason | None:
    return verify_code(code, issuer_keys=KEYS, revocations=EMPTY, now=NOW).reason


@FUZZ
@given(st.text(max_size=600))
def test_arbitrary_text_never_raises_or_verifies(text: str) -> None:
    assert check(text) is not None


@FUZZ
@given(st.sampled_from([*CODES.values()]), st.text(alphabet=ALPHABET, max_size=400))
def test_alphanumeric_text_after_a_valid_prefix_never_verifies(code: str, tail: str) -> None:
    assert check(code[:4] + tail) is not None


@FUZZ
@given(
    st.sampled_from([*CODES.values()]),
    st.lists(st.tuples(st.integers(0, 300), st.integers(0, 255)), min_size=1, max_size=4),
    st.integers(-3, 3),
)
def test_byte_mutations_never_verify_unless_unchanged(
    code: str, edits: list[tuple[int, int]], resize: int
) -> None:
    payload = bytearray(b45decode(code[4:]))
    for pos, value in edits:
        payload[pos % len(payload)] = value
    if resize > 0:
        payload += bytes(resize)
    elif resize < 0:
        del payload[resize:]
    mutated = code[:4] + b45encode(bytes(payload))
    reason = check(mutated)
    if mutated == code:
        assert reason is None
    else:
        assert reason is not None


@FUZZ
@given(st.sampled_from([*CODES.values()]), st.integers(0, 400), st.sampled_from([*ALPHABET, "a", "\n"]))
def test_text_mutations_never_verify_unless_unchanged(code: str, pos: int, char: str) -> None:
    pos %= len(code)
    mutated = code[:pos] + char + code[pos + 1 :]
    assert (check(mutated) is None) == (mutated == code)


@settings(max_examples=50, deadline=None)
@given(
    st.binary(min_size=8, max_size=8),
    st.one_of(st.none(), st.binary(min_size=8, max_size=8)),
    st.integers(0, 2**32 - 601),
    st.integers(1, 600),
    st.integers(0, 0xFFFF),
)
def test_round_trip_for_any_fields(
    person: bytes, link: bytes | None, t: int, lifetime: int, counter: int
) -> None:
    code = issue_online_code(ISSUER, KID, person, link, t, lifetime_s=lifetime)
    r = verify_code(code, issuer_keys=KEYS, revocations=EMPTY, now=t + lifetime)
    assert r.valid and (r.person_ref, r.link_ref, r.expires_at) == (person, link, t + lifetime)
    device = Ed25519PrivateKey.generate()
    cert = issue_device_certificate(ISSUER, KID, device.public_key(), person, link, t, validity_s=600)
    r = verify_code(
        compose_offline_code(cert, device, t, counter), issuer_keys=KEYS, revocations=EMPTY, now=t
    )
    assert r.valid and (r.person_ref, r.link_ref, r.counter) == (person, link, counter)


@FUZZ
@given(st.binary(max_size=300))
def test_base45_round_trip(data: bytes) -> None:
    assert b45decode(b45encode(data)) == data
