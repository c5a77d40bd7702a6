"""GraphiQL is served from the API itself: its page references only same-origin URLs, and those assets
(the committed bundle in api/static/graphiql) are served with their types and cache headers."""

from __future__ import annotations

import gzip
import json
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from api.app import create_app
from api.graphiql import STATIC_DIR, BundleMissing, load_bundle
from api.settings import Settings
from api.state import AppState

HTML = {"accept": "text/html"}
MANIFEST = json.loads((STATIC_DIR / "manifest.json").read_text())


class _References(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value or "" for name, value in attrs if name in ("src", "href")]


def _references(html: str) -> list[str]:
    parser = _References()
    parser.feed(html)
    return parser.urls


async def test_the_page_loads_only_same_origin_assets(client: httpx.AsyncClient) -> None:
    page = await client.get("/graphql", headers=HTML)
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert "//" not in page.text.replace("<!doctype html>", "")  # no CDN, no scheme-relative URL
    urls = _references(page.text)
    assert urls, page.text
    fetched = []
    for url in urls:
        if url.startswith("data:"):
            continue
        assert url.startswith("/static/graphiql/"), url
        asset = await client.get(url)
        assert asset.status_code == 200, url
        fetched.append(url.rsplit("/", 1)[1])
    assert sorted(fetched) == sorted([MANIFEST["script"], MANIFEST["stylesheet"], MANIFEST["licenses"]])


async def test_the_page_is_revalidated_and_confined_to_its_origin(client: httpx.AsyncClient) -> None:
    page = await client.get("/graphql", headers=HTML)
    assert page.headers["cache-control"] == "no-cache"
    assert page.headers["x-content-type-options"] == "nosniff"
    policy = dict(
        directive.strip().split(" ", 1) for directive in page.headers["content-security-policy"].split(";")
    )
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == "'self'"
    assert policy["connect-src"] == "'self'"


@pytest.mark.parametrize(
    ("key", "media_type"),
    [
        ("script", "text/javascript; charset=utf-8"),
        ("stylesheet", "text/css; charset=utf-8"),
        ("licenses", "text/plain; charset=utf-8"),
    ],
)
async def test_assets_have_their_type_and_are_cached_for_good(
    client: httpx.AsyncClient, key: str, media_type: str
) -> None:
    name = MANIFEST[key]
    response = await client.get(f"/static/graphiql/{name}", headers={"accept-encoding": "identity"})
    assert response.status_code == 200
    assert response.headers["content-type"] == media_type
    assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "content-encoding" not in response.headers
    assert response.content == (STATIC_DIR / name).read_bytes()

    again = await client.get(
        f"/static/graphiql/{name}",
        headers={"accept-encoding": "identity", "if-none-match": response.headers["etag"]},
    )
    assert again.status_code == 304
    assert again.content == b""


async def test_assets_are_gzipped_for_clients_that_accept_it(client: httpx.AsyncClient) -> None:
    name = MANIFEST["script"]
    plain = (STATIC_DIR / name).read_bytes()
    async with client.stream(
        "GET", f"/static/graphiql/{name}", headers={"accept-encoding": "gzip"}
    ) as zipped:
        assert zipped.headers["content-encoding"] == "gzip"
        assert zipped.headers["vary"] == "accept-encoding"
        raw = b"".join([chunk async for chunk in zipped.aiter_raw()])
    assert gzip.decompress(raw) == plain
    assert len(raw) < len(plain) / 2

    refused = await client.get(f"/static/graphiql/{name}", headers={"accept-encoding": "gzip;q=0, identity"})
    assert "content-encoding" not in refused.headers
    assert refused.content == plain


@pytest.mark.parametrize(
    "path",
    [
        "/static/graphiql/manifest.json",
        "/static/graphiql/graphiql.js",
        "/static/graphiql/..%2F..%2Fsettings.py",
        "/static/graphiql/%2E%2E/graphiql.py",
    ],
)
async def test_only_the_bundle_s_assets_are_served(client: httpx.AsyncClient, path: str) -> None:
    assert (await client.get(path)).status_code == 404


async def test_without_graphiql_there_is_no_page_and_no_assets(settings: Settings, state: AppState) -> None:
    app: Starlette = create_app(settings.model_copy(update={"graphiql": False}), state)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://yibao.test") as http:
        page = await http.get("/graphql", headers=HTML)
        assert "graphiql" not in page.text.lower()
        assert (await http.get(f"/static/graphiql/{MANIFEST['script']}")).status_code == 404


def test_a_missing_or_tampered_bundle_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BundleMissing, match="scripts/build-graphiql"):
        load_bundle(tmp_path)
    (tmp_path / "manifest.json").write_text(
        json.dumps({"script": "../../x.js", "stylesheet": "a.css", "licenses": "l.txt"})
    )
    with pytest.raises(BundleMissing, match="unexpected file"):
        load_bundle(tmp_path)


def test_the_committed_manifest_names_files_that_exist() -> None:
    bundle = load_bundle()
    for name in (bundle.script, bundle.stylesheet, bundle.licenses):
        assert (STATIC_DIR / name).is_file()
    assert sorted(path.name for path in STATIC_DIR.iterdir()) == sorted(
        ["manifest.json", bundle.script, bundle.stylesheet, bundle.licenses]
    )
