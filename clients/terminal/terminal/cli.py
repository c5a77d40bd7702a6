"""`yibao-terminal`: the village-clinic agent.

This version verifies vouchers offline (`scan`) against the issuer keys and revocation list kept in
its home, and reports its state (`status`). Enrolment, settling and the sync loop arrive with the
clinic-sync issue; until then their commands are not offered.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from sync.vouchers import InMemoryReplayGuard, verify_code
from terminal.home import Home


def _emit(args: argparse.Namespace, payload: dict[str, Any], text: str) -> None:
    # `json` is absent unless --json was given, before or after the command (see parser()).
    print(json.dumps(payload, ensure_ascii=False) if getattr(args, "json", False) else text)


def cmd_status(args: argparse.Namespace, home: Home) -> int:
    if not home.has_trust():
        _emit(args, {"trusted_keys": 0, "revocation_version": None}, "未同步签发密钥：请先登记并同步本终端")
        return 0
    trust = home.load_trust()
    payload = {"trusted_keys": len(trust.issuer_keys), "revocation_version": trust.revocations.version}
    _emit(args, payload, f"签发密钥 {len(trust.issuer_keys)} 个，吊销清单版本 {trust.revocations.version}")
    return 0


def cmd_scan(args: argparse.Namespace, home: Home) -> int:
    if not home.has_trust():
        _emit(args, {"valid": False, "reason": "no_trust"}, "无法核验：本终端尚未同步签发密钥")
        return 2
    trust = home.load_trust()
    # One process scans one code; replays across scans are caught by the agent's persistent guard
    # once the sync issue lands. Here the in-memory guard still refuses a code repeated in one run.
    result = verify_code(
        args.code,
        issuer_keys=trust.issuer_keys,
        revocations=trust.revocations,
        now=int(time.time()),
        replay_guard=InMemoryReplayGuard(),
    )
    text = "核验通过" if result.valid else f"核验未通过：{result.reason}"
    _emit(args, result.to_dict(), text)
    return 0 if result.valid else 1


def parser() -> argparse.ArgumentParser:
    # --json is accepted before or after the command (`yibao-terminal --json status` and
    # `yibao-terminal status --json`); SUPPRESS keeps a sub-command's default from undoing the flag.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output"
    )
    root = argparse.ArgumentParser(
        prog="yibao-terminal", description="yibao village-clinic terminal", parents=[common]
    )
    root.add_argument(
        "--home", type=Path, default=Path(".yibao-terminal"), help="the terminal's data directory"
    )
    sub = root.add_subparsers(dest="command", required=True)
    status = sub.add_parser("status", help="what this terminal has synced", parents=[common])
    status.set_defaults(func=cmd_status)
    scan = sub.add_parser("scan", help="verify a voucher code offline", parents=[common])
    scan.add_argument("code")
    scan.set_defaults(func=cmd_scan)
    return root


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    sys.exit(args.func(args, Home(args.home)))
