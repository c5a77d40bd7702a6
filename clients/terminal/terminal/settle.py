"""Scanning and settling at the clinic, offline: the shared engine with what the terminal has synced.

A voucher is verified with `sync.vouchers.verify_code` against the synced issuer keys and revocation
list, and accepted once: the replay store is the `scans` table, which persists across runs. A
settlement takes the patient (a scanned voucher, or a roster entry for a patient with only the
physical card), the bill, and computes the split with `sync.settlement.compute`, under the synced
policy version in force on the visit day, from the person's synced record and year-to-date totals
plus what this terminal settled since the last pull. It is recorded, with its outbox mutation, in one
transaction; the server recomputes it at push and its answer replaces these provisional amounts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sync.protocol import (
    MAX_BILL_ITEMS,
    REASON_LABELS,
    Bill,
    Mutation,
    MutationKind,
    RejectReason,
    SettlementCreate,
    Split,
    bill_key,
    uuid7,
)
from sync.settlement import (
    BillItem,
    SettlementInputError,
    SettlementResult,
    Visit,
    compute,
)
from sync.settlement.codes import INSURANCE_TYPES, ITEM_CLASSES, VISIT_CATEGORIES
from sync.settlement.engine import yuan
from sync.vouchers import Reason, VerificationResult, verify_code
from terminal.clock import ClockState
from terminal.errors import NotReady, Refused, TerminalRevoked
from terminal.store import RosterEntry, Store, dumps, utc_iso, ytd_plus

SHANGHAI = ZoneInfo("Asia/Shanghai")
MAX_PAYLOAD_BYTES = 512 * 1024
DEFAULT_SCAN_WINDOW = timedelta(minutes=10)
"""How recent the latest unsettled scan must be for `settle` to take it without `--scan`/`--person`:
a scan left unsettled (the patient walked off, the operator settled by card instead) must not be
taken hours later for whoever is at the counter; ten minutes covers a consultation's scan-then-bill."""
"""The largest settlement this terminal records: half the server's default push body limit (1 MiB)."""

VOUCHER_REASONS = {
    "malformed": "医保码无法识别",
    "unknown_key": "医保码签发密钥未知（请同步后重试）",
    "bad_signature": "医保码签名无效（可能是伪造的）",
    "not_yet_valid": "医保码尚未生效（请检查终端时间）",
    "expired": "医保码已过期，请患者刷新后重新出示",
    "certificate_not_yet_valid": "医保码证书尚未生效",
    "certificate_expired": "医保码证书已过期，请患者联网刷新",
    "revoked": "医保码已被注销",
    "replayed": "医保码已被使用过",
}


def mask_name(name: str) -> str:
    if len(name) <= 1:
        return name
    if len(name) == 2:
        return name[0] + "*"
    return name[0] + "*" * (len(name) - 2) + name[-1]


def age_group(birth: date, on: date) -> str:
    """As the server groups ages (child under 18, elderly from 60): the engine's age bonus."""
    age = on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))
    if age < 18:
        return "child"
    return "elderly" if age >= 60 else "adult"


def visit_day(moment: datetime) -> date:
    return moment.astimezone(SHANGHAI).date()


def check_clock(store: Store) -> ClockState:
    clock = store.clock()
    if clock.is_behind():
        behind = int(clock.behind_by())
        raise NotReady(
            f"本机时钟比上次与服务器同步时的时间还早约 {_duration(behind)}，时间不可信："
            "请校准本机时钟，或联网同步（sync）后再操作。",
            reason="clock_behind",
            behindS=behind,
        )
    return clock


def _duration(seconds: int) -> str:
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} 天"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} 小时"
    return f"{max(seconds // 60, 1)} 分钟"


def require_enrolled(store: Store) -> dict[str, Any]:
    identity = store.identity()
    if identity is None:
        raise NotReady("本终端尚未登记：请先运行 enrol。", reason="not_enrolled")
    revoked = store.get("revoked")
    if revoked:
        raise TerminalRevoked(
            REASON_LABELS[RejectReason.TERMINAL_REVOKED] + "：本终端不能再结算或上传，请联系医保经办机构。",
            status=401,
            reason="terminal_revoked",
        )
    return identity


# ------------------------------------------------------------------------------------------ scan


@dataclass
class Scanned:
    result: VerificationResult
    code: str
    entry: RosterEntry | None
    number: int | None = None  # the scan's number in this terminal's scan list

    def patient(self) -> dict[str, Any]:
        return describe_patient(self.entry, self.result.link_ref.hex() if self.result.link_ref else None)


def describe_patient(entry: RosterEntry | None, link_ref: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "onRoster": entry is not None,
        "personId": entry.person_id if entry else None,
        "nameMasked": mask_name(entry.name) if entry else None,
        "idNumberMasked": entry.id_number_masked if entry else None,
        "insuranceType": entry.data.get("insuranceType") if entry else None,
        "viaFamilyLink": link_ref is not None,
    }
    return out


def patient_text(patient: dict[str, Any]) -> str:
    if patient["onRoster"]:
        who = f"{patient['nameMasked']}（身份证 {patient['idNumberMasked']}）"
        kind = INSURANCE_TYPES.get(str(patient.get("insuranceType")), "")
        who += f"，{kind}" if kind else ""
    else:
        who = "非本村签约居民（本终端无其参保信息）"
    if patient["viaFamilyLink"]:
        who += "；由家属通过亲情账户代为出示，就诊人为上述参保人本人"
    return who


def verify(store: Store, code: str, now: datetime) -> VerificationResult:
    return verify_code(
        code.strip(),
        issuer_keys=store.issuer_keys(),
        revocations=store.revocation_list(),
        now=int(now.timestamp()),
    )


def scan(store: Store, code: str) -> Scanned:
    """Verifies a code offline and accepts it once: a second scan of the same code, in this run or
    any later one, is `replayed`."""
    require_enrolled(store)
    clock = check_clock(store)
    if not store.issuer_keys():
        raise NotReady("无法核验：本终端尚未同步医保码签发密钥，请先同步（sync）。", reason="no_trust")
    now = clock.corrected_now()
    code = code.strip()
    result = verify(store, code, now)
    if not result.valid:
        return Scanned(result, code, None)
    assert result.replay_key is not None and result.person_ref is not None
    entry = store.person_by_ref(result.person_ref.hex())
    with store.write() as db:
        if store.scan_by_key(result.replay_key.hex(), db) is not None:
            return Scanned(_replayed(result), code, entry)
        number = _insert_scan(db, result, code, now)
    return Scanned(result, code, entry, number)


def _insert_scan(db: Any, result: VerificationResult, code: str, now: datetime) -> int:
    assert result.replay_key is not None and result.person_ref is not None and result.form is not None
    return Store.insert_scan(
        db,
        replay_key=result.replay_key.hex(),
        code=code,
        person_ref=result.person_ref.hex(),
        link_ref=result.link_ref.hex() if result.link_ref else None,
        form=result.form.value,
        issued_at=int(result.issued_at or 0),
        expires_at=int(result.expires_at or 0),
        scanned_at=now,
    )


def voucher_refusal(result: VerificationResult) -> Refused:
    reason = result.reason.value if result.reason else "invalid"
    return Refused(
        "核验未通过：" + VOUCHER_REASONS.get(reason, reason), reason=f"voucher_{reason}", detail=result.detail
    )


# ---------------------------------------------------------------------------------------- settle


@dataclass
class BillInput:
    category: str
    items: tuple[BillItem, ...]
    locality: str = "local"
    use_personal_account: bool = True


@dataclass
class Patient:
    """Who is settled, and how the terminal knows: a voucher (`code`, scanned now or earlier) or a
    card (`person_id` of a roster entry)."""

    code: str | None = None
    scan_number: int | None = None
    person: str | None = None  # a roster person id or voucher ref (card)
    insurance_type: str | None = None  # for a voucher holder not on the roster


@dataclass
class Receipt:
    mutation_id: str
    seq: int
    visit_date: date
    client_time: datetime
    patient: dict[str, Any]
    identified_by: str
    bill: BillInput
    result: SettlementResult
    estimated: bool
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        r = self.result
        return {
            "mutationId": self.mutation_id,
            "seq": self.seq,
            "status": "pending",
            "statusLabel": "预结算/待同步",
            "visitDate": self.visit_date.isoformat(),
            "clientTime": self.client_time.isoformat(),
            "identifiedBy": self.identified_by,
            "patient": self.patient,
            "category": self.bill.category,
            "policyVersion": r.policy_version_id,
            "totalFen": r.total_fen,
            "compliantFen": r.compliant_fen,
            "deductibleFen": r.deductible_fen,
            **Split.from_result(r).to_dict(),
            "estimatedWithoutRecord": self.estimated,
            "lines": list(r.lines),
            "notes": self.notes,
        }

    def text(self, clinic_name: str) -> str:
        r = self.result
        lines = [
            f"===== {clinic_name} 门诊结算单 =====",
            "【预结算/待同步】本单为离线预结算，以医保中心同步后的结算结果为准",
            f"单号：{self.mutation_id}（第 {self.seq} 笔）",
            f"就诊日期：{self.visit_date.isoformat()}    类别：{VISIT_CATEGORIES.get(self.bill.category, self.bill.category)}",
            f"就诊人：{patient_text(self.patient)}",
            f"身份核验：{'医保码' if self.identified_by == 'voucher' else '社保卡（本村签约名单）'}",
            "费用明细：",
            *(
                f"  {item.name or ITEM_CLASSES.get(item.item_class, item.item_class)}"
                f"（{ITEM_CLASSES.get(item.item_class, item.item_class)}）  {yuan(item.amount_fen)}"
                for item in self.bill.items
            ),
            f"费用合计：{yuan(r.total_fen)}",
            f"基本医保支付：{yuan(r.basic_fen)}",
            f"大病保险支付：{yuan(r.critical_illness_fen)}",
            f"医疗救助支付：{yuan(r.assistance_fen)}",
            f"个人账户支付：{yuan(r.personal_account_fen)}",
            f"现金支付：{yuan(r.cash_fen)}",
            *(f"  {line}" for line in r.lines),
            *self.notes,
        ]
        return "\n".join(lines)


def _enrolment_on(data: dict[str, Any], day: date) -> dict[str, Any] | None:
    best = None
    for period in data.get("enrolments") or []:
        try:
            start = date.fromisoformat(period["from"])
            end = date.fromisoformat(period["to"]) if period.get("to") else None
        except (KeyError, TypeError, ValueError):
            continue
        if start <= day and (end is None or end >= day) and (best is None or start >= best[0]):
            best = (start, period)
    return None if best is None else best[1]


def _find_person(store: Store, text: str) -> RosterEntry:
    text = text.strip()
    entry = store.person_by_id(text) or store.person_by_ref(text.lower())
    if entry is None:
        raise Refused(
            "本村签约名单中没有该参保人：持卡就诊只限本村签约居民，其他患者请出示医保码。",
            reason="not_on_roster",
        )
    return entry


def settle(store: Store, patient: Patient, bill: BillInput) -> Receipt:
    """Computes and records one settlement (with its outbox mutation) in one transaction."""
    identity = require_enrolled(store)
    clock = check_clock(store)
    now = clock.corrected_now()
    day = visit_day(now)
    verified: VerificationResult | None = None
    code = patient.code.strip() if patient.code else None
    if code is not None:
        if not store.issuer_keys():
            raise NotReady("无法核验：本终端尚未同步医保码签发密钥，请先同步（sync）。", reason="no_trust")
        verified = verify(store, code, now)
        if not verified.valid:
            raise voucher_refusal(verified)
    policies = store.policy_set()
    if policies is None:
        raise NotReady("本终端尚未同步医保政策，不能结算：请先同步（sync）。", reason="policy_not_synced")

    with store.write() as db:
        scan_row: dict[str, Any] | None = None
        if verified is not None:
            assert verified.replay_key is not None
            scan_row = store.scan_by_key(verified.replay_key.hex(), db)
            if scan_row is not None and scan_row["mutation_id"] is not None:
                raise voucher_refusal(_replayed(verified))
        elif patient.scan_number is not None or patient.person is None:
            scan_row = (
                store.scan_by_number(patient.scan_number)
                if patient.scan_number is not None
                else store.latest_unused_scan()
            )
            if scan_row is None:
                raise Refused(
                    "没有可用的扫码记录：请先扫码（scan），或用 --person 指定持卡患者。", reason="no_scan"
                )
            if patient.scan_number is None:
                age = now - datetime.fromisoformat(scan_row["scanned_at"])
                if age > DEFAULT_SCAN_WINDOW:
                    minutes = int(DEFAULT_SCAN_WINDOW.total_seconds() // 60)
                    raise Refused(
                        f"最近一次未结算的扫码（扫码记录 {scan_row['number']}）是 {int(age.total_seconds() // 60)} "
                        f"分钟前扫的，超过 {minutes} 分钟，可能不是眼前这位患者：请重新扫码（scan），"
                        "或用 --scan 扫码记录号、--person 参保人编号指明就诊人。",
                        reason="scan_stale",
                        scan=scan_row["number"],
                        scannedAt=scan_row["scanned_at"],
                    )
            if scan_row["mutation_id"] is not None:
                raise Refused(
                    f"该扫码记录已用于结算（单号 {scan_row['mutation_id']}），同一医保码只能结算一次。",
                    reason="voucher_replayed",
                )
            # Verified when scanned; its revocation is judged again with what is synced now.
            at = datetime.fromisoformat(scan_row["scanned_at"])
            verified = verify(store, scan_row["code"], at)
            if not verified.valid:
                raise voucher_refusal(verified)
            code = scan_row["code"]

        if verified is not None:
            assert verified.person_ref is not None
            person_ref = verified.person_ref.hex()
            entry = store.person_by_ref(person_ref)
            link_ref = verified.link_ref.hex() if verified.link_ref else None
            identified_by = "voucher"
        else:
            assert patient.person is not None
            entry = _find_person(store, patient.person)
            person_ref, link_ref, identified_by = entry.voucher_ref, None, "card"

        visit, estimated, notes = _visit(identity, entry, patient, bill, day)
        before, balance = store.local_ytd(entry, person_ref, day.year)
        visit = _with_balance(visit, max(balance, 0))
        try:
            result = compute(policies, visit, before, today=day)
        except SettlementInputError as exc:
            raise _bill_refusal(exc, day) from None

        check_item_count(len(bill.items))
        split = Split.from_result(result)
        create = SettlementCreate(
            Bill(
                day,
                bill.category,
                visit.locality,
                bill.items,
                visit.facility_level,
                bill.use_personal_account,
            ),
            split,
            result.policy_version_id,
            voucher=code if identified_by == "voucher" else None,
            person_ref=person_ref if identified_by == "card" else None,
            clinic_id=str(identity["clinicId"]),
        )
        payload = create.to_payload()
        size = len(dumps(payload).encode())
        if size > MAX_PAYLOAD_BYTES:
            # The server takes at most 1 MiB per push (its default max_body_bytes): a settlement past
            # that could never be pushed, and would hold back every later one behind it in the outbox.
            raise Refused(
                f"账单过大（{size // 1024} KB，{len(bill.items)} 项），无法上传到医保中心：请合并明细，"
                f"单笔结算的数据不能超过 {MAX_PAYLOAD_BYTES // 1024} KB。",
                reason="bill_too_large",
                field="bill",
                sizeBytes=size,
            )
        earlier = _same_visit(db, person_ref, day, create)
        if earlier is not None:
            # The server refuses a second identical bill of one person on one day at one clinic
            # (`duplicate_visit`): say so at the counter, before the patient pays on a receipt.
            raise Refused(
                f"该参保人今天已在本终端结算过完全相同的费用（第 {earlier} 笔），医保中心会按重复结算拒绝："
                "请勿重复结算。",
                reason="duplicate_visit",
                seq=earlier,
            )
        seq = Store.next_seq(db)
        mutation = Mutation(uuid7(now), seq, MutationKind.SETTLEMENT_CREATE, now, payload)
        Store.insert_mutation(db, mutation, now)
        replay_key = verified.replay_key.hex() if verified is not None and verified.replay_key else None
        if verified is not None and scan_row is None:
            _insert_scan(db, verified, str(code), now)
        if replay_key is not None:
            db.execute("UPDATE scans SET mutation_id = ? WHERE replay_key = ?", (mutation.id, replay_key))
        db.execute(
            "INSERT INTO settlements (mutation_id, seq, person_id, person_ref, identified_by, link_ref, "
            "replay_key, visit_date, year, category, total_fen, policy_version, terminal_split, ytd_delta, "
            "lines, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                mutation.id,
                seq,
                entry.person_id if entry else None,
                person_ref,
                identified_by,
                link_ref,
                replay_key,
                day.isoformat(),
                day.year,
                bill.category,
                result.total_fen,
                result.policy_version_id,
                dumps(split.to_dict()),
                dumps(ytd_plus(result.ytd, before, -1).to_dict()),
                dumps(list(result.lines)),
                utc_iso(now),
            ),
        )
    return Receipt(
        mutation.id,
        seq,
        day,
        now,
        describe_patient(entry, link_ref),
        identified_by,
        bill,
        result,
        estimated,
        notes,
    )


def _same_visit(db: Any, person_ref: str, day: date, create: SettlementCreate) -> int | None:
    """The seq of this terminal's settlement (not rejected) of the same person, day and bill, if any."""
    visit = create.bill.to_dict()
    wanted = bill_key(visit["items"])
    rows = db.execute(
        "SELECT s.seq, m.payload FROM settlements s JOIN mutations m ON m.id = s.mutation_id "
        "WHERE s.person_ref = ? AND s.visit_date = ? AND s.category = ? AND s.total_fen = ? "
        "AND s.status != 'rejected' ORDER BY s.seq",
        (person_ref, day.isoformat(), visit["category"], create.bill.total_fen),
    )
    for seq, payload in rows:
        if bill_key(json.loads(payload)["visit"]["items"]) == wanted:
            return int(seq)
    return None


def _replayed(result: VerificationResult) -> VerificationResult:
    return replace(result, reason=Reason.REPLAYED)


_FIELD_NAMES = {
    "amount_fen": "金额",
    "item_class": "类别",
    "self_pay_permille": "乙类先行自付比例",
    "name": "名称",
    "code": "编码",
    "items": "费用明细",
    "category": "就诊类别",
    "locality": "就医地",
    "use_personal_account": "是否使用个人账户",
}
_ITEM_FIELD = re.compile(r"^visit\.items\[(\d+)\](?:\.(\w+))?$")
_MESSAGES: tuple[tuple[re.Pattern[str], Callable[[re.Match[str]], str]], ...] = (
    (re.compile(r"^must not be negative$"), lambda m: "不能为负数"),
    (re.compile(r"^must be <= (\d+) fen$"), lambda m: f"不能超过 {yuan(int(m[1]))}"),
    (re.compile(r"^must be <= (\d+)$"), lambda m: f"不能超过 {m[1]}"),
    (re.compile(r"^must be >= (-?\d+)$"), lambda m: f"不能小于 {m[1]}"),
    (re.compile(r"^unknown code .*"), lambda m: "无法识别（类别用 甲、乙、丙）"),
    (re.compile(r"^the bill is empty$"), lambda m: "没有任何费用项"),
    (re.compile(r"^the bill total is zero$"), lambda m: "费用合计为零"),
    (re.compile(r"^more than (\d+) items$"), lambda m: f"超过 {m[1]} 项"),
    (re.compile(r"^must be 0 for a class_[ac] item$"), lambda m: "甲类、丙类项目不能有先行自付比例"),
    (
        re.compile(r"^must be an integer per mille .*"),
        lambda m: "应为 0 到 1000 的整数千分比（100 表示 10%）",
    ),
    (re.compile(r"^must be a string of at most (\d+) characters$"), lambda m: f"应为不超过 {m[1]} 字的文字"),
    (re.compile(r"^must not hold NUL or an unpaired surrogate$"), lambda m: "含有无法保存的字符"),
    (re.compile(r"^must be an integer.*"), lambda m: "应为整数"),
    (re.compile(r"^must be a (?:list|string|boolean).*"), lambda m: "格式有误"),
    (re.compile(r"^is not a field.*|^unknown (?:field|key).*"), lambda m: "不是账单的字段"),
)


def bill_error_text(field_path: str, message: str) -> str:
    """The engine's check of a bill (English, for developers) as the operator reads it; the original
    stays in the refusal's `detail`."""
    item = _ITEM_FIELD.match(field_path)
    if item is not None:
        where = f"第 {int(item[1]) + 1} 项费用" + (
            f"的{_FIELD_NAMES.get(item[2], item[2])}" if item[2] else ""
        )
    else:
        where = _FIELD_NAMES.get(field_path.rsplit(".", 1)[-1], field_path)
    for pattern, say in _MESSAGES:
        found = pattern.match(message)
        if found is not None:
            return f"{where}：{say(found)}"
    return f"{where}：{message}"


def _bill_refusal(exc: SettlementInputError, day: date) -> Refused | NotReady:
    if exc.field in ("visit.visit_date", "visit.region") and "no policy version" in exc.message:
        return NotReady(
            f"本终端尚未同步就诊日（{day.isoformat()}）适用的医保政策，不能结算：请先联网同步（sync）。",
            reason="policy_not_synced",
            detail=exc.message,
        )
    return Refused(
        f"结算信息有误：{bill_error_text(exc.field, exc.message)}",
        reason="bad_bill",
        field=exc.field,
        detail=exc.message,
    )


def _visit(
    identity: dict[str, Any], entry: RosterEntry | None, patient: Patient, bill: BillInput, day: date
) -> tuple[Visit, bool, list[str]]:
    clinic_region = str(identity.get("regionCode") or "")
    level = str(identity.get("facilityLevel") or "village")
    notes: list[str] = []
    if entry is None:
        # A voucher holder from elsewhere: the terminal has no record of them. Estimated with what the
        # operator says (insurance type) and the plainest assumptions; the server settles with its own.
        if patient.insurance_type is None:
            raise Refused(
                "该参保人不在本村签约名单中，本终端没有其参保信息：请用 --insurance-type 注明参保类型"
                "（employee 职工医保 / resident 城乡居民医保）后再结算。",
                reason="not_on_roster",
            )
        notes.append("注：非本村签约居民，按所选参保类型估算，以医保中心结算为准。")
        return (
            Visit(
                visit_date=day,
                region=clinic_region,
                insurance_type=patient.insurance_type,
                age_group="adult",
                facility_level=level,
                locality=bill.locality,
                category=bill.category,
                items=bill.items,
                use_personal_account=bill.use_personal_account,
            ),
            True,
            notes,
        )
    data = entry.data
    enrolment = _enrolment_on(data, day)
    if enrolment is None:
        raise Refused(
            f"{REASON_LABELS[RejectReason.NOT_INSURED]}：该参保人 {day.isoformat()} 没有有效的参保登记，"
            "不能按医保结算。",
            reason="not_insured",
        )
    region = str(enrolment.get("region") or data.get("region") or clinic_region)
    locality = (
        "local"
        if region == clinic_region
        else (bill.locality if bill.locality != "local" else "unregistered")
    )
    try:
        birth = date.fromisoformat(str(data.get("birthDate")))
    except ValueError:
        birth = day - timedelta(days=40 * 366)
    return (
        Visit(
            visit_date=day,
            region=region,
            insurance_type=str(enrolment.get("insuranceType") or data.get("insuranceType")),
            age_group=age_group(birth, day),
            facility_level=level,
            locality=locality,
            category=bill.category,
            items=bill.items,
            assistance_category=data.get("assistanceCategory"),
            chronic_diseases=frozenset(data.get("chronicDiseases") or ()),
            two_diseases=frozenset(data.get("twoDiseases") or ()),
            use_personal_account=bill.use_personal_account,
        ),
        False,
        notes,
    )


def _with_balance(visit: Visit, balance: int) -> Visit:
    return replace(visit, personal_account_balance_fen=balance)


# ------------------------------------------------------------------------------------------ bills


def check_item_count(count: int) -> None:
    """The server rejects a bill of more than MAX_BILL_ITEMS items (`bad_payload`): refused here, at
    the counter, before the patient pays on a receipt the server will not honour."""
    if count > MAX_BILL_ITEMS:
        raise Refused(
            f"账单过大：共 {count} 项费用明细，单笔结算最多 {MAX_BILL_ITEMS} 项，医保中心不会受理："
            "请合并明细后再结算。",
            reason="bill_too_large",
            field="visit.items",
            items=count,
            maxItems=MAX_BILL_ITEMS,
        )


def parse_bill_file(data: Any) -> BillInput:
    """A bill as JSON: {"category", "locality"?, "use_personal_account"?, "items": [{"item_class",
    "amount_fen", "self_pay_permille"?, "code"?, "name"?}, ...]}, checked as the server checks it."""
    if not isinstance(data, dict):
        raise Refused("账单文件应为一个 JSON 对象", reason="bad_bill", field="bill")
    extra = set(data) - {"category", "locality", "use_personal_account", "items"}
    if extra:
        raise Refused(f"账单文件中有未知字段：{sorted(extra)[0]}", reason="bad_bill", field=sorted(extra)[0])
    if isinstance(data.get("items"), list):
        check_item_count(len(data["items"]))
    visit = {
        "visit_date": date.today().isoformat(),
        "category": data.get("category", "general_outpatient"),
        "locality": data.get("locality", "local"),
        "items": data.get("items"),
        "use_personal_account": data.get("use_personal_account", True),
    }
    try:
        parsed = Bill.from_dict(visit)
    except SettlementInputError as exc:
        raise Refused(
            f"账单有误：{bill_error_text(exc.field, exc.message)}",
            reason="bad_bill",
            field=exc.field,
            detail=exc.message,
        ) from None
    return BillInput(parsed.category, parsed.items, parsed.locality, parsed.use_personal_account)


_CLASS_NAMES = {
    "甲": "class_a",
    "甲类": "class_a",
    "乙": "class_b",
    "乙类": "class_b",
    "丙": "class_c",
    "丙类": "class_c",
}


_FULL_WIDTH = str.maketrans("０１２３４５６７８９．", "0123456789.")
"""What a Chinese input method types for digits and the point (and "：" for the colon)."""


def _digits(text: str, most: int = 12) -> bool:
    # Only 0-9: str.isdigit() also takes "²" (which int() refuses) and other scripts' digits; and few
    # enough of them for int() (which refuses more than 4,300) and for any real bill.
    return text.isascii() and text.isdigit() and len(text) <= most


def parse_item(text: str) -> BillItem:
    """``CLASS:YUAN[:PERMILLE[:NAME]]``, e.g. ``甲:12.50``, ``乙:30:100:阿莫西林`` (yuan, at most 2 decimals;
    full-width digits and colons as an input method types them are read as ASCII)."""
    head = text.split(":" if ":" in text else "：", 3)
    parts = [p.translate(_FULL_WIDTH) for p in head[:3]] + head[3:]  # a name is kept as typed
    if len(parts) < 2:
        raise Refused(
            f"费用项格式有误：{text[:50]!r}（应为 类别:金额，如 甲:12.50）", reason="bad_bill", field="item"
        )
    item_class = _CLASS_NAMES.get(parts[0].strip(), parts[0].strip())
    permille = parts[2].strip() if len(parts) > 2 else ""
    if permille and not _digits(permille, 4):
        raise Refused(
            f"乙类先行自付比例格式有误：{permille[:20]!r}（应为 0 到 1000 的整数千分比，如 100 表示 10%）",
            reason="bad_bill",
            field="item",
        )
    return BillItem(
        amount_fen=_yuan_to_fen(parts[1]),
        item_class=item_class,
        self_pay_permille=int(permille) if permille else 0,
        name=parts[3] if len(parts) > 3 else "",
    )


def _yuan_to_fen(text: str) -> int:
    whole, _, frac = text.strip().partition(".")
    if not _digits(whole) or (frac and (not _digits(frac) or len(frac) > 2)):
        raise Refused(
            f"金额格式有误：{text[:30]!r}（以元为单位，最多两位小数）", reason="bad_bill", field="item"
        )
    return int(whole) * 100 + int((frac + "00")[:2] or 0)


def bill_from_items(items: list[str], category: str, locality: str, use_personal_account: bool) -> BillInput:
    parsed = tuple(parse_item(t) for t in items)
    data = {
        "category": category,
        "locality": locality,
        "use_personal_account": use_personal_account,
        "items": [
            {
                "amount_fen": i.amount_fen,
                "item_class": i.item_class,
                "self_pay_permille": i.self_pay_permille,
                "name": i.name,
            }
            for i in parsed
        ],
    }
    return parse_bill_file(json.loads(json.dumps(data)))
