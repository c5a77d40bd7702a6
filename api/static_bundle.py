"""What GraphiQL (api/graphiql.py) and the H5 twin (api/h5.py) share: built front-end assets read once per
process, gzipped once, and served under content-hashed names with a cache-for-good policy and ETags.
"""

from __future__ import annotations

import gzip
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

IMMUTABLE = "public, max-age=31536000, immutable"
MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
}
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class Asset:
    body: bytes
    gzipped: bytes
    media_type: str
    etag: str


class BundleMissing(RuntimeError):
    pass


def read_asset(directory: Path, name: object, *, owner: str, rebuild: str) -> Asset:
    """One file a manifest names: a plain name (no path) of a known type, read and gzipped. `owner`
    ("GraphiQL's", "the H5") and `rebuild` (the script to run) word the error."""
    if not isinstance(name, str) or not _SAFE_NAME.fullmatch(name) or Path(name).suffix not in MEDIA_TYPES:
        raise BundleMissing(f"{owner} manifest names an unexpected file: {name!r}")
    try:
        body = (directory / name).read_bytes()
    except OSError as exc:
        raise BundleMissing(f"{owner} bundle is incomplete ({exc}): run {rebuild}") from exc
    return Asset(
        body=body,
        gzipped=gzip.compress(body, compresslevel=9, mtime=0),
        media_type=MEDIA_TYPES[Path(name).suffix],
        etag=f'"{hashlib.sha256(body).hexdigest()[:16]}"',
    )


def accepts_gzip(accept_encoding: str) -> bool:
    for part in accept_encoding.split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip().lower() not in ("gzip", "*"):
            continue
        quality = params.strip().lower()
        if quality.startswith("q="):
            try:
                return float(quality[2:]) > 0
            except ValueError:
                return False
        return True
    return False


def asset_response(request: Request, assets: Mapping[str, Asset]) -> Response:
    """The asset the route's `name` names, gzipped when the client takes it; 304 on a matching ETag."""
    asset = assets.get(request.path_params["name"])
    if asset is None:
        return PlainTextResponse("Not Found", status_code=404)
    gzipped = accepts_gzip(request.headers.get("accept-encoding", ""))
    etag = asset.etag[:-1] + '-gzip"' if gzipped else asset.etag
    headers = {
        "cache-control": IMMUTABLE,
        "etag": etag,
        "vary": "accept-encoding",
        "x-content-type-options": "nosniff",
    }
    if etag in {tag.strip() for tag in request.headers.get("if-none-match", "").split(",")}:
        return Response(status_code=304, headers=headers)
    if gzipped:
        headers["content-encoding"] = "gzip"
    return Response(asset.gzipped if gzipped else asset.body, media_type=asset.media_type, headers=headers)
