"""The demo county: a deterministic, realistic small county for local runs, tests and benchmarks.

Faker (zh_CN) names the people; every settlement is computed by the shared settlement engine with
the person's true year-to-date totals, in date order, exactly as the server would settle it.
Seeded: the same seed and size give the same county, so tests and benchmarks can rely on it.
"""

from __future__ import annotations

import csv
import datetime as dt
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from faker import Faker
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col
from tqdm import tqdm

from api.auth.models import Account, Role
from api.pagination import SHANGHAI
from api.people import idnumbers
from api.people.models import (
    AccountFlow,
    Contribution,
    Enrolment,
    Facility,
    Household,
    InsuredPerson,
    PersonalAccount,
    Settlement,
)
from api.settlement import service as settlement_service
from api.state import AppState
from sync.settlement import BillItem, PolicySet, Visit, YearToDate, compute

COUNTY = "340421"  # 凤台县, Huainan (Anhui): the county of seed 000
COUNTY_NAME = "凤台县"
TOWNS = ("城关镇", "刘集镇", "大山镇", "李冲回族乡", "桂集镇", "顾桥镇")
YEARS = (2024, 2025, 2026)
DEMO_TODAY = dt.date(2026, 11, 20)
RESIDENT_CONTRIBUTION_FEN = {2024: 38_000, 2025: 40_000, 2026: 40_000}  # 居民个人缴费 380/400/400 yuan
RESIDENT_SUBSIDY_FEN = {2024: 67_000, 2025: 70_000, 2026: 71_000}  # 财政补助 670/700/710 yuan
ASSISTANCE_SHARE = (("dibao", 0.03), ("tekun", 0.005), ("dibao_edge", 0.01), ("poverty_monitored", 0.01))


@dataclass
class DemoPerson:
    key: str
    name: str
    id_number: str
    gender: str
    birth_date: dt.date
    insurance_type: str
    household: int
    assistance_category: str | None = None
    chronic: list[str] = field(default_factory=list)
    two_diseases: list[str] = field(default_factory=list)
    visit_rate: float = 1.0
    employer: str | None = None
    monthly_wage_fen: int = 0


def make_id_number(rng: random.Random, region: str, birth: dt.date, gender: str, taken: set[str]) -> str:
    while True:
        seq = rng.randrange(0, 500) * 2 + (1 if gender == "M" else 0)
        first17 = f"{region}{birth:%Y%m%d}{seq:03d}"
        value = first17 + idnumbers.check_digit(first17)
        if value not in taken:
            taken.add(value)
            return value


def _birth(rng: random.Random, age: int) -> dt.date:
    return dt.date(DEMO_TODAY.year - age, 1, 1) + dt.timedelta(days=rng.randrange(0, 365))


def _age_group(person: DemoPerson, on: dt.date) -> str:
    age = (
        on.year
        - person.birth_date.year
        - ((on.month, on.day) < (person.birth_date.month, person.birth_date.day))
    )
    if age < 18:
        return "child"
    return "elderly" if age >= 60 else "adult"


def build_people(rng: random.Random, fake: Faker, count: int) -> tuple[list[DemoPerson], int]:
    """The named demo people first (DESIGN.md section 7), then households of Faker-named villagers."""
    taken: set[str] = set()
    people: list[DemoPerson] = []

    def person(key: str, age: int, gender: str, household: int, insurance: str, **kw: Any) -> DemoPerson:
        surname = kw.pop("surname", None)
        given = fake.first_name_male() if gender == "M" else fake.first_name_female()
        name = (surname or fake.last_name()) + given
        birth = _birth(rng, age)
        p = DemoPerson(
            key,
            name,
            make_id_number(rng, COUNTY, birth, gender, taken),
            gender,
            birth,
            insurance,
            household,
            **kw,
        )
        people.append(p)
        return p

    # Household 0: the demo holder and spouse; household 1: the holder's father in his village.
    holder = person(
        "resident",
        46,
        "F",
        0,
        "employee",
        employer="凤台县第一中学",
        monthly_wage_fen=620_000,
        visit_rate=6.0,
    )
    person("spouse", 48, "M", 0, "employee", employer="淮南矿业集团", monthly_wage_fen=780_000)
    person(
        "elder",
        79,
        "M",
        1,
        "resident",
        surname=holder.name[0],
        chronic=["hypertension_complicated"],
        two_diseases=["hypertension"],
        visit_rate=3.0,
    )
    person("stranger", 35, "M", 2, "resident")
    households = 3
    while len(people) < count:
        size = rng.choice((1, 2, 2, 3, 3, 4, 4, 5))
        surname = fake.last_name()
        ages = [rng.randint(20, 75)]
        if size > 1:
            ages.append(max(18, ages[0] + rng.randint(-5, 5)))
        ages += [rng.randint(0, 17) if ages[0] < 50 else rng.randint(80, 95) for _ in range(size - len(ages))]
        category = _assistance(rng)
        for n, age in enumerate(ages[: count - len(people)]):
            employee = 22 <= age < 60 and rng.random() < 0.22
            two = [
                d for d, p in (("hypertension", 0.25), ("diabetes", 0.1)) if age >= 40 and rng.random() < p
            ]
            person(
                f"p{len(people)}",
                age,
                rng.choice("MF") if n else "M",
                households,
                "employee" if employee else "resident",
                surname=surname if n != 1 else None,
                assistance_category=category,
                two_diseases=two,
                visit_rate=1.6 if age >= 60 else 0.8,
                employer=fake.company() if employee else None,
                monthly_wage_fen=rng.randrange(350_000, 900_000, 1000) if employee else 0,
            )
        households += 1
    return people, households


def _assistance(rng: random.Random) -> str | None:
    roll = rng.random()
    for code, share in ASSISTANCE_SHARE:
        if roll < share:
            return code
        roll -= share
    return None


def build_facilities(fake: Faker) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = [
        {"code": "H34042100001", "name": f"{COUNTY_NAME}人民医院", "level": "secondary", "kind": "hospital"},
        {"code": "H34040000001", "name": "淮南市第一人民医院", "level": "tertiary", "kind": "hospital"},
    ]
    for n, town in enumerate(TOWNS):
        rows.append(
            {
                "code": f"H340421{n + 1:02d}100",
                "name": f"{town}卫生院",
                "level": "primary",
                "kind": "hospital",
            }
        )
        for v in range(4):
            village = fake.street_name().rstrip("路街") + "村"
            rows.append(
                {
                    "code": f"C340421{n + 1:02d}{v + 1:03d}",
                    "name": f"{town}{village}卫生室",
                    "level": "village",
                    "kind": "clinic",
                    # 统计用区划代码: county (6) + town (3) + village (3); the clinic syncs its roster
                    "village_code": f"{COUNTY}{n + 101:03d}{v + 201:03d}",
                }
            )
    for n in range(3):
        rows.append(
            {
                "code": f"P34042100{n + 1:03d}",
                "name": f"{COUNTY_NAME}{fake.last_name()}氏大药房",
                "level": "primary",
                "kind": "pharmacy",
            }
        )
    for row in rows:
        row["region_code"] = COUNTY
        row.setdefault("village_code", None)
    return rows


def assign_villages(
    seed: int, household_towns: list[str], facility_rows: list[dict[str, Any]]
) -> list[str | None]:
    """Each household's village (its village clinic's roster), in a town's villages: households 0 and
    1 (the demo `resident` and her father) share one; about one in seven households lives in a
    town's residential community (社区), which has no village clinic. Its own generator, so the rest
    of the county does not move."""
    villages: dict[str, list[str]] = {}
    for row in facility_rows:
        if row["kind"] == "clinic":
            town = next(t for t in TOWNS if row["name"].startswith(t))
            villages.setdefault(town, []).append(row["village_code"])
    rng = random.Random(f"{seed}:villages")
    chosen: list[str | None] = [
        None if h % 7 == 5 else rng.choice(villages[town]) for h, town in enumerate(household_towns)
    ]
    if len(chosen) > 1:
        chosen[1] = chosen[0] = chosen[0] or villages[household_towns[0]][0]
    return chosen


@dataclass
class VisitPlan:
    when: dt.datetime
    facility_index: int
    category: str
    items: tuple[BillItem, ...]


def _items(rng: random.Random, total_fen: int, inpatient: bool) -> tuple[BillItem, ...]:
    class_b = int(total_fen * rng.uniform(0.1, 0.35))
    class_c = int(total_fen * (rng.uniform(0.03, 0.12) if inpatient else rng.uniform(0, 0.05)))
    class_a = max(total_fen - class_b - class_c, 100)
    items = [BillItem(class_a, "class_a", 0, "A01", "甲类药品及诊疗")]
    if class_b:
        items.append(BillItem(class_b, "class_b", rng.choice((50, 100, 150)), "B01", "乙类药品"))
    if class_c:
        items.append(BillItem(class_c, "class_c", 0, "C01", "自费项目"))
    return tuple(items)


def plan_visits(rng: random.Random, person: DemoPerson, facilities: dict[str, list[int]]) -> list[VisitPlan]:
    plans = []
    for year in YEARS:
        last_day = DEMO_TODAY if year == DEMO_TODAY.year else dt.date(year, 12, 31)
        span = (last_day - dt.date(year, 1, 1)).days
        n_outpatient = _poisson(rng, 4 * person.visit_rate * (span + 1) / 365)
        for _ in range(n_outpatient):
            day = dt.date(year, 1, 1) + dt.timedelta(days=rng.randrange(span + 1))
            kind = rng.random()
            if person.two_diseases and kind < 0.35 and person.insurance_type == "resident":
                category, level, total = "two_diseases_outpatient", "village", rng.randrange(3_000, 25_000)
            elif person.insurance_type == "employee" and kind < 0.3:
                category, level, total = "pharmacy", "pharmacy", rng.randrange(2_000, 40_000)
            else:
                category = "general_outpatient"
                level = rng.choice(("village", "village", "village", "primary", "secondary"))
                total = rng.randrange(2_000, 60_000 if level != "village" else 15_000)
            plans.append(_plan(rng, day, facilities[level], category, total, inpatient=False))
        if person.chronic:
            for month in range(1, (last_day.month if year == DEMO_TODAY.year else 12) + 1):
                day = dt.date(year, month, rng.randint(1, 28))
                plans.append(
                    _plan(
                        rng,
                        day,
                        facilities["primary"],
                        "chronic_outpatient",
                        rng.randrange(15_000, 60_000),
                        inpatient=False,
                    )
                )
        if rng.random() < 0.12 * person.visit_rate:
            day = dt.date(year, 1, 1) + dt.timedelta(days=rng.randrange(span + 1))
            level = rng.choice(("primary", "secondary", "secondary", "tertiary"))
            total = int(rng.lognormvariate(9.6, 0.7) * 100)
            plans.append(
                _plan(rng, day, facilities[level], "inpatient", min(total, 150_000_000), inpatient=True)
            )
    plans.sort(key=lambda p: p.when)
    return plans


def _plan(
    rng: random.Random, day: dt.date, choices: list[int], category: str, total: int, *, inpatient: bool
) -> VisitPlan:
    when = dt.datetime.combine(day, dt.time(rng.randint(8, 17), rng.randrange(60)), SHANGHAI).astimezone(
        dt.UTC
    )
    return VisitPlan(when, rng.choice(choices), category, _items(rng, total, inpatient))


def _poisson(rng: random.Random, mean: float) -> int:
    # Knuth's method is fine for the small means of visit counts.
    limit, k, p = pow(2.718281828459045, -mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


async def _insert(
    session: AsyncSession, model: Any, rows: list[dict[str, Any]], *, ids: bool = False
) -> list[int]:
    if not rows:
        return []
    table = model.__table__
    if ids:
        result = await session.execute(
            insert(table).returning(table.c.id, sort_by_parameter_order=True), rows
        )
        return [row[0] for row in result]
    for start in range(0, len(rows), 5000):
        await session.execute(insert(table), rows[start : start + 5000])
    return []


async def load_demo_county(state: AppState, *, people: int, seed: int, force: bool = False) -> bool:
    """Loads the county into an empty database; returns False (and does nothing) if data exists."""
    async with state.db.session() as session:
        if (
            not force
            and (await session.execute(select(func.count()).select_from(InsuredPerson))).scalar_one()
        ):
            return False
        rng = random.Random(seed)
        fake = Faker("zh_CN")
        fake.seed_instance(seed)
        # Settle with the versions stored in the database (seeded from the shipped file), as the
        # server does: every demo settlement names a version that exists in policy_versions.
        await settlement_service.seed_default_policies(session)
        policies = await settlement_service.policy_set(session)

        facility_rows = build_facilities(fake)
        facility_ids = await _insert(session, Facility, facility_rows, ids=True)
        by_level: dict[str, list[int]] = {}
        for row, fid in zip(facility_rows, facility_ids, strict=True):
            by_level.setdefault("pharmacy" if row["kind"] == "pharmacy" else row["level"], []).append(fid)
        level_of = {fid: row["level"] for row, fid in zip(facility_rows, facility_ids, strict=True)}

        demo_people, household_count = build_people(rng, fake, people)
        towns = [rng.choice(TOWNS) for _ in range(household_count)]
        if household_count > 1:
            towns[1] = towns[0]  # the demo resident's father lives in her village
        village_of = assign_villages(seed, towns, facility_rows)
        household_ids = await _insert(
            session,
            Household,
            [
                {"region_code": COUNTY, "address": f"{COUNTY_NAME}{town}{fake.street_address()}"}
                for town in towns
            ],
            ids=True,
        )
        person_rows = [
            {
                "ref": uuid.UUID(int=rng.getrandbits(128)).hex,
                "name": p.name,
                "id_number_cipher": state.id_numbers.encrypt(p.id_number),
                "id_number_hash": state.id_numbers.lookup_hash(p.id_number),
                "gender": p.gender,
                "birth_date": p.birth_date,
                "insurance_type": p.insurance_type,
                "region_code": COUNTY,
                "household_id": household_ids[p.household],
                "village_code": village_of[p.household],
                "assistance_category": p.assistance_category,
                "chronic_diseases": p.chronic,
                "two_diseases": p.two_diseases,
                "created_at": dt.datetime(2023, 12, 1, tzinfo=dt.UTC),
            }
            for p in demo_people
        ]
        person_ids = await _insert(session, InsuredPerson, person_rows, ids=True)

        enrolments: list[dict[str, Any]] = []
        contributions: list[dict[str, Any]] = []
        accounts: list[dict[str, Any]] = []
        flows: list[tuple[int, list[Any], list[Any]]] = []
        settlements: list[tuple[int, list[dict[str, Any]]]] = []
        for person, pid in tqdm(
            list(zip(demo_people, person_ids, strict=True)), desc="demo county", unit="person", disable=None
        ):
            enrolments.append(
                {
                    "person_id": pid,
                    "insurance_type": person.insurance_type,
                    "region_code": COUNTY,
                    "employer": person.employer,
                    "start_on": dt.date(2024, 1, 1),
                    "end_on": None,
                }
            )
            balance = 0
            ledger: list[tuple[dt.datetime, int, str, int | None]] = []  # (when, amount, kind, visit index)
            for year in YEARS:
                contributions.extend(_contributions(rng, person, pid, year))
                if person.insurance_type == "employee":
                    months = DEMO_TODAY.month if year == DEMO_TODAY.year else 12
                    for month in range(1, months + 1):
                        when = dt.datetime(year, month, 5, 2, 0, tzinfo=dt.UTC)
                        ledger.append((when, person.monthly_wage_fen * 2 // 100, "allocation", None))
            plans = plan_visits(rng, person, by_level)
            ytd: dict[int, YearToDate] = {}
            settled: list[tuple[VisitPlan, Any]] = []
            ytd_columns: list[dict[str, Any]] = []
            allocations = sorted(ledger, key=lambda e: e[0])
            for plan in plans:
                while allocations and allocations[0][0] <= plan.when:
                    balance += allocations.pop(0)[1]
                result, columns = _settle(policies, person, plan, level_of, ytd, balance)
                balance -= result.personal_account_fen
                settled.append((plan, result))
                ytd_columns.append(columns)
            balance += sum(amount for _, amount, _, _ in allocations)  # credited after the last visit
            visit_rows = [
                {
                    "person_id": pid,
                    "facility_id": plan.facility_index,
                    "settled_at": plan.when,
                    "year": plan.when.astimezone(SHANGHAI).year,
                    "category": plan.category,
                    "visit_scope": "local",
                    "total_fen": r.total_fen,
                    "compliant_fen": r.compliant_fen,
                    "deductible_fen": r.deductible_fen,
                    "basic_fen": r.basic_fen,
                    "critical_illness_fen": r.critical_illness_fen,
                    "assistance_fen": r.assistance_fen,
                    "personal_account_fen": r.personal_account_fen,
                    "cash_fen": r.cash_fen,
                    "policy_version": r.policy_version_id,
                    "source": "hospital",
                    **columns,
                }
                for (plan, r), columns in zip(settled, ytd_columns, strict=True)
            ]
            settlements.append((pid, visit_rows))
            if person.insurance_type == "employee":
                accounts.append(
                    {"person_id": pid, "balance_fen": balance, "updated_at": dt.datetime.now(dt.UTC)}
                )
                flows.append((pid, ledger, settled))

        await _insert(session, Enrolment, enrolments)
        await _insert(session, Contribution, contributions)
        await _insert(session, PersonalAccount, accounts)
        settlement_ids: dict[int, list[int]] = {}
        all_rows = [row for _, rows in settlements for row in rows]
        ids = []
        for start in range(0, len(all_rows), 5000):
            ids += await _insert(session, Settlement, all_rows[start : start + 5000], ids=True)
        cursor = 0
        for pid, rows in settlements:
            settlement_ids[pid] = ids[cursor : cursor + len(rows)]
            cursor += len(rows)
        await _insert(session, AccountFlow, _flows(flows, settlement_ids))
        await _insert(session, Account, _accounts(person_ids, demo_people, by_level))
        await load_demo_family(session, dict(zip((p.key for p in demo_people), person_ids, strict=True)))
    return True


async def load_demo_family(session: AsyncSession, person_ids: dict[str, int]) -> None:
    """亲情账户: `resident` acts for her father `elder` (over 75, no smartphone) through a proxy link
    that a reviewer approved on the household register, with every permission granted.

    The approval predates the elder's own login (the demo accounts are created now, the link in 2025):
    a proxy link is only ever approved for someone who cannot confirm themselves, and stays valid when
    they later open a login, which lets them read their audit (the request and the approval are in it,
    as the service writes them) and end the link or narrow it at any time."""
    from api.family.models import AccessAudit, FamilyLink, LinkMethod, LinkStatus, Permission, Relationship
    from api.family.service import pair_key

    rows = await session.execute(
        select(col(Account.subject), col(Account.id)).where(col(Account.provider) == "demo")
    )
    accounts: dict[str, int] = {
        subject: account_id for subject, account_id in rows.all() if account_id is not None
    }
    holder, relative = person_ids["resident"], person_ids["elder"]
    decided = dt.datetime(2025, 3, 3, 2, 0, tzinfo=dt.UTC)
    link = FamilyLink(
        ref=uuid.UUID(int=random.Random(holder).getrandbits(128)).hex[:16],
        holder_person_id=holder,
        relative_person_id=relative,
        relationship=Relationship.PARENT.value,
        method=LinkMethod.PROXY.value,
        status=LinkStatus.ACTIVE.value,
        pair_key=pair_key(holder, relative),
        requested_by_account_id=accounts["resident"],
        evidence="户口簿及父亲签字的委托书（演示数据）",
        decided_by_account_id=accounts["reviewer"],
        decision_note="材料齐全，同意代办",
        created_at=decided - dt.timedelta(days=1),
        decided_at=decided,
    )
    link.set_wanted(set(Permission))
    link.set_granted(set(Permission))
    session.add(link)
    await session.flush()
    everything = ",".join(p.value for p in Permission)
    for when, account, person, action, detail in (
        (link.created_at, "resident", holder, "link_requested", f"proxy parent: {everything}"),
        (decided, "reviewer", None, "link_granted", everything),
    ):
        session.add(
            AccessAudit(
                person_id=relative,
                occurred_at=when,
                actor_account_id=accounts[account],
                actor_person_id=person,
                link_id=link.id,
                action=action,
                detail=detail,
            )
        )
    await session.flush()


def _settle(
    policies: PolicySet,
    person: DemoPerson,
    plan: VisitPlan,
    level_of: dict[int, str],
    ytd: dict[int, YearToDate],
    balance: int,
) -> tuple[Any, dict[str, Any]]:
    day = plan.when.astimezone(SHANGHAI).date()
    level = level_of[plan.facility_index]
    visit = Visit(
        visit_date=day,
        region=COUNTY,
        insurance_type=person.insurance_type,
        age_group=_age_group(person, day),
        facility_level=level,
        locality="local",
        category=plan.category,
        items=plan.items,
        assistance_category=person.assistance_category,
        chronic_diseases=frozenset(person.chronic),
        two_diseases=frozenset(person.two_diseases),
        personal_account_balance_fen=max(balance, 0),
        use_personal_account=person.insurance_type == "employee",
    )
    before = ytd.get(day.year) or YearToDate(day.year)
    result = compute(policies, visit, before, today=DEMO_TODAY)
    ytd[day.year] = result.ytd
    version = policies.get(result.policy_version_id)
    # The engine's input is stored with the amounts, so the settlement can be replayed and audited.
    return result, {
        **settlement_service.ytd_columns(version, visit, before, result),
        "visit": visit.to_dict(),
    }


def _contributions(rng: random.Random, person: DemoPerson, pid: int, year: int) -> Iterator[dict[str, Any]]:
    if person.insurance_type == "resident":
        paid = dt.datetime(year - 1, rng.randint(9, 12), rng.randint(1, 28), 3, tzinfo=dt.UTC)
        assisted = person.assistance_category in ("tekun", "dibao")  # 资助参保: the state pays their share
        yield {
            "person_id": pid,
            "year": year,
            "period": str(year),
            "insurance_type": "resident",
            "paid_at": paid,
            "amount_fen": 0 if assisted else RESIDENT_CONTRIBUTION_FEN[year],
            "subsidy_fen": RESIDENT_SUBSIDY_FEN[year] + (RESIDENT_CONTRIBUTION_FEN[year] if assisted else 0),
        }
        return
    months = DEMO_TODAY.month if year == DEMO_TODAY.year else 12
    for month in range(1, months + 1):
        yield {
            "person_id": pid,
            "year": year,
            "period": f"{year}-{month:02d}",
            "insurance_type": "employee",
            "paid_at": dt.datetime(year, month, 1, 2, tzinfo=dt.UTC),
            "amount_fen": person.monthly_wage_fen * 2 // 100,  # employee pays 2% of wage
            "subsidy_fen": person.monthly_wage_fen * 7 // 100,
        }  # employer pays ~7% [typical]


def _flows(
    flows: list[tuple[int, list[Any], list[Any]]], settlement_ids: dict[int, list[int]]
) -> list[dict[str, Any]]:
    rows = []
    for pid, ledger, settled in flows:
        events: list[tuple[Any, int, str, int | None]] = [
            (when, amount, kind, None) for when, amount, kind, _ in ledger
        ]
        events += [
            (plan.when, -r.personal_account_fen, "settlement", settlement_ids[pid][n])
            for n, (plan, r) in enumerate(settled)
            if r.personal_account_fen
        ]
        events.sort(key=lambda e: e[0])
        balance = 0
        for when, amount, kind, sid in events:
            balance += amount
            rows.append(
                {
                    "person_id": pid,
                    "occurred_at": when,
                    "year": when.astimezone(SHANGHAI).year,
                    "kind": kind,
                    "amount_fen": amount,
                    "balance_after_fen": balance,
                    "settlement_id": sid,
                }
            )
    return rows


def _accounts(
    person_ids: list[int], people: list[DemoPerson], by_level: dict[str, list[int]]
) -> list[dict[str, Any]]:
    rows = [
        {
            "provider": "demo",
            "subject": p.key,
            "role": Role.RESIDENT.value,
            "display_name": p.name,
            "person_id": pid,
        }
        for p, pid in zip(people, person_ids, strict=True)
        if p.key in ("resident", "elder", "spouse", "stranger")
    ]
    rows += [
        {
            "provider": "demo",
            "subject": "pharmacy",
            "role": Role.PHARMACY.value,
            "display_name": "药房收银台",
            "facility_id": by_level["pharmacy"][0],
        },
        {
            "provider": "demo",
            "subject": "reviewer",
            "role": Role.REVIEWER.value,
            "display_name": "医保经办审核员",
        },
        {"provider": "demo", "subject": "admin", "role": Role.ADMIN.value, "display_name": "系统管理员"},
    ]
    now = dt.datetime.now(dt.UTC)
    for row in rows:
        row.setdefault("person_id", None)
        row.setdefault("facility_id", None)
        row.update(disabled=False, created_at=now)
    return rows


_CITY_DAYS = 34_675  # about 95 years of birth dates
_CITY_STRIDE = 7_919  # prime, coprime with _CITY_DAYS: spreads consecutive blocks over all ages
_CITY_REGIONS = 22


def city_person(index: int) -> tuple[str, str, dt.date, str]:
    """The index-th city resident's (ID number, region, birth date, gender), unique by construction.

    Every (region, birth date) block holds 500 sequence numbers, and blocks map one-to-one onto
    dates, so no two people share an ID number and nothing has to be remembered to ensure it.
    """
    region = f"3404{index % _CITY_REGIONS + 1:02d}"
    block, seq = divmod(index // _CITY_REGIONS, 500)
    if block >= _CITY_DAYS:
        raise ValueError("the city generator holds at most 381 million people")
    birth = DEMO_TODAY - dt.timedelta(days=1 + block * _CITY_STRIDE % _CITY_DAYS)
    gender = "M" if seq % 2 else "F"
    first17 = f"{region}{birth:%Y%m%d}{seq * 2 + (1 if gender == 'M' else 0):03d}"
    return first17 + idnumbers.check_digit(first17), region, birth, gender


def generate_city(out: Path, *, people: int, seed: int) -> None:
    """Streams a city-sized roster (2 million by default) to CSV in bounded memory, for benchmarks."""
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    fake = Faker("zh_CN")
    fake.seed_instance(seed)
    with (out / "people.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "id_number", "gender", "birth_date", "insurance_type", "region_code"])
        for index in tqdm(range(people), unit="person", desc="city", mininterval=1.0):
            id_number, region, birth, gender = city_person(index)
            writer.writerow(
                [
                    fake.name(),
                    id_number,
                    gender,
                    birth.isoformat(),
                    "employee"
                    if 18 <= (DEMO_TODAY - birth).days // 365 < 60 and rng.random() < 0.4
                    else "resident",
                    region,
                ]
            )
