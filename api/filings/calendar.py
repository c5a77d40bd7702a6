"""Working days (工作日) on the official Chinese calendar, for the filings' statutory time limits.

The calendar is the `chinese-calendar` package (PyPI `chinesecalendar`): the State Council's yearly
holiday notices (国务院办公厅关于…部分节假日安排的通知) with their make-up working days (调休上班, often a
Saturday or Sunday). It holds the years up to its release; the notice for a year comes out in the
autumn before it, so a deadline can run past the data.

Fallback past the data (documented, deliberate): Monday to Friday are working days, except the
statutory holidays that fall on fixed Gregorian dates under 全国年节及纪念日放假办法 (2024 revision,
in force from 2025): 元旦 1 January; 劳动节 1-2 May; 国庆节 1-3 October. The lunar holidays (春节, 清明,
端午, 中秋) and the make-up days cannot be known before the notice, so such a deadline is marked
*estimated* (`Deadline.estimated`); it is computed once, when the stage starts, and reviewers see the
flag. Upgrading the package brings the real days for later stages.

Counting: a limit of N working days starting on day D ends on the N-th working day after D (the day of
receipt is not counted, as 行政许可法 第八十二条 counts periods).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import lru_cache

from chinese_calendar import constants as official

FIXED_HOLIDAYS = frozenset({(1, 1), (5, 1), (5, 2), (10, 1), (10, 2), (10, 3)})
"""(month, day) of the fixed-date statutory holidays, used only past the package's data."""
MAX_LIMIT_DAYS = 366
"""No statutory limit is longer than a year of working days; a bigger one is a bug."""


def _data_years() -> tuple[int, int]:
    years = [day.year for day in official.holidays]
    return min(years), max(years)


FIRST_YEAR, LAST_YEAR = _data_years()


def covered(day: dt.date) -> bool:
    """Whether the official calendar's data includes `day`'s year."""
    return FIRST_YEAR <= day.year <= LAST_YEAR


@lru_cache(maxsize=4096)
def is_working_day(day: dt.date) -> bool:
    if covered(day):
        # chinese_calendar.is_workday(day), without its per-call scan of every holiday for the year range
        return day in official.workdays or (day.weekday() < 5 and day not in official.holidays)
    return day.weekday() < 5 and (day.month, day.day) not in FIXED_HOLIDAYS


@dataclass(frozen=True)
class Deadline:
    due_on: dt.date
    """The last working day of the limit (inclusive)."""
    estimated: bool
    """Some day counted lies past the official calendar's data (see the module's fallback)."""


def add_working_days(start: dt.date, days: int) -> Deadline:
    """The `days`-th working day after `start` (`start` itself not counted)."""
    if not 0 < days <= MAX_LIMIT_DAYS:
        raise ValueError(f"a limit is 1 to {MAX_LIMIT_DAYS} working days, not {days}")
    day, counted, estimated = start, 0, False
    while counted < days:
        day += dt.timedelta(days=1)
        estimated = estimated or not covered(day)
        if is_working_day(day):
            counted += 1
    return Deadline(day, estimated)


def working_days_between(start: dt.date, end: dt.date) -> int:
    """Working days after `start` up to and including `end` (0 when end <= start)."""
    count, day = 0, start
    while day < end:
        day += dt.timedelta(days=1)
        count += is_working_day(day)
    return count
