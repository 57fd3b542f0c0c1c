"""A learner's own ``selection_ttl_s`` decides when its selection ids expire, on every
feedback path, and a clock stepped back does not lose a genuine feedback."""

from __future__ import annotations

import pytest

from qortex_mcp.errors import InvalidSelection, SelectionExpired
from qortex_mcp.learning import (
    ArmOutcome,
    Learner,
    LearnerConfig,
    MemoryLearningStore,
    SelectionSigner,
)
from qortex_mcp.rerank import PosteriorReranker

pytestmark = pytest.mark.anyio

DAY = 86400.0


class FakeClock:
    """Seconds since the epoch, moved by the test."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def learner_with(ttl_s: float, clock: FakeClock, *, signer_ttl_s: float = 30 * DAY
                       ) -> Learner:
    # The signer's own TTL is deliberately different: the learner's must win.
    signer = SelectionSigner.random(signer_ttl_s, clock=clock)
    return await Learner.create(LearnerConfig(name="t", selection_ttl_s=ttl_s, seed=1),
                                MemoryLearningStore(), signer=signer)


async def test_a_short_ttl_refuses_an_id_older_than_it() -> None:
    clock = FakeClock()
    async with await learner_with(1, clock) as learner:
        sel = await learner.select(["a"])
        clock.now += 2.5
        with pytest.raises(SelectionExpired, match="older than 1 s"):
            await learner.observe(ArmOutcome("a", reward=1.0, selection_id=sel.selection_id))
        with pytest.raises(SelectionExpired):
            await learner.batch_observe([ArmOutcome("a", reward=1.0,
                                                    selection_id=sel.selection_id)])
        assert await learner.store.events("t") == []
        young = await learner.select(["a"])
        clock.now += 0.5
        fb = await learner.observe(ArmOutcome("a", reward=1.0, selection_id=young.selection_id))
        assert fb.status == "applied"


async def test_a_ttl_of_zero_never_expires() -> None:
    clock = FakeClock()
    async with await learner_with(0, clock, signer_ttl_s=30 * DAY) as learner:
        sel = await learner.select(["a"])
        clock.now += 400 * DAY
        fb = await learner.observe(ArmOutcome("a", reward=1.0, selection_id=sel.selection_id))
        assert fb.status == "applied"


async def test_a_long_ttl_outlives_the_signers_default() -> None:
    clock = FakeClock()
    async with await learner_with(90 * DAY, clock, signer_ttl_s=1) as learner:
        sel = await learner.select(["a"])
        clock.now += 60 * DAY
        fb = await learner.observe(ArmOutcome("a", reward=1.0, selection_id=sel.selection_id))
        assert fb.status == "applied"


async def test_rerank_feedback_and_clicks_honour_the_learners_ttl() -> None:
    clock = FakeClock()
    async with await learner_with(1, clock) as learner:
        reranker = PosteriorReranker(learner)
        ranked = await reranker.rerank([{"id": "d1", "score": 2.0}, {"id": "d2", "score": 1.0}])
        clock.now += 2.5
        with pytest.raises(SelectionExpired):
            await reranker.feedback(ranked.selection_id, {"d1": "accepted"})
        with pytest.raises(SelectionExpired):
            await reranker.feedback(ranked.selection_id, {"d2": "accepted"}, clicks_only=True)
        assert await learner.store.events("t") == []


async def test_a_clock_stepped_back_keeps_a_genuine_id_valid() -> None:
    clock = FakeClock()
    async with await learner_with(30 * DAY, clock) as learner:
        sel = await learner.select(["a"])
        clock.now -= 3600  # an NTP correction of an hour, after the select
        fb = await learner.observe(ArmOutcome("a", reward=1.0, selection_id=sel.selection_id))
        assert fb.status == "applied"


async def test_an_id_dated_further_ahead_than_its_lifetime_is_refused() -> None:
    clock = FakeClock()
    signer = SelectionSigner.random(60, clock=clock)
    token, _ = signer.issue("t", None, ["a"])
    clock.now -= 59  # within the TTL: accepted
    assert signer.verify(token, "t").arms == ("a",)
    clock.now -= 300  # 6 minutes ahead: beyond both the TTL and the 5-minute floor
    with pytest.raises(InvalidSelection, match="future"):
        signer.verify(token, "t")
    assert signer.verify(token, "t", ttl_s=0).arms == ("a",)  # never expires: any step
