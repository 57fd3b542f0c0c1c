"""``metrics().feedback_rate`` is the share of selections that got any feedback: each
selection counts once, bare and rerank feedback are not selections, and the count survives a
restart and stores written before it existed."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from qortex_mcp.learning import (
    ArmOutcome,
    Learner,
    LearnerConfig,
    LearningStore,
    SelectionSigner,
    SqliteLearningStore,
)
from qortex_mcp.rerank import PosteriorReranker
from tests.conftest import PG_DSN, PG_UNAVAILABLE

pytestmark = pytest.mark.anyio

SIGNER = SelectionSigner.random()


async def make(store: LearningStore) -> Learner:
    return await Learner.create(LearnerConfig(name="t", seed=3), store, signer=SIGNER)


def fb(arm: str, sid: str, reward: float = 1.0) -> ArmOutcome:
    return ArmOutcome(arm, reward=reward, selection_id=sid)


async def test_each_selection_counts_once_and_bare_feedback_not_at_all(
    store: LearningStore,
) -> None:
    learner = await make(store)
    both, apart, one, _silent = [await learner.select(["a", "b", "c"], k=2) for _ in range(4)]
    arms = {s.selection_id: [a.id for a in s.selected] for s in (both, apart, one)}
    await learner.batch_observe([fb(arm, both.selection_id) for arm in arms[both.selection_id]])
    for arm in arms[apart.selection_id]:  # the second answer is not a second selection
        await learner.observe(fb(arm, apart.selection_id, 0.0))
    await learner.observe(fb(arms[one.selection_id][0], one.selection_id))
    await learner.observe(fb(arms[one.selection_id][0], one.selection_id))  # duplicate
    for i in range(5):
        await learner.observe(ArmOutcome("a", reward=1.0, idempotency_key=f"bare-{i}"))
    reranker = PosteriorReranker(learner)
    ranked = await reranker.rerank([{"id": "d1", "score": 1.0}, {"id": "d2", "score": 0.5}])
    await reranker.feedback(ranked.selection_id, {"d1": "accepted", "d2": "rejected"})
    m = await learner.metrics()
    assert (m.selections, m.answered) == (4, 3)
    assert m.feedback_rate == 0.75
    assert m.feedback == 2 + 2 + 1 + 5 + 2  # every applied feedback, bare ones too
    await learner.close()

    again = await make(store)  # the counters were flushed at close and load back
    m = await again.metrics()
    assert (m.selections, m.answered, m.feedback_rate) == (4, 3, 0.75)
    await again.close()


async def test_no_feedback_at_all_is_a_rate_of_zero(store: LearningStore) -> None:
    learner = await make(store)
    await learner.select(["a", "b"])
    await learner.observe(ArmOutcome("a", reward=1.0))
    assert (await learner.metrics()).feedback_rate == 0.0
    await learner.close()


async def test_an_sqlite_file_from_before_the_counter_opens_with_its_data(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    async with SqliteLearningStore(path) as store:
        learner = await make(store)
        sel = await learner.select(["a"])
        await learner.observe(fb("a", sel.selection_id))
        await learner.close()
    with sqlite3.connect(path) as conn:  # the learners table as earlier versions made it
        conn.execute("ALTER TABLE learners DROP COLUMN answered")
    async with SqliteLearningStore(path) as store:
        learner = await make(store)
        m = await learner.metrics()
        assert (m.selections, m.feedback, m.answered) == (1, 1, 0)
        sel = await learner.select(["a"])
        await learner.observe(fb("a", sel.selection_id))
        assert (await learner.metrics()).answered == 1
        await learner.close()


@pytest.mark.skipif(PG_UNAVAILABLE is not None, reason=f"PostgreSQL: {PG_UNAVAILABLE}")
async def test_a_postgres_schema_from_before_the_counter_gets_it() -> None:
    import asyncpg

    from qortex_mcp.learning.postgres import PostgresLearningStore
    from tests.pg import private_schema

    async with private_schema(PG_DSN) as schema:
        async with PostgresLearningStore(PG_DSN, schema=schema) as store:
            learner = await make(store)
            sel = await learner.select(["a"])
            await learner.observe(fb("a", sel.selection_id))
            await learner.close()
        conn = await asyncpg.connect(PG_DSN)
        try:
            await conn.execute(f'ALTER TABLE "{schema}".learners DROP COLUMN answered')
        finally:
            await conn.close()
        async with PostgresLearningStore(PG_DSN, schema=schema) as store:
            learner = await make(store)
            m = await learner.metrics()
            assert (m.selections, m.feedback, m.answered) == (1, 1, 0)
            sel = await learner.select(["a"])
            await learner.observe(fb("a", sel.selection_id))
            assert (await learner.metrics()).answered == 1
            await learner.close()
