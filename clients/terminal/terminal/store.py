"""The terminal's local store: one SQLite database in the home directory (WAL, synchronous=FULL).

Every write is one transaction (`Store.write`, BEGIN IMMEDIATE ... COMMIT), so a power cut or a
SIGKILL at any instant leaves either all of a change or none of it, and a committed one survives
(synchronous=FULL syncs the WAL at each commit). What it holds:

- ``meta``: the terminal's identity (server, terminal and clinic ids, audience), the pull checkpoint,
  the clock offset, the last sync, the last error; values are JSON.
- What pull brings (pull.py's documents): ``roster`` (the village's residents, with year-to-date totals
  as of the pull), ``policies``, ``revocations``, the issuer keys (in meta), ``push_issues`` (the
  clinic's rejected and adjusted settlements as the server keeps them). Each row carries the
  `generation` of the snapshot that wrote it: a resync pulls a new generation over the old one and
  drops what the new one did not renew only once it is complete, so the terminal never holds less
  than before while a resync runs.
- ``scans``: every voucher this terminal accepted, keyed by its replay key: the replay store that
  persists across runs (a code is accepted once), and the code a settlement then pushes.
- ``mutations``: the outbox. Each mutation (UUIDv7 id, seq 1, 2, 3, ... with no gaps, allocated in the
  transaction that records it) is kept; it is queued until the server's answer for it is stored, in
  the same row, by the transaction that records the answer.
- ``settlements``: one per `settlement.create`, with the terminal's provisional split and the increments
  it adds to the person's year-to-date totals; once answered, the server's status and amounts, which
  replace the provisional ones wherever they are shown.

The outbox is never dropped: a damaged database is refused (`CorruptStore`) and its queued mutations
are copied to a rescue file beside it, never overwritten by a fresh database.
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from sync.protocol import Mutation, MutationKind, PushResult, ResultStatus
from sync.settlement import PolicyError, PolicySet, PolicyVersion, YearToDate
from sync.vouchers import RevocationList, public_key_from_b64
from terminal.clock import ClockState
from terminal.errors import CorruptStore, NotReady, StorageError

DB_FILE = "terminal.db"
KEY_FILE = "terminal.key"  # terminal/keys.py's
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE roster (
    person_id TEXT PRIMARY KEY,
    voucher_ref TEXT NOT NULL,
    data TEXT NOT NULL,
    generation INTEGER NOT NULL
);
CREATE INDEX roster_voucher_ref ON roster (voucher_ref);
CREATE TABLE policies (id TEXT PRIMARY KEY, data TEXT NOT NULL, generation INTEGER NOT NULL);
CREATE TABLE revocations (
    version INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    ref TEXT NOT NULL,
    generation INTEGER NOT NULL
);
CREATE TABLE push_issues (
    id TEXT PRIMARY KEY,
    mutation_id TEXT,
    data TEXT NOT NULL,
    generation INTEGER NOT NULL
);
CREATE TABLE scans (
    replay_key TEXT PRIMARY KEY,
    code TEXT NOT NULL,
    person_ref TEXT NOT NULL,
    link_ref TEXT,
    form TEXT NOT NULL,
    issued_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    scanned_at TEXT NOT NULL,
    mutation_id TEXT
);
CREATE TABLE mutations (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    client_time TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at TEXT NOT NULL,
    answer TEXT,
    answered_at TEXT
);
CREATE INDEX mutations_queued ON mutations (seq) WHERE answer IS NULL;
CREATE TABLE settlements (
    mutation_id TEXT PRIMARY KEY REFERENCES mutations (id),
    seq INTEGER NOT NULL UNIQUE,
    person_id TEXT,
    person_ref TEXT NOT NULL,
    identified_by TEXT NOT NULL,
    link_ref TEXT,
    replay_key TEXT UNIQUE,
    visit_date TEXT NOT NULL,
    year INTEGER NOT NULL,
    category TEXT NOT NULL,
    total_fen INTEGER NOT NULL,
    policy_version TEXT NOT NULL,
    terminal_split TEXT NOT NULL,
    ytd_delta TEXT NOT NULL,
    lines TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    reason TEXT,
    server TEXT,
    in_roster INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL
);
CREATE INDEX settlements_person ON settlements (person_id, year);
"""

PENDING = "pending"


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def utc_iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


DISK_FULL_BELOW_BYTES = 64 * 1024
"""Free space under which a disk error is reported as a full disk: SQLite says "disk I/O error", not
"database or disk is full", when it is the WAL index (-shm) or the log that cannot grow."""


def _disk_full(where: Path | None) -> bool:
    if where is None:
        return False
    try:
        found = os.statvfs(where if where.is_dir() else where.parent)
    except OSError:
        return False
    return found.f_bavail * found.f_frsize < DISK_FULL_BELOW_BYTES


def _storage_error(exc: BaseException, where: Path | None = None) -> StorageError:
    """What a failed SQLite or file operation (in or on `where`, when known) means for the operator."""
    text = str(exc).lower()
    number = getattr(exc, "errno", None)
    if "full" in text or number == errno.ENOSPC or number == errno.EDQUOT or _disk_full(where):
        return StorageError(
            "磁盘空间已满：本次操作没有保存任何内容。请清理磁盘后重试。", reason="disk_full", detail=str(exc)
        )
    if "readonly" in text or "read-only" in text or number in (errno.EROFS, errno.EACCES, errno.EPERM):
        return StorageError(
            "终端数据目录只读或无写权限：本次操作没有保存任何内容。请检查目录权限或磁盘。",
            reason="read_only",
            detail=str(exc),
        )
    if "unable to open" in text:
        return StorageError(
            "无法打开终端数据目录中的数据库：请检查目录是否存在、是否可写。",
            reason="cannot_open",
            detail=str(exc),
        )
    if "locked" in text or "busy" in text:
        return StorageError(
            "终端数据库正被另一个程序长时间占用，请稍后重试。", reason="busy", detail=str(exc)
        )
    return StorageError(
        "写入终端数据时发生磁盘错误：本次操作没有保存任何内容。请检查磁盘后重试。",
        reason="io_error",
        detail=str(exc),
    )


_CORRUPT_MARKERS = ("malformed", "not a database", "corrupt", "encrypted")


def _wal_holds_data(path: Path) -> bool:
    try:
        return path.with_name(path.name + "-wal").stat().st_size > 0
    except FileNotFoundError:
        return False
    except OSError:
        return True


def _is_corruption(exc: sqlite3.DatabaseError) -> bool:
    return any(marker in str(exc).lower() for marker in _CORRUPT_MARKERS)


@dataclass(frozen=True)
class RosterEntry:
    person_id: str
    voucher_ref: str
    data: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.data.get("name") or "")

    @property
    def id_number_masked(self) -> str:
        return str(self.data.get("idNumberMasked") or "")


@dataclass(frozen=True)
class QueuedMutation:
    mutation: Mutation
    created_at: str


def ytd_from_roster(data: Mapping[str, Any]) -> YearToDate | None:
    """The roster entry's year-to-date totals (the server's, as of the pull), or None."""
    raw = data.get("yearToDate")
    if not isinstance(raw, dict) or not isinstance(raw.get("year"), int):
        return None
    return YearToDate.from_dict(
        {
            "year": raw["year"],
            "deductible_used_fen": raw.get("deductibleUsedFen") or {},
            "basic_paid_fen": raw.get("basicPaidFen") or {},
            "critical_oop_fen": raw.get("criticalOopFen", 0),
            "critical_paid_fen": raw.get("criticalPaidFen", 0),
            "assistance_threshold_used_fen": raw.get("assistanceThresholdUsedFen", 0),
            "assistance_paid_fen": raw.get("assistancePaidFen", 0),
        }
    )


def _add_maps(a: Mapping[str, int], b: Mapping[str, int], sign: int = 1) -> dict[str, int]:
    out = dict(a)
    for key, value in b.items():
        out[key] = out.get(key, 0) + sign * value
    return {k: v for k, v in out.items() if v != 0}


def ytd_plus(a: YearToDate, b: YearToDate, sign: int = 1) -> YearToDate:
    return YearToDate(
        year=a.year,
        deductible_used_fen=_add_maps(a.deductible_used_fen, b.deductible_used_fen, sign),
        basic_paid_fen=_add_maps(a.basic_paid_fen, b.basic_paid_fen, sign),
        critical_oop_fen=a.critical_oop_fen + sign * b.critical_oop_fen,
        critical_paid_fen=a.critical_paid_fen + sign * b.critical_paid_fen,
        assistance_threshold_used_fen=a.assistance_threshold_used_fen
        + sign * b.assistance_threshold_used_fen,
        assistance_paid_fen=a.assistance_paid_fen + sign * b.assistance_paid_fen,
    )


class Store:
    def __init__(self, path: Path, connection: sqlite3.Connection, *, read_only: bool = False) -> None:
        self.path = path
        self.db = connection
        self.read_only = read_only
        self.unwritable: str | None = "read_only" if read_only else None
        """Why this store cannot be written (a StorageError reason: read_only, disk_full, ...)."""

    # ------------------------------------------------------------------------------ opening

    @classmethod
    def open(cls, home: Path, *, create: bool = False, check: bool = True, readable: bool = False) -> Store:
        """The store of `home`. `create` makes the directory and the database when absent; otherwise
        a home without a database is NotReady. `check` runs SQLite's quick_check and the outbox's own
        checks: a damaged database is CorruptStore (its outbox rescued first), never replaced.
        A home that cannot be written is StorageError `read_only`, unless `readable` (for `status`):
        then it is opened read-only (`store.read_only`)."""
        path = home / DB_FILE
        if (home / KEY_FILE).exists() and (
            not path.exists() or (path.stat().st_size == 0 and not _wal_holds_data(path))
        ):
            # The key is made after the database (cli._enrol): a key without a database (in the file
            # or still in its log) is a lost database, not a terminal to enrol afresh.
            raise cls._lost(path)
        if not path.exists():
            if not create:
                raise NotReady("本终端尚未登记：请先运行 enrol。", reason="not_enrolled")
            try:
                home.mkdir(mode=0o700, parents=True, exist_ok=True)
            except OSError as exc:
                raise _storage_error(exc, home.parent) from None
        writable = os.access(home, os.W_OK) and (not path.exists() or os.access(path, os.W_OK))
        if not writable:
            if not readable:
                raise StorageError(
                    "终端数据目录只读或无写权限：本次操作没有保存任何内容。请检查目录权限或磁盘。",
                    reason="read_only",
                    path=str(home),
                )
            return cls._open_read_only(path, check)
        try:
            connection = sqlite3.connect(path, isolation_level=None, timeout=15.0, check_same_thread=False)
        except sqlite3.Error as exc:
            raise _storage_error(exc, path) from None
        try:
            return cls._prepared(cls(path, connection), check)
        except StorageError as exc:
            if not readable or exc.reason in ("corrupt", "schema_version") or _wal_holds_data(path):
                raise
            # A full disk (or a failing one) cannot even map the WAL index: `status` still reads the
            # database file, which is all there is when the log is empty (see _open_read_only).
            store = cls._open_read_only(path, check)
            store.unwritable = exc.reason
            return store

    @staticmethod
    def _lost(path: Path) -> CorruptStore:
        return CorruptStore(
            "本终端的本地数据库不见了或是空的（私钥还在）：其中的结算记录可能已丢失。请勿删除或重新登记该目录，"
            "并联系运维人员从备份恢复。",
            detail=f"{path} is missing or empty while {path.with_name(KEY_FILE)} exists",
        )

    @classmethod
    def _open_read_only(cls, path: Path, check: bool) -> Store:
        # A WAL database on read-only media: SQLite reads it when its -shm can be read, and with
        # `immutable` (nobody can write it anyway) when it cannot.
        for query in ("mode=ro", "mode=ro&immutable=1"):
            try:
                connection = sqlite3.connect(
                    f"file:{path}?{query}", uri=True, isolation_level=None, check_same_thread=False
                )
                store = cls._prepared(cls(path, connection, read_only=True), check)
                return store
            except StorageError as exc:
                if exc.reason == "corrupt" or query.endswith("immutable=1"):
                    raise
            except sqlite3.Error as exc:
                if query.endswith("immutable=1"):
                    raise _storage_error(exc, path) from None
        raise AssertionError("unreachable")

    @classmethod
    def _prepared(cls, store: Store, check: bool) -> Store:
        try:
            store._prepare(check=check)
        except sqlite3.DatabaseError as exc:
            store.db.close()
            if _is_corruption(exc):
                raise store._corrupt(str(exc)) from None
            raise _storage_error(exc, store.path) from None
        except (StorageError, NotReady):
            store.db.close()
            raise
        return store

    def _prepare(self, *, check: bool) -> None:
        db = self.db
        db.execute("PRAGMA busy_timeout = 15000")
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        if version == 0 and self.read_only:
            raise NotReady("本终端尚未登记：请先运行 enrol。", reason="not_enrolled")
        if version == 0:
            mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StorageError("无法启用数据库日志模式（WAL）", reason="io_error", detail=str(mode))
            db.execute("BEGIN IMMEDIATE")
            try:
                # Created in one transaction (user_version included): half a schema never exists.
                if int(db.execute("PRAGMA user_version").fetchone()[0]) == 0:
                    if db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                        raise self._corrupt("the database has tables but no schema version")
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            db.execute(statement)
                    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            version = SCHEMA_VERSION
        elif version != SCHEMA_VERSION:
            raise StorageError(
                f"终端数据库版本（{version}）与本程序（{SCHEMA_VERSION}）不符，请升级终端程序。",
                reason="schema_version",
            )
        if not self.read_only:
            db.execute("PRAGMA synchronous = FULL")
            db.execute("PRAGMA foreign_keys = ON")
        if check:
            verdict = [row[0] for row in db.execute("PRAGMA quick_check")]
            if verdict != ["ok"]:
                raise self._corrupt("; ".join(str(v) for v in verdict[:3]))
            count, top = db.execute("SELECT count(*), coalesce(max(seq), 0) FROM mutations").fetchone()
            if count != top:
                raise self._corrupt(f"the outbox holds {count} mutations for seqs 1..{top}")

    def _corrupt(self, detail: str) -> CorruptStore:
        """Copies what can still be read of the outbox to a rescue file beside the database."""
        rescue = self.path.with_name(f"outbox-rescue-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json")
        saved: int | None = None
        try:
            reader = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
            try:
                rows = reader.execute(
                    "SELECT seq, id, kind, client_time, payload, answer FROM mutations ORDER BY seq"
                ).fetchall()
            finally:
                reader.close()
            mutations = [
                {
                    "seq": s,
                    "id": i,
                    "kind": k,
                    "clientTime": t,
                    "payload": json.loads(p),
                    "answered": a is not None,
                }
                for s, i, k, t, p, a in rows
            ]
            rescue.write_text(
                json.dumps({"database": str(self.path), "mutations": mutations}, ensure_ascii=False)
            )
            saved = len(mutations)
        except (sqlite3.Error, OSError, ValueError):
            saved = None
        if saved is not None:
            message = (
                f"本地数据库已损坏，终端已停止使用它。其中可读出的 {saved} 笔记录已另存到 {rescue}；"
                "请勿删除该目录，并联系运维人员恢复。"
            )
            return CorruptStore(message, detail=detail, rescue=str(rescue), rescued=saved)
        return CorruptStore(
            "本地数据库已损坏且无法读出未上传的记录，终端已停止使用它。请勿删除该目录，并联系运维人员恢复。",
            detail=detail,
        )

    def close(self) -> None:
        self.db.close()

    # ----------------------------------------------------------------------------- transactions

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed whole, or rolled back whole (and the error explained)."""
        db = self.db
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.DatabaseError as exc:
            raise self._translate(exc) from None
        try:
            yield db
            db.execute("COMMIT")
        except BaseException as exc:
            if db.in_transaction:
                with suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.DatabaseError):
                raise self._translate(exc) from None
            raise

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A consistent read of several statements (one snapshot)."""
        db = self.db
        try:
            db.execute("BEGIN")
            try:
                yield db
            finally:
                if db.in_transaction:
                    db.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            raise self._translate(exc) from None

    @classmethod
    def explain(cls, home: Path, exc: sqlite3.DatabaseError) -> StorageError:
        """What an SQLite error met anywhere means (the outbox rescued if the database is damaged)."""
        if _is_corruption(exc):
            return cls(home / DB_FILE, sqlite3.connect(":memory:"))._corrupt(str(exc))
        return _storage_error(exc, home)

    def _translate(self, exc: sqlite3.DatabaseError) -> StorageError:
        if _is_corruption(exc):
            return self._corrupt(str(exc))
        return _storage_error(exc, self.path)

    # ------------------------------------------------------------------------------------- meta

    def get(self, key: str, default: Any = None, db: sqlite3.Connection | None = None) -> Any:
        row = (db or self.db).execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    @staticmethod
    def put(db: sqlite3.Connection, key: str, value: Any) -> None:
        db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, dumps(value)),
        )

    def set(self, **values: Any) -> None:
        with self.write() as db:
            for key, value in values.items():
                self.put(db, key, value)

    def identity(self) -> dict[str, Any] | None:
        value = self.get("identity")
        return value if isinstance(value, dict) else None

    def clock(self) -> ClockState:
        return ClockState.from_dict(self.get("clock"))

    def generation(self, db: sqlite3.Connection | None = None) -> int:
        return int(self.get("generation", 1, db))

    # ------------------------------------------------------------------------------------ trust

    def issuer_keys(self) -> dict[str, bytes]:
        raw = self.get("issuer_keys") or {}
        keys: dict[str, bytes] = {}
        for kid, text in raw.items() if isinstance(raw, dict) else ():
            try:
                keys[str(kid)] = public_key_from_b64(str(text)).public_bytes_raw()
            except (ValueError, TypeError):
                continue  # a key the strict check refuses verifies nothing
        return keys

    def revocation_list(self) -> RevocationList:
        cert: list[bytes] = []
        link: list[bytes] = []
        person: list[bytes] = []
        version = 0
        for ver, kind, ref in self.db.execute("SELECT version, kind, ref FROM revocations ORDER BY version"):
            version = max(version, int(ver))
            try:
                raw = bytes.fromhex(ref)
            except ValueError:
                continue
            {"certificate": cert, "link": link, "person": person}.get(kind, []).append(raw)
        return RevocationList.build(version, cert_serials=cert, link_refs=link, person_refs=person)

    def policy_set(self) -> PolicySet | None:
        rows = [json.loads(data) for (data,) in self.db.execute("SELECT data FROM policies ORDER BY id")]
        if not rows:
            return None
        try:
            return PolicySet([PolicyVersion.from_dict(body) for body in rows])
        except PolicyError as exc:
            raise CorruptStore(
                "已同步的医保政策数据无法读取，请重新同步（sync）。", detail=f"{exc.field}: {exc.message}"
            ) from None

    def counts(self) -> dict[str, int]:
        def one(sql: str) -> int:
            return int(self.db.execute(sql).fetchone()[0])

        return {
            "roster": one("SELECT count(*) FROM roster"),
            "policies": one("SELECT count(*) FROM policies"),
            "revocations": one("SELECT count(*) FROM revocations"),
            "issuerKeys": len(self.get("issuer_keys") or {}),
            "pushIssues": one("SELECT count(*) FROM push_issues"),
        }

    # ----------------------------------------------------------------------------------- roster

    def person_by_ref(self, voucher_ref: str) -> RosterEntry | None:
        row = self.db.execute(
            "SELECT person_id, voucher_ref, data FROM roster WHERE voucher_ref = ?", (voucher_ref,)
        ).fetchone()
        return None if row is None else RosterEntry(row[0], row[1], json.loads(row[2]))

    def person_by_id(self, person_id: str) -> RosterEntry | None:
        row = self.db.execute(
            "SELECT person_id, voucher_ref, data FROM roster WHERE person_id = ?", (person_id,)
        ).fetchone()
        return None if row is None else RosterEntry(row[0], row[1], json.loads(row[2]))

    def roster_entries(self) -> list[RosterEntry]:
        return [
            RosterEntry(p, r, json.loads(d))
            for p, r, d in self.db.execute(
                "SELECT person_id, voucher_ref, data FROM roster ORDER BY person_id"
            )
        ]

    def local_ytd(self, entry: RosterEntry | None, person_ref: str, year: int) -> tuple[YearToDate, int]:
        """The person's year-to-date totals of `year` before a new visit, and their personal-account
        balance: the roster's (as of the last pull) plus what this terminal settled since that the
        roster does not include yet (queued, or answered after the pull). Rejected settlements count
        nowhere."""
        ytd = YearToDate(year)
        balance = 0
        if entry is not None:
            roster = ytd_from_roster(entry.data)
            if roster is not None and roster.year == year:
                ytd = roster
            raw_balance = entry.data.get("personalAccountBalanceFen")
            balance = int(raw_balance) if isinstance(raw_balance, int) else 0
        rows = self.db.execute(
            "SELECT year, ytd_delta, terminal_split, status, server FROM settlements "
            "WHERE person_ref = ? AND in_roster = 0 AND status != 'rejected'",
            (person_ref,),
        )
        for row_year, delta, split, status, server in rows:
            paid = json.loads(split)["personalAccountFen"]
            if server is not None and status in (ResultStatus.APPLIED, ResultStatus.ADJUSTED):
                paid = json.loads(server).get("settlement", {}).get("personalAccountFen", paid)
            balance -= int(paid)
            if row_year == year:
                ytd = ytd_plus(ytd, YearToDate.from_dict(json.loads(delta)))
        return ytd, balance

    # ------------------------------------------------------------------------------------ scans

    def scan_by_key(self, replay_key: str, db: sqlite3.Connection | None = None) -> dict[str, Any] | None:
        row = (
            (db or self.db)
            .execute(
                "SELECT replay_key, code, person_ref, link_ref, form, issued_at, expires_at, scanned_at, "
                "mutation_id, rowid FROM scans WHERE replay_key = ?",
                (replay_key,),
            )
            .fetchone()
        )
        return None if row is None else _scan_dict(row)

    def scan_by_number(self, number: int) -> dict[str, Any] | None:
        row = self.db.execute(
            "SELECT replay_key, code, person_ref, link_ref, form, issued_at, expires_at, scanned_at, "
            "mutation_id, rowid FROM scans WHERE rowid = ?",
            (number,),
        ).fetchone()
        return None if row is None else _scan_dict(row)

    def latest_unused_scan(self) -> dict[str, Any] | None:
        row = self.db.execute(
            "SELECT replay_key, code, person_ref, link_ref, form, issued_at, expires_at, scanned_at, "
            "mutation_id, rowid FROM scans WHERE mutation_id IS NULL ORDER BY rowid DESC LIMIT 1"
        ).fetchone()
        return None if row is None else _scan_dict(row)

    @staticmethod
    def insert_scan(
        db: sqlite3.Connection,
        *,
        replay_key: str,
        code: str,
        person_ref: str,
        link_ref: str | None,
        form: str,
        issued_at: int,
        expires_at: int,
        scanned_at: datetime,
    ) -> int:
        cursor = db.execute(
            "INSERT INTO scans (replay_key, code, person_ref, link_ref, form, issued_at, expires_at, scanned_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (replay_key, code, person_ref, link_ref, form, issued_at, expires_at, utc_iso(scanned_at)),
        )
        assert cursor.lastrowid is not None
        return int(cursor.lastrowid)

    # ---------------------------------------------------------------------------------- outbox

    @staticmethod
    def next_seq(db: sqlite3.Connection) -> int:
        """The next outbox seq: inside the write transaction that records the mutation, so seqs have
        no gaps and no two mutations share one."""
        return int(db.execute("SELECT coalesce(max(seq), 0) + 1 FROM mutations").fetchone()[0])

    @staticmethod
    def insert_mutation(db: sqlite3.Connection, mutation: Mutation, created_at: datetime) -> None:
        db.execute(
            "INSERT INTO mutations (seq, id, kind, client_time, payload, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (
                mutation.seq,
                mutation.id,
                mutation.kind.value,
                mutation.client_time.isoformat(),
                dumps(mutation.payload),
                utc_iso(created_at),
            ),
        )

    def queued(self, limit: int, after_seq: int = 0) -> list[Mutation]:
        rows = self.db.execute(
            "SELECT seq, id, kind, client_time, payload FROM mutations "
            "WHERE answer IS NULL AND seq > ? ORDER BY seq LIMIT ?",
            (after_seq, limit),
        ).fetchall()
        return [_mutation(row) for row in rows]

    def mutations_from(self, seq: int, limit: int) -> list[Mutation]:
        rows = self.db.execute(
            "SELECT seq, id, kind, client_time, payload FROM mutations WHERE seq >= ? ORDER BY seq LIMIT ?",
            (seq, limit),
        ).fetchall()
        return [_mutation(row) for row in rows]

    def queue_stats(self) -> tuple[int, str | None]:
        count, oldest = self.db.execute(
            "SELECT count(*), min(client_time) FROM mutations WHERE answer IS NULL"
        ).fetchone()
        return int(count), oldest

    def record_answers(self, results: Iterable[PushResult], answered_at: datetime) -> int:
        """Stores the server's answers in one transaction; returns how many were new. An answer for a
        mutation this store does not hold (by id and seq) is ignored."""
        stored = 0
        with self.write() as db:
            for result in results:
                row = db.execute("SELECT seq, kind FROM mutations WHERE id = ?", (result.id,)).fetchone()
                if row is None or row[0] != result.seq:
                    continue
                db.execute(
                    "UPDATE mutations SET answer = ?, answered_at = ? WHERE id = ?",
                    (dumps(result.data), utc_iso(answered_at), result.id),
                )
                if row[1] == MutationKind.SETTLEMENT_CREATE.value:
                    db.execute(
                        "UPDATE settlements SET status = ?, reason = ?, server = ? WHERE mutation_id = ?",
                        (result.status.value, result.reason, dumps(result.data), result.id),
                    )
                stored += 1
        return stored

    def requeue_from(self, seq: int) -> int:
        """The server expects `seq` although this store holds answers from there on (the server lost
        them: a restored backup): they are queued again, and the new answers replace the old."""
        with self.write() as db:
            cursor = db.execute(
                "UPDATE mutations SET answer = NULL, answered_at = NULL WHERE seq >= ? AND answer IS NOT NULL",
                (seq,),
            )
            return int(cursor.rowcount)

    # ------------------------------------------------------------------------------------- pull

    def checkpoint(self) -> str | None:
        value = self.get("checkpoint")
        return value if isinstance(value, str) else None

    def begin_resync(self) -> None:
        """The server cannot continue from our checkpoint: pull everything again, as a new
        generation over the old one (which is dropped once the new snapshot is complete)."""
        with self.write() as db:
            self.put(db, "generation", self.generation(db) + 1)
            self.put(db, "resync", True)
            self.put(db, "checkpoint", None)

    def apply_page(self, changes: list[Any], checkpoint: str, has_more: bool, pulled_at: datetime) -> int:
        """One pull answer, in one transaction with its checkpoint: a crash before the commit pulls
        the same page again (documents are whole states, so that is harmless)."""
        applied = 0
        with self.write() as db:
            generation = self.generation(db)
            for change in changes:
                if isinstance(change, dict) and _apply_change(db, change, generation):
                    applied += 1
            self.put(db, "checkpoint", checkpoint)
            if not has_more:
                if self.get("resync", False, db):
                    for table in ("roster", "policies", "revocations", "push_issues"):
                        db.execute(f"DELETE FROM {table} WHERE generation < ?", (generation,))  # noqa: S608
                    # Every answered settlement is in the new snapshot's totals.
                    db.execute("UPDATE settlements SET in_roster = 1 WHERE status IN ('applied', 'adjusted')")
                    self.put(db, "resync", False)
                self.put(db, "last_pull_at", utc_iso(pulled_at))
        return applied


def _scan_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    keys = (
        "replay_key",
        "code",
        "person_ref",
        "link_ref",
        "form",
        "issued_at",
        "expires_at",
        "scanned_at",
        "mutation_id",
        "number",
    )
    return dict(zip(keys, row, strict=True))


def _mutation(row: tuple[Any, ...]) -> Mutation:
    seq, mid, kind, client_time, payload = row
    return Mutation(
        mid, int(seq), MutationKind(kind), datetime.fromisoformat(client_time), json.loads(payload)
    )


def _apply_change(db: sqlite3.Connection, change: dict[str, Any], generation: int) -> bool:
    entity, key, op, data = change.get("entity"), change.get("id"), change.get("op"), change.get("data")
    if not isinstance(key, str):
        return False
    upsert = op == "upsert" and isinstance(data, dict)
    if entity == "person":
        if upsert:
            assert isinstance(data, dict)
            ref = data.get("voucherRef")
            if not isinstance(ref, str):
                return False
            db.execute(
                "INSERT INTO roster (person_id, voucher_ref, data, generation) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (person_id) DO UPDATE SET voucher_ref = excluded.voucher_ref, "
                "data = excluded.data, generation = excluded.generation",
                (key, ref, dumps(data), generation),
            )
            # The new totals include every settlement of this person the server has answered.
            db.execute(
                "UPDATE settlements SET in_roster = 1 WHERE person_ref = ? AND status IN ('applied', 'adjusted')",
                (ref,),
            )
        else:
            db.execute("DELETE FROM roster WHERE person_id = ?", (key,))
        return True
    if entity == "policy_version":
        if upsert:
            db.execute(
                "INSERT INTO policies (id, data, generation) VALUES (?, ?, ?) ON CONFLICT (id) DO UPDATE "
                "SET data = excluded.data, generation = excluded.generation",
                (key, dumps(data), generation),
            )
        else:
            db.execute("DELETE FROM policies WHERE id = ?", (key,))
        return True
    if entity == "revocation":
        if upsert:
            assert isinstance(data, dict)
            version, kind, ref = data.get("version"), data.get("kind"), data.get("ref")
            if not isinstance(version, int) or not isinstance(kind, str) or not isinstance(ref, str):
                return False
            db.execute(
                "INSERT INTO revocations (version, kind, ref, generation) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (version) DO UPDATE SET kind = excluded.kind, ref = excluded.ref, "
                "generation = excluded.generation",
                (version, kind, ref, generation),
            )
        return True
    if entity == "issuer_keys":
        if upsert:
            assert isinstance(data, dict)
            keys = data.get("keys")
            if isinstance(keys, dict):
                Store.put(db, "issuer_keys", keys)
        return True
    if entity == "push_issue":
        if upsert:
            assert isinstance(data, dict)
            db.execute(
                "INSERT INTO push_issues (id, mutation_id, data, generation) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET mutation_id = excluded.mutation_id, data = excluded.data, "
                "generation = excluded.generation",
                (key, data.get("mutationId"), dumps(data), generation),
            )
        else:
            db.execute("DELETE FROM push_issues WHERE id = ?", (key,))
        return True
    return False  # an entity this version of the terminal does not know: ignored


def parse_day(text: str) -> date:
    return date.fromisoformat(text)
