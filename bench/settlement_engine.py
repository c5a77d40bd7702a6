"""Settlements per second of the shared settlement engine on one core.

A realistic county mix: mostly village/primary outpatient visits, some pharmacy, chronic and 两病
visits, a few admissions and special drugs; ~5% of people in an assistance category; 3/4 residents.
Visits and year-to-date totals are generated first (seeded); only ``compute`` (policy selection,
validation, all five layers, receipt lines and new totals) is timed, in a plain loop.

    .venv/bin/python bench/settlement_engine.py [--visits N] [--repeat R]
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import random
import statistics
import time

from sync.settlement import BillItem, Visit, YearToDate, compute, load_default_policies

TODAY = dt.date(2025, 12, 31)

# (category, facility level, share, bill range in fen)
MIX = [
    ("general_outpatient", "village", 0.50, (1_500, 15_000)),
    ("general_outpatient", "primary", 0.12, (3_000, 40_000)),
    ("pharmacy", "primary", 0.08, (2_000, 30_000)),
    ("chronic_outpatient", "village", 0.08, (5_000, 80_000)),
    ("two_diseases_outpatient", "village", 0.05, (3_000, 30_000)),
    ("inpatient", "primary", 0.03, (150_000, 800_000)),
    ("inpatient", "secondary", 0.025, (400_000, 3_000_000)),
    ("inpatient", "tertiary", 0.01, (1_000_000, 20_000_000)),
    ("special_drug", "tertiary", 0.005, (500_000, 3_000_000)),
]
ASSISTANCE = [
    (None, 0.95),
    ("dibao", 0.03),
    ("tekun", 0.005),
    ("dibao_edge", 0.005),
    ("poverty_monitored", 0.005),
    ("poverty_returned", 0.003),
    ("illness_poverty", 0.002),
]


def make_visits(n: int, seed: int = 4) -> list[tuple[Visit, YearToDate]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        cat, level, _, (lo, hi) = rng.choices(MIX, weights=[m[2] for m in MIX])[0]
        ins = "employee" if rng.random() < 0.25 and cat != "two_diseases_outpatient" else "resident"
        total = rng.randint(lo, hi)
        items = []
        for _ in range(rng.randint(1, 6)):
            share = rng.randint(1, max(1, total // 2))
            total -= share
            roll = rng.random()
            if roll < 0.65:
                items.append(BillItem(share, "class_a"))
            elif roll < 0.92:
                items.append(BillItem(share, "class_b", rng.choice((50, 100, 150, 200))))
            else:
                items.append(BillItem(share, "class_c"))
            if total <= 1:
                break
        day = dt.date(2025, 1, 1) + dt.timedelta(days=rng.randrange(365))
        inpatient_before = rng.random() < 0.1
        ytd = YearToDate(
            2025,
            deductible_used_fen={"general_outpatient": rng.randrange(0, 60_000)},
            basic_paid_fen={
                "general_outpatient": rng.randrange(0, 45_000),
                "inpatient": rng.randrange(0, 3_000_000) if inpatient_before else 0,
            },
            critical_oop_fen=rng.randrange(0, 2_500_000) if inpatient_before else 0,
        )
        out.append(
            (
                Visit(
                    visit_date=day,
                    region=rng.choice(("340421", "340400", "371002")),
                    insurance_type=ins,
                    age_group=rng.choices(("child", "adult", "elderly"), weights=(15, 55, 30))[0],
                    facility_level=level,
                    locality=rng.choices(("local", "registered", "unregistered"), weights=(95, 3, 2))[0],
                    category=cat,
                    items=tuple(items),
                    assistance_category=rng.choices(
                        [a for a, _ in ASSISTANCE], weights=[w for _, w in ASSISTANCE]
                    )[0],
                    chronic_diseases=frozenset({"hypertension_3"}),
                    two_diseases=rng.choice(
                        (frozenset({"hypertension"}), frozenset({"hypertension", "diabetes"}))
                    ),
                    personal_account_balance_fen=rng.randrange(0, 300_000) if ins == "employee" else 0,
                ),
                ytd,
            )
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--visits", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    policies = load_default_policies()
    visits = make_visits(args.visits)
    rates = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        for visit, ytd in visits:
            compute(policies, visit, ytd, today=TODAY)
        rates.append(len(visits) / (time.perf_counter() - start))
    print(f"python {platform.python_version()} on {platform.machine()}, {len(visits)} visits x {args.repeat}")
    print(f"best   {max(rates):,.0f} settlements/s")
    print(f"median {statistics.median(rates):,.0f} settlements/s")


if __name__ == "__main__":
    main()
