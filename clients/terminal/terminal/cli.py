"""`yibao-terminal --home DIR <command> [--json]`: the village-clinic agent (DESIGN.md section 7).

    enrol --server URL --code CODE   make this terminal's key, register it with the one-time code
    scan CODE                        verify an e-voucher offline (accepted once)
    settle ...                       settle a visit offline: a receipt marked 预结算/待同步
    sync                             push the outbox, then pull (backoff with jitter, resumable)
    status                           queue, last sync, and the adjustments and rejections to show
    watch                            sync whenever the network is there, until SIGTERM

What the operator reads is Chinese; `--json` (before or after the command) prints one JSON document
instead (for `watch`, one per line). Exit statuses are in terminal/errors.py.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import os
import signal
import sqlite3
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from sync.settlement.codes import INSURANCE_TYPES, LOCALITIES, VISIT_CATEGORIES
from sync.vouchers import public_key_to_b64
from terminal.errors import NotReady, ServerRefused, StorageError, TerminalError, Unreachable
from terminal.keys import load_key, load_or_create_key
from terminal.serverurl import INSECURE_HTTP_MESSAGE, insecure_http, insecure_http_warning
from terminal.settle import (
    BillInput,
    Patient,
    bill_from_items,
    parse_bill_file,
    patient_text,
    require_enrolled,
    scan,
    settle,
    voucher_refusal,
)
from terminal.status import status, status_text, stuck_text
from terminal.store import Store, utc_iso

if TYPE_CHECKING:  # the network side is imported only by the commands that talk to the server
    from terminal.client import SyncClient
    from terminal.syncer import SyncReport

LOCK_FILE = "sync.lock"


def _emit(args: argparse.Namespace, payload: dict[str, Any], text: str) -> None:
    # `json` is absent unless --json was given, before or after the command (see parser()).
    try:
        if getattr(args, "json", False):
            print(json.dumps(payload, ensure_ascii=False), flush=True)
        else:
            print(text, flush=True)
    except BrokenPipeError:
        # The reader went away (`... | head`): what was done is done and stored; the command's own
        # exit status stands, and nothing more is written to the closed pipe.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


# ------------------------------------------------------------------------------------------ enrol


async def _enrol(args: argparse.Namespace) -> dict[str, Any]:
    from sync.assertion import audience_for
    from terminal.client import Identity, SyncClient
    from terminal.syncer import Syncer

    server = str(args.server).rstrip("/")
    if not server.startswith(("http://", "https://")):
        raise NotReady("服务器地址应以 http:// 或 https:// 开头", reason="bad_server_url")
    if insecure_http(server) and not args.insecure_http:
        raise NotReady(
            INSECURE_HTTP_MESSAGE.format(server=server)
            + "请改用 https:// 地址；如确知网络可信（如机构内网），可加 --insecure-http 承担此风险。",
            reason="insecure_http",
        )
    store = Store.open(args.home, create=True)
    try:
        existing = store.identity()
        if existing is not None:
            length, _ = store.queue_stats()
            raise NotReady(
                f"本目录已登记为终端 {existing['terminalId']}（{existing.get('clinicName', '')}），不能重复登记。"
                + (f"其中还有 {length} 笔结算未上传。" if length else "")
                + "如需登记另一台终端，请使用新的 --home 目录。",
                reason="already_enrolled",
                terminalId=existing["terminalId"],
            )
        key = load_or_create_key(args.home)
        clock = store.clock()
        async with SyncClient(server, clock, timeout=args.timeout) as client:
            syncer = Syncer(store, client, attempts=args.attempts)
            answer = await syncer.retrying(
                lambda: client.enrol(args.code, public_key_to_b64(key.public_key()))
            )
            village = answer.get("villageCode")
            identity = {
                "server": server,
                "terminalId": answer["terminalId"],
                "clinicId": answer["clinicId"],
                "clinicName": answer.get("clinicName"),
                "villageCode": village,
                "regionCode": answer.get("regionCode") or (str(village)[:6] if village else None),
                "facilityLevel": answer.get("facilityLevel") or args.level,
                "audience": answer.get("audience") or audience_for(server),
                "enrolledAt": utc_iso(datetime.now(UTC)),
            }
            store.set(identity=identity, clock=clock.to_dict())
            result: dict[str, Any] = {"enrolled": True, **identity}
            if not args.no_sync:
                client.identity = Identity(identity["terminalId"], key, identity["audience"])
                try:
                    report = await Syncer(store, client, attempts=args.attempts).run()
                    result["sync"] = report.to_dict()
                except TerminalError as exc:
                    result["sync"] = {"error": exc.to_dict()}
        return result
    finally:
        store.close()


def cmd_enrol(args: argparse.Namespace) -> int:
    result = asyncio.run(_enrol(args))
    text = (
        f"登记成功：终端 {result['terminalId']}，所属机构 {result.get('clinicName')}（{result['clinicId']}），"
        f"服务器 {result['server']}。私钥保存在 {args.home / 'terminal.key'}（仅本机可读）。"
    )
    sync = result.get("sync")
    if isinstance(sync, dict) and "error" in sync:
        text += f"\n首次同步未完成：{sync['error']['message']}。请稍后运行 sync。"
    elif isinstance(sync, dict):
        text += f"\n首次同步完成：下载 {sync['pulled']} 条数据。"
    _emit(args, result, text)
    return 0


# ------------------------------------------------------------------------------------------- scan


def cmd_scan(args: argparse.Namespace) -> int:
    store = Store.open(args.home)
    try:
        scanned = scan(store, args.code)
    finally:
        store.close()
    result = scanned.result
    payload = {
        **result.to_dict(),
        "scan": scanned.number,
        "patient": scanned.patient() if result.valid else None,
    }
    if not result.valid:
        refusal = voucher_refusal(result)
        payload["message"] = refusal.message
        _emit(args, payload, refusal.message)
        return 1
    text = f"核验通过（扫码记录 {scanned.number}）：就诊人 {patient_text(scanned.patient())}"
    _emit(args, payload, text)
    return 0


# ----------------------------------------------------------------------------------------- settle


def _bill(args: argparse.Namespace) -> BillInput:
    if args.bill is not None:
        if args.item:
            raise NotReady("--bill 与 --item 只能用其一", reason="bad_arguments")
        try:
            text = sys.stdin.read() if str(args.bill) == "-" else Path(args.bill).read_text(encoding="utf-8")
            data = json.loads(text)
        except (OSError, ValueError, RecursionError) as exc:
            from terminal.errors import Refused

            why = "嵌套层数过多" if isinstance(exc, RecursionError) else str(exc)[:200]
            raise Refused(f"无法读取账单文件：{why}", reason="bad_bill", field="bill") from None
        bill = parse_bill_file(data)
        if args.category is not None or args.locality is not None or args.no_personal_account:
            bill = BillInput(
                args.category or bill.category,
                bill.items,
                args.locality or bill.locality,
                bill.use_personal_account and not args.no_personal_account,
            )
        return bill
    if not args.item:
        raise NotReady("请用 --item 类别:金额（可多次）或 --bill 账单文件 给出费用", reason="bad_arguments")
    return bill_from_items(
        args.item,
        args.category or "general_outpatient",
        args.locality or "local",
        not args.no_personal_account,
    )


def cmd_settle(args: argparse.Namespace) -> int:
    bill = _bill(args)
    patient = Patient(
        code=args.voucher, scan_number=args.scan, person=args.person, insurance_type=args.insurance_type
    )
    if sum(x is not None for x in (args.voucher, args.scan, args.person)) > 1:
        raise NotReady("--voucher、--scan、--person 只能用其一", reason="bad_arguments")
    store = Store.open(args.home)
    try:
        receipt = settle(store, patient, bill)
        clinic = (store.identity() or {}).get("clinicName") or ""
    finally:
        store.close()
    _emit(args, receipt.to_dict(), receipt.text(clinic))
    return 0


# ------------------------------------------------------------------------------------------- sync


@contextlib.contextmanager
def sync_lock(home: Path) -> Iterator[None]:
    """One sync at a time per home (a SIGKILLed holder releases it with its process)."""
    try:
        handle = open(home / LOCK_FILE, "a+")  # noqa: SIM115
    except OSError as exc:
        from terminal.store import _storage_error

        raise _storage_error(exc, home) from None
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise NotReady("另一个同步正在进行，请稍候。", reason="sync_running") from None
        yield
    finally:
        handle.close()


def _client(store: Store, home: Path, timeout: float) -> SyncClient:
    from terminal.client import Identity, SyncClient

    identity = require_enrolled(store)
    key = load_key(home)
    return SyncClient(
        identity["server"],
        store.clock(),
        Identity(identity["terminalId"], key, identity["audience"]),
        timeout=timeout,
    )


def _report_text(report: SyncReport) -> str:
    parts = [
        f"上传 {report.pushed} 笔（确认 {report.applied}，调整 {report.adjusted}，拒绝 {report.rejected}）"
    ]
    if report.pull_complete:
        parts.append(f"下载 {report.pulled} 条更新")
    elif report.queue_left:
        parts.append(f"还有 {report.queue_left} 笔待上传，暂未下载更新")
    if report.resynced:
        parts.append("已按服务器要求重新完整同步")
    if report.push_stuck is not None:
        return f"{stuck_text(report.push_stuck)}\n" + "，".join(parts)
    return "同步完成：" + "，".join(parts)


async def _sync(args: argparse.Namespace, store: Store, warnings: list[dict[str, Any]]) -> SyncReport:
    from terminal.syncer import Syncer

    def tell(exc: TerminalError, delay: float) -> None:
        # What the operator reads on stderr, and under --json in the answer's `warnings`.
        text = f"{exc.message}；{delay:.1f} 秒后重试"
        warnings.append(
            {"reason": "retry", "message": text, "error": exc.to_dict(), "retryInS": round(delay, 1)}
        )
        if not getattr(args, "json", False):
            print(f"{text}……", file=sys.stderr, flush=True)

    async with _client(store, args.home, args.timeout) as client:
        syncer = Syncer(store, client, attempts=args.attempts, progress=args.progress, on_retry=tell)
        return await syncer.run()


def cmd_sync(args: argparse.Namespace) -> int:
    store = Store.open(args.home)
    # Everything the human output says on stderr besides the result (plain http, each retry and its
    # cause), in order; under --json it is the answer's `warnings`, whether the sync worked or not.
    warnings: list[dict[str, Any]] = []
    try:
        warning = insecure_http_warning(str(require_enrolled(store)["server"]))
        if warning:
            warnings.append({"reason": "insecure_http", "message": warning})
            if not getattr(args, "json", False):
                print(f"警告：{warning}", file=sys.stderr, flush=True)
        with sync_lock(args.home):
            report = asyncio.run(_sync(args, store, warnings))
    except TerminalError as exc:
        if not getattr(args, "json", False) or not warnings:
            raise  # main() says it, as for every other command
        _emit(args, {"ok": False, "error": exc.to_dict(), "warnings": warnings}, "")
        return exc.exit_status
    finally:
        store.close()
    # A stuck push is a failure the operator must see (exit status 5), though the pull was done.
    payload: dict[str, Any] = {"ok": report.push_stuck is None, **report.to_dict()}
    if warnings:
        payload["warnings"] = warnings
    _emit(args, payload, _report_text(report))
    return 0 if report.push_stuck is None else ServerRefused.exit_status


# ------------------------------------------------------------------------------------------ watch


async def _watch(args: argparse.Namespace, store: Store) -> int:
    from terminal.syncer import Backoff, Syncer

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    backoff = Backoff(base_s=1.0, cap_s=args.max_wait)
    failures = 0

    def say(payload: dict[str, Any], text: str) -> None:
        _emit(args, {"at": utc_iso(datetime.now(UTC)), **payload}, text)

    async with _client(store, args.home, args.timeout) as client:
        while not stop.is_set():
            task = asyncio.ensure_future(Syncer(store, client, attempts=1, progress=False).run())
            stopper = asyncio.ensure_future(stop.wait())
            done, _ = await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if task not in done:
                task.cancel()  # only an HTTP wait is interrupted: answers already stored stay stored
                with contextlib.suppress(asyncio.CancelledError, TerminalError):
                    await task
                break
            stopper.cancel()
            exc = task.exception()
            if exc is None:
                failures = 0
                report = task.result()
                if report.push_stuck is not None:
                    say({"event": "push_stuck", **report.to_dict()}, _report_text(report))
                elif report.pushed or report.pulled:
                    say({"event": "synced", **report.to_dict()}, _report_text(report))
                wait = args.interval
            elif isinstance(exc, Unreachable):
                asked = exc.details.get("retryAfterS")
                if isinstance(asked, int | float) and not isinstance(asked, bool) and asked > 0:
                    # The server said when (an overloaded 503, a 429): then, never before, plus the
                    # syncer's jitter (as `sync` does; docs/sync.md). Its schedule already spreads the
                    # terminals it turned away: our own doubling on top would only leave slots empty.
                    wait = backoff.after(float(asked))
                else:
                    wait = backoff.delay(failures) + 0.2
                failures += 1
                say(
                    {"event": "offline", "error": exc.to_dict(), "retryInS": round(wait, 1)},
                    f"暂时无法同步：{exc.message}；{wait:.0f} 秒后重试",
                )
            elif (isinstance(exc, TerminalError) and exc.exit_status in (5,)) or isinstance(
                exc, StorageError
            ):
                say({"event": "stopped", "error": exc.to_dict()}, f"停止同步：{exc.message}")
                return exc.exit_status
            elif isinstance(exc, TerminalError):
                wait = max(args.interval, backoff.delay(failures))
                failures += 1
                say({"event": "error", "error": exc.to_dict()}, f"同步出错：{exc.message}")
            else:
                raise exc
            await _wait_or_stop(stop, store, wait)
    say({"event": "stopped", "signal": True}, "已停止（收到停止信号）")
    return 0


async def _wait_or_stop(stop: asyncio.Event, store: Store, seconds: float) -> None:
    """Waits `seconds`, or less: until stopped, or until a new settlement is queued."""
    deadline = asyncio.get_running_loop().time() + seconds
    queued = store.queue_stats()[0]
    while not stop.is_set():
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=min(left, 1.0))
        if store.queue_stats()[0] > queued:
            return


def cmd_watch(args: argparse.Namespace) -> int:
    store = Store.open(args.home)
    try:
        require_enrolled(store)
        with sync_lock(args.home):
            return asyncio.run(_watch(args, store))
    finally:
        store.close()


# ----------------------------------------------------------------------------------------- status


def cmd_status(args: argparse.Namespace) -> int:
    try:
        store = Store.open(args.home, readable=True)
    except NotReady as exc:
        if exc.reason != "not_enrolled":
            raise
        data = {"enrolled": False}
        _emit(args, data, "本终端尚未登记：请运行 enrol --server URL --code 注册码。")
        return 0
    try:
        data = status(store)
    finally:
        store.close()
    _emit(args, data, status_text(data))
    return 0


# ----------------------------------------------------------------------------------------- parser


class _Parser(argparse.ArgumentParser):
    """argparse, with its complaints told like every other refusal: in Chinese, JSON under --json,
    exit status 2 (bad arguments are `not ready`, as the commands' own checks say)."""

    def error(self, message: str) -> NoReturn:
        raise NotReady(
            f"命令参数有误：{message}（用 {self.prog} -h 查看用法）",
            reason="bad_arguments",
            usage=self.format_usage(),
        )


def _scan_number(text: str) -> int:
    if not (text.isascii() and text.isdigit() and len(text) <= 18):
        raise argparse.ArgumentTypeError(f"扫码记录号应为 scan 给出的正整数，而不是 {text[:20]!r}")
    return int(text)


def parser() -> argparse.ArgumentParser:
    # --json is accepted before or after the command (`yibao-terminal --json status` and
    # `yibao-terminal status --json`); SUPPRESS keeps a sub-command's default from undoing the flag.
    common = _Parser(add_help=False)
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="输出 JSON（供程序读取）"
    )
    root = _Parser(
        prog="yibao-terminal", description="医保村卫生室终端（离线核验、结算与同步）", parents=[common]
    )
    root.add_argument(
        "--home",
        type=Path,
        default=Path(os.environ.get("YIBAO_TERMINAL_HOME", ".yibao-terminal")),
        help="终端数据目录（默认 $YIBAO_TERMINAL_HOME 或 ./.yibao-terminal）",
    )
    sub = root.add_subparsers(dest="command", required=True)

    def network(p: argparse.ArgumentParser, attempts: int = 5) -> None:
        p.add_argument("--timeout", type=float, default=30.0, help="每次请求的超时秒数（默认 30）")
        p.add_argument(
            "--attempts", type=int, default=attempts, help=f"每次请求最多尝试次数（默认 {attempts}）"
        )

    enrol = sub.add_parser("enrol", help="用一次性注册码登记本终端", parents=[common])
    enrol.add_argument("--server", required=True, help="服务器地址，如 https://ybj.example.cn")
    enrol.add_argument("--code", required=True, help="医保经办机构发放的一次性注册码")
    enrol.add_argument(
        "--level", default="village", help="机构等级（服务器未提供时使用，默认 village 村卫生室）"
    )
    enrol.add_argument("--no-sync", action="store_true", help="登记后不立即同步")
    enrol.add_argument(
        "--insecure-http",
        action="store_true",
        help="允许明文 http 连接非本机服务器（途中可被篡改签发密钥与停用答复，仅限可信内网）",
    )
    network(enrol)
    enrol.set_defaults(func=cmd_enrol)

    scan_p = sub.add_parser("scan", help="离线核验医保码", parents=[common])
    scan_p.add_argument("code")
    scan_p.set_defaults(func=cmd_scan)

    settle_p = sub.add_parser("settle", help="离线结算一次就诊（预结算）", parents=[common])
    who = settle_p.add_argument_group("就诊人（三选一；默认使用 10 分钟内最近一次未结算的扫码）")
    who.add_argument("--voucher", help="医保码：核验并结算")
    who.add_argument("--scan", type=_scan_number, help="scan 给出的扫码记录号")
    who.add_argument("--person", help="签约名单中的参保人编号（持社保卡就诊）")
    who.add_argument("--insurance-type", choices=sorted(INSURANCE_TYPES), help="非本村签约居民的参保类型")
    bill = settle_p.add_argument_group("费用（--item 可重复，或 --bill 账单文件）")
    bill.add_argument(
        "--item", action="append", default=[], help="类别:金额(元)[:乙类先行自付千分比[:名称]]，如 甲:12.50"
    )
    bill.add_argument("--bill", help="JSON 账单文件（- 表示标准输入）")
    bill.add_argument(
        "--category", choices=sorted(VISIT_CATEGORIES), help="就诊类别（默认 general_outpatient 普通门诊）"
    )
    bill.add_argument("--locality", choices=sorted(LOCALITIES), help="就医地（默认 local 参保地）")
    bill.add_argument("--no-personal-account", action="store_true", help="不使用个人账户")
    settle_p.set_defaults(func=cmd_settle)

    sync_p = sub.add_parser("sync", help="上传待同步结算，再下载更新", parents=[common])
    network(sync_p)
    sync_p.add_argument("--progress", action="store_true", default=None, help="总是显示进度条")
    sync_p.add_argument("--no-progress", dest="progress", action="store_false", help="不显示进度条")
    sync_p.set_defaults(func=cmd_sync)

    status_p = sub.add_parser("status", help="待上传、上次同步、被调整与被拒绝的结算", parents=[common])
    status_p.set_defaults(func=cmd_status)

    watch_p = sub.add_parser("watch", help="持续同步，直到收到停止信号", parents=[common])
    watch_p.add_argument("--interval", type=float, default=60.0, help="联网时两次同步的间隔秒数")
    watch_p.add_argument(
        "--max-wait",
        type=float,
        default=300.0,
        help="断网时两次尝试的最长间隔秒数（服务器繁忙时按其要求的等待时间）",
    )
    watch_p.add_argument("--timeout", type=float, default=30.0, help="每次请求的超时秒数（默认 30）")
    watch_p.set_defaults(func=cmd_watch)
    return root


def main(argv: list[str] | None = None) -> None:
    # The home holds the key, the roster (names, diseases) and the scanned codes: whatever this
    # process creates there (database, its log and index, rescue files) is for this user only, even in
    # a home someone made world-readable.
    os.umask(0o077)
    words = sys.argv[1:] if argv is None else argv
    try:
        args = parser().parse_args(words)
    except NotReady as exc:
        _fail(argparse.Namespace(json="--json" in words), exc, usage=True)
        sys.exit(exc.exit_status)
    try:
        try:
            status_code = args.func(args)
        except sqlite3.DatabaseError as exc:
            # A read outside a transaction met damage (or the disk failed): the same answers as inside one.
            raise Store.explain(args.home, exc) from None
    except TerminalError as exc:
        _fail(args, exc)
        status_code = exc.exit_status
    except KeyboardInterrupt:
        status_code = 130
    sys.exit(status_code)


def _fail(args: argparse.Namespace, exc: TerminalError, *, usage: bool = False) -> None:
    if getattr(args, "json", False):
        _emit(args, {"ok": False, "error": exc.to_dict()}, "")
        return
    if usage:
        print(exc.details.get("usage", ""), end="", file=sys.stderr)
    print(f"错误：{exc.message}", file=sys.stderr, flush=True)
