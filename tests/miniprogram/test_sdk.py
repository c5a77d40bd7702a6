"""The SDK's unit tests (clients/miniprogram/test/*.test.mjs, node's test runner) against the committed
build in clients/miniprogram/dist: refresh once under concurrency, expiry mid-use, a refused refresh,
a lost refresh answer retried, wx.request vs fetch, retries without duplicate writes, the offline voucher's
test vectors, and the SDK without a crypto global (a mini-program: wx.getRandomValues)."""

from __future__ import annotations

import re

import pytest

from tests.miniprogram.node import SDK_DIR, require_node, run_node


def test_sdk_unit_tests_pass() -> None:
    require_node()
    files = sorted(str(p.relative_to(SDK_DIR)) for p in (SDK_DIR / "test").glob("*.test.mjs"))
    assert files, "no SDK unit tests found"
    proc = run_node("--test", "--test-reporter=tap", *files)
    passed = re.search(r"^# pass (\d+)$", proc.stdout, re.M)
    failed = re.search(r"^# fail (\d+)$", proc.stdout, re.M)
    if proc.returncode != 0 or not passed or not failed or failed[1] != "0":
        pytest.fail(
            f"node --test failed (exit {proc.returncode}):\n{proc.stdout[-8000:]}\n{proc.stderr[-4000:]}"
        )
    assert int(passed[1]) >= 40
    print(f"{passed[1]} SDK unit tests passed")
