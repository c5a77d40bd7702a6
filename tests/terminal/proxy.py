"""A small loopback HTTP proxy that misbehaves on purpose, between terminal agents and the server.

It runs its own event loop in a thread. Every connection is forwarded to the upstream port; what the
client gets back depends on `mode` (or, in mode "random", on a draw per connection from `rng`):

- ``pass``: the server's reply, untouched;
- ``drop``: the request reaches the server (which may apply it), the reply is thrown away and the
  connection closed: "the server applied the batch but the reply never arrived";
- ``truncate``: the request reaches the server, the client gets the first part of the reply and then
  the connection closes;
- ``gzip``: the request reaches the server, the client gets the reply's headers with its body cut in
  half and Content-Length fixed up to match: a complete HTTP message carrying a truncated gzip stream;
- ``garbage``: the request reaches the server, the client gets a 200 whose body is not JSON;
- ``error``: the request never reaches the server; the client gets a 500 with an HTML body;
- ``busy``: the request never reaches the server; the client gets a 503 with ``Retry-After: 2``;
- ``silent``: the request never reaches the server; the connection stays open and says nothing
  until the client gives up;
- ``refuse``: the connection is closed at once;
- ``delay``: the reply arrives after `delay_s` seconds;
- ``portal``: the request never reaches the server; the client gets a 200 HTML page with a `Date` in
  2099, as a captive portal or a misconfigured proxy with a wrong clock answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from collections import Counter

MODES = (
    "pass",
    "drop",
    "truncate",
    "gzip",
    "garbage",
    "error",
    "busy",
    "silent",
    "refuse",
    "delay",
    "portal",
)
FORWARDING = {"pass", "drop", "truncate", "gzip", "garbage", "delay"}


class FaultyProxy:
    def __init__(self, upstream_port: int, *, seed: int = 0) -> None:
        self.upstream_port = upstream_port
        self.mode = "pass"
        self.script: list[str] = []
        """Modes for the next connections, one each, before `mode` applies again."""
        self.rng = random.Random(seed)
        self.weights: dict[str, float] = {
            "pass": 6,
            "drop": 1,
            "truncate": 1,
            "gzip": 1,
            "garbage": 1,
            "error": 1,
            "delay": 1,
        }
        self.delay_s = 1.5
        self.seen: Counter[str] = Counter()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._server: asyncio.AbstractServer | None = None
        self.port = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    def close(self) -> None:
        def stop() -> None:
            if self._server is not None:
                self._server.close()
            for task in asyncio.all_tasks(self._loop):
                task.cancel()
            self._loop.call_soon(self._loop.stop)

        self._loop.call_soon_threadsafe(stop)
        self._thread.join(timeout=10)

    def _choose(self) -> str:
        if self.script:
            return self.script.pop(0)
        if self.mode != "random":
            return self.mode
        names = list(self.weights)
        return self.rng.choices(names, weights=[self.weights[n] for n in names])[0]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        mode = self._choose()
        self.seen[mode] += 1
        try:
            if mode == "refuse":
                return
            if mode == "error":
                await _read_request(reader)
                body = b"<html><body>502 Bad Gateway</body></html>"
                writer.write(
                    b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/html\r\n"
                    + f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
                return
            if mode == "busy":
                await _read_request(reader)
                writer.write(
                    b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 2\r\ncontent-length: 0\r\n"
                    b"connection: close\r\n\r\n"
                )
                await writer.drain()
                return
            if mode == "portal":
                await _read_request(reader)
                body = "<html><body>请先登录网络</body></html>".encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\n"
                    b"date: Thu, 01 Jan 2099 00:00:00 GMT\r\n"
                    + f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
                return
            if mode == "silent":
                await _read_request(reader)
                await asyncio.sleep(3600)
                return
            await self._forward(reader, writer, mode)
        except (ConnectionError, asyncio.IncompleteReadError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, mode: str) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        try:
            request = await _read_request(reader)
            up_writer.write(request)
            await up_writer.drain()
            head, body = await _read_response(up_reader)
            if mode == "pass":
                writer.write(head + body)
            elif mode == "delay":
                await asyncio.sleep(self.delay_s)
                writer.write(head + body)
            elif mode == "drop":
                return
            elif mode == "truncate":
                whole = head + body
                writer.write(whole[: max(1, len(whole) // 2)])
            elif mode == "gzip":
                cut = body[: max(1, len(body) // 2)]
                lines = [
                    line
                    for line in head.split(b"\r\n")
                    if line and not line.lower().startswith((b"content-length:", b"connection:"))
                ]
                writer.write(
                    b"\r\n".join(lines)
                    + f"\r\ncontent-length: {len(cut)}\r\nconnection: close\r\n\r\n".encode()
                    + cut
                )
            elif mode == "garbage":
                junk = b"\x1f\x8b not json at all {{{"
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    + f"content-length: {len(junk)}\r\nconnection: close\r\n\r\n".encode()
                    + junk
                )
            await writer.drain()
        finally:
            with contextlib.suppress(Exception):
                up_writer.close()


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    """One HTTP/1.1 request (headers and a Content-Length body); the proxy closes after one exchange."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = _content_length(head)
    body = await reader.readexactly(length) if length else b""
    # One exchange per connection: the client opens a new one for the next request.
    lines = [line for line in head.split(b"\r\n") if line and not line.lower().startswith(b"connection:")]
    return b"\r\n".join(lines) + b"\r\nconnection: close\r\n\r\n" + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = _content_length(head)
    if length is not None:
        return head, await reader.readexactly(length)
    return head, await reader.read()  # chunked or close-delimited: read to the end (connection: close)


def _content_length(head: bytes) -> int | None:
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":", 1)[1].strip())
    return None
