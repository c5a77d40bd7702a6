"""HTTP to the server's /sync endpoints (DESIGN.md sections 4 and 7), built with the shared wire types.

Every request after enrolment carries a fresh client assertion (`sync.assertion.make_assertion`) signed
with the terminal's key at the terminal's corrected clock. Bodies are JSON, gzip-compressed when large;
answers are accepted gzip-compressed. Every answer of the server's own (JSON of the expected shape)
teaches the clock its offset by its `Date` header (and a `clock_skew` refusal by its `serverTime`).

What an answer means is decided here, once:
- a usable 2xx JSON answer: returned;
- no answer, a timeout, a 5xx, garbage, a truncated or broken gzip body, a 429, a 409
  `concurrent_push`: `Unreachable` (retry later, not before a `Retry-After` if the server sent one;
  nothing was lost, the server is exactly-once);
- garbage includes whatever no server of ours sends: JSON nested past MAX_ANSWER_DEPTH or holding a
  lone surrogate, a body past MAX_ANSWER_BYTES inflated, a content-encoding other than one gzip layer.
  Whatever answers on the way (a proxy, a captive portal, a forger on plain http) ends as a
  TerminalError, never another exception: `watch` would die of it;
- 401 `clock_skew` or `expired` (a fresh assertion can only be expired if our clock is behind): the
  clock learns the server's time and the request is made again at once;
- 401 `terminal_revoked`: `TerminalRevoked` (stop, and say why);
- 413: `TooLarge`, a `ServerRefused` (the push sends less at a time);
- any other 4xx: `ServerRefused`, with the server's message.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import math
import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sync.assertion import make_assertion
from sync.protocol import MAX_CHECKPOINT_CHARS, Mutation, PushResult, WireError, parse_push_answer
from terminal.clock import ClockState, local_time
from terminal.errors import ServerRefused, TerminalRevoked, Unreachable

GZIP_ABOVE = 1024
USER_AGENT = "yibao-terminal/1"
DEFAULT_TIMEOUT_S = 30.0
MAX_RETRY_AFTER_S = 600.0
MAX_EXCHANGE_S = 600.0
"""One request and its whole answer, at most: a pull page of a few MiB at 10 KiB/s still fits."""
MAX_ANSWER_BYTES = 64 * 1024 * 1024
"""An answer (inflated) past this is refused as bad: a pull page of MAX_PULL_LIMIT changes is a few
MiB; a gzip bomb on the way must not take the agent's memory."""
MAX_MESSAGE_CHARS = 500
MAX_CODE_CHARS = 100
EARLIEST_SERVER_TIME = datetime(2000, 1, 1, tzinfo=UTC).timestamp()
LATEST_SERVER_TIME = datetime(2100, 1, 1, tzinfo=UTC).timestamp()
MAX_ANSWER_DEPTH = 64
"""Our server's answers nest a dozen levels at most; anything deeper is not one of them."""


class TooLarge(ServerRefused):
    """A 413: the push sends fewer mutations at a time (syncer.push_all). Anywhere else (a proxy's
    413 to a pull) it is a refusal like any other 4xx: a TerminalError, so `watch` stops and says
    why instead of dying of it."""

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message, status=413, reason="too_large", **details)


@dataclass
class Identity:
    terminal_id: str
    key: Ed25519PrivateKey
    audience: str


class SyncClient:
    def __init__(
        self,
        server: str,
        clock: ClockState,
        identity: Identity | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.server = server.rstrip("/")
        self.clock = clock
        self.identity = identity
        self._own_http = http is None
        self.http = http or httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            headers={"user-agent": USER_AGENT, "accept-encoding": "gzip"},
        )
        self.clock_changed = False

    async def __aenter__(self) -> SyncClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._own_http:
            await self.http.aclose()

    # ---------------------------------------------------------------------------------- endpoints

    async def enrol(self, code: str, public_key: str) -> dict[str, Any]:
        answer = await self._post("/sync/enrol", {"code": code, "publicKey": public_key}, auth=False)
        for name in ("terminalId", "clinicId"):
            if not isinstance(answer.get(name), str):
                raise Unreachable("服务器的登记应答不完整", reason="bad_response", field=name)
        # What cli._enrol stores as the identity, and every later request signs with (`audience`).
        for name in ("clinicName", "villageCode", "regionCode", "facilityLevel", "audience"):
            if not isinstance(answer.get(name), str | None):
                raise Unreachable("服务器的登记应答格式有误", reason="bad_response", field=name)
        return answer

    async def pull(self, checkpoint: str | None, limit: int) -> dict[str, Any]:
        answer = await self._post("/sync/pull", {"checkpoint": checkpoint, "limit": limit})
        if answer.get("resync") is True:
            return answer
        if (
            not isinstance(answer.get("changes"), list)
            or not isinstance(answer.get("checkpoint"), str)
            or not isinstance(answer.get("hasMore"), bool)
            # The server refuses a longer one (sync.protocol): stored, it would fail every pull after.
            or len(answer["checkpoint"]) > MAX_CHECKPOINT_CHARS
        ):
            raise Unreachable("服务器的同步应答格式有误", reason="bad_response")
        return answer

    async def push(self, mutations: list[Mutation]) -> tuple[list[PushResult], int | None]:
        answer = await self._post("/sync/push", {"mutations": [m.to_dict() for m in mutations]})
        try:
            return parse_push_answer(answer)
        except WireError as exc:
            raise Unreachable("服务器的上传应答格式有误", reason="bad_response", field=exc.field) from None

    # ----------------------------------------------------------------------------------- transport

    async def _post(self, path: str, body: dict[str, Any], *, auth: bool = True) -> dict[str, Any]:
        data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        headers = {"content-type": "application/json"}
        if len(data) > GZIP_ABOVE:
            data = gzip.compress(data, compresslevel=6)
            headers["content-encoding"] = "gzip"
        for _ in range(3):  # a wrong clock costs at most one extra round trip (two if it jumps meanwhile)
            if auth:
                headers["authorization"] = "Bearer " + self._assertion()
            sent = local_time()
            try:
                # `timeout` bounds each read; this the whole exchange (a path trickling a byte a read
                # would otherwise hold `watch` for ever).
                async with (
                    asyncio.timeout(MAX_EXCHANGE_S),
                    self.http.stream("POST", self.server + path, content=data, headers=headers) as response,
                ):
                    raw = await _read_answer(response)  # inflated here: a truncated gzip body fails now
            except TimeoutError:
                raise Unreachable(
                    f"服务器应答超时（超过 {MAX_EXCHANGE_S:.0f} 秒）",
                    reason="network",
                    detail="exchange deadline",
                ) from None
            except httpx.DecodingError as exc:
                raise Unreachable(
                    "服务器应答数据损坏（压缩数据不完整）", reason="bad_response", detail=str(exc)[:200]
                ) from None
            except httpx.HTTPError as exc:
                raise Unreachable(
                    f"无法连接服务器：{type(exc).__name__}", reason="network", detail=str(exc)[:200]
                ) from None
            received = local_time()
            status = response.status_code
            # Only an answer in our server's own shape teaches the clock: a captive portal's page, a
            # proxy's error or anything else on the way has a Date of its own, maybe years off.
            if 200 <= status < 300:
                parsed = _json(raw)
                if not isinstance(parsed, dict):
                    raise Unreachable("服务器应答不是有效的数据", reason="bad_response", status=status)
                self._learn_time(response.headers.get("date"), sent, received)
                return parsed
            wait = _retry_after(response.headers.get("retry-after"))
            if status >= 500:
                raise Unreachable(
                    f"服务器暂时出错（HTTP {status}）", reason="server_error", status=status, retryAfterS=wait
                )
            error = _json(raw)
            error = error.get("error") if isinstance(error, dict) else None
            if status == 413 and not isinstance(error, dict):
                # A proxy's own page (nginx's client_max_body_size): too large all the same, so that
                # the push halves its batch instead of retrying the same body as if offline.
                raise TooLarge(f"服务器拒收：数据过大（HTTP {status}）")
            if not isinstance(error, dict):
                raise Unreachable(
                    f"服务器应答格式有误（HTTP {status}）", reason="bad_response", status=status
                )
            self._learn_time(response.headers.get("date"), sent, received)
            reason = error.get("reason")
            message = _text(error.get("message"), MAX_MESSAGE_CHARS) or f"HTTP {status}"
            # A fresh assertion refused as off the server's clock (`clock_skew`) or as already expired
            # (`expired`: our clock is a few minutes behind) means our clock: the answer's time fixes it.
            if status == 401 and reason in ("clock_skew", "expired") and auth:
                self._learn_time_iso(error.get("serverTime"), sent, received)
                continue
            if status == 401 and reason == "terminal_revoked":
                raise TerminalRevoked(message, status=status, reason="terminal_revoked")
            if status == 413:
                raise TooLarge(message)
            if status == 429 or (status == 409 and reason == "concurrent_push"):
                raise Unreachable(message, reason="busy", status=status, retryAfterS=wait)
            raise ServerRefused(
                message,
                status=status,
                reason=_text(reason, MAX_CODE_CHARS),
                serverCode=_text(error.get("code"), MAX_CODE_CHARS),
                field=_text(error.get("field"), MAX_CODE_CHARS),
            )
        raise Unreachable("终端时钟与服务器相差过大，且校准未成功", reason="clock_skew")

    def _assertion(self) -> str:
        assert self.identity is not None, "an assertion needs an enrolled terminal"
        try:
            now = self.clock.corrected_now()
        except (ValueError, OverflowError, OSError):
            # An offset past what a datetime holds (stored before such times were refused, see
            # _observe): start again from the local clock; the server's answer teaches the offset anew.
            self.clock.offset_s = 0.0
            self.clock_changed = True
            now = self.clock.corrected_now()
        return make_assertion(self.identity.key, self.identity.terminal_id, self.identity.audience, now=now)

    def _learn_time(self, header: str | None, sent: float, received: float) -> None:
        if not header:
            return
        try:
            server = parsedate_to_datetime(header).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            return
        self._observe(server, sent, received)

    def _learn_time_iso(self, text: object, sent: float, received: float) -> bool:
        """Whether `text` (a refusal's serverTime) was a time the clock could learn."""
        if not isinstance(text, str):
            return False
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            return False
        if when.tzinfo is None:
            return False  # the server says UTC with an offset; a naive time is not its own
        return self._observe(when.timestamp(), sent, received)

    def _observe(self, server: float, sent: float, received: float) -> bool:
        # A time past the plausible range is no server's (and would leave corrected_now(), so every
        # assertion and every voucher check, past what a datetime can hold): it teaches nothing.
        if not EARLIEST_SERVER_TIME <= server < LATEST_SERVER_TIME:
            return False
        # The Date header has whole seconds: the server's clock was somewhere in [server, server + 1).
        before = self.clock.offset_s
        self.clock.observe(server + 0.5, sent, received)
        if abs(self.clock.offset_s - before) > 0.0:
            self.clock_changed = True
        return True


def _retry_after(value: str | None) -> float | None:
    """A Retry-After in seconds (delta-seconds only, ASCII digits), at most 10 minutes. Anything else
    (`²`, `-1`, `1.5`) is no ask at all: the caller's own backoff. The HTTP-date form is ignored too:
    our server sends seconds, and a date means trusting one clock or another; a proxy's date only
    costs the backoff instead."""
    if value is None:
        return None
    value = value.strip()
    if not (value.isascii() and value.isdigit()):
        return None
    return min(float(value), MAX_RETRY_AFTER_S)


async def _read_answer(response: httpx.Response) -> bytes:
    """The answer's body, inflated, at most MAX_ANSWER_BYTES. Only what we asked for is inflated
    (`accept-encoding: gzip`, one layer): httpx would inflate a stack of them, each multiplying a bomb."""
    status = response.status_code
    encodings = [
        value.strip().lower()
        for value in response.headers.get_list("content-encoding", split_commas=True)
        if value.strip().lower() not in ("", "identity")
    ]
    if encodings not in ([], ["gzip"]):
        raise Unreachable(
            "服务器应答使用了不支持的压缩方式",
            reason="bad_response",
            status=status,
            contentEncoding=",".join(encodings)[:MAX_CODE_CHARS],
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            raise Unreachable(
                "服务器应答数据过大", reason="bad_response", status=status, limitBytes=MAX_ANSWER_BYTES
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _text(value: object, limit: int) -> str | None:
    """A string of the server's for our messages, `status` and the store: a string only, at most
    `limit` characters, no lone surrogates (SQLite and stdout refuse them), no control characters."""
    if not isinstance(value, str):
        return None
    value = value[:limit].encode("utf-8", "replace").decode("utf-8")
    return "".join(" " if unicodedata.category(c) == "Cc" else c for c in value)


def _json(raw: bytes) -> Any:
    """The answer's JSON, or None for anything that is not usable JSON: not JSON, not UTF-8, an
    integer past Python's digit limit, nested deeper than MAX_ANSWER_DEPTH (json.loads itself raises
    RecursionError near a thousand levels; below that, str(), json.dumps and the store would), a
    number SQLite or the settlement engine cannot take, or a string holding a lone surrogate
    (`"\\ud800"`: SQLite refuses to store it). See `_usable`."""
    try:
        text = raw.decode("utf-8")  # ours is UTF-8; json.loads would take UTF-16 and -32 too
        parsed = json.loads(text)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    surrogates = _SURROGATE_ESCAPE.search(text) is not None  # a pair is fine; only then look closer
    return parsed if _usable(parsed, MAX_ANSWER_DEPTH, surrogates) else None


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _usable(value: Any, limit: int, surrogates: bool) -> bool:
    """Whether `value` nests lists and dicts at most `limit` deep, holds only integers SQLite can
    store (64-bit: a larger one is an OverflowError out of the store) and finite numbers (no NaN,
    Infinity or 1e400), and, if `surrogates`, every string in it (keys too) is valid Unicode.
    Iterative: a deep value must not recurse."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            if depth > limit:
                return False
            if surrogates and not all(_encodable(key) for key in item):
                return False
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            if depth > limit:
                return False
            stack.extend((child, depth + 1) for child in item)
        elif not _scalar_usable(item, surrogates):
            return False
    return True


def _scalar_usable(item: Any, surrogates: bool) -> bool:
    if isinstance(item, str):
        return not surrogates or _encodable(item)
    if isinstance(item, bool):
        return True
    if isinstance(item, int):
        return _INT64_MIN <= item <= _INT64_MAX
    if isinstance(item, float):
        return math.isfinite(item)
    return True


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
