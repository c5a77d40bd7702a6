"""一站式结算: the one settlement computation shared by the clinic terminal and the server.

Layer order, each working on what the previous layers left to the person:

1. Bill split: total = 丙类 (non-compliant, 自费) + 乙类先行自付 (class-B self-pay share)
   + 政策范围内 compliant amount.
2. Basic insurance (基本医保) on the compliant amount: deductible (per admission or annual, by
   facility level), then ratio by level (+ age bonus, - locality reduction), limited by the
   category's (pool's) annual cap and the basic annual cap. A category whose ratio at the level is
   0 in the policy (特药, which 大病 pays) gets no basic payment whatever the bonuses, and uses no
   deductible and no cap.
3. Critical-illness insurance (大病保险) on the compliant out-of-pocket left by basic: for the
   categories that accumulate (inpatient, chronic outpatient) by segments of the *cumulative*
   out-of-pocket above the threshold; for 大病特药 by a flat ratio; limited by its annual cap
   (waived, 特药 included, for the assistance categories whose tilt says so).
4. Medical assistance (医疗救助) on the compliant remainder, by assistance category: annual
   threshold, ratio, annual cap; only for covered visit categories and localities.
5. Personal account (个人账户, incl. 家庭共济 balances): when the person opts in, pays the
   remaining catalogue share (compliant remainder + 乙类先行自付) up to the balance; never 丙类.
6. Cash (现金): whatever is left, so the layers always add up to the bill to the fen.

Rounding: every ratio is applied as ``round_half_up(amount * permille / 1000)`` to the fen, once per
layer: the 乙类 self-pay share once over the whole bill, basic once, assistance once; 大病 once on
the cumulative amount (this year's paid-through-now minus paid-through-before, so a year of visits
rounds like one bill). Caps and deductibles are whole fen already. Cash is the exact remainder.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ._check import MAX_FEN, Reader, is_int
from .codes import (
    AGE_GROUPS,
    ASSISTANCE_CATEGORIES,
    DEDUCTIBLE_BASES,
    FACILITY_LEVELS,
    INSURANCE_TYPES,
    ITEM_CLASSES,
    LOCALITIES,
    TWO_DISEASES,
    VISIT_CATEGORIES,
)
from .errors import SettlementInputError
from .policy import PolicySet, PolicyVersion, Segment, check_not_far_future

MAX_ITEMS = 10_000
# Year-to-date totals above this are corrupt, not merely "cap reached".
MAX_YTD_FEN = 100 * MAX_FEN

_EMPTY: Mapping[str, int] = {}


def round_half_up(numerator: int, denominator: int = 1000) -> int:
    """The one rounding rule, for non-negative integers: to the nearest, halves up."""
    return (2 * numerator + denominator) // (2 * denominator)


@dataclass(slots=True, frozen=True)
class BillItem:
    """One line of the bill, in integer fen.

    ``self_pay_permille`` is the 乙类 先行自付 share in per mille (0-1000, e.g. 100 = 10%); it
    must be 0 for 甲类 and 丙类 items.
    """

    amount_fen: int
    item_class: str = "class_a"
    self_pay_permille: int = 0
    code: str = ""
    name: str = ""


@dataclass(slots=True, frozen=True)
class Visit:
    visit_date: dt.date
    region: str  # 6-digit region code of the insured person's 参保地
    insurance_type: str  # employee | resident
    age_group: str  # child (<18) | adult | elderly (60+; employee retirees)
    facility_level: str  # village | primary | secondary | tertiary
    locality: str  # local | registered | unregistered
    category: str  # see codes.VISIT_CATEGORIES
    items: tuple[BillItem, ...]
    assistance_category: str | None = None
    chronic_diseases: frozenset[str] = frozenset()  # recognised 门诊慢特病 codes
    two_diseases: frozenset[str] = frozenset()  # 两病 under management: hypertension, diabetes
    personal_account_balance_fen: int = 0
    use_personal_account: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "visit_date": self.visit_date.isoformat(),
            "region": self.region,
            "insurance_type": self.insurance_type,
            "age_group": self.age_group,
            "facility_level": self.facility_level,
            "locality": self.locality,
            "category": self.category,
            "items": [
                {
                    "amount_fen": i.amount_fen,
                    "item_class": i.item_class,
                    "self_pay_permille": i.self_pay_permille,
                    "code": i.code,
                    "name": i.name,
                }
                for i in self.items
            ],
            "assistance_category": self.assistance_category,
            "chronic_diseases": sorted(self.chronic_diseases),
            "two_diseases": sorted(self.two_diseases),
            "personal_account_balance_fen": self.personal_account_balance_fen,
            "use_personal_account": self.use_personal_account,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Visit:
        """Parse the JSON form; types are checked here, values again in ``compute``."""
        r = Reader(data, "visit", SettlementInputError)
        raw_items = r.raw("items")
        if not isinstance(raw_items, list):
            raise r.error("items", "must be a list")
        items = []
        for n, raw in enumerate(raw_items[: MAX_ITEMS + 1]):
            ir = Reader(raw, f"visit.items[{n}]", SettlementInputError)
            items.append(
                BillItem(
                    ir.integer("amount_fen", lo=-MAX_FEN * 10, hi=MAX_FEN * 10),
                    ir.string("item_class"),
                    ir.integer("self_pay_permille", lo=-1000, hi=10**6) if ir.has("self_pay_permille") else 0,
                    _text(ir, "code"),
                    _text(ir, "name"),
                )
            )
            ir.done()
        codes = {}
        for key in ("chronic_diseases", "two_diseases"):
            value = r.opt_raw(key) or []
            if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
                raise r.error(key, "must be a list of code strings")
            codes[key] = frozenset(value)
        visit = cls(
            visit_date=r.date("visit_date"),
            region=r.string("region"),
            insurance_type=r.string("insurance_type"),
            age_group=r.string("age_group"),
            facility_level=r.string("facility_level"),
            locality=r.string("locality"),
            category=r.string("category"),
            items=tuple(items),
            assistance_category=r.opt_string("assistance_category"),
            chronic_diseases=codes["chronic_diseases"],
            two_diseases=codes["two_diseases"],
            personal_account_balance_fen=(
                r.integer("personal_account_balance_fen", lo=-MAX_FEN * 10, hi=MAX_FEN * 10)
                if r.has("personal_account_balance_fen")
                else 0
            ),
            use_personal_account=r.boolean("use_personal_account", default=True),
        )
        r.done()
        return visit


def _text(r: Reader, key: str) -> str:
    value = r.opt_raw(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise r.error(key, "must be a string")
    return value


@dataclass(slots=True, frozen=True)
class YearToDate:
    """Totals of the calendar year ``year`` before a visit, all integer fen.

    Maps are keyed by the visit category that owns the pool (pharmacy counts under
    general_outpatient in the default policy); absent keys are 0.
    """

    year: int
    deductible_used_fen: Mapping[str, int] = field(default_factory=dict)
    basic_paid_fen: Mapping[str, int] = field(default_factory=dict)
    critical_oop_fen: int = 0  # cumulative compliant out-of-pocket after basic, that 大病 works on
    critical_paid_fen: int = 0
    assistance_threshold_used_fen: int = 0
    assistance_paid_fen: int = 0

    @classmethod
    def empty(cls, year: int) -> YearToDate:
        return cls(year=year)

    def to_dict(self) -> dict[str, Any]:
        return {
            "year": self.year,
            "deductible_used_fen": dict(self.deductible_used_fen),
            "basic_paid_fen": dict(self.basic_paid_fen),
            "critical_oop_fen": self.critical_oop_fen,
            "critical_paid_fen": self.critical_paid_fen,
            "assistance_threshold_used_fen": self.assistance_threshold_used_fen,
            "assistance_paid_fen": self.assistance_paid_fen,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> YearToDate:
        r = Reader(data, "ytd", SettlementInputError)
        maps = {}
        for key in ("deductible_used_fen", "basic_paid_fen"):
            sub = Reader(r.opt_raw(key) or {}, f"ytd.{key}", SettlementInputError)
            maps[key] = {k: sub.integer(k, hi=MAX_YTD_FEN) for k in sub.names()}

        def total(key: str) -> int:
            return r.integer(key, hi=MAX_YTD_FEN) if r.has(key) else 0

        ytd = cls(
            year=r.integer("year", lo=1900, hi=9999),
            deductible_used_fen=maps["deductible_used_fen"],
            basic_paid_fen=maps["basic_paid_fen"],
            critical_oop_fen=total("critical_oop_fen"),
            critical_paid_fen=total("critical_paid_fen"),
            assistance_threshold_used_fen=total("assistance_threshold_used_fen"),
            assistance_paid_fen=total("assistance_paid_fen"),
        )
        r.done()
        return ytd


@dataclass(slots=True, frozen=True)
class SettlementResult:
    policy_version_id: str
    total_fen: int
    non_compliant_fen: int  # 丙类, always the person's
    class_b_self_pay_fen: int  # 乙类先行自付
    compliant_fen: int  # 政策范围内
    deductible_fen: int  # 起付线 applied on this visit
    basic_ratio_permille: int  # ratio actually applied by basic insurance
    basic_fen: int
    critical_illness_fen: int
    assistance_fen: int
    personal_account_fen: int
    cash_fen: int
    ytd: YearToDate  # totals after this visit
    lines: tuple[str, ...]  # zh-CN receipt lines

    @property
    def insurance_fen(self) -> int:
        """Paid by the funds: basic + 大病 + assistance."""
        return self.basic_fen + self.critical_illness_fen + self.assistance_fen

    @property
    def personal_fen(self) -> int:
        """The person's share: personal account + cash."""
        return self.personal_account_fen + self.cash_fen

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy_version_id": self.policy_version_id,
            "total_fen": self.total_fen,
            "non_compliant_fen": self.non_compliant_fen,
            "class_b_self_pay_fen": self.class_b_self_pay_fen,
            "compliant_fen": self.compliant_fen,
            "deductible_fen": self.deductible_fen,
            "basic_ratio_permille": self.basic_ratio_permille,
            "basic_fen": self.basic_fen,
            "critical_illness_fen": self.critical_illness_fen,
            "assistance_fen": self.assistance_fen,
            "personal_account_fen": self.personal_account_fen,
            "cash_fen": self.cash_fen,
            "ytd": self.ytd.to_dict(),
            "lines": list(self.lines),
        }


# ------------------------------------------------------------------------------------ formatting


def yuan(fen: int) -> str:
    sign = "-" if fen < 0 else ""
    fen = abs(fen)
    return f"{sign}{fen // 100}.{fen % 100:02d}元"


def percent(permille: int) -> str:
    whole, tenth = divmod(permille, 10)
    return f"{whole}%" if tenth == 0 else f"{whole}.{tenth}%"


def points(permille: int) -> str:
    """A ratio difference, in percentage points (个百分点)."""
    return percent(permille)[:-1] + "个百分点"


# ------------------------------------------------------------------------------------ validation


def _bad(field_path: str, message: str) -> SettlementInputError:
    return SettlementInputError(field_path, message)


def _check_code(value: object, allowed: Mapping[str, str], field_path: str) -> None:
    if not isinstance(value, str) or value not in allowed:
        raise _bad(field_path, f"unknown code {value!r}; expected one of {sorted(allowed)}")


def _check_money(value: object, field_path: str, hi: int = MAX_FEN) -> int:
    if not is_int(value):
        raise _bad(field_path, f"must be an integer amount of fen, not {type(value).__name__}")
    assert isinstance(value, int)
    if value < 0:
        raise _bad(field_path, "must not be negative")
    if value > hi:
        raise _bad(field_path, f"must be <= {hi} fen")
    return value


def _check_visit(visit: Visit) -> None:
    if not isinstance(visit, Visit):
        raise _bad("visit", "must be a Visit")
    region = visit.region
    if not (isinstance(region, str) and len(region) == 6 and region.isascii() and region.isdigit()):
        raise _bad("visit.region", "must be a 6-digit region code")
    _check_code(visit.insurance_type, INSURANCE_TYPES, "visit.insurance_type")
    _check_code(visit.age_group, AGE_GROUPS, "visit.age_group")
    _check_code(visit.facility_level, FACILITY_LEVELS, "visit.facility_level")
    _check_code(visit.locality, LOCALITIES, "visit.locality")
    _check_code(visit.category, VISIT_CATEGORIES, "visit.category")
    if visit.assistance_category is not None:
        _check_code(visit.assistance_category, ASSISTANCE_CATEGORIES, "visit.assistance_category")
    if not isinstance(visit.chronic_diseases, frozenset) or not all(
        isinstance(d, str) and d for d in visit.chronic_diseases
    ):
        raise _bad("visit.chronic_diseases", "must be a frozenset of disease codes")
    if not isinstance(visit.two_diseases, frozenset) or not visit.two_diseases <= TWO_DISEASES.keys():
        raise _bad("visit.two_diseases", f"must be a subset of {sorted(TWO_DISEASES)}")
    _check_money(visit.personal_account_balance_fen, "visit.personal_account_balance_fen")
    if not isinstance(visit.use_personal_account, bool):
        raise _bad("visit.use_personal_account", "must be a boolean")
    if visit.category == "chronic_outpatient" and not visit.chronic_diseases:
        raise _bad("visit.chronic_diseases", "a chronic_outpatient visit needs a recognised chronic disease")
    if visit.category == "two_diseases_outpatient" and not visit.two_diseases:
        raise _bad("visit.two_diseases", "a two_diseases_outpatient visit needs hypertension and/or diabetes")


def _check_ytd(ytd: YearToDate, year: int) -> None:
    if not isinstance(ytd, YearToDate):
        raise _bad("ytd", "must be a YearToDate")
    if ytd.year != year or not is_int(ytd.year):
        raise _bad("ytd.year", f"must be the visit's year {year}, got {ytd.year!r}")
    for name in ("deductible_used_fen", "basic_paid_fen"):
        values = getattr(ytd, name)
        if not isinstance(values, Mapping):
            raise _bad(f"ytd.{name}", "must be a mapping of visit category to fen")
        for k, v in values.items():
            _check_code(k, VISIT_CATEGORIES, f"ytd.{name}")
            _check_money(v, f"ytd.{name}.{k}", MAX_YTD_FEN)
    _check_money(ytd.critical_oop_fen, "ytd.critical_oop_fen", MAX_YTD_FEN)
    _check_money(ytd.critical_paid_fen, "ytd.critical_paid_fen", MAX_YTD_FEN)
    _check_money(ytd.assistance_threshold_used_fen, "ytd.assistance_threshold_used_fen", MAX_YTD_FEN)
    _check_money(ytd.assistance_paid_fen, "ytd.assistance_paid_fen", MAX_YTD_FEN)


def _split_bill(items: object) -> tuple[int, int, int]:
    """(total, 丙类, 乙类先行自付) with the self-pay share rounded once over the whole bill."""
    if not isinstance(items, tuple | list):
        raise _bad("visit.items", "must be a list of bill items")
    if not items:
        raise _bad("visit.items", "the bill is empty")
    if len(items) > MAX_ITEMS:
        raise _bad("visit.items", f"more than {MAX_ITEMS} items")
    total = non_compliant = b_numerator = 0
    for n, item in enumerate(items):
        if not isinstance(item, BillItem):
            raise _bad(f"visit.items[{n}]", "must be a BillItem")
        amount = item.amount_fen
        if type(amount) is not int or amount < 0 or amount > MAX_FEN:
            _check_money(amount, f"visit.items[{n}].amount_fen")
        share = item.self_pay_permille
        cls = item.item_class
        if cls == "class_a":
            if share != 0 or type(share) is not int:
                raise _bad(f"visit.items[{n}].self_pay_permille", "must be 0 for a class_a item")
        elif cls == "class_b":
            if type(share) is not int or not 0 <= share <= 1000:
                raise _bad(
                    f"visit.items[{n}].self_pay_permille",
                    "must be an integer per mille between 0 and 1000 (0-100%)",
                )
            b_numerator += amount * share
        elif cls == "class_c":
            if share != 0 or type(share) is not int:
                raise _bad(f"visit.items[{n}].self_pay_permille", "must be 0 for a class_c item")
            non_compliant += amount
        else:
            _check_code(cls, ITEM_CLASSES, f"visit.items[{n}].item_class")
        total += amount
    if total == 0:
        raise _bad("visit.items", "the bill total is zero")
    if total > MAX_FEN:
        raise _bad("visit.items", f"the bill total exceeds {MAX_FEN} fen (10 million yuan)")
    return total, non_compliant, round_half_up(b_numerator)


def _segments_paid(x: int, segments: tuple[Segment, ...], bonus: int) -> int:
    """Numerator (fen x per mille) that 大病 pays on the first ``x`` fen above its threshold."""
    acc = 0
    for seg in segments:
        start = seg.from_fen
        if x <= start:
            break
        end = seg.to_fen
        top = x if end is None or x < end else end
        acc += (top - start) * min(1000, seg.ratio_permille + bonus)
    return acc


# ---------------------------------------------------------------------------------------- engine


def compute(
    policy: PolicySet | PolicyVersion,
    visit: Visit,
    ytd: YearToDate | None = None,
    *,
    today: dt.date | None = None,
) -> SettlementResult:
    """Settle one visit. ``policy`` is the set to select from (by ``visit.region`` and date) or an
    explicit version that must be in force on the visit date. ``ytd`` defaults to an empty year.
    ``today`` (default: the local date) only bounds how far in the future a visit may be dated.
    Raises SettlementInputError naming the field for any bad input; never returns a guess."""
    _check_visit(visit)
    day = visit.visit_date
    if isinstance(policy, PolicySet):
        version = policy.select(visit.region, day, today=today)
    elif isinstance(policy, PolicyVersion):
        check_not_far_future(day, today)
        if not policy.in_force(day):
            raise _bad(
                "visit.visit_date", f"policy version {policy.id!r} is not in force on {day.isoformat()}"
            )
        version = policy
    else:
        raise _bad("policy", "must be a PolicySet or PolicyVersion")
    if ytd is None:
        ytd = YearToDate(day.year)
    _check_ytd(ytd, day.year)
    total, non_compliant, b_self = _split_bill(visit.items)
    return _settle(version, visit, ytd, total, non_compliant, b_self)


def _settle(
    version: PolicyVersion, visit: Visit, ytd: YearToDate, total: int, non_compliant: int, b_self: int
) -> SettlementResult:
    rules = version.rules_for(visit.insurance_type)
    category = visit.category
    rule = rules.categories[category]
    if not rule.covered:
        raise _bad(
            "visit.category",
            f"{category} is not covered by {visit.insurance_type} insurance in policy {version.id}",
        )
    level = visit.facility_level
    compliant = total - non_compliant - b_self
    lines = [
        f"结算政策：{version.name}（{version.id}）",
        f"{INSURANCE_TYPES[visit.insurance_type]}·{VISIT_CATEGORIES[category]}·"
        f"{FACILITY_LEVELS[level]}·{LOCALITIES[visit.locality]}",
        f"费用总额{yuan(total)}：政策范围内{yuan(compliant)}，乙类先行自付{yuan(b_self)}，丙类自费{yuan(non_compliant)}",
    ]

    # -- 2. basic insurance
    pool = rule.pool
    assert rule.deductible_fen is not None and rule.ratio_permille is not None
    ded_used = ytd.deductible_used_fen.get(pool, 0)
    basic_ytd = ytd.basic_paid_fen
    pool_paid = basic_ytd.get(pool, 0)
    policy_ratio = rule.ratio_permille[level]
    if policy_ratio == 0:
        # Basic insurance does not pay this category here (e.g. 特药, which 大病 pays): bonuses raise a
        # ratio basic pays, they never create one; and the visit uses no deductible and no cap.
        deductible = basic = ratio = 0
        lines.append(
            f"基本医保：{VISIT_CATEGORIES[category]}基本医保不予支付（报销比例0%），统筹支付{yuan(0)}"
        )
    else:
        ded_standard = rule.deductible_fen[level]
        ded_left = ded_standard if rule.deductible_basis == "per_visit" else max(0, ded_standard - ded_used)
        deductible = min(ded_left, compliant)
        age_bonus = rules.age_bonus_permille[visit.age_group]
        loc_cut = rules.locality_reduction_permille[visit.locality]
        ratio = min(1000, max(0, policy_ratio + age_bonus - loc_cut))
        basic = round_half_up((compliant - deductible) * ratio)
        if category == "two_diseases_outpatient":
            assert rule.two_diseases_cap_fen is not None
            key = "both" if len(visit.two_diseases) == 2 else next(iter(visit.two_diseases))
            pool_cap: int | None = rule.two_diseases_cap_fen[key]
        else:
            pool_cap = rule.annual_cap_fen
        # Both caps are "remaining" amounts; totals already past a cap leave 0, never a negative payment.
        limit = max(0, rules.basic_annual_cap_fen - sum(basic_ytd.values()))
        limit_note = f"统筹基金年度最高支付限额{yuan(rules.basic_annual_cap_fen)}"
        if pool_cap is not None and pool_cap - pool_paid < limit:
            limit = max(0, pool_cap - pool_paid)
            limit_note = f"{VISIT_CATEGORIES[pool]}年度支付限额{yuan(pool_cap)}，本年已付{yuan(pool_paid)}"
        cap_note = ""
        if basic > limit:
            basic = limit
            cap_note = f"（{limit_note}，已达限额）"
        ratio_note = ""
        if age_bonus:
            ratio_note += f"，{AGE_GROUPS[visit.age_group]}提高{points(age_bonus)}"
        if loc_cut:
            ratio_note += f"，{LOCALITIES[visit.locality]}降低{points(loc_cut)}"
        basis = DEDUCTIBLE_BASES[rule.deductible_basis]
        lines.append(
            f"基本医保：起付线{yuan(deductible)}（{basis}标准{yuan(ded_standard)}），"
            f"报销比例{percent(ratio)}{ratio_note}，统筹支付{yuan(basic)}{cap_note}"
        )

    # -- 3. critical illness
    crit = rules.critical
    oop = compliant - basic
    oop_before = ytd.critical_oop_fen
    oop_after = oop_before
    critical = 0
    assist_cat = visit.assistance_category
    tilt = crit.tilt.get(assist_cat) if assist_cat is not None else None
    crit_note = ""
    if category == "special_drug":
        sd_ratio = crit.special_drug_ratio_permille
        critical = round_half_up(oop * sd_ratio)
        crit_line = f"大病保险（特药）：按{percent(sd_ratio)}支付"
        if tilt is not None and tilt.cap_waived:
            # 特药 has its own flat ratio; of the tilt, only "no cap" applies to it.
            crit_note = f"（{ASSISTANCE_CATEGORIES[assist_cat or '']}倾斜，不设封顶线）"
    elif category in crit.categories:
        oop_after = oop_before + oop
        threshold = crit.threshold_fen
        bonus = 0
        if tilt is not None:
            threshold -= round_half_up(threshold * tilt.threshold_discount_permille)
            bonus = tilt.ratio_bonus_permille
            who = ASSISTANCE_CATEGORIES[assist_cat or ""]
            no_cap = "，不设封顶线" if tilt.cap_waived else ""
            crit_note = (
                f"（{who}倾斜：起付线降低{percent(tilt.threshold_discount_permille)}，"
                f"比例提高{points(bonus)}{no_cap}）"
            )
        # Paid-through-now minus paid-through-before: one rounding of the cumulative amount.
        segs = crit.segments
        critical = round_half_up(_segments_paid(max(0, oop_after - threshold), segs, bonus)) - round_half_up(
            _segments_paid(max(0, oop_before - threshold), segs, bonus)
        )
        crit_line = f"大病保险：年度累计个人负担合规费用{yuan(oop_after)}，起付线{yuan(threshold)}，分段支付"
    else:
        crit_line = ""
    # The tilt that waives the cap waives it for every 大病 payment of the person, 特药 included.
    if critical and not (tilt is not None and tilt.cap_waived):
        crit_left = max(0, crit.annual_cap_fen - ytd.critical_paid_fen)
        if critical > crit_left:
            critical = crit_left
            crit_note += f"（大病保险年度限额{yuan(crit.annual_cap_fen)}，已达限额）"
    lines.append(
        f"{crit_line}{yuan(critical)}{crit_note}" if crit_line else "大病保险：本类费用不纳入大病保险"
    )

    # -- 4. medical assistance
    remaining = oop - critical
    assistance = 0
    thr_applied = 0
    aid = version.assistance
    if assist_cat is None:
        lines.append("医疗救助：非救助对象")
    elif category not in aid.visit_categories or visit.locality not in aid.localities:
        lines.append(f"医疗救助：{ASSISTANCE_CATEGORIES[assist_cat]}，本次就医不在救助范围")
    else:
        a = aid.rules[assist_cat]
        thr_applied = min(max(0, a.threshold_fen - ytd.assistance_threshold_used_fen), remaining)
        assistance = round_half_up((remaining - thr_applied) * a.ratio_permille)
        aid_note = ""
        aid_left = max(0, a.annual_cap_fen - ytd.assistance_paid_fen)
        if assistance > aid_left:
            assistance = aid_left
            aid_note = f"（年度救助限额{yuan(a.annual_cap_fen)}，已达限额）"
        lines.append(
            f"医疗救助：{ASSISTANCE_CATEGORIES[assist_cat]}，年度起付标准{yuan(a.threshold_fen)}"
            f"（本次计入{yuan(thr_applied)}），救助比例{percent(a.ratio_permille)}，支付{yuan(assistance)}{aid_note}"
        )

    # -- 5. personal account, 6. cash
    catalogue_share = remaining - assistance + b_self
    balance = visit.personal_account_balance_fen
    personal = min(balance, catalogue_share) if visit.use_personal_account else 0
    if visit.use_personal_account and balance:
        lines.append(f"个人账户支付{yuan(personal)}（可用余额{yuan(balance)}，丙类自费不可用个人账户）")
    else:
        lines.append("个人账户：未使用")
    cash = total - basic - critical - assistance - personal
    lines.append(f"现金支付{yuan(cash)}")
    lines.append(
        f"合计{yuan(total)} = 统筹{yuan(basic)} + 大病{yuan(critical)} + 救助{yuan(assistance)}"
        f" + 个账{yuan(personal)} + 现金{yuan(cash)}"
    )
    assert min(basic, critical, assistance, personal, cash) >= 0, "settlement invariant broken"

    new_deductible = dict(ytd.deductible_used_fen)
    if deductible:
        new_deductible[pool] = ded_used + deductible
    new_basic = dict(basic_ytd)
    if basic:
        new_basic[pool] = pool_paid + basic
    new_ytd = YearToDate(
        ytd.year,
        new_deductible,
        new_basic,
        oop_after,
        ytd.critical_paid_fen + critical,
        ytd.assistance_threshold_used_fen + thr_applied,
        ytd.assistance_paid_fen + assistance,
    )
    return SettlementResult(
        version.id,
        total,
        non_compliant,
        b_self,
        compliant,
        deductible,
        ratio,
        basic,
        critical,
        assistance,
        personal,
        cash,
        new_ytd,
        tuple(lines),
    )
