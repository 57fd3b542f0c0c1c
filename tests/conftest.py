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

PG_DSN_VARIABLE = "QORTEX_TEST_DATABASE_URL"
PG_DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
PG_DSN = os.environ.get(PG_DSN_VARIABLE) or PG_DEFAULT_DSN
_PG_PROBE_TIMEOUT_S = 5.0


def postgres_unavailable(dsn: str) -> str | None:
    """None when ``dsn`` accepts a real connection whose user may create schemas (every
    PostgreSQL test makes its own), else why not. An open port is not enough: a server that
    refuses these credentials or this database must skip the tests, not fail them."""
    try:
        import asyncpg
    except ImportError:
        return "asyncpg is not installed (pip install -e '.[postgres]')"
    import asyncio

    from qortex_mcp.learning.stores.dsn import mask_dsn

    async def probe() -> bool:
        conn = await asyncpg.connect(dsn, timeout=_PG_PROBE_TIMEOUT_S)
        try:
            return bool(await conn.fetchval(
                "SELECT has_database_privilege(current_database(), 'CREATE')"))
        finally:
            await conn.close()

    where = f"{mask_dsn(dsn)} (set {PG_DSN_VARIABLE} to another DSN)"
    try:
        may_create = asyncio.run(asyncio.wait_for(probe(), _PG_PROBE_TIMEOUT_S * 2))
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return f"cannot connect to {where}: {type(exc).__name__}: {exc}"
    if not may_create:
        return f"the user of {where} may not create schemas in its database"
    return None


PG_UNAVAILABLE = postgres_unavailable(PG_DSN)
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
