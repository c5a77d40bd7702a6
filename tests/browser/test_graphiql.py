"""GraphiQL in a real browser with no internet: every request to a host other than the loopback server
is blocked, and the editor still loads its schema and runs a login and a query."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from api.graphiql import STATIC_DIR
from api.settings import Settings
from tests.browser.harness import assert_stayed_on, require_browser, run_scenario
from tests.conftest import GraphQLClient


async def test_graphiql_runs_a_query_with_every_outside_host_blocked(
    live_server: str, settings: Settings, gql: GraphQLClient, tmp_path: Path
) -> None:
    require_browser()
    screenshot = tmp_path / "graphiql.png"
    report = await asyncio.to_thread(run_scenario, "graphiql.mjs", live_server, str(screenshot))

    assert_stayed_on(report, live_server)
    manifest = json.loads((STATIC_DIR / "manifest.json").read_text())
    loaded = {request["url"] for request in report["requests"]}
    for name in (manifest["script"], manifest["stylesheet"]):
        assert f"{live_server}/static/graphiql/{name}" in loaded
    assert report["title"] == "yibao GraphiQL"
    assert report["introspectionStatus"] == 200
    assert report["initialQuery"].startswith("# yibao GraphiQL")

    login = report["login"]["data"]["login"]
    assert login["expiresIn"] == settings.access_token_ttl_s
    assert login["accessToken"].count(".") == 2
    # The query typed into the editor ran with the token from the Headers editor: the resident's name.
    await gql.login("resident")
    expected = await gql("{ me { name } }")
    assert report["typedQuery"].replace(" ", "") == "{me{name}}"
    assert report["me"] == expected
    assert report["explorerShowsSchema"] is True

    assert screenshot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    print(f"screenshots: {screenshot}, {screenshot.with_name('graphiql-explorer.png')}")
