"""Redis Streams ingestion against the real server: exactly once, dead letters, claims, lag."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from qortex_mcp.errors import StoreBusy
from qortex_mcp.ingest import ConsumerOptions
from qortex_mcp.ingest.publish import publish_feedback_redis
from qortex_mcp.ingest.redis import RedisFeedbackConsumer, dead_stream, redis_lag
from qortex_mcp.learning import LearnerRegistry, MemoryLearningStore, SelectionSigner
from qortex_mcp.learning.types import ApplyResult
from tests.ingest.support import bare, expected_counts, registry_at, stored_counts, unique
from tests.postgres.support import eventually

pytestmark = pytest.mark.anyio


@pytest.fixture
async def stream(redis_client: Any) -> Any:
    name = unique("redis")
    yield name
    await redis_client.delete(name, dead_stream(name))


def options(**kw: Any) -> ConsumerOptions:
    return ConsumerOptions(**{"once": True, "consumer": "c1", "block_ms": 50, **kw})


async def drain(registry: LearnerRegistry, client: Any, stream: str, **kw: Any) -> Any:
    return await RedisFeedbackConsumer(registry, client, stream, "g", options(**kw)).run()


async def dead_letters(client: Any, stream: str) -> list[dict[bytes, bytes]]:
    return [fields for _, fields in await client.xrange(dead_stream(stream))]


async def test_each_feedback_counts_once_despite_duplicates_and_redelivery(
    redis_client: Any, stream: str, tmp_path: Path,
) -> None:
    async with registry_at(tmp_path) as registry:
        learner = await registry.get("ads")
        sels = [await learner.select(["a", "b", "c"], k=1) for _ in range(30)]
        messages: list[dict[str, Any]] = []
        for i, sel in enumerate(sels):
            messages.append({"learner": "ads", "selection_id": sel.selection_id,
                             "outcomes": {sel.selected[0].id: float(i % 2)}})
        messages += [bare("ads", "abc"[i % 3], 1.0, f"k{i}") for i in range(90)]
        published = messages + messages[::3]  # a third published twice, on purpose
        for m in published:
            await publish_feedback_redis(redis_client, stream, m)
        stats = await drain(registry, redis_client, stream, batch_size=17)
        assert stats.read == len(published)
        assert stats.dead == 0
        assert stats.applied == len(messages)
        # The same entries delivered again (a crash between COMMIT and XACK) change nothing.
        await redis_client.xgroup_setid(stream, "g", "0")
        again = await drain(registry, redis_client, stream, consumer="c2")
        assert again.read == len(published)
        assert again.applied == 0
        assert await stored_counts(registry, "ads") == expected_counts(messages)
        assert (await learner.replay()).ok
        lag = await redis_lag(redis_client, stream, "g")
        assert (lag.pending, lag.lag, lag.oldest_pending_age_s) == (0, 0, None)


async def test_a_bare_message_without_a_key_is_keyed_by_its_entry_id(
    redis_client: Any, stream: str, tmp_path: Path,
) -> None:
    async with registry_at(tmp_path) as registry:
        await registry.get("ads")
        for _ in range(5):
            await redis_client.xadd(stream, {"feedback": json.dumps(
                {"learner": "ads", "arm_id": "x", "outcome": "accepted"})})
        assert (await drain(registry, redis_client, stream)).applied == 5
        await redis_client.xgroup_setid(stream, "g", "0")
        assert (await drain(registry, redis_client, stream)).applied == 0
        assert (await stored_counts(registry, "ads"))["x"] == 5


POISON: list[tuple[bytes | None, str]] = [
    (b"{not json", "INVALID_ARGUMENT"),
    (json.dumps({"learner": 7, "arm_id": "a", "outcome": 1}).encode(), "INVALID_ARGUMENT"),
    (json.dumps({"learner": "p", "arm_id": "a", "outcome": 1.5}).encode(), "INVALID_REWARD"),
    (json.dumps({"learner": "p", "arm_id": "a", "outcome": True}).encode(), "INVALID_REWARD"),
    (json.dumps({"learner": "p", "arm_id": "a", "outcome": "Accepted"}).encode(),
     "INVALID_OUTCOME"),
    (json.dumps({"learner": "p", "arm_id": "a", "outcome": 1, "x": 1}).encode(),
     "INVALID_ARGUMENT"),
    (json.dumps({"learner": "p", "selection_id": "v1.forged.sig", "outcomes": {"a": 1}})
     .encode(), "INVALID_SELECTION"),
    (json.dumps({"learner": "nobody", "arm_id": "a", "outcome": 1}).encode(),
     "UNKNOWN_LEARNER"),
    (json.dumps({"learner": "p", "arm_id": "a", "outcome": 1,
                 "idempotency_key": "k" * 70_000}).encode(), "LIMIT_EXCEEDED"),
    (json.dumps(["a list"]).encode(), "INVALID_ARGUMENT"),
    (None, "INVALID_ARGUMENT"),  # an entry without the feedback field
]


async def test_poison_messages_are_dead_lettered_with_their_codes_and_change_nothing(
    redis_client: Any, stream: str, tmp_path: Path,
) -> None:
    async with registry_at(tmp_path) as registry:
        learner = await registry.get("p")
        sel = await learner.select(["a", "b"], k=1)
        good = bare("p", "a", 1.0, "good")
        await publish_feedback_redis(redis_client, stream, good)
        await drain(registry, redis_client, stream)
        before = await registry.store.evidence("p")
        chosen = sel.selected[0].id
        other = "b" if chosen == "a" else "a"
        poison = [*POISON,
                  (json.dumps({"learner": "p", "selection_id": sel.selection_id,
                               "outcomes": {other: 1}}).encode(), "ARM_NOT_CHOSEN")]
        for body, _ in poison:
            await redis_client.xadd(stream, {"feedback": body} if body is not None
                                    else {"other": b"1"})
        stats = await drain(registry, redis_client, stream)
        assert stats.dead == len(poison)
        codes = [d[b"code"].decode() for d in await dead_letters(redis_client, stream)]
        assert codes == [code for _, code in poison]
        assert await registry.store.evidence("p") == before
        assert (await redis_lag(redis_client, stream, "g")).pending == 0


async def test_a_conflicting_answer_is_dead_lettered_and_the_first_answer_stands(
    redis_client: Any, stream: str, tmp_path: Path,
) -> None:
    async with registry_at(tmp_path) as registry:
        sel = await (await registry.get("c")).select(["a"], k=1)
        first = {"learner": "c", "selection_id": sel.selection_id, "outcomes": {"a": 1.0}}
        second = {**first, "outcomes": {"a": 0.0}}
        for m in (first, second):
            await publish_feedback_redis(redis_client, stream, m)
        stats = await drain(registry, redis_client, stream)
        assert (stats.applied, stats.dead) == (1, 1)
        (dead,) = await dead_letters(redis_client, stream)
        assert dead[b"code"] == b"SELECTION_CONFLICT"
        rows = await registry.store.evidence("c")
        assert [(r.s, r.f) for r in rows] == [(1.0, 0.0)]


class BusyStore(MemoryLearningStore):
    """A real memory store whose writes fail as a busy database would, ``failures`` times."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def apply(self, learner: str, rows: Any, half_life_s: float | None) -> ApplyResult:
        if self.failures > 0:
            self.failures -= 1
            raise StoreBusy("the database is locked (injected)")
        return await super().apply(learner, rows, half_life_s)

    async def apply_many(self, learner: str, requests: Any,
                         half_life_s: float | None) -> list[ApplyResult]:
        return [await self.apply(learner, rows, half_life_s) for rows in requests]


async def busy_registry(failures: int) -> LearnerRegistry:
    registry = LearnerRegistry(BusyStore(failures), SelectionSigner.random())
    await registry.open()
    await registry.get("b")
    return registry


async def test_a_retryable_store_error_leaves_the_message_pending_until_it_applies(
    redis_client: Any, stream: str,
) -> None:
    registry = await busy_registry(failures=2)
    try:
        await publish_feedback_redis(redis_client, stream, bare("b", "a", 1.0, "k"))
        consumer = RedisFeedbackConsumer(registry, redis_client, stream, "g", options())
        stop = asyncio.Event()
        task = asyncio.create_task(consumer.run(stop))
        await eventually(lambda: consumer.stats.done >= 1, within_s=30)
        stop.set()
        stats = await task
        assert (stats.retried, stats.done, stats.dead) == (2, 1, 0)
        assert (await stored_counts(registry, "b"))["a"] == 1
    finally:
        await registry.close()


async def test_a_message_failing_retryably_max_deliveries_times_is_dead_lettered(
    redis_client: Any, stream: str,
) -> None:
    registry = await busy_registry(failures=10**6)
    try:
        await publish_feedback_redis(redis_client, stream, bare("b", "a", 1.0, "k"))
        consumer = RedisFeedbackConsumer(registry, redis_client, stream, "g",
                                         options(max_deliveries=3, once=False))
        stop = asyncio.Event()
        task = asyncio.create_task(consumer.run(stop))
        await eventually(lambda: consumer.stats.dead >= 1, within_s=30)
        stop.set()
        await task
        (dead,) = await dead_letters(redis_client, stream)
        assert (dead[b"code"], dead[b"deliveries"]) == (b"STORE_BUSY", b"3")
        assert (await redis_lag(redis_client, stream, "g")).pending == 0
    finally:
        await registry.close()


async def test_a_dead_consumers_pending_messages_are_claimed_after_the_idle_time_only(
    redis_client: Any, stream: str, tmp_path: Path,
) -> None:
    async with registry_at(tmp_path) as registry:
        await registry.get("d")
        messages = [bare("d", f"a{i % 4}", 1.0, f"k{i}") for i in range(200)]
        for m in messages:
            await publish_feedback_redis(redis_client, stream, m)
        await redis_client.xgroup_create(stream, "g", id="0")
        # Consumer "dead" reads everything and dies before applying any of it.
        await redis_client.xreadgroup("g", "dead", {stream: ">"}, count=1000)
        # A sibling starting now must not take work that is not idle long enough...
        early = await drain(registry, redis_client, stream, consumer="live",
                            claim_idle_ms=60_000)
        assert early.read == 0
        assert (await redis_lag(redis_client, stream, "g")).pending == len(messages)
        # ...and takes all of it, once, after the idle time.
        consumer = RedisFeedbackConsumer(registry, redis_client, stream, "g", options(
            consumer="live", claim_idle_ms=200, once=False))
        stop = asyncio.Event()
        task = asyncio.create_task(consumer.run(stop))
        await eventually(lambda: consumer.stats.done >= len(messages), within_s=30)
        stop.set()
        stats = await task
        assert stats.done == len(messages)
        assert stats.applied == len(messages)
        assert await stored_counts(registry, "d") == expected_counts(messages)
        assert (await redis_lag(redis_client, stream, "g")).pending == 0


async def test_lag_reports_pending_and_undelivered_messages(
    redis_client: Any, stream: str, tmp_path: Path,
) -> None:
    async with registry_at(tmp_path) as registry:
        await registry.get("l")
        for i in range(10):
            await publish_feedback_redis(redis_client, stream, bare("l", "a", 1.0, f"k{i}"))
        await redis_client.xgroup_create(stream, "g", id="0")
        await redis_client.xreadgroup("g", "x", {stream: ">"}, count=4)
        lag = await redis_lag(redis_client, stream, "g")
        assert (lag.pending, lag.lag) == (4, 6)
        assert lag.oldest_pending_age_s is not None
        assert lag.oldest_pending_age_s >= 0




async def test_a_next_tool_suggestions_feedback_teaches_the_sequence_once(
    redis_client: Any, stream: str, tmp_path: Path,
) -> None:
    """A stream message quoting a ``qortex_next_tool`` id goes to the next-tool model (the
    tool used is the data), and counts once however often it is delivered."""
    from qortex_mcp.learning import NextToolModel

    async with registry_at(tmp_path) as registry:
        model = NextToolModel.of(await registry.get("tools"))
        tools = ["read_file", "run_tests", "edit_file"]
        hint = model.suggest(["read_file", "run_tests"], tools, k=1)
        message = {"learner": "tools", "selection_id": hint.selection_id,
                   "outcomes": {"edit_file": "accepted"}}
        for _ in range(3):  # published three times, on purpose
            await publish_feedback_redis(redis_client, stream, message)
        stats = await drain(registry, redis_client, stream)
        assert (stats.read, stats.dead) == (3, 0)
        assert model.counts(["read_file", "run_tests"]) == {"edit_file": 1.0}
        assert await dead_letters(redis_client, stream) == []
