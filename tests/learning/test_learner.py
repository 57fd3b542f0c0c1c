"""The learner through its public API, against every store."""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from qortex_mcp.errors import (
    ArmNotChosen,
    ArmNotInSelection,
    BudgetTooSmall,
    ClosedError,
    InvalidCandidates,
    InvalidInput,
    InvalidName,
    InvalidOutcome,
    InvalidReward,
    InvalidSelection,
    SelectionConflict,
    SelectionExpired,
    UnknownArm,
)
from qortex_mcp.learning import (
    Arm,
    ArmOutcome,
    Learner,
    LearnerConfig,
    LearningStore,
    SelectionSigner,
    TernaryReward,
    ToolExecution,
)
from qortex_mcp.learning.clock import FakeClock
from qortex_mcp.learning.context import canonical_context

pytestmark = pytest.mark.anyio


async def make(store: LearningStore, **config: object) -> Learner:
    cfg = LearnerConfig(name=str(config.pop("name", "t")), seed=1, **config)  # type: ignore[arg-type]
    return await Learner.create(cfg, store, signer=SIGNER)


SIGNER = SelectionSigner.random()


async def snapshot(learner: Learner) -> tuple[object, ...]:
    """Everything a bad call must leave unchanged."""
    return (
        sorted((r.ctx, r.arm, r.s, r.f, r.n) for r in await learner.store.evidence(learner.name)),
        len(await learner.store.events(learner.name)),
        [(p.id, p.alpha, p.beta, p.pulls) for p in await learner.posteriors()],
    )


async def test_select_returns_k_distinct_arms_best_first(store: LearningStore) -> None:
    learner = await make(store)
    result = await learner.select([f"arm{i}" for i in range(20)], k=5)
    ids = [a.id for a in result.selected]
    assert len(set(ids)) == 5
    scores = [a.score for a in result.selected]
    assert scores == sorted(scores, reverse=True)
    assert [a.rank for a in result.selected] == [1, 2, 3, 4, 5]
    assert result.selection_id.startswith("q1.")
    await learner.close()


async def test_k_larger_than_the_candidates_returns_them_all_and_says_so(
    store: LearningStore,
) -> None:
    learner = await make(store)
    result = await learner.select(["a", "b"], k=5)
    assert sorted(a.id for a in result.selected) == ["a", "b"]
    assert result.requested == 5
    assert result.note == "only 2 candidate(s) for k=5: all are returned"
    budget = await learner.select([Arm("a", token_cost=5), Arm("b", token_cost=5)], k=2,
                                  token_budget=6)
    assert len(budget.selected) == 1
    assert budget.note == "only 1 of k=2 fit token_budget=6"
    assert (await learner.select(["a", "b"], k=2)).note is None
    await learner.close()


async def test_ties_at_the_prior_are_not_exploration(store: LearningStore) -> None:
    learner = await make(store)
    results = [await learner.select(["a", "b", "c"]) for _ in range(40)]
    assert {r.selected[0].id for r in results} == {"a", "b", "c"}  # random among equals
    assert not any(r.explored for r in results)
    assert (await learner.metrics()).explored == 0
    await learner.close()


async def test_exploration_is_choosing_an_arm_below_the_best_mean(store: LearningStore) -> None:
    learner = await make(store, arm_priors={"good": (3, 2), "bad": (2, 3)})
    results = [await learner.select(["good", "bad"]) for _ in range(60)]
    for r in results:
        assert r.explored == (r.selected[0].id == "bad")
    assert 0 < sum(r.explored for r in results) < 60
    await learner.close()


async def test_feedback_moves_the_posterior_by_the_reward(store: LearningStore) -> None:
    learner = await make(store)
    result = await learner.select([Arm("a"), Arm("b")], k=2)
    fb = await learner.observe(ArmOutcome("a", reward=1.0, selection_id=result.selection_id))
    assert (fb.status, fb.alpha, fb.beta, fb.pulls) == ("applied", 2.0, 1.0, 1)
    fb = await learner.observe(ArmOutcome("b", reward=0.25, selection_id=result.selection_id))
    assert (fb.alpha, fb.beta) == (1.25, 1.75)
    (post,) = await learner.posteriors(["b"])
    assert (post.alpha, post.beta, post.pulls, post.reward_rate) == (1.25, 1.75, 1, 0.25)
    assert post.ci_low < post.mean < post.ci_high
    await learner.close()


async def test_duplicate_feedback_is_answered_duplicate_and_changes_nothing(
    store: LearningStore,
) -> None:
    learner = await make(store)
    sel = await learner.select(["a"])
    await learner.observe(ArmOutcome("a", "accepted", selection_id=sel.selection_id))
    before = await snapshot(learner)
    again = await learner.observe(ArmOutcome("a", "accepted", selection_id=sel.selection_id))
    assert again.status == "duplicate"
    assert await snapshot(learner) == before
    await learner.close()


async def test_conflicting_feedback_is_refused_and_the_first_answer_stands(
    store: LearningStore,
) -> None:
    learner = await make(store)
    sel = await learner.select(["a"])
    await learner.observe(ArmOutcome("a", "accepted", selection_id=sel.selection_id))
    before = await snapshot(learner)
    with pytest.raises(SelectionConflict) as err:
        await learner.observe(ArmOutcome("a", "rejected", selection_id=sel.selection_id))
    assert err.value.code == "SELECTION_CONFLICT"
    assert await snapshot(learner) == before
    await learner.close()


@pytest.mark.parametrize(
    "reward", [math.nan, math.inf, -math.inf, -0.01, 1.0000001, 2, -5, 1e308, "0.5", "1",
               True, False, None, [], 10**400],
)
async def test_bad_rewards_are_refused_and_change_nothing(
    store: LearningStore, reward: object
) -> None:
    learner = await make(store)
    sel = await learner.select(["a"])
    before = await snapshot(learner)
    with pytest.raises((InvalidReward, InvalidOutcome)) as err:
        await learner.observe(ArmOutcome("a", reward=reward,  # type: ignore[arg-type]
                                         selection_id=sel.selection_id))
    assert err.value.code in ("INVALID_REWARD", "INVALID_OUTCOME")
    assert await snapshot(learner) == before
    await learner.close()


async def test_accepted_rewards_include_the_edges(store: LearningStore) -> None:
    learner = await make(store)
    for i, reward in enumerate([0, 1, 0.37, -0.0, 1.0, 1e-300]):
        fb = await learner.observe(ArmOutcome("a", reward=reward, idempotency_key=f"k{i}"))
        assert fb.status == "applied"
    await learner.close()


async def test_forged_and_altered_selection_ids_are_refused_before_the_store(
    store: LearningStore,
) -> None:
    learner = await make(store)
    sel = await learner.select(["a", "b"], k=2)
    before = await snapshot(learner)
    token = sel.selection_id
    forged = [
        token[:-1] + ("A" if token[-1] != "A" else "B"),
        token[:-5],
        token + "x",
        token.replace(".", "..", 1),
        " " + token,
        SelectionSigner.random().issue("t", None, ["a"])[0],
        "",
        "q1.00000000.e30." + "A" * 43,
    ]
    for i in range(len(token)):
        flipped = chr(ord(token[i]) ^ 1)
        forged.append(token[:i] + flipped + token[i + 1:])
    for bad in forged:
        with pytest.raises(InvalidSelection):
            await learner.observe(ArmOutcome("a", reward=1.0, selection_id=bad))
    assert await snapshot(learner) == before
    await learner.close()


async def test_a_selection_id_of_another_learner_is_refused(store: LearningStore) -> None:
    one, two = await make(store, name="one"), await make(store, name="two")
    sel = await one.select(["a"])
    with pytest.raises(InvalidSelection, match="another learner"):
        await two.observe(ArmOutcome("a", reward=1.0, selection_id=sel.selection_id))
    await one.close()
    await two.close()


async def test_feedback_for_an_arm_outside_the_selection_is_refused(store: LearningStore) -> None:
    learner = await make(store)
    sel = await learner.select(["a", "b"], k=1)
    with pytest.raises(ArmNotInSelection):
        await learner.observe(ArmOutcome("z", reward=1.0, selection_id=sel.selection_id))
    await learner.close()


async def test_feedback_on_an_offered_arm_that_was_not_chosen_is_refused(
    store: LearningStore,
) -> None:
    learner = await make(store)
    sel = await learner.select(["a", "b", "c"], k=1)
    chosen = sel.selected[0].id
    other = next(a for a in "abc" if a != chosen)
    before = await snapshot(learner)
    with pytest.raises(ArmNotChosen, match="only the chosen arms") as err:
        await learner.observe(ArmOutcome(other, reward=0.0, selection_id=sel.selection_id))
    assert err.value.code == "ARM_NOT_CHOSEN"
    # all or nothing: the chosen arm's feedback in the same batch is not applied either
    with pytest.raises(ArmNotChosen):
        await learner.batch_observe([
            ArmOutcome(chosen, reward=1.0, selection_id=sel.selection_id),
            ArmOutcome(other, reward=0.0, selection_id=sel.selection_id),
        ])
    assert await snapshot(learner) == before
    fb = await learner.observe(ArmOutcome(chosen, reward=1.0, selection_id=sel.selection_id))
    assert fb.status == "applied"
    await learner.close()


async def test_a_learner_may_accept_feedback_on_offered_arms_it_did_not_choose(
    store: LearningStore,
) -> None:
    learner = await make(store, accept_unchosen_feedback=True)
    sel = await learner.select(["a", "b"], k=1)
    other = "b" if sel.selected[0].id == "a" else "a"
    fb = await learner.observe(ArmOutcome(other, reward=1.0, selection_id=sel.selection_id))
    assert fb.status == "applied"
    with pytest.raises(ArmNotInSelection):  # never offered: refused whatever the option
        await learner.observe(ArmOutcome("z", reward=1.0, selection_id=sel.selection_id))
    await learner.close()


async def test_a_large_select_signs_only_the_chosen_arms(store: LearningStore) -> None:
    learner = await make(store)
    sel = await learner.select([f"a{i}" for i in range(300)], k=1)
    claims = learner.verify_selection(sel.selection_id)
    assert claims.arms == (sel.selected[0].id,)
    assert claims.offered == ()
    await learner.close()


async def test_expired_selection_ids_are_refused(store: LearningStore) -> None:
    signer = SelectionSigner([b"k" * 32], ttl_s=1)
    learner = await Learner.create(LearnerConfig(name="t"), store, signer=signer)
    token, _ = signer.issue("t", None, ["a"])
    claims = signer.verify(token, "t")
    with pytest.raises(SelectionExpired):
        signer.verify(token, "t", now_ms=claims.issued_ms + 5000)
    await learner.close()


@pytest.mark.parametrize("arms", [[], ["a", "a"], "abc", [1, 2], [None], ["ok", 3]])
async def test_bad_candidate_lists_are_refused(store: LearningStore, arms: object) -> None:
    learner = await make(store)
    with pytest.raises((InvalidCandidates, InvalidName)):
        await learner.select(arms)  # type: ignore[arg-type]
    assert await learner.posteriors() == []
    await learner.close()


@pytest.mark.parametrize(
    "arm", ["", "x" * 129, "a\x00b", "tab\there", " lead", "trail ", "rtl\u202e",
            "zero\u200bwidth", "lone\ud800", "cafe\u0301"],
)
async def test_bad_arm_ids_are_refused(store: LearningStore, arm: str) -> None:
    learner = await make(store)
    with pytest.raises(InvalidName):
        await learner.select(["fine", arm])
    with pytest.raises(InvalidName):
        await learner.observe(ArmOutcome(arm, reward=1.0))
    assert await learner.posteriors() == []
    await learner.close()


async def test_identifiers_are_data_not_code(store: LearningStore) -> None:
    learner = await make(store)
    weird = ["x'); DROP TABLE evidence;--", "$1", "%s", "../../etc/passwd", "café", "ключ"]
    sel = await learner.select(weird, k=len(weird))
    for arm in weird:
        await learner.observe(ArmOutcome(arm, reward=1.0, selection_id=sel.selection_id))
    assert sorted(p.id for p in await learner.posteriors()) == sorted(weird)
    await learner.close()


@pytest.mark.parametrize("k", [0, -1, 1.5, True, "2", 10_001])
async def test_bad_k_is_refused(store: LearningStore, k: object) -> None:
    learner = await make(store)
    with pytest.raises(InvalidInput):
        await learner.select(["a"], k=k)  # type: ignore[arg-type]
    await learner.close()


async def test_token_budget_picks_the_best_arms_that_fit(store: LearningStore) -> None:
    learner = await make(store, strategy="mean")
    for arm, reward in [("big", 1.0), ("mid", 0.8), ("small", 0.5)]:
        for i in range(20):
            await learner.observe(ArmOutcome(arm, reward=reward, idempotency_key=f"{arm}{i}"))
    arms = [Arm("big", token_cost=100), Arm("mid", token_cost=30), Arm("small", token_cost=10)]
    result = await learner.select(arms, k=3, token_budget=45)
    assert [a.id for a in result.selected] == ["mid", "small"]
    with pytest.raises(BudgetTooSmall):
        await learner.select(arms, token_budget=5)
    # the same ids again (a cached candidate list) still get their costs checked
    with pytest.raises(InvalidCandidates):
        await learner.select([Arm("big", token_cost=-1), Arm("mid"), Arm("small")],
                             token_budget=45)
    await learner.close()


async def test_arm_priors_seed_what_is_known(store: LearningStore) -> None:
    learner = await make(store, arm_priors={"known-good": (9.0, 1.0)})
    await learner.select([Arm("seeded", prior=(2.0, 8.0)), "known-good", "plain"], k=3)
    got = {p.id: (p.alpha, p.beta) for p in await learner.posteriors()}
    assert got == {"seeded": (2.0, 8.0), "known-good": (9.0, 1.0), "plain": (1.0, 1.0)}
    await learner.close()


async def test_reward_models_map_outcome_words(store: LearningStore) -> None:
    learner = await make(store, reward_model=TernaryReward())
    fb = await learner.observe(ArmOutcome("a", "partial", idempotency_key="p"))
    assert fb.reward == 0.5
    with pytest.raises(InvalidOutcome):
        await learner.observe(ArmOutcome("a", "maybe", idempotency_key="q"))
    await learner.close()


async def test_tool_outcome_reward_scores_executions(store: LearningStore) -> None:
    learner = await make(store, reward_model="tool")
    fast = await learner.observe(ArmOutcome(
        "t", ToolExecution(success=True, latency_ms=100, rating=5), idempotency_key="1"))
    slow = await learner.observe(ArmOutcome(
        "t", ToolExecution(success=True, latency_ms=4000, rating=3), idempotency_key="2"))
    failed = await learner.observe(ArmOutcome(
        "t", ToolExecution(success=False), idempotency_key="3"))
    assert fast.reward == 1.0
    assert 0.0 < slow.reward < fast.reward
    assert failed.reward == 0.0
    await learner.close()


async def test_bare_feedback_with_an_idempotency_key_is_applied_once(
    store: LearningStore,
) -> None:
    learner = await make(store)
    first = await learner.observe(ArmOutcome("a", reward=1.0, idempotency_key="retry-1"))
    second = await learner.observe(ArmOutcome("a", reward=1.0, idempotency_key="retry-1"))
    third = await learner.observe(ArmOutcome("a", reward=1.0))
    fourth = await learner.observe(ArmOutcome("a", reward=1.0))
    assert [first.status, second.status, third.status, fourth.status] == [
        "applied", "duplicate", "applied", "applied"]
    assert (await learner.posteriors(["a"]))[0].pulls == 3
    await learner.close()


async def test_context_backoff_borrows_at_most_m_observations(store: LearningStore) -> None:
    learner = await make(store, context_backoff=4.0)
    for i in range(100):
        await learner.observe(ArmOutcome("a", reward=1.0, context={"task": "x"},
                                         idempotency_key=f"x{i}"))
    # a new context borrows 4 pseudo-observations of the 100 successes seen elsewhere
    (fresh,) = await learner.posteriors(["a"], context={"task": "y"})
    assert (fresh.alpha, fresh.beta) == pytest.approx((1.0 + 4.0, 1.0))
    # its own evidence dilutes the borrowed part: w = 4/(4+4) after 4 failures of its own
    for i in range(4):
        await learner.observe(ArmOutcome("a", reward=0.0, context={"task": "y"},
                                         idempotency_key=f"y{i}"))
    (own,) = await learner.posteriors(["a"], context={"task": "y"})
    assert (own.alpha, own.beta) == pytest.approx((1.0 + 4.0 * 0.5, 1.0 + 4.0))
    (glob,) = await learner.posteriors(["a"])
    assert (glob.alpha, glob.beta) == (101.0, 5.0)
    await learner.close()


async def test_contexts_are_keyed_canonically() -> None:
    a = canonical_context({"b": 1, "a": [1, {"z": 2, "y": 3}]})
    b = canonical_context({"a": [1, {"y": 3, "z": 2}], "b": 1})
    assert a is not None
    assert b is not None
    assert a.key == b.key
    assert canonical_context({}) is None


async def test_decay_arm_shrinks_toward_the_prior(store: LearningStore) -> None:
    learner = await make(store)
    for i in range(10):
        await learner.observe(ArmOutcome("a", reward=1.0, idempotency_key=f"k{i}"))
    post = await learner.decay_arm("a", 0.5)
    assert (post.alpha, post.beta) == (6.0, 1.0)
    with pytest.raises(UnknownArm):
        await learner.decay_arm("nope", 0.5)
    with pytest.raises(InvalidInput):
        await learner.decay_arm("a", 1.5)
    assert (await learner.replay()).ok
    await learner.close()


async def test_half_life_fades_old_evidence_lazily(store: LearningStore) -> None:
    """Time is injected: the clock moves two half-lives, nobody sleeps."""
    clock = FakeClock()
    learner = await Learner.create(LearnerConfig(name="t", seed=1, half_life_s=3600.0), store,
                                   signer=SIGNER, now=clock)
    for i in range(8):
        await learner.observe(ArmOutcome("a", reward=1.0, idempotency_key=f"k{i}"))
    (now,) = await learner.posteriors(["a"])
    clock.advance(2 * 3600.0)
    (later,) = await learner.posteriors(["a"])
    assert now.alpha == pytest.approx(9.0)
    assert later.alpha - 1.0 == pytest.approx((now.alpha - 1.0) / 4)
    assert (await learner.replay()).ok
    events = await store.events("t")
    assert {e.at for e in events} == {clock.now - 2 * 3600.0}
    await learner.close()


async def test_metrics_count_selections_feedback_and_exploration(store: LearningStore) -> None:
    learner = await make(store)
    for i in range(30):
        sel = await learner.select(["a", "b", "c"])
        arm = sel.selected[0].id
        await learner.observe(ArmOutcome(arm, reward=1.0 if arm == "a" else 0.0,
                                         selection_id=sel.selection_id))
        if i % 2:
            await learner.flush()
    m = await learner.metrics()
    assert m.selections == 30
    assert m.feedback == 30
    assert m.feedback_rate == 1.0
    assert 0 <= m.explored <= 30
    assert m.exploration_rate == m.explored / 30
    assert sum(a.selections for a in m.arms) == 30
    assert {a.id for a in m.arms} == {"a", "b", "c"}
    await learner.close()


async def test_reset_previews_then_returns_arms_to_their_prior(store: LearningStore) -> None:
    learner = await make(store)
    for i in range(5):
        await learner.observe(ArmOutcome("a", reward=1.0, idempotency_key=f"k{i}"))
    preview = await learner.reset(["a"], dry_run=True)
    assert (preview.applied, preview.arms, preview.evidence) == (False, ("a",), 5.0)
    assert (await learner.posteriors(["a"]))[0].alpha == 6.0
    done = await learner.reset(["a"])
    assert done.applied
    assert (await learner.posteriors(["a"]))[0].alpha == 1.0
    assert (await learner.replay()).ok
    await learner.close()


async def test_top_arms_rank_by_posterior_mean(store: LearningStore) -> None:
    learner = await make(store)
    for arm, wins in [("a", 1), ("b", 8), ("c", 4)]:
        for i in range(10):
            await learner.observe(ArmOutcome(arm, reward=float(i < wins),
                                             idempotency_key=f"{arm}{i}"))
    assert [p.id for p in await learner.top_arms(2)] == ["b", "c"]
    await learner.close()


async def test_hundreds_of_concurrent_observes_are_all_counted(store: LearningStore) -> None:
    learner = await make(store)
    sels = [await learner.select(["a", "b"], k=2) for _ in range(150)]
    await asyncio.gather(*(
        learner.observe(ArmOutcome(arm, reward=1.0, selection_id=s.selection_id))
        for s in sels for arm in ("a", "b")
    ))
    assert [p.pulls for p in await learner.posteriors()] == [150, 150]
    assert (await learner.replay()).ok
    await learner.close()


async def test_thompson_sampling_prefers_the_clearly_better_arm(store: LearningStore) -> None:
    learner = await make(store, arm_priors={"good": (1000.0, 10.0), "bad": (10.0, 1000.0)})
    picks = Counter([(await learner.select(["good", "bad"])).selected[0].id
                     for _ in range(500)])
    assert picks["good"] >= 495
    await learner.close()


async def test_thompson_sampling_spreads_equal_arms_evenly() -> None:
    from qortex_mcp.learning import MemoryLearningStore

    learner = await Learner.create(LearnerConfig(seed=3), MemoryLearningStore())
    picks = Counter([(await learner.select(["a", "b", "c", "d"])).selected[0].id
                     for _ in range(8000)])
    expected = 2000
    sigma = math.sqrt(8000 * 0.25 * 0.75)
    assert all(abs(picks[a] - expected) < 5 * sigma for a in "abcd"), picks
    await learner.close()


async def test_selection_ids_survive_a_restart(tmp_path: Path) -> None:
    from qortex_mcp.learning import SqliteLearningStore

    signer = SelectionSigner([b"s" * 32])
    first = await Learner.create(LearnerConfig(name="p"), SqliteLearningStore(
        tmp_path / "db.sqlite"), signer=signer)
    sel = await first.select(["a", "b"], k=2)
    await first.observe(ArmOutcome("a", reward=1.0, selection_id=sel.selection_id))
    await first.close()
    await first.store.close()
    second = await Learner.create(LearnerConfig(name="p"), SqliteLearningStore(
        tmp_path / "db.sqlite"), signer=SelectionSigner([b"s" * 32]))
    assert (await second.posteriors(["a"]))[0].alpha == 2.0
    dup = await second.observe(ArmOutcome("a", reward=1.0, selection_id=sel.selection_id))
    new = await second.observe(ArmOutcome("b", reward=0.0, selection_id=sel.selection_id))
    assert (dup.status, new.status) == ("duplicate", "applied")
    await second.close()
    await second.store.close()


async def test_a_closed_learner_says_so(store: LearningStore) -> None:
    learner = await make(store)
    await learner.close()
    with pytest.raises(ClosedError):
        await learner.select(["a"])


async def test_select_draws_one_sample_per_candidate_without_touching_the_store(
    store: LearningStore,
) -> None:
    learner = await make(store)
    events = len(await store.events(learner.name))
    for _ in range(20):
        await learner.select([f"a{i}" for i in range(50)], k=3)
    assert len(await store.events(learner.name)) == events
    assert np.isfinite([p.mean for p in await learner.posteriors()]).all()
    await learner.close()


async def test_a_refused_first_call_leaves_no_trace_in_the_store(store: LearningStore) -> None:
    learner = await make(store, name="fresh")
    with pytest.raises(InvalidName):
        await learner.select(["ok", "bad\x00id"])
    with pytest.raises(InvalidReward):
        await learner.observe(ArmOutcome("ok", reward=2.0))
    await learner.flush()
    assert "fresh" not in {s.name for s in await store.learners()}
    await learner.observe(ArmOutcome("ok", reward=1.0))
    assert "fresh" in {s.name for s in await store.learners()}
    await learner.close()


async def test_a_remembered_selection_id_is_still_checked_for_learner_and_age(
    store: LearningStore,
) -> None:
    signer = SelectionSigner([b"r" * 32], ttl_s=60)
    token, claims = signer.issue("t", None, ["a"])
    assert signer.verify(token, "t") == claims  # authenticated, then remembered
    assert signer.verify(token, "t") == claims
    with pytest.raises(InvalidSelection, match="another learner"):
        signer.verify(token, "u")
    with pytest.raises(SelectionExpired):
        signer.verify(token, "t", now_ms=claims.issued_ms + 61_000)
    altered = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
    with pytest.raises(InvalidSelection):
        signer.verify(altered, "t")
