"""GraphiQL served by the API itself: no CDN, so it works on a network without internet.

The page (``GET /graphql`` with ``Accept: text/html``, rendered by ``GraphQLView.render_graphql_ide``)
references only same-origin URLs: the bundle that ``scripts/build-graphiql`` builds from
``clients/graphiql`` into ``api/static/graphiql/`` (committed, and carried by the wheel), named in its
``manifest.json``. The assets have content-hashed names, so they are cached for good; the page is not.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from html import escape
from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route

STATIC_DIR = Path(__file__).parent / "static" / "graphiql"
ASSET_ROUTE = "graphiql-asset"

_MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
}
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
IMMUTABLE = "public, max-age=31536000, immutable"

# The page loads its script and stylesheet from this origin only. GraphiQL (React) sets inline style
# attributes, and its stylesheet embeds fonts and images as data: URLs.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "font-src 'self' data:",
        "img-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)

_PAGE = """<!doctype html>
<html lang="en">
  <head>
    <meta charset="utf-8">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <title>yibao GraphiQL</title>
    <link rel="icon" href="data:,">
    <link rel="stylesheet" href="{stylesheet}">
    <link rel="license" href="{licenses}">
    <script defer src="{script}"></script>
  </head>
  <body>
    <div id="graphiql">Loading GraphiQL…</div>
    <noscript>GraphiQL needs JavaScript.</noscript>
  </body>
</html>
"""


@dataclass(frozen=True)
class Asset:
    body: bytes
    gzipped: bytes
    media_type: str
    etag: str


@dataclass(frozen=True)
class Bundle:
    script: str
    stylesheet: str
    licenses: str
    assets: Mapping[str, Asset]


class BundleMissing(RuntimeError):
    pass


@functools.cache
def load_bundle(directory: Path = STATIC_DIR) -> Bundle:
    """Reads the built assets once per process (about 2 MB; gzipped once, here, for every response)."""
    try:
        manifest = json.loads((directory / "manifest.json").read_text("utf-8"))
        names = {key: manifest[key] for key in ("script", "stylesheet", "licenses")}
    except (OSError, ValueError, KeyError) as exc:
        raise BundleMissing(
            f"GraphiQL's bundle is missing or broken in {directory} ({exc}): run scripts/build-graphiql, "
            "or set YIBAO_GRAPHIQL=false"
        ) from exc
    assets: dict[str, Asset] = {}
    for name in names.values():
        if not isinstance(name, str) or not _SAFE_NAME.fullmatch(name):
            raise BundleMissing(f"GraphiQL's manifest names an unexpected file: {name!r}")
        suffix = Path(name).suffix
        if suffix not in _MEDIA_TYPES:
            raise BundleMissing(f"GraphiQL's manifest names an unexpected file: {name!r}")
        try:
            body = (directory / name).read_bytes()
        except OSError as exc:
            raise BundleMissing(
                f"GraphiQL's bundle is incomplete ({exc}): run scripts/build-graphiql"
            ) from exc
        digest = hashlib.sha256(body).hexdigest()[:16]
        assets[name] = Asset(
            body=body,
            gzipped=gzip.compress(body, compresslevel=9, mtime=0),
            media_type=_MEDIA_TYPES[suffix],
            etag=f'"{digest}"',
        )
    return Bundle(assets=assets, **names)


def _accepts_gzip(accept_encoding: str) -> bool:
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


async def serve_asset(request: Request) -> Response:
    asset = load_bundle().assets.get(request.path_params["name"])
    if asset is None:
        return PlainTextResponse("Not Found", status_code=404)
    gzipped = _accepts_gzip(request.headers.get("accept-encoding", ""))
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


def graphiql_routes() -> list[Route]:
    """The asset route, for create_app to add when GraphiQL is enabled. Loads the bundle now, so that a
    server whose bundle is missing fails at start rather than showing a blank page."""
    load_bundle()
    return [Route("/static/graphiql/{name}", serve_asset, methods=["GET"], name=ASSET_ROUTE)]


def graphiql_page(request: Request) -> HTMLResponse:
    bundle = load_bundle()

    def url(name: str) -> str:
        return escape(request.url_for(ASSET_ROUTE, name=name).path, quote=True)

    html = _PAGE.format(
        script=url(bundle.script), stylesheet=url(bundle.stylesheet), licenses=url(bundle.licenses)
    )
    return HTMLResponse(
        html,
        headers={
            "cache-control": "no-cache",
            "content-security-policy": CONTENT_SECURITY_POLICY,
            "x-content-type-options": "nosniff",
            "referrer-policy": "no-referrer",
        },
    )
