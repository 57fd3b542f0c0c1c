"""Starting a PostgreSQL store: schema creation races, versions, durability settings, pools,
configuration and what errors may say."""

from __future__ import annotations

import asyncio
import logging
import socket

import anyio
import pytest

pytest.importorskip("asyncpg")

import asyncpg

from qortex_mcp.config import Settings
from qortex_mcp.errors import (
    ClosedError,
    SchemaTooNew,
    StoreError,
    StoreUnavailable,
)
from qortex_mcp.learning.postgres import PostgresLearningStore
from qortex_mcp.learning.stores import SCHEMA_VERSION
from qortex_mcp.learning.stores.factory import configured_store
from qortex_mcp.learning.types import FeedbackRow
from tests.conftest import PG_DSN
from tests.pg import private_schema
from tests.postgres.conftest import MakeStore

pytestmark = pytest.mark.anyio


def row(key: str, arm: str = "a", reward: float = 1.0) -> FeedbackRow:
    return FeedbackRow(key=key, arm=arm, ctx="", ctx_body=None, reward=reward, weight=1.0,
                       outcome=None, at=1000.0)


async def test_four_instances_starting_together_create_the_schema_exactly_once() -> None:
    for _ in range(10):
        async with private_schema(PG_DSN) as schema:
            stores = [PostgresLearningStore(PG_DSN, schema=schema) for _ in range(4)]
            try:
                with anyio.fail_after(30):
                    await asyncio.gather(*(s.initialize() for s in stores))
                assert sum(s.schema_created for s in stores) == 1
                conn = await asyncpg.connect(PG_DSN)
                try:
                    versions = await conn.fetch(f'SELECT value FROM "{schema}".meta')
                finally:
                    await conn.close()
                assert [r[0] for r in versions] == [str(SCHEMA_VERSION)]
                # every instance works on the one schema
                results = await asyncio.gather(*(s.apply("L", [row(f"k{i}")], None)
                                                 for i, s in enumerate(stores)))
                assert [r.statuses for r in results] == [("applied",)] * 4
            finally:
                for s in stores:
                    await s.close()


async def test_a_schema_newer_than_the_code_refuses_to_start(
    make_pg: MakeStore, schema: str
) -> None:
    await make_pg()
    conn = await asyncpg.connect(PG_DSN)
    try:
        await conn.execute(f"UPDATE \"{schema}\".meta SET value = '99' "
                           "WHERE key = 'schema_version'")
    finally:
        await conn.close()
    newer = PostgresLearningStore(PG_DSN, schema=schema)
    with pytest.raises(SchemaTooNew, match="schema version 99, newer than this qortex-mcp"):
        await newer.initialize()
    await newer.close()


async def test_start_up_says_in_the_log_that_synchronous_commit_is_on(
    make_pg: MakeStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="qortex_mcp")
    store = await make_pg()
    assert store.synchronous_commit == "on"
    opened = [r.getMessage() for r in caplog.records if "postgres_store_opened" in r.getMessage()]
    assert len(opened) == 1
    assert "synchronous_commit='on'" in opened[0]


async def test_start_up_warns_loudly_when_commits_are_not_durable(
    schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    pool = await asyncpg.create_pool(PG_DSN, min_size=1, max_size=3,
                                     server_settings={"synchronous_commit": "off"})
    try:
        store = PostgresLearningStore(pool=pool, schema=schema)
        await store.initialize()
        await store.close()
    finally:
        await pool.close()
    warnings = [r for r in caplog.records if "postgres_commits_not_durable" in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    assert "synchronous_commit='off'" in warnings[0].getMessage()


async def test_a_shared_pool_serves_the_store_and_stays_open_after_it_closes(
    schema: str,
) -> None:
    pool = await asyncpg.create_pool(PG_DSN, min_size=1, max_size=4)
    try:
        store = PostgresLearningStore(pool=pool, schema=schema)
        await store.initialize()
        assert (await store.apply("L", [row("k1")], None)).statuses == ("applied",)
        assert "shared asyncpg pool" in (await store.info()).location
        await store.close()
        assert not pool.is_closing()
        assert await pool.fetchval(f'SELECT count(*) FROM "{schema}".events') == 1
    finally:
        await pool.close()


async def test_calls_after_close_raise_closed(make_pg: MakeStore) -> None:
    store = await make_pg()
    await store.close()
    with pytest.raises(ClosedError):
        await store.apply("L", [row("k1")], None)
    with pytest.raises(ClosedError):
        await store.evidence("L")


async def test_info_masks_the_password() -> None:
    store = PostgresLearningStore("postgresql://qortex:s3cr3t-pw@127.0.0.1:5432/test")
    info = await store.info()
    assert info.kind == "postgres"
    assert "s3cr3t-pw" not in info.location
    assert "qortex:***@127.0.0.1:5432/test" in info.location


async def test_an_unreachable_server_fails_fast_without_leaking_the_password() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = PostgresLearningStore(f"postgresql://qortex:s3cr3t-pw@127.0.0.1:{port}/test")
    with anyio.fail_after(5), pytest.raises(StoreUnavailable) as raised:
        await store.initialize()
    assert raised.value.retryable
    assert "s3cr3t-pw" not in str(raised.value)
    assert str(port) not in str(raised.value)
    await store.close()


async def test_a_malformed_dsn_is_a_store_error_that_does_not_echo_it() -> None:
    store = PostgresLearningStore("postgresql://qortex:s3cr3t-pw@127.0.0.1:notaport/test")
    with pytest.raises(StoreError) as raised:
        await store.initialize()
    assert "s3cr3t-pw" not in str(raised.value)
    await store.close()


def test_a_schema_name_that_is_not_a_plain_identifier_is_refused() -> None:
    for bad in ("Qortex", 'x"; DROP TABLE y; --', "a-b", "", "x" * 49, "1abc"):
        with pytest.raises(ValueError, match="lower-case identifier"):
            PostgresLearningStore(PG_DSN, schema=bad)


def test_exactly_one_of_dsn_and_pool_is_required() -> None:
    with pytest.raises(ValueError, match="dsn or a pool"):
        PostgresLearningStore()


async def test_qortex_store_postgres_with_database_url_opens_a_postgres_store() -> None:
    settings = Settings.from_env({"QORTEX_STORE": "postgres", "DATABASE_URL": PG_DSN,
                                  "QORTEX_STATE_DIR": "/nonexistent/qortex"})
    store = configured_store(settings)
    assert isinstance(store, PostgresLearningStore)
    assert (await store.info()).location.startswith(PG_DSN)
