"""What `status` shows: the queue, the last sync, and what the server changed or refused."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sync.protocol import ADJUST_LABELS, REASON_LABELS, SPLIT_FIELDS
from sync.settlement.engine import yuan
from terminal.clock import iso
from terminal.serverurl import insecure_http_warning
from terminal.settle import SHANGHAI, mask_name
from terminal.store import Store

_LAYER_LABELS = dict(zip(SPLIT_FIELDS, ("基本医保", "大病保险", "医疗救助", "个人账户", "现金"), strict=True))
TEXT_LIMIT = 20


def _label(labels: dict[Any, str], code: object) -> str | None:
    return labels.get(code) if isinstance(code, str) else None


def status(store: Store) -> dict[str, Any]:
    identity = store.identity()
    own_id = identity.get("terminalId") if identity else None
    clock = store.clock()
    with store.read() as db:
        length, oldest = store.queue_stats()
        counts = {
            row[0]: int(row[1])
            for row in db.execute("SELECT status, count(*) FROM settlements GROUP BY status")
        }
        every_issue = [json.loads(data) for (data,) in db.execute("SELECT data FROM push_issues ORDER BY id")]
        issues = {i.get("mutationId"): i for i in every_issue if str(i.get("terminalId")) == str(own_id)}
        names = {
            pid: json.loads(data).get("name", "")
            for pid, data in db.execute("SELECT person_id, data FROM roster")
        }
        rows = db.execute(
            "SELECT mutation_id, seq, person_id, visit_date, status, reason, terminal_split, server "
            "FROM settlements WHERE status IN ('adjusted', 'rejected') ORDER BY seq"
        ).fetchall()
        synced = store.counts()
        revocation_version = store.revocation_list().version
        meta = {
            key: store.get(key, None, db)
            for key in ("last_sync_at", "last_push_at", "last_pull_at", "last_error", "revoked", "push_stuck")
        }
    adjustments, rejections = [], []
    for mid, seq, person_id, visit_date, state, reason, terminal_split, server in rows:
        answer = json.loads(server) if server else {}
        issue = issues.get(mid) or {}
        item: dict[str, Any] = {
            "mutationId": mid,
            "seq": seq,
            "visitDate": visit_date,
            "patient": mask_name(names.get(person_id, "")) if person_id else None,
            "resolved": issue.get("resolvedAt") is not None,
            "resolvedAt": issue.get("resolvedAt"),
            "resolutionNote": issue.get("resolutionNote"),
        }
        if state == "adjusted":
            adjustment = answer.get("adjustment") or {}
            settlement = answer.get("settlement") or {}
            code = adjustment.get("reason")
            item.update(
                reason=code,
                message=adjustment.get("message") or _label(ADJUST_LABELS, code),
                terminal=json.loads(terminal_split),
                server={name: settlement.get(name) for name in SPLIT_FIELDS},
                deltas=adjustment.get("deltas") or {},
                serverVisitDate=settlement.get("visitDate"),
            )
            adjustments.append(item)
        else:
            item.update(
                reason=reason,
                message=answer.get("message") or _label(REASON_LABELS, reason),
                detail=answer.get("detail"),
                field=answer.get("field"),
            )
            rejections.append(item)
    return {
        "enrolled": identity is not None,
        "terminalId": identity.get("terminalId") if identity else None,
        "clinicId": identity.get("clinicId") if identity else None,
        "clinicName": identity.get("clinicName") if identity else None,
        "server": identity.get("server") if identity else None,
        "insecureServer": insecure_http_warning(str(identity.get("server"))) if identity else None,
        "revoked": meta["revoked"],
        "pushStuck": meta["push_stuck"],
        "readOnly": store.read_only,
        "unwritable": store.unwritable,
        "queue": {"length": length, "oldestClientTime": oldest},
        "lastSyncAt": meta["last_sync_at"],
        "lastPushAt": meta["last_push_at"],
        "lastPullAt": meta["last_pull_at"],
        "lastError": meta["last_error"],
        "clock": {
            "offsetS": round(clock.offset_s, 3),
            "lastServerTime": iso(clock.server_time),
            "behind": clock.is_behind(),
        },
        "synced": {**synced, "revocationVersion": revocation_version},
        "settlements": {
            "total": sum(counts.values()),
            "pending": counts.get("pending", 0),
            "applied": counts.get("applied", 0),
            "adjusted": counts.get("adjusted", 0),
            "rejected": counts.get("rejected", 0),
        },
        "adjustments": adjustments,
        "rejections": rejections,
        # The clinic's other terminals' adjusted and rejected settlements, as the server keeps them.
        "clinicIssues": [
            {
                "terminalId": i.get("terminalId"),
                "seq": i.get("seq"),
                "status": i.get("status"),
                "reason": i.get("reason"),
                "message": (i.get("result") or {}).get("message")
                or ((i.get("result") or {}).get("adjustment") or {}).get("message"),
                "resolved": i.get("resolvedAt") is not None,
            }
            for i in every_issue
            if str(i.get("terminalId")) != str(own_id)
        ],
    }


def local_time(text: str | None) -> str:
    """A stored UTC timestamp as the clinic reads it: Asia/Shanghai, to the minute."""
    if not text:
        return "从未"
    try:
        return datetime.fromisoformat(text).astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return text


def _who(item: dict[str, Any]) -> str:
    return str(item["patient"] or "非本村签约居民")


def stuck_text(stuck: dict[str, Any]) -> str:
    error = stuck.get("error") or {}
    return (
        f"！上传受阻：第 {stuck.get('seq')} 笔结算被服务器拒收（{error.get('message', '')}，"
        f"{local_time(stuck.get('at'))}），本机还有 {stuck.get('queued')} 笔待上传。{stuck.get('advice', '')}"
    )


def status_text(data: dict[str, Any]) -> str:
    if not data["enrolled"]:
        return "本终端尚未登记：请运行 enrol --server URL --code 注册码。"
    lines = [
        f"终端 {data['terminalId']}（{data['clinicName']}，机构号 {data['clinicId']}）服务器 {data['server']}"
    ]
    if data.get("insecureServer"):
        lines.append(f"！{data['insecureServer']}")
    if data["revoked"]:
        lines.append(
            f"！终端已被停用：{data['revoked'].get('message', '')}（不再上传，未上传的结算仍保存在本机）"
        )
    if data.get("pushStuck"):
        lines.append(stuck_text(data["pushStuck"]))
    if data.get("unwritable") == "disk_full":
        lines.append("！磁盘空间已满：现在不能结算或同步，请清理磁盘。")
    elif data.get("readOnly"):
        lines.append("！终端数据目录只读：现在不能结算或同步，请检查磁盘或目录权限。")
    queue = data["queue"]
    if queue["length"]:
        lines.append(
            f"待上传结算：{queue['length']} 笔，最早一笔结算于 {local_time(queue['oldestClientTime'])}"
        )
    else:
        lines.append("待上传结算：0 笔")
    lines.append(
        f"上次完整同步：{local_time(data['lastSyncAt'])}（上次上传 {local_time(data['lastPushAt'])}，"
        f"上次下载 {local_time(data['lastPullAt'])}）"
    )
    if data["lastError"]:
        lines.append(
            f"上次同步出错：{data['lastError'].get('message')}（{local_time(data['lastError'].get('at'))}）"
        )
    if data["clock"]["behind"]:
        lines.append("！本机时钟早于上次同步时的服务器时间，请校准时钟。")
    synced = data["synced"]
    lines.append(
        f"已同步：签约居民 {synced['roster']} 人，医保政策 {synced['policies']} 版，签发密钥 {synced['issuerKeys']} 个，"
        f"注销清单版本 {synced['revocationVersion']}"
    )
    s = data["settlements"]
    lines.append(
        f"本机结算 {s['total']} 笔：待确认 {s['pending']}，已确认 {s['applied']}，已调整 {s['adjusted']}，被拒绝 {s['rejected']}"
    )
    if data["adjustments"]:
        lines.append("医保中心调整的结算（请向患者说明）：")
        for item in data["adjustments"][-TEXT_LIMIT:]:
            changes = "，".join(
                f"{_LAYER_LABELS[name]} {yuan(item['terminal'].get(name, 0))}→{yuan(item['server'].get(name) or 0)}"
                for name in SPLIT_FIELDS
                if item["deltas"].get(name)
            )
            done = "（已处理）" if item["resolved"] else ""
            day = item["visitDate"]
            if item.get("serverVisitDate") and item["serverVisitDate"] != day:
                day = f"{day}→{item['serverVisitDate']}"  # re-dated by the server: say to which day
            lines.append(
                f"  第 {item['seq']} 笔 {day} {_who(item)}：{item['message']}；{changes or '金额未变'}{done}"
            )
    if data["rejections"]:
        lines.append("医保中心拒绝的结算（需经办人员处理，请勿重复结算）：")
        for item in data["rejections"][-TEXT_LIMIT:]:
            done = f"（已处理：{item['resolutionNote'] or ''}）" if item["resolved"] else "（待处理）"
            lines.append(f"  第 {item['seq']} 笔 {item['visitDate']} {_who(item)}：{item['message']}{done}")
    others = [i for i in data.get("clinicIssues", []) if not i["resolved"]]
    if others:
        lines.append(f"本机构其他终端有 {len(others)} 笔被调整或拒绝的结算待经办人员处理。")
    return "\n".join(lines)
