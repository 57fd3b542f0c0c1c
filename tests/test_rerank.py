"""The reranker and its feedback, through the library API (``qortex_mcp.rerank``)."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qortex_mcp.errors import (
    ArmNotInSelection,
    ConfigError,
    InvalidCandidates,
    InvalidInput,
    InvalidName,
    InvalidSelection,
    SelectionConflict,
)
from qortex_mcp.learning import (
    Learner,
    LearnerConfig,
    LearningStore,
    MemoryLearningStore,
    SelectionSigner,
)
from qortex_mcp.learning.context import backoff_weight, canonical_context
from qortex_mcp.learning.stats import beta_interval
from qortex_mcp.learning.stores import SqliteLearningStore
from qortex_mcp.rerank import PosteriorReranker, RerankResult, robust_posterior
from qortex_mcp.rerank.clicks import ClickModel, reciprocal_rank
from qortex_mcp.rerank.ranking import cap_moves

pytestmark = pytest.mark.anyio

SIGNER = SelectionSigner.random()


async def make_learner(store: LearningStore | None = None, **config: Any) -> Learner:
    cfg = LearnerConfig(name=str(config.pop("name", "docs")), seed=config.pop("seed", 1),
                        **config)
    return await Learner.create(cfg, store or MemoryLearningStore(), signer=SIGNER)


@pytest.fixture
async def learner() -> AsyncIterator[Learner]:
    lr = await make_learner()
    try:
        yield lr
    finally:
        await lr.close()


def hits(n: int = 10, top: float = 10.0) -> list[dict[str, Any]]:
    """A retriever's answer: ids d0..d{n-1}, scores falling linearly from ``top`` to 1."""
    return [{"id": f"d{i}", "score": top - i * (top - 1.0) / max(n - 1, 1), "text": f"doc {i}"}
            for i in range(n)]


def ids_of(result: RerankResult[Any]) -> list[str]:
    return [r["id"] for r in result.results]


async def accept(reranker: PosteriorReranker, doc: str, times: int,
                 context: dict[str, Any] | None = None, outcome: str = "accepted") -> None:
    for _ in range(times):
        ranked = await reranker.rerank(hits(), context)
        await reranker.feedback(ranked.selection_id, {doc: outcome})


# --- ordering -------------------------------------------------------------------------------


async def test_without_evidence_the_retrieval_order_is_kept(learner: Learner) -> None:
    ranked = await PosteriorReranker(learner).rerank(hits())
    assert ids_of(ranked) == [f"d{i}" for i in range(10)]
    assert learner.verify_selection(ranked.selection_id).arms == tuple(ids_of(ranked))


async def test_results_given_out_of_order_are_ranked_by_retrieval_score(
        learner: Learner) -> None:
    shuffled = [hits()[i] for i in (3, 0, 9, 5, 1, 2, 8, 4, 7, 6)]
    ranked = await PosteriorReranker(learner).rerank(shuffled)
    assert ids_of(ranked) == [f"d{i}" for i in range(10)]


async def test_equal_scores_keep_the_input_order(learner: Learner) -> None:
    flat = [{"id": f"x{i}", "score": 0.5} for i in (4, 2, 7, 1)]
    ranked = await PosteriorReranker(learner).rerank(flat)
    assert ids_of(ranked) == ["x4", "x2", "x7", "x1"]


async def test_without_scores_the_input_order_is_the_retrieval_order(learner: Learner) -> None:
    reranker = PosteriorReranker(learner, score_key=None)
    items = [{"id": f"n{i}"} for i in range(6)]
    ranked = await reranker.rerank(items, explain=True)
    assert ids_of(ranked) == [f"n{i}" for i in range(6)]
    assert ranked.explanations is not None
    assert [e.base_score for e in ranked.explanations] == pytest.approx(
        [1.0, 0.8, 0.6, 0.4, 0.2, 0.0])


def log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def mixture_mean(s: float, succ: float, fail: float, m: float = 4.0,
                 trust: float = 0.8, d: float = 0.25) -> tuple[float, float]:
    """The module's scoring rule, written out independently: the posterior mean and the
    weight of the retrieval prior Beta(1 + m s, 1 + m (1 - s)) in the mixture with the
    nearly flat Beta(d mu, d (1 - mu)) of the same mean."""
    a, b = 1 + m * s, 1 + m * (1 - s)
    mu = a / (a + b)
    ad, bd = d * mu, d * (1 - mu)
    like = math.exp(log_beta(a + succ, b + fail) - log_beta(a, b))
    like_d = math.exp(log_beta(ad + succ, bd + fail) - log_beta(ad, bd))
    w = trust * like / (trust * like + (1 - trust) * like_d)
    n = succ + fail
    return w * (a + succ) / (a + b + n) + (1 - w) * (ad + succ) / (d + n), w


async def test_items_are_ordered_by_posterior_mean_with_the_score_prior(
        learner: Learner) -> None:
    reranker = PosteriorReranker(learner)
    await accept(reranker, "d6", 3)
    await accept(reranker, "d1", 2, outcome="rejected")
    ranked = await reranker.rerank(hits(), explain=True)
    assert ranked.explanations is not None
    # By hand: s = (score - min) / (max - min), then the mixture posterior.
    expected, weights = {}, {}
    for i in range(10):
        s = 1.0 - i / 9
        succ = 3.0 if i == 6 else 0.0
        fail = 2.0 if i == 1 else 0.0
        expected[f"d{i}"], weights[f"d{i}"] = mixture_mean(s, succ, fail)
    assert ids_of(ranked) == sorted(expected, key=lambda d: (-expected[d], int(d[1:])))
    for e in ranked.explanations:
        assert e.mean == pytest.approx(expected[e.id], rel=1e-7)
        assert e.prior_weight == pytest.approx(weights[e.id], rel=1e-7)
        assert (e.successes, e.failures) == ((3.0, 0.0) if e.id == "d6" else (
            (0.0, 2.0) if e.id == "d1" else (0.0, 0.0)))
    # Evidence against the score takes the retrieval prior's weight away; none keeps it.
    assert weights["d6"] < 0.8
    assert weights["d1"] < 0.8
    assert weights["d3"] == 0.8


async def test_full_trust_is_the_plain_retrieval_prior(learner: Learner) -> None:
    reranker = PosteriorReranker(learner, prior_trust=1.0)
    await accept(reranker, "d6", 3)
    await accept(reranker, "d1", 2, outcome="rejected")
    ranked = await reranker.rerank(hits(), explain=True)
    assert ranked.explanations is not None
    expected = {}
    for i in range(10):
        s = 1.0 - i / 9
        succ = 3.0 if i == 6 else 0.0
        fail = 2.0 if i == 1 else 0.0
        expected[f"d{i}"] = (1 + 4 * s + succ) / (2 + 4 + succ + fail)
    assert ids_of(ranked) == sorted(expected, key=lambda d: (-expected[d], int(d[1:])))
    for e in ranked.explanations:
        assert e.mean == pytest.approx(expected[e.id])
        assert (e.alpha, e.beta) == pytest.approx((e.prior_alpha + e.successes,
                                                   e.prior_beta + e.failures))
        assert e.prior_weight == 1.0


async def test_accepted_results_rise_and_rejected_ones_drop(learner: Learner) -> None:
    reranker = PosteriorReranker(learner)
    # d8's prior is Beta(1.44, 4.56); ten accepts lift its mean above d2's prior mean.
    await accept(reranker, "d8", 10)
    await accept(reranker, "d0", 5, outcome="rejected")
    order = ids_of(await reranker.rerank(hits()))
    assert order.index("d8") < 3
    assert order.index("d0") >= 3
    # Items without evidence keep the retrieval order among themselves.
    rest = [d for d in order if d not in ("d8", "d0")]
    assert rest == sorted(rest, key=lambda d: int(d[1:]))


async def test_a_stronger_prior_needs_more_evidence_to_move_an_item(learner: Learner) -> None:
    weak, strong = PosteriorReranker(learner, prior_strength=1), PosteriorReranker(
        learner, prior_strength=40)
    await accept(weak, "d9", 3)
    assert ids_of(await weak.rerank(hits())).index("d9") < ids_of(
        await strong.rerank(hits())).index("d9")


async def test_evidence_from_another_context_counts_at_most_m_observations(
        learner: Learner) -> None:
    reranker = PosteriorReranker(learner)
    await accept(reranker, "d9", 10, {"topic": "sql"})
    await accept(reranker, "d0", 10, {"topic": "sql"}, outcome="rejected")
    here = await reranker.rerank(hits(), {"topic": "sql"}, explain=True)
    other = await reranker.rerank(hits(), {"topic": "gardening"}, explain=True)
    assert here.explanations is not None
    assert other.explanations is not None
    m = learner.config.context_backoff
    for e in other.explanations:
        assert e.successes + e.failures <= m + 1e-9
    d9_here = next(e for e in here.explanations if e.id == "d9")
    d9_other = next(e for e in other.explanations if e.id == "d9")
    assert d9_here.successes == pytest.approx(10.0)
    # The rule: another context's n observations count min(1, m / n) * m / (m + 0) each.
    assert d9_other.successes == pytest.approx(10.0 * min(1.0, m / 10.0))
    # Borrowed evidence convinces less: four accepts are enough to lift the last result to
    # the top in the other context too, but with less certainty than ten in its own.
    assert d9_here.mean > d9_other.mean
    assert d9_here.ci_low > d9_other.ci_low


async def test_contexts_stay_separate_when_back_off_is_off() -> None:
    lr = await make_learner(context_backoff=0.0)
    try:
        reranker = PosteriorReranker(lr)
        await accept(reranker, "d9", 10, {"topic": "sql"})
        assert ids_of(await reranker.rerank(hits(), {"topic": "cooking"})) == [
            f"d{i}" for i in range(10)]
    finally:
        await lr.close()


async def test_evidence_in_a_context_follows_the_documented_back_off_rule(
        learner: Learner) -> None:
    reranker = PosteriorReranker(learner)
    await accept(reranker, "d3", 6, {"topic": "a"})        # other-context evidence: 6 / 0
    await accept(reranker, "d3", 2, {"topic": "b"}, "rejected")  # own: 0 / 2
    s, f = await learner.evidence(["d3"], {"topic": "b"})
    m = learner.config.context_backoff
    w = min(1.0, m / 6.0) * m / (m + 2.0)
    assert (float(s[0]), float(f[0])) == pytest.approx((w * 6.0, 2.0))


# --- how much the retrieval score counts: learned per item from its evidence ---------------

LIST_SHAPES = {
    # 25 results, best first.
    "evenly spaced": [25.0 - i for i in range(25)],
    "dominant top hit": [10.0] + [1.0 - 0.01 * i for i in range(24)],
    "top cluster": [10.0, 9.9, 9.8] + [1.0 - 0.01 * i for i in range(22)],
}


def shaped(shape: str) -> list[dict[str, Any]]:
    return [{"id": f"r{i}", "score": x} for i, x in enumerate(LIST_SHAPES[shape])]


async def answers_until(learner: Learner, results: list[dict[str, Any]], doc: str,
                        outcome: str, done: Any, most: int = 5, trust: float = 0.8) -> int:
    """Rerank (explore off), answer ``doc`` only, repeat: how many answers until ``done``
    holds for the order (or ``most + 1``). The other results get no feedback."""
    reranker = PosteriorReranker(learner, prior_trust=trust)
    for answers in range(most + 1):
        ranked = await reranker.rerank(results)
        if done(ids_of(ranked)):
            return answers
        await reranker.feedback(ranked.selection_id, {doc: outcome})
    return most + 1


@pytest.mark.parametrize("shape", list(LIST_SHAPES))
async def test_an_accepted_result_reaches_the_top_3_within_5_accepts_from_any_position(
        shape: str) -> None:
    results = shaped(shape)
    needed = {}
    for position in range(25):
        lr = await make_learner()
        try:
            doc = ids_of(await PosteriorReranker(lr).rerank(results))[position]
            needed[position + 1] = await answers_until(
                lr, results, doc, "accepted", lambda order, d=doc: d in order[:3])
        finally:
            await lr.close()
    assert max(needed.values()) <= 5, needed
    # Before, the retrieval prior alone kept unexamined top results above (a result at rank
    # 12 of the evenly spaced list never got there in 5 accepts).
    lr = await make_learner()
    try:
        plain = PosteriorReranker(lr, prior_trust=1.0)
        if shape == "evenly spaced":
            for _ in range(5):
                ranked = await plain.rerank(results)
                await plain.feedback(ranked.selection_id, {"r11": "accepted"})
            assert "r11" not in ids_of(await plain.rerank(results))[:3]
    finally:
        await lr.close()


@pytest.mark.parametrize("shape", list(LIST_SHAPES))
@pytest.mark.parametrize("position", [1, 2, 3])
async def test_a_rejected_top_result_leaves_the_top_3_within_5_rejections(
        shape: str, position: int) -> None:
    results = shaped(shape)
    lr = await make_learner()
    try:
        doc = ids_of(await PosteriorReranker(lr).rerank(results))[position - 1]
        needed = await answers_until(lr, results, doc, "rejected",
                                     lambda order: doc not in order[:3])
        assert needed <= 5
    finally:
        await lr.close()


async def test_a_dominant_top_hit_held_on_for_about_24_rejections_with_full_trust() -> None:
    needed = {}
    for trust in (0.8, 1.0):
        lr = await make_learner()
        try:
            needed[trust] = await answers_until(
                lr, shaped("dominant top hit"), "r0", "rejected",
                lambda order: "r0" not in order[:3], most=40, trust=trust)
        finally:
            await lr.close()
    assert needed[0.8] <= 5
    assert needed[1.0] > 20


evidence_lists = st.integers(min_value=1, max_value=30).flatmap(lambda n: st.tuples(
    st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=n, max_size=n),
    st.lists(st.floats(0.0, 50.0), min_size=n, max_size=n),
    st.lists(st.floats(0.0, 50.0), min_size=n, max_size=n),
    st.integers(min_value=0, max_value=n - 1),
    st.floats(0.0, 1.0), st.floats(0.0, 20.0), st.floats(0.01, 5.0),
))


def scored(raw: list[float], m: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = np.asarray(raw)
    span = x.max() - x.min()
    s = (x - x.min()) / span if span > 0 else np.full(len(x), 0.5)
    base_rank = np.empty(len(x), dtype=np.int64)
    base_rank[np.argsort(-x, kind="stable")] = np.arange(len(x))
    return 1.0 + m * s, 1.0 + m * (1.0 - s), base_rank


@settings(max_examples=300, deadline=None)
@given(evidence_lists)
def test_without_evidence_the_mean_is_the_retrieval_prior_mean(case: Any) -> None:
    raw, _, _, _, trust, m, _ = case
    a0, b0, base_rank = scored(raw, m)
    zero = np.zeros(len(raw))
    mean, weight, _ = robust_posterior(a0, b0, zero, zero, trust)
    assert mean == pytest.approx(a0 / (a0 + b0), rel=1e-12)
    assert (weight == trust).all()
    order = np.lexsort((base_rank, -mean))
    assert base_rank[order].tolist() == list(range(len(raw)))   # the retrieval order


@settings(max_examples=300, deadline=None)
@given(evidence_lists)
def test_an_accept_never_lowers_an_item_and_a_rejection_never_raises_it(case: Any) -> None:
    raw, succ_l, fail_l, i, trust, m, step = case
    a0, b0, base_rank = scored(raw, m)
    succ, fail = np.asarray(succ_l), np.asarray(fail_l)
    before, _, _ = robust_posterior(a0, b0, succ, fail, trust)
    plus_s, plus_f = succ.copy(), fail.copy()
    plus_s[i] += step
    plus_f[i] += step
    up, _, _ = robust_posterior(a0, b0, plus_s, fail, trust)
    down, _, _ = robust_posterior(a0, b0, succ, plus_f, trust)
    tol = 1e-9
    assert up[i] >= before[i] - tol
    assert down[i] <= before[i] + tol
    others = np.arange(len(raw)) != i
    # One item's evidence changes no other item's score: nobody else moves.
    assert (up[others] == before[others]).all()
    assert (down[others] == before[others]).all()

    def rank(mean: np.ndarray) -> int:
        return int(np.nonzero(np.lexsort((base_rank, -mean)) == i)[0][0])

    if up[i] > before[i] + tol:
        assert rank(up) <= rank(before)
    if down[i] < before[i] - tol:
        assert rank(down) >= rank(before)


@settings(max_examples=200, deadline=None)
@given(evidence_lists)
def test_the_mean_lies_between_the_two_parts_and_full_trust_is_the_plain_prior(
        case: Any) -> None:
    raw, succ_l, fail_l, _, trust, m, _ = case
    a0, b0, _ = scored(raw, m)
    succ, fail = np.asarray(succ_l), np.asarray(fail_l)
    mean, weight, (alpha, beta, alpha_d, beta_d) = robust_posterior(a0, b0, succ, fail, trust)
    assert ((weight >= 0) & (weight <= 1)).all()
    lo = np.minimum(alpha / (alpha + beta), alpha_d / (alpha_d + beta_d))
    hi = np.maximum(alpha / (alpha + beta), alpha_d / (alpha_d + beta_d))
    assert ((mean >= lo - 1e-12) & (mean <= hi + 1e-12)).all()
    plain, w1, _ = robust_posterior(a0, b0, succ, fail, 1.0)
    assert plain == pytest.approx((a0 + succ) / (a0 + b0 + succ + fail), rel=1e-12)
    assert (w1 == 1.0).all()


async def test_the_learned_weight_survives_a_restart(tmp_path: Any) -> None:
    """Nothing but the per-item evidence is needed: a new process on the same store ranks
    and explains exactly as before."""
    results = shaped("evenly spaced")
    explained = []
    for run in range(2):
        store = SqliteLearningStore(tmp_path / "state.db")
        lr = await make_learner(store)
        try:
            reranker = PosteriorReranker(lr)
            if run == 0:
                for _ in range(3):
                    ranked = await reranker.rerank(results)
                    await reranker.feedback(ranked.selection_id, {"r20": "accepted",
                                                                  "r0": "rejected"})
            ranked = await reranker.rerank(results, explain=True)
            assert ranked.explanations is not None
            explained.append([(e.id, e.mean, e.prior_weight) for e in ranked.explanations])
        finally:
            await lr.close()
            await store.close()
    assert explained[0] == explained[1]
    weights = {doc: w for doc, _, w in explained[1]}
    assert weights["r20"] < 0.5
    assert weights["r0"] < 0.8
    assert weights["r5"] == 0.8


# --- explain --------------------------------------------------------------------------------


async def test_explain_gives_every_field_per_item(learner: Learner) -> None:
    reranker = PosteriorReranker(learner)
    await accept(reranker, "d5", 2)
    ranked = await reranker.rerank(hits(), explain=True)
    assert ranked.explanations is not None
    assert [e.id for e in ranked.explanations] == ids_of(ranked)
    for new_rank, e in enumerate(ranked.explanations, 1):
        base = int(e.id[1:])
        s = 1.0 - base / 9
        assert e.new_rank == new_rank
        assert e.base_rank == base + 1
        assert e.base_score == pytest.approx(10.0 - base)
        assert (e.prior_alpha, e.prior_beta) == pytest.approx((1 + 4 * s, 1 + 4 * (1 - s)))
        assert (e.successes, e.failures) == ((2.0 if e.id == "d5" else 0.0), 0.0)
        assert e.mean == pytest.approx(mixture_mean(s, e.successes, e.failures)[0], rel=1e-7)
        # alpha, beta: one Beta with the mixture posterior's mean and variance.
        assert e.mean == pytest.approx(e.alpha / (e.alpha + e.beta))
        if e.id != "d5":
            assert e.mean == pytest.approx(e.prior_alpha / (e.prior_alpha + e.prior_beta))
            assert e.prior_weight == 0.8
            # The mixture is wider than the retrieval prior alone.
            assert e.alpha + e.beta < e.prior_alpha + e.prior_beta
        assert (e.ci_low, e.ci_high) == pytest.approx(beta_interval(e.alpha, e.beta))
        assert e.ci_low < e.mean < e.ci_high
        assert e.sample is None


async def test_without_explain_there_are_no_explanations(learner: Learner) -> None:
    assert (await PosteriorReranker(learner).rerank(hits())).explanations is None


# --- explore --------------------------------------------------------------------------------


async def test_explore_orders_by_thompson_samples_from_the_learner_generator() -> None:
    orders = []
    for _ in range(2):
        lr = await make_learner(seed=42)
        try:
            reranker = PosteriorReranker(lr)
            for d in ("d2", "d4", "d6"):
                await accept(reranker, d, 1)
            runs = []
            for _ in range(30):
                ranked = await reranker.rerank(hits(), explore=True, explain=True)
                assert ranked.explanations is not None
                samples = {e.id: e.sample for e in ranked.explanations}
                learned = [d for d in ids_of(ranked) if d in ("d2", "d4", "d6")]
                # The learned items are in the order of their samples.
                assert learned == sorted(learned, key=lambda d: -samples[d])  # type: ignore[operator]
                runs.append(tuple(ids_of(ranked)))
            orders.append(runs)
        finally:
            await lr.close()
    assert orders[0] == orders[1]             # seeded: the same draws
    assert len(set(orders[0])) > 1            # sampled: the order varies between calls


async def test_explore_keeps_items_without_evidence_in_retrieval_order(learner: Learner) -> None:
    reranker = PosteriorReranker(learner)
    await accept(reranker, "d7", 2)
    for _ in range(20):
        order = ids_of(await reranker.rerank(hits(), explore=True))
        rest = [d for d in order if d != "d7"]
        assert rest == [f"d{i}" for i in range(10) if i != 7]


# --- move cap -------------------------------------------------------------------------------


async def test_the_move_cap_limits_how_far_an_item_moves_per_call(learner: Learner) -> None:
    free, capped = PosteriorReranker(learner), PosteriorReranker(learner, max_move=2)
    await accept(free, "d9", 30)
    assert ids_of(await free.rerank(hits()))[0] == "d9"
    order = ids_of(await capped.rerank(hits()))
    assert order.index("d9") == 7
    assert all(abs(pos - int(d[1:])) <= 2 for pos, d in enumerate(order))


@settings(max_examples=200, deadline=None)
@given(st.permutations(list(range(12))), st.permutations(list(range(12))),
       st.integers(min_value=0, max_value=12))
def test_capped_orders_are_permutations_within_the_cap(
        order: list[int], base: list[int], cap: int) -> None:
    base_rank = np.array(base, dtype=np.int64)
    out = cap_moves(np.array(order, dtype=np.int64), base_rank, cap)
    assert sorted(out.tolist()) == list(range(12))
    assert all(abs(pos - int(base_rank[item])) <= cap for pos, item in enumerate(out.tolist()))
    if cap >= 11:
        assert out.tolist() == order


# --- results of any shape, validation -------------------------------------------------------


@dataclass
class Hit:
    doc_id: str
    bm25: float


async def test_dataclasses_objects_and_callables_are_read_as_configured(
        learner: Learner) -> None:
    items = [Hit(f"h{i}", 5.0 - i) for i in range(5)]
    by_attr = PosteriorReranker(learner, id_key="doc_id", score_key="bm25")
    by_fn = PosteriorReranker(learner, id_key=lambda h: h.doc_id, score_key=lambda h: -h.bm25)
    assert [h.doc_id for h in (await by_attr.rerank(items)).results] == [
        "h0", "h1", "h2", "h3", "h4"]
    # A score function can turn "lower is better" around.
    assert [h.doc_id for h in (await by_fn.rerank(items)).results] == [
        "h4", "h3", "h2", "h1", "h0"]


@pytest.mark.parametrize("bad", [
    [{"id": "a", "score": 1.0}, {"id": "a", "score": 0.5}],
    [{"id": 7, "score": 1.0}],
    [{"id": "a"}],
    [{"id": "a", "score": "1.0"}],
    [{"id": "a", "score": True}],
    [{"id": "a", "score": float("nan")}],
    "abc",
])
async def test_malformed_results_are_refused(learner: Learner, bad: Any) -> None:
    with pytest.raises(InvalidCandidates):
        await PosteriorReranker(learner).rerank(bad)


async def test_bad_ids_limits_and_options_are_refused(learner: Learner) -> None:
    with pytest.raises(InvalidName):
        await PosteriorReranker(learner).rerank([{"id": " padded", "score": 1.0}])
    with pytest.raises(InvalidName):  # also beyond the display cut
        await PosteriorReranker(learner).rerank(
            [{"id": "ok", "score": 1.0}, {"id": "bad\n", "score": 0.5}], limit=1)
    with pytest.raises(InvalidInput):
        await PosteriorReranker(learner).rerank(hits(), limit=0)
    with pytest.raises(ConfigError):
        PosteriorReranker(learner, prior_strength=-1)
    with pytest.raises(ConfigError):
        PosteriorReranker(learner, max_move=-1)
    for trust in (-0.1, 1.5, True, float("nan"), "0.8"):
        with pytest.raises(ConfigError):
            PosteriorReranker(learner, prior_trust=trust)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        ClickModel(evidence_weight=0)
    with pytest.raises(ConfigError):
        ClickModel(examination=[1.0, 1.5])


async def test_an_empty_result_list_comes_back_empty_with_a_selection_id(
        learner: Learner) -> None:
    ranked: RerankResult[dict[str, Any]] = await PosteriorReranker(learner).rerank([])
    assert ranked.results == []
    assert learner.verify_selection(ranked.selection_id).arms == ()


async def test_limit_shows_and_signs_only_the_top_results(learner: Learner) -> None:
    reranker = PosteriorReranker(learner)
    ranked = await reranker.rerank(hits(), limit=3)
    assert ids_of(ranked) == ["d0", "d1", "d2"]
    assert learner.verify_selection(ranked.selection_id).arms == ("d0", "d1", "d2")
    with pytest.raises(ArmNotInSelection):
        await reranker.feedback(ranked.selection_id, {"d5": "accepted"})
    # A result below the cut still rises into view once it has evidence.
    for _ in range(12):
        await reranker.feedback((await reranker.rerank(hits())).selection_id,
                                {"d9": "accepted"})
    assert "d9" in ids_of(await reranker.rerank(hits(), limit=3))


# --- the hook -------------------------------------------------------------------------------


async def test_a_wrapped_sync_retriever_comes_back_reranked_with_a_selection_id(
        learner: Learner) -> None:
    reranker = PosteriorReranker(learner)
    calls: list[tuple[str, int]] = []

    def search(query: str, k: int = 10) -> list[dict[str, Any]]:
        """Find documents."""
        calls.append((query, k))
        return hits(k)

    wrapped = reranker.wrap(search, context=lambda query, k=10: {"topic": query.split()[0]})
    ranked = await wrapped("sql joins", k=6)
    assert calls == [("sql joins", 6)]
    assert ids_of(ranked) == [f"d{i}" for i in range(6)]
    claims = learner.verify_selection(ranked.selection_id)
    assert json.loads(claims.context or "null") == {"topic": "sql"}
    assert wrapped.__name__ == "search"
    assert wrapped.__doc__ == "Find documents."
    await reranker.feedback(ranked.selection_id, {"d5": "accepted"})
    s, _ = await learner.evidence(["d5"], {"topic": "sql"})
    assert float(s[0]) == 1.0


async def test_a_wrapped_async_retriever_and_the_decorator_form(learner: Learner) -> None:
    reranker = PosteriorReranker(learner)

    @reranker.hook(context={"collection": "kb"}, limit=4)
    async def search(query: str) -> list[dict[str, Any]]:
        await asyncio.sleep(0)
        return hits()

    ranked = await search("anything")
    assert isinstance(ranked, RerankResult)
    assert ids_of(ranked) == ["d0", "d1", "d2", "d3"]
    claims = learner.verify_selection(ranked.selection_id)
    assert json.loads(claims.context or "null") == {"collection": "kb"}


async def test_a_sync_retriever_can_run_in_a_worker_thread(learner: Learner) -> None:
    import threading

    where: list[str] = []

    def search(query: str) -> list[dict[str, Any]]:
        where.append(threading.current_thread().name)
        return hits(3)

    ranked = await PosteriorReranker(learner).wrap(search, to_thread=True)("q")
    assert ids_of(ranked) == ["d0", "d1", "d2"]
    assert where
    assert where[0] != threading.main_thread().name


# --- feedback -------------------------------------------------------------------------------


async def test_explicit_feedback_teaches_only_the_items_it_names(learner: Learner) -> None:
    learner2 = await make_learner(name="binary", reward_model="binary")
    try:
        for lr in (learner, learner2):
            reranker = PosteriorReranker(lr)
            ranked = await reranker.rerank(hits())
            out = await reranker.feedback(ranked.selection_id, {
                "d4": "accepted", "d1": "rejected", "d7": "partial", "d9": 0.25})
            assert [r.status for r in out] == ["applied"] * 4
            s, f = await lr.evidence([f"d{i}" for i in range(10)])
            half = 0.0 if lr is learner2 else 0.5  # partial: the learner's reward model
            assert s.tolist() == [0, 0, 0, 0, 1, 0, 0, half, 0, 0.25]
            assert f.tolist() == [0, 1, 0, 0, 0, 0, 0, 1 - half, 0, 0.75]
    finally:
        await learner2.close()


def expected_skip_weights(means: tuple[float, ...], lowest: int, tau: float) -> list[float]:
    """The click model's formula (qortex_mcp.rerank.clicks), written out independently."""
    out = []
    for i in range(lowest):
        e = 1.0 / (i + 1)
        th = means[i]
        q = e * (1 - th) / (1 - e * th)
        p = 1.0 - math.prod(1 - th_j / (j + 1) for j, th_j in enumerate(means) if j > i)
        out.append(tau * min(1.0, q / p))
    return out


async def test_click_feedback_weights_skips_from_the_signed_ranks_and_means(
        learner: Learner) -> None:
    reranker = PosteriorReranker(learner)
    await accept(reranker, "d2", 2)  # some evidence, so the signed means differ
    ranked = await reranker.rerank(hits())
    claims = learner.verify_selection(ranked.selection_id)
    order = list(claims.arms)
    assert len(claims.means) == 10
    before_s, before_f = await learner.evidence(order)
    # Accepted: the items shown at ranks 3 and 6.
    out = await reranker.feedback(ranked.selection_id, {order[2]: "accepted",
                                                        order[5]: "accepted"},
                                  clicks_only=True)
    assert [r.arm_id for r in out] == [order[2], order[5], order[0], order[1], order[3],
                                       order[4]]
    s, f = await learner.evidence(order)
    ds, df = (s - before_s).tolist(), (f - before_f).tolist()
    tau = reranker.click_model.evidence_weight
    w = expected_skip_weights(claims.means, 5, tau)
    assert ds == pytest.approx([0, 0, tau, 0, 0, tau, 0, 0, 0, 0])
    assert df == pytest.approx([w[0], w[1], 0, w[3], w[4], 0, 0, 0, 0, 0])
    assert all(0 < x <= tau for x in (w[0], w[1], w[3], w[4]))


async def test_plain_click_weights_are_the_examination_probabilities(learner: Learner) -> None:
    model = ClickModel(examination=[1.0, 0.6, 0.3], correction="none", evidence_weight=1.0)
    reranker = PosteriorReranker(learner, click_model=model)
    ranked = await reranker.rerank(hits())
    order = ids_of(ranked)
    await reranker.feedback(ranked.selection_id, {order[4]: 1.0}, clicks_only=True)
    s, f = await learner.evidence(order)
    assert s.tolist() == [0, 0, 0, 0, 1, 0, 0, 0, 0, 0]
    # The curve's last value repeats beyond its end.
    assert f.tolist() == pytest.approx([1.0, 0.6, 0.3, 0.3, 0, 0, 0, 0, 0, 0])
    assert ClickModel().curve(3).tolist() == [reciprocal_rank(r) for r in (1, 2, 3)]


async def test_click_feedback_reads_the_ranks_from_the_selection(learner: Learner) -> None:
    reranker = PosteriorReranker(learner)
    ranked = await reranker.rerank(hits())
    # Only ids travel back; where each was shown comes from the signed display order.
    await reranker.feedback(ranked.selection_id, {"d1": "accepted"}, clicks_only=True)
    s, f = await learner.evidence(["d0", "d1", "d2"])
    assert s.tolist() == [0, 0.5, 0]
    assert f[0] > 0
    assert f[2] == 0


async def test_feedback_for_items_outside_the_selection_is_refused_and_changes_nothing(
        learner: Learner) -> None:
    reranker = PosteriorReranker(learner)
    ranked = await reranker.rerank(hits(5))
    for clicks in (False, True):
        with pytest.raises(ArmNotInSelection):
            await reranker.feedback(ranked.selection_id, {"d1": "accepted", "d7": "accepted"},
                                    clicks_only=clicks)
    s, f = await learner.evidence([f"d{i}" for i in range(10)])
    assert not s.any()
    assert not f.any()
    assert await learner.store.events(learner.name) == []


async def test_feedback_with_an_altered_selection_id_is_refused(learner: Learner) -> None:
    reranker = PosteriorReranker(learner)
    token = (await reranker.rerank(hits())).selection_id
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    for clicks in (False, True):
        with pytest.raises(InvalidSelection):
            await reranker.feedback(forged, {"d1": "accepted"}, clicks_only=clicks)


async def test_duplicate_feedback_changes_nothing(learner: Learner) -> None:
    reranker = PosteriorReranker(learner)
    for clicks in (False, True):
        ranked = await reranker.rerank(hits())
        order = ids_of(ranked)
        first = await reranker.feedback(ranked.selection_id, {order[3]: "accepted"},
                                        clicks_only=clicks)
        state = await learner.evidence(order)
        events = len(await learner.store.events(learner.name))
        again = await reranker.feedback(ranked.selection_id, {order[3]: "accepted"},
                                        clicks_only=clicks)
        assert {r.status for r in first} == {"applied"}
        assert {r.status for r in again} == {"duplicate"}
        assert len(again) == len(first)
        after = await learner.evidence(order)
        assert after[0].tolist() == state[0].tolist()
        assert after[1].tolist() == state[1].tolist()
        assert len(await learner.store.events(learner.name)) == events


async def test_cumulative_click_reports_add_only_the_new_skips(learner: Learner) -> None:
    reranker = PosteriorReranker(learner)
    ranked = await reranker.rerank(hits())
    order = ids_of(ranked)
    await reranker.feedback(ranked.selection_id, {order[1]: "accepted"}, clicks_only=True)
    out = await reranker.feedback(ranked.selection_id,
                                  {order[1]: "accepted", order[4]: "accepted"},
                                  clicks_only=True)
    status = {r.arm_id: r.status for r in out}
    assert status == {order[1]: "duplicate", order[0]: "duplicate", order[4]: "applied",
                      order[2]: "applied", order[3]: "applied"}
    # Leaving out the earlier accept would make it a skip: refused, nothing applied.
    events = len(await learner.store.events(learner.name))
    with pytest.raises(SelectionConflict):
        await reranker.feedback(ranked.selection_id, {order[6]: "accepted"}, clicks_only=True)
    assert len(await learner.store.events(learner.name)) == events


async def test_click_feedback_on_a_select_uses_the_learned_means(learner: Learner) -> None:
    chosen = await learner.select(["a", "b", "c", "d"], k=4)
    order = [arm.id for arm in chosen.selected]
    reranker = PosteriorReranker(learner)
    await reranker.feedback(chosen.selection_id, {order[2]: "accepted"}, clicks_only=True)
    s, f = await learner.evidence(order)
    w = expected_skip_weights((0.5, 0.5, 0.5, 0.5), 2, 0.5)
    assert s.tolist() == [0, 0, 0.5, 0]
    assert f.tolist() == pytest.approx([w[0], w[1], 0, 0])


async def test_the_reranker_learns_on_every_store(store: LearningStore) -> None:
    lr = await make_learner(store)
    try:
        reranker = PosteriorReranker(lr)
        for _ in range(10):
            ranked = await reranker.rerank(hits(), {"topic": "t"})
            await reranker.feedback(ranked.selection_id, {"d8": "accepted", "d0": "rejected"})
        order = ids_of(await reranker.rerank(hits(), {"topic": "t"}))
        assert order.index("d8") < 3
        assert order.index("d0") >= 3
    finally:
        await lr.close()


async def test_decayed_context_evidence_matches_the_scalar_back_off_rule() -> None:
    lr = await make_learner(half_life_s=3600.0)
    try:
        reranker = PosteriorReranker(lr)
        for ctx, doc, outcome, times in ((None, "d1", "accepted", 3),
                                         ({"topic": "a"}, "d1", "rejected", 2),
                                         ({"topic": "a"}, "d2", "accepted", 1),
                                         ({"topic": "b"}, "d3", "accepted", 7)):
            await accept(reranker, doc, times, ctx, outcome)
        rows = {(r.ctx, r.arm): r for r in await lr.store.evidence(lr.name)}
        key = canonical_context({"topic": "a"})
        assert key is not None
        docs = [f"d{i}" for i in range(5)]
        s, f = await lr.evidence(docs, {"topic": "a"})
        now = time.time()
        m = lr.config.context_backoff
        for i, doc in enumerate(docs):
            g = rows.get(("", doc))
            c = rows.get((key.key, doc))
            if g is None:
                assert (s[i], f[i]) == (0.0, 0.0)
                continue
            dg = math.pow(0.5, (now - g.t) / 3600.0)
            sg, fg = g.s * dg, g.f * dg
            if c is None:
                w = min(1.0, m / (sg + fg))
                expected = (w * sg, w * fg)
            else:
                dc = math.pow(0.5, (now - c.t) / 3600.0)
                sc, fc = c.s * dc, c.f * dc
                so, fo = max(sg - sc, 0.0), max(fg - fc, 0.0)
                wc = backoff_weight(m, sc + fc, so + fo)
                expected = (sc + wc * so, fc + wc * fo)
            assert (float(s[i]), float(f[i])) == pytest.approx(expected, rel=1e-6)
    finally:
        await lr.close()


async def test_the_selection_signs_the_means_the_results_were_ranked_by(
        learner: Learner) -> None:
    reranker = PosteriorReranker(learner)
    await accept(reranker, "d4", 3)
    ranked = await reranker.rerank(hits(), explain=True)
    assert ranked.explanations is not None
    claims = learner.verify_selection(ranked.selection_id)
    assert claims.kind == "rerank"
    assert claims.means == pytest.approx([e.mean for e in ranked.explanations], abs=5e-5)
    assert list(claims.means) == sorted(claims.means, reverse=True)
