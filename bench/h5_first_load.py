"""Issue 12 benchmark: the H5 page's first load on a throttled 3G profile, bytes and time until the QR
shows, in Debian's chromium (bench/h5_first_load.mjs, on the browser tests' packages: run
scripts/browser-setup first). The server is one uvicorn worker on 127.0.0.1 over a fresh SQLite demo
county; the network between them is Chrome DevTools' emulation ("3G" and "Slow 3G").

Also prints the bundle's own sizes (api/static/h5, gzip -9 as the server sends them): what the first
load needs (the page's entry script, the chunks it preloads, the stylesheet) and all of it (the other
pages and the offline voucher, fetched after the QR shows).

    .venv/bin/python bench/h5_first_load.py              # 3 runs per profile and case, medians
    .venv/bin/python bench/h5_first_load.py --runs 5 --json
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from harness import BENCH, free_port, start_server, stop_server, uvicorn_cmd

STATIC = BENCH.parent / "api" / "static" / "h5"


def bundle_sizes() -> dict[str, int]:
    manifest = json.loads((STATIC / "manifest.json").read_text())

    def gz(name: str) -> int:
        return len(gzip.compress((STATIC / name).read_bytes(), compresslevel=9, mtime=0))

    first = [manifest["script"], *manifest["preload"], manifest["stylesheet"]]
    return {
        "first_load_gzip": sum(gz(name) for name in first),
        "first_load_raw": sum((STATIC / name).stat().st_size for name in first),
        "all_gzip": sum(gz(name) for name in manifest["files"]),
        "all_raw": sum((STATIC / name).stat().st_size for name in manifest["files"]),
        "first_load_files": len(first),
        "files": len(manifest["files"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not 1 <= args.runs <= 20:
        parser.error("--runs 1..20")

    data_dir = Path(tempfile.mkdtemp(prefix="yibao-bench-"))
    env = {
        **os.environ,
        "YIBAO_DATA_DIR": str(data_dir),
        "YIBAO_LOG_LEVEL": "WARNING",
        "YIBAO_LOGIN_RATE_LIMIT": "1000",
        "YIBAO_DEMO_PEOPLE": "200",
    }
    yibao = str(Path(sys.executable).with_name("yibao"))
    subprocess.run([yibao, "migrate"], env=env, check=True, stdout=subprocess.DEVNULL)
    subprocess.run([yibao, "demo"], env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    port = free_port()
    server = start_server(uvicorn_cmd("api.app:app_factory", port), env, port, "/healthz")
    try:
        proc = subprocess.run(
            ["node", str(BENCH / "h5_first_load.mjs"), f"http://127.0.0.1:{port}", str(args.runs)],
            capture_output=True,
            text=True,
            check=False,
            timeout=3600,
        )
    finally:
        stop_server(server)
    if proc.returncode != 0:
        raise SystemExit(f"h5_first_load.mjs failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    browser: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    report = {
        "bundle": bundle_sizes(),
        "browser": browser,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    b = report["bundle"]
    print(
        f"bundle: first load {b['first_load_gzip'] / 1024:.1f} KiB gzip ({b['first_load_raw'] / 1024:.1f} KiB raw, "
        f"{b['first_load_files']} files); everything {b['all_gzip'] / 1024:.1f} KiB gzip in {b['files']} files"
    )
    print(f"{'profile':10}{'case':14}{'QR at (s)':>11}{'wire KiB':>10}{'requests':>10}   runs (ms)")
    for name, profile in browser["profiles"].items():
        for case in ("firstVisit", "returning", "warm"):
            r = profile[case]
            print(
                f"{name:10}{case:14}{r['qrMs'] / 1000:>11.2f}{r['bytes'] / 1024:>10.1f}{r['requests']:>10.0f}   "
                f"{r['qrMsAll']}"
            )
        fv = profile["firstVisit"]
        print(
            f"{'':10}{'':14}login picker at {fv['loginShownMs'] / 1000:.2f} s, {fv['bytesToLogin'] / 1024:.1f} KiB"
        )


if __name__ == "__main__":
    main()
