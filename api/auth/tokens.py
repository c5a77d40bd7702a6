"""EdDSA (Ed25519) JWTs: short-lived access tokens and rotating refresh tokens.

Verification pins the algorithm to EdDSA and looks the key up by ``kid`` in our own key ring, so an
``alg: none`` token, an HS256 token "signed" with our public key, or a token from an unknown key all
fail before any claim is trusted.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt

from api.auth.keys import KeyRing
from api.errors import Unauthenticated

ALGORITHM = "EdDSA"
ACCESS = "access"
REFRESH = "refresh"


@dataclass(frozen=True)
class AccessClaims:
    account_id: int
    role: str
    session_id: str
    person_id: int | None
    expires_at: datetime


@dataclass(frozen=True)
class RefreshClaims:
    jti: str
    session_id: str
    account_id: int
    expires_at: datetime


class TokenCodec:
    def __init__(self, keys: KeyRing, *, issuer: str, access_ttl: timedelta, refresh_ttl: timedelta) -> None:
        self.keys = keys
        self.issuer = issuer
        self.access_ttl = access_ttl
        self.refresh_ttl = refresh_ttl

    def _encode(self, claims: dict[str, Any]) -> str:
        key = self.keys.active
        return jwt.encode(claims, key.private_key, algorithm=ALGORITHM, headers={"kid": key.kid})

    def issue_access(
        self, *, account_id: int, role: str, session_id: str, person_id: int | None, now: datetime
    ) -> str:
        return self._encode(
            {
                "iss": self.issuer,
                "sub": str(account_id),
                "typ": ACCESS,
                "role": role,
                "sid": session_id,
                "pid": person_id,
                "iat": now,
                "exp": now + self.access_ttl,
            }
        )

    def issue_refresh(self, *, account_id: int, session_id: str, jti: str, now: datetime) -> str:
        return self._encode(
            {
                "iss": self.issuer,
                "sub": str(account_id),
                "typ": REFRESH,
                "sid": session_id,
                "jti": jti,
                "iat": now,
                "exp": now + self.refresh_ttl,
            }
        )

    def _decode(self, token: str, expected_type: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except (jwt.PyJWTError, UnicodeError) as exc:  # a WebSocket payload may hold any text
            raise Unauthenticated("登录凭证无效，请重新登录", reason="malformed_token") from exc
        if header.get("alg") != ALGORITHM:
            raise Unauthenticated("登录凭证无效，请重新登录", reason="algorithm_not_allowed")
        kid = header.get("kid")
        public_key = self.keys.public_key(kid) if isinstance(kid, str) else None
        if public_key is None:
            raise Unauthenticated("登录凭证无效，请重新登录", reason="unknown_key")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                public_key,
                algorithms=[ALGORITHM],
                issuer=self.issuer,
                options={"require": ["exp", "iat", "sub", "iss", "typ", "sid"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthenticated("登录已过期，请重新登录", reason="token_expired") from exc
        except jwt.PyJWTError as exc:
            raise Unauthenticated("登录凭证无效，请重新登录", reason="invalid_token") from exc
        if claims.get("typ") != expected_type:
            raise Unauthenticated("登录凭证无效，请重新登录", reason="wrong_token_type")
        return claims

    def verify_access(self, token: str) -> AccessClaims:
        claims = self._decode(token, ACCESS)
        try:
            pid = claims.get("pid")
            return AccessClaims(
                account_id=int(claims["sub"]),
                role=str(claims["role"]),
                session_id=str(claims["sid"]),
                person_id=int(pid) if pid is not None else None,
                expires_at=datetime.fromtimestamp(claims["exp"], UTC),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise Unauthenticated("登录凭证无效，请重新登录", reason="invalid_claims") from exc

    def verify_refresh(self, token: str) -> RefreshClaims:
        claims = self._decode(token, REFRESH)
        try:
            return RefreshClaims(
                jti=str(uuid.UUID(str(claims["jti"]))),
                session_id=str(claims["sid"]),
                account_id=int(claims["sub"]),
                expires_at=datetime.fromtimestamp(claims["exp"], UTC),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise Unauthenticated("登录凭证无效，请重新登录", reason="invalid_claims") from exc
