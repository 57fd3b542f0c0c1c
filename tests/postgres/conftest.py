"""Fixtures for the PostgreSQL-only tests: a private schema per test, dropped afterwards,
and a factory of stores on it (closed at teardown). Every test here is skipped, loudly
(see tests/conftest.py), only when no server is reachable."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PG_DSN, PG_UNAVAILABLE
from tests.pg import private_schema

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(item.path).parents:
            item.add_marker(pytest.mark.postgres)
            if PG_UNAVAILABLE:
                item.add_marker(pytest.mark.skip(reason=f"PostgreSQL unavailable: "
                                                        f"{PG_UNAVAILABLE}"))


MakeStore = Callable[..., Awaitable[Any]]


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    async with private_schema(PG_DSN) as name:
        yield name


@pytest.fixture
async def make_pg(schema: str) -> AsyncIterator[MakeStore]:
    """``await make_pg()``: an initialized store on this test's schema (one per call)."""
    from qortex_mcp.learning.postgres import PostgresLearningStore

    opened: list[PostgresLearningStore] = []

    async def make(**options: Any) -> PostgresLearningStore:
        store = PostgresLearningStore(options.pop("dsn", PG_DSN), schema=schema, **options)
        opened.append(store)
        await store.initialize()
        return store

    try:
        yield make
    finally:
        for store in opened:
            await store.close()
