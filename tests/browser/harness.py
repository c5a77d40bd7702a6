"""Runs the Node side of the browser tests (tests/browser/*.mjs, on lib/browser.mjs) from pytest.

Each script drives Debian's chromium through playwright-core with every non-loopback request blocked
and prints one JSON report; the pytest test asserts on it. Set up by scripts/browser-setup. A missing
piece (node, chromium, the npm packages) skips the tests, unless YIBAO_REQUIRE_BROWSER=1 (CI), where it
fails them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

BROWSER_DIR = Path(__file__).parent
CHROMIUM = os.environ.get("YIBAO_CHROMIUM") or "/usr/bin/chromium"
SCRIPT_TIMEOUT_S = 300  # a hang guard, never a measurement


def missing_pieces() -> list[str]:
    missing = []
    if shutil.which("node") is None:
        missing.append("node (Node.js 20+)")
    if not os.access(CHROMIUM, os.X_OK):
        missing.append(f"chromium at {CHROMIUM}")
    if not (BROWSER_DIR / "node_modules" / "playwright-core" / "package.json").is_file():
        missing.append("tests/browser/node_modules (npm ci)")
    return missing


def require_browser() -> None:
    missing = missing_pieces()
    if not missing:
        return
    message = "the browser tests need " + ", ".join(missing) + ": run scripts/browser-setup"
    if os.environ.get("YIBAO_REQUIRE_BROWSER") == "1":
        pytest.fail(message)
    pytest.skip(message)


def run_scenario(script: str, *args: str) -> dict[str, Any]:
    """Runs tests/browser/<script> with node; returns its report, or fails with what it printed."""
    proc = subprocess.run(
        ["node", str(BROWSER_DIR / script), *args],
        cwd=BROWSER_DIR,
        capture_output=True,
        text=True,
        timeout=SCRIPT_TIMEOUT_S,
        check=False,
    )
    lines = proc.stdout.strip().splitlines()
    try:
        report: dict[str, Any] = json.loads(lines[-1])
    except (IndexError, ValueError):
        pytest.fail(f"{script} printed no report (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    if proc.returncode != 0 or "error" in report:
        pytest.fail(f"{script} failed: {report.get('error')}\n{proc.stderr}\nreport: {report}")
    return report


def assert_stayed_on(report: dict[str, Any], origin: str) -> None:
    """Nothing was asked of another host, nothing failed to load, the page logged no error."""
    assert report["blocked"] == [], f"the page tried to reach other hosts: {report['blocked']}"
    assert report["failedRequests"] == []
    assert report["pageErrors"] == []
    assert report["consoleErrors"] == []
    expected = urlsplit(origin)
    for request in report["requests"]:
        url = urlsplit(request["url"])
        assert (url.scheme, url.netloc) == (expected.scheme, expected.netloc), request
        assert request["status"] < 400, request
