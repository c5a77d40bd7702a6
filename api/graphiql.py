"""GraphiQL served by the API itself: no CDN, so it works on a network without internet.

The page (``GET /graphql`` with ``Accept: text/html``, rendered by ``GraphQLView.render_graphql_ide``)
references only same-origin URLs: the bundle that ``scripts/build-graphiql`` builds from
``clients/graphiql`` into ``api/static/graphiql/`` (committed, and carried by the wheel), named in its
``manifest.json``. The assets have content-hashed names, so they are cached for good; the page is not.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from html import escape
from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from api.static_bundle import Asset, BundleMissing, asset_response, read_asset

STATIC_DIR = Path(__file__).parent / "static" / "graphiql"
ASSET_ROUTE = "graphiql-asset"

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
class Bundle:
    script: str
    stylesheet: str
    licenses: str
    assets: Mapping[str, Asset]


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
    assets = {
        name: read_asset(directory, name, owner="GraphiQL's", rebuild="scripts/build-graphiql")
        for name in names.values()
    }
    return Bundle(assets=assets, **names)


async def serve_asset(request: Request) -> Response:
    return asset_response(request, load_bundle().assets)


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
