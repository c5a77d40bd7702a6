"""The codes fit a QR version <= 10 at level M and come back unchanged through a real decoder."""

from __future__ import annotations

import pytest
import qrcode
import zxingcpp
from qrcode.constants import ERROR_CORRECT_M

from sync.vouchers import (
    compose_offline_code,
    issue_device_certificate,
    issue_online_code,
    new_ref,
    private_key_from_seed,
)

NOW = 1_780_000_000
ISSUER = private_key_from_seed(b"\x33" * 32)
DEVICE = private_key_from_seed(b"\x44" * 32)
KID = "01020304"


def _codes(link: bool) -> dict[str, str]:
    link_ref = new_ref() if link else None
    cert = issue_device_certificate(ISSUER, KID, DEVICE.public_key(), new_ref(), link_ref, NOW)
    return {
        "online": issue_online_code(ISSUER, KID, new_ref(), link_ref, NOW),
        "offline": compose_offline_code(cert, DEVICE, NOW, 65535),
    }


@pytest.mark.parametrize("link", [False, True], ids=["own", "through_link"])
@pytest.mark.parametrize("form", ["online", "offline"])
def test_qr_round_trip_and_version(form: str, link: bool) -> None:
    code = _codes(link)[form]
    qr = qrcode.QRCode(error_correction=ERROR_CORRECT_M, box_size=4, border=4)
    qr.add_data(code)
    qr.make(fit=True)
    assert qr.version <= 10
    # Pure alphanumeric text: every character is in the QR alphanumeric set, so the densest mode applies.
    assert all(c in "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:" for c in code)
    img = qr.make_image(fill_color="black", back_color="white").get_image().convert("L")
    # Read as a clinic scanner set to QR does: with every format enabled, zxing now and then also
    # "finds" a short 1D barcode inside the QR modules (2 in 300 runs here).
    found = zxingcpp.read_barcodes(img, formats=zxingcpp.BarcodeFormat.QRCode)
    assert [r.text for r in found] == [code]
    assert found[0].format == zxingcpp.BarcodeFormat.QRCode
