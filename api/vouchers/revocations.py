"""The voucher revocation log: what online verification checks at once, and what terminals sync.

Family and people services call these in their own transactions (unlinking, a lost phone, an ended
enrolment), so a revocation commits together with the change that causes it, or not at all.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import func, insert, literal, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from api.db import one_of
from api.dbtypes import UTCDateTime, utcnow
from api.vouchers.models import DeviceCertificateRecord, VoucherRevocation, VoucherSubject
from sync.vouchers import RevocationList

CERTIFICATE = "certificate"
LINK = "link"
PERSON = "person"
_LOCK_ID = 0x59425643  # "YBVC": serialises version allocation on PostgreSQL


async def append(session: AsyncSession, entries: Iterable[tuple[str, str, str]]) -> None:
    """Adds (kind, ref hex, reason) entries, each with the next version.

    Versions are max + 1 inside the writing transaction. PostgreSQL: an advisory transaction lock
    makes concurrent writers take turns, so versions commit in order and without gaps. SQLite: the
    caller's transaction already holds the database's single write lock.
    """
    entries = list(entries)
    if not entries:
        return
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        await session.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _LOCK_ID})
    table = VoucherRevocation.__table__  # type: ignore[attr-defined]
    now = utcnow()
    for kind, ref, reason in entries:
        next_version = select(
            func.coalesce(func.max(table.c.version), 0) + 1,
            literal(kind),
            literal(ref),
            literal(reason),
            literal(now, UTCDateTime()),
        )
        await session.execute(
            insert(table).from_select(["version", "kind", "ref", "reason", "created_at"], next_version)
        )


async def revoke_certificates(
    session: AsyncSession, certificates: Iterable[DeviceCertificateRecord], reason: str, now: datetime
) -> list[str]:
    serials = []
    for cert in certificates:
        if cert.revoked_at is None:
            cert.revoked_at, cert.revoked_reason = now, reason
            serials.append(cert.serial)
    await session.flush()
    await append(session, ((CERTIFICATE, serial, reason) for serial in serials))
    return serials


async def revoke_link_certificates(session: AsyncSession, link_id: int, reason: str) -> list[str]:
    """Every live certificate issued through a link (revoke_link also revokes the ref its codes name)."""
    certs = (
        (
            await session.execute(
                select(DeviceCertificateRecord).where(
                    col(DeviceCertificateRecord.link_id) == link_id,
                    col(DeviceCertificateRecord.revoked_at).is_(None),
                )
            )
        )
        .scalars()
        .all()
    )
    return await revoke_certificates(session, certs, reason, utcnow())


async def revoke_link(session: AsyncSession, link_id: int, link_ref: str, reason: str) -> None:
    """The link's ref and every certificate issued through it: the link ended, or its show-voucher
    consent was withdrawn (then the family service gives the link a fresh ref, so that codes issued
    before the withdrawal stay revoked, on terminals too, even if show-voucher is granted again)."""
    await revoke_link_certificates(session, link_id, reason)
    await append(session, [(LINK, link_ref, reason)])


async def revoke_person(session: AsyncSession, person_id: int, reason: str = "enrolment_ended") -> None:
    """An enrolment ended: no code naming this person verifies, whoever shows it."""
    now = utcnow()
    certs = (
        (
            await session.execute(
                select(DeviceCertificateRecord).where(
                    col(DeviceCertificateRecord.person_id) == person_id,
                    col(DeviceCertificateRecord.revoked_at).is_(None),
                )
            )
        )
        .scalars()
        .all()
    )
    await revoke_certificates(session, certs, reason, now)
    subject = await session.get(VoucherSubject, person_id)
    if subject is not None:  # a person who never had a code needs no entry: nothing names them yet
        await append(session, [(PERSON, subject.ref, reason)])


async def current_version(session: AsyncSession) -> int:
    table = VoucherRevocation.__table__  # type: ignore[attr-defined]
    return int((await session.execute(select(func.coalesce(func.max(table.c.version), 0)))).scalar_one())


async def revocation_list(session: AsyncSession) -> RevocationList:
    """The whole list, as terminals sync it (SPEC.md section 8)."""
    rows = (await session.execute(select(VoucherRevocation))).scalars().all()
    return _build(rows, max((r.version for r in rows), default=0))


async def revocations_for(
    session: AsyncSession, *, cert_serial: str | None, link_ref: str | None, person_ref: str | None
) -> RevocationList:
    """Only the entries that could concern one code: what online verification needs, in one query."""
    return await revocations_for_many(
        session,
        cert_serials=[cert_serial] if cert_serial is not None else [],
        link_refs=[link_ref] if link_ref is not None else [],
        person_refs=[person_ref] if person_ref is not None else [],
    )


async def revocations_for_many(
    session: AsyncSession,
    *,
    cert_serials: Iterable[str],
    link_refs: Iterable[str],
    person_refs: Iterable[str],
) -> RevocationList:
    """The entries that could concern any of a batch's codes, in one query. (Entries about another code
    of the batch change nothing for this one: each check looks up the code's own serial and refs.)"""
    conditions = []
    params: dict[str, list[str]] = {}
    for kind, refs in ((CERTIFICATE, cert_serials), (LINK, link_refs), (PERSON, person_refs)):
        wanted = sorted(set(refs))
        if wanted:
            params[kind] = wanted
            conditions.append(
                (col(VoucherRevocation.kind) == kind) & one_of(col(VoucherRevocation.ref), kind)
            )
    rows = (
        (await session.execute(select(VoucherRevocation).where(or_(*conditions)), params)).scalars().all()
        if conditions
        else []
    )
    return _build(rows, 0)  # the version matters to terminals, not to a one-off online check


def _build(rows: Iterable[VoucherRevocation], version: int) -> RevocationList:
    by_kind: dict[str, set[bytes]] = {CERTIFICATE: set(), LINK: set(), PERSON: set()}
    for row in rows:
        by_kind.setdefault(row.kind, set()).add(bytes.fromhex(row.ref))
    return RevocationList.build(
        version, cert_serials=by_kind[CERTIFICATE], link_refs=by_kind[LINK], person_refs=by_kind[PERSON]
    )
