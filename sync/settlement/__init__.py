"""一站式结算: the settlement engine and its versioned policy model, shared by server and terminal.

Pure: imports only the standard library.
"""

from ._check import parse_date
from .codes import (
    AGE_GROUPS,
    ASSISTANCE_CATEGORIES,
    FACILITY_LEVELS,
    INSURANCE_TYPES,
    ITEM_CLASSES,
    LOCALITIES,
    TWO_DISEASES,
    VISIT_CATEGORIES,
)
from .engine import BillItem, SettlementResult, Visit, YearToDate, compute, round_half_up
from .errors import PolicyError, SettlementInputError
from .policy import (
    MAX_DAYS_AHEAD,
    AssistanceRule,
    AssistanceRules,
    CategoryRule,
    CriticalRule,
    InsuranceRules,
    PolicySet,
    PolicyVersion,
    Segment,
    Tilt,
    load_default_policies,
    load_policies,
)

__all__ = [
    "AGE_GROUPS",
    "ASSISTANCE_CATEGORIES",
    "FACILITY_LEVELS",
    "INSURANCE_TYPES",
    "ITEM_CLASSES",
    "LOCALITIES",
    "MAX_DAYS_AHEAD",
    "TWO_DISEASES",
    "VISIT_CATEGORIES",
    "AssistanceRule",
    "AssistanceRules",
    "BillItem",
    "CategoryRule",
    "CriticalRule",
    "InsuranceRules",
    "PolicyError",
    "PolicySet",
    "PolicyVersion",
    "Segment",
    "SettlementInputError",
    "SettlementResult",
    "Tilt",
    "Visit",
    "YearToDate",
    "compute",
    "load_default_policies",
    "load_policies",
    "parse_date",
    "round_half_up",
]
