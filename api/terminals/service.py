"""Village clinics, their terminals and how a terminal proves who it is (DESIGN.md section 4).

- An admin makes a one-time enrolment code for a clinic (`create_enrolment_code`); only its SHA-256
  is stored. The clinic types it into its terminal, which makes its own Ed25519 key pair and
  registers the public key with the code (`enrol`): the code is spent in the same statement that
  checks it, so of two enrolments with one code exactly one wins, on every database.
- Every later request carries a client assertion (`authenticate`, the claims are in
  sync/assertion.py): a JWT signed by the terminal's key, EdDSA only, for this server's /sync URL,
  living at most ASSERTION_TTL_S, with a `jti` that the database accepts once across all workers.
- `revoke` stops a terminal at its next request (401, reason ``terminal_revoked``).

No HTTP and no GraphQL here: api/replication/http.py and api/terminals/schema.py call these.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from api.auth.models import Role
from api.auth.service import Viewer
from api.db import dialect_name
from api.dbtypes import utcnow
from api.errors import BadUserInput, Forbidden, NotFound, Unauthenticated
from api.people.models import Facility, FacilityKind
from api.settings import Settings
from api.terminals.models import (
    Terminal,
    TerminalAssertionReplay,
    TerminalEnrolmentCode,
    TerminalStatus,
)
from sync.assertion import JTI_PATTERN
from sync.protocol import ASSERTION_ALGORITHM, ASSERTION_TTL_S, REASON_LABELS, RejectReason
from sync.vouchers.keys import WeakPublicKeyError, strict_public_key

# --- enrolment codes ---------------------------------------------------------------------------

CODE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford's base32: no I, L, O, U
CODE_LENGTH = 20
"""20 characters of 5 bits: 100 random bits, shown as five groups of four (``7K3M-...``)."""
_CODE_GROUP = 4
_CODE_CONFUSABLE = str.maketrans({"O": "0", "I": "1", "L": "1"})
_CODE_TEXT = re.compile(f"[{CODE_ALPHABET}]{{{CODE_LENGTH}}}")


def new_code() -> str:
    raw = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
    return "-".join(raw[i : i + _CODE_GROUP] for i in range(0, CODE_LENGTH, _CODE_GROUP))


def normalise_code(text: str) -> str | None:
    """The code as stored (hashed): case, hyphens and spaces do not matter, O reads as 0 and I or L
    as 1, as Crockford's base32 has it. None when it cannot be a code at all."""
    if not isinstance(text, str) or len(text) > 64:
        return None
    compact = re.sub(r"[\s-]", "", text).upper().translate(_CODE_CONFUSABLE)
    return compact if _CODE_TEXT.fullmatch(compact) else None


def code_hash(normalised: str) -> str:
    # A plain hash is enough: the code has 100 random bits, nobody can search that space.
    return hashlib.sha256(normalised.encode("ascii")).hexdigest()


def _require_admin(viewer: Viewer) -> None:
    if viewer.role != Role.ADMIN:
        raise Forbidden()


@dataclass(frozen=True, slots=True)
class Clinic:
    facility: Facility
    terminals: list[Terminal]


async def list_clinics(session: AsyncSession, viewer: Viewer) -> list[Clinic]:
    """Every village clinic (facilities of kind clinic) with its terminals, oldest first."""
    _require_admin(viewer)
    facilities = list(
        (
            await session.execute(
                select(Facility)
                .where(col(Facility.kind) == FacilityKind.CLINIC.value)
                .order_by(col(Facility.code))
            )
        ).scalars()
    )
    by_clinic: dict[int, list[Terminal]] = {f.id: [] for f in facilities if f.id is not None}
    if by_clinic:
        terminals = await session.execute(
            select(Terminal).where(col(Terminal.clinic_id).in_(list(by_clinic))).order_by(col(Terminal.id))
        )
        for terminal in terminals.scalars():
            by_clinic[terminal.clinic_id].append(terminal)
    return [Clinic(f, by_clinic.get(f.id or 0, [])) for f in facilities]


async def get_clinic(session: AsyncSession, clinic_id: int, field: str = "clinicId") -> Facility:
    clinic = await session.get(Facility, clinic_id)
    if clinic is None or clinic.kind != FacilityKind.CLINIC.value:
        raise NotFound("未找到该村卫生室", field=field)
    return clinic


async def _issue_code(
    session: AsyncSession, clinic_id: int, ttl: timedelta, created_by: int | None, now: datetime
) -> tuple[str, datetime]:
    if ttl <= timedelta(0):
        raise ValueError("an enrolment code needs a positive lifetime")
    code = new_code()
    normalised = normalise_code(code)
    assert normalised is not None
    expires_at = now + ttl
    session.add(
        TerminalEnrolmentCode(
            clinic_id=clinic_id,
            code_hash=code_hash(normalised),
            created_at=now,
            expires_at=expires_at,
            created_by_account_id=created_by,
        )
    )
    await session.flush()
    return code, expires_at


async def create_enrolment_code(
    session: AsyncSession,
    viewer: Viewer,
    clinic_id: int,
    ttl: timedelta = timedelta(hours=24),
    now: datetime | None = None,
) -> tuple[str, datetime]:
    """A fresh one-time code (admin) for enrolling one terminal of the clinic, and when it expires.
    The code itself is returned once and never stored; commits."""
    _require_admin(viewer)
    await get_clinic(session, clinic_id)
    code, expires_at = await _issue_code(session, clinic_id, ttl, viewer.account_id, now or utcnow())
    await session.commit()
    return code, expires_at


async def demo_enrolment_codes(
    session: AsyncSession, ttl: timedelta, now: datetime | None = None
) -> list[tuple[Facility, str, datetime]]:
    """One fresh code for every clinic, made by the system (what `yibao serve` prints outside
    production). Commits."""
    now = now or utcnow()
    # Each start prints fresh codes: drop the unused ones that expired (a used one names its terminal).
    await session.execute(
        delete(TerminalEnrolmentCode).where(
            col(TerminalEnrolmentCode.used_at).is_(None), col(TerminalEnrolmentCode.expires_at) < now
        )
    )
    clinics = (
        await session.execute(
            select(Facility)
            .where(col(Facility.kind) == FacilityKind.CLINIC.value)
            .order_by(col(Facility.code))
        )
    ).scalars()
    issued = []
    for clinic in list(clinics):
        assert clinic.id is not None
        code, expires_at = await _issue_code(session, clinic.id, ttl, None, now)
        issued.append((clinic, code, expires_at))
    await session.commit()
    return issued


# --- enrolment ---------------------------------------------------------------------------------


def decode_public_key(text: object, field: str = "publicKey") -> tuple[Ed25519PublicKey, str]:
    """A terminal's public key as sent (base64url of the raw 32 bytes, padding optional), strictly
    checked: canonical, on the curve, of prime order. Returns the key and its stored form."""
    if not isinstance(text, str) or not re.fullmatch(r"[A-Za-z0-9_-]{43}={0,1}", text):
        raise BadUserInput(
            "公钥格式有误（应为32字节公钥的base64url编码）", field=field, reason="malformed_key"
        )
    try:
        raw = base64.urlsafe_b64decode(text.rstrip("=") + "=")
    except (binascii.Error, ValueError):
        raise BadUserInput("公钥格式有误", field=field, reason="malformed_key") from None
    try:
        key = strict_public_key(raw)
    except WeakPublicKeyError:
        raise BadUserInput("该公钥不安全，不能用于终端", field=field, reason="weak_key") from None
    except ValueError:
        raise BadUserInput("公钥格式有误", field=field, reason="malformed_key") from None
    stored = base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
    return key, stored


async def enrol(
    session: AsyncSession, code: str, public_key_b64: str, now: datetime | None = None
) -> Terminal:
    """Registers a terminal's public key with a one-time code; the code is spent. Commits.

    The key is checked before the code is touched, so a bad key does not burn the code. The code is
    spent by one conditional UPDATE (unused and unexpired): with two enrolments at once, on SQLite
    or on PostgreSQL, one updates the row and the other finds it spent."""
    now = now or utcnow()
    _, stored_key = decode_public_key(public_key_b64)
    normalised = normalise_code(code)
    if normalised is None:
        raise BadUserInput("注册码格式有误", field="code", reason="malformed_code")
    digest = code_hash(normalised)
    table = TerminalEnrolmentCode.__table__  # type: ignore[attr-defined]
    spent = (
        await session.execute(
            update(table)
            .where(table.c.code_hash == digest, table.c.used_at.is_(None), table.c.expires_at > now)
            .values(used_at=now)
            .returning(table.c.id, table.c.clinic_id)
        )
    ).first()
    if spent is None:
        found = (
            await session.execute(
                select(table.c.id, table.c.used_at, table.c.expires_at).where(table.c.code_hash == digest)
            )
        ).first()
        if found is not None and found.used_at is not None:
            # The terminal that spent it, asking again with the same key because the answer never
            # reached it (a dropped connection, a power cut): the same answer, not a dead end.
            again = (
                await session.execute(
                    select(Terminal).where(
                        col(Terminal.enrolment_code_id) == found.id,
                        col(Terminal.public_key) == stored_key,
                        col(Terminal.status) == TerminalStatus.ACTIVE.value,
                    )
                )
            ).scalar_one_or_none()
            if again is not None:
                await session.commit()
                return again
        await session.rollback()
        if found is None:
            raise Unauthenticated("注册码无效", field="code", reason="enrolment_code_unknown")
        if found.used_at is not None:
            raise Unauthenticated(
                "注册码已被使用，请向管理员申请新的注册码", field="code", reason="enrolment_code_used"
            )
        raise Unauthenticated(
            "注册码已过期，请向管理员申请新的注册码", field="code", reason="enrolment_code_expired"
        )
    terminal = Terminal(
        clinic_id=spent.clinic_id,
        public_key=stored_key,
        enrolled_at=now,
        enrolment_code_id=spent.id,
    )
    session.add(terminal)
    await session.flush()
    await session.commit()
    return terminal


async def revoke(
    session: AsyncSession, viewer: Viewer, terminal_id: int, now: datetime | None = None
) -> Terminal:
    """Revokes a terminal (admin): its next request is refused. Revoking twice changes nothing."""
    _require_admin(viewer)
    terminal = await session.get(Terminal, terminal_id, with_for_update=True, populate_existing=True)
    if terminal is None:
        raise NotFound("未找到该终端", field="id")
    if terminal.status != TerminalStatus.REVOKED.value:
        terminal.status = TerminalStatus.REVOKED.value
        terminal.revoked_at = now or utcnow()
        terminal.revoked_by_account_id = viewer.account_id
        await session.flush()
    await session.commit()
    return terminal


SYNC_NOTE_EVERY = timedelta(seconds=60)
"""How fresh the admin's "last pull / last push" needs to be: a terminal polling every few seconds
must not cost a write per request."""


async def record_sync(
    session: AsyncSession, terminal: Terminal, *, pulled: bool, now: datetime | None = None
) -> None:
    """Notes a successful pull or push (what the admin sees as the terminal's last sync), at most once
    per SYNC_NOTE_EVERY; the caller commits."""
    now = now or utcnow()
    column = "last_pull_at" if pulled else "last_push_at"
    last = getattr(terminal, column)
    if last is not None and now - last < SYNC_NOTE_EVERY:
        return
    await session.execute(update(Terminal).where(col(Terminal.id) == terminal.id).values({column: now}))


async def clinic_of(session: AsyncSession, terminal: Terminal) -> Facility:
    clinic = await session.get(Facility, terminal.clinic_id)
    if clinic is None:  # a foreign key holds it; only a broken database gets here
        raise NotFound("终端所属机构不存在")
    return clinic


# --- client assertions -------------------------------------------------------------------------

_MAX_ASSERTION_CHARS = 2048
_TERMINAL_ID = re.compile(r"[1-9][0-9]{0,18}", re.ASCII)
_PURGE_BATCH = 1000
_KEEP_MARGIN_S = 60
_PURGE_INTERVAL_S = 60.0
_next_purge = 0.0
"""time.monotonic() after which this worker purges expired jtis again. Only a schedule: what an
assertion may do lives in the database, the same for every worker."""

_MESSAGES = {
    "missing": "缺少终端凭证",
    "malformed": "终端凭证格式有误",
    "alg_not_allowed": "终端凭证的签名算法不被接受（只接受EdDSA）",
    "unknown_terminal": "终端未注册或已被删除，请重新注册",
    "bad_signature": "终端凭证签名无效",
    "wrong_subject": "终端凭证的签发方与主体不一致",
    "wrong_audience": "终端凭证的服务地址不符",
    "lifetime_too_long": f"终端凭证有效期过长（最长{ASSERTION_TTL_S}秒）",
    "clock_skew": "终端时间与服务器相差过大，请校准终端时间",
    "expired": "终端凭证已过期",
    "replayed": "终端凭证已被使用过",
}


class TerminalRevoked(Unauthenticated):
    """A terminal that an admin revoked: 401 like every credential that no longer works, with its
    own reason, so that the terminal stops and tells its operator instead of retrying."""

    def __init__(self) -> None:
        super().__init__(REASON_LABELS[RejectReason.TERMINAL_REVOKED], reason="terminal_revoked")


def _refuse(reason: str, **extra: Any) -> Unauthenticated:
    return Unauthenticated(_MESSAGES[reason], reason=reason, **extra)


def _claim_int(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**41:
        raise _refuse("malformed")
    return value


_SEGMENT = re.compile(rb"[A-Za-z0-9_-]*")
_REQUIRED_CLAIMS = ("iss", "sub", "aud", "iat", "exp", "jti")
_KEYS: dict[tuple[int, str], Ed25519PublicKey] = {}
"""Terminals' public key objects by (terminal id, stored key): parsed once, not per request. Only
the parsing is cached: the terminal's row (its key, its status) is read on every request."""
_KEYS_MAX = 4096


def _public_key(terminal_id: int, stored: str) -> Ed25519PublicKey:
    key = _KEYS.get((terminal_id, stored))
    if key is None:
        key = Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(stored + "="))
        if len(_KEYS) >= _KEYS_MAX:
            _KEYS.clear()  # more terminals than a worker serves: start again rather than grow
        _KEYS[(terminal_id, stored)] = key
    return key


def _segment(text: bytes) -> bytes:
    """One base64url segment of a compact JWS, as PyJWT judged it (at C speed, where PyJWT checks the
    alphabet character by character): the URL-safe alphabet, at most two `=` of padding and only to a
    multiple of four, the canonical encoding of what it decodes to."""
    stripped = text.rstrip(b"=")
    padding = len(text) - len(stripped)
    if (
        padding > 2
        or (padding and len(text) % 4)
        or len(stripped) % 4 == 1
        or not _SEGMENT.fullmatch(stripped)
    ):
        raise _refuse("malformed")
    try:
        decoded = base64.urlsafe_b64decode(stripped + b"=" * (-len(stripped) % 4))
    except (binascii.Error, ValueError):
        raise _refuse("malformed") from None
    if base64.urlsafe_b64encode(decoded).rstrip(b"=") != stripped:
        raise _refuse("malformed")
    return decoded


def _json_object(raw: bytes, *, header: bool = False) -> dict[str, Any]:
    """A JWS header or claims set: a JSON object. No JWS extensions are accepted in a header: `crit`
    and `b64` (an unencoded payload) are malformed, as a `kid` that is not a string."""
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: "[[[[..." nesting
        raise _refuse("malformed") from None
    if not isinstance(value, dict):
        raise _refuse("malformed")
    if header and ("crit" in value or "b64" in value or not isinstance(value.get("kid", ""), str)):
        raise _refuse("malformed")
    return value


def _jws_parts(token: str) -> list[bytes]:
    """A compact JWS's three segments, still encoded. Taken apart here rather than by PyJWT, which
    parsed the token three times per request (header, unverified claims, verified claims) and checks
    each segment's alphabet character by character in Python."""
    try:
        parts = token.encode("ascii").split(b".")
    except UnicodeEncodeError:
        raise _refuse("malformed") from None
    if len(parts) != 3:
        raise _refuse("malformed")
    return parts


def bearer_token(authorization_header: str | None) -> str:
    if not authorization_header:
        raise _refuse("missing")
    scheme, _, token = authorization_header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > _MAX_ASSERTION_CHARS:
        raise _refuse("malformed")
    return token


async def authenticate(
    session: AsyncSession,
    settings: Settings,
    authorization_header: str | None,
    audience: str,
    now: datetime | None = None,
    *,
    commit: bool = True,
) -> Terminal:
    """The terminal whose client assertion is in `authorization_header` (``Bearer <JWT>``), or
    Unauthenticated with a `reason`: missing, malformed, alg_not_allowed, unknown_terminal,
    bad_signature, wrong_subject, terminal_revoked, wrong_audience, lifetime_too_long, clock_skew
    (with `serverTime`: the terminal's clock is off by more than an assertion can live), expired,
    replayed. The `jti` is recorded and committed before this returns, so the assertion is spent
    whatever the request does next. With `commit=False` it is recorded in the session's transaction
    and the caller commits it, before answering, whatever the answer (a pull: one commit instead of
    two); on PostgreSQL a replay of it at that moment waits for that commit and is refused (unless
    the first request fails and rolls back: then the waiting replay gets the jti, and the first one's
    `keep_spent` finds it taken; the first answered only a 500, so nothing was done twice)."""
    now = now or utcnow()
    token = bearer_token(authorization_header)
    parts = _jws_parts(token)
    if _json_object(_segment(parts[0]), header=True).get("alg") != ASSERTION_ALGORITHM:
        raise _refuse("alg_not_allowed")
    claims = _json_object(_segment(parts[1]))
    issuer = claims.get("iss")
    if not isinstance(issuer, str) or not _TERMINAL_ID.fullmatch(issuer) or int(issuer) >= 2**63:
        raise _refuse("malformed")
    terminal = (await session.execute(_TERMINAL, {"id": int(issuer)})).scalar_one_or_none()
    if terminal is None:
        raise _refuse("unknown_terminal")
    try:
        _public_key(int(issuer), terminal.public_key).verify(_segment(parts[2]), parts[0] + b"." + parts[1])
    except InvalidSignature:
        raise _refuse("bad_signature") from None
    if any(claims.get(name) is None for name in _REQUIRED_CLAIMS):  # as PyJWT's `require` had it
        raise _refuse("malformed")
    if claims["sub"] != issuer or claims["iss"] != issuer:
        raise _refuse("wrong_subject")
    if terminal.status != TerminalStatus.ACTIVE.value:
        raise TerminalRevoked()
    if not isinstance(claims["aud"], str) or claims["aud"] != audience:
        raise _refuse("wrong_audience", expected=audience)
    issued, expires = _claim_int(claims["iat"]), _claim_int(claims["exp"])
    if expires <= issued:
        raise _refuse("malformed")
    if expires - issued > ASSERTION_TTL_S:
        raise _refuse("lifetime_too_long")
    leeway = settings.terminal_clock_leeway_s
    clock = now.timestamp()
    server_time = now.astimezone(UTC).isoformat()
    # A terminal signs a fresh assertion for every request, so an `iat` further from the server's
    # clock than an assertion can live means the terminal's clock is off (or the assertion is old).
    if issued > clock + leeway or clock - issued > ASSERTION_TTL_S + leeway:
        raise _refuse("clock_skew", serverTime=server_time, skewS=int(issued - clock))
    if expires < clock - leeway:
        raise _refuse("expired", serverTime=server_time)
    nbf = claims.get("nbf")
    if nbf is not None and _claim_int(nbf) > clock + leeway:
        raise _refuse("clock_skew", serverTime=server_time, skewS=int(issued - clock))
    jti = claims["jti"]
    if not isinstance(jti, str) or not JTI_PATTERN.fullmatch(jti):
        raise _refuse("malformed")
    assert terminal.id is not None
    # Kept past the last moment it could be accepted by a margin: acceptance is judged at this
    # request's clock reading, the insert comes later, and a purge in between must not free the jti.
    keep_until = datetime.fromtimestamp(expires + leeway + _KEEP_MARGIN_S, UTC)
    if not await _spend_jti(session, jti, terminal.id, keep_until, commit=commit):
        raise _refuse("replayed")
    await _maybe_purge(session)
    return terminal


_REPLAY = TerminalAssertionReplay.__table__  # type: ignore[attr-defined]
# Built once per dialect (every request spends a jti). ON CONFLICT DO NOTHING: on PostgreSQL a second
# insert of the same key waits for the first transaction and then inserts nothing, so of two requests
# at once exactly one gets a row back.
_SPEND = {
    dialect: insert(_REPLAY)
    .values(jti=bindparam("jti"), terminal_id=bindparam("terminal"), expires_at=bindparam("until"))
    .on_conflict_do_nothing(index_elements=["jti"])
    .returning(_REPLAY.c.jti)
    for dialect, insert in (("postgresql", postgresql.insert), ("sqlite", sqlite.insert))
}
# The terminal a request names, read afresh (its key, its status: a revoked terminal is refused on
# its next request); a statement built once, not the per-call statement of `session.get`.
_TERMINAL = (
    select(Terminal).where(col(Terminal.id) == bindparam("id")).execution_options(populate_existing=True)
)


async def _spend_jti(
    session: AsyncSession, jti: str, terminal_id: int, keep_until: datetime, *, commit: bool
) -> bool:
    """Records the jti (and commits, if asked); False if any worker recorded it before."""
    dialect = dialect_name(session)
    spent = {"jti": jti, "terminal": terminal_id, "until": keep_until}
    inserted = (await session.execute(_SPEND[dialect], spent)).first()
    if commit:
        await session.commit()
    else:
        session.info[_SPENT] = spent
    return inserted is not None


_SPENT = "yibao.spent_assertion"


async def keep_spent(session: AsyncSession) -> None:
    """After a rollback of a transaction that `authenticate(commit=False)` recorded a jti in: records
    it again and commits, so the assertion stays spent whatever the request did after it."""
    spent = session.info.pop(_SPENT, None)
    if spent is None:
        return
    dialect = dialect_name(session)
    await session.execute(_SPEND[dialect], spent)
    await session.commit()


async def _maybe_purge(session: AsyncSession) -> None:
    global _next_purge
    if time.monotonic() < _next_purge:
        return
    _next_purge = time.monotonic() + _PURGE_INTERVAL_S
    await purge_expired_assertions(session)


async def purge_expired_assertions(session: AsyncSession, now: datetime | None = None) -> int:
    """Drops up to a batch of jtis that can no longer be accepted anyway (their assertion expired,
    leeway included); its own transaction. On PostgreSQL rows another transaction holds are skipped,
    so two purges, or a purge and an insert, never wait on each other: no deadlock. Returns the
    number of rows dropped."""
    table = TerminalAssertionReplay.__table__  # type: ignore[attr-defined]
    cutoff = now or utcnow()
    stale = select(table.c.jti).where(table.c.expires_at < cutoff).limit(_PURGE_BATCH)
    if dialect_name(session) == "postgresql":
        stale = stale.with_for_update(skip_locked=True)
    result = await session.execute(delete(table).where(table.c.jti.in_(stale)))
    await session.commit()
    return int(getattr(result, "rowcount", 0) or 0)
