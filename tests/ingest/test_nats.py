"""NATS JetStream ingestion against the real server: exactly once, dead letters, retries."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from qortex_mcp.ingest import ConsumerOptions
from qortex_mcp.ingest.nats import NatsFeedbackConsumer, dead_subject, ensure_stream, nats_lag
from qortex_mcp.ingest.publish import publish_feedback_nats
from tests.ingest.support import bare, expected_counts, registry_at, stored_counts, unique
from tests.ingest.test_redis import POISON, busy_registry
from tests.postgres.support import eventually

pytestmark = pytest.mark.anyio


@pytest.fixture
async def subject(nats_client: Any) -> Any:
    name = unique("nats").replace("-", "_")
    js = nats_client.jetstream()
    stream = await ensure_stream(js, name)
    yield name
    await js.delete_stream(stream)


def options(**kw: Any) -> ConsumerOptions:
    return ConsumerOptions(**{"once": True, "block_ms": 100, **kw})


async def drain(registry: Any, nc: Any, subject: str, durable: str = "d", **kw: Any) -> Any:
    return await NatsFeedbackConsumer(registry, nc, subject, durable, options(**kw)).run()


async def dead_letters(nc: Any, subject: str) -> list[Any]:
    js = nc.jetstream()
    sub = await js.pull_subscribe(dead_subject(subject), durable="dead-reader")
    out: list[Any] = []
    try:
        while True:
            try:
                msgs = await sub.fetch(100, timeout=0.5)
            except TimeoutError:
                return out
            for m in msgs:
                out.append(m)
                await m.ack()
    finally:
        await sub.unsubscribe()


async def test_each_feedback_counts_once_despite_duplicates_and_redelivery(
    nats_client: Any, subject: str, tmp_path: Path,
) -> None:
    js = nats_client.jetstream()
    async with registry_at(tmp_path) as registry:
        learner = await registry.get("ads")
        messages: list[dict[str, Any]] = []
        for i in range(20):
            sel = await learner.select(["a", "b", "c"], k=1)
            messages.append({"learner": "ads", "selection_id": sel.selection_id,
                             "outcomes": {sel.selected[0].id: float(i % 2)}})
        messages += [bare("ads", "abc"[i % 3], 1.0, f"k{i}") for i in range(60)]
        for m in messages + messages[::3]:  # a third published twice, on purpose
            await publish_feedback_nats(js, subject, m)
        stats = await drain(registry, nats_client, subject, batch_size=13)
        assert stats.read == len(messages) + len(messages[::3])
        assert stats.applied == len(messages)
        assert stats.dead == 0
        # A second durable reads the whole stream again: every message is a duplicate.
        again = await drain(registry, nats_client, subject, durable="d2")
        assert again.applied == 0
        assert await stored_counts(registry, "ads") == expected_counts(messages)
        assert (await learner.replay()).ok
        lag = await nats_lag(js, subject, "d")
        assert (lag.pending, lag.lag) == (0, 0)


async def test_a_bare_message_without_a_key_is_keyed_by_its_stream_sequence(
    nats_client: Any, subject: str, tmp_path: Path,
) -> None:
    js = nats_client.jetstream()
    async with registry_at(tmp_path) as registry:
        await registry.get("ads")
        for _ in range(4):
            await js.publish(subject, json.dumps(
                {"learner": "ads", "arm_id": "x", "outcome": "accepted"}).encode())
        assert (await drain(registry, nats_client, subject)).applied == 4
        assert (await drain(registry, nats_client, subject, durable="d2")).applied == 0
        assert (await stored_counts(registry, "ads"))["x"] == 4


async def test_publish_dedup_by_message_id_is_defence_in_depth(
    nats_client: Any, subject: str,
) -> None:
    js = nats_client.jetstream()
    first = await publish_feedback_nats(js, subject, bare("p", "a", 1.0, "k"), msg_id="m1")
    again = await publish_feedback_nats(js, subject, bare("p", "a", 1.0, "k"), msg_id="m1")
    assert first == again


async def test_poison_messages_are_dead_lettered_with_their_codes_and_change_nothing(
    nats_client: Any, subject: str, tmp_path: Path,
) -> None:
    js = nats_client.jetstream()
    async with registry_at(tmp_path) as registry:
        await registry.get("p")
        await publish_feedback_nats(js, subject, bare("p", "a", 1.0, "good"))
        await drain(registry, nats_client, subject)
        before = await registry.store.evidence("p")
        poison = [(body, code) for body, code in POISON if body is not None]
        for body, _ in poison:
            await js.publish(subject, body)
        stats = await drain(registry, nats_client, subject)
        assert stats.dead == len(poison)
        dead = await dead_letters(nats_client, subject)
        assert [m.headers["Qortex-Error-Code"] for m in dead] == [c for _, c in poison]
        assert await registry.store.evidence("p") == before
        assert (await nats_lag(js, subject, "d")).pending == 0


async def test_retryable_failures_are_redelivered_then_dead_lettered_after_max_deliveries(
    nats_client: Any, subject: str,
) -> None:
    js = nats_client.jetstream()
    registry = await busy_registry(failures=2)
    try:
        await publish_feedback_nats(js, subject, bare("b", "a", 1.0, "k"))
        consumer = NatsFeedbackConsumer(registry, nats_client, subject, "d",
                                        options(once=False))
        stop = asyncio.Event()
        task = asyncio.create_task(consumer.run(stop))
        await eventually(lambda: consumer.stats.done >= 1, within_s=30)
        stop.set()
        stats = await task
        assert (stats.retried, stats.done, stats.dead) == (2, 1, 0)
        assert (await stored_counts(registry, "b"))["a"] == 1
    finally:
        await registry.close()
    registry = await busy_registry(failures=10**6)
    try:
        await publish_feedback_nats(js, subject, bare("b", "a", 1.0, "k2"))
        consumer = NatsFeedbackConsumer(registry, nats_client, subject, "d",
                                        options(once=False, max_deliveries=3))
        stop = asyncio.Event()
        task = asyncio.create_task(consumer.run(stop))
        await eventually(lambda: consumer.stats.dead >= 1, within_s=30)
        stop.set()
        await task
        (dead,) = await dead_letters(nats_client, subject)
        assert dead.headers["Qortex-Error-Code"] == "STORE_BUSY"
        assert "after 3 deliveries" in dead.headers["Qortex-Error-Message"]
    finally:
        await registry.close()
