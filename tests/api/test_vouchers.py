"""E-vouchers through real GraphQL requests: issue, render, verify online, offline codes, revocation."""

from __future__ import annotations

import base64
import datetime as dt
import io
import re
from typing import Any

import httpx
import pytest
import zxingcpp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from PIL import Image
from sqlalchemy import update as sa_update
from sqlmodel import col

from api.auth.models import Role
from api.family.models import FamilyLink, LinkMethod, Permission
from api.state import AppState
from api.vouchers import revocations
from api.vouchers import service as vouchers
from sync.vouchers import (
    RevocationList,
    compose_offline_code,
    public_key_to_b64,
    verify_code,
)
from sync.vouchers.format import CTX_OFFLINE, OFFLINE_PREFIX, parse_device_certificate, to_text
from tests.api import familyworld as world
from tests.conftest import GraphQLClient, error_codes

ISSUE = (
    "mutation($linkId: ID) { issueVoucher(linkId: $linkId) { code qrSvg qrPngBase64 expiresAt kid linkId } }"
)
ISSUE_CODE = "mutation($linkId: ID) { issueVoucher(linkId: $linkId) { code expiresAt } }"
CERTIFY = """mutation($key: String!, $linkId: ID) { certifyDevice(publicKey: $key, linkId: $linkId) {
  certificate serial kid linkId notBefore notAfter } }"""
VERIFY = """mutation($code: String!) { verifyVoucher(code: $code) { valid reason detail form expiresAt
  certificateSerial relationship relationshipLabel
  person { maskedName idNumberMasked insuranceType insuranceTypeLabel } } }"""
LOST = """mutation($serial: String, $key: String) { reportDeviceLost(certificateSerial: $serial, deviceKey: $key) {
  serial revokedAt } }"""
UNLINK = "mutation($linkId: ID!) { unlinkFamily(linkId: $linkId) { status } }"
UPDATE = """mutation($linkId: ID!, $permissions: [LinkPermission!]!) {
  updateLinkPermissions(linkId: $linkId, permissions: $permissions) { permissions } }"""


def data(body: dict[str, Any]) -> Any:
    assert "errors" not in body, body
    return body["data"]


async def verify(gql: GraphQLClient, token: str, code: str) -> dict[str, Any]:
    result: dict[str, Any] = data(await gql(VERIFY, {"code": code}, token=token))["verifyVoucher"]
    return result


async def test_issue_render_and_verify_my_own_voucher(gql: GraphQLClient, state: AppState) -> None:
    member = await world.person(state)
    pharmacy = await world.staff(state, Role.PHARMACY)
    voucher = data(await gql(ISSUE, {}, token=member.token))["issueVoucher"]
    code = voucher["code"]
    assert code.startswith("YBS:") and voucher["linkId"] is None
    expires = dt.datetime.fromisoformat(voucher["expiresAt"])
    assert 50 <= (expires - dt.datetime.now(dt.UTC)).total_seconds() <= 61
    assert voucher["qrSvg"].lstrip().startswith("<") and "<svg" in voucher["qrSvg"]
    image = Image.open(io.BytesIO(base64.b64decode(voucher["qrPngBase64"])))
    assert [r.text for r in zxingcpp.read_barcodes(image, formats=zxingcpp.BarcodeFormat.QRCode)] == [code]
    assert gql.last is not None and member.id_number not in gql.last.text

    # Terminals verify it offline with the published issuer keys.
    keys = await vouchers.issuer_public_keys(state.voucher_keys)
    assert voucher["kid"] in keys and re.fullmatch(r"[0-9a-f]{8}", voucher["kid"])
    offline = verify_code(
        code,
        issuer_keys=state.voucher_keys.public_keys(),
        revocations=RevocationList(),
        now=dt.datetime.now(dt.UTC),
    )
    assert offline.valid and offline.link_ref is None

    checked = await verify(gql, pharmacy, code)
    assert checked["valid"] and checked["form"] == "online" and checked["relationship"] is None
    person = checked["person"]
    assert person["maskedName"] == member.name[0] + "*" + member.name[-1]
    assert person["idNumberMasked"] == member.id_number[:4] + "*" * 12 + member.id_number[-2:]
    assert person["insuranceType"] == "resident"
    replay = await verify(gql, pharmacy, code)
    assert not replay["valid"] and replay["reason"] == "replayed" and replay["person"] is None


async def test_demo_holder_shows_the_elders_voucher(gql: GraphQLClient) -> None:
    await gql.login("resident")
    links = data(await gql("{ familyLinks { id relativeName } }"))["familyLinks"]
    link = links[0]
    voucher = data(await gql(ISSUE_CODE, {"linkId": link["id"]}))["issueVoucher"]
    await gql.login("pharmacy")
    checked = await verify(gql, gql.token or "", voucher["code"])
    assert checked["valid"] and checked["relationship"] == "PARENT" and checked["relationshipLabel"] == "父母"
    assert checked["person"]["maskedName"] == vouchers.mask_name(link["relativeName"])
    assert checked["person"]["maskedName"] != link["relativeName"]
    await gql.login("elder")
    actions = data(await gql("{ accessAudit(first: 100) { edges { node { action } } } }"))["accessAudit"][
        "edges"
    ]
    assert "issue_voucher" in {a["node"]["action"] for a in actions}


async def test_voucher_needs_show_voucher_permission_and_the_right_holder(
    gql: GraphQLClient, state: AppState
) -> None:
    holder, relative, stranger = (
        await world.person(state),
        await world.person(state),
        await world.person(state),
    )
    link_id = str(await world.link(state, holder, relative, {Permission.READ_RECORDS}))
    assert error_codes(await gql(ISSUE_CODE, {"linkId": link_id}, token=holder.token)) == ["FORBIDDEN"]
    assert error_codes(await gql(ISSUE_CODE, {"linkId": link_id}, token=stranger.token)) == ["NOT_FOUND"]
    key = public_key_to_b64(Ed25519PrivateKey.generate().public_key())
    assert error_codes(await gql(CERTIFY, {"key": key, "linkId": link_id}, token=holder.token)) == [
        "FORBIDDEN"
    ]
    assert error_codes(await gql(ISSUE_CODE, {"linkId": "nope"}, token=holder.token)) == ["BAD_USER_INPUT"]


async def test_issuance_is_rate_limited_per_account(client: httpx.AsyncClient, state: AppState) -> None:
    _, limited = world.variant(state, voucher_rate_limit=3)
    transport = httpx.ASGITransport(app=limited, client=("10.6.6.6", 1))
    async with httpx.AsyncClient(transport=transport, base_url="http://limited") as http:
        gq = GraphQLClient(http)
        member, other = await world.person(state), await world.person(state)
        for _ in range(3):
            assert data(await gq(ISSUE_CODE, {}, token=member.token))
        body = await gq(ISSUE_CODE, {}, token=member.token)
        assert error_codes(body) == ["RATE_LIMITED"] and body["errors"][0]["extensions"]["retry_after_s"] >= 1
        assert data(await gq(ISSUE_CODE, {}, token=other.token))


@pytest.mark.parametrize(
    "code",
    [
        "",
        "garbage",
        "YBS:",
        "YBS:" + "A" * 600,  # oversized
        "ybs:abc",
        "YBX:" + "0" * 30,
        "YBS:%%%%",
    ],
)
async def test_garbage_codes_are_malformed(gql: GraphQLClient, state: AppState, code: str) -> None:
    pharmacy = await world.staff(state, Role.PHARMACY)
    checked = await verify(gql, pharmacy, code)
    assert checked == {**checked, "valid": False, "reason": "malformed", "person": None}


async def test_truncated_tampered_and_foreign_codes(gql: GraphQLClient, state: AppState) -> None:
    member = await world.person(state)
    pharmacy = await world.staff(state, Role.PHARMACY)
    code = data(await gql(ISSUE_CODE, {}, token=member.token))["issueVoucher"]["code"]
    assert (await verify(gql, pharmacy, code[:-3]))["reason"] == "malformed"
    # Signed by a key that is not ours.
    from sync.vouchers import b45decode, issue_online_code

    payload = b45decode(code[4:])
    foreign = issue_online_code(
        Ed25519PrivateKey.generate(), "0badc0de", payload[6:14], None, dt.datetime.now(dt.UTC)
    )
    assert (await verify(gql, pharmacy, foreign))["reason"] == "unknown_key"
    # One flipped byte of the person reference breaks the signature.
    flipped = bytearray(payload)
    flipped[7] ^= 0x01
    from sync.vouchers import b45encode

    assert (await verify(gql, pharmacy, "YBS:" + b45encode(bytes(flipped))))["reason"] == "bad_signature"
    # Residents cannot verify codes.
    assert error_codes(await gql(VERIFY, {"code": code}, token=member.token)) == ["FORBIDDEN"]


async def test_replay_is_refused_across_workers(
    client: httpx.AsyncClient, gql: GraphQLClient, state: AppState
) -> None:
    member = await world.person(state)
    pharmacy = await world.staff(state, Role.PHARMACY)
    code = data(await gql(ISSUE_CODE, {}, token=member.token))["issueVoucher"]["code"]
    _, other_app = world.second_worker(state)
    transport = httpx.ASGITransport(app=other_app, client=("10.5.5.5", 1))
    async with httpx.AsyncClient(transport=transport, base_url="http://worker-b") as http:
        assert (await verify(gql, pharmacy, code))["valid"]
        assert (await verify(GraphQLClient(http), pharmacy, code))["reason"] == "replayed"


@pytest.mark.parametrize(
    "key",
    [
        "not base64!",
        base64.b64encode(b"\x01" * 31).decode(),
        base64.b64encode(b"\x01" * 33).decode(),
        "A" * 200,
        "",
    ],
)
async def test_certify_device_validates_the_key(gql: GraphQLClient, state: AppState, key: str) -> None:
    member = await world.person(state)
    body = await gql(CERTIFY, {"key": key}, token=member.token)
    assert error_codes(body) == ["BAD_USER_INPUT"] and body["errors"][0]["extensions"]["field"] == "publicKey"


async def test_offline_code_verifies_once_and_dies_with_a_lost_phone(
    gql: GraphQLClient, state: AppState
) -> None:
    member = await world.person(state)
    pharmacy = await world.staff(state, Role.PHARMACY)
    device = Ed25519PrivateKey.generate()
    # Standard padded base64 is accepted as well as base64url.
    raw = device.public_key().public_bytes_raw()
    cert = data(await gql(CERTIFY, {"key": base64.b64encode(raw).decode()}, token=member.token))[
        "certifyDevice"
    ]
    not_before, not_after = (dt.datetime.fromisoformat(cert[k]) for k in ("notBefore", "notAfter"))
    assert dt.timedelta(days=1) <= not_after - not_before <= dt.timedelta(days=30)
    certificate = base64.b64decode(cert["certificate"])
    assert parse_device_certificate(certificate).serial.hex() == cert["serial"]

    now = int(dt.datetime.now(dt.UTC).timestamp())
    code = compose_offline_code(certificate, device, now, 1)
    checked = await verify(gql, pharmacy, code)
    assert (
        checked["valid"] and checked["form"] == "offline" and checked["certificateSerial"] == cert["serial"]
    )
    assert (await verify(gql, pharmacy, code))["reason"] == "replayed"

    async with state.db.session() as session:
        before = await revocations.current_version(session)
    lost = data(await gql(LOST, {"key": public_key_to_b64(raw)}, token=member.token))["reportDeviceLost"]
    assert [c["serial"] for c in lost] == [cert["serial"]] and lost[0]["revokedAt"]
    checked = await verify(gql, pharmacy, compose_offline_code(certificate, device, now, 2))
    assert (checked["reason"], checked["detail"]) == ("revoked", "certificate")
    async with state.db.session() as session:
        shipped = await revocations.revocation_list(session)
    assert shipped.version > before and bytes.fromhex(cert["serial"]) in shipped.cert_serials
    # Someone else cannot report (and so learn about) my device.
    stranger = await world.person(state)
    assert error_codes(await gql(LOST, {"serial": cert["serial"]}, token=stranger.token)) == ["NOT_FOUND"]
    assert error_codes(await gql(LOST, {}, token=member.token)) == ["BAD_USER_INPUT"]


async def test_certificate_of_one_person_with_a_code_claiming_another(
    gql: GraphQLClient, state: AppState
) -> None:
    alice, bob = await world.person(state), await world.person(state)
    pharmacy = await world.staff(state, Role.PHARMACY)
    alice_device, bob_device = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    alice_cert = base64.b64decode(
        data(await gql(CERTIFY, {"key": public_key_to_b64(alice_device.public_key())}, token=alice.token))[
            "certifyDevice"
        ]["certificate"]
    )
    bob_cert = base64.b64decode(
        data(await gql(CERTIFY, {"key": public_key_to_b64(bob_device.public_key())}, token=bob.token))[
            "certifyDevice"
        ]["certificate"]
    )
    now = int(dt.datetime.now(dt.UTC).timestamp())
    # Alice's phone signs a code carrying Bob's certificate (claiming Bob): the device signature fails.
    signed = bob_cert + now.to_bytes(4, "big") + (7).to_bytes(2, "big")
    forged = to_text(OFFLINE_PREFIX, signed + alice_device.sign(CTX_OFFLINE + signed))
    assert (await verify(gql, pharmacy, forged))["reason"] == "bad_signature"
    # Alice's certificate edited to name Bob's person reference: the issuer signature fails.
    edited = bytearray(alice_cert)
    edited[46:54] = bob_cert[46:54]
    signed = bytes(edited) + now.to_bytes(4, "big") + (8).to_bytes(2, "big")
    forged = to_text(OFFLINE_PREFIX, signed + alice_device.sign(CTX_OFFLINE + signed))
    assert (await verify(gql, pharmacy, forged))["reason"] == "bad_signature"


async def test_unlinking_revokes_the_links_codes_and_certificates(
    gql: GraphQLClient, state: AppState
) -> None:
    holder, relative = await world.person(state), await world.person(state)
    pharmacy = await world.staff(state, Role.PHARMACY)
    link_id = str(await world.link(state, holder, relative, set(Permission)))
    online = data(await gql(ISSUE_CODE, {"linkId": link_id}, token=holder.token))["issueVoucher"]["code"]
    device = Ed25519PrivateKey.generate()
    cert = data(
        await gql(
            CERTIFY, {"key": public_key_to_b64(device.public_key()), "linkId": link_id}, token=holder.token
        )
    )["certifyDevice"]
    assert cert["linkId"] == link_id
    certificate = base64.b64decode(cert["certificate"])
    now = int(dt.datetime.now(dt.UTC).timestamp())

    assert (
        data(await gql(UNLINK, {"linkId": link_id}, token=relative.token))["unlinkFamily"]["status"]
        == "REMOVED"
    )
    checked = await verify(gql, pharmacy, online)
    assert (checked["reason"], checked["detail"]) == ("revoked", "link")
    checked = await verify(gql, pharmacy, compose_offline_code(certificate, device, now, 1))
    assert checked["reason"] == "revoked" and checked["detail"] in ("certificate", "link")
    async with state.db.session() as session:
        shipped = await revocations.revocation_list(session)
    assert bytes.fromhex(cert["serial"]) in shipped.cert_serials
    assert parse_device_certificate(certificate).link_ref in shipped.link_refs
    # And no new code through the removed link.
    assert error_codes(await gql(ISSUE_CODE, {"linkId": link_id}, token=holder.token)) == ["FORBIDDEN"]


@pytest.mark.parametrize("who", ["relative", "holder", "reviewer"])
async def test_withdrawing_show_voucher_stops_the_links_codes_and_certificates(
    gql: GraphQLClient, state: AppState, who: str
) -> None:
    holder, relative = await world.person(state), await world.person(state)
    pharmacy = await world.staff(state, Role.PHARMACY)
    method = LinkMethod.PROXY if who == "reviewer" else LinkMethod.CONFIRMATION
    link_id = str(await world.link(state, holder, relative, set(Permission), method=method))
    online = data(await gql(ISSUE_CODE, {"linkId": link_id}, token=holder.token))["issueVoucher"]["code"]
    device = Ed25519PrivateKey.generate()
    cert = data(
        await gql(
            CERTIFY, {"key": public_key_to_b64(device.public_key()), "linkId": link_id}, token=holder.token
        )
    )["certifyDevice"]
    certificate = base64.b64decode(cert["certificate"])
    # The holder's own voucher and device are not the link's: they keep working.
    own_device = Ed25519PrivateKey.generate()
    own_cert = data(
        await gql(CERTIFY, {"key": public_key_to_b64(own_device.public_key())}, token=holder.token)
    )["certifyDevice"]
    own_online = data(await gql(ISSUE_CODE, {}, token=holder.token))["issueVoucher"]["code"]
    now = int(dt.datetime.now(dt.UTC).timestamp())

    token = {
        "relative": relative.token,
        "holder": holder.token,
        "reviewer": await world.staff(state, Role.REVIEWER),
    }[who]
    narrowed = data(await gql(UPDATE, {"linkId": link_id, "permissions": ["READ_RECORDS"]}, token=token))
    assert narrowed["updateLinkPermissions"]["permissions"] == ["READ_RECORDS"]

    # At once, online: neither the short-lived code nor the phone's offline codes verify any more.
    checked = await verify(gql, pharmacy, online)
    assert (checked["valid"], checked["reason"], checked["detail"]) == (False, "revoked", "link")
    checked = await verify(gql, pharmacy, compose_offline_code(certificate, device, now, 1))
    assert checked["reason"] == "revoked" and checked["detail"] in ("certificate", "link")
    # And offline: terminals learn the certificate's serial from the revocation list they sync.
    async with state.db.session() as session:
        shipped = await revocations.revocation_list(session)
    assert bytes.fromhex(cert["serial"]) in shipped.cert_serials
    offline = verify_code(
        compose_offline_code(certificate, device, now, 2),
        issuer_keys=state.voucher_keys.public_keys(),
        revocations=shipped,
        now=dt.datetime.now(dt.UTC),
    )
    assert (offline.reason, offline.detail) == ("revoked", "certificate")
    # The link itself lives on (it still grants reading records) under a fresh ref; the ref its codes
    # named so far is revoked, so they stay dead even if show-voucher is granted again.
    assert parse_device_certificate(certificate).link_ref in shipped.link_refs
    assert bytes.fromhex(own_cert["serial"]) not in shipped.cert_serials
    assert (await verify(gql, pharmacy, own_online))["valid"]
    own_certificate = base64.b64decode(own_cert["certificate"])
    assert (await verify(gql, pharmacy, compose_offline_code(own_certificate, own_device, now, 3)))["valid"]
    # No new code through the link until show-voucher is granted again.
    assert error_codes(await gql(ISSUE_CODE, {"linkId": link_id}, token=holder.token)) == ["FORBIDDEN"]


async def test_a_code_through_a_link_that_no_longer_shows_vouchers_is_refused(
    gql: GraphQLClient, state: AppState
) -> None:
    """Even without a revocation entry (a change made behind the service's back), verify looks at the link."""
    holder, relative = await world.person(state), await world.person(state)
    pharmacy = await world.staff(state, Role.PHARMACY)
    link_id = await world.link(state, holder, relative, set(Permission))
    codes = [
        data(await gql(ISSUE_CODE, {"linkId": str(link_id)}, token=holder.token))["issueVoucher"]["code"]
        for _ in range(2)
    ]
    async with state.db.session() as session:
        await session.execute(
            sa_update(FamilyLink).where(col(FamilyLink.id) == link_id).values(can_show_voucher=False)
        )
    checked = await verify(gql, pharmacy, codes[0])
    assert (checked["reason"], checked["detail"], checked["person"]) == ("revoked", "link", None)
    async with state.db.session() as session:
        await session.execute(
            sa_update(FamilyLink)
            .where(col(FamilyLink.id) == link_id)
            .values(can_show_voucher=True, status="removed", pair_key=None)
        )
    checked = await verify(gql, pharmacy, codes[1])
    assert (checked["reason"], checked["detail"]) == ("revoked", "link")


END_ENROLMENT = "mutation($p: ID!, $d: Date!) { endEnrolment(personId: $p, endOn: $d) { startOn endOn } }"


async def test_ended_enrolment(gql: GraphQLClient, state: AppState) -> None:
    member = await world.person(state)
    pharmacy = await world.staff(state, Role.PHARMACY)
    admin = await world.staff(state, Role.ADMIN)
    code = data(await gql(ISSUE_CODE, {}, token=member.token))["issueVoucher"]["code"]
    yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=2)

    # Only an administrator ends an enrolment, and not before it began.
    variables = {"p": str(member.person_id), "d": yesterday.isoformat()}
    assert error_codes(await gql(END_ENROLMENT, variables, token=member.token)) == ["FORBIDDEN"]
    too_early = await gql(END_ENROLMENT, {**variables, "d": "2023-12-31"}, token=admin)
    assert (
        error_codes(too_early) == ["BAD_USER_INPUT"]
        and too_early["errors"][0]["extensions"]["field"] == "endOn"
    )
    ended = data(await gql(END_ENROLMENT, variables, token=admin))["endEnrolment"]
    assert ended["endOn"] == yesterday.isoformat()
    assert error_codes(await gql(END_ENROLMENT, variables, token=admin)) == ["CONFLICT"]

    # At once: the code issued before no longer verifies, and no new code or certificate is issued.
    checked = await verify(gql, pharmacy, code)
    assert (checked["reason"], checked["detail"]) == ("revoked", "person")
    body = await gql(ISSUE_CODE, {}, token=member.token)
    assert error_codes(body) == ["FORBIDDEN"] and body["errors"][0]["extensions"]["reason"] == "not_insured"
    key = public_key_to_b64(Ed25519PrivateKey.generate().public_key())
    assert error_codes(await gql(CERTIFY, {"key": key}, token=member.token)) == ["FORBIDDEN"]


@pytest.mark.parametrize(
    "person_id", ["99999999999999999999", "9223372036854775808", "-1", "0", "abc", "", "1e3"]
)
async def test_end_enrolment_refuses_malformed_person_ids(
    gql: GraphQLClient, state: AppState, person_id: str
) -> None:
    admin = await world.staff(state, Role.ADMIN)
    body = await gql(END_ENROLMENT, {"p": person_id, "d": "2025-01-01"}, token=admin)
    assert error_codes(body) == ["BAD_USER_INPUT"], body
    assert body["errors"][0]["extensions"]["field"] == "personId"
    # The largest id that fits is well-formed, and simply nobody's.
    body = await gql(END_ENROLMENT, {"p": str(2**63 - 1), "d": "2025-01-01"}, token=admin)
    assert error_codes(body) == ["NOT_FOUND"], body


async def test_revocation_versions_grow_by_one_per_entry(state: AppState) -> None:
    async with state.db.session() as session:
        before = await revocations.current_version(session)
        await revocations.append(session, [("link", "00" * 8, "test"), ("certificate", "11" * 8, "test")])
    async with state.db.session() as session:
        shipped = await revocations.revocation_list(session)
    assert shipped.version == before + 2
    assert RevocationList.from_dict(shipped.to_dict()) == shipped


@pytest.mark.parametrize(
    ("name", "masked"), [("张三", "张*"), ("张小明", "张*明"), ("欧阳小锋", "欧**锋"), ("李", "李")]
)
def test_mask_name(name: str, masked: str) -> None:
    assert vouchers.mask_name(name) == masked


# --- Issue 8, item 5: codes issued before a withdrawal stay dead after a re-grant -----------------


@pytest.mark.parametrize("who", ["relative", "holder", "reviewer"])
async def test_codes_from_before_a_withdrawal_stay_dead_after_show_voucher_is_granted_again(
    gql: GraphQLClient, state: AppState, who: str
) -> None:
    holder, relative = await world.person(state), await world.person(state)
    pharmacy = await world.staff(state, Role.PHARMACY)
    method = LinkMethod.PROXY if who == "reviewer" else LinkMethod.CONFIRMATION
    link_id = str(await world.link(state, holder, relative, set(Permission), method=method))
    before = [
        data(await gql(ISSUE_CODE, {"linkId": link_id}, token=holder.token))["issueVoucher"]["code"]
        for _ in range(3)
    ]
    device = Ed25519PrivateKey.generate()
    old_certificate = base64.b64decode(
        data(
            await gql(
                CERTIFY,
                {"key": public_key_to_b64(device.public_key()), "linkId": link_id},
                token=holder.token,
            )
        )["certifyDevice"]["certificate"]
    )
    now = int(dt.datetime.now(dt.UTC).timestamp())

    # Show-voucher is withdrawn (by the relative, by the holder, or by a reviewer on a proxy link)...
    if who == "holder":
        assert data(
            await gql(UPDATE, {"linkId": link_id, "permissions": ["READ_RECORDS"]}, token=holder.token)
        )
        # ...and the holder asks for it again.
        assert data(
            await gql(UPDATE, {"linkId": link_id, "permissions": ["SHOW_VOUCHER"]}, token=holder.token)
        )
    else:
        token = relative.token if who == "relative" else await world.staff(state, Role.REVIEWER)
        assert data(await gql(UPDATE, {"linkId": link_id, "permissions": ["READ_RECORDS"]}, token=token))
    # ...and the relative grants it again, within the code's 60 seconds.
    regranted = await gql(UPDATE, {"linkId": link_id, "permissions": ["SHOW_VOUCHER"]}, token=relative.token)
    assert "SHOW_VOUCHER" in data(regranted)["updateLinkPermissions"]["permissions"]

    # Online: the codes issued before the withdrawal stay revoked.
    checked = await verify(gql, pharmacy, before[0])
    assert (checked["valid"], checked["reason"], checked["detail"]) == (False, "revoked", "link")
    checked = await verify(gql, pharmacy, compose_offline_code(old_certificate, device, now, 1))
    assert not checked["valid"] and checked["reason"] == "revoked"
    # Offline, on a terminal that synced after the withdrawal: the same, with nothing but the list.
    async with state.db.session() as session:
        shipped = await revocations.revocation_list(session)
    for n, code in enumerate([before[1], compose_offline_code(old_certificate, device, now, 2)]):
        offline = verify_code(
            code,
            issuer_keys=state.voucher_keys.public_keys(),
            revocations=shipped,
            now=dt.datetime.now(dt.UTC),
        )
        assert offline.reason == "revoked", (n, offline)

    # Codes issued after the re-grant verify, online and offline.
    fresh = data(await gql(ISSUE_CODE, {"linkId": link_id}, token=holder.token))["issueVoucher"]["code"]
    offline = verify_code(
        fresh, issuer_keys=state.voucher_keys.public_keys(), revocations=shipped, now=dt.datetime.now(dt.UTC)
    )
    assert offline.valid and offline.link_ref not in shipped.link_refs
    assert (await verify(gql, pharmacy, fresh))["valid"]
    new_device = Ed25519PrivateKey.generate()
    new_certificate = base64.b64decode(
        data(
            await gql(
                CERTIFY,
                {"key": public_key_to_b64(new_device.public_key()), "linkId": link_id},
                token=holder.token,
            )
        )["certifyDevice"]["certificate"]
    )
    assert (await verify(gql, pharmacy, compose_offline_code(new_certificate, new_device, now, 3)))["valid"]
    # The link is the same link throughout (same id, still active); only what its codes name changed.
    links = data(await gql("{ familyLinks { id status } }", token=holder.token))["familyLinks"]
    assert {"id": link_id, "status": "ACTIVE"} in links
    assert (
        parse_device_certificate(new_certificate).link_ref
        != parse_device_certificate(old_certificate).link_ref
    )


# --- Issue 8, item 2: weak device keys are refused at certification -------------------------------


async def test_certify_device_refuses_small_order_and_non_canonical_keys(
    gql: GraphQLClient, state: AppState
) -> None:
    """A certificate for the identity point would let anyone who saw one of its offline codes mint more
    (R = identity, S = 0 verifies for every message); every other weak key is refused as well."""
    from sqlalchemy import select

    from api.vouchers.models import DeviceCertificateRecord

    member = await world.person(state)
    weak = {
        "identity": "0100000000000000000000000000000000000000000000000000000000000000",
        "order 8": "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
        "order 4, y = p (non-canonical)": "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "identity, x = -0 (non-canonical)": "0100000000000000000000000000000000000000000000000000000000000080",
        "mixed order (C2SP/CCTV ed25519 vectors)": "10eb7c3acfb2bed3e0d6ab89bf5a3d6afddd1176ce4812e38d9fd485058fdb1f",
    }
    for name, key in weak.items():
        raw = bytes.fromhex(key)
        for text in (public_key_to_b64(raw), base64.b64encode(raw).decode()):
            body = await gql(CERTIFY, {"key": text}, token=member.token)
            assert error_codes(body) == ["BAD_USER_INPUT"], (name, body)
            error = body["errors"][0]
            assert error["extensions"]["field"] == "publicKey" and "设备公钥" in error["message"], name
    async with state.db.session() as session:
        certified = await session.execute(
            select(DeviceCertificateRecord).where(
                col(DeviceCertificateRecord.account_id) == member.account_id
            )
        )
        assert certified.scalars().all() == []
    # A genuine key still gets its certificate.
    genuine = public_key_to_b64(Ed25519PrivateKey.generate().public_key())
    assert data(await gql(CERTIFY, {"key": genuine}, token=member.token))["certifyDevice"]["serial"]
