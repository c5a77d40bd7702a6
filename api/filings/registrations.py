"""Cross-region registrations (异地就医备案) in force, as the settlement engine's locality sees them.

Read by api.settlement.service.estimate: a visit outside the person's pooling area settles as
``registered`` when an approved registration covers its region and date, else ``unregistered``.
Imports only the filings' tables, so that the settlement service can use it without a cycle.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from api.filings.models import CrossRegionRegistration


def region_prefix(code: str) -> str:
    """A province (XX0000) covers its two digits, a city (XXXX00) its four, a county only itself."""
    if code.endswith("0000"):
        return code[:2]
    if code.endswith("00"):
        return code[:4]
    return code


def covers(registered: str, visit_region: str) -> bool:
    return visit_region.startswith(region_prefix(registered))


def same_pooling_area(home: str, other: str) -> bool:
    """Same prefecture-level pooling area (地市级统筹): the first four digits of the region codes."""
    return home[:4] == other[:4]


async def registered_for(session: AsyncSession, person_id: int, visit_region: str, day: dt.date) -> bool:
    """Whether an approved, unrevoked registration of the person covers `visit_region` on `day`."""
    rows = await session.execute(
        select(col(CrossRegionRegistration.region_code)).where(
            col(CrossRegionRegistration.person_id) == person_id,
            col(CrossRegionRegistration.start_on) <= day,
            col(CrossRegionRegistration.end_on) >= day,
            col(CrossRegionRegistration.revoked_at).is_(None),
        )
    )
    return any(covers(region, visit_region) for region in rows.scalars())


async def locality(
    session: AsyncSession, person_id: int, home_region: str, visit_region: str, day: dt.date
) -> str:
    """The engine's locality of a visit in `visit_region`: local | registered | unregistered."""
    if same_pooling_area(home_region, visit_region):
        return "local"
    return "registered" if await registered_for(session, person_id, visit_region, day) else "unregistered"
