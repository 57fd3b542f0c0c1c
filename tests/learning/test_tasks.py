"""``stop_tasks``: a background task that swallows a cancellation still stops, one that
ignores every cancellation is left behind with an error instead of hanging its owner, and
a learner whose loop swallowed the first cancel still closes."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Never

import pytest

from qortex_mcp.learning import Learner, LearnerConfig
from qortex_mcp.learning.stores.memory import MemoryLearningStore
from qortex_mcp.learning.tasks import stop_tasks

pytestmark = pytest.mark.anyio


async def _swallows(times: int, rounds: list[int]) -> None:
    """Loops like a background task whose library ate ``times`` cancellations."""
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            rounds.append(1)
            if len(rounds) > times:
                raise


async def test_a_task_that_swallowed_a_cancel_is_cancelled_again() -> None:
    rounds: list[int] = []
    task = asyncio.create_task(_swallows(2, rounds))
    await asyncio.sleep(0)
    assert await stop_tasks([task], "test", round_s=0.01)
    assert task.cancelled()
    assert len(rounds) == 3


async def test_a_task_that_ignores_every_cancel_is_left_behind_without_hanging(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stop = asyncio.Event()

    async def stubborn() -> None:
        while not stop.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(3600)

    task = asyncio.create_task(stubborn(), name="stubborn")
    await asyncio.sleep(0)
    assert not await stop_tasks([task], "test", round_s=0.01, rounds=3)
    assert not task.done()
    assert "task_left_running" in caplog.text
    assert "stubborn" in caplog.text
    stop.set()
    task.cancel()
    await task


async def test_a_task_that_failed_is_logged_with_its_exception(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def fails() -> None:
        raise RuntimeError("boom in the background")

    task = asyncio.create_task(fails(), name="failing")
    await asyncio.sleep(0)
    assert await stop_tasks([task], "test", round_s=0.01)
    assert "background_task_failed" in caplog.text
    assert "boom in the background" in caplog.text


async def test_a_learner_closes_although_its_flush_loop_swallowed_the_cancel() -> None:
    store = MemoryLearningStore()
    await store.initialize()
    learner = await Learner.create(LearnerConfig(name="swallow"), store, flush_interval_s=0.01)
    eaten: list[int] = []
    flush = learner._flush

    async def flush_that_eats_one_cancel() -> None:
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            if not eaten:  # as a driver racing a timeout might: the loop goes round again
                eaten.append(1)
                return
            raise
        await flush()

    learner._flush = flush_that_eats_one_cancel  # type: ignore[method-assign]
    await asyncio.sleep(0.02)  # the loop is inside the flush now
    async with asyncio.timeout(10) as bound:
        await learner.close()
    assert not bound.expired()  # (the old close swallowed even this bound's cancel)
    assert eaten == [1]
    assert all(t.done() for t in learner._tasks)
    await store.close()


async def test_the_postgres_writer_stops_although_a_commit_never_answers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pytest.importorskip("asyncpg")
    from qortex_mcp.learning.postgres.runner import Runner
    from qortex_mcp.learning.postgres.writer import FeedbackWriter

    class SilentRunner(Runner):
        """A driver that never answers and ate its timeout's cancellation."""

        async def write(self, *args: object, **kwargs: object) -> Never:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(3600)
            await asyncio.sleep(3600)
            raise AssertionError("unreachable: the writer is cancelled first")

    runner = SilentRunner(None, 0.01, "channel", "origin")  # type: ignore[arg-type]
    writer = FeedbackWriter(runner, max_batch=8)
    writer.start()
    submitted = asyncio.create_task(writer.submit("l", [], None))
    await asyncio.sleep(0.05)
    async with asyncio.timeout(30) as bound:
        await writer.stop()
    assert not bound.expired()
    assert "postgres_writer_stuck" in caplog.text
    assert (await asyncio.gather(submitted, return_exceptions=True))[0].__class__.__name__ == \
        "StoreUnavailable"
