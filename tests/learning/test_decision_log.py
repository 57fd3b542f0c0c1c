"""The decision log and propensities: every select and rerank is logged with what was
offered, what was chosen, the probability the strategy had of each choice and the strategy
version; feedback events carry the chosen arm's propensity and that version."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from qortex_mcp.errors import ConfigError
from qortex_mcp.learning import (
    Arm,
    ArmOutcome,
    Learner,
    LearnerConfig,
    LearningStore,
    MemoryLearningStore,
    SqliteLearningStore,
)
from qortex_mcp.learning.decisions import DecisionLog
from qortex_mcp.learning.types import Decision, Event
from qortex_mcp.rerank import PosteriorReranker

pytestmark = pytest.mark.anyio

ARMS = ["a", "b", "c", "d"]


async def make(store: LearningStore, **options: Any) -> Learner:
    config = LearnerConfig(name=options.pop("name", "log"), seed=options.pop("seed", 3),
                           **options)
    return await Learner.create(config, store, flush_interval_s=3600)


async def teach(learner: Learner, arm: str, reward: float, n: int) -> None:
    for _ in range(n):
        await learner.observe(ArmOutcome(arm, reward=reward))


async def feedback_events(store: LearningStore, learner: str) -> list[Event]:
    return [e for e in await store.events(learner) if e.kind == "feedback"]


async def test_a_select_is_logged_with_its_candidates_choice_and_strategy_version(
    store: LearningStore,
) -> None:
    learner = await make(store, strategy="mean")
    await teach(learner, "c", 1.0, 5)
    sel = await learner.select(ARMS, context={"task": "x"}, k=2)
    assert await store.decisions("log") == []  # write-behind: nothing before the flush
    await learner.flush()
    (d,) = await store.decisions("log")
    assert d.key == learner.verify_selection(sel.selection_id).nonce
    assert (d.kind, d.ctx, d.n_candidates) == ("select", sel.context_key, 4)
    assert d.candidates == tuple(ARMS)
    assert d.chosen == tuple(a.id for a in sel.selected)
    assert d.policy == learner.config.policy_version()
    assert d.policy.startswith("mean.")
    assert d.seq > 0
    assert d.propensities[0] == 1.0  # "c" is the only best mean: certain
    await learner.close()


async def test_feedback_events_carry_propensity_and_strategy_version(
    store: LearningStore,
) -> None:
    learner = await make(store, strategy="eps_greedy", strategy_params={"epsilon": 0.2})
    await teach(learner, "b", 1.0, 3)
    await teach(learner, "a", 0.0, 3)
    await teach(learner, "c", 0.0, 3)
    await teach(learner, "d", 0.0, 3)
    sel = await learner.select(ARMS)
    chosen = sel.selected[0].id
    # Before the flush: the pending decision is settled for the feedback.
    await learner.observe(ArmOutcome(chosen, reward=1.0, selection_id=sel.selection_id))
    ev = (await feedback_events(store, "log"))[-1]
    expected = 0.8 + 0.2 / 4 if chosen == "b" else 0.2 / 4
    assert ev.propensity == pytest.approx(expected)
    assert ev.policy == learner.config.policy_version()
    await learner.flush()
    (d,) = await store.decisions("log")
    assert d.propensities[0] == pytest.approx(expected)
    # Bare feedback has no decision: no propensity, no version.
    assert (await feedback_events(store, "log"))[0].propensity is None
    assert (await feedback_events(store, "log"))[0].policy is None
    await learner.close()


async def test_exact_propensities_of_random_and_ties(store: LearningStore) -> None:
    rnd = await make(store, name="rnd", strategy="random")
    await rnd.select(ARMS, k=2)
    mean = await make(store, name="ties", strategy="mean")
    await mean.select(["x", "y"])  # both at the prior: a tie, split at random
    await rnd.flush()
    await mean.flush()
    assert (await store.decisions("rnd"))[0].propensities == (0.25, 0.25)
    assert (await store.decisions("ties"))[0].propensities == (0.5,)
    await rnd.close()
    await mean.close()


async def test_thompson_propensities_are_monte_carlo_estimates_never_zero() -> None:
    store = MemoryLearningStore()
    learner = await make(store, propensity_draws=64)
    await teach(learner, "a", 1.0, 200)
    await teach(learner, "b", 0.0, 200)
    sure = await learner.select(["a", "b"])
    even = await learner.select(["c", "d"])  # both at the prior
    await learner.flush()
    by_key = {d.key: d for d in await store.decisions("log")}
    p_sure = by_key[learner.verify_selection(sure.selection_id).nonce].propensities[0]
    p_even = by_key[learner.verify_selection(even.selection_id).nonce].propensities[0]
    assert sure.selected[0].id == "a"
    assert p_sure is not None
    assert p_sure > 0.95
    assert p_even is not None
    assert 0.25 < p_even < 0.75
    # (wins + 1) / (draws + 1): a multiple of 1/65, and above 0 for a chosen arm.
    assert round(p_even * 65) == pytest.approx(p_even * 65)
    await learner.close()


async def test_the_decision_log_leaves_seeded_thompson_decisions_as_they_were() -> None:
    picks = []
    for log_on in (False, True):
        learner = await make(MemoryLearningStore(), decision_log=log_on)
        await teach(learner, "a", 0.6, 5)
        picks.append([(await learner.select(ARMS, k=2)).selected[0].id for _ in range(50)])
        await learner.flush()  # settling draws from its own generator
        picks[-1] += [(await learner.select(ARMS)).selected[0].id for _ in range(50)]
        await learner.close()
    assert picks[0] == picks[1]


async def test_no_draws_and_budget_fills_log_no_propensity() -> None:
    store = MemoryLearningStore()
    learner = await make(store, propensity_draws=0)
    await learner.select(ARMS)
    await learner.select([Arm("a", token_cost=2), Arm("b", token_cost=5)], k=2,
                         token_budget=10)
    await learner.flush()
    first, budget = await store.decisions("log")
    assert first.propensities == (None,)
    assert budget.propensities == (None, None)
    await learner.close()


def test_propensity_draws_is_checked() -> None:
    for bad in (-1, 4097, 1.5, True):
        with pytest.raises(ConfigError, match="propensity_draws"):
            LearnerConfig(propensity_draws=bad)  # type: ignore[arg-type]


def test_the_strategy_version_changes_with_what_shapes_decisions() -> None:
    base = LearnerConfig().policy_version()
    assert base == LearnerConfig(seed=4, max_arms=9).policy_version()  # no effect on choices
    assert base != LearnerConfig(prior=(2.0, 1.0)).policy_version()
    assert base != LearnerConfig(arm_priors={"a": (3.0, 1.0)}).policy_version()
    assert LearnerConfig(strategy="ucb1").policy_version().startswith("ucb1.")


async def test_feedback_after_a_restart_reads_the_propensity_from_the_store(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    async with SqliteLearningStore(path) as store:
        learner = await make(store, strategy="random")
        sel = await learner.select(ARMS)
        await learner.close()  # flushes the decision
    async with SqliteLearningStore(path) as store:
        again = await make(store, strategy="random")
        await again.observe(ArmOutcome(sel.selected[0].id, reward=1.0,
                                       selection_id=sel.selection_id))
        (ev,) = await feedback_events(store, "log")
        assert ev.propensity == 0.25
        assert ev.policy == again.config.policy_version()
        await again.close()


_CRASHING_SELECT = textwrap.dedent("""
    import asyncio, os, sys
    from qortex_mcp.learning import Learner, LearnerConfig, SqliteLearningStore

    async def main() -> None:
        store = SqliteLearningStore(sys.argv[1])
        await store.initialize()
        learner = await Learner.create(LearnerConfig(name="log", strategy="random"), store,
                                       flush_interval_s=3600)
        first = await learner.select(["a", "b", "c", "d"])
        await learner.flush()
        second = await learner.select(["a", "b", "c", "d"])
        print(first.selection_id, first.selected[0].id, second.selection_id,
              second.selected[0].id, flush=True)
        os._exit(9)  # killed: no close, no flush

    asyncio.run(main())
""")


async def test_a_crash_loses_only_the_decisions_since_the_last_flush(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    run = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", _CRASHING_SELECT, str(path)],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert run.returncode == 9, run.stderr
    sid1, arm1, sid2, arm2 = run.stdout.split()
    async with SqliteLearningStore(path) as store:
        learner = await make(store, strategy="random")
        (logged,) = await store.decisions("log")
        assert logged.key == learner.verify_selection(sid1).nonce
        # The unflushed decision is gone, but its feedback still carries the strategy
        # version (signed into the selection id); only its propensity is unknown.
        await learner.observe(ArmOutcome(arm1, reward=1.0, selection_id=sid1))
        await learner.observe(ArmOutcome(arm2, reward=0.0, selection_id=sid2))
        first, second = await feedback_events(store, "log")
        assert (first.propensity, first.policy) == (0.25, learner.config.policy_version())
        assert (second.propensity, second.policy) == (None, learner.config.policy_version())
        await learner.close()


async def test_decisions_by_key(store: LearningStore) -> None:
    learner = await make(store)
    sels = [await learner.select(ARMS) for _ in range(3)]
    await learner.flush()
    keys = [learner.verify_selection(s.selection_id).nonce for s in sels]
    got = await store.decisions("log", keys=[keys[2], keys[0], "nope"])
    assert [d.key for d in got] == [keys[0], keys[2]]
    assert [d.key for d in await store.decisions("log", after_seq=got[0].seq)] == keys[1:]
    assert await store.decisions("nobody") == []
    await learner.close()


async def test_a_rerank_is_logged(store: LearningStore) -> None:
    learner = await make(store, name="docs")
    reranker = PosteriorReranker(learner)
    results = [{"id": f"doc{i}", "score": 1.0 - i / 10} for i in range(5)]
    plain = await reranker.rerank(results, limit=3)
    explored = await reranker.rerank(results, explore=True)
    await learner.flush()
    first, second = await store.decisions("docs")
    assert first.kind == "rerank"
    assert first.chosen == tuple(r["id"] for r in plain.results)
    assert first.candidates == tuple(r["id"] for r in results)
    assert first.propensities == (1.0, 1.0, 1.0)  # the order is certain without exploring
    assert second.propensities == (None,) * 5
    assert explored.selection_id
    await learner.close()


def test_pending_snapshots_are_bounded_and_findable() -> None:
    log = DecisionLog("mean.00000000", max_pending=5)
    calls: list[list[int]] = []

    def settle(chosen: list[int], p: float) -> tuple[float | None, ...]:
        calls.append(chosen)
        return (p,)

    log.add(("k1", "select", "", 1.0, [1], ["a", "b"], settle, 0.5))
    log.add(("k2", "select", "", 2.0, [0], ["a", "b"], settle, 0.25))
    found = log.find("k2")  # settled on demand, alone
    assert isinstance(found, Decision)
    assert (found.chosen, found.propensities, found.candidates) == (("a",), (0.25,),
                                                                     ("a", "b"))
    assert calls == [[0]]
    assert log.find("k2") is found  # remembered
    assert log.find("nope") is None
    log.add(("k3", "select", "", 3.0, [0], ["a", "b"], settle, 0.75))  # k1, k3: 4 held
    assert calls == [[0]]
    log.add(("k4", "select", "", 4.0, [1], ["a", "b"], settle, 0.5))  # 6 held > 5
    assert calls == [[0], [1], [0], [1]]  # past the bound: every pending one settled
    assert log.pending == {}
    assert log.held == 0


async def test_a_failed_flush_keeps_its_decisions_for_the_next(tmp_path: Path) -> None:
    store = MemoryLearningStore()
    learner = await make(store)
    await learner.select(ARMS)
    real = store.record_selections
    failing = True

    async def record(*args: Any, **kw: Any) -> None:
        if failing:
            from qortex_mcp.errors import StoreUnavailable
            raise StoreUnavailable("down")
        await real(*args, **kw)

    store.record_selections = record  # type: ignore[method-assign]
    with pytest.raises(Exception, match="down"):
        await learner.flush()
    failing = False
    await learner.select(ARMS)
    await learner.flush()
    assert len(await store.decisions("log")) == 2
    await learner.close()



async def test_the_decision_log_can_be_turned_off() -> None:
    store = MemoryLearningStore()
    learner = await make(store, decision_log=False)
    sel = await learner.select(ARMS)
    await learner.observe(ArmOutcome(sel.selected[0].id, reward=1.0,
                                     selection_id=sel.selection_id))
    await learner.flush()
    assert await store.decisions("log") == []
    (ev,) = await feedback_events(store, "log")
    assert ev.propensity is None
    assert ev.policy == learner.config.policy_version()  # still signed into the id
    with pytest.raises(ConfigError, match="decision_log"):
        LearnerConfig(decision_log="no")  # type: ignore[arg-type]
    await learner.close()


async def test_every_chosen_arm_carries_its_propensity() -> None:
    store = MemoryLearningStore()
    learner = await make(store, strategy="eps_greedy", strategy_params={"epsilon": 0.4})
    for arm in ARMS:
        await teach(learner, arm, 1.0 if arm == "b" else 0.0, 3)
    sel = await learner.select(ARMS, k=2)
    first, second = sel.selected
    assert first.propensity == pytest.approx(0.6 + 0.4 / 4 if first.id == "b" else 0.1)
    assert second.propensity is not None
    await learner.flush()
    (d,) = await store.decisions("log")
    assert (first.propensity, second.propensity) == d.propensities  # the logged ones
    thompson = await make(store, name="ts")
    (drawn,) = (await thompson.select(ARMS)).selected
    assert drawn.propensity is not None
    assert 0.0 < drawn.propensity <= 1.0
    off = await make(store, name="off", decision_log=False)
    assert (await off.select(ARMS)).selected[0].propensity is None
    for lrn in (learner, thompson, off):
        await lrn.close()


async def test_softmax_later_slots_are_estimates_never_zero() -> None:
    store = MemoryLearningStore()
    arms = [f"x{i}" for i in range(20)]
    none = await make(store, name="none", strategy="softmax", propensity_draws=0)
    some = await make(store, name="some", strategy="softmax")
    for _ in range(50):
        await none.select(arms, k=2)
        await some.select(arms, k=2)
    await none.flush()
    await some.flush()
    for d in await store.decisions("none"):
        first, second = d.propensities
        assert first == pytest.approx(1 / 20)  # every arm untried: a uniform softmax
        assert second is None  # an estimate needs draws
    for d in await store.decisions("some"):
        assert all(p is not None and 0.0 < p <= 1.0 for p in d.propensities)
    await none.close()
    await some.close()


async def test_overlapping_flushes_write_every_decision_once() -> None:
    store = MemoryLearningStore()
    learner = await make(store, propensity_draws=256)  # slow settling: flushes yield
    arms = [f"x{i}" for i in range(50)]
    keys = []

    async def selects(n: int) -> None:
        for _ in range(n):
            sel = await learner.select(arms)
            keys.append(learner.verify_selection(sel.selection_id).nonce)
            await asyncio.sleep(0)

    await selects(300)
    await asyncio.gather(learner.flush(), learner.flush(), selects(200), learner.flush())
    learner._decisions.max_pending = 500  # and selects that settle at once, past the bound
    await selects(100)
    await learner.flush()
    written = [d.key for d in await store.decisions("log")]
    assert sorted(written) == sorted(keys)
    assert learner._decisions.held == 0
    await learner.close()


def test_unwritten_decisions_stay_findable() -> None:
    log = DecisionLog("mean.00000000", remembered=2)
    for i in range(5):
        log.add((f"k{i}", "select", "", float(i), [0], ["a", "b"], None))
    taken = asyncio.run(log.take())
    log.put_back(taken)  # the store refused them
    assert all(log.find(f"k{i}") is not None for i in range(5))
    written = asyncio.run(log.take())
    log.written(written)
    assert [d.key for d in written] == [f"k{i}" for i in range(5)]
    assert log.find("k0") is None  # written and no longer remembered: the store has it
    assert log.find("k4") is not None
