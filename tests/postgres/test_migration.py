"""A PostgreSQL schema written by the previous release (schema 1, qortex-mcp 0.1.0, dumped
into ``tests/fixtures/v1/postgres.sql``) migrates to schema 2 when a store opens it: in one
transaction, under the schema lock, with a copy of its tables in a backup schema."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from qortex_mcp.errors import StoreError
from qortex_mcp.learning.postgres import PostgresLearningStore, startup
from qortex_mcp.learning.stores import SCHEMA_VERSION
from tests.conftest import PG_DSN
from tests.learning.test_migration import EXPECTED, assert_learned_what_01_reported
from tests.pg import drop_schema

pytestmark = pytest.mark.anyio

DUMP = Path(__file__).parent.parent / "fixtures" / "v1" / "postgres.sql"
DUMPED_AS = "qortex_v1_fixture"


@pytest.fixture
async def v1_schema(schema: str) -> AsyncIterator[str]:
    """The 0.1 dump restored into this test's schema (and its backup dropped after)."""
    script = "\n".join(line for line in DUMP.read_text().splitlines()
                       if not line.startswith("\\"))  # psql meta-commands
    conn = await asyncpg.connect(PG_DSN)
    try:
        await conn.execute(script.replace(DUMPED_AS, schema))
    finally:
        await conn.close()
    yield schema
    for n in ("", "2"):
        await drop_schema(PG_DSN, f"{schema}_schema1_bak{n}")


async def fetch(query: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(PG_DSN)
    try:
        return list(await conn.fetch(query))
    finally:
        await conn.close()


async def version_of(schema: str) -> str:
    rows = await fetch(f"SELECT value FROM \"{schema}\".meta WHERE key = 'schema_version'")
    return str(rows[0][0])


async def test_a_schema_of_01_migrates_with_a_backup_schema(v1_schema: str) -> None:
    assert await version_of(v1_schema) == "1"
    events = (await fetch(f'SELECT count(*) FROM "{v1_schema}".events'))[0][0]
    async with PostgresLearningStore(PG_DSN, schema=v1_schema) as store:
        assert (await store.info()).schema_version == SCHEMA_VERSION == 2
        await assert_learned_what_01_reported(store, EXPECTED["postgres"])
    assert await version_of(v1_schema) == "2"
    backup = f"{v1_schema}_schema1_bak"
    assert await version_of(backup) == "1"
    assert (await fetch(f'SELECT count(*) FROM "{backup}".events'))[0][0] == events
    # Opened again: nothing to migrate, no second backup.
    async with PostgresLearningStore(PG_DSN, schema=v1_schema) as store:
        assert (await store.info()).schema_version == 2
    assert not await fetch(
        f"SELECT 1 FROM pg_namespace WHERE nspname = '{v1_schema}_schema1_bak2'")


async def test_a_failed_migration_changes_nothing(
    v1_schema: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The backup's last table does not exist: the copies made before it, the backup
    # schema and the migration all roll back together.
    monkeypatch.setattr(startup, "_BACKED_UP", (*startup._BACKED_UP, "missing"))
    with pytest.raises(StoreError):
        await PostgresLearningStore(PG_DSN, schema=v1_schema).initialize()
    assert await version_of(v1_schema) == "1"
    assert not await fetch(
        f"SELECT 1 FROM pg_namespace WHERE nspname = '{v1_schema}_schema1_bak'")
    columns = {r[0] for r in await fetch(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = "
        f"'{v1_schema}' AND table_name = 'events'")}
    assert "propensity" not in columns
    monkeypatch.undo()
    async with PostgresLearningStore(PG_DSN, schema=v1_schema) as store:
        await assert_learned_what_01_reported(store, EXPECTED["postgres"])


async def test_instances_starting_together_migrate_once(v1_schema: str) -> None:
    stores = [PostgresLearningStore(PG_DSN, schema=v1_schema) for _ in range(3)]
    try:
        await asyncio.gather(*(s.initialize() for s in stores))
        assert await version_of(v1_schema) == "2"
        backups = await fetch(f"SELECT nspname FROM pg_namespace WHERE nspname LIKE "
                              f"'{v1_schema}_schema1_bak%'")
        assert [r[0] for r in backups] == [f"{v1_schema}_schema1_bak"]  # one migration
        await assert_learned_what_01_reported(stores[1], EXPECTED["postgres"])
    finally:
        for s in stores:
            await s.close()
