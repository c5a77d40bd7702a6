"""Shared harness of the HTTP benchmarks: start a uvicorn server and wait until it answers, drive it with a
fixed number of requests over N keep-alive connections on 127.0.0.1 (closed or open loop), optionally
from a separate process, and sample its RSS.

The benchmarks import it as `harness` (bench/ is sys.path[0] when they run as scripts, and their bare
apps are served with `--app-dir bench`). `run_load_process` runs this file as a script, so the load
generator's interpreter finds it without any sys.path set-up:

    python bench/harness.py '{"url": ..., "payloads": [...], "connections": 10, "requests": 300}'
"""

from __future__ import annotations

import asyncio
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any, TypedDict

import httpx

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
HOST = "127.0.0.1"  # loopback only: the figures measure the servers, not a network


class LoadResult(TypedDict):
    requests: int
    errors: int
    rps: float
    p50_ms: float
    p99_ms: float


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def uvicorn_cmd(factory: str, port: int, app_dir: Path | None = None) -> list[str]:
    """One uvicorn worker (its default) serving `factory`, without access logs."""
    cmd = [sys.executable, "-m", "uvicorn", "--host", HOST, "--port", str(port), "--no-access-log"]
    cmd += ["--log-level", "warning", "--factory", factory]
    return cmd if app_dir is None else [*cmd, "--app-dir", str(app_dir)]


def start_server(
    cmd: list[str], env: dict[str, str], port: int, ready_path: str, timeout: float = 30.0
) -> subprocess.Popen[bytes]:
    """Start `cmd` from the repository root and return once GET `ready_path` gets any answer (a bare app
    without that path answers 404, which still proves it serves). Raises with the server's stderr if it
    exits first or does not answer within `timeout` seconds."""
    # A file rather than a pipe: nobody reads stderr during the run, and a full pipe would stall the server.
    with tempfile.TemporaryFile() as log:
        server = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise RuntimeError(
                    f"server exited with status {server.returncode} before answering on port {port}:"
                    f"\n{_tail(log)}"
                )
            try:
                httpx.get(f"http://{HOST}:{port}{ready_path}", timeout=1)
                return server
            except httpx.TransportError:
                time.sleep(0.1)
        stop_server(server)
        raise RuntimeError(f"server did not answer on port {port} within {timeout:g} s:\n{_tail(log)}")


def _tail(log: IO[bytes], chars: int = 4000) -> str:
    log.seek(0)
    return log.read().decode(errors="replace")[-chars:]


def stop_server(server: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    server.terminate()
    try:
        server.wait(timeout=timeout)
    except subprocess.TimeoutExpired:  # a stuck shutdown must not leave a server behind
        server.kill()
        server.wait()


def login(port: int) -> str:
    """Access token of the demo `resident` (the data dir must hold the demo county)."""
    response = httpx.post(
        f"http://{HOST}:{port}/graphql",
        json={"query": 'mutation { login(provider: "demo", code: "resident") { accessToken } }'},
    )
    token: str = response.json()["data"]["login"]["accessToken"]
    return token


def _failed(response: httpx.Response) -> bool:
    if response.status_code != 200:
        return True
    body = response.json()
    # GraphQL reports failures as "errors" with status 200; the bare apps' AppError bodies carry "error".
    return isinstance(body, dict) and ("errors" in body or "error" in body)


async def load(
    url: str,
    payloads: list[dict[str, Any]],
    connections: int,
    requests: int,
    headers: dict[str, str] | None = None,
    rate: float = 0.0,
    warmup: int = 20,
    request_timeout: float = 60.0,
) -> LoadResult:
    """POST `requests` JSON bodies to `url`, cycling through `payloads`, over at most `connections`
    keep-alive connections, after `warmup` untimed sequential requests (caches, a first connection).

    Closed loop (rate 0): every connection sends its next request as soon as the last one answers, which
    measures the most the server can do. Open loop (rate > 0): requests start on a fixed schedule of
    `rate` per second over the connections, whatever the server does, which measures latency at that
    load (a late answer does not hold back the next request, so queueing shows in the figures)."""
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(limits=limits, timeout=request_timeout, headers=headers) as client:

        async def one(i: int) -> None:
            nonlocal errors
            started = time.perf_counter()
            response = await client.post(url, json=payloads[i % len(payloads)])
            latencies.append(time.perf_counter() - started)
            if _failed(response):
                errors += 1

        indices = iter(range(requests))  # shared by the workers: each request is sent once

        async def worker() -> None:
            for i in indices:
                await one(i)

        for i in range(min(warmup, requests)):
            await client.post(url, json=payloads[i % len(payloads)])
        started = time.perf_counter()
        if rate > 0:
            pending = []
            for i in range(requests):
                delay = started + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                pending.append(asyncio.create_task(one(i)))
            await asyncio.gather(*pending)
        else:
            await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "requests": len(latencies),
        "errors": errors,
        "rps": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[max(int(len(latencies) * 0.99) - 1, 0)] * 1000,
    }


def run_load_process(
    url: str,
    payloads: list[dict[str, Any]],
    connections: int,
    requests: int,
    headers: dict[str, str] | None = None,
    rate: float = 0.0,
    warmup: int = 20,
    request_timeout: float = 60.0,
) -> LoadResult:
    """`load` in its own interpreter, so the load generator does not share a GIL with the caller."""
    kwargs = {
        "url": url,
        "payloads": payloads,
        "connections": connections,
        "requests": requests,
        "headers": headers,
        "rate": rate,
        "warmup": warmup,
        "request_timeout": request_timeout,
    }
    done = subprocess.run(
        [sys.executable, str(BENCH / "harness.py"), json.dumps(kwargs)], capture_output=True, text=True
    )
    if done.returncode:
        raise RuntimeError(f"the load generator failed:\n{done.stderr}")
    result: LoadResult = json.loads(done.stdout)
    return result


def rss_kb(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:  # the server is gone; the run reports what it saw
        return 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class PeakRss:
    """`with PeakRss(pid) as rss:` samples the process's RSS from /proc every `interval` seconds on a
    thread while the block runs; `rss.peak_mb` is the highest seen."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_kb = max(self.peak_kb, rss_kb(self.pid))
            time.sleep(self.interval)

    @property
    def peak_mb(self) -> float:
        return self.peak_kb / 1024

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()


if __name__ == "__main__":  # the load generator process of run_load_process
    print(json.dumps(asyncio.run(load(**json.loads(sys.argv[1])))))
