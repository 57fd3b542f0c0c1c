"""Fixtures: a server over a real SQLite file, with its registry held by the test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from mcp import Client

from qortex_mcp.config import Settings
from qortex_mcp.learning import LearnerRegistry
from qortex_mcp.runtime import open_registry
from qortex_mcp.server import build_server


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # NORMAL: a real SQLite file without an fsync per commit (durability has its own tests)
    return Settings.build(store="sqlite", state_dir=tmp_path / "state", sqlite_synchronous="NORMAL")


@pytest.fixture
async def registry(settings: Settings) -> AsyncIterator[LearnerRegistry]:
    registry = await open_registry(settings)
    try:
        yield registry
    finally:
        await registry.close()


@pytest.fixture
async def client(settings: Settings, registry: LearnerRegistry) -> AsyncIterator[Client]:
    """An in-memory client of a server sharing ``registry`` (so tests can look at the store)."""
    async with Client(build_server(settings, registry=registry)) as client:
        yield client
