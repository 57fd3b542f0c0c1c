"""One contract, every store: memory, SQLite, JSON and PostgreSQL behave the same."""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace
from pathlib import Path

import pytest

from qortex_mcp.learning import LearningStore
from qortex_mcp.learning.replay import replay_events
from qortex_mcp.learning.types import FeedbackRow
from tests.conftest import make_store

pytestmark = pytest.mark.anyio

L = "contract"


def row(key: str, arm: str, reward: float, *, ctx: str = "", at: float = 1000.0,
        weight: float = 1.0, body: str | None = None) -> FeedbackRow:
    return FeedbackRow(key=key, arm=arm, ctx=ctx, ctx_body=body, reward=reward, weight=weight,
                       outcome=None, at=at)


async def evidence(store: LearningStore) -> dict[tuple[str, str], tuple[float, float, int]]:
    return {(r.ctx, r.arm): (r.s, r.f, r.n) for r in await store.evidence(L)}


async def test_apply_increments_global_and_context_rows(store: LearningStore) -> None:
    await store.ensure_learner(L, "{}")
    result = await store.apply(L, [row("s1", "a", 1.0, ctx="c1", body='{"x":1}'),
                                   row("s1", "b", 0.0)], None)
    assert result.statuses == ("applied", "applied")
    got = {(r.ctx, r.arm): (r.s, r.f, r.n) for r in result.rows}
    assert got == {("", "a"): (1.0, 0.0, 1), ("c1", "a"): (1.0, 0.0, 1), ("", "b"): (0.0, 1.0, 1)}
    assert await evidence(store) == got
    assert await store.contexts(L, ["c1", "nope"]) == {"c1": '{"x":1}'}


async def test_duplicate_feedback_changes_nothing(store: LearningStore) -> None:
    await store.apply(L, [row("s1", "a", 1.0)], None)
    before, events = await evidence(store), await store.events(L)
    result = await store.apply(L, [row("s1", "a", 1.0, at=2000.0)], None)
    assert result.statuses == ("duplicate",)
    assert result.standing == (1.0,)
    assert await evidence(store) == before
    assert await store.events(L) == events


async def test_conflicting_feedback_is_refused_and_the_whole_request_changes_nothing(
    store: LearningStore,
) -> None:
    await store.apply(L, [row("s1", "a", 1.0)], None)
    before, events = await evidence(store), await store.events(L)
    result = await store.apply(L, [row("s1", "b", 1.0), row("s1", "a", 0.0)], None)
    assert result.statuses == ("applied", "conflict")
    assert result.standing == (None, 1.0)
    assert await evidence(store) == before
    assert len(await store.events(L)) == len(events)


async def test_repeated_row_within_one_request_counts_once(store: LearningStore) -> None:
    result = await store.apply(L, [row("s1", "a", 0.5), row("s1", "a", 0.5)], None)
    assert result.statuses == ("applied", "duplicate")
    assert (await evidence(store))[("", "a")] == (0.5, 0.5, 1)


async def test_an_arm_repeated_in_one_request_keeps_the_prior_its_rows_carry(
    store: LearningStore,
) -> None:
    # Rows of one request write each arm once; the prior left is the last one given.
    await store.apply(L, [replace(row("k1", "a", 1.0), a0=2.0, b0=3.0), row("k2", "a", 0.0),
                          row("k3", "b", 1.0), replace(row("k4", "b", 1.0), a0=4.0, b0=5.0),
                          replace(row("k5", "b", 0.0), a0=6.0, b0=7.0), row("k6", "c", 1.0)],
                      None)
    arms = {a.arm: (a.a0, a.b0) for a in (await store.load(L)).arms}
    assert arms == {"a": (2.0, 3.0), "b": (6.0, 7.0), "c": (None, None)}
    assert (await evidence(store))[("", "b")] == (2.0, 1.0, 3)


async def test_weights_scale_the_evidence(store: LearningStore) -> None:
    await store.apply(L, [row("s1", "a", 0.0, weight=0.25)], None)
    assert (await evidence(store))[("", "a")] == (0.0, 0.25, 1)


async def test_half_life_fold_is_order_independent(store: LearningStore) -> None:
    h = 100.0
    await store.apply(L, [row("k1", "a", 1.0, at=1000.0)], h)
    await store.apply(L, [row("k2", "a", 0.0, at=900.0)], h)
    await store.apply(L, [row("k3", "b", 0.0, at=900.0)], h)
    await store.apply(L, [row("k4", "b", 1.0, at=1000.0)], h)
    ev = await evidence(store)
    assert ev[("", "a")][0] == pytest.approx(ev[("", "b")][0])
    assert ev[("", "a")][1] == pytest.approx(0.5)
    assert ev[("", "a")][1] == pytest.approx(ev[("", "b")][1])
    report = replay_events(L, await store.events(L), await store.evidence(L), h)
    assert report.ok, report.mismatches


async def test_changes_returns_rows_written_since_the_cursor(store: LearningStore) -> None:
    await store.ensure_learner(L, "{}")
    start = (await store.load(L)).cursor
    await store.apply(L, [row("s1", "a", 1.0)], None)
    cursor, ev, _ = await store.changes(L, start)
    assert cursor > start
    assert {(r.ctx, r.arm) for r in ev} == {("", "a")}
    await store.apply(L, [row("s2", "b", 1.0)], None)
    cursor2, ev2, _ = await store.changes(L, cursor)
    assert cursor2 > cursor
    assert {(r.ctx, r.arm) for r in ev2} == {("", "b")}
    _, ev3, _ = await store.changes(L, cursor2)
    assert list(ev3) == []


async def test_selection_counts_accumulate(store: LearningStore) -> None:
    await store.record_selections(L, {"a": (2, 10.0)}, {"a": (8.0, 2.0)}, 2, 1)
    await store.record_selections(L, {"a": (1, 20.0), "b": (3, 5.0)}, {}, 4, 0)
    snap = await store.load(L)
    arms = {a.arm: a for a in snap.arms}
    assert (arms["a"].selections, arms["a"].last_selected) == (3, 20.0)
    assert (arms["a"].a0, arms["a"].b0) == (8.0, 2.0)
    assert arms["b"].selections == 3
    assert (snap.selections, snap.explored) == (6, 1)


async def test_decay_shrinks_evidence_and_is_logged(store: LearningStore) -> None:
    await store.apply(L, [row("s1", "a", 1.0, ctx="c"), row("s1", "b", 1.0)], None)
    await store.decay(L, "a", 0.5, 1001.0)
    ev = await evidence(store)
    assert ev[("", "a")] == (0.5, 0.0, 1)
    assert ev[("c", "a")] == (0.5, 0.0, 1)
    assert ev[("", "b")] == (1.0, 0.0, 1)
    assert [e.kind for e in await store.events(L)][-1] == "decay"


async def test_reset_previews_then_forgets(store: LearningStore) -> None:
    await store.apply(L, [row("s1", "a", 1.0, ctx="c"), row("s1", "b", 0.0)], None)
    arms, rows, removed = await store.reset(L, ["a"], None, 1001.0, dry_run=True)
    assert (arms, rows, removed) == (("a",), 2, 1.0)
    assert (await evidence(store))[("", "a")] == (1.0, 0.0, 1)
    arms, rows, _ = await store.reset(L, ["a"], None, 1001.0, dry_run=False)
    assert (arms, rows) == (("a",), 2)
    ev = await evidence(store)
    assert ev[("", "a")] == (0.0, 0.0, 0)
    assert ev[("", "b")] == (0.0, 1.0, 1)
    # feedback for an old selection stays answered after a reset: never counted twice
    assert (await store.apply(L, [row("s1", "a", 1.0)], None)).statuses == ("duplicate",)


async def test_reset_of_one_context_keeps_the_rest(store: LearningStore) -> None:
    await store.apply(L, [row("s1", "a", 1.0, ctx="c"), row("s2", "a", 1.0, ctx="d")], None)
    await store.reset(L, None, "c", 1001.0, dry_run=False)
    ev = await evidence(store)
    assert ev[("c", "a")] == (0.0, 0.0, 0)
    assert ev[("d", "a")] == (1.0, 0.0, 1)
    assert ev[("", "a")] == (2.0, 0.0, 2)


async def test_stored_state_equals_replay_of_a_random_history(store: LearningStore) -> None:
    rng = random.Random(7)
    for i in range(60):
        op = rng.random()
        if op < 0.8:
            key = f"s{rng.randrange(40)}"
            await store.apply(L, [row(key, rng.choice("abc"), rng.choice([0.0, 0.5, 1.0]),
                                      ctx=rng.choice(["", "c1", "c2"]), at=1000.0 + i)], 50.0)
        elif op < 0.9:
            await store.decay(L, rng.choice(["", "a"]), 0.7, 1000.0 + i)
        else:
            await store.reset(L, [rng.choice("abc")], rng.choice([None, "c1"]), 1000.0 + i,
                              dry_run=False)
    report = replay_events(L, await store.events(L), await store.evidence(L), 50.0)
    assert report.ok, report.mismatches


async def test_concurrent_distinct_feedback_is_all_counted(store: LearningStore) -> None:
    await asyncio.gather(*(store.apply(L, [row(f"s{i}", "a", float(i % 2))], None)
                           for i in range(200)))
    assert (await evidence(store))[("", "a")] == (100.0, 100.0, 200)


async def test_concurrent_same_selection_applies_exactly_once(store: LearningStore) -> None:
    for round_ in range(10):
        results = await asyncio.gather(*(store.apply(L, [row(f"r{round_}", "a", 1.0)], None)
                                         for _ in range(8)))
        statuses = sorted(r.statuses[0] for r in results)
        assert statuses == ["applied"] + ["duplicate"] * 7
    assert (await evidence(store))[("", "a")] == (10.0, 0.0, 10)


async def test_learner_summaries_count_feedback(store: LearningStore) -> None:
    await store.ensure_learner(L, "{}")
    await store.apply(L, [row("s1", "a", 1.0, ctx="c"), row("s1", "b", 0.0)], None)
    summary = {s.name: s for s in await store.learners()}[L]
    assert (summary.arms, summary.feedback) == (2, 2)


@pytest.mark.parametrize("kind", ["sqlite", "json"])
async def test_state_survives_reopening(kind: str, tmp_path: Path) -> None:
    store = await make_store(kind, tmp_path)
    await store.apply(L, [row("s1", "a", 1.0, ctx="c")], None)
    await store.close()
    again = await make_store(kind, tmp_path)
    try:
        assert (await again.apply(L, [row("s1", "a", 1.0)], None)).statuses == ("duplicate",)
        assert {(r.ctx, r.arm): r.n for r in await again.evidence(L)} == {("", "a"): 1,
                                                                          ("c", "a"): 1}
    finally:
        await again.close()
