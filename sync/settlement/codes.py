"""Stable English codes of the settlement domain and their zh-CN labels.

The codes travel in JSON (policy versions, pushed settlements) and must never change meaning;
the labels are only for receipts and screens.
"""

from __future__ import annotations

from typing import Final

INSURANCE_TYPES: Final[dict[str, str]] = {
    "employee": "职工医保",
    "resident": "城乡居民医保",
}

# Age groups: child < 18, adult 18-59, elderly 60+ (for employees: retirees).
AGE_GROUPS: Final[dict[str, str]] = {
    "child": "未成年人",
    "adult": "成年人",
    "elderly": "老年人/退休人员",
}

FACILITY_LEVELS: Final[dict[str, str]] = {
    "village": "村卫生室",
    "primary": "一级/乡镇卫生院",
    "secondary": "二级医疗机构",
    "tertiary": "三级医疗机构",
}

LOCALITIES: Final[dict[str, str]] = {
    "local": "参保地就医",
    "registered": "异地就医(已备案)",
    "unregistered": "异地就医(未备案)",
}

VISIT_CATEGORIES: Final[dict[str, str]] = {
    "general_outpatient": "普通门诊",
    "chronic_outpatient": "门诊慢特病",
    "two_diseases_outpatient": "两病门诊",
    "inpatient": "住院",
    "pharmacy": "购药",
    "special_drug": "大病特药",
}

ITEM_CLASSES: Final[dict[str, str]] = {
    "class_a": "甲类",
    "class_b": "乙类",
    "class_c": "丙类(自费)",
}

ASSISTANCE_CATEGORIES: Final[dict[str, str]] = {
    "tekun": "特困人员",
    "dibao": "低保对象",
    "dibao_edge": "低保边缘家庭成员",
    "poverty_returned": "返贫致贫人口",
    "poverty_monitored": "防止返贫监测对象",
    "illness_poverty": "因病致贫重病患者",
}

# 两病 (the two diseases under standardised management).
TWO_DISEASES: Final[dict[str, str]] = {
    "hypertension": "高血压",
    "diabetes": "糖尿病",
}
# Keys of a policy's 两病 cap table: one disease, or both.
TWO_DISEASES_CAP_KEYS: Final[tuple[str, ...]] = ("hypertension", "diabetes", "both")

DEDUCTIBLE_BASES: Final[dict[str, str]] = {
    "per_visit": "每次",
    "annual": "年度累计",
}
