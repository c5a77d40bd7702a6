"""`yibao serve` as a newcomer runs it: a real process, SQLite in a fresh data dir, demo data, banner."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from api.demo import city_person, generate_city
from api.people import idnumbers


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_serve_migrates_loads_demo_and_prints_logins(tmp_path: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("YIBAO_")}
    env.update(YIBAO_DATA_DIR=str(tmp_path / "data"), YIBAO_DEMO_PEOPLE="60", YIBAO_LOGIN_RATE_LIMIT="3")
    yibao = Path(sys.executable).with_name("yibao")
    process = subprocess.Popen(
        [str(yibao), "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "yibao serve did not come up"
            time.sleep(0.3)
        body = httpx.post(
            f"http://127.0.0.1:{port}/graphql",
            json={"query": 'mutation { login(provider: "demo", code: "elder") { accessToken } }'},
        ).json()
        assert body["data"]["login"]["accessToken"]
        # A local client writing X-Forwarded-For itself does not get a fresh login window per value.
        codes = [
            httpx.post(
                f"http://127.0.0.1:{port}/graphql",
                json={"query": 'mutation { login(provider: "demo", code: "elder") { expiresIn } }'},
                headers={"x-forwarded-for": f"203.0.113.{i}"},
            )
            .json()
            .get("errors", [{}])[0]
            .get("extensions", {})
            .get("code")
            for i in range(3)
        ]
        assert codes == [None, None, "RATE_LIMITED"]
        assert (tmp_path / "data" / "yibao.db").exists()
        assert (tmp_path / "data" / "keys" / "keys.json").exists()
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=30)
    assert f"http://127.0.0.1:{port}/graphql" in output
    for login in ("resident", "elder", "spouse", "stranger", "pharmacy", "reviewer", "admin"):
        assert login in output


def test_city_generator_streams_unique_valid_people(tmp_path: Path) -> None:
    generate_city(tmp_path, people=3000, seed=7)
    lines = (tmp_path / "people.csv").read_text().splitlines()[1:]
    assert len(lines) == 3000
    numbers = [line.split(",")[1] for line in lines]
    assert len(set(numbers)) == 3000
    assert all(idnumbers.normalize(n) == n for n in numbers)
    # Uniqueness holds by construction across the whole range, not only in small samples.
    sample = [city_person(i)[0] for i in range(0, 2_000_000, 3)]
    assert len(set(sample)) == len(sample)
