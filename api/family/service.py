"""Family links (亲情账户): proof, consent, permissions, unlinking, and the access audit.

Link state is read from the database on every request (never from a token or process memory), so a
narrowed permission or an unlink takes effect on the very next request in every worker.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable, Sequence
from datetime import date, datetime, timedelta

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from api import ids, ratelimit
from api.auth.models import Account, RateLimitWindow, Role
from api.auth.service import Viewer
from api.dbtypes import utcnow
from api.errors import BadUserInput, Conflict, Forbidden, NotFound, RateLimited
from api.family.models import (
    OPEN_STATUSES,
    AccessAudit,
    FamilyLink,
    LinkMethod,
    LinkStatus,
    Permission,
    Relationship,
)
from api.pagination import SHANGHAI, CursorCodec, Page
from api.people import idnumbers
from api.people import service as people
from api.people.idnumbers import IdNumberVault
from api.people.models import InsuredPerson
from api.replication import changelog
from api.settings import Settings
from api.vouchers import revocations

ADULT_AGE = 18
MIN_PARENT_GAP_YEARS = 14
"""How much older a parent must be than their child, in full years at the child's birth. The law sets no
minimum age for parenthood, and the links we hold include step-, adoptive and in-law parents, so this
is not the marriage age: it is the youngest age at which parenthood is plausible at all, low enough never
to refuse a real family yet high enough to refuse what the claim usually is when it fails (a sibling,
a spouse or a peer declared as a parent or child; the issue's 35-year-old "child" of a 40-year-old).
The relative's own confirmation, or a reviewer reading the evidence, still decides the rest."""
MARRIAGE_AGE = {"M": 22, "F": 20}
"""民法典 第1047条: 结婚年龄，男不得早于二十二周岁，女不得早于二十周岁. Both spouses must be of that age
now (they were at least that old when they married); the gender is the one the ID number encodes."""
PROOF_WINDOW_S = 3600
SYSTEM_ACTIONS = frozenset({"link_expired"})
"""Audit actions nobody took: the entry's account is the request's, but the actor shown is the system."""
ENTITY = "family_link"
AUDIT = people.RecordList("access_audit", AccessAudit, "occurred_at")


def person_of(viewer: Viewer) -> int:
    if viewer.person_id is None:
        raise NotFound("账号尚未绑定参保人，请先完成实名认证")
    return viewer.person_id


def parse_id(value: str | int, field: str = "linkId") -> int:
    return ids.parse_id(value, field)


def age_on(birth: date, day: date) -> int:
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))


def today(now: datetime) -> date:
    return now.astimezone(SHANGHAI).date()


def pair_key(a: int, b: int) -> str:
    low, high = sorted((a, b))
    return f"{low}:{high}"


def new_link_ref() -> str:
    return secrets.token_bytes(8).hex()


def _check_plausible(
    holder: InsuredPerson, relative: InsuredPerson, relationship: Relationship, day: date
) -> None:
    """The claimed relationship must fit the data we hold (birth dates and genders from the ID numbers,
    households), or the request is bad input. Checked for every method: a reviewer or the relative
    should never be asked to approve what the register already contradicts."""
    implausible = "所填关系与双方身份信息不符，请核对关系"
    if relationship in (Relationship.PARENT, Relationship.CHILD):
        parent, child = (relative, holder) if relationship == Relationship.PARENT else (holder, relative)
        if age_on(parent.birth_date, child.birth_date) < MIN_PARENT_GAP_YEARS:
            raise BadUserInput(implausible, field="relationship")
    elif relationship == Relationship.SPOUSE:
        for person in (holder, relative):
            if age_on(person.birth_date, day) < MARRIAGE_AGE.get(person.gender, max(MARRIAGE_AGE.values())):
                raise BadUserInput(implausible, field="relationship")
        if holder.gender == relative.gender:
            # 民法典 第1049条: a marriage is registered by a man and a woman (男女双方); the genders are
            # the ones the ID numbers encode.
            raise BadUserInput(
                "配偶关系须为一男一女（民法典第1049条），与双方身份信息不符，请核对关系",
                field="relationship",
                reason="spouse_same_gender",
            )
    elif relationship == Relationship.GUARDIAN and age_on(holder.birth_date, day) < ADULT_AGE:
        # 民法典 第27条: a minor's guardian is a parent or another adult able to act as one.
        raise BadUserInput("监护人须年满十八周岁", field="relationship")


async def _refund_proof_attempt(session: AsyncSession, key: str, window_start: int) -> None:
    """Gives back the attempt a right proof reserved: only failures count against the limit."""
    await session.execute(
        update(RateLimitWindow)
        .where(
            col(RateLimitWindow.key) == key,
            col(RateLimitWindow.window_start) == window_start,
            col(RateLimitWindow.count) > 0,
        )
        .values(count=col(RateLimitWindow.count) - 1)
    )
    await session.commit()


async def _prove(
    session: AsyncSession, vault: IdNumberVault, settings: Settings, viewer: Viewer, name: str, id_number: str
) -> InsuredPerson:
    """The relative whose name and ID number were given. Only failed proofs count against the limit
    (a family links a handful of people, an enumerator fails thousands of times), but once over it
    even a right guess is refused, so the limit cannot be walked around by guessing right.

    Every proof first reserves an attempt (an atomic increment, committed) and only then looks the
    person up; a right proof gives its attempt back. So however many guesses arrive at once, at most
    `limit` of them are ever looked up and answered as wrong: a burst cannot tell the right one apart.
    """
    key = f"family-proof:{viewer.account_id}"
    limit = settings.family_proof_failures_limit
    clock = time.time()
    try:
        lookup = vault.lookup_hash(id_number)  # the format alone reveals nothing: checked before counting
    except idnumbers.InvalidIdNumber:
        raise BadUserInput("身份证号码格式有误", field="idNumber") from None
    try:
        await ratelimit.hit(session, key, limit=limit, window_s=PROOF_WINDOW_S, now=clock)
    except RateLimited as exc:
        raise RateLimited("核验失败次数过多，请一小时后再试", **exc.extra) from None
    person = (
        await session.execute(select(InsuredPerson).where(col(InsuredPerson.id_number_hash) == lookup))
    ).scalar_one_or_none()
    if person is None or person.name != name.strip():
        # One message for "no such person" and "wrong name": no oracle for who is insured.
        raise BadUserInput("姓名与身份证号码不匹配，请核对后重试", field="idNumber")
    await _refund_proof_attempt(session, key[:128], int(clock) // PROOF_WINDOW_S * PROOF_WINDOW_S)
    return person


async def _has_own_login(session: AsyncSession, person_id: int) -> bool:
    found = await session.execute(
        select(col(Account.id)).where(
            col(Account.person_id) == person_id,
            col(Account.role) == Role.RESIDENT.value,
            col(Account.disabled).is_(False),
        )
    )
    return found.first() is not None


def _describe(permissions: set[Permission]) -> str:
    return ",".join(p.value for p in Permission if p in permissions) or "none"


def _changes(*links: tuple[int | None, int, int]) -> list[changelog.Change]:
    """Change-log entries of links (id, holder, relative): both sides replicate their links."""
    return [
        changelog.Change(ENTITY, str(link_id), changelog.person_scope(person))
        for link_id, holder, relative in links
        for person in sorted({holder, relative})
        if link_id is not None
    ]


async def logged(session: AsyncSession, *links: FamilyLink) -> None:
    """Records that these links changed, in the caller's transaction (the mini-program replicates them)."""
    await changelog.record(
        session, _changes(*((x.id, x.holder_person_id, x.relative_person_id) for x in links))
    )


def _audit_expiry(
    session: AsyncSession,
    link_id: int | None,
    relative_id: int,
    requested_by: int,
    what: str,
    expires_at: datetime | None,
) -> None:
    """The relative's audit records that a request in their name lapsed unanswered: written in the
    transaction that moves it from pending to expired, which happens once (the update's WHERE, or the
    row lock of _get_for_change), whichever read notices it first."""
    session.add(
        AccessAudit(
            person_id=relative_id,
            actor_account_id=requested_by,  # nobody acted: the account whose request it was
            actor_person_id=None,
            link_id=link_id,
            action="link_expired",
            detail=f"{what}: unanswered by {expires_at.isoformat() if expires_at else '-'}",
        )
    )


async def _expire_stale(session: AsyncSession, now: datetime, *conditions: object) -> None:
    expired = (
        await session.execute(
            update(FamilyLink)
            .where(
                col(FamilyLink.status) == LinkStatus.PENDING.value,
                col(FamilyLink.expires_at) < now,
                *conditions,  # type: ignore[arg-type]
            )
            .values(status=LinkStatus.EXPIRED.value, pair_key=None)
            .returning(
                col(FamilyLink.id),
                col(FamilyLink.holder_person_id),
                col(FamilyLink.relative_person_id),
                col(FamilyLink.requested_by_account_id),
                col(FamilyLink.method),
                col(FamilyLink.relationship),
                col(FamilyLink.expires_at),
            )
        )
    ).all()
    for link_id, _, relative, requested_by, method, relationship, expires_at in expired:
        _audit_expiry(session, link_id, relative, requested_by, f"{method} {relationship}", expires_at)
    await changelog.record(
        session, _changes(*((int(row[0] or 0), int(row[1]), int(row[2])) for row in expired))
    )


async def _lock_holder(session: AsyncSession, holder_id: int) -> InsuredPerson:
    """The holder's row, locked until commit (PostgreSQL): requests by one holder take turns from
    here, so counting open links and inserting the new one cannot interleave and beat the cap.
    FOR NO KEY UPDATE, not FOR UPDATE: inserting a link takes a key-share lock on both people
    (foreign keys), and two holders linking each other at once must not deadlock on that.
    SQLite ignores the clause; its single writer already serialises the count and the insert."""
    holder = (
        await session.execute(
            select(InsuredPerson)
            .where(col(InsuredPerson.id) == holder_id)
            .with_for_update(key_share=True)
            .execution_options(populate_existing=True)
        )
    ).scalar_one_or_none()
    if holder is None:
        raise NotFound("未找到参保人信息")
    return holder


async def request_link(
    session: AsyncSession,
    vault: IdNumberVault,
    settings: Settings,
    viewer: Viewer,
    *,
    relationship: Relationship,
    name: str,
    id_number: str,
    permissions: Iterable[Permission],
    proxy: bool = False,
    evidence: str | None = None,
    now: datetime | None = None,
) -> FamilyLink:
    now = now or utcnow()
    holder_id = person_of(viewer)
    wanted = set(permissions)
    if not wanted:
        raise BadUserInput("请至少申请一项权限", field="permissions")
    relative = await _prove(session, vault, settings, viewer, name, id_number)
    assert relative.id is not None
    if relative.id == holder_id:
        raise BadUserInput("不能关联本人", field="idNumber")
    holder = await _lock_holder(session, holder_id)

    minor = age_on(relative.birth_date, today(now)) < ADULT_AGE
    if relationship == Relationship.GUARDIAN and not minor:
        raise BadUserInput("监护关系仅适用于未成年人", field="relationship")
    _check_plausible(holder, relative, relationship, today(now))
    evidence = (evidence or "").strip() or None
    if minor:
        if relationship not in (Relationship.CHILD, Relationship.GUARDIAN):
            raise BadUserInput("未成年人只能以子女或被监护人身份关联", field="relationship")
        if holder.household_id is None or holder.household_id != relative.household_id:
            raise Forbidden("未成年人须与申请人同一户籍，方可由监护人关联", reason="not_same_household")
        method, status, expires_at = LinkMethod.HOUSEHOLD, LinkStatus.ACTIVE, None
    elif proxy:
        if await _has_own_login(session, relative.id):
            # Whoever can confirm for themselves must: a reviewer never consents in an adult's place.
            raise BadUserInput("对方已开通账号，须由本人在线确认，不能代办", field="proxy")
        if evidence is None:
            raise BadUserInput("代办申请须说明并上传证明材料", field="evidence")
        if len(evidence) > 500:
            raise BadUserInput("证明材料说明不能超过500字", field="evidence")
        method, status = LinkMethod.PROXY, LinkStatus.PENDING
        expires_at = now + timedelta(hours=settings.family_proxy_ttl_h)
    else:
        if not await _has_own_login(session, relative.id):
            raise BadUserInput("对方尚未开通账号，无法在线确认；请提交代办申请", field="proxy")
        method, status = LinkMethod.CONFIRMATION, LinkStatus.PENDING
        expires_at = now + timedelta(hours=settings.family_request_ttl_h)

    key = pair_key(holder_id, relative.id)
    await _expire_stale(session, now, col(FamilyLink.pair_key) == key)
    await _expire_stale(session, now, col(FamilyLink.holder_person_id) == holder_id)
    existing = (
        await session.execute(select(FamilyLink).where(col(FamilyLink.pair_key) == key))
    ).scalar_one_or_none()
    if existing is not None:
        cycle = existing.holder_person_id == relative.id
        await session.rollback()
        if cycle:
            raise Conflict("对方已将您关联为亲属，不能反向关联", reason="cycle")
        raise Conflict("已关联该亲属或已有待处理的申请", reason="duplicate")
    open_links = (
        await session.execute(
            select(func.count())
            .select_from(FamilyLink)
            .where(
                col(FamilyLink.holder_person_id) == holder_id,
                col(FamilyLink.status).in_(OPEN_STATUSES),
            )
        )
    ).scalar_one()
    if open_links >= settings.family_max_links:
        await session.rollback()
        raise Conflict(f"最多可关联{settings.family_max_links}位亲属", reason="cap_reached")

    link = FamilyLink(
        ref=new_link_ref(),
        holder_person_id=holder_id,
        relative_person_id=relative.id,
        relationship=relationship.value,
        method=method.value,
        status=status.value,
        pair_key=key,
        requested_by_account_id=viewer.account_id,
        evidence=evidence if method == LinkMethod.PROXY else None,
        created_at=now,
        expires_at=expires_at,
        decided_at=now if status == LinkStatus.ACTIVE else None,
    )
    link.set_wanted(wanted)
    if status == LinkStatus.ACTIVE:
        link.set_granted(wanted)  # a guardian acts for a minor in the household without consent
    session.add(link)
    try:
        await session.flush()
    except IntegrityError:
        # Another worker opened a link for the same pair between our check and our insert.
        await session.rollback()
        raise Conflict("已关联该亲属或已有待处理的申请", reason="duplicate") from None
    # The relative learns of every link made in their name, when it is made (a proxy request too).
    audit(
        session, viewer, link, "link_requested", f"{method.value} {relationship.value}: {_describe(wanted)}"
    )
    if status == LinkStatus.ACTIVE:
        audit(session, viewer, link, "link_granted", f"household: {_describe(wanted)}")
    await logged(session, link)
    await session.commit()
    return link


async def _get(session: AsyncSession, link_id: str | int) -> FamilyLink:
    link = await session.get(FamilyLink, parse_id(link_id), populate_existing=True)
    if link is None:
        raise NotFound("未找到该亲属关联")
    return link


async def _get_for_change(session: AsyncSession, link_id: str | int) -> FamilyLink:
    """The link, read inside a transaction that holds its row for writing until commit, so that two
    changes (an answer and a changed request, an unlink and an approval) take turns and each sees the
    other's outcome. A no-op UPDATE rather than SELECT ... FOR UPDATE: on PostgreSQL it locks the row
    (FOR NO KEY UPDATE, as inserting a link's key-share locks need), and on SQLite it takes the write
    lock before the read, so the read cannot be a snapshot older than a concurrent commit."""
    row_id = parse_id(link_id)
    await session.execute(
        update(FamilyLink)
        .where(col(FamilyLink.id) == row_id)
        .values(status=col(FamilyLink.status))
        .execution_options(synchronize_session=False)
    )
    return await _get(session, row_id)


def _permissions(values: Iterable[Permission] | None, limit: set[Permission]) -> set[Permission]:
    if values is None:
        return set(limit)
    chosen = set(values)
    if not chosen <= limit:
        raise BadUserInput("不能授予对方未申请的权限", field="permissions")
    return chosen


async def _lapse_if_due(session: AsyncSession, link: FamilyLink, now: datetime) -> bool:
    """Expires a pending request (read for change) whose time is up, audited and committed; True if so."""
    if link.status != LinkStatus.PENDING.value or link.expires_at is None or link.expires_at >= now:
        return False
    link.status, link.pair_key = LinkStatus.EXPIRED.value, None
    _audit_expiry(
        session,
        link.id,
        link.relative_person_id,
        link.requested_by_account_id,
        f"{link.method} {link.relationship}",
        link.expires_at,
    )
    await logged(session, link)
    await session.commit()
    return True


async def _check_pending(session: AsyncSession, link: FamilyLink, now: datetime) -> None:
    if await _lapse_if_due(session, link, now):
        raise Conflict("申请已过期，请重新发起", reason="expired")
    if link.status == LinkStatus.SUPERSEDED.value:
        raise Conflict("对方已修改申请内容，请查看新的申请", reason="link_superseded")
    if link.status != LinkStatus.PENDING.value:
        raise Conflict("该申请已处理", reason=f"link_{link.status}")


def _decide(
    session: AsyncSession,
    viewer: Viewer,
    link: FamilyLink,
    accept: bool,
    permissions: Iterable[Permission] | None,
    refused: LinkStatus,
    now: datetime,
) -> None:
    """Ends a pending request: active with the granted permissions (never more than asked), or refused,
    which frees the pair for a new request. The relative's audit shows who decided and what."""
    link.decided_at = now
    link.expires_at = None
    if accept:
        link.set_granted(_permissions(permissions, link.wanted()))
        link.status = LinkStatus.ACTIVE.value
        granted = ",".join(sorted(p.value for p in link.granted()))
        audit(session, viewer, link, "link_granted", granted or "-")
    else:
        link.status, link.pair_key = refused.value, None
        audit(session, viewer, link, "link_refused", refused.value)


async def respond(
    session: AsyncSession,
    viewer: Viewer,
    link_id: str | int,
    accept: bool,
    permissions: Iterable[Permission] | None = None,
    now: datetime | None = None,
) -> FamilyLink:
    """The adult relative confirms (granting what this request asks, or less) or declines. A request's
    permissions never change while it is pending (a change makes a new request), so a "yes" grants
    exactly what the relative was shown, or the subset they chose.

    A proxy request still pending when its relative has a login of their own (opened since it was made)
    is theirs to answer too, and then becomes a confirmed link: their word replaces the reviewer's."""
    now = now or utcnow()
    me = person_of(viewer)
    link = await _get_for_change(session, link_id)
    if link.relative_person_id != me:
        raise NotFound("未找到该亲属关联")
    if link.method not in (LinkMethod.CONFIRMATION.value, LinkMethod.PROXY.value):
        raise Forbidden("该关联无需确认", reason="not_confirmable")
    await _check_pending(session, link, now)
    link.method = LinkMethod.CONFIRMATION.value
    _decide(session, viewer, link, accept, permissions, LinkStatus.DECLINED, now)
    await logged(session, link)
    await session.commit()
    return link


async def pending_proxy_links(session: AsyncSession, now: datetime | None = None) -> Sequence[FamilyLink]:
    now = now or utcnow()
    await _expire_stale(session, now, col(FamilyLink.method) == LinkMethod.PROXY.value)
    await session.commit()
    statement = (
        select(FamilyLink)
        .where(
            col(FamilyLink.method) == LinkMethod.PROXY.value,
            col(FamilyLink.status) == LinkStatus.PENDING.value,
        )
        .order_by(col(FamilyLink.created_at), col(FamilyLink.id))
        .limit(200)
    )
    return (await session.execute(statement)).scalars().all()


async def decide_proxy(
    session: AsyncSession,
    viewer: Viewer,
    link_id: str | int,
    approve: bool,
    note: str | None,
    permissions: Iterable[Permission] | None = None,
    now: datetime | None = None,
) -> FamilyLink:
    """A reviewer approves or rejects a proxy request, with the note recorded beside the evidence.
    Approval is re-checked against the relative's login: one opened since the request was made means
    the relative can (and so must) decide themselves; they see the request and may end it."""
    now = now or utcnow()
    note = (note or "").strip() or None
    if note is not None and len(note) > 500:
        raise BadUserInput("审核意见不能超过500字", field="note")
    link = await _get_for_change(session, link_id)
    if link.method != LinkMethod.PROXY.value:
        raise NotFound("未找到该代办申请")
    await _check_pending(session, link, now)
    if not approve and note is None:
        raise BadUserInput("驳回须说明理由", field="note")
    if approve and await _has_own_login(session, link.relative_person_id):
        raise Conflict(
            "对方已开通账号，须由本人在线确认该申请，经办人员不能代为同意", reason="relative_can_confirm"
        )
    link.decided_by_account_id, link.decision_note = viewer.account_id, note
    _decide(session, viewer, link, approve, permissions, LinkStatus.REJECTED, now)
    await logged(session, link)
    await session.commit()
    return link


async def list_links(
    session: AsyncSession, viewer: Viewer, include_closed: bool = False, now: datetime | None = None
) -> Sequence[FamilyLink]:
    """Links where the caller is the holder or the relative."""
    now = now or utcnow()
    me = person_of(viewer)
    mine = or_(col(FamilyLink.holder_person_id) == me, col(FamilyLink.relative_person_id) == me)
    await _expire_stale(session, now, mine)
    await session.commit()
    statement = select(FamilyLink).where(mine)
    if not include_closed:
        statement = statement.where(col(FamilyLink.status).in_(OPEN_STATUSES))
    statement = statement.order_by(col(FamilyLink.created_at).desc(), col(FamilyLink.id).desc()).limit(100)
    return (await session.execute(statement)).scalars().all()


async def update_permissions(
    session: AsyncSession,
    settings: Settings,
    viewer: Viewer,
    link_id: str | int,
    permissions: Iterable[Permission],
    now: datetime | None = None,
) -> FamilyLink:
    """The holder sets what they ask for (dropping a permission takes effect at once; asking for more
    waits for a grant); the relative grants within what was asked. A reviewer, for a proxy link, may
    only narrow what is granted now: never give back what the relative (or anyone) took away.

    A pending request is never changed in place, so that a "yes" can only grant what the relative was
    shown: the holder's change closes it (superseded) and opens a new request with a new id and a fresh
    expiry, which the relative (or, for a proxy request, the reviewer) answers on its own terms. The
    link returned is the new request.

    Every change is written to the relative's access audit (who, which link, old → new). Withdrawing
    show-voucher, in the same transaction, revokes every device certificate issued through the link and
    the link's ref (codes name it), and gives the link a fresh ref: codes issued before the withdrawal
    stop verifying at once online and, after their next sync, on terminals, and stay dead even if
    show-voucher is granted again; codes issued after a new grant name the new ref."""
    now = now or utcnow()
    chosen = set(permissions)
    link = await _get_for_change(session, link_id)
    if link.status not in OPEN_STATUSES:
        raise Conflict("该亲属关联已失效", reason=f"link_{link.status}")
    old_granted, old_wanted = link.granted(), link.wanted()
    if viewer.person_id is not None and viewer.person_id == link.holder_person_id:
        if not chosen:
            raise BadUserInput("请至少保留一项权限，或解除关联", field="permissions")
        if link.status == LinkStatus.PENDING.value:
            if link.expires_at is not None and link.expires_at < now:
                await _check_pending(session, link, now)  # expires it, and says so
            if chosen == old_wanted:
                return link
            return await _replace_request(session, settings, viewer, link, chosen, now)
        link.set_wanted(chosen)
        link.set_granted(old_granted & chosen)
    elif viewer.person_id is not None and viewer.person_id == link.relative_person_id:
        if link.status != LinkStatus.ACTIVE.value:
            raise Conflict("申请尚未生效", reason="link_pending")
        link.set_granted(_permissions(chosen, old_wanted))
    elif viewer.role in (Role.REVIEWER, Role.ADMIN) and link.method == LinkMethod.PROXY.value:
        if link.status != LinkStatus.ACTIVE.value:
            raise Conflict("申请尚未生效", reason="link_pending")
        if not chosen <= old_granted:
            raise Forbidden("经办人员只能收窄已授予的权限，不能代为授予", reason="narrow_only")
        link.set_granted(chosen)
    else:
        raise NotFound("未找到该亲属关联")
    new_granted, new_wanted = link.granted(), link.wanted()
    if (new_granted, new_wanted) != (old_granted, old_wanted):
        detail = f"{_describe(old_granted)} → {_describe(new_granted)}"
        if new_wanted != old_wanted:
            detail += f" (requested {_describe(old_wanted)} → {_describe(new_wanted)})"
        audit(session, viewer, link, "update_permissions", detail)
    if Permission.SHOW_VOUCHER in old_granted - new_granted:
        assert link.id is not None
        await revocations.revoke_link(session, link.id, link.ref, "consent_withdrawn")
        link.ref = new_link_ref()
    await logged(session, link)
    await session.commit()
    return link


async def _replace_request(
    session: AsyncSession,
    settings: Settings,
    viewer: Viewer,
    old: FamilyLink,
    wanted: set[Permission],
    now: datetime,
) -> FamilyLink:
    """Closes a pending request and opens its successor asking for `wanted` (see update_permissions).
    A proxy request whose relative has opened a login since becomes one the relative confirms."""
    method = LinkMethod(old.method)
    if method == LinkMethod.PROXY and await _has_own_login(session, old.relative_person_id):
        method = LinkMethod.CONFIRMATION
    ttl_h = settings.family_proxy_ttl_h if method == LinkMethod.PROXY else settings.family_request_ttl_h
    old.status, old.pair_key = LinkStatus.SUPERSEDED.value, None
    old.removed_at, old.removed_by_account_id = now, viewer.account_id
    await session.flush()  # frees the pair for the new request (one open link per pair)
    new = FamilyLink(
        ref=new_link_ref(),
        holder_person_id=old.holder_person_id,
        relative_person_id=old.relative_person_id,
        relationship=old.relationship,
        method=method.value,
        status=LinkStatus.PENDING.value,
        pair_key=pair_key(old.holder_person_id, old.relative_person_id),
        requested_by_account_id=viewer.account_id,
        evidence=old.evidence if method == LinkMethod.PROXY else None,
        created_at=now,
        expires_at=now + timedelta(hours=ttl_h),
    )
    new.set_wanted(wanted)
    session.add(new)
    await session.flush()
    audit(
        session,
        viewer,
        old,
        "link_request_changed",
        f"requested {_describe(old.wanted())} → {_describe(wanted)}; new request {new.id}",
    )
    audit(session, viewer, new, "link_requested", f"{method.value} {new.relationship}: {_describe(wanted)}")
    await logged(session, old, new)
    await session.commit()
    return new


async def unlink(session: AsyncSession, viewer: Viewer, link_id: str | int) -> FamilyLink:
    """Either side ends the link at once, whatever its method (a proxy link too) and state (a pending
    request too); its vouchers and device certificates are revoked with it, and the relative's audit
    records who ended it. A request already past its expiry is closed as expired (link_expired)."""
    me = person_of(viewer)
    link = await _get_for_change(session, link_id)
    if me not in (link.holder_person_id, link.relative_person_id):
        raise NotFound("未找到该亲属关联")
    if await _lapse_if_due(session, link, utcnow()):
        return link  # it had lapsed already: closed, and the relative's audit says how
    if link.status not in OPEN_STATUSES:
        return link  # already closed: unlinking twice is not an error
    was = link.status
    link.status, link.pair_key = LinkStatus.REMOVED.value, None
    link.removed_at, link.removed_by_account_id = utcnow(), viewer.account_id
    link.set_granted(set())
    assert link.id is not None
    if was == LinkStatus.ACTIVE.value:
        await revocations.revoke_link(session, link.id, link.ref, "unlinked")
    audit(session, viewer, link, "link_removed", was)
    await logged(session, link)
    await session.commit()
    return link


async def require_link(
    session: AsyncSession, viewer: Viewer, link_id: str | int, permission: Permission | None
) -> FamilyLink:
    """The holder's active link, with `permission` granted now. Other capabilities act through this."""
    link = await _get(session, link_id)
    if viewer.person_id is None or link.holder_person_id != viewer.person_id:
        raise NotFound("未找到该亲属关联")  # someone else's link: do not confirm that it exists
    if link.status != LinkStatus.ACTIVE.value:
        raise Forbidden("该亲属关联未生效或已解除", reason=f"link_{link.status}")
    if permission is not None and permission not in link.granted():
        raise Forbidden("亲属未授予此项权限", reason=f"missing_{permission.value}")
    return link


def audit(
    session: AsyncSession, viewer: Viewer, link: FamilyLink, action: str, detail: str | None = None
) -> None:
    """Records an access to the relative's data; it commits with the caller's transaction."""
    session.add(
        AccessAudit(
            person_id=link.relative_person_id,
            actor_account_id=viewer.account_id,
            actor_person_id=viewer.person_id,
            link_id=link.id,
            action=action,
            detail=detail[:200] if detail else None,
        )
    )


async def access_checked(
    session: AsyncSession, viewer: Viewer, link_id: str | int, permission: Permission | None, action: str
) -> FamilyLink:
    """require_link + audit, committed: the audit entry exists before any data leaves."""
    link = await require_link(session, viewer, link_id, permission)
    audit(session, viewer, link, action)
    await session.commit()
    return link


async def list_audit(
    session: AsyncSession, cursors: CursorCodec, viewer: Viewer, *, first: int | None, after: str | None
) -> Page[AccessAudit]:
    return await people.list_records(
        session, cursors, AUDIT, person_of(viewer), first=first, after=after, start=None, end=None
    )


async def link_by_ref(session: AsyncSession, ref: str) -> FamilyLink | None:
    statement = select(FamilyLink).where(col(FamilyLink.ref) == ref).execution_options(populate_existing=True)
    return (await session.execute(statement)).scalar_one_or_none()


async def accounts_by_ids(session: AsyncSession, ids: Iterable[int]) -> dict[int, Account]:
    wanted = set(ids)
    if not wanted:
        return {}
    rows = (await session.execute(select(Account).where(col(Account.id).in_(wanted)))).scalars()
    return {row.id: row for row in rows if row.id is not None}


async def people_by_ids(session: AsyncSession, ids: Iterable[int]) -> dict[int, InsuredPerson]:
    wanted = set(ids)
    if not wanted:
        return {}
    rows = (await session.execute(select(InsuredPerson).where(col(InsuredPerson.id).in_(wanted)))).scalars()
    return {row.id: row for row in rows if row.id is not None}
