"""A database that does not answer: calls come back within the store's bound with a
retryable error, never hang, and nothing is counted twice when they are retried.
(Restarts of a real server are in test_restart.py.)"""

from __future__ import annotations

import asyncio
import time

import anyio
import pytest

pytest.importorskip("asyncpg")

import asyncpg

from qortex_mcp.errors import StoreUnavailable
from qortex_mcp.learning.postgres import PostgresLearningStore
from qortex_mcp.learning.types import FeedbackRow
from tests.conftest import PG_DSN
from tests.postgres.conftest import MakeStore

pytestmark = pytest.mark.anyio


def row(key: str, reward: float = 1.0) -> FeedbackRow:
    return FeedbackRow(key=key, arm="a", ctx="", ctx_body=None, reward=reward, weight=1.0,
                       outcome=None, at=time.time())


async def test_a_server_that_accepts_but_never_answers_fails_start_up_fast() -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # read nothing, answer nothing

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    store = PostgresLearningStore(f"postgresql://qortex:pw@127.0.0.1:{port}/test",
                                  timeout_s=1.0)
    try:
        with anyio.fail_after(5), pytest.raises(StoreUnavailable):
            await store.initialize()
        assert accepted  # the store did connect, and gave up waiting for an answer
    finally:
        await store.close()
        server.close()
        for writer in accepted:
            writer.close()
        await server.wait_closed()


async def test_a_write_stuck_behind_a_lock_answers_retryable_then_counts_once(
    make_pg: MakeStore, schema: str
) -> None:
    store = await make_pg(timeout_s=1.0)
    await store.ensure_learner("L", "{}")
    blocker = await asyncpg.connect(PG_DSN)
    try:
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute(f'SELECT 1 FROM "{schema}".learners WHERE name = $1 FOR UPDATE',
                              "L")
        with anyio.fail_after(5), pytest.raises(StoreUnavailable) as raised:
            await store.apply("L", [row("k1")], None)
        assert raised.value.retryable
        await tx.rollback()
    finally:
        await blocker.close()
    # The abandoned attempt was rolled back; the retry is the one that counts.
    assert (await store.apply("L", [row("k1")], None)).statuses == ("applied",)
    assert (await store.apply("L", [row("k1")], None)).statuses == ("duplicate",)
    assert [(r.arm, r.n) for r in await store.evidence("L")] == [("a", 1)]
