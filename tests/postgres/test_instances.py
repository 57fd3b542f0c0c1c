"""Several store instances on one schema behave as one learner: freshness through NOTIFY,
selection ids accepted everywhere, duplicates and conflicts decided across instances."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

pytest.importorskip("asyncpg")

import asyncpg

from qortex_mcp.errors import SelectionConflict
from qortex_mcp.learning import (
    ArmOutcome,
    Learner,
    LearnerConfig,
    SelectionSigner,
)
from qortex_mcp.learning.postgres import PostgresLearningStore
from qortex_mcp.learning.replay import replay_events
from qortex_mcp.learning.types import FeedbackRow
from tests.conftest import PG_DSN
from tests.postgres.conftest import MakeStore
from tests.postgres.support import eventually

pytestmark = pytest.mark.anyio

SIGNER = SelectionSigner.random()
NEVER_POLL = 3600.0  # so only a notification can refresh the learner's cache


def row(key: str, arm: str = "a", reward: float = 1.0) -> FeedbackRow:
    return FeedbackRow(key=key, arm=arm, ctx="", ctx_body=None, reward=reward, weight=1.0,
                       outcome=None, at=1000.0)


async def learner_on(store: PostgresLearningStore, refresh_interval_s: float = 0.5) -> Learner:
    return await Learner.create(LearnerConfig(name="shared", seed=1), store, signer=SIGNER,
                                refresh_interval_s=refresh_interval_s)


async def until_cached(learner: Learner, arm: str, successes: float) -> None:
    """Wait (bounded) until what select would use, the learner's cache, shows ``successes``
    for ``arm``; ``Learner.evidence`` reads the cache without touching the store."""

    async def cached() -> bool:
        return float((await learner.evidence([arm]))[0][0]) == successes

    await eventually(cached)


async def test_feedback_through_one_instance_reaches_anothers_select_cache_by_notify(
    make_pg: MakeStore,
) -> None:
    a, b = await make_pg(), await make_pg()
    assert a.listening
    assert b.listening
    la, lb = await learner_on(a), await learner_on(b, refresh_interval_s=NEVER_POLL)
    try:
        await la.observe(ArmOutcome(arm_id="x", reward=1.0))
        await until_cached(lb, "x", 1.0)
        await la.observe(ArmOutcome(arm_id="x", reward=1.0))
        await until_cached(lb, "x", 2.0)
    finally:
        await la.close()
        await lb.close()


async def test_inspection_on_another_instance_sees_feedback_on_its_next_call(
    make_pg: MakeStore,
) -> None:
    a, b = await make_pg(), await make_pg()
    la, lb = await learner_on(a), await learner_on(b, refresh_interval_s=NEVER_POLL)
    try:
        await la.observe(ArmOutcome(arm_id="x", reward=1.0, context={"task": "t"}))
        (post,) = await lb.posteriors(["x"])
        assert (post.alpha, post.beta, post.pulls) == (2.0, 1.0, 1)
        (in_ctx,) = await lb.posteriors(["x"], context={"task": "t"})
        assert in_ctx.pulls == 1
        assert (await lb.metrics()).feedback == 1
    finally:
        await la.close()
        await lb.close()


async def test_selection_ids_issued_by_one_instance_are_accepted_by_another(
    make_pg: MakeStore,
) -> None:
    a, b = await make_pg(), await make_pg()
    la, lb = await learner_on(a), await learner_on(b)
    try:
        sel = await la.select(["p", "q", "r"], context={"user": "u1"}, k=2)
        first, second = (arm.id for arm in sel.selected)
        applied = await lb.observe(ArmOutcome(arm_id=first, reward=1.0,
                                              selection_id=sel.selection_id))
        assert applied.status == "applied"
        again = await la.observe(ArmOutcome(arm_id=first, reward=1.0,
                                            selection_id=sel.selection_id))
        assert again.status == "duplicate"
        with pytest.raises(SelectionConflict):
            await la.observe(ArmOutcome(arm_id=first, reward=0.0,
                                        selection_id=sel.selection_id))
        other = await la.observe(ArmOutcome(arm_id=second, reward=0.0,
                                            selection_id=sel.selection_id))
        assert other.status == "applied"
        pa = {p.id: (p.alpha, p.beta, p.pulls) for p in await la.posteriors([first, second])}
        pb = {p.id: (p.alpha, p.beta, p.pulls) for p in await lb.posteriors([first, second])}
        assert pa == pb
        assert pa[first] == (2.0, 1.0, 1)
        assert pa[second] == (1.0, 2.0, 1)
    finally:
        await la.close()
        await lb.close()


async def test_one_selection_answered_on_two_instances_at_once_applies_exactly_once(
    make_pg: MakeStore,
) -> None:
    a, b = await make_pg(), await make_pg()
    for round_ in range(20):
        results = await asyncio.gather(*(
            (a if i % 2 else b).apply("L", [row(f"r{round_}")], None) for i in range(8)
        ))
        assert sorted(r.statuses[0] for r in results) == ["applied"] + ["duplicate"] * 7
    assert {(r.ctx, r.arm): r.n for r in await a.evidence("L")} == {("", "a"): 20}


async def test_conflicting_answers_on_two_instances_at_once_keep_the_first_only(
    make_pg: MakeStore,
) -> None:
    a, b = await make_pg(), await make_pg()
    for round_ in range(20):
        results = await asyncio.gather(
            a.apply("L", [row(f"r{round_}", reward=1.0)], None),
            b.apply("L", [row(f"r{round_}", reward=0.0)], None),
        )
        assert sorted(r.statuses[0] for r in results) == ["applied", "conflict"]
        a_won = results[0].statuses[0] == "applied"
        loser = results[1] if a_won else results[0]
        assert loser.standing == ((1.0,) if a_won else (0.0,))
    ev = {(r.ctx, r.arm): r for r in await b.evidence("L")}
    assert ev[("", "a")].n == 20
    assert ev[("", "a")].s + ev[("", "a")].f == 20.0


async def test_distinct_feedback_from_many_tasks_on_three_instances_is_all_counted(
    make_pg: MakeStore,
) -> None:
    stores = [await make_pg() for _ in range(3)]
    results = await asyncio.gather(*(
        stores[i % 3].apply("L", [row(f"k{i}", arm=f"arm{i % 5}", reward=float(i % 2))], None)
        for i in range(600)
    ))
    assert Counter(r.statuses for r in results) == {("applied",): 600}
    ev = {r.arm: r for r in await stores[0].evidence("L")}
    assert sum(r.n for r in ev.values()) == 600
    assert sum(r.s for r in ev.values()) == 300.0
    report = replay_events("L", await stores[1].events("L"), await stores[2].evidence("L"), None)
    assert report.ok, report.mismatches


async def test_changes_from_another_instance_are_never_missed(make_pg: MakeStore) -> None:
    """A reader polling ``changes`` while two writers race sees every committed row."""
    a, b, reader = await make_pg(), await make_pg(), await make_pg()
    await reader.ensure_learner("L", "{}")
    cursor = (await reader.load("L")).cursor
    seen: dict[str, int] = {}
    done = asyncio.Event()

    async def poll() -> None:
        nonlocal cursor
        while not done.is_set():
            cursor, ev, _ = await reader.changes("L", cursor)
            for r in ev:
                seen[r.arm] = max(seen.get(r.arm, 0), r.n)
            await asyncio.sleep(0)

    async def write(store: PostgresLearningStore, offset: int) -> None:
        await asyncio.gather(*(store.apply("L", [row(f"k{offset + i}", arm=f"arm{i % 7}")],
                                           None) for i in range(300)))

    poller = asyncio.create_task(poll())
    await asyncio.gather(write(a, 0), write(b, 1000))
    done.set()
    await poller
    cursor, ev, _ = await reader.changes("L", cursor)
    for r in ev:
        seen[r.arm] = max(seen.get(r.arm, 0), r.n)
    assert seen == {r.arm: r.n for r in await a.evidence("L")}
    assert sum(seen.values()) == 600


async def test_notifications_resume_after_the_listening_connection_is_killed(
    make_pg: MakeStore,
) -> None:
    a, b = await make_pg(), await make_pg()
    la, lb = await learner_on(a), await learner_on(b, refresh_interval_s=NEVER_POLL)
    try:
        old_pid = b.listener_pid
        assert old_pid is not None
        conn = await asyncpg.connect(PG_DSN)
        try:
            assert await conn.fetchval("SELECT pg_terminate_backend($1)", old_pid)
        finally:
            await conn.close()
        await eventually(lambda: b.listening and b.listener_pid != old_pid)
        await la.observe(ArmOutcome(arm_id="x", reward=1.0))
        await until_cached(lb, "x", 1.0)
    finally:
        await la.close()
        await lb.close()
