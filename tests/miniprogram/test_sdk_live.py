"""The SDK (clients/miniprogram/dist) against a running server: login, a refused access token
refreshed once for two concurrent calls, a refresh whose answer was lost sent again with the same token
(the server's grace window) without a re-login, the offline voucher certified and its code verified by a
pharmacy, and a login ended elsewhere giving a clear re-login error."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.miniprogram.node import NODE_TIMEOUT_S, require_node

SCRIPT = Path(__file__).with_name("sdk_live.mjs")


def run(base_url: str) -> dict[str, Any]:
    proc = subprocess.run(
        ["node", str(SCRIPT), base_url],
        cwd=SCRIPT.parent,
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT_S,
        check=False,
    )
    try:
        report: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        pytest.fail(f"no report (exit {proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}")
    if "error" in report:
        pytest.fail(str(report["error"]))
    return report


async def test_the_sdk_against_a_live_server(live_server: str) -> None:
    require_node()
    report = await asyncio.to_thread(run, live_server)
    assert report["me"]
    assert report["afterRefresh"] == {
        "me": report["me"],
        "settlements": 3,
        "refreshes": 1,
        "refreshTokenChanged": True,
    }
    voucher = report["voucher"]
    assert voucher["state"] == "valid" and voucher["code"] == "YBD:"
    assert voucher["verified"] == {
        "valid": True,
        "reason": None,
        "form": "offline",
        "certificateSerial": voucher["serial"],
    }
    assert voucher["again"]["valid"] is False and voucher["again"]["reason"] == "replayed"
    assert report["lostAnswer"] == {
        "me": report["me"],
        "sent": 2,
        "sameToken": True,
        "refreshes": 1,
        "loggedIn": True,
        "onward": True,
    }
    assert report["relogin"] == {
        "isRelogin": True,
        "code": "UNAUTHENTICATED",
        "message": "登录已过期，请重新登录",
        "loggedIn": False,
    }
