"""Client assertions of /sync (DESIGN.md section 4, terminal identity): what a terminal signs.

Every request after enrolment carries ``Authorization: Bearer <JWT>``, a short-lived JWT that the
terminal signs with its own Ed25519 key (the one it registered at /sync/enrol):

    header  {"alg": "EdDSA", "typ": "JWT"}         (the server accepts EdDSA only)
    claims  {"iss": "<terminal id>", "sub": "<terminal id>",
             "aud": "<the server's /sync URL, as /sync/enrol answered it in `audience`>",
             "iat": <now, Unix seconds>, "exp": <iat + at most ASSERTION_TTL_S>,
             "jti": "<random, 16-64 characters of [A-Za-z0-9_-], never used twice>"}

The terminal makes a fresh one for every request: the server accepts each `jti` once.
Pure: the terminal agent and the server's tests both use it.
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sync.protocol import ASSERTION_ALGORITHM, ASSERTION_TTL_S

JTI_PATTERN = re.compile(r"[A-Za-z0-9_-]{16,64}", re.ASCII)
DEFAULT_TTL_S = 120
"""What make_assertion gives by default: well inside ASSERTION_TTL_S, enough for a slow link."""


def audience_for(server_url: str) -> str:
    """The default audience of a server reached at `server_url` (``https://host[/prefix]``)."""
    return server_url.rstrip("/") + "/sync"


def new_jti() -> str:
    return secrets.token_urlsafe(18)  # 144 random bits, 24 characters


def make_assertion(
    private_key: Ed25519PrivateKey,
    terminal_id: str | int,
    audience: str,
    now: datetime | None = None,
    jti: str | None = None,
    *,
    ttl_s: int = DEFAULT_TTL_S,
) -> str:
    """A client assertion for one request of terminal `terminal_id` to the server whose /sync URL is
    `audience`. `now` defaults to the terminal's clock (UTC); `ttl_s` at most ASSERTION_TTL_S."""
    if not 0 < ttl_s <= ASSERTION_TTL_S:
        raise ValueError(f"an assertion lives 1 to {ASSERTION_TTL_S} seconds")
    issued = int((now or datetime.now(UTC)).timestamp())
    subject = str(terminal_id)
    claims = {
        "iss": subject,
        "sub": subject,
        "aud": audience,
        "iat": issued,
        "exp": issued + ttl_s,
        "jti": jti if jti is not None else new_jti(),
    }
    return jwt.encode(claims, private_key, algorithm=ASSERTION_ALGORITHM, headers={"typ": "JWT"})
