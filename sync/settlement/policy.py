"""Policy versions: the tables the engine reads, their validation, and selection by region and date.

A policy is data (TOML in the repo, JSON in the server's database and on the wire), never code.
Dict form (``to_dict``/``from_dict``) is fully resolved; the TOML form may also use
``extends = "<earlier version id>"`` to restate only what changed (resolved at load time).
All money is integer fen, all ratios integer per mille (850 = 85%).
"""

from __future__ import annotations

import datetime as dt
import itertools
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

from ._check import Reader, parse_date
from .codes import (
    AGE_GROUPS,
    ASSISTANCE_CATEGORIES,
    DEDUCTIBLE_BASES,
    FACILITY_LEVELS,
    LOCALITIES,
    TWO_DISEASES_CAP_KEYS,
    VISIT_CATEGORIES,
)
from .errors import PolicyError, SettlementInputError

TWO_DISEASES_CATEGORY = "two_diseases_outpatient"

SCHEMA = 1
NATIONAL_REGION = "000000"
# A visit dated more than this many days after "today" is refused as far-future, whatever the
# versions say: terminals' clocks are not trusted, and an open-ended version must not price year 2200.
MAX_DAYS_AHEAD = 31


@dataclass(slots=True, frozen=True)
class CategoryRule:
    """Basic-insurance rule for one visit category of one insurance type."""

    covered: bool
    # YTD key whose deductible, paid amount and cap this category shares (pharmacy -> general_outpatient).
    pool: str
    deductible_basis: str = "per_visit"
    deductible_fen: Mapping[str, int] | None = None  # by facility level
    # By facility level. 0 means basic insurance does not pay the category at that level (特药, which
    # 大病 pays): no age bonus applies to it, and it uses neither a deductible nor a cap.
    ratio_permille: Mapping[str, int] | None = None
    annual_cap_fen: int | None = None  # the pool's cap, resolved at load; None: only the basic cap
    own_cap: bool = True  # False when the cap was inherited from the pool (for to_dict)
    two_diseases_cap_fen: Mapping[str, int] | None = None  # hypertension / diabetes / both


@dataclass(slots=True, frozen=True)
class Segment:
    """Part of the 大病 amount above the threshold: [from_fen, to_fen) paid at ratio_permille."""

    from_fen: int
    to_fen: int | None
    ratio_permille: int


@dataclass(slots=True, frozen=True)
class Tilt:
    """大病 tilt (倾斜) for an assistance category: lower threshold, higher ratio, maybe no cap."""

    threshold_discount_permille: int
    ratio_bonus_permille: int
    cap_waived: bool  # no 大病 annual cap for any of the person's 大病 payments, 特药 included


@dataclass(slots=True, frozen=True)
class CriticalRule:
    threshold_fen: int
    segments: tuple[Segment, ...]
    annual_cap_fen: int
    special_drug_ratio_permille: int
    categories: frozenset[str]  # visit categories whose out-of-pocket accumulates towards 大病
    tilt: Mapping[str, Tilt]


@dataclass(slots=True, frozen=True)
class InsuranceRules:
    basic_annual_cap_fen: int
    age_bonus_permille: Mapping[str, int]
    locality_reduction_permille: Mapping[str, int]
    categories: Mapping[str, CategoryRule]
    critical: CriticalRule


@dataclass(slots=True, frozen=True)
class AssistanceRule:
    threshold_fen: int  # annual
    ratio_permille: int
    annual_cap_fen: int


@dataclass(slots=True, frozen=True)
class AssistanceRules:
    visit_categories: frozenset[str]
    localities: frozenset[str]
    rules: Mapping[str, AssistanceRule]


@dataclass(slots=True, frozen=True)
class PolicyVersion:
    id: str
    region: str
    name: str
    effective_from: dt.date  # inclusive
    effective_to: dt.date | None  # exclusive; None = open-ended
    employee: InsuranceRules
    resident: InsuranceRules
    assistance: AssistanceRules

    def in_force(self, day: dt.date) -> bool:
        return self.effective_from <= day and (self.effective_to is None or day < self.effective_to)

    def rules_for(self, insurance_type: str) -> InsuranceRules:
        return self.employee if insurance_type == "employee" else self.resident

    def to_dict(self) -> dict[str, Any]:
        return _version_to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PolicyVersion:
        """Validate one resolved version (as the server stores it); no ``extends``."""
        return _parse_version(data, "version")


class PolicySet:
    """All known versions; picks the one in force for a region and a visit date."""

    __slots__ = ("_by_id", "_by_region", "versions")

    def __init__(self, versions: tuple[PolicyVersion, ...] | list[PolicyVersion]) -> None:
        self.versions = tuple(versions)
        _check_no_overlap(self.versions)
        self._by_id = {v.id: v for v in self.versions}
        by_region: dict[str, list[PolicyVersion]] = {}
        for v in self.versions:
            by_region.setdefault(v.region, []).append(v)
        self._by_region = {
            r: tuple(sorted(vs, key=lambda v: v.effective_from)) for r, vs in by_region.items()
        }

    def get(self, version_id: str) -> PolicyVersion:
        try:
            return self._by_id[version_id]
        except KeyError:
            raise SettlementInputError(
                "policy_version_id", f"unknown policy version {version_id!r}"
            ) from None

    def select(self, region: str, visit_date: dt.date, *, today: dt.date | None = None) -> PolicyVersion:
        """The version in force on ``visit_date`` for ``region``, falling back county -> city ->
        province -> national (000000) when a level has no version in force on that date."""
        if not (isinstance(region, str) and len(region) == 6 and region.isascii() and region.isdigit()):
            raise SettlementInputError("visit.region", "must be a 6-digit region code")
        check_not_far_future(visit_date, today)
        for code in (region, region[:4] + "00", region[:2] + "0000", NATIONAL_REGION):
            for v in self._by_region.get(code, ()):
                if v.in_force(visit_date):
                    return v
        raise SettlementInputError(
            "visit.visit_date", f"no policy version in force for region {region} on {visit_date.isoformat()}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "versions": [v.to_dict() for v in self.versions]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PolicySet:
        return load_policies(data)


def check_not_far_future(visit_date: dt.date, today: dt.date | None) -> None:
    if not isinstance(visit_date, dt.date) or isinstance(visit_date, dt.datetime):
        raise SettlementInputError("visit.visit_date", "must be a date")
    ref = dt.date.today() if today is None else today
    if (visit_date - ref).days > MAX_DAYS_AHEAD:
        raise SettlementInputError(
            "visit.visit_date", f"is more than {MAX_DAYS_AHEAD} days after today ({ref.isoformat()})"
        )


# --------------------------------------------------------------------------------------- loading


def load_policies(source: str | bytes | Mapping[str, Any]) -> PolicySet:
    """Load and validate a policy file (TOML text) or its dict form; raises PolicyError."""
    if isinstance(source, bytes):
        source = source.decode("utf-8")
    if isinstance(source, str):
        try:
            data: Mapping[str, Any] = tomllib.loads(source)
        except tomllib.TOMLDecodeError as exc:
            raise PolicyError("<toml>", f"not valid TOML: {exc}") from None
    else:
        data = source
    root = Reader(data, "", PolicyError)
    schema = root.integer("schema", lo=SCHEMA, hi=SCHEMA)
    del schema
    raw_versions = root.raw("versions")
    root.done()
    if not isinstance(raw_versions, list) or not raw_versions:
        raise PolicyError("versions", "must be a non-empty list")
    resolved: dict[str, Mapping[str, Any]] = {}
    versions = []
    for i, raw in enumerate(raw_versions):
        path = f"versions[{i}]"
        merged = _resolve_extends(raw, resolved, path)
        v = _parse_version(merged, path)
        if v.id in resolved:
            raise PolicyError(f"{path}.id", f"duplicate version id {v.id!r}")
        resolved[v.id] = merged
        versions.append(v)
    return PolicySet(versions)


def load_default_policies() -> PolicySet:
    """The policy file shipped with the package (sync/settlement/policies/default.toml)."""
    text = resources.files("sync.settlement.policies").joinpath("default.toml").read_text("utf-8")
    return load_policies(text)


def _check_no_overlap(versions: tuple[PolicyVersion, ...]) -> None:
    index = {id(v): i for i, v in enumerate(versions)}
    by_region: dict[str, list[PolicyVersion]] = {}
    for v in versions:
        by_region.setdefault(v.region, []).append(v)
    for vs in by_region.values():
        vs.sort(key=lambda v: v.effective_from)
        for prev, nxt in itertools.pairwise(vs):
            if prev.effective_to is None or prev.effective_to > nxt.effective_from:
                raise PolicyError(
                    f"versions[{index[id(nxt)]}].effective_from",
                    f"overlaps version {prev.id!r} in region {nxt.region}",
                )


_NOT_INHERITED = ("id", "name", "effective_from", "effective_to", "extends")


def _resolve_extends(raw: object, resolved: Mapping[str, Mapping[str, Any]], path: str) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise PolicyError(path, "must be a table/object")
    base_id = raw.get("extends")
    if base_id is None:
        return raw
    if not isinstance(base_id, str) or base_id not in resolved:
        raise PolicyError(f"{path}.extends", f"must name an earlier version, got {base_id!r}")
    base = {k: v for k, v in resolved[base_id].items() if k not in _NOT_INHERITED}
    return _deep_merge(base, {k: v for k, v in raw.items() if k != "extends"})


def _deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _parse_version(data: Mapping[str, Any], path: str) -> PolicyVersion:
    r = Reader(data, path, PolicyError)
    vid = r.string("id")
    region = r.string("region")
    if not (len(region) == 6 and region.isascii() and region.isdigit()):
        raise r.error("region", "must be a 6-digit region code")
    name = r.string("name")
    start = r.date("effective_from")
    end = r.opt_date("effective_to")
    if end is not None and end <= start:
        raise r.error("effective_to", "must be after effective_from")
    employee = _parse_insurance(r.sub("employee"))
    resident = _parse_insurance(r.sub("resident"))
    assistance = _parse_assistance(r.sub("assistance"))
    r.done()
    return PolicyVersion(vid, region, name, start, end, employee, resident, assistance)


def _parse_insurance(r: Reader) -> InsuranceRules:
    basic_cap = r.integer("basic_annual_cap_fen")
    age = r.table("age_bonus_permille", AGE_GROUPS, "permille")
    loc = r.table("locality_reduction_permille", LOCALITIES, "permille")
    cats_r = r.sub("categories")
    raw_cats = {c: _parse_category(cats_r.sub(c), c) for c in VISIT_CATEGORIES}
    cats_r.done()
    cats: dict[str, CategoryRule] = {}
    for c, rule in raw_cats.items():
        if rule.pool != c:
            target = raw_cats.get(rule.pool)
            cpath = f"categories.{c}.pool"
            if target is None or target.pool != rule.pool or not target.covered:
                raise r.error(
                    cpath, f"must name a covered category that pools with itself, got {rule.pool!r}"
                )
            if TWO_DISEASES_CATEGORY in (c, rule.pool):
                # 两病 caps come from their own per-disease table, which only the category itself applies.
                raise r.error(cpath, f"{TWO_DISEASES_CATEGORY} neither joins nor hosts a pool")
            if rule.annual_cap_fen is not None:
                raise r.error(f"categories.{c}.annual_cap_fen", "a pooled category uses its pool's cap")
            rule = CategoryRule(
                rule.covered,
                rule.pool,
                rule.deductible_basis,
                rule.deductible_fen,
                rule.ratio_permille,
                target.annual_cap_fen,
                False,
                rule.two_diseases_cap_fen,
            )
        cats[c] = rule
    critical = _parse_critical(r.sub("critical"))
    r.done()
    return InsuranceRules(basic_cap, age, loc, cats, critical)


def _parse_category(r: Reader, cat: str) -> CategoryRule:
    covered = r.boolean("covered", default=True)
    if not covered:
        r.done()
        return CategoryRule(False, cat)
    pool = r.opt_string("pool") or cat
    if pool not in VISIT_CATEGORIES:
        raise r.error("pool", f"unknown category {pool!r}")
    basis = r.code("deductible_basis", DEDUCTIBLE_BASES)
    ded = r.table("deductible_fen", FACILITY_LEVELS, "fen")
    ratio = r.table("ratio_permille", FACILITY_LEVELS, "permille")
    cap = r.opt_integer("annual_cap_fen")
    two = None
    if cat == TWO_DISEASES_CATEGORY:
        two = r.table("two_diseases_cap_fen", TWO_DISEASES_CAP_KEYS, "fen")
    r.done()
    return CategoryRule(True, pool, basis, ded, ratio, cap, True, two)


def _parse_critical(r: Reader) -> CriticalRule:
    threshold = r.integer("threshold_fen")
    raw_segments = r.raw("segments")
    if not isinstance(raw_segments, list) or not raw_segments:
        raise r.error("segments", "must be a non-empty list")
    segments = []
    expected_from = 0
    for i, raw in enumerate(raw_segments):
        s = Reader(raw, r.path(f"segments[{i}]"), PolicyError)
        start = s.integer("from_fen")
        end = s.opt_integer("to_fen")
        ratio = s.permille("ratio_permille")
        s.done()
        if start != expected_from:
            raise s.error(
                "from_fen", f"must be {expected_from}: segments must start at 0 and leave no gap or overlap"
            )
        if end is not None and end <= start:
            raise s.error("to_fen", "must be after from_fen")
        if end is None and i != len(raw_segments) - 1:
            raise s.error("to_fen", "only the last segment may be open-ended")
        if end is not None and i == len(raw_segments) - 1:
            raise s.error("to_fen", "the last segment must be open-ended (no to_fen)")
        segments.append(Segment(start, end, ratio))
        expected_from = end if end is not None else 0
    cap = r.integer("annual_cap_fen")
    special = r.permille("special_drug_ratio_permille")
    cats = r.code_list("categories", VISIT_CATEGORIES)
    if "special_drug" in cats:
        raise r.error("categories", "special_drug is paid by special_drug_ratio_permille, not by segments")
    tilt_r = r.sub("tilt")
    tilt: dict[str, Tilt] = {}
    for key in tilt_r.names():
        if key not in ASSISTANCE_CATEGORIES:
            raise tilt_r.error(str(key), "unknown assistance category")
        t = tilt_r.sub(key)
        tilt[key] = Tilt(
            t.permille("threshold_discount_permille"),
            t.permille("ratio_bonus_permille"),
            t.boolean("cap_waived"),
        )
        t.done()
    tilt_r.done()
    r.done()
    return CriticalRule(threshold, tuple(segments), cap, special, cats, tilt)


def _parse_assistance(r: Reader) -> AssistanceRules:
    cats = r.code_list("visit_categories", VISIT_CATEGORIES)
    locs = r.code_list("localities", LOCALITIES)
    rules_r = r.sub("rules")
    rules = {}
    for key in ASSISTANCE_CATEGORIES:
        a = rules_r.sub(key)
        rules[key] = AssistanceRule(
            a.integer("threshold_fen"), a.permille("ratio_permille"), a.integer("annual_cap_fen")
        )
        a.done()
    rules_r.done()
    r.done()
    return AssistanceRules(cats, locs, rules)


# -------------------------------------------------------------------------------------- dict form


def _version_to_dict(v: PolicyVersion) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": v.id,
        "region": v.region,
        "name": v.name,
        "effective_from": v.effective_from.isoformat(),
    }
    if v.effective_to is not None:
        out["effective_to"] = v.effective_to.isoformat()
    out["employee"] = _insurance_to_dict(v.employee)
    out["resident"] = _insurance_to_dict(v.resident)
    a = v.assistance
    out["assistance"] = {
        "visit_categories": sorted(a.visit_categories),
        "localities": sorted(a.localities),
        "rules": {
            k: {
                "threshold_fen": r.threshold_fen,
                "ratio_permille": r.ratio_permille,
                "annual_cap_fen": r.annual_cap_fen,
            }
            for k, r in a.rules.items()
        },
    }
    return out


def _insurance_to_dict(ins: InsuranceRules) -> dict[str, Any]:
    cats: dict[str, Any] = {}
    for c, rule in ins.categories.items():
        if not rule.covered:
            cats[c] = {"covered": False}
            continue
        d: dict[str, Any] = {
            "covered": True,
            "pool": rule.pool,
            "deductible_basis": rule.deductible_basis,
            "deductible_fen": dict(rule.deductible_fen or {}),
            "ratio_permille": dict(rule.ratio_permille or {}),
        }
        if rule.own_cap and rule.annual_cap_fen is not None:
            d["annual_cap_fen"] = rule.annual_cap_fen
        if rule.two_diseases_cap_fen is not None:
            d["two_diseases_cap_fen"] = dict(rule.two_diseases_cap_fen)
        cats[c] = d
    cr = ins.critical
    segments = []
    for s in cr.segments:
        sd: dict[str, Any] = {"from_fen": s.from_fen, "ratio_permille": s.ratio_permille}
        if s.to_fen is not None:
            sd["to_fen"] = s.to_fen
        segments.append(sd)
    return {
        "basic_annual_cap_fen": ins.basic_annual_cap_fen,
        "age_bonus_permille": dict(ins.age_bonus_permille),
        "locality_reduction_permille": dict(ins.locality_reduction_permille),
        "categories": cats,
        "critical": {
            "threshold_fen": cr.threshold_fen,
            "segments": segments,
            "annual_cap_fen": cr.annual_cap_fen,
            "special_drug_ratio_permille": cr.special_drug_ratio_permille,
            "categories": sorted(cr.categories),
            "tilt": {
                k: {
                    "threshold_discount_permille": t.threshold_discount_permille,
                    "ratio_bonus_permille": t.ratio_bonus_permille,
                    "cap_waived": t.cap_waived,
                }
                for k, t in cr.tilt.items()
            },
        },
    }


__all__ = [
    "MAX_DAYS_AHEAD",
    "AssistanceRule",
    "AssistanceRules",
    "CategoryRule",
    "CriticalRule",
    "InsuranceRules",
    "PolicySet",
    "PolicyVersion",
    "Segment",
    "Tilt",
    "check_not_far_future",
    "load_default_policies",
    "load_policies",
    "parse_date",
]
