"""Fresh, isolated people, accounts and links for family and voucher tests (the demo DB is shared)."""

from __future__ import annotations

import datetime as dt
import secrets
import uuid
from dataclasses import dataclass

from starlette.applications import Starlette

from api.app import create_app
from api.auth.models import Account, AuthSession, Role
from api.family.models import FamilyLink, LinkMethod, LinkStatus, Permission
from api.family.service import pair_key
from api.people import idnumbers
from api.people.models import Enrolment, Household, InsuredPerson
from api.state import AppState

GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超兰霞平刚桂"


@dataclass
class Member:
    person_id: int
    account_id: int | None
    name: str
    id_number: str
    token: str | None
    household_id: int


def _id_number(age: int, gender: str | None = None) -> str:
    """A valid number of someone `age` full years old today (of `gender`, "M" or "F", if given)."""
    birth = dt.date.today() - dt.timedelta(days=int(age * 365.25) + secrets.randbelow(200) + 10)
    sequence = secrets.randbelow(1000)
    if gender is not None and (sequence % 2 == 1) != (gender == "M"):
        sequence ^= 1  # the 17th digit is odd for men, even for women
    first17 = f"34{secrets.randbelow(100):02d}{secrets.randbelow(100):02d}{birth:%Y%m%d}{sequence:03d}"
    return first17 + idnumbers.check_digit(first17)


async def household(state: AppState) -> int:
    async with state.db.session() as session:
        row = Household(region_code="340421", address="测试户籍")
        session.add(row)
        await session.flush()
        assert row.id is not None
        return row.id


async def person(
    state: AppState,
    *,
    age: int = 40,
    household_id: int | None = None,
    account: bool = True,
    role: Role = Role.RESIDENT,
    insured: bool = True,
    gender: str | None = None,
) -> Member:
    household_id = household_id or await household(state)
    name = "测" + "".join(secrets.choice(GIVEN) for _ in range(2))
    id_number = _id_number(age, gender)
    async with state.db.session() as session:
        row = InsuredPerson(
            ref=uuid.uuid4().hex,
            name=name,
            id_number_cipher=state.id_numbers.encrypt(id_number),
            id_number_hash=state.id_numbers.lookup_hash(id_number),
            gender=idnumbers.gender(id_number),
            birth_date=idnumbers.birth_date(id_number),
            insurance_type="resident",
            region_code="340421",
            household_id=household_id,
        )
        session.add(row)
        await session.flush()
        assert row.id is not None
        if insured:
            session.add(
                Enrolment(
                    person_id=row.id,
                    insurance_type="resident",
                    region_code="340421",
                    start_on=dt.date(2024, 1, 1),
                )
            )
        token = account_id = None
        if account:
            account_id, token = await _account(session, state, role, row.id)
        return Member(row.id, account_id, name, id_number, token, household_id)


async def couple(state: AppState, *, age: int = 40) -> tuple[Member, Member]:
    """A holder (a woman) and the man she links as her spouse: 配偶 is a man and a woman (民法典 第1049条,
    checked against the genders the ID numbers encode), so spouses are never left to a random gender."""
    return await person(state, age=age, gender="F"), await person(state, age=age, gender="M")


async def add_login(state: AppState, member: Member) -> Member:
    """The person opens their own resident login (e.g. after a proxy request was made for them)."""
    async with state.db.session() as session:
        account_id, token = await _account(session, state, Role.RESIDENT, member.person_id)
    member.account_id, member.token = account_id, token
    return member


async def staff(state: AppState, role: Role) -> str:
    """A token for a fresh reviewer/pharmacy account, for tests that must not share rate limits."""
    async with state.db.session() as session:
        return (await _account(session, state, role, None))[1]


async def _account(session: object, state: AppState, role: Role, person_id: int | None) -> tuple[int, str]:
    from sqlalchemy.ext.asyncio import AsyncSession

    assert isinstance(session, AsyncSession)
    account = Account(provider="test", subject=uuid.uuid4().hex, role=role.value, person_id=person_id)
    session.add(account)
    await session.flush()
    assert account.id is not None
    auth = AuthSession(id=str(uuid.uuid4()), account_id=account.id)
    session.add(auth)
    await session.flush()
    token = state.tokens.issue_access(
        account_id=account.id,
        role=role.value,
        session_id=auth.id,
        person_id=person_id,
        now=dt.datetime.now(dt.UTC),
    )
    return account.id, token


async def link(
    state: AppState,
    holder: Member,
    relative: Member,
    permissions: set[Permission],
    *,
    method: LinkMethod = LinkMethod.CONFIRMATION,
) -> int:
    """An active link made directly in the database (the request/confirm flow has its own tests)."""
    assert holder.account_id is not None
    async with state.db.session() as session:
        row = FamilyLink(
            ref=secrets.token_hex(8),
            holder_person_id=holder.person_id,
            relative_person_id=relative.person_id,
            relationship="parent",
            method=method.value,
            status=LinkStatus.ACTIVE.value,
            pair_key=pair_key(holder.person_id, relative.person_id),
            requested_by_account_id=holder.account_id,
            decided_at=dt.datetime.now(dt.UTC),
        )
        row.set_wanted(set(Permission))
        row.set_granted(permissions)
        session.add(row)
        await session.flush()
        assert row.id is not None
        return row.id


def variant(state: AppState, **overrides: object) -> tuple[AppState, Starlette]:
    """Another app on the same database: a second worker, or the same one with other settings."""
    settings = state.settings.model_copy(update=overrides)
    other = AppState(**{**vars(state), "settings": settings})
    return other, create_app(settings, other)


def second_worker(state: AppState) -> tuple[AppState, Starlette]:
    """A separate worker: its own engine and connections on the same database, no shared memory."""
    fresh = AppState.build(state.settings)
    return fresh, create_app(state.settings, fresh)
