"""Settlement rules on the server: stored policy versions, year-to-date totals, 预结算 estimates.

No HTTP, no GraphQL. The computation itself is the shared engine (``sync.settlement``); this module
decides what the engine is fed: the policy versions stored in the database, and everything about the
person that a client must not be trusted with (insurance type, age group, assistance category,
chronic diseases, region, the real year-to-date totals, the personal-account balance).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import tomllib
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, bindparam, func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from api import jsonlimits
from api.db import dialect_name, one_of
from api.errors import BadUserInput, Conflict, NotFound
from api.filings import registrations
from api.pagination import SHANGHAI
from api.people.models import Facility, InsuredPerson, PersonalAccount, Settlement
from api.replication import changelog
from api.settlement.models import PolicyVersionRow
from sync.settlement import (
    LOCALITIES,
    MAX_DAYS_AHEAD,
    BillItem,
    PolicyError,
    PolicySet,
    PolicyVersion,
    SettlementInputError,
    SettlementResult,
    Visit,
    YearToDate,
    compute,
    load_default_policies,
    load_policies,
    parse_date,
)

REGION_CODE = re.compile(r"[1-9][0-9]{5}", re.ASCII)
VERSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MAX_POLICY_TEXT = 200_000  # characters of JSON/TOML for one version; the default file is ~12,000
MAX_ESTIMATE_ITEMS = 500  # a resident's pre-settlement bill; terminals settle bigger ones


def shanghai_today() -> dt.date:
    return dt.datetime.now(SHANGHAI).date()


def _local_midnight_utc(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), SHANGHAI).astimezone(dt.UTC)


def engine_error(exc: PolicyError | SettlementInputError, *, prefix: str | None = None) -> BadUserInput:
    """The engine's error as BAD_USER_INPUT naming its dotted field (English detail kept as-is)."""
    field = exc.field
    if prefix is not None:
        field = prefix + field.split(".", 1)[1] if "." in field else prefix.rstrip(".")
    kind = "政策版本" if isinstance(exc, PolicyError) else "结算信息"
    return BadUserInput(f"{kind}有误：{field}：{exc.message}", field=field)


# ------------------------------------------------------------------------------ policy versions


def _canonical(body: Mapping[str, Any]) -> str:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def version_row(version: PolicyVersion, *, created_by: int | None) -> PolicyVersionRow:
    body = version.to_dict()
    return PolicyVersionRow(
        id=version.id,
        region=version.region,
        name=version.name,
        effective_from=version.effective_from,
        effective_to=version.effective_to,
        body=body,
        digest=hashlib.sha256(_canonical(body).encode()).hexdigest(),
        created_by=created_by,
    )


def policy_change(version_id: str) -> changelog.Change:
    """Terminals sync every policy version: each write to one goes into the change log."""
    return changelog.Change("policy_version", version_id, changelog.POLICY_SCOPE)


async def seed_default_policies(session: AsyncSession) -> list[str]:
    """Stores the versions of the shipped policy file that the database lacks (by id); idempotent.

    Stored versions win over the file: a version is never rewritten once stored, so a changed file
    must add a new version id rather than edit an old one. Commits; returns the ids it added."""
    defaults = load_default_policies()
    stored = set((await session.execute(select(col(PolicyVersionRow.id)))).scalars())
    missing = [v for v in defaults.versions if v.id not in stored]
    if not missing:
        return []
    session.add_all(version_row(v, created_by=None) for v in missing)
    await changelog.record(session, [policy_change(v.id) for v in missing])
    try:
        await session.commit()
    except IntegrityError:  # another worker seeded them first: same file, same rows
        await session.rollback()
        return []
    return [v.id for v in missing]


# Parsed PolicySets keyed by the (id, digest) of every stored version: versions are immutable apart
# from the digest-changing close of an open-ended one, so a matching key is always the same data.
# Per process only as a parse cache; every request still reads the key from the database.
_POLICY_CACHE: OrderedDict[tuple[tuple[str, str], ...], PolicySet] = OrderedDict()
_POLICY_CACHE_SIZE = 8


async def policy_set(session: AsyncSession) -> PolicySet:
    """Every stored version, as the engine's PolicySet."""
    key = tuple(
        (row[0], row[1])
        for row in await session.execute(
            select(col(PolicyVersionRow.id), col(PolicyVersionRow.digest)).order_by(col(PolicyVersionRow.id))
        )
    )
    cached = _POLICY_CACHE.get(key)
    if cached is not None:
        _POLICY_CACHE.move_to_end(key)
        return cached
    rows = (await session.execute(select(col(PolicyVersionRow.body)))).scalars().all()
    try:
        policies = PolicySet([PolicyVersion.from_dict(body) for body in rows])
    except PolicyError as exc:  # stored versions were validated on the way in: this is corruption
        raise RuntimeError(f"stored policy versions are inconsistent: {exc}") from exc
    _POLICY_CACHE[key] = policies
    while len(_POLICY_CACHE) > _POLICY_CACHE_SIZE:
        _POLICY_CACHE.popitem(last=False)
    return policies


async def list_versions(session: AsyncSession, region: str | None = None) -> Sequence[PolicyVersionRow]:
    statement = select(PolicyVersionRow).order_by(
        col(PolicyVersionRow.region), col(PolicyVersionRow.effective_from)
    )
    if region is not None:
        statement = statement.where(col(PolicyVersionRow.region) == region)
    return (await session.execute(statement)).scalars().all()


# Any fixed 64-bit number: the advisory lock that one policy write at a time holds on PostgreSQL.
_POLICY_WRITE_LOCK = 0x59_69_62_61_6F_50_6F_6C  # "YibaoPol"


async def _serialise_policy_writes(session: AsyncSession) -> None:
    """One version is created at a time: each is checked against all stored versions, and two checked
    side by side could both pass and overlap each other. PostgreSQL: a transaction-scoped advisory
    lock. SQLite: a no-op write takes the database's single write lock before anything is read."""
    if dialect_name(session) == "postgresql":
        await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _POLICY_WRITE_LOCK})
    else:
        await session.execute(
            update(PolicyVersionRow).where(text("0 = 1")).values(region=PolicyVersionRow.region)
        )


def parse_version_input(value: Mapping[str, Any] | str, field: str) -> dict[str, Any]:
    """One version from the admin's input: a JSON object, or JSON/TOML text. A TOML policy file with
    ``[[versions]]`` is accepted when it holds exactly one version."""
    data: Any = value
    if isinstance(value, str):
        if len(value) > MAX_POLICY_TEXT:
            raise BadUserInput(f"政策文本过长（最多{MAX_POLICY_TEXT}个字符）", field=field)
        text = value.strip()
        try:
            data = json.loads(text) if text.startswith("{") else tomllib.loads(text)
        except RecursionError:  # both parsers recurse per nesting level
            raise BadUserInput("政策文本嵌套过深", field=field) from None
        except ValueError as exc:  # JSONDecodeError, TOMLDecodeError, and a number past 4,300 digits
            detail = jsonlimits.shorten(str(exc), 120)
            raise BadUserInput(f"政策文本不是有效的JSON或TOML：{detail}", field=field) from None
    if not isinstance(data, Mapping):
        raise BadUserInput("政策版本必须是一个对象", field=field)
    if "versions" in data:
        versions = data["versions"]
        if set(data) - {"schema", "versions"} or not isinstance(versions, list) or len(versions) != 1:
            raise BadUserInput("一次只能创建一个政策版本", field=f"{field}.versions")
        data = versions[0]
        if not isinstance(data, Mapping):
            raise BadUserInput("政策版本必须是一个对象", field=field)
    return dict(data)


async def create_version(
    session: AsyncSession,
    raw: Mapping[str, Any],
    *,
    created_by: int,
    today: dt.date | None = None,
) -> PolicyVersionRow:
    """Stores a new version after validating it with the engine together with every stored version.

    The rule that keeps past settlements true: a new version starts strictly after today (Asia/Shanghai),
    so no settlement of an already-passed day changes its version. If the region has an open-ended
    version that started earlier, it is closed at the new start date, and only if no stored
    settlement computed with it is dated on or after that date (terminals may date visits ahead).
    ``raw`` may name ``extends = "<stored id>"`` to restate only what changed.
    """
    today = today or shanghai_today()
    await _serialise_policy_writes(session)
    vid = raw.get("id")
    if not isinstance(vid, str) or not VERSION_ID.fullmatch(vid):
        raise BadUserInput(
            "版本编号只能包含字母、数字和 . _ -，最长64个字符，且以字母或数字开头", field="version.id"
        )
    if await session.get(PolicyVersionRow, vid) is not None:
        raise Conflict(f"政策版本 {vid} 已存在，已生效的版本不能修改，请使用新的版本编号", field="version.id")
    try:
        start = parse_date(raw.get("effective_from"), "version.effective_from", PolicyError)
    except PolicyError as exc:
        raise engine_error(exc) from None
    if start <= today:
        raise BadUserInput(
            f"新版本的生效日期必须晚于今天（{today.isoformat()}）：已经发生的结算按当时的版本计算，不能改变",
            field="version.effective_from",
        )

    rows = list((await session.execute(select(PolicyVersionRow))).scalars())
    rows.sort(key=lambda r: (r.effective_from, r.id))
    region = raw.get("region")
    if region is None and isinstance(raw.get("extends"), str):  # inherited, as every other table is
        region = next((r.region for r in rows if r.id == raw["extends"]), None)
    closing = next(
        (r for r in rows if r.region == region and r.effective_to is None and r.effective_from < start), None
    )
    bodies = []
    for row in rows:
        body = dict(row.body)
        if row is closing:
            body["effective_to"] = start.isoformat()
        bodies.append(body)
    index = len(bodies)
    try:
        version = load_policies({"schema": 1, "versions": [*bodies, raw]}).get(vid)
    except PolicyError as exc:
        mine = f"versions[{index}]"
        if exc.field == mine or exc.field.startswith(mine + "."):
            raise engine_error(exc, prefix="version.") from None
        # Only the overlap check names another index: the new version's dates collide with it.
        raise BadUserInput(f"生效期与已有版本重叠：{exc.message}", field="version.effective_from") from None

    if closing is not None:
        later = await session.execute(
            select(func.count())
            .select_from(Settlement)
            .where(
                col(Settlement.policy_version) == closing.id,
                col(Settlement.settled_at) >= _local_midnight_utc(start),
            )
        )
        if later.scalar_one():
            raise BadUserInput(
                f"已有按版本 {closing.id} 结算的费用发生在 {start.isoformat()} 或之后，新版本不能从该日起生效",
                field="version.effective_from",
            )
        closed = version_row(
            PolicyVersion.from_dict({**closing.body, "effective_to": start.isoformat()}), created_by=None
        )
        # Conditional update: two admins superseding the same version at once cannot both close it.
        result = await session.execute(
            update(PolicyVersionRow)
            .where(col(PolicyVersionRow.id) == closing.id, col(PolicyVersionRow.effective_to).is_(None))
            .values(effective_to=start, body=closed.body, digest=closed.digest)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            await session.rollback()
            raise Conflict("该地区的政策版本刚被修改，请刷新后重试", field="version.effective_from")
    row = version_row(version, created_by=created_by)
    session.add(row)
    changed = [row.id] + ([closing.id] if closing is not None else [])
    await changelog.record(session, [policy_change(v) for v in changed])
    try:
        await session.commit()
    except IntegrityError:
        await session.rollback()
        raise Conflict(f"政策版本 {vid} 已存在", field="version.id") from None
    return row


# ------------------------------------------------------------------------------- year to date


async def lock_people(session: AsyncSession, person_ids: Iterable[int]) -> None:
    """Holds the people's rows until commit, so that their year-to-date totals (and balances) read
    after this stay final until this transaction has stored what it settles against them. Every
    writer of settlements takes it before it reads totals (a terminal push too, api.replication.push
    ._lock_people), in the same order (ids ascending), so two writers wait for each other instead of
    paying twice out of one annual cap, and never wait in a circle.

    PostgreSQL: SELECT ... FOR NO KEY UPDATE (rows that reference the people may still be inserted).
    SQLite: a no-op UPDATE of the rows takes the database's single write lock; without a write, the
    reads that follow run outside any transaction and may miss a concurrent writer's commit."""
    wanted = sorted(set(person_ids))
    if not wanted:
        return
    if dialect_name(session) == "postgresql":
        await session.execute(
            select(col(InsuredPerson.id))
            .where(one_of(col(InsuredPerson.id), "people"))
            .order_by(col(InsuredPerson.id))
            .with_for_update(key_share=True),
            {"people": wanted},
        )
        return
    table = InsuredPerson.__table__  # type: ignore[attr-defined]
    await session.execute(
        update(table).where(one_of(table.c.id, "people")).values(region_code=table.c.region_code),
        {"people": wanted},
    )


def ytd_columns(
    version: PolicyVersion, visit: Visit, before: YearToDate, result: SettlementResult
) -> dict[str, Any]:
    """The year-to-date columns a stored settlement carries, beside its amounts: the pool its
    deductible and basic payment count in, and the 大病 / assistance-threshold increments, which no
    stored amount determines (the threshold applied depends on the person's category at the time)."""
    return {
        "ytd_pool": version.rules_for(visit.insurance_type).categories[visit.category].pool,
        "critical_oop_fen": result.ytd.critical_oop_fen - before.critical_oop_fen,
        "assistance_threshold_fen": result.ytd.assistance_threshold_used_fen
        - before.assistance_threshold_used_fen,
    }


async def year_to_date(
    session: AsyncSession, person_id: int, year: int, *, before: dt.datetime | None = None
) -> YearToDate:
    """The person's totals of insurance year ``year`` from their stored settlements (those settled
    before ``before`` if given), exactly as the engine would have carried them from visit to visit:
    every total is a sum of per-settlement increments, so the answer is one indexed GROUP BY and does
    not depend on the order in which late (offline) settlements arrived. Voided settlements count nowhere."""
    return (await year_to_date_many(session, [person_id], year, before=before))[person_id]


def _ytd_statement(before: bool) -> Select[Any]:
    s = Settlement.__table__.c  # type: ignore[attr-defined]
    filters = [one_of(s.person_id, "people"), s.year == bindparam("year")]
    filters.append(s.voided_at.is_(None))
    if before:
        filters.append(s.settled_at < bindparam("before"))
    return (
        select(
            s.person_id,
            s.ytd_pool,
            func.sum(s.deductible_fen),
            func.sum(s.basic_fen),
            func.sum(s.critical_oop_fen),
            func.sum(s.critical_illness_fen),
            func.sum(s.assistance_threshold_fen),
            func.sum(s.assistance_fen),
        )
        .where(*filters)
        .group_by(s.person_id, s.ytd_pool)
    )


# Built once (a push asks for every batch): a statement built per call costs its construction and
# cache key over all its IN values; the expanding parameter takes the list at execution.
_YTD = {False: _ytd_statement(False), True: _ytd_statement(True)}


async def year_to_date_many(
    session: AsyncSession, person_ids: Iterable[int], year: int, *, before: dt.datetime | None = None
) -> dict[int, YearToDate]:
    """`year_to_date` for many people in one GROUP BY (a village roster's totals, as of now)."""
    wanted = list(dict.fromkeys(person_ids))
    params: dict[str, Any] = {"people": wanted, "year": year}
    if before is not None:
        params["before"] = before
    rows = await session.execute(_YTD[before is not None], params)
    sums: dict[int, list[Any]] = {pid: [{}, {}, 0, 0, 0, 0] for pid in wanted}
    for pid, pool, ded, bas, oop, crit, thr, aid in rows:
        acc = sums[pid]
        # The engine only creates a pool key when something was added to it; mirror that exactly.
        if int(ded):
            acc[0][pool] = int(ded)
        if int(bas):
            acc[1][pool] = int(bas)
        acc[2] += int(oop)
        acc[3] += int(crit)
        acc[4] += int(thr)
        acc[5] += int(aid)
    return {pid: YearToDate(year, *acc) for pid, acc in sums.items()}


# ---------------------------------------------------------------------------------- estimates


@dataclass(frozen=True)
class ItemInput:
    amount_fen: int
    item_class: str = "class_a"
    self_pay_permille: int = 0
    code: str | None = None
    name: str | None = None


@dataclass(frozen=True)
class EstimateRequest:
    category: str
    items: Sequence[ItemInput]
    facility_id: int | None = None
    facility_level: str | None = None
    locality: str | None = None
    """What the client believes; never used. The server decides (see `visit_region`), and a different
    claim is refused, so that no client can price a visit as registered care it is not."""
    visit_date: dt.date | None = None
    use_personal_account: bool = True
    visit_region: str | None = None
    """Where the visit happens (6-digit region code): the facility's region when a facility is given,
    else this, else the person's own region. The locality follows from it: local inside the person's
    pooling area, else registered if an approved 异地就医备案 covers the region and date
    (api.filings.registrations), else unregistered."""


@dataclass(frozen=True)
class Estimate:
    person_id: int
    visit: Visit
    version: PolicyVersion
    ytd_before: YearToDate
    result: SettlementResult


def age_group(birth: dt.date, on: dt.date) -> str:
    """child under 18, elderly from 60 (the retirement age the default policy's bonus assumes)."""
    age = on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))
    if age < 18:
        return "child"
    return "elderly" if age >= 60 else "adult"


async def estimate(
    session: AsyncSession,
    person_id: int,
    request: EstimateRequest,
    *,
    today: dt.date | None = None,
    ytd: YearToDate | None = None,
) -> Estimate:
    """预结算: what the person would pay for this bill today, with their real year-to-date totals.

    `ytd`: the totals to price against instead (a reimbursement prices against the whole year, see
    api.filings.kinds.reimbursement); by default the visit's year up to the end of the visit day.
    Nothing is stored. Raises BadUserInput naming the field for any bad input."""
    today = today or shanghai_today()
    person = await session.get(InsuredPerson, person_id)
    if person is None:
        raise NotFound("未找到参保人信息")
    if (request.facility_id is None) == (request.facility_level is None):
        raise BadUserInput("请提供医药机构或机构等级（二选一）", field="input.facilityId")
    level = request.facility_level
    where: str | None = None
    if request.facility_id is not None:
        facility = await session.get(Facility, request.facility_id)
        if facility is None:
            raise BadUserInput("未找到该医药机构", field="input.facilityId")
        level, where = facility.level, facility.region_code
    assert level is not None
    if len(request.items) > MAX_ESTIMATE_ITEMS:
        raise BadUserInput(f"费用明细最多{MAX_ESTIMATE_ITEMS}项", field="visit.items")
    day = request.visit_date or today
    if day > today + dt.timedelta(days=MAX_DAYS_AHEAD):  # before any date arithmetic can overflow
        raise BadUserInput(f"就诊日期不能晚于今天{MAX_DAYS_AHEAD}天以上", field="visit.visit_date")
    if day < person.birth_date:
        raise BadUserInput("就诊日期早于出生日期", field="visit.visit_date")
    if request.visit_region is not None:
        if not REGION_CODE.fullmatch(request.visit_region):
            raise BadUserInput("就医地须为6位行政区划代码", field="input.visitRegion")
        if where is not None and where != request.visit_region:
            raise BadUserInput("就医地与医药机构所在地不一致", field="input.visitRegion")
        where = request.visit_region
    locality = await registrations.locality(
        session, person_id, person.region_code, where or person.region_code, day
    )
    if request.locality is not None and request.locality != locality:
        if request.locality not in LOCALITIES:
            raise BadUserInput("就医地类型须为 local、registered 或 unregistered", field="visit.locality")
        raise BadUserInput(
            f"就医地类型由系统根据就医地和异地就医备案确定，本次为{LOCALITIES[locality]}",
            field="input.locality",
        )
    account = await session.get(PersonalAccount, person_id)
    balance = max(account.balance_fen, 0) if account is not None else 0
    visit = Visit(
        visit_date=day,
        region=person.region_code,
        insurance_type=person.insurance_type,
        age_group=age_group(person.birth_date, day),
        facility_level=level,
        locality=locality,
        category=request.category,
        items=tuple(
            BillItem(i.amount_fen, i.item_class, i.self_pay_permille, i.code or "", i.name or "")
            for i in request.items
        ),
        assistance_category=person.assistance_category,
        chronic_diseases=frozenset(person.chronic_diseases),
        two_diseases=frozenset(person.two_diseases),
        personal_account_balance_fen=balance,
        use_personal_account=request.use_personal_account and account is not None,
    )
    policies = await policy_set(session)
    if ytd is None:
        # Totals of the visit's year up to the end of the visit day: a back-dated estimate sees the
        # year as it was then, a forward-dated one everything settled so far.
        ytd = await year_to_date(
            session, person_id, day.year, before=_local_midnight_utc(day + dt.timedelta(days=1))
        )
    elif ytd.year != day.year:
        raise ValueError(f"totals of {ytd.year} given for a visit in {day.year}")
    try:
        result = compute(policies, visit, ytd, today=today)
    except SettlementInputError as exc:
        raise engine_error(exc) from None
    return Estimate(person_id, visit, policies.get(result.policy_version_id), ytd, result)
