"""The mini-program's H5 twin (``/h5/``), served by the API itself with a strict Content-Security-Policy.

The page is a few lines of HTML naming the bundle that ``scripts/build-h5`` builds from
``clients/miniprogram/h5`` into ``api/static/h5/`` (committed, so serving needs no Node): an ES module
entry, the chunks it imports later (the local replica, loaded after the QR shows), one stylesheet, all
listed in ``manifest.json``. The assets have content-hashed names and are cached for good; the page is
not. Everything comes from this origin: the CSP allows no inline script or style, no other host, and
``data:`` images only (the QR codes are SVG images made on the phone or by the server).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from html import escape
from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from api.static_bundle import Asset, BundleMissing, asset_response, read_asset

STATIC_DIR = Path(__file__).parent / "static" / "h5"
ASSET_ROUTE = "h5-asset"

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "connect-src 'self'",  # GraphQL over HTTP and over WebSocket (same host), attachments
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)

_PAGE = """<!doctype html>
<html lang="zh-CN">
  <head>
    <meta charset="utf-8">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <meta name="yibao-base" content="{base}">
    <title>医保服务</title>
    <link rel="icon" href="data:,">
    <link rel="stylesheet" href="{stylesheet}">
    <link rel="license" href="{licenses}">
    <script type="module" src="{script}"></script>{preload}
  </head>
  <body>
    <main id="app"><p class="loading">正在加载…</p></main>
    <noscript>请开启浏览器的 JavaScript 后使用。</noscript>
  </body>
</html>
"""


@dataclass(frozen=True)
class Bundle:
    script: str
    stylesheet: str
    licenses: str
    preload: tuple[str, ...]
    assets: Mapping[str, Asset]


@functools.cache
def load_bundle(directory: Path = STATIC_DIR) -> Bundle:
    """Reads (and gzips) the built assets once per process."""
    try:
        manifest = json.loads((directory / "manifest.json").read_text("utf-8"))
        names = {key: manifest[key] for key in ("script", "stylesheet", "licenses")}
        files = list(manifest["files"])
        preload = tuple(manifest.get("preload", []))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BundleMissing(
            f"the H5 bundle is missing or broken in {directory} ({exc}): run scripts/build-h5"
        ) from exc
    if not set(preload) <= set(files):
        raise BundleMissing(f"the H5 manifest preloads files it does not list: {preload}")
    assets = {
        name: read_asset(directory, name, owner="the H5", rebuild="scripts/build-h5")
        for name in {*names.values(), *files}
    }
    return Bundle(assets=assets, preload=preload, **names)


async def serve_asset(request: Request) -> Response:
    return asset_response(request, load_bundle().assets)


async def h5_page(request: Request) -> HTMLResponse:
    bundle = load_bundle()

    def url(name: str) -> str:
        return escape(request.url_for(ASSET_ROUTE, name=name).path, quote=True)

    base = escape(request.scope.get("root_path", "") or "", quote=True)
    preload = "".join(f'\n    <link rel="modulepreload" href="{url(name)}">' for name in bundle.preload)
    html = _PAGE.format(
        base=base,
        preload=preload,
        script=url(bundle.script),
        stylesheet=url(bundle.stylesheet),
        licenses=url(bundle.licenses),
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


async def _to_slash(request: Request) -> Response:
    return RedirectResponse(request.url_for("h5-page").path, status_code=308)


def h5_routes() -> list[BaseRoute]:
    """The page and its assets. Loads the bundle now, so that a server whose bundle is missing fails
    at start rather than showing a blank page."""
    load_bundle()
    return [
        Route("/h5/", h5_page, methods=["GET"], name="h5-page"),
        Route("/h5", _to_slash, methods=["GET"]),
        Route("/h5/assets/{name}", serve_asset, methods=["GET"], name=ASSET_ROUTE),
    ]
