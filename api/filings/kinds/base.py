"""What every filing kind is: its fields, materials and stages as data, plus three small hooks."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from sqlalchemy.ext.asyncio import AsyncSession

from api.filings.kinds.fields import Material, Record, Stage
from api.filings.models import Filing
from api.people.models import InsuredPerson


@dataclass
class Context:
    session: AsyncSession
    person: InsuredPerson
    """Whose filing it is."""
    today: dt.date
    """Asia/Shanghai."""
    path: str = "input.fields"
    """Where the fields sit in the request, for the `field` of an error."""

    def at(self, name: str) -> str:
        return f"{self.path}.{name}"


@dataclass(frozen=True)
class KindComputation:
    amount_fen: int
    details: dict[str, Any] = field(default_factory=dict)


class Kind:
    code: str
    label: str
    spec: Record
    materials: tuple[Material, ...]
    stages: tuple[Stage, ...]
    sources: tuple[str, ...] = ()
    """Where the kind's figures come from, shown to clients."""
    depends: ClassVar[Mapping[str, frozenset[str]]] = {}
    """Field -> the materials its value may make required (see `required_materials`): when a reviewer
    asks for a field to be corrected, these may be uploaded with the correction."""

    def required_materials(self, values: Mapping[str, Any]) -> list[str]:
        """The material codes a submission must carry, given the fields."""
        return []

    def invoices(self, values: Mapping[str, Any]) -> list[str]:
        """Invoice numbers the filing claims (unique across every filing)."""
        return []

    def birth(self, values: Mapping[str, Any]) -> dt.date | None:
        """The delivery date of the birth the filing claims (one claim per person and date)."""
        return None

    async def check(self, ctx: Context, values: dict[str, Any]) -> None:
        """Rules across fields and against the person (dates in range, eligibility); raises BadUserInput."""

    async def compute(self, ctx: Context, values: Mapping[str, Any]) -> KindComputation | None:
        """What would be paid, if the kind pays anything."""
        return None

    async def approve(self, ctx: Context, filing: Filing, values: Mapping[str, Any]) -> None:
        """What approval changes (entitlements, settlements), in the caller's transaction."""

    def material(self, code: str) -> Material | None:
        return next((m for m in self.materials if m.code == code), None)

    def stage(self, code: str) -> Stage | None:
        return next((s for s in self.stages if s.code == code), None)

    def next_stage(self, code: str) -> Stage | None:
        codes = [s.code for s in self.stages]
        index = codes.index(code) + 1
        return self.stages[index] if index < len(codes) else None


def review_stages(first: int, second: int, payment: int | None = None) -> tuple[Stage, ...]:
    """初审 → 复审 (→ 财务支付), each with its limit in working days: the "four flowcharts" of staged review
    name the first reviewer, the second reviewer and the finance officer of every step."""
    stages = [Stage("first_review", "初审", first), Stage("second_review", "复审", second)]
    if payment is not None:
        stages.append(Stage("payment", "财务支付", payment))
    return tuple(stages)
