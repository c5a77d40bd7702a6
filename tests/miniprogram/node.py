"""Runs the mini-program SDK's Node side (clients/miniprogram) from pytest.

Set up by scripts/miniprogram-setup (called by scripts/browser-setup). A missing piece (node, the npm
packages) skips the tests, unless YIBAO_REQUIRE_BROWSER=1 (CI), where it fails them, as for the
browser tests (tests/browser/harness.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SDK_DIR = Path(__file__).resolve().parents[2] / "clients" / "miniprogram"
NODE_TIMEOUT_S = 300  # a hang guard, never a measurement


def missing_pieces() -> list[str]:
    missing = []
    if shutil.which("node") is None:
        missing.append("node (Node.js 20+)")
    if not (SDK_DIR / "node_modules" / "rxdb" / "package.json").is_file():
        missing.append("clients/miniprogram/node_modules (npm ci)")
    return missing


def require_node() -> None:
    missing = missing_pieces()
    if not missing:
        return
    message = "the mini-program SDK tests need " + ", ".join(missing) + ": run scripts/browser-setup"
    if os.environ.get("YIBAO_REQUIRE_BROWSER") == "1":
        pytest.fail(message)
    pytest.skip(message)


def run_node(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["node", *args],
        cwd=SDK_DIR,
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT_S,
        check=False,
        env={**os.environ, **(env or {})},
    )
