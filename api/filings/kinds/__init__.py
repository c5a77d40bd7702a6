"""The filing kinds: each is data (fields, materials, stages with their limits) plus a small validator
and what its approval does, in one module. A new kind is one new module listed in KINDS."""

from __future__ import annotations

from api.filings.kinds.base import Context, Kind, KindComputation
from api.filings.kinds.chronic_disease import CHRONIC_DISEASE
from api.filings.kinds.cross_region import CROSS_REGION
from api.filings.kinds.maternity import MATERNITY
from api.filings.kinds.reimbursement import REIMBURSEMENT

KINDS: dict[str, Kind] = {
    kind.code: kind for kind in (CROSS_REGION, CHRONIC_DISEASE, REIMBURSEMENT, MATERNITY)
}

__all__ = ["KINDS", "Context", "Kind", "KindComputation"]
