"""Fixtures of the terminal tests: one real server process on the test database for the module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from api.settings import Settings
from api.state import AppState
from tests.terminal.world import Server


@pytest.fixture(scope="session")
def sync_server(
    settings: Settings, state: AppState, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """uvicorn in its own process, on the session's (migrated, demo-loaded) database."""
    server = Server(settings, tmp_path_factory.mktemp("sync-server"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "clinic"
