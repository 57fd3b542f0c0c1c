"""Resource limits of the library: open learners, the memory budget, contexts, feedback rates."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import anyio
import pytest

from qortex_mcp.errors import ClosedError, LimitExceeded, RateLimited
from qortex_mcp.learning import (
    ArmOutcome,
    Learner,
    LearnerConfig,
    LearnerRegistry,
    LearningStore,
    MemoryLearningStore,
    SelectionSigner,
)
from qortex_mcp.learning.limits import ARM_BYTES, FeedbackRateLimiter, MemoryBudget
from qortex_mcp.learning.types import ApplyResult, FeedbackRow

pytestmark = pytest.mark.anyio


class FakeClock:
    """Monotonic seconds that move only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def stored(store: LearningStore) -> tuple[object, ...]:
    """Everything a refused call must leave unchanged."""
    out = []
    for summary in await store.learners():
        out.append((summary.name, summary.selections, summary.feedback,
                    sorted((r.ctx, r.arm, r.s, r.f, r.n) for r in await store.evidence(
                        summary.name)),
                    len(await store.events(summary.name))))
    return tuple(out)


def registry(store: LearningStore, **kwargs: object) -> LearnerRegistry:
    return LearnerRegistry(store, SelectionSigner.random(), **kwargs)  # type: ignore[arg-type]


# --- open learners: least recently used idle ones are closed, never what exists ------------


async def test_past_the_open_cap_idle_learners_are_closed_and_reopen_with_their_state(
        store: LearningStore) -> None:
    async with registry(store, max_open=3, owns_store=False) as reg:
        first = await reg.get("l0")
        sel = await first.select(["a", "b"], k=2)
        await first.observe(ArmOutcome("a", reward=1.0, selection_id=sel.selection_id))
        for i in range(1, 8):  # before: LIMIT_EXCEEDED from the 4th name on, until restart
            await (await reg.get(f"l{i}")).select(["a"])
        assert len(reg.open_learners()) == 3
        assert first.closed  # evicted: flushed, then closed
        summaries = {s.name: s for s in await store.learners()}
        assert summaries["l0"].selections == 1  # its pending selection count was flushed
        again = await reg.get("l0", create=False)  # a stored learner opens again
        assert again is not first
        [post] = await again.posteriors(["a"])
        assert (post.alpha, post.beta, post.pulls, post.selections) == (2.0, 1.0, 1, 1)


async def test_a_thousand_and_one_learners_are_served_with_the_default_cap() -> None:
    store = MemoryLearningStore()
    async with registry(store, owns_store=False) as reg:
        for i in range(1001):
            await (await reg.get(f"user-{i}")).select(["a"])
        assert len(reg.open_learners()) == 1000
        assert (await reg.get("user-0", create=False)).name == "user-0"
    await store.close()


class GatedStore(MemoryLearningStore):
    """Holds every ``apply`` until the test opens the gate (a feedback in flight)."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()

    async def apply(self, learner: str, rows: Sequence[FeedbackRow],
                    half_life_s: float | None) -> ApplyResult:
        self.entered.set()
        await self.gate.wait()
        return await super().apply(learner, rows, half_life_s)


async def test_a_learner_with_a_call_in_flight_is_never_closed() -> None:
    store = GatedStore()
    async with registry(store, max_open=1, owns_store=False) as reg:
        async def feedback() -> None:
            async with reg.use("busy") as lrn:
                await lrn.observe(ArmOutcome("a", reward=1.0))

        async with anyio.create_task_group() as tg:
            tg.start_soon(feedback)
            with anyio.fail_after(5):
                await store.entered.wait()
            before = await stored(store)
            with pytest.raises(LimitExceeded, match="in use"):
                await reg.get("other")  # the only open learner is busy: refused, not closed
            assert await stored(store) == before
            assert not reg.open_learners()[0].closed
            store.gate.set()
        # the call is over: now the idle learner makes room
        await (await reg.get("other")).select(["a"])
        [busy] = [s for s in await store.learners() if s.name == "busy"]
        assert busy.feedback == 1
    await store.close()


async def test_a_learner_got_without_use_may_be_closed_once_idle() -> None:
    store = MemoryLearningStore()
    async with registry(store, max_open=1, owns_store=False) as reg:
        old = await reg.get("a")
        await reg.get("b")
        with pytest.raises(ClosedError):
            await old.select(["x"])
    await store.close()


# --- the memory budget ---------------------------------------------------------------------


async def test_a_select_past_the_memory_budget_is_refused_and_changes_nothing() -> None:
    store = MemoryLearningStore()
    async with registry(store, memory_budget_bytes=200_000, owns_store=False) as reg:
        lrn = await reg.get("big")
        await lrn.select([f"arm-{i}" for i in range(100)])
        before, arms = await stored(store), len(await lrn.posteriors())
        with pytest.raises(LimitExceeded, match="budget") as info:
            await lrn.select([f"new-{i}" for i in range(1000)])
        assert "QORTEX_MEMORY_BUDGET_MB" in info.value.message
        assert await stored(store) == before
        assert len(await lrn.posteriors()) == arms == 100
        assert reg.budget.used_bytes <= 200_000
        await lrn.select([f"arm-{i}" for i in range(100)])  # known arms need nothing more
    await store.close()


async def test_feedback_past_the_memory_budget_is_refused_and_changes_nothing() -> None:
    store = MemoryLearningStore()
    budget = MemoryBudget(limit_bytes=40_000)
    lrn = await Learner.create(LearnerConfig(name="fb"), store, signer=SelectionSigner.random(),
                               budget=budget)
    await lrn.observe(ArmOutcome("a", reward=1.0))
    before = await stored(store)
    with pytest.raises(LimitExceeded, match="budget"):
        await lrn.batch_observe([ArmOutcome(f"n{i}", reward=1.0) for i in range(200)])
    assert await stored(store) == before
    await lrn.close()
    assert budget.used_bytes == 0  # a closed learner gives its share back
    await store.close()


async def test_idle_learners_are_closed_first_when_the_budget_runs_short() -> None:
    store = MemoryLearningStore()
    async with registry(store, memory_budget_bytes=75_000, owns_store=False) as reg:
        idle = await reg.get("idle")
        await idle.select([f"arm-{i:04d}" for i in range(60)])
        busy = await reg.get("busy")
        await busy.select([f"arm-{i:04d}" for i in range(50)])
        assert reg.budget.over(0.9)
        with pytest.raises(LimitExceeded):
            await busy.select([f"arm-{i:04d}" for i in range(50, 100)])
        again = await reg.get("busy")  # the next call makes room
        assert again is busy
        assert idle.closed
        await busy.select([f"arm-{i:04d}" for i in range(50, 100)])  # fits now
    await store.close()


async def test_the_budget_estimate_follows_arms_and_contexts() -> None:
    store = MemoryLearningStore()
    budget = MemoryBudget()
    lrn = await Learner.create(LearnerConfig(name="est"), store, signer=SelectionSigner.random(),
                               budget=budget)
    empty = budget.used_bytes
    await lrn.select([f"a{i}" for i in range(1000)])
    per_arm = (budget.used_bytes - empty) / 1000
    assert ARM_BYTES < per_arm < 2 * ARM_BYTES  # the ids plus the cached candidate list
    with_arms = budget.used_bytes
    await lrn.batch_observe([ArmOutcome(f"a{i}", reward=1.0, context={"u": i % 10})
                             for i in range(100)])
    assert budget.used_bytes > with_arms  # ten contexts, a hundred rows
    await lrn.close()
    await store.close()


async def test_feedback_in_a_context_past_max_contexts_is_refused(store: LearningStore) -> None:
    lrn = await Learner.create(LearnerConfig(name="ctx", max_contexts=2), store,
                               signer=SelectionSigner.random())
    for user in ("ann", "bob"):
        await lrn.observe(ArmOutcome("a", reward=1.0, context={"user": user}))
    before = await stored(store)
    with pytest.raises(LimitExceeded, match="max_contexts 2"):
        await lrn.observe(ArmOutcome("a", reward=1.0, context={"user": "cy"}))
    sel = await lrn.select(["a", "b"], context={"user": "cy"})  # select never stores a context
    with pytest.raises(LimitExceeded):
        await lrn.observe(ArmOutcome(sel.selected[0].id, reward=1.0,
                                     selection_id=sel.selection_id))
    assert await stored(store) == before
    await lrn.observe(ArmOutcome("b", reward=0.0, context={"user": "bob"}))  # known ones work
    await lrn.observe(ArmOutcome("b", reward=0.0))  # and so does the global context
    await lrn.close()


# --- feedback rate caps --------------------------------------------------------------------


async def test_feedback_past_the_per_arm_rate_is_refused_until_the_clock_moves(
        store: LearningStore) -> None:
    clock = FakeClock()
    lrn = await Learner.create(
        LearnerConfig(name="rate", feedback_per_arm_per_minute=3, feedback_per_minute=5),
        store, signer=SelectionSigner.random(), clock=clock)
    for _ in range(3):
        await lrn.observe(ArmOutcome("a", reward=0.0))
    before = await stored(store)
    with pytest.raises(RateLimited) as info:
        await lrn.observe(ArmOutcome("a", reward=0.0))
    err = info.value
    assert err.code == "RATE_LIMITED"
    assert err.retryable
    assert err.retry_after_s == 20.0  # one feedback per 20 s at 3 per minute
    assert "per arm" in err.message
    assert "retry in 20 s" in err.message
    assert await stored(store) == before
    await lrn.observe(ArmOutcome("b", reward=1.0))  # another arm is not held back
    clock.advance(19.9)
    with pytest.raises(RateLimited):
        await lrn.observe(ArmOutcome("a", reward=0.0))
    clock.advance(0.1)
    await lrn.observe(ArmOutcome("a", reward=0.0))
    assert lrn.feedback_last_minute == 5  # to the second: all five within the last 20 s
    # the learner's own cap: 5 at once, then one per 12 s (20 s refilled 5/3 of one)
    await lrn.observe(ArmOutcome("c", reward=1.0))
    with pytest.raises(RateLimited, match="at most 5 feedbacks per minute") as info:
        await lrn.observe(ArmOutcome("d", reward=1.0))
    assert 0 < info.value.retry_after_s <= 12
    clock.advance(info.value.retry_after_s)
    await lrn.observe(ArmOutcome("d", reward=1.0))
    assert lrn.feedback_last_minute == 7
    await lrn.close()


async def test_a_batch_larger_than_a_cap_is_a_limit_not_a_retry() -> None:
    lrn = await Learner.create(LearnerConfig(name="b", feedback_per_minute=2),
                               MemoryLearningStore(), signer=SelectionSigner.random(),
                               clock=FakeClock())
    with pytest.raises(LimitExceeded, match="send fewer at a time"):
        await lrn.batch_observe([ArmOutcome(f"a{i}", reward=1.0) for i in range(3)])
    await lrn.close()


def test_the_rate_limiter_forgets_arms_that_refilled() -> None:
    clock = FakeClock()
    limiter = FeedbackRateLimiter("x", None, 2, clock)
    for i in range(FeedbackRateLimiter._SWEEP_AT):
        limiter.take([f"arm-{i}"])
    clock.advance(60)
    limiter.take(["fresh"])
    assert len(limiter._arms) == 1


def test_rate_caps_are_learner_options_where_zero_means_none() -> None:
    cfg = LearnerConfig.from_options("x", {"feedback_per_minute": 0,
                                           "feedback_per_arm_per_minute": 30,
                                           "max_contexts": 5})
    assert (cfg.feedback_per_minute, cfg.feedback_per_arm_per_minute, cfg.max_contexts) == (
        None, 30, 5)
    assert LearnerConfig().feedback_per_minute is None  # the library itself has no cap
