"""ID numbers: GB 11643 check digits, masking, encryption at rest and keyed look-up."""

from __future__ import annotations

import datetime as dt
import secrets

import pytest
from hypothesis import given
from hypothesis import strategies as st

from api.people import idnumbers
from api.people.idnumbers import IdNumberVault, InvalidIdNumber
from api.secrets import DataKeys

VALID = "11010519491231002X"  # the standard's own example


def test_known_valid_number() -> None:
    assert idnumbers.normalize(VALID.lower()) == VALID
    assert idnumbers.birth_date(VALID) == dt.date(1949, 12, 31)
    assert idnumbers.gender(VALID) == "F"


@pytest.mark.parametrize("bad", ["110105194912310021", "11010519491331002X", "1101051949123100", "abc", ""])
def test_invalid_numbers_are_refused(bad: str) -> None:
    with pytest.raises(InvalidIdNumber):
        idnumbers.normalize(bad)


def test_mask_hides_birth_date_and_sequence() -> None:
    assert idnumbers.mask(VALID) == "1101************2X"


@given(st.dates(dt.date(1900, 1, 1), dt.date(2026, 1, 1)), st.integers(0, 999))
def test_generated_numbers_validate_and_any_single_digit_change_is_caught(birth: dt.date, seq: int) -> None:
    first17 = f"340421{birth:%Y%m%d}{seq:03d}"
    number = first17 + idnumbers.check_digit(first17)
    assert idnumbers.normalize(number) == number
    position = seq % 17
    changed = first17[:position] + str((int(first17[position]) + 1) % 10) + first17[position + 1 :]
    try:
        idnumbers.normalize(changed + number[17])
    except InvalidIdNumber:
        return
    raise AssertionError("a changed digit passed the check")


def test_vault_round_trip_and_lookup_is_keyed() -> None:
    vault = IdNumberVault(DataKeys.from_master(secrets.token_bytes(32)))
    other = IdNumberVault(DataKeys.from_master(secrets.token_bytes(32)))
    cipher = vault.encrypt(VALID)
    assert VALID.encode() not in cipher
    assert vault.decrypt(cipher) == VALID
    assert vault.encrypt(VALID) != cipher  # fresh nonce every time
    assert vault.lookup_hash(VALID) == vault.lookup_hash(VALID.lower())
    assert vault.lookup_hash(VALID) != other.lookup_hash(VALID)
