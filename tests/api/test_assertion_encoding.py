"""How a client assertion's compact JWS is taken apart (api.terminals.service parses it itself, once,
instead of through PyJWT three times): the same verdicts as PyJWT's on the encoding, each token signed
over exactly the bytes it carries, so only the encoding can be what refuses it."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import jwt
import pytest

from api.state import AppState
from tests.api import terminalworld as world


def _claims(enrolled: world.Enrolled, **changes: Any) -> dict[str, Any]:
    now = int(datetime.now(UTC).timestamp())
    claims = {
        "iss": enrolled.terminal_id,
        "sub": enrolled.terminal_id,
        "aud": enrolled.audience,
        "iat": now,
        "exp": now + 60,
        "jti": secrets.token_urlsafe(18),
    }
    claims.update(changes)
    return claims


def _signed(enrolled: world.Enrolled, header: bytes, claims: bytes, encode: Callable[[bytes], str]) -> str:
    """A JWS whose first two segments are `encode`d as given and signed over as sent."""
    signing_input = encode(header) + "." + encode(claims)
    return signing_input + "." + world.b64url(enrolled.key.sign(signing_input.encode("ascii")))


def _padded(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii")


def _non_canonical(raw: bytes) -> str:
    """The same bytes with unused trailing bits set: decodes alike, is not the canonical encoding."""
    text = world.b64url(raw)
    assert len(text) % 4 in (2, 3), "needs a segment with spare bits"
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(text[-1])
    return text[:-1] + alphabet[last | 1]


HEADER = json.dumps({"alg": "EdDSA", "typ": "JWT"}).encode()


async def _reason(client: Any, token: str) -> str | None:
    response = await client.post(  # bytes: a header that is not ASCII goes out as Latin-1
        "/sync/pull",
        json={"checkpoint": None, "limit": 1},
        headers={"authorization": f"Bearer {token}".encode("latin-1")},
    )
    if response.status_code == 200:
        return None
    assert response.status_code == 401, response.text
    return world.reason(response)


async def test_padded_segments_are_accepted_as_pyjwt_accepts_them(client: Any, state: AppState) -> None:
    enrolled = await world.enrol(client, state)
    doc = _claims(enrolled)
    for note in ("x", "xx"):  # of two lengths one apart, at least one is not a multiple of 3: padded
        claims = json.dumps({**doc, "note": note}).encode()
        if len(claims) % 3:
            break
    token = _signed(enrolled, HEADER, claims, _padded)
    assert "=" in token.split(".")[0] + token.split(".")[1]
    jwt.decode(token, options={"verify_signature": False})  # PyJWT takes it
    assert await _reason(client, token) is None


@pytest.mark.parametrize(
    "name",
    [
        "standard alphabet",
        "non-canonical",
        "too much padding",
        "header not an object",
        "claims not an object",
        "crit header",
        "unencoded payload",
        "kid not a string",
        "four segments",
        "not ascii",
    ],
)
async def test_malformed_encodings_are_refused_as_malformed(client: Any, state: AppState, name: str) -> None:
    enrolled = await world.enrol(client, state)
    claims_doc = _claims(enrolled)
    claims = json.dumps(claims_doc).encode()

    def header(**extra: Any) -> bytes:
        return json.dumps({"alg": "EdDSA", "typ": "JWT", **extra}).encode()

    if name == "standard alphabet":
        # Claims whose standard encoding has '+' or '/' (base64url has '-' and '_' there).
        for note in ("~~~", "~~~~", "~~~~~", "~~~~~~"):
            claims = json.dumps({**claims_doc, "note": note}).encode()
            if {"+", "/"} & set(base64.b64encode(claims).decode()):
                break
        token = _signed(enrolled, HEADER, claims, lambda raw: base64.b64encode(raw).decode().rstrip("="))
        assert {"+", "/"} & set(token.split(".")[1])
    elif name == "non-canonical":
        raw = header()
        while len(world.b64url(raw)) % 4 not in (2, 3):
            raw += b" "
        token = _signed(enrolled, raw, claims, lambda r: _non_canonical(r) if r is raw else world.b64url(r))
    elif name == "too much padding":
        token = _signed(enrolled, HEADER, claims, lambda raw: world.b64url(raw) + "===")
    elif name == "header not an object":
        token = _signed(enrolled, b'["EdDSA"]', claims, world.b64url)
    elif name == "claims not an object":
        token = _signed(enrolled, HEADER, b'"claims"', world.b64url)
    elif name == "crit header":
        token = _signed(enrolled, header(crit=["exp"]), claims, world.b64url)
    elif name == "unencoded payload":
        token = _signed(enrolled, header(b64=False, crit=["b64"]), claims, world.b64url)
    elif name == "kid not a string":
        token = _signed(enrolled, header(kid=7), claims, world.b64url)
    elif name == "four segments":
        token = _signed(enrolled, HEADER, claims, world.b64url) + ".AAAA"
    else:
        token = _signed(enrolled, HEADER, claims, world.b64url)[:-2] + "é"
    with pytest.raises(jwt.PyJWTError):  # what PyJWT makes of it too
        jwt.decode(token, enrolled.key.public_key(), algorithms=["EdDSA"], options={"verify_aud": False})
    assert await _reason(client, token) == "malformed"
    # The refusal spent nothing: an honest assertion still goes through.
    assert await _reason(client, enrolled.assertion()) is None
