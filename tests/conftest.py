"""Shared fixtures: an asyncio anyio backend, every store kind, and PostgreSQL discovery."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from qortex_mcp.learning import (
    JsonLearningStore,
    LearningStore,
    MemoryLearningStore,
    SqliteLearningStore,
)

PG_DSN = os.environ.get("QORTEX_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _postgres_reachable() -> str | None:
    """None when PostgreSQL answers, else why not."""
    try:
        import asyncpg  # noqa: F401
    except ImportError:
        return "asyncpg is not installed (pip install -e '.[postgres]')"
    import socket

    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1.0):
            return None
    except OSError as exc:
        return f"no PostgreSQL server on 127.0.0.1:5432 ({exc})"


PG_UNAVAILABLE = _postgres_reachable()
STORE_KINDS = ["memory", "sqlite", "json", "postgres"]


def pytest_report_header(config: pytest.Config) -> str:
    if PG_UNAVAILABLE:
        return f"!!! PostgreSQL tests will be SKIPPED: {PG_UNAVAILABLE} !!!"
    return f"PostgreSQL tests run against {PG_DSN}"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if PG_UNAVAILABLE:
        terminalreporter.write_line(
            f"WARNING: PostgreSQL tests were SKIPPED: {PG_UNAVAILABLE}", red=True, bold=True
        )
        print(f"WARNING: PostgreSQL tests were SKIPPED: {PG_UNAVAILABLE}", file=sys.stderr)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def make_store(kind: str, tmp_path: Path) -> LearningStore:
    """A fresh, initialized store of ``kind`` (PostgreSQL gets a private schema)."""
    if kind == "memory":
        store: LearningStore = MemoryLearningStore()
    elif kind == "sqlite":
        store = SqliteLearningStore(tmp_path / "state.db")
    elif kind == "json":
        store = JsonLearningStore(tmp_path / "state.json")
    elif kind == "postgres":
        if PG_UNAVAILABLE:
            pytest.skip(f"PostgreSQL unavailable: {PG_UNAVAILABLE}")
        from tests.pg import fresh_postgres_store

        store = await fresh_postgres_store(PG_DSN)
    else:
        raise AssertionError(kind)
    await store.initialize()
    return store


@pytest.fixture(params=STORE_KINDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[LearningStore]:
    """Every store kind, fresh per test."""
    s = await make_store(request.param, tmp_path)
    try:
        yield s
    finally:
        await s.close()
