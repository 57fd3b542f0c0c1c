"""Opening a PostgreSQL store: the pool, the schema (created once even when several
instances start together), the durability check, and the LISTEN connection's source."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from typing import Any, Final

import asyncpg

from qortex_mcp.errors import CorruptState, SchemaTooNew, StoreError
from qortex_mcp.learning.postgres.errors import DRIVER_ERRORS, translate
from qortex_mcp.learning.postgres.sql import Statements
from qortex_mcp.learning.stores.base import SCHEMA_VERSION
from qortex_mcp.logging import get_logger

__all__ = ["APP_NAME", "close_pool", "durability", "listen_source", "open_pool",
           "prepare_schema"]

log = get_logger(__name__)

APP_NAME: Final = "qortex-mcp"
"""``application_name`` of the store's own connections (visible in pg_stat_activity)."""
DURABLE_COMMIT: Final = frozenset({"on", "remote_apply", "remote_write", "local"})
"""``synchronous_commit`` values that flush the commit to local disk before answering."""


async def open_pool(dsn: str, min_size: int, max_size: int, timeout_s: float,
                    connect_timeout_s: float) -> Any:
    """Raises: StoreError (StoreUnavailable when the server cannot be reached)."""
    try:
        async with asyncio.timeout(timeout_s):
            return await asyncpg.create_pool(
                dsn, min_size=min_size, max_size=max_size, timeout=connect_timeout_s,
                command_timeout=timeout_s, server_settings={"application_name": APP_NAME},
            )
    except DRIVER_ERRORS as exc:
        raise translate(exc, "connecting", timeout_s) from exc
    except ValueError as exc:  # asyncpg parses the DSN while connecting; never echo it
        raise StoreError("DATABASE_URL is not a valid PostgreSQL DSN") from exc


async def close_pool(pool: Any, timeout_s: float) -> None:
    try:
        async with asyncio.timeout(timeout_s):
            await pool.close()
    except DRIVER_ERRORS as exc:
        log.warning("postgres_pool_close_failed", error=type(exc).__name__)
        pool.terminate()


async def prepare_schema(conn: Any, sql: Statements, schema: str) -> bool:
    """Create the schema if it is missing, check its version; True when created here.

    Several instances may start at once on an empty database: the transaction-level
    advisory lock lets one create everything while the others wait, then see it.

    Raises:
        SchemaTooNew: written by a newer qortex-mcp. CorruptState: no valid version.
    """
    key = int.from_bytes(hashlib.sha256(f"qortex-mcp:{schema}".encode()).digest()[:8],
                         "big", signed=True)
    created = False
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", key)
        if not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f'"{schema}".meta'):
            await conn.execute(sql.ddl)
            created = True
            log.info("postgres_schema_created", schema=schema, version=SCHEMA_VERSION)
        found = await conn.fetchval(sql.schema_version)
        if found is None or not found.isdigit():
            raise CorruptState(f"PostgreSQL schema {schema!r} has no valid schema version; it "
                               "was not written by qortex-mcp")
        if int(found) > SCHEMA_VERSION:
            raise SchemaTooNew(
                f"PostgreSQL schema {schema!r} has schema version {found}, newer than this "
                f"qortex-mcp understands ({SCHEMA_VERSION}); upgrade qortex-mcp"
            )
        if int(found) < SCHEMA_VERSION:
            backup = await _backup_schema(conn, schema, int(found))
            await conn.execute(sql.ddl)  # the new tables (everything else exists)
            await conn.execute(sql.migrate_1_2)
            log.warning("store_migrated", store="postgres", schema=schema,
                        from_version=int(found), to_version=SCHEMA_VERSION, backup=backup)
        # Checked first: ALTER TABLE would lock the table even when the column exists.
        if not await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = $1 "
            "AND table_name = 'learners' AND column_name = 'answered')", schema,
        ):
            await conn.execute(sql.add_answered)
    return created


_BACKED_UP: Final = ("meta", "learners", "evidence", "arms", "contexts", "events")
"""The tables of schema 1, copied before it migrates."""


async def _backup_schema(conn: Any, schema: str, version: int) -> str:
    """Copy the schema's tables into a new schema ``<schema>_schema<N>_bak`` (a numbered
    one when that exists), inside the migration's transaction: the copy and the migration
    commit together or not at all. Returns the backup schema's name."""
    base = f"{schema}_schema{version}_bak"
    name, n = base, 1
    while await conn.fetchval("SELECT to_regnamespace($1) IS NOT NULL", name):
        n += 1
        name = f"{base}{n}"
    await conn.execute(f'CREATE SCHEMA "{name}"')
    for table in _BACKED_UP:
        await conn.execute(f'CREATE TABLE "{name}".{table} AS TABLE "{schema}".{table}')
    return name


async def durability(conn: Any, location: str) -> str:
    """Read ``synchronous_commit`` and ``fsync``, say so in the log (a loud warning when
    acknowledged commits could be lost in a crash); returns ``synchronous_commit``."""
    row = await conn.fetchrow(
        "SELECT current_setting('synchronous_commit'), current_setting('fsync')")
    sync, fsync = str(row[0]), str(row[1])
    if sync in DURABLE_COMMIT and fsync == "on":
        log.info("postgres_store_opened", location=location, synchronous_commit=sync,
                 fsync=fsync, schema_version=SCHEMA_VERSION)
    else:
        log.warning("postgres_commits_not_durable", location=location, synchronous_commit=sync,
                    fsync=fsync, consequence="acknowledged feedback can be lost if PostgreSQL "
                    "crashes; set synchronous_commit=on and fsync=on")
    return sync


Connect = Callable[[], Awaitable[Any]]
Release = Callable[[Any], Awaitable[None]]


def listen_source(dsn: str | None, pool: Any, timeout_s: float,
                  connect_timeout_s: float) -> tuple[Connect, Release] | None:
    """How the listener gets its connection: its own (from the DSN), or one held from a
    shared pool (None when that pool has room for only one connection: then polling)."""
    if dsn is not None:
        async def connect() -> Any:
            async with asyncio.timeout(timeout_s):
                return await asyncpg.connect(
                    dsn, timeout=connect_timeout_s, command_timeout=timeout_s,
                    server_settings={"application_name": APP_NAME})

        async def close(conn: Any) -> None:
            if conn.is_closed():
                return
            try:
                await conn.close(timeout=timeout_s)
            except DRIVER_ERRORS:
                conn.terminate()

        return connect, close
    if pool.get_max_size() < 2:
        log.warning("postgres_listen_skipped", reason="the shared pool has one connection; "
                    "other instances' changes are picked up by polling")
        return None

    async def acquire() -> Any:
        return await pool.acquire(timeout=timeout_s)

    async def release(conn: Any) -> None:
        try:
            await pool.release(conn)
        except DRIVER_ERRORS as exc:
            log.warning("postgres_listen_release_failed", error=type(exc).__name__)

    return acquire, release
