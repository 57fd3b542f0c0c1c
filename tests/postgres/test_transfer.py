"""Export and import move learning between SQLite and PostgreSQL without losing anything:
SQLite -> PostgreSQL -> SQLite ends where it started, field for field."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("asyncpg")

from qortex_mcp.learning import SqliteLearningStore
from qortex_mcp.learning.transfer import import_jsonl
from tests.learning.test_transfer import history, lines_of, plain, state
from tests.postgres.conftest import MakeStore

pytestmark = pytest.mark.anyio


def half_life(name: str) -> float | None:
    return 3600.0 if name == "decaying" else None


async def test_sqlite_to_postgres_and_back_is_lossless(
    make_pg: MakeStore, tmp_path: Path
) -> None:
    async with SqliteLearningStore(tmp_path / "source.db") as source:
        await history(source)
        await history(source, "other")
        await history(source, "decaying", half_life_s=3600.0)
        exported = await lines_of(source)
        want = await state(source)

    pg = await make_pg()
    into_pg = await import_jsonl(pg, exported, half_life=half_life)
    assert into_pg.ok, into_pg
    assert (into_pg.applied, into_pg.duplicates, into_pg.maintenance) == (12, 0, 6)
    assert await state(pg) == want
    from_pg = await lines_of(pg)
    assert plain(from_pg) == plain(exported)

    async with SqliteLearningStore(tmp_path / "back.db") as back:
        into_sqlite = await import_jsonl(back, from_pg, half_life=half_life)
        assert into_sqlite.ok, into_sqlite
        assert await state(back) == want
        assert plain(await lines_of(back)) == plain(exported)

    again = await import_jsonl(pg, exported, half_life=half_life)
    assert (again.applied, again.duplicates, again.maintenance) == (0, 12, 0)
    assert await state(pg) == want
