"""E-vouchers (医保码): issuing online codes, certifying devices, verifying codes online, revoking.

The code format and the offline verifier are the pure `sync.vouchers`; this module adds who may get a
code for whom (family links, enrolment), the opaque person references, the certificates issued, and
a replay store in the database so that a code is accepted once across every worker.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Literal

import qrcode
from qrcode.constants import ERROR_CORRECT_M
from qrcode.image.pil import PilImage
from qrcode.image.svg import SvgPathImage
from qrcode.util import QRData
from sqlalchemy import delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from api import ratelimit
from api.auth.service import Viewer
from api.db import dialect_insert, one_of
from api.dbtypes import utcnow
from api.errors import BadUserInput, Forbidden, NotFound
from api.family import service as family
from api.family.models import FamilyLink, LinkStatus, Permission
from api.people import service as people
from api.people.models import InsuredPerson
from api.settings import Settings
from api.vouchers import revocations
from api.vouchers.keys import VoucherKeys
from api.vouchers.models import DeviceCertificateRecord, VoucherReplay, VoucherSubject
from sync.protocol import OFFLINE_SETTLEMENT_MAX_AGE_S
from sync.vouchers import (
    MAX_CODE_CHARS,
    RevocationList,
    VerificationResult,
    VoucherFormatError,
    issue_device_certificate,
    issue_online_code,
    new_ref,
    public_key_from_b64,
    public_key_to_b64,
    verify_code,
)
from sync.vouchers.format import (
    ONLINE_PREFIX,
    OnlineCode,
    from_text,
    parse_offline_payload,
    parse_online_payload,
    replay_key,
)
from sync.vouchers.keys import WeakPublicKeyError
from sync.vouchers.verify import Reason


@dataclass(frozen=True)
class Subject:
    """Whose voucher: the caller's own, or a relative's through an active link."""

    person_id: int
    link: FamilyLink | None


@dataclass(frozen=True)
class IssuedVoucher:
    code: str
    expires_at: datetime
    kid: str
    link_id: int | None


@dataclass(frozen=True)
class IssuedCertificate:
    record: DeviceCertificateRecord
    certificate: bytes


@dataclass(frozen=True)
class Verification:
    result: VerificationResult
    person: InsuredPerson | None
    link: FamilyLink | None


async def _subject(
    session: AsyncSession, viewer: Viewer, link_id: str | None, action: str, today_ok: datetime
) -> Subject:
    if link_id is None:
        subject = Subject(family.person_of(viewer), None)
    else:
        link = await family.require_link(session, viewer, link_id, Permission.SHOW_VOUCHER)
        family.audit(session, viewer, link, action)
        subject = Subject(link.relative_person_id, link)
    await _require_insured(session, subject.person_id, today_ok)
    return subject


async def _require_insured(session: AsyncSession, person_id: int, now: datetime) -> None:
    day = family.today(now)
    periods = await people.enrolments(session, person_id)
    if not any(p.start_on <= day and (p.end_on is None or p.end_on >= day) for p in periods):
        raise Forbidden("参保关系已终止，无法出示医保码", reason="not_insured")


async def person_ref(session: AsyncSession, person_id: int) -> bytes:
    """The 8-byte reference codes name for this person; minted once (insert-if-absent)."""
    existing = await session.get(VoucherSubject, person_id)
    if existing is None:
        table = VoucherSubject.__table__  # type: ignore[attr-defined]
        await session.execute(
            dialect_insert(session)(table)
            .values(person_id=person_id, ref=new_ref().hex())
            .on_conflict_do_nothing(index_elements=["person_id"])
        )
        existing = await session.get(VoucherSubject, person_id, populate_existing=True)
        assert existing is not None
    return bytes.fromhex(existing.ref)


async def issue_voucher(
    session: AsyncSession,
    settings: Settings,
    keys: VoucherKeys,
    viewer: Viewer,
    link_id: str | None,
    now: datetime | None = None,
) -> IssuedVoucher:
    now = now or utcnow()
    await ratelimit.hit(
        session, f"voucher:{viewer.account_id}", limit=settings.voucher_rate_limit, window_s=60
    )
    subject = await _subject(session, viewer, link_id, "issue_voucher", now)
    ref = await person_ref(session, subject.person_id)
    kid, private_key = keys.signer()
    link_ref = bytes.fromhex(subject.link.ref) if subject.link else None
    issued_at = int(now.timestamp())
    code = issue_online_code(private_key, kid, ref, link_ref, issued_at, settings.voucher_ttl_s)
    await session.commit()
    return IssuedVoucher(
        code=code,
        expires_at=datetime.fromtimestamp(issued_at + settings.voucher_ttl_s, UTC),
        kid=kid,
        link_id=subject.link.id if subject.link else None,
    )


async def certify_device(
    session: AsyncSession,
    settings: Settings,
    keys: VoucherKeys,
    viewer: Viewer,
    public_key: str,
    link_id: str | None,
    now: datetime | None = None,
) -> IssuedCertificate:
    now = (now or utcnow()).replace(microsecond=0)
    if len(public_key) > 64:
        raise BadUserInput("设备公钥格式有误", field="publicKey")
    try:
        # Strict: a small-order key (the identity point, say) would let anyone who has seen one of
        # its offline codes mint more; mixed-order and non-canonical keys are refused as well.
        device_key = public_key_from_b64(public_key)
    except WeakPublicKeyError:
        raise BadUserInput(
            "设备公钥不安全（非规范编码、含小阶分量或不在曲线上），请在设备上重新生成密钥", field="publicKey"
        ) from None
    except ValueError:
        raise BadUserInput("设备公钥须为32字节Ed25519公钥的base64编码", field="publicKey") from None
    await ratelimit.hit(
        session, f"voucher:{viewer.account_id}", limit=settings.voucher_rate_limit, window_s=60
    )
    subject = await _subject(session, viewer, link_id, "certify_device", now)
    ref = await person_ref(session, subject.person_id)
    kid, private_key = keys.signer()
    serial = new_ref()
    validity = timedelta(days=settings.device_cert_validity_days)
    certificate = issue_device_certificate(
        private_key,
        kid,
        device_key,
        ref,
        bytes.fromhex(subject.link.ref) if subject.link else None,
        now,
        validity_s=int(validity.total_seconds()),
        serial=serial,
    )
    record = DeviceCertificateRecord(
        serial=serial.hex(),
        person_id=subject.person_id,
        link_id=subject.link.id if subject.link else None,
        account_id=viewer.account_id,
        device_key=public_key_to_b64(device_key),
        kid=kid,
        not_before=now,
        not_after=now + validity,
        created_at=now,
    )
    session.add(record)
    await session.commit()
    return IssuedCertificate(record, certificate)


async def report_device_lost(
    session: AsyncSession, viewer: Viewer, *, certificate_serial: str | None, device_key: str | None
) -> Sequence[DeviceCertificateRecord]:
    """Revokes the certificates of a lost phone that the caller obtained or that name the caller."""
    if (certificate_serial is None) == (device_key is None):
        raise BadUserInput("请提供证书序列号或设备公钥其中一项", field="certificateSerial")
    statement = select(DeviceCertificateRecord)
    if certificate_serial is not None:
        statement = statement.where(col(DeviceCertificateRecord.serial) == certificate_serial.strip().lower())
    else:
        try:
            normalized = public_key_to_b64(public_key_from_b64(device_key or ""))
        except ValueError:
            raise BadUserInput("设备公钥格式有误", field="deviceKey") from None
        statement = statement.where(col(DeviceCertificateRecord.device_key) == normalized)
    owners = [col(DeviceCertificateRecord.account_id) == viewer.account_id]
    if viewer.person_id is not None:
        owners.append(col(DeviceCertificateRecord.person_id) == viewer.person_id)
    certs = (await session.execute(statement.where(or_(*owners)))).scalars().all()
    if not certs:
        raise NotFound("未找到该设备的证书")
    await revocations.revoke_certificates(session, certs, "device_lost", utcnow())
    await session.commit()
    return certs


async def verify(
    session: AsyncSession,
    settings: Settings,
    keys: VoucherKeys,
    code: str,
    now: datetime | None = None,
    *,
    commit: bool = True,
) -> Verification:
    """One code, online; the replay store in the database (insert-if-absent on the code's replay key) makes
    it accepted once across every worker. `commit=False` leaves the key in the caller's transaction:
    the code is used exactly when the caller's work commits (and expired keys are not purged there:
    a long transaction must not hold locks on other codes' rows)."""
    now = now or utcnow()
    batch = BatchVerifier(session, settings, keys)
    await batch.prefetch([code], replays=False)  # one code: insert-if-absent decides, no look-up first
    checked = await batch.check(code, now)
    if not checked.result.valid or checked.person_id is None:
        return Verification(checked.result, None, None)
    if commit:  # a commit of its own: expired keys are purged on the way (not in a caller's transaction)
        table = VoucherReplay.__table__  # type: ignore[attr-defined]
        await session.execute(delete(table).where(table.c.expires_at < int(now.timestamp())))
    taken = await batch.remember()
    if commit:
        await session.commit()
    if taken:
        return Verification(_with(checked.result, Reason.REPLAYED), None, None)
    person = await people.get_person(session, checked.person_id)
    return Verification(checked.result, person, checked.link)


@dataclass(frozen=True)
class Checked:
    """A code as BatchVerifier judged it: the verdict, whose (VoucherSubject.person_id), the link."""

    result: VerificationResult
    person_id: int | None
    link: FamilyLink | None


@dataclass(frozen=True)
class _Claims:
    serial: str | None
    link_ref: str | None
    person_ref: str | None
    replay_key: str | None


class BatchVerifier:
    """Online verification for the codes of one transaction (a terminal's push batch, or `verify`'s
    one code): the revocation entries, the subjects and the replay keys that concern any of its
    codes are read in one query each (`prefetch`), then each code is judged in memory, in the
    caller's order, exactly as `verify` judges it alone (length, revocations, signatures and
    validity, subject, family link, replay). An accepted code's replay key is held until `remember()`
    writes them all at once (insert-if-absent): a second showing of a code in the same batch is a
    replay, like a code already stored.

    `remember()` returns the keys another transaction stored first (it read none of them, so it
    committed after `prefetch`): the caller must not count those codes as accepted. On SQLite the
    caller's write lock rules that out; on PostgreSQL it is the rare race of one code verified at
    two places at once."""

    def __init__(self, session: AsyncSession, settings: Settings, keys: VoucherKeys) -> None:
        self.session = session
        self.settings = settings
        self.keys = keys
        self.revoked = RevocationList.build(0)
        self.subjects: dict[str, int] = {}
        self.used: set[str] | None = None
        """Replay keys already stored, of the prefetched codes (None: not read; remember() decides)."""
        self.claims: dict[str, _Claims] = {}
        self.pending: dict[str, int] = {}
        """Replay key (hex) -> keep until (Unix seconds), of the codes accepted and not yet written."""

    async def prefetch(self, codes: Sequence[str], *, replays: bool = True) -> None:
        session = self.session
        for code in codes:
            if code not in self.claims and len(code) <= MAX_CODE_CHARS:
                self.claims[code] = _claims(code)
        claims = list(self.claims.values())
        self.revoked = await revocations.revocations_for_many(
            session,
            cert_serials={c.serial for c in claims if c.serial is not None},
            link_refs={c.link_ref for c in claims if c.link_ref is not None},
            person_refs={c.person_ref for c in claims if c.person_ref is not None},
        )
        refs = sorted({c.person_ref for c in claims if c.person_ref is not None} - self.subjects.keys())
        if refs:
            rows = await session.execute(
                select(col(VoucherSubject.ref), col(VoucherSubject.person_id)).where(
                    one_of(col(VoucherSubject.ref), "refs")
                ),
                {"refs": refs},
            )
            self.subjects.update({ref: int(pid) for ref, pid in rows})
        if replays:
            wanted = sorted({c.replay_key for c in claims if c.replay_key is not None})
            self.used = await self._stored_keys(wanted)

    async def _stored_keys(self, keys: Sequence[str]) -> set[str]:
        if not keys:
            return set()
        rows = await self.session.execute(
            select(col(VoucherReplay.key)).where(one_of(col(VoucherReplay.key), "keys")), {"keys": list(keys)}
        )
        return set(rows.scalars())

    async def check(self, code: str, now: datetime) -> Checked:
        settings = self.settings
        if len(code) > MAX_CODE_CHARS:
            return Checked(VerificationResult(Reason.MALFORMED), None, None)
        if code not in self.claims:
            await self.prefetch([code], replays=self.used is not None)
        result = verify_code(
            code,
            issuer_keys=self.keys.public_keys(),
            revocations=self.revoked,
            now=now,
            skew_s=settings.voucher_skew_s,
            replay_guard=None,
        )
        if not result.valid:
            return Checked(result, None, None)
        assert (
            result.person_ref is not None and result.replay_key is not None and result.expires_at is not None
        )
        person_id = self.subjects.get(result.person_ref.hex())
        if person_id is None:  # signed by us, yet nobody has this ref: treat as revoked, never as valid
            return Checked(_with(result, Reason.REVOKED, "person"), None, None)
        link = None
        if result.link_ref is not None:
            # Shown through a family link: it must still be active and still grant show-voucher, now.
            # Unlinking also revokes the ref, but consent can be withdrawn while the link lives on, and a
            # code or certificate issued before must not outlive it.
            link = await family.link_by_ref(self.session, result.link_ref.hex())
            if (
                link is None
                or link.status != LinkStatus.ACTIVE.value
                or Permission.SHOW_VOUCHER not in link.granted()
                or link.relative_person_id != person_id
            ):
                return Checked(_with(result, Reason.REVOKED, "link"), None, None)
        key = result.replay_key.hex()
        if self.used is not None and key != self.claims[code].replay_key:
            self.used |= await self._stored_keys([key])  # (the claimed key is the verified one; to be sure)
        if key in self.pending or (self.used is not None and key in self.used):
            return Checked(_with(result, Reason.REPLAYED), None, None)
        # A used code stays used for as long as any terminal may still push a visit with it: a code a
        # pharmacy accepted online must not be settled again by a clinic that scanned it offline.
        self.pending[key] = result.expires_at + settings.voucher_skew_s + OFFLINE_SETTLEMENT_MAX_AGE_S
        return Checked(result, person_id, link)

    async def remember(self) -> set[str]:
        """Writes the accepted codes' replay keys in the caller's transaction; returns those another
        transaction had stored (see the class)."""
        pending, self.pending = self.pending, {}
        if not pending:
            return set()
        table = VoucherReplay.__table__  # type: ignore[attr-defined]
        inserted: set[str] = set()
        items = sorted(pending.items())
        for start in range(0, len(items), 1000):
            rows = [{"key": key, "expires_at": until} for key, until in items[start : start + 1000]]
            found = await self.session.execute(
                dialect_insert(self.session)(table)
                .values(rows)
                .on_conflict_do_nothing(index_elements=["key"])
                .returning(table.c.key)
            )
            inserted.update(found.scalars())
        if self.used is not None:
            self.used |= inserted
        return set(pending) - inserted


def _claims(code: str) -> _Claims:
    """Serial, link ref, person ref and replay key as the code claims them, unauthenticated, from one
    decoding of the code: only used to pick which revocation entries, subjects and replay keys to
    load; verify_code then checks everything in the normative order."""
    try:
        prefix, payload = from_text(code)
        parsed = parse_online_payload(payload) if prefix == ONLINE_PREFIX else parse_offline_payload(payload)
    except (VoucherFormatError, ValueError, TypeError):
        return _Claims(None, None, None, None)
    if isinstance(parsed, OnlineCode):
        serial, link, person = None, parsed.link_ref, parsed.person_ref
    else:
        cert = parsed.certificate
        serial, link, person = cert.serial.hex(), cert.link_ref, cert.person_ref
    return _Claims(serial, link.hex() if link else None, person.hex(), replay_key(parsed.signed).hex())


def _with(result: VerificationResult, reason: Reason, detail: str | None = None) -> VerificationResult:
    return replace(result, reason=reason, detail=detail)


async def issuer_public_keys(keys: VoucherKeys) -> dict[str, str]:
    """{kid: base64url raw public key}: shipped to terminals by sync."""
    return keys.public_keys_b64()


def mask_name(name: str) -> str:
    """张*明 for three characters, 张* for two, 欧**锋 for four: enough to recognise, not to identify."""
    if len(name) <= 1:
        return name
    if len(name) == 2:
        return name[0] + "*"
    return name[0] + "*" * (len(name) - 2) + name[-1]


_MODE_ALPHA_NUM: Literal[2] = 2  # qrcode.util.MODE_ALPHA_NUM, typed for the stubs


@dataclass
class QrCode:
    """One QR matrix per code, rendered lazily as SVG and/or PNG (a client rarely wants both)."""

    code: str
    _qr: qrcode.QRCode | None = None

    def _matrix(self) -> qrcode.QRCode:
        if self._qr is None:
            qr = qrcode.QRCode(error_correction=ERROR_CORRECT_M, box_size=8, border=4)
            # One alphanumeric segment, as SPEC.md section 6 asks: the densest mode for Base45 text.
            qr.add_data(QRData(self.code, mode=_MODE_ALPHA_NUM))
            qr.make(fit=True)
            self._qr = qr
        return self._qr

    def svg(self) -> str:
        image = self._matrix().make_image(image_factory=SvgPathImage)
        return str(image.to_string(encoding="unicode"))

    def png(self) -> bytes:
        image = self._matrix().make_image(image_factory=PilImage)
        out = io.BytesIO()
        image.save(out)
        return out.getvalue()
