"""Two consumers in one Redis group, each with its own PostgreSQL store on one schema (two
server instances): every message counts once, whichever instance took it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from qortex_mcp.ingest import ConsumerOptions
from qortex_mcp.ingest.publish import publish_feedback_redis
from qortex_mcp.ingest.redis import RedisFeedbackConsumer, dead_stream
from qortex_mcp.learning import LearnerRegistry, SelectionSigner
from tests.conftest import PG_DSN, PG_UNAVAILABLE
from tests.ingest.support import bare, expected_counts, stored_counts, unique
from tests.pg import drop_schema, new_schema_name

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]


async def test_two_instances_on_one_postgres_schema_count_each_message_once(
    redis_client: Any,
) -> None:
    if PG_UNAVAILABLE:
        pytest.skip(f"PostgreSQL unavailable: {PG_UNAVAILABLE}")
    from qortex_mcp.learning.postgres import PostgresLearningStore

    stream, schema = unique("pg"), new_schema_name(PG_DSN)
    signer = SelectionSigner.random()
    registries = [LearnerRegistry(PostgresLearningStore(PG_DSN, schema=schema), signer)
                  for _ in range(2)]
    try:
        for r in registries:
            await r.open()
        messages = [bare("pg", f"a{i % 7}", float(i % 2), f"k{i}") for i in range(3000)]
        for m in messages + messages[::5]:  # a fifth published twice
            await publish_feedback_redis(redis_client, stream, m)
        stop = asyncio.Event()
        consumers = [RedisFeedbackConsumer(r, redis_client, stream, "g", ConsumerOptions(
            consumer=f"c{i}", batch_size=64, create_learners=True))
            for i, r in enumerate(registries)]
        tasks = [asyncio.create_task(c.run(stop)) for c in consumers]

        async def settled() -> bool:
            return (await stored_counts(registries[0], "pg")) == expected_counts(messages)

        async with asyncio.timeout(120):
            while not await settled():  # noqa: ASYNC110 - state lives in PostgreSQL
                await asyncio.sleep(0.05)
        stop.set()
        stats = [await t for t in tasks]
        assert all(s.read > 0 for s in stats), "one instance took everything: test proves less"
        assert sum(s.applied for s in stats) == len(messages)
        assert (await (await registries[1].get("pg")).replay()).ok
    finally:
        for r in registries:
            await r.close()
        await drop_schema(PG_DSN, schema)
        await redis_client.delete(stream, dead_stream(stream))
