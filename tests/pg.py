"""PostgreSQL test helpers: each test gets its own schema in the ``test`` database, and the
schema is dropped when the test is done, so the database does not fill up with them.

A store made by ``fresh_postgres_store`` drops its schema when it closes; a test that never
closes its store leaves the schema to the sweep at interpreter exit, which drops every
schema this process handed out and has not dropped yet (never another process's).
"""

from __future__ import annotations

import asyncio
import atexit
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from qortex_mcp.learning.stores.base import LearningStore

_PREFIX = "qx_test_"
_outstanding: dict[str, str] = {}
"""Schema -> DSN, for every schema handed out and not dropped yet."""


def new_schema_name(dsn: str) -> str:
    schema = f"{_PREFIX}{secrets.token_hex(6)}"
    _outstanding[schema] = dsn
    return schema


async def drop_schema(dsn: str, schema: str) -> None:
    import asyncpg

    assert schema.startswith(_PREFIX), schema  # never drop anything a test did not make
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        try:
            # Bounded: a session still holding a lock in the schema would make DROP wait
            # for good; name it instead, so the test that leaked it fails clearly.
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE', timeout=30)
        except TimeoutError:
            others = await conn.fetch(
                "SELECT pid, state, left(query, 120) AS query FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()")
            raise AssertionError(f"dropping {schema} waited 30 s on a lock; other sessions: "
                                 f"{[dict(r) for r in others]}") from None
    finally:
        await conn.close(timeout=10)
    _outstanding.pop(schema, None)


@asynccontextmanager
async def private_schema(dsn: str) -> AsyncIterator[str]:
    """A fresh schema name, dropped (with everything in it) on exit."""
    schema = new_schema_name(dsn)
    try:
        yield schema
    finally:
        await drop_schema(dsn, schema)


async def fresh_postgres_store(dsn: str, **options: Any) -> LearningStore:
    """A store on a private schema that is dropped when the store closes."""
    from qortex_mcp.learning.postgres import PostgresLearningStore

    class SchemaDroppingStore(PostgresLearningStore):
        _dropped = False

        async def close(self) -> None:
            await super().close()
            if not self._dropped:
                self._dropped = True
                await drop_schema(dsn, self.schema)

    return SchemaDroppingStore(dsn, schema=new_schema_name(dsn), **options)


@atexit.register
def _sweep() -> None:
    if not _outstanding:
        return

    async def sweep() -> None:
        for schema, dsn in list(_outstanding.items()):
            await drop_schema(dsn, schema)

    try:
        asyncio.run(asyncio.wait_for(sweep(), 30))
    except (OSError, TimeoutError) as exc:  # the server is gone: nothing more to do here
        print(f"tests/pg.py: could not drop test schemas {sorted(_outstanding)}: {exc!r}")
