"""Online filings (网上办): create, submit, withdraw; reviewers claim, decide stage by stage under
statutory limits in working days; attachments; filing on a relative's behalf. No HTTP, no GraphQL.

The state machine::

    draft ──submit──▶ submitted ──claim──▶ in_review ──approve (not the last stage)──▶ in_review (next stage)
                                              │  └─approve (last stage)──▶ approved
                                              ├─reject──▶ rejected
                                              └─needs materials (一次告知)──▶ needs_materials
    needs_materials ──submit (only what was asked)──▶ resubmitted ──claim──▶ in_review (same stage)
    anything before a decision ──withdraw (the filer)──▶ withdrawn

Every transition is one conditional UPDATE on the filing's version (a concurrent change makes it a
CONFLICT, never a lost update), an event (who, when, why) the filer sees, a change-log entry for the
mini-program's replication, and a notification to the person (and the family member who filed it)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, delete, func, or_, select, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from api.auth.models import Account, Role
from api.auth.service import Viewer
from api.dbtypes import utcnow
from api.errors import BadUserInput, Conflict, Forbidden, NotFound
from api.family import service as family
from api.family.models import AccessAudit, FamilyLink, LinkStatus, Permission
from api.filings import calendar
from api.filings.bankaccounts import BankAccountVault, mask
from api.filings.kinds import KINDS, Context, Kind
from api.filings.models import (
    FINAL,
    QUEUED,
    Filing,
    FilingAttachment,
    FilingBirth,
    FilingEvent,
    FilingInvoice,
    FilingStatus,
)
from api.ids import parse_id
from api.notifications import service as notifications
from api.pagination import SHANGHAI, CursorCodec, Page, page_size
from api.people.models import InsuredPerson
from api.replication import changelog

ENTITY = "filing"
NOTIFICATION_KIND = "filing.status"
MAX_REASON = 500
MAX_NOTE = 200
MAX_MISSING = 30
MAX_ATTACHMENTS = 20
"""Attachments one filing may carry, all rounds together."""
MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024
ALLOWED_TYPES = {
    "application/pdf": "PDF",
    "image/jpeg": "JPEG",
    "image/png": "PNG",
    "image/webp": "WebP",
    "image/heic": "HEIC",
}
"""Images and PDF only, by the content's own signature (filetype), never by the name or the header."""
DECISIONS = ("approve", "reject", "needs_materials")
STAGE_DECISIONS = ("advance", "approve", "reject")
"""Event actions that decide a stage: whoever took one may not decide another stage of the filing."""

STATUS_LABELS = {
    "draft": "草稿",
    "submitted": "已提交",
    "in_review": "审核中",
    "needs_materials": "待补充材料",
    "resubmitted": "已补充材料",
    "approved": "已通过",
    "rejected": "未通过",
    "withdrawn": "已撤回",
}


def local_today(now: dt.datetime) -> dt.date:
    return now.astimezone(SHANGHAI).date()


def kind_of(code: str, field: str = "input.kind") -> Kind:
    kind = KINDS.get(code)
    if kind is None:
        raise BadUserInput("不支持的申请类型", field=field)
    return kind


def _reason(value: str | None, field: str, *, required: bool) -> str | None:
    text = (value or "").strip()
    if not text:
        if required:
            raise BadUserInput("请填写理由", field=field)
        return None
    if len(text) > MAX_REASON:
        raise BadUserInput(f"理由最多{MAX_REASON}个字", field=field)
    return text


# ------------------------------------------------------------------------------------ who acts


@dataclass(frozen=True)
class Actor:
    viewer: Viewer
    role: str
    """filer | holder | reviewer | admin."""
    link: FamilyLink | None = None


async def _holder_link_id(session: AsyncSession, viewer: Viewer, person_id: int) -> int | None:
    if viewer.person_id is None:
        return None
    found = await session.execute(
        select(col(FamilyLink.id))
        .where(
            col(FamilyLink.holder_person_id) == viewer.person_id,
            col(FamilyLink.relative_person_id) == person_id,
            col(FamilyLink.status) == LinkStatus.ACTIVE.value,
        )
        .order_by(col(FamilyLink.id))
        .limit(1)
    )
    return found.scalar_one_or_none()


async def acting_for(
    session: AsyncSession, viewer: Viewer, person_id: int, action: str, detail: str
) -> Actor:
    """The person themselves, or a family member holding an active link to them with the
    file-on-behalf permission now (checked through family.require_link, and put in the person's access
    audit). Anyone else, a family member without the permission too, gets NOT_FOUND: other people's
    filings are not confirmed to exist."""
    if viewer.role != Role.RESIDENT.value:
        raise NotFound("未找到该申请")
    if viewer.person_id == person_id:
        return Actor(viewer, "filer")
    link_id = await _holder_link_id(session, viewer, person_id)
    if link_id is None:
        raise NotFound("未找到该申请")
    try:
        link = await family.require_link(session, viewer, link_id, Permission.FILE_ON_BEHALF)
    except Forbidden:
        # A link without file-on-behalf (or not active) sees no more of the filings than a stranger.
        raise NotFound("未找到该申请") from None
    family.audit(session, viewer, link, action, detail)
    return Actor(viewer, "holder", link)


def _staff(viewer: Viewer) -> Actor:
    if viewer.role not in (Role.REVIEWER.value, Role.ADMIN.value):
        raise Forbidden()
    return Actor(viewer, viewer.role)


async def _get(session: AsyncSession, filing_id: int | str, field: str = "id") -> Filing:
    row = await session.get(Filing, parse_id(filing_id, field), populate_existing=True)
    if row is None:
        raise NotFound("未找到该申请")
    return row


async def get_for(session: AsyncSession, viewer: Viewer, filing_id: int | str) -> tuple[Filing, Actor]:
    """A filing as its person, their family member (audited) or a reviewer may read it. Commits the audit."""
    filing = await _get(session, filing_id)
    if viewer.role in (Role.REVIEWER.value, Role.ADMIN.value):
        return filing, _staff(viewer)
    actor = await acting_for(session, viewer, filing.person_id, "read:filing", f"filing {filing.id}")
    await session.commit()
    return filing, actor


async def _person(session: AsyncSession, person_id: int) -> InsuredPerson:
    person = await session.get(InsuredPerson, person_id)
    if person is None:
        raise NotFound("未找到参保人信息")
    return person


# ------------------------------------------------------------------------------ shared effects


def _changes(filing: Filing) -> list[changelog.Change]:
    assert filing.id is not None
    scopes = {filing.person_id, *([filing.filed_by_person_id] if filing.filed_by_person_id else [])}
    return [changelog.Change(ENTITY, str(filing.id), changelog.person_scope(p)) for p in sorted(scopes)]


def _event(
    session: AsyncSession,
    filing: Filing,
    actor: Actor,
    action: str,
    from_status: str | None,
    now: dt.datetime,
    *,
    reason: str | None = None,
    missing: list[dict[str, Any]] | None = None,
) -> None:
    assert filing.id is not None
    session.add(
        FilingEvent(
            filing_id=filing.id,
            occurred_at=now,
            actor_account_id=actor.viewer.account_id,
            actor_role=actor.role,
            action=action,
            from_status=from_status,
            to_status=filing.status,
            stage=filing.stage,
            due_on=filing.due_on,
            reason=reason,
            missing=missing,
        )
    )


NOTICES = {
    "submit": ("申请已提交", "您的{kind}申请已提交，请等待审核。"),
    "resubmit": ("材料已补充", "您的{kind}申请已补充材料，重新进入审核。"),
    "claim": ("申请审核中", "您的{kind}申请已由经办人员开始{stage}。"),
    "advance": ("审核进度", "您的{kind}申请已通过{done}，进入{stage}。"),
    "needs_materials": ("请补充材料", "您的{kind}申请需要补充以下材料（一次告知）：{missing}。"),
    "approve": ("申请已通过", "您的{kind}申请已审核通过。{reason}"),
    "reject": ("申请未通过", "您的{kind}申请未通过审核：{reason}"),
    "withdraw": ("申请已撤回", "您的{kind}申请已撤回。"),
    "create": ("亲属代办申请", "您的亲属为您创建了{kind}申请。"),
}


async def _notify(
    session: AsyncSession, filing: Filing, actor: Actor, action: str, from_status: str | None, **words: str
) -> None:
    """Tells the filing's person about a change someone else made, and the family member who filed it
    on their behalf while that link is still active with file-on-behalf (worded as the relative's)."""
    assert filing.id is not None
    kind = KINDS[filing.kind]
    title, template = NOTICES[action]
    stage = kind.stage(filing.stage) if filing.stage else None
    values = {
        "kind": kind.label,
        "stage": stage.label if stage else "",
        **{"done": "", "missing": "", "reason": "", **words},
    }
    people = [(filing.person_id, template.format(**values))]
    if (
        filing.filed_by_person_id is not None
        and filing.filed_by_person_id != filing.person_id
        and "您的{kind}申请" in template  # "create" is the holder's own action
        and await _holder_may_hear(session, filing)
    ):
        relative = await _person(session, filing.person_id)
        holder_template = template.replace("您的{kind}申请", "您为{relative}代办的{kind}申请")
        people.append((filing.filed_by_person_id, holder_template.format(relative=relative.name, **values)))
    data = {
        "filingId": str(filing.id),
        "kind": filing.kind,
        "action": action,
        "from": from_status,
        "to": filing.status,
        "stage": filing.stage,
    }
    for person_id, body in people:
        if person_id == actor.viewer.person_id:
            continue  # one's own action needs no notice
        await notifications.notify(
            session,
            person_id,
            NOTIFICATION_KIND,
            title,
            body[:500],
            data,
            actor_account_id=actor.viewer.account_id,
            link_id=filing.link_id,
        )


async def _holder_may_hear(session: AsyncSession, filing: Filing) -> bool:
    """The family member who filed it hears of it only while their link is active with file-on-behalf."""
    if filing.link_id is None:
        return False
    link = await session.get(FamilyLink, filing.link_id, populate_existing=True)
    return (
        link is not None
        and link.holder_person_id == filing.filed_by_person_id
        and link.status == LinkStatus.ACTIVE.value
        and Permission.FILE_ON_BEHALF in link.granted()
    )


async def _transition(session: AsyncSession, filing: Filing, now: dt.datetime, **values: Any) -> None:
    """One conditional UPDATE on (id, version): a concurrent change makes this a CONFLICT."""
    result = await session.execute(
        update(Filing)
        .where(col(Filing.id) == filing.id, col(Filing.version) == filing.version)
        .values(**values, updated_at=now, version=filing.version + 1)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        await session.rollback()
        raise Conflict("该申请刚被他人处理，请刷新后重试", reason="concurrent_change")
    for key, value in {**values, "updated_at": now, "version": filing.version + 1}.items():
        setattr(filing, key, value)


# ------------------------------------------------------------------------------------ creating


def _canonical_digest(body: Mapping[str, Any]) -> str:
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def parse_client_id(value: str) -> str:
    try:
        parsed = uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        raise BadUserInput("请求编号须为UUID", field="input.clientId") from None
    if len(value) != 36:
        raise BadUserInput("请求编号须为UUID（8-4-4-4-12格式）", field="input.clientId")
    return str(parsed)


def _seal_bank_account(values: dict[str, Any], vault: BankAccountVault) -> bytes | None:
    account = values.get("bankAccount")
    if account is None or "accountNumber" not in account:
        return None
    number = account.pop("accountNumber")
    account["accountNumberMasked"] = mask(number)
    return vault.encrypt(number)


async def _validate(ctx: Context, kind: Kind, raw: Any) -> dict[str, Any]:
    values: dict[str, Any] = kind.spec.parse(raw, ctx.path)
    await kind.check(ctx, values)
    return values


INVOICE_SUBMITTED = "该发票号码已提交过报销申请，不能重复报销"
"""Says nothing of the filing that holds it (whose, which, in what state)."""


async def _invoices_free(
    session: AsyncSession, kind: Kind, values: Mapping[str, Any], path: str, filing_id: int | None
) -> None:
    """A friendly early answer naming the visit; the primary key on filing_invoices is what decides.
    Only submitted filings hold invoices: a draft claims nothing."""
    numbers = kind.invoices(values)
    if not numbers:
        return
    taken = await session.execute(
        select(col(FilingInvoice.invoice_number), col(FilingInvoice.filing_id)).where(
            col(FilingInvoice.invoice_number).in_(numbers)
        )
    )
    used = {number for number, owner in taken if owner != filing_id}
    for i, number in enumerate(numbers):
        if number in used:
            raise Conflict(
                INVOICE_SUBMITTED,
                field=f"{path}.visits[{i}].invoiceNumber",
                reason="invoice_used",
            )


async def _claim_invoices(
    session: AsyncSession, filing: Filing, numbers: Sequence[str], path: str, now: dt.datetime
) -> None:
    """Claimed on submission (and again on a resubmission): the primary key decides under races."""
    assert filing.id is not None
    await session.execute(delete(FilingInvoice).where(col(FilingInvoice.filing_id) == filing.id))
    if not numbers:
        return
    session.add_all(FilingInvoice(invoice_number=n, filing_id=filing.id, created_at=now) for n in numbers)
    try:
        await session.flush()
    except IntegrityError:
        # Another filing claimed one of them between our look-up and this insert (any worker).
        await session.rollback()
        raise Conflict(INVOICE_SUBMITTED, field=f"{path}.visits", reason="invoice_used") from None


async def _claim_birth(
    session: AsyncSession, kind: Kind, filing: Filing, values: Mapping[str, Any], path: str, now: dt.datetime
) -> None:
    """One maternity allowance per birth (person, delivery date), held from creation until the filing is
    withdrawn or rejected: the primary key on filing_births decides, under races too."""
    assert filing.id is not None
    day = kind.birth(values)
    if day is None:
        return
    await session.execute(delete(FilingBirth).where(col(FilingBirth.filing_id) == filing.id))
    session.add(
        FilingBirth(person_id=filing.person_id, delivery_date=day, filing_id=filing.id, created_at=now)
    )
    try:
        await session.flush()
    except IntegrityError:
        await session.rollback()
        raise Conflict(
            "该次生育已申领过生育津贴，不能重复申领", field=f"{path}.deliveryDate", reason="birth_claimed"
        ) from None


async def _release_claims(session: AsyncSession, filing: Filing) -> None:
    """What a filing that ends without payment (withdrawn, rejected) held: its invoices and its birth."""
    await session.execute(delete(FilingInvoice).where(col(FilingInvoice.filing_id) == filing.id))
    await session.execute(delete(FilingBirth).where(col(FilingBirth.filing_id) == filing.id))


async def _repeat(session: AsyncSession, viewer: Viewer, client_id: str, digest: str) -> Filing | None:
    existing = (
        await session.execute(select(Filing).where(col(Filing.client_id) == client_id))
    ).scalar_one_or_none()
    if existing is None:
        return None
    if existing.filed_by_account_id != viewer.account_id or existing.request_digest != digest:
        raise Conflict(
            "该请求编号已用于另一份申请，请使用新的编号", field="input.clientId", reason="client_id_reused"
        )
    return existing


async def _repeated(session: AsyncSession, viewer: Viewer, link: FamilyLink | None, found: Filing) -> Filing:
    """The answer to a repeated create, authorised by the caller; on a relative's record when through a link."""
    if link is not None:
        family.audit(session, viewer, link, "filing:create", f"repeated request: filing {found.id}")
        await session.commit()
    return found


async def create(
    session: AsyncSession,
    vault: BankAccountVault,
    viewer: Viewer,
    *,
    client_id: str,
    kind_code: str,
    fields: Any,
    link_id: str | None = None,
    submit_now: bool = False,
    now: dt.datetime | None = None,
) -> Filing:
    """A draft (or, with `submit_now`, a submitted filing) for me or, through `link_id`, for a relative.

    Idempotent on the client-made `client_id`: a repeat of the same request returns the same filing, a
    repeat with another body is a CONFLICT. The unique constraint on client_id decides under races."""
    now = now or utcnow()
    client_id = parse_client_id(client_id)
    kind = kind_of(kind_code)
    digest = _canonical_digest({"kind": kind.code, "linkId": link_id, "fields": fields, "submit": submit_now})

    # Authorised first, exactly as a fresh create: a repeat answers the filing, so a link that has
    # ended (or lost file-on-behalf) must not read it back through a remembered client id.
    link: FamilyLink | None = None
    if link_id is not None:
        link = await family.require_link(
            session, viewer, parse_id(link_id, "input.linkId"), Permission.FILE_ON_BEHALF
        )
        person_id = link.relative_person_id
    elif viewer.person_id is None:
        raise NotFound("账号尚未绑定参保人，请先完成实名认证")
    else:
        person_id = viewer.person_id
    found = await _repeat(session, viewer, client_id, digest)
    if found is not None:
        return await _repeated(session, viewer, link, found)
    person = await _person(session, person_id)
    ctx = Context(session, person, local_today(now))
    values = await _validate(ctx, kind, fields)
    await _invoices_free(session, kind, values, ctx.path, None)
    computed = await kind.compute(ctx, values)
    cipher = _seal_bank_account(values, vault)
    filing = Filing(
        client_id=client_id,
        request_digest=digest,
        kind=kind.code,
        person_id=person_id,
        region_code=person.region_code,
        filed_by_account_id=viewer.account_id,
        filed_by_person_id=viewer.person_id,
        link_id=link.id if link is not None else None,
        status=FilingStatus.DRAFT.value,
        fields=kind.spec.dump(values),
        bank_account_cipher=cipher,
        amount_fen=computed.amount_fen if computed else None,
        computation=computed.details if computed else None,
        created_at=now,
        updated_at=now,
    )
    session.add(filing)
    try:
        await session.flush()
    except IntegrityError:
        await session.rollback()  # the same client id, committed by a concurrent repeat
        found = await _repeat(session, viewer, client_id, digest)
        if found is None:
            raise
        if link is not None:
            link = await family.require_link(session, viewer, link.id or 0, Permission.FILE_ON_BEHALF)
        return await _repeated(session, viewer, link, found)
    await _claim_birth(session, kind, filing, values, ctx.path, now)
    actor = Actor(viewer, "filer")
    if link is not None:
        actor = Actor(viewer, "holder", link)
        family.audit(session, viewer, link, "filing:create", f"{kind.label} filing {filing.id}")
    _event(session, filing, actor, "create", None, now)
    await changelog.record(session, _changes(filing))
    if link is not None:
        await _notify(session, filing, actor, "create", None)
    if submit_now:
        await _submit(session, vault, actor, filing, None, now, stored_path="input.fields")
    await session.commit()
    return filing


# ---------------------------------------------------------------------------------- submitting


async def _uploaded(session: AsyncSession, filing: Filing, materials_round: int | None = None) -> set[str]:
    filters = [col(FilingAttachment.filing_id) == filing.id]
    if materials_round is not None:
        filters.append(col(FilingAttachment.materials_round) == materials_round)
    rows = await session.execute(select(col(FilingAttachment.material)).where(*filters).distinct())
    return set(rows.scalars())


def _stored_values(kind: Kind, filing: Filing) -> dict[str, Any]:
    loaded: dict[str, Any] = kind.spec.load(filing.fields)
    return loaded


async def edit_draft(
    session: AsyncSession,
    vault: BankAccountVault,
    viewer: Viewer,
    filing: Filing,
    fields: Any,
    *,
    path: str,
    now: dt.datetime | None = None,
) -> None:
    """A draft's fields replaced, validated and computed as a create would; a bank account left as
    the draft shows it (masked) stays the stored one. `path` names the fields in errors (the mobile
    replication's push row). Edits are not notified: the person heard when a relative made the draft,
    and hears again when it is submitted."""
    now = now or utcnow()
    if not isinstance(fields, Mapping):
        raise BadUserInput("申请内容须为对象", field=path)
    actor = await acting_for(session, viewer, filing.person_id, "filing:edit", f"filing {filing.id}")
    kind = KINDS[filing.kind]
    person = await session.get(InsuredPerson, filing.person_id)
    assert person is not None
    ctx = Context(session, person, local_today(now), path=path)
    merged = dict(fields)
    cipher = filing.bank_account_cipher
    if "bankAccount" in merged and merged["bankAccount"] == filing.fields.get("bankAccount"):
        merged.pop("bankAccount")
        stored = _stored_values(kind, filing)
        values = await _validate_partial(ctx, kind, merged, keep=stored.get("bankAccount"))
    else:
        values = await _validate(ctx, kind, merged)
        cipher = _seal_bank_account(values, vault)
    await _invoices_free(session, kind, values, path, filing.id)  # as create answers early
    computed = await kind.compute(ctx, values)
    await _transition(
        session,
        filing,
        now,
        fields=kind.spec.dump(values),
        bank_account_cipher=cipher,
        amount_fen=computed.amount_fen if computed else None,
        computation=computed.details if computed else None,
    )
    await _claim_birth(session, kind, filing, values, path, now)
    _event(session, filing, actor, "edit", filing.status, now)
    await changelog.record(session, _changes(filing))
    await session.commit()


async def _submit(
    session: AsyncSession,
    vault: BankAccountVault,
    actor: Actor,
    filing: Filing,
    changes: Mapping[str, Any] | None,
    now: dt.datetime,
    *,
    stored_path: str = "fields",
) -> None:
    """`stored_path` names the stored fields in errors (a submission without changes)."""
    kind = KINDS[filing.kind]
    path = "changes" if changes else stored_path
    person = await _person(session, filing.person_id)
    ctx = Context(session, person, local_today(now), path="changes")
    was = filing.status
    if was == FilingStatus.DRAFT.value:
        allowed: set[str] | None = None
        materials_round = None
    else:  # needs materials: only what was asked may change, and all of it must come
        asked = {item["code"] for item in filing.requested}
        allowed = asked & set(kind.spec.fields)
        materials_round = filing.materials_round
    values = _stored_values(kind, filing)
    cipher = filing.bank_account_cipher
    if changes:
        if not isinstance(changes, Mapping):
            raise BadUserInput("修改内容须为对象", field="changes")
        for name in changes:
            if name not in kind.spec.fields:
                raise BadUserInput(f"不认识的字段：{str(name)[:40]}", field=f"changes.{str(name)[:40]}")
            if allowed is not None and name not in allowed:
                raise BadUserInput("补正时只能修改经办人员要求补正的内容", field=f"changes.{name}")
        merged = {**kind.spec.dump(values), **changes}
        if "bankAccount" in merged and "bankAccount" not in changes:
            merged.pop("bankAccount")  # stored masked: only a new account replaces it
            merged_values = await _validate_partial(ctx, kind, merged, keep=values.get("bankAccount"))
        else:
            merged_values = await _validate(ctx, kind, merged)
            if "bankAccount" in changes:
                cipher = _seal_bank_account(merged_values, vault)
        values = merged_values
    missing: list[str] = []
    uploaded = await _uploaded(session, filing, materials_round)
    if allowed is None:
        for code in kind.required_materials(values):
            if code not in uploaded:
                material = kind.material(code)
                missing.append(material.label if material else code)
    else:
        for item in filing.requested:
            code = item["code"]
            if code in kind.spec.fields:
                if not changes or code not in changes:
                    missing.append(kind.spec.fields[code].label)
            elif code not in uploaded:
                material = kind.material(code)
                missing.append(material.label if material else code)
        # The corrected fields may need a proof the original ones did not (a difficult birth, a
        # referral, an inpatient stay): whatever the fields now require must be attached, any round.
        attached = await _uploaded(session, filing)
        for code in kind.required_materials(values):
            material = kind.material(code)
            label = material.label if material else code
            if code not in attached and label not in missing:
                missing.append(label)
    if missing:
        # 一次告知 in both directions: everything still missing, at once.
        raise BadUserInput("以下材料尚未提供：" + "、".join(missing), field="attachments", missing=missing)
    if allowed is not None:
        # A proof an asked field might need (kind.depends) may be uploaded with the correction; if the
        # corrected fields do not need it, it was not asked for, and a resubmission adds only that.
        wanted = {item["code"] for item in filing.requested} | set(kind.required_materials(values))
        extra = sorted(uploaded - wanted)
        if extra:
            labels = [label_of(kind, code) for code in extra]
            raise BadUserInput(
                "补正时只能补充经办人员要求的材料，请删除：" + "、".join(labels),
                field="attachments",
                extra=labels,
            )
    await _invoices_free(session, kind, values, path, filing.id)
    computed = await kind.compute(ctx, values)
    stage = kind.stages[0] if allowed is None else kind.stage(filing.stage or "") or kind.stages[0]
    deadline = calendar.add_working_days(local_today(now), stage.limit_working_days)
    update_values: dict[str, Any] = {
        "status": FilingStatus.SUBMITTED.value if allowed is None else FilingStatus.RESUBMITTED.value,
        "stage": stage.code,
        "due_on": deadline.due_on,
        "due_estimated": deadline.estimated,
        "claimed_by_account_id": None,
        "claimed_at": None,
        "requested": [],
        "fields": kind.spec.dump(values),
        "bank_account_cipher": cipher,
        "amount_fen": computed.amount_fen if computed else None,
        "computation": computed.details if computed else None,
    }
    if allowed is None:
        update_values["submitted_at"] = now
    await _transition(session, filing, now, **update_values)
    # Invoices are held from submission on (a draft holds none); a birth from creation on, moved if
    # the delivery date changed.
    await _claim_invoices(session, filing, kind.invoices(values), path, now)
    if changes:
        await _claim_birth(session, kind, filing, values, "changes", now)
    action = "submit" if allowed is None else "resubmit"
    _event(session, filing, actor, action, was, now)
    await changelog.record(session, _changes(filing))
    await _notify(session, filing, actor, action, was)


async def _validate_partial(ctx: Context, kind: Kind, merged: dict[str, Any], keep: Any) -> dict[str, Any]:
    """Validates the merged fields when the stored (masked) bank account stays as it is."""
    required = kind.spec.required - {"bankAccount"}
    spec = type(kind.spec)(kind.spec.label, kind.spec.fields, required)
    values: dict[str, Any] = spec.parse(merged, ctx.path)
    await kind.check(ctx, values)
    if keep is not None:
        values["bankAccount"] = keep
    return values


async def submit(
    session: AsyncSession,
    vault: BankAccountVault,
    viewer: Viewer,
    filing_id: int | str,
    changes: Mapping[str, Any] | None = None,
    now: dt.datetime | None = None,
) -> Filing:
    """Submits a draft, or resubmits after 一次告知 (only what was asked). A repeat of a submission that
    already went through (no changes) returns the filing as it is."""
    now = now or utcnow()
    filing = await _get(session, filing_id)
    actor = await acting_for(session, viewer, filing.person_id, "filing:submit", f"filing {filing.id}")
    if filing.status in QUEUED and not changes:
        await session.commit()
        return filing  # the repeat of a submit that went through
    if filing.status not in (FilingStatus.DRAFT.value, FilingStatus.NEEDS_MATERIALS.value):
        label = STATUS_LABELS[filing.status]
        await session.rollback()
        raise Conflict(f"当前状态（{label}）不能提交", reason="invalid_transition")
    await _submit(session, vault, actor, filing, changes, now)
    await session.commit()
    return filing


async def withdraw(
    session: AsyncSession,
    viewer: Viewer,
    filing_id: int | str,
    reason: str | None,
    now: dt.datetime | None = None,
) -> Filing:
    now = now or utcnow()
    filing = await _get(session, filing_id)
    actor = await acting_for(session, viewer, filing.person_id, "filing:withdraw", f"filing {filing.id}")
    why = _reason(reason, "reason", required=False)
    if filing.status in FINAL:
        label = STATUS_LABELS[filing.status]
        await session.rollback()  # nothing of this attempt stays (the audit entry neither)
        raise Conflict(f"申请{label}，不能撤回", reason="invalid_transition")
    was = filing.status
    await _transition(
        session,
        filing,
        now,
        status=FilingStatus.WITHDRAWN.value,
        due_on=None,
        claimed_by_account_id=None,
        claimed_at=None,
        decided_at=now,
    )
    await _release_claims(session, filing)
    _event(session, filing, actor, "withdraw", was, now, reason=why)
    await changelog.record(session, _changes(filing))
    await _notify(session, filing, actor, "withdraw", was)
    await session.commit()
    return filing


# ----------------------------------------------------------------------------------- reviewers


async def _linked(session: AsyncSession, people: set[int]) -> set[int]:
    """Everyone at the other end of a family link with any of `people`, in any state: a request names a
    relationship, and unlinking ends the sharing of data, not the kinship."""
    if not people:
        return set()
    rows = await session.execute(
        select(col(FamilyLink.holder_person_id), col(FamilyLink.relative_person_id)).where(
            or_(col(FamilyLink.holder_person_id).in_(people), col(FamilyLink.relative_person_id).in_(people))
        )
    )
    return {other for pair in rows for other in pair} - people


async def _households(session: AsyncSession, people: set[int]) -> set[int]:
    rows = await session.execute(
        select(col(InsuredPerson.household_id)).where(
            col(InsuredPerson.id).in_(people), col(InsuredPerson.household_id).is_not(None)
        )
    )
    return {h for h in rows.scalars() if h is not None}


async def _check_reviewer(session: AsyncSession, viewer: Viewer, filing: Filing) -> None:
    """No one reviews their own or their family's filings, nor decides two stages of one filing.

    Family (回避, as for spouses, direct kin and close in-laws) is what the records show: the reviewer's
    household (户), anyone linked to the reviewer by a family link in any state, anyone linked to those
    (a spouse's parent, a parent's other child, a grandparent), and the households of the reviewer's
    direct links; checked against the filing's person and whoever filed it. A reviewer login with no
    insured person of its own can only be matched by account; kin the records do not show cannot be."""
    involved = {filing.person_id, *([filing.filed_by_person_id] if filing.filed_by_person_id else [])}
    if viewer.account_id == filing.filed_by_account_id or viewer.person_id in involved:
        raise Forbidden("不能审核本人的申请", reason="own_filing")
    if viewer.person_id is not None:
        me = {viewer.person_id}
        near = me | await _linked(session, me)
        kin = near | await _linked(session, near)
        if kin & involved or await _households(session, near) & await _households(session, involved):
            raise Forbidden("不能审核亲属的申请（回避）", reason="family_filing")
    # The same person through another reviewer login is the same reviewer.
    by_me = col(FilingEvent.actor_account_id) == viewer.account_id
    if viewer.person_id is not None:
        by_me = or_(by_me, col(Account.person_id) == viewer.person_id)
    decided = await session.execute(
        select(func.count())
        .select_from(FilingEvent)
        .join(Account, col(Account.id) == col(FilingEvent.actor_account_id))
        .where(
            col(FilingEvent.filing_id) == filing.id,
            col(FilingEvent.action).in_(STAGE_DECISIONS),
            by_me,
        )
    )
    if decided.scalar_one():
        raise Forbidden("同一申请的不同审核环节须由不同人员办理", reason="second_stage")


async def claim(
    session: AsyncSession, viewer: Viewer, filing_id: int | str, now: dt.datetime | None = None
) -> Filing:
    """Takes the filing's current stage: one conditional UPDATE ... WHERE claimed_by IS NULL, so of two
    reviewers claiming at once (any workers) exactly one gets it and the other a CONFLICT."""
    now = now or utcnow()
    actor = _staff(viewer)
    filing = await _get(session, filing_id)
    if filing.status not in QUEUED:
        raise Conflict(f"当前状态（{STATUS_LABELS[filing.status]}）不能领取", reason="invalid_transition")
    await _check_reviewer(session, viewer, filing)
    if filing.claimed_by_account_id == viewer.account_id:
        return filing
    was = filing.status
    result = await session.execute(
        update(Filing)
        .where(
            col(Filing.id) == filing.id,
            col(Filing.claimed_by_account_id).is_(None),
            col(Filing.status).in_(QUEUED),
        )
        .values(
            claimed_by_account_id=viewer.account_id,
            claimed_at=now,
            status=FilingStatus.IN_REVIEW.value,
            updated_at=now,
            version=col(Filing.version) + 1,
        )
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        await session.rollback()
        raise Conflict("该申请已被其他经办人员领取", reason="already_claimed")
    filing = await _get(session, filing.id or 0)
    _event(session, filing, actor, "claim", was, now)
    await changelog.record(session, _changes(filing))
    if was != FilingStatus.IN_REVIEW.value:
        await _notify(session, filing, actor, "claim", was)
    await session.commit()
    return filing


async def release(
    session: AsyncSession, viewer: Viewer, filing_id: int | str, now: dt.datetime | None = None
) -> Filing:
    """Hands the stage back to the queue: the claimer, or an admin for anyone's claim."""
    now = now or utcnow()
    actor = _staff(viewer)
    filing = await _get(session, filing_id)
    if filing.claimed_by_account_id is None:
        return filing
    if filing.claimed_by_account_id != viewer.account_id and viewer.role != Role.ADMIN.value:
        raise Forbidden("只能退回本人领取的申请", reason="not_claimed")
    result = await session.execute(
        update(Filing)
        .where(col(Filing.id) == filing.id, col(Filing.claimed_by_account_id) == filing.claimed_by_account_id)
        .values(claimed_by_account_id=None, claimed_at=None, updated_at=now, version=col(Filing.version) + 1)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        await session.rollback()
        raise Conflict("该申请刚被他人处理，请刷新后重试", reason="concurrent_change")
    filing = await _get(session, filing.id or 0)
    _event(session, filing, actor, "release", filing.status, now)
    await changelog.record(session, _changes(filing))
    await session.commit()
    return filing


@dataclass(frozen=True)
class MissingItem:
    code: str
    note: str | None = None


def _missing(kind: Kind, items: Sequence[MissingItem] | None) -> list[dict[str, Any]]:
    if not items:
        raise BadUserInput("请列出需要补充的全部材料（一次告知）", field="missing")
    if len(items) > MAX_MISSING:
        raise BadUserInput(f"最多列出{MAX_MISSING}项", field="missing")
    out: dict[str, dict[str, Any]] = {}
    for i, item in enumerate(items):
        field = f"missing[{i}]"
        if kind.material(item.code) is None and item.code not in kind.spec.fields:
            raise BadUserInput("不是该类申请的材料或填写项", field=f"{field}.code")
        note = (item.note or "").strip() or None
        if note is not None and len(note) > MAX_NOTE:
            raise BadUserInput(f"说明最多{MAX_NOTE}个字", field=f"{field}.note")
        out[item.code] = {"code": item.code, "note": note}
    return list(out.values())


def label_of(kind: Kind, code: str) -> str:
    material = kind.material(code)
    if material is not None:
        return material.label
    spec = kind.spec.fields.get(code)
    return spec.label if spec is not None else code


async def decide(
    session: AsyncSession,
    viewer: Viewer,
    filing_id: int | str,
    decision: str,
    reason: str | None,
    missing: Sequence[MissingItem] | None = None,
    now: dt.datetime | None = None,
) -> Filing:
    """The claimer's decision on the current stage: approve (the next stage, or approval at the last,
    with its effects), reject, or ask for materials, listing everything missing at once."""
    now = now or utcnow()
    actor = _staff(viewer)
    filing = await _get(session, filing_id)
    if decision not in DECISIONS:
        raise BadUserInput("决定须为通过、不通过或补充材料", field="decision")
    if filing.status not in QUEUED:
        raise Conflict(f"当前状态（{STATUS_LABELS[filing.status]}）不能审核决定", reason="invalid_transition")
    if filing.claimed_by_account_id != viewer.account_id:
        raise Forbidden("须先领取该申请才能作出决定", reason="not_claimed")
    await _check_reviewer(session, viewer, filing)
    kind = KINDS[filing.kind]
    stage = kind.stage(filing.stage or "")
    assert stage is not None
    was = filing.status
    why = _reason(reason, "reason", required=decision != "approve")
    if decision == "needs_materials":
        asked = _missing(kind, missing)
        await _transition(
            session,
            filing,
            now,
            status=FilingStatus.NEEDS_MATERIALS.value,
            due_on=None,
            due_estimated=False,
            claimed_by_account_id=None,
            claimed_at=None,
            requested=asked,
            materials_round=filing.materials_round + 1,
        )
        _event(session, filing, actor, "needs_materials", was, now, reason=why, missing=asked)
        listed = "、".join(
            label_of(kind, item["code"]) + (f"（{item['note']}）" if item["note"] else "") for item in asked
        )
        await _notify(session, filing, actor, "needs_materials", was, missing=listed)
    elif decision == "reject":
        await _transition(
            session,
            filing,
            now,
            status=FilingStatus.REJECTED.value,
            due_on=None,
            claimed_by_account_id=None,
            claimed_at=None,
            decided_at=now,
            decision_reason=why,
        )
        await _release_claims(session, filing)
        _event(session, filing, actor, "reject", was, now, reason=why)
        await _notify(session, filing, actor, "reject", was, reason=why or "")
    else:
        following = kind.next_stage(stage.code)
        if following is not None:
            deadline = calendar.add_working_days(local_today(now), following.limit_working_days)
            await _transition(
                session,
                filing,
                now,
                status=FilingStatus.IN_REVIEW.value,
                stage=following.code,
                due_on=deadline.due_on,
                due_estimated=deadline.estimated,
                claimed_by_account_id=None,
                claimed_at=None,
            )
            _event(session, filing, actor, "advance", was, now, reason=why)
            await _notify(session, filing, actor, "advance", was, done=stage.label)
        else:
            person = await _person(session, filing.person_id)
            ctx = Context(session, person, local_today(now))
            values = _stored_values(kind, filing)
            await kind.approve(ctx, filing, values)  # may refresh amount_fen and computation
            await _transition(
                session,
                filing,
                now,
                status=FilingStatus.APPROVED.value,
                stage=None,
                due_on=None,
                claimed_by_account_id=None,
                claimed_at=None,
                decided_at=now,
                decision_reason=why,
                amount_fen=filing.amount_fen,
                computation=filing.computation,
            )
            _event(session, filing, actor, "approve", was, now, reason=why)
            await _notify(session, filing, actor, "approve", was, reason=why or "")
    await changelog.record(session, _changes(filing))
    await session.commit()
    return filing


@dataclass(frozen=True)
class BankAccount:
    bank_name: str
    account_name: str
    account_number: str


PAYMENT_STAGE = "payment"
REVEAL_ACTION = "reveal:bank_account"


async def reveal_bank_account(
    session: AsyncSession,
    vault: BankAccountVault,
    viewer: Viewer,
    filing_id: int | str,
    now: dt.datetime | None = None,
) -> BankAccount:
    """The whole payout account, for the reviewer who claimed the payment stage (财务支付) and must pay
    it out; every other answer carries only the mask. Each reveal goes into the person's access audit
    (who, when, which filing), committed before the number leaves."""
    now = now or utcnow()
    _staff(viewer)
    filing = await _get(session, filing_id)
    if filing.stage != PAYMENT_STAGE or filing.status != FilingStatus.IN_REVIEW.value:
        raise Forbidden("只有财务支付环节可以查看完整的收款账号", reason="not_payment_stage")
    if filing.claimed_by_account_id != viewer.account_id:
        raise Forbidden("须先领取该申请的财务支付环节", reason="not_claimed")
    await _check_reviewer(session, viewer, filing)
    stored = (filing.fields or {}).get("bankAccount")
    if filing.bank_account_cipher is None or not isinstance(stored, Mapping):
        raise NotFound("该申请没有收款账号")
    number = vault.decrypt(filing.bank_account_cipher)
    session.add(
        AccessAudit(
            person_id=filing.person_id,
            occurred_at=now,
            actor_account_id=viewer.account_id,
            actor_person_id=None,  # staff: the entry names the reviewer's account, not a relative
            action=REVEAL_ACTION,
            detail=f"filing {filing.id}: {KINDS[filing.kind].label} 财务支付",
        )
    )
    await session.commit()
    return BankAccount(str(stored.get("bankName", "")), str(stored.get("accountName", "")), number)


# ------------------------------------------------------------------------------------- listing


def _keyset_page(
    rows: list[Filing], limit: int, cursors: CursorCodec, scope: str, key: Any, count_query: Any
) -> Page[Filing]:
    has_next = len(rows) > limit
    rows = rows[:limit]
    return Page(
        rows=rows,
        cursors=[cursors.encode(scope, key(row)) for row in rows],
        has_next_page=has_next,
        count_query=count_query,
    )


async def list_for_person(
    session: AsyncSession,
    cursors: CursorCodec,
    viewer: Viewer,
    *,
    link_id: str | None,
    first: int | None,
    after: str | None,
    status: str | None = None,
    kind: str | None = None,
) -> Page[Filing]:
    """My filings (those filed on my behalf included), or with `link_id` a relative's (audited)."""
    if link_id is not None:
        link = await family.access_checked(
            session, viewer, link_id, Permission.FILE_ON_BEHALF, "read:filings"
        )
        person_id = link.relative_person_id
    elif viewer.person_id is None:
        raise NotFound("账号尚未绑定参保人，请先完成实名认证")
    else:
        person_id = viewer.person_id
    limit = page_size(first)
    filters: list[ColumnElement[bool]] = [col(Filing.person_id) == person_id]
    if status is not None:
        filters.append(col(Filing.status) == status)
    if kind is not None:
        filters.append(col(Filing.kind) == kind)
    scope = f"filings:{person_id}:{status}:{kind}"
    page_filters = list(filters)
    if after is not None:
        key = cursors.decode(scope, after)
        if len(key) != 1 or not isinstance(key[0], int) or isinstance(key[0], bool):
            raise BadUserInput("分页游标无效", field="after")
        page_filters.append(col(Filing.id) < key[0])
    rows = list(
        (
            await session.execute(
                select(Filing).where(*page_filters).order_by(col(Filing.id).desc()).limit(limit + 1)
            )
        ).scalars()
    )
    return _keyset_page(
        rows,
        limit,
        cursors,
        scope,
        lambda r: [r.id],
        select(func.count()).select_from(Filing).where(*filters),
    )


@dataclass(frozen=True)
class QueueFilter:
    kind: str | None = None
    region: str | None = None
    status: str | None = None
    stage: str | None = None
    due_before: dt.date | None = None
    """Due on or before this date (Asia/Shanghai)."""
    overdue: bool = False
    """Only filings past their deadline (due before today)."""
    claimed: str | None = None
    """`mine`, `unclaimed`, or None for both."""


def queue_filters(flt: QueueFilter, viewer: Viewer, today: dt.date) -> list[ColumnElement[bool]]:
    filters: list[ColumnElement[bool]] = [col(Filing.due_on).is_not(None)]
    if flt.kind is not None:
        filters.append(col(Filing.kind) == flt.kind)
    if flt.region is not None:
        filters.append(col(Filing.region_code) == flt.region)
    if flt.status is not None:
        if flt.status not in QUEUED:
            raise BadUserInput("待办队列只含已提交、审核中、已补充材料的申请", field="filter.status")
        filters.append(col(Filing.status) == flt.status)
    if flt.stage is not None:
        filters.append(col(Filing.stage) == flt.stage)
    if flt.due_before is not None:
        filters.append(col(Filing.due_on) <= flt.due_before)
    if flt.overdue:
        filters.append(col(Filing.due_on) < today)
    if flt.claimed == "mine":
        filters.append(col(Filing.claimed_by_account_id) == viewer.account_id)
    elif flt.claimed == "unclaimed":
        filters.append(col(Filing.claimed_by_account_id).is_(None))
    return filters


def queue_statement(
    filters: Sequence[ColumnElement[bool]], after: tuple[dt.date, int] | None, limit: int
) -> Any:
    """The queue page: filtered, by deadline then id, keyset after (due_on, id)."""
    page_filters = list(filters)
    if after is not None:
        page_filters.append(tuple_(col(Filing.due_on), col(Filing.id)) > tuple_(after[0], after[1]))
    return select(Filing).where(*page_filters).order_by(col(Filing.due_on), col(Filing.id)).limit(limit + 1)


async def review_queue(
    session: AsyncSession,
    cursors: CursorCodec,
    viewer: Viewer,
    flt: QueueFilter,
    *,
    first: int | None,
    after: str | None,
    now: dt.datetime | None = None,
) -> Page[Filing]:
    """Filings waiting for (or with) a reviewer, earliest deadline first."""
    _staff(viewer)
    today = local_today(now or utcnow())
    limit = page_size(first)
    filters = queue_filters(flt, viewer, today)
    scope = (
        "queue:" + _canonical_digest({**flt.__dict__, "me": viewer.account_id if flt.claimed else None})[:16]
    )
    position: tuple[dt.date, int] | None = None
    if after is not None:
        key = cursors.decode(scope, after)
        try:
            position = (dt.date.fromisoformat(key[0]), int(key[1]))
        except (TypeError, ValueError, IndexError):
            raise BadUserInput("分页游标无效", field="after") from None
    rows = list((await session.execute(queue_statement(filters, position, limit))).scalars())
    return _keyset_page(
        rows,
        limit,
        cursors,
        scope,
        lambda r: [r.due_on.isoformat() if r.due_on else None, r.id],
        select(func.count()).select_from(Filing).where(*filters),
    )


async def events(session: AsyncSession, filing_id: int) -> Sequence[FilingEvent]:
    return (
        (
            await session.execute(
                select(FilingEvent)
                .where(col(FilingEvent.filing_id) == filing_id)
                .order_by(col(FilingEvent.id))
            )
        )
        .scalars()
        .all()
    )


async def attachments(session: AsyncSession, filing_id: int) -> Sequence[FilingAttachment]:
    return (
        (
            await session.execute(
                select(FilingAttachment)
                .where(col(FilingAttachment.filing_id) == filing_id)
                .order_by(col(FilingAttachment.id))
            )
        )
        .scalars()
        .all()
    )


# --------------------------------------------------------------------------------- attachments


async def check_upload(
    session: AsyncSession, viewer: Viewer, filing_id: int | str, material: str
) -> tuple[Filing, Actor]:
    """Before any byte is stored: who may add which material to the filing now."""
    filing = await _get(session, filing_id, "filingId")
    actor = await acting_for(
        session, viewer, filing.person_id, "filing:upload", f"filing {filing.id}: {material[:40]}"
    )
    kind = KINDS[filing.kind]
    if kind.material(material) is None:
        raise BadUserInput("不是该类申请的材料", field="material")
    if filing.status == FilingStatus.NEEDS_MATERIALS.value:
        asked = {item["code"] for item in filing.requested}
        # A field asked for may change what proof is needed: that proof may come with the correction.
        dependent = {code for name in asked for code in kind.depends.get(name, frozenset())}
        if material not in asked | dependent:
            raise BadUserInput("补正时只能上传经办人员要求补充的材料", field="material")
    elif filing.status != FilingStatus.DRAFT.value:
        raise Conflict(f"当前状态（{STATUS_LABELS[filing.status]}）不能上传材料", reason="invalid_transition")
    count = await session.execute(
        select(func.count()).select_from(FilingAttachment).where(col(FilingAttachment.filing_id) == filing.id)
    )
    if count.scalar_one() >= MAX_ATTACHMENTS:
        raise Conflict(f"每份申请最多{MAX_ATTACHMENTS}个附件", field="file", reason="too_many_attachments")
    return filing, actor


async def add_attachment(
    session: AsyncSession,
    viewer: Viewer,
    filing_id: int | str,
    *,
    material: str,
    filename: str,
    content_type: str,
    size_bytes: int,
    sha256: str,
    storage_key: str,
    now: dt.datetime | None = None,
) -> FilingAttachment:
    """Records a stored attachment, re-checking the rules inside the transaction; the count limit holds
    under concurrent uploads because the filing's version is bumped by the same conditional UPDATE."""
    now = now or utcnow()
    filing, _ = await check_upload(session, viewer, filing_id, material)
    await _transition(session, filing, now)
    row = FilingAttachment(
        filing_id=filing.id or 0,
        material=material,
        filename=filename[:120] or "attachment",
        content_type=content_type,
        size_bytes=size_bytes,
        sha256=sha256,
        storage_key=storage_key,
        materials_round=filing.materials_round,
        uploaded_by_account_id=viewer.account_id,
        created_at=now,
    )
    session.add(row)
    await session.flush()
    await changelog.record(session, _changes(filing))
    await session.commit()
    return row


async def remove_attachment(
    session: AsyncSession,
    viewer: Viewer,
    filing_id: int | str,
    attachment_id: int | str,
    now: dt.datetime | None = None,
) -> FilingAttachment:
    """The filer (or their family member with file-on-behalf, audited) takes back an attachment not yet
    submitted: any of a draft's, or one of the current round while materials are asked for. What a
    reviewer has seen stays. Returns the removed row; the caller deletes its bytes after the commit."""
    now = now or utcnow()
    filing = await _get(session, filing_id, "filingId")
    await acting_for(
        session,
        viewer,
        filing.person_id,
        "filing:remove_attachment",
        f"filing {filing.id} attachment {attachment_id}",
    )
    row = await session.get(FilingAttachment, parse_id(attachment_id, "attachmentId"))
    if row is None or row.filing_id != filing.id:
        await session.rollback()
        raise NotFound("未找到该附件")
    open_round = filing.status == FilingStatus.DRAFT.value or (
        filing.status == FilingStatus.NEEDS_MATERIALS.value and row.materials_round == filing.materials_round
    )
    if not open_round:
        await session.rollback()
        raise Conflict("已提交的材料不能删除", reason="invalid_transition")
    await _transition(session, filing, now)  # a concurrent submission makes this a CONFLICT
    await session.delete(row)
    await changelog.record(session, _changes(filing))
    await session.commit()
    return row


async def kind_for(session: AsyncSession, filing_id: int) -> str:
    found = await session.execute(select(col(Filing.kind)).where(col(Filing.id) == filing_id))
    return str(found.scalar_one())


async def attachment_for_download(
    session: AsyncSession, viewer: Viewer, filing_id: int | str, attachment_id: int | str
) -> FilingAttachment:
    """The filer, their family member with file-on-behalf (audited), and reviewers; anyone else 404."""
    filing = await _get(session, filing_id, "filingId")
    if viewer.role in (Role.REVIEWER.value, Role.ADMIN.value):
        pass
    else:
        await acting_for(
            session,
            viewer,
            filing.person_id,
            "read:attachment",
            f"filing {filing.id} attachment {attachment_id}",
        )
    row = await session.get(FilingAttachment, parse_id(attachment_id, "attachmentId"))
    if row is None or row.filing_id != filing.id:
        await session.rollback()
        raise NotFound("未找到该附件")
    await session.commit()
    return row
