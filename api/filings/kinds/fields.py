"""Typed field specs for the filing kinds: each parses a client's JSON value or raises BAD_USER_INPUT
naming the dotted field, and describes itself for clients (`filingKinds`)."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from api.errors import BadUserInput

MAX_MONEY_FEN = 100_000_000
"""1,000,000 yuan for one amount (an item, an invoice): above any real bill, and small enough that a
filing's sums (20 visits) stay inside GraphQL's 32-bit Int."""
REGION = re.compile(r"[1-9][0-9]{5}", re.ASCII)


def missing(path: str, label: str) -> BadUserInput:
    return BadUserInput(f"缺少必填项：{label}", field=path)


def wrong(path: str, label: str, expected: str) -> BadUserInput:
    return BadUserInput(f"{label}格式有误：应为{expected}", field=path)


class Spec:
    label: str
    type_name: str

    def parse(self, value: Any, path: str) -> Any:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"type": self.type_name, "label": self.label}

    def load(self, stored: Any) -> Any:
        """A value as `parse` returned it, from its stored JSON form (see `dump`)."""
        return stored

    def dump(self, value: Any) -> Any:
        """The JSON form of a parsed value."""
        return value


@dataclass
class Text(Spec):
    label: str
    max_length: int = 100
    pattern: re.Pattern[str] | None = None
    pattern_hint: str = ""
    type_name: str = "string"

    def parse(self, value: Any, path: str) -> str:
        if not isinstance(value, str):
            raise wrong(path, self.label, "文本")
        text = value.strip()
        if not text:
            raise missing(path, self.label)
        if len(text) > self.max_length:
            raise BadUserInput(f"{self.label}最多{self.max_length}个字符", field=path)
        if self.pattern is not None and not self.pattern.fullmatch(text):
            raise wrong(path, self.label, self.pattern_hint or "规定格式")
        return text

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "maxLength": self.max_length}


@dataclass
class Region(Spec):
    label: str
    type_name: str = "region"

    def parse(self, value: Any, path: str) -> str:
        if not isinstance(value, str) or not REGION.fullmatch(value):
            raise wrong(path, self.label, "6位行政区划代码")
        return value


@dataclass
class Date(Spec):
    label: str
    type_name: str = "date"

    def parse(self, value: Any, path: str) -> dt.date:
        if not isinstance(value, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value, re.ASCII):
            raise wrong(path, self.label, "日期（YYYY-MM-DD）")
        try:
            day = dt.date.fromisoformat(value)
        except ValueError:
            raise wrong(path, self.label, "有效的日期（YYYY-MM-DD）") from None
        if not dt.date(1900, 1, 1) <= day <= dt.date(2999, 12, 31):
            raise BadUserInput(f"{self.label}超出有效范围", field=path)
        return day

    def load(self, stored: Any) -> Any:
        return dt.date.fromisoformat(stored) if isinstance(stored, str) else stored

    def dump(self, value: Any) -> Any:
        return value.isoformat() if isinstance(value, dt.date) else value


@dataclass
class Choice(Spec):
    label: str
    options: Mapping[str, str]
    """code -> zh-CN label."""
    type_name: str = "choice"

    def parse(self, value: Any, path: str) -> str:
        if not isinstance(value, str) or value not in self.options:
            listed = "、".join(self.options) if len(self.options) <= 8 else "目录中的代码"
            raise wrong(path, self.label, "以下之一：" + listed if len(self.options) <= 8 else listed)
        return value

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "options": [{"code": k, "label": v} for k, v in self.options.items()]}


@dataclass
class Integer(Spec):
    label: str
    minimum: int = 0
    maximum: int = 2**31 - 1
    type_name: str = "integer"

    def parse(self, value: Any, path: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong(path, self.label, "整数")
        if not self.minimum <= value <= self.maximum:
            raise BadUserInput(f"{self.label}须在{self.minimum}到{self.maximum}之间", field=path)
        return value

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "minimum": self.minimum, "maximum": self.maximum}


@dataclass
class Money(Integer):
    """Integer fen (分): a float, a string or a bool is refused, never rounded."""

    minimum: int = 1
    maximum: int = MAX_MONEY_FEN
    type_name: str = "fen"

    def parse(self, value: Any, path: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong(path, self.label, "以分为单位的整数")
        return super().parse(value, path)


@dataclass
class Boolean(Spec):
    label: str
    type_name: str = "boolean"

    def parse(self, value: Any, path: str) -> bool:
        if not isinstance(value, bool):
            raise wrong(path, self.label, "true 或 false")
        return value


@dataclass
class Record(Spec):
    label: str
    fields: Mapping[str, Spec]
    required: frozenset[str] = frozenset()
    type_name: str = "record"

    def parse(self, value: Any, path: str) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise wrong(path, self.label or "内容", "对象")
        prefix = f"{path}." if path else ""
        unknown = sorted(set(value) - set(self.fields))
        if unknown:
            raise BadUserInput(f"不认识的字段：{unknown[0][:40]}", field=prefix + str(unknown[0])[:40])
        out: dict[str, Any] = {}
        for name, spec in self.fields.items():
            if value.get(name) is None:
                if name in self.required:
                    raise missing(prefix + name, spec.label)
                continue
            out[name] = spec.parse(value[name], prefix + name)
        return out

    def load(self, stored: Any) -> Any:
        # Keys the spec does not know (a mask kept instead of a secret) pass through unchanged.
        return {k: self.fields[k].load(v) if k in self.fields else v for k, v in stored.items()}

    def dump(self, value: Any) -> Any:
        return {k: self.fields[k].dump(v) if k in self.fields else v for k, v in value.items()}

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "fields": [
                {"name": name, "required": name in self.required, **spec.describe()}
                for name, spec in self.fields.items()
            ],
        }


@dataclass
class ListOf(Spec):
    label: str
    item: Spec
    min_items: int = 1
    max_items: int = 20
    type_name: str = "list"

    def parse(self, value: Any, path: str) -> list[Any]:
        if not isinstance(value, Sequence) or isinstance(value, str | bytes):
            raise wrong(path, self.label, "列表")
        if len(value) < self.min_items:
            raise missing(path, self.label)
        if len(value) > self.max_items:
            raise BadUserInput(f"{self.label}最多{self.max_items}项", field=path)
        return [self.item.parse(v, f"{path}[{i}]") for i, v in enumerate(value)]

    def load(self, stored: Any) -> Any:
        return [self.item.load(v) for v in stored]

    def dump(self, value: Any) -> Any:
        return [self.item.dump(v) for v in value]

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "minItems": self.min_items,
            "maxItems": self.max_items,
            "item": self.item.describe(),
        }


@dataclass(frozen=True)
class Material:
    """An attachment a kind asks for; `required` may depend on the fields (see Kind.materials_for)."""

    code: str
    label: str


@dataclass(frozen=True)
class Stage:
    code: str
    label: str
    limit_working_days: int
    """The statutory (承诺) time limit of this stage, in working days on the official calendar."""


@dataclass
class Notes:
    """Figures a kind uses, with their sources, shown to clients beside the kind."""

    lines: list[str] = field(default_factory=list)


BANK_ACCOUNT = Record(
    "收款银行账户",
    {
        "bankName": Text("开户银行", max_length=50),
        "accountName": Text("户名", max_length=50),
        "accountNumber": Text(
            "银行账号",
            max_length=30,
            pattern=re.compile(r"[0-9]{8,30}", re.ASCII),
            pattern_hint="8到30位数字",
        ),
    },
    required=frozenset({"bankName", "accountName", "accountNumber"}),
)
"""The payout account. Its number is stored encrypted and only ever answered masked."""
