"""Batch look-ups for one request: a page of 50 settlements loads its facilities in one query."""

from __future__ import annotations

from strawberry.dataloader import DataLoader

from api.context import Context
from api.people import service
from api.people.models import Facility


def _facility_loader(ctx: Context) -> DataLoader[int, Facility | None]:
    async def load(ids: list[int]) -> list[Facility | None]:
        async with ctx.db() as session:
            return await service.facilities_by_ids(session, ids)

    return DataLoader(load_fn=load)


def facilities(ctx: Context) -> DataLoader[int, Facility | None]:
    return ctx.loader("facilities", _facility_loader)
