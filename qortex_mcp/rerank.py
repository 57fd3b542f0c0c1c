"""Retrieval reranking by posterior means, and feedback on the ranked list.

``PosteriorReranker`` reorders any retriever's results so that results agents accepted rise
on later queries and rejected ones drop::

    reranker = PosteriorReranker(learner)
    ranked = await reranker.rerank(hits, context={"topic": "sql"})   # hits: [{id, score}]
    ...                                                               # show ranked.results
    await reranker.feedback(ranked.selection_id, {"doc-7": "accepted", "doc-2": "rejected"})

**Scoring.** The retrieval scores are min-max normalised within the list to ``s`` in [0, 1]
and each gives the item a *retrieval prior* ``Beta(1 + m s, 1 + m (1 - s))`` with strength
``m`` (``prior_strength``, default 4): what the retriever thinks, worth ``m`` observations,
mean ``mu = (1 + m s) / (2 + m)``. The retriever can be wrong about any one item, so the
item's prior is a two-part mixture: the retrieval prior with probability ``prior_trust``
(default 0.8), else a nearly flat ``Beta(d mu, d (1 - mu))`` of the same mean (``d`` =
0.25, ``DOUBT_STRENGTH``). With no evidence the mean is ``mu`` either way, so the order is
the retrieval order. The learned evidence decides how much the retrieval score still
counts for the item: ``Learner.evidence(ids, context)`` gives its successes and failures
in this context, backed off to its global posterior (the rule in
``qortex_mcp.learning.context``: another context's evidence counts for at most
``context_backoff`` observations) and decayed by the learner's half-life, and the weight
of the retrieval prior becomes its posterior probability (Bayes: ``prior_trust`` times how
much better the retrieval prior predicted that evidence). Evidence that agrees with the
score keeps the score's weight; evidence against it (five accepts of a result ranked 12th,
five rejections of a dominant top hit) takes it away within a few answers, so the item
follows its own record. The weight is a function of the per-item evidence the store
already keeps: nothing extra is stored, and it survives restarts with the evidence.
Results are ordered by posterior mean, or by a Thompson sample with ``explore=True``. The
retrieval order is the order of the scores (ties keep the input order); items with no
evidence keep it among themselves. An accept never lowers an item's mean and a rejection
never raises it (each part's posterior is a Beta update; the mixture weight moves with
it), and an item's evidence changes no other item's score. ``max_move`` caps how far one
item may move per call. ``prior_trust=1`` is the plain retrieval prior (the behaviour
of 0.1: a dominant top hit then takes about 24 rejections to leave the top 3).

**Selection ids.** Every rerank signs the ids in display order and the posterior means
they were ranked by (``Learner.issue_selection``). Feedback quotes the id: ranks always
come from the signed claims, never from the client, and only shown items can be credited.

**Feedback.** Explicit: per item ``accepted``, ``rejected``, ``partial`` (mapped by the
learner's reward model) or a number in [0, 1]; items not mentioned learn nothing.
Click-only (``clicks_only=True``): only accepted items are reported; skipped items above
the lowest reported one count as weighted failures (``qortex_mcp.clicks.ClickModel``);
items below it learn nothing. Repeat a click-only report with every item accepted so far:
a report that leaves out an earlier accept would turn it into a skip, which conflicts
with its first answer (``SELECTION_CONFLICT``, nothing applied). Sending the same
feedback twice changes nothing (the store deduplicates on selection and item).

**The hook.** ``reranker.wrap(search, context=...)`` (or the ``@reranker.hook(...)``
decorator) turns a retrieval function, sync or async, into an async one whose every call
comes back as a ``RerankResult`` with its selection id.

One file past the usual size on purpose: ranking, feedback and the hook share how results
are read and what a selection signs; the click model's arithmetic is in ``clicks.py``.
"""

from __future__ import annotations

import asyncio
import heapq
import inspect
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Generic, ParamSpec, TypeVar, overload

import numpy as np
import numpy.typing as npt

from qortex_mcp.clicks import MIN_WEIGHT, ClickModel
from qortex_mcp.errors import (
    ArmNotInSelection,
    ConfigError,
    InvalidCandidates,
    InvalidInput,
    preview,
)
from qortex_mcp.learning.learner import Learner
from qortex_mcp.learning.stats import beta_interval
from qortex_mcp.learning.types import ArmOutcome, FeedbackResult, Outcome
from qortex_mcp.learning.validation import NUMBER_TYPES, check_name
from qortex_mcp.logging import get_logger

__all__ = ["DOUBT_STRENGTH", "ClickModel", "ItemExplanation", "PosteriorReranker",
           "RerankResult", "robust_posterior"]

log = get_logger(__name__)
_debug_on = logging.getLogger(__name__).isEnabledFor

T = TypeVar("T")
P = ParamSpec("P")
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

Getter = str | Callable[[Any], Any]
ContextSource = Mapping[str, Any] | Callable[..., Mapping[str, Any] | None] | None

_NUMBER_TYPES: Final = frozenset({float, int, np.float64, np.float32, np.int64, np.int32})

DOUBT_STRENGTH: Final = 0.25
"""Strength of the prior an item falls back on when the retriever is wrong about it: nearly
flat, so its evidence decides. Chosen with ``prior_trust`` (0.8) on bench/bench_rerank.py
(100 seeds) and the rise/drop targets (tests/test_rerank.py); see bench/RESULTS.md."""

_LN_SQRT_2PI: Final = 0.5 * math.log(2.0 * math.pi)


@dataclass(frozen=True, slots=True)
class ItemExplanation:
    """Why one result landed where it did (``rerank(..., explain=True)``)."""

    id: str
    base_rank: int
    """1-based rank in the retrieval order."""
    base_score: float
    """The retrieval score as given (the normalised position when there is no score)."""
    prior_alpha: float
    """The retrieval prior ``Beta(prior_alpha, prior_beta)``."""
    prior_beta: float
    alpha: float
    """The posterior (the mixture's) as one Beta with its mean and variance."""
    beta: float
    mean: float
    """Posterior mean: the ranking key (unless ``explore``)."""
    ci_low: float
    ci_high: float
    new_rank: int
    sample: float | None = None
    """The Thompson sample the item was ranked by, with ``explore=True``."""
    successes: float = 0.0
    """Learned (backed-off, decayed) successes in this context."""
    failures: float = 0.0
    prior_weight: float = 1.0
    """Posterior probability that the retrieval prior holds for this item: ``prior_trust``
    without evidence, falling as the evidence disagrees with the retrieval score."""


@dataclass(frozen=True, slots=True)
class RerankResult(Generic[T]):
    """The results in their new order and the selection id to quote in feedback."""

    results: list[T]
    selection_id: str
    explanations: list[ItemExplanation] | None = None


def _getter(spec: Getter | None, what: str) -> Callable[[Any], Any] | None:
    if spec is None or callable(spec):
        return spec
    if not isinstance(spec, str):
        raise ConfigError(f"{what} must be a key or attribute name, or a function")
    key = spec

    def get(item: Any) -> Any:
        if isinstance(item, Mapping):
            if key not in item:
                raise InvalidCandidates(f"a result has no {key!r}: {preview(item)}")
            return item[key]
        try:
            return getattr(item, key)
        except AttributeError:
            raise InvalidCandidates(f"a result has no {key!r}: {preview(item)}") from None

    return get


def cap_moves(order: IntArray, base_rank: IntArray, cap: int) -> IntArray:
    """The order closest to ``order`` in which no item is more than ``cap`` places from its
    base rank: positions are filled top-down with the best-placed eligible item, except
    that an item about to exceed its cap downwards is placed first."""
    n = len(order)
    want = np.empty(n, dtype=np.int64)
    want[order] = np.arange(n)
    by_base = np.argsort(base_rank, kind="stable").tolist()
    want_l = want.tolist()
    placed = [False] * n
    heap: list[tuple[int, int]] = []
    out: list[int] = []
    admitted = 0
    for pos in range(n):
        while admitted < n and admitted <= pos + cap:
            item = by_base[admitted]
            heapq.heappush(heap, (want_l[item], item))
            admitted += 1
        due = pos - cap
        if due >= 0 and not placed[by_base[due]]:
            item = by_base[due]
        else:
            item = heapq.heappop(heap)[1]
            while placed[item]:
                item = heapq.heappop(heap)[1]
        placed[item] = True
        out.append(item)
    return np.asarray(out, dtype=np.int64)


def _log_gamma(x: FloatArray) -> FloatArray:
    """ln Gamma(x) for x > 0, vectorised (numpy has none): shifted by 3, then Stirling's
    series to x^-7 (within 1e-7 of ``math.lgamma`` for x in [1e-3, 1e3]; the mixture weights
    only need a few digits)."""
    z = x + 3.0
    iz = 1.0 / z
    iz2 = iz * iz
    series = iz * (1.0 / 12 - iz2 * (1.0 / 360 - iz2 * (1.0 / 1260 - iz2 / 1680)))
    return ((z - 0.5) * np.log(z) - z + _LN_SQRT_2PI + series
            - np.log(x * (x + 1.0) * (x + 2.0)))


def _log_beta_ratio(a: FloatArray, b: FloatArray, succ: FloatArray,
                    fail: FloatArray) -> FloatArray:
    """ln B(a + succ, b + fail) - ln B(a, b): the log marginal likelihood of the evidence
    under ``Beta(a, b)`` (the same for fractional, weighted evidence)."""
    g = _log_gamma(np.concatenate((a + succ, b + fail, a + b, a, b, a + b + succ + fail)))
    ga_s, gb_f, gab, ga, gb, gab_n = np.split(g, 6)
    return ga_s + gb_f - gab_n - ga - gb + gab


def robust_posterior(
    a0: FloatArray, b0: FloatArray, succ: FloatArray, fail: FloatArray, trust: float,
) -> tuple[FloatArray, FloatArray, tuple[FloatArray, FloatArray, FloatArray, FloatArray]]:
    """Posterior of each item under the mixture prior ``trust * Beta(a0, b0) + (1 - trust)
    * Beta(d mu, d (1 - mu))`` (``mu = a0 / (a0 + b0)``, ``d = DOUBT_STRENGTH``) after
    ``succ`` successes and ``fail`` failures.

    Returns:
        The posterior means, the posterior weights of the ``Beta(a0, b0)`` part, and the
        parameters of both parts' posteriors ``(alpha, beta, alpha_doubt, beta_doubt)``.
    """
    n0 = a0 + b0
    mu = a0 / n0
    ad, bd = DOUBT_STRENGTH * mu, DOUBT_STRENGTH * (1.0 - mu)
    alpha, beta = a0 + succ, b0 + fail
    alpha_d, beta_d = ad + succ, bd + fail
    weight = np.full(len(a0), trust)
    mean = mu.copy()
    ev = np.nonzero((succ + fail) > 0.0)[0]
    if len(ev) and 0.0 < trust < 1.0:
        s, f = succ[ev], fail[ev]
        # log of (1 - trust) p(evidence | doubt) / (trust p(evidence | retrieval prior))
        odds = (math.log((1.0 - trust) / trust)
                + _log_beta_ratio(ad[ev], bd[ev], s, f) - _log_beta_ratio(a0[ev], b0[ev], s, f))
        weight[ev] = 1.0 / (1.0 + np.exp(np.minimum(odds, 700.0)))
    if len(ev):
        w = weight[ev]
        mean[ev] = (w * alpha[ev] / (alpha[ev] + beta[ev])
                    + (1.0 - w) * alpha_d[ev] / (alpha_d[ev] + beta_d[ev]))
    return mean, weight, (alpha, beta, alpha_d, beta_d)


def _matched_beta(mean: FloatArray, weight: FloatArray,
                  parts: tuple[FloatArray, FloatArray, FloatArray, FloatArray],
                  ) -> tuple[FloatArray, FloatArray]:
    """The Beta with the mixture posterior's mean and variance (for explanations)."""
    alpha, beta, alpha_d, beta_d = parts

    def second_moment(a: FloatArray, b: FloatArray) -> FloatArray:
        return a * (a + 1.0) / ((a + b) * (a + b + 1.0))

    var = (weight * second_moment(alpha, beta) + (1.0 - weight) * second_moment(alpha_d, beta_d)
           - mean * mean)
    var = np.clip(var, 1e-300, mean * (1.0 - mean) * (1.0 - 1e-12))
    strength = mean * (1.0 - mean) / var - 1.0
    return mean * strength, (1.0 - mean) * strength


class PosteriorReranker:
    """Reorders retrieval results by what agents accepted before.

    Args:
        learner: where evidence lives; every result id is an arm of this learner.
        id_key: the result's id: a key (dicts, mappings) or attribute name (dataclasses,
            objects), or a function of the result. Ids follow the arm id rule.
        score_key: the retrieval score (higher is better) read the same way, or None when
            the results carry no score: the input order is then the retrieval order and
            the prior falls linearly from the first result to the last.
        prior_strength: ``m``: how many observations the retrieval score is worth.
        prior_trust: the prior probability that an item's relevance follows its retrieval
            score, in [0, 1]; its evidence then moves the probability (see the module).
            1: the score always counts ``m`` observations; 0: only the score's order
            (the prior mean) is kept, the evidence decides at once.
        max_move: if set, no item moves more than this many places from its retrieval
            rank in one call.
        click_model: turns click-only feedback into weighted evidence.
        credible_level: of the explained credible intervals.

    Raises:
        ConfigError: an option is out of range.
    """

    def __init__(
        self,
        learner: Learner,
        *,
        id_key: Getter = "id",
        score_key: Getter | None = "score",
        prior_strength: float = 4.0,
        prior_trust: float = 0.8,
        max_move: int | None = None,
        click_model: ClickModel | None = None,
        credible_level: float = 0.95,
    ) -> None:
        if isinstance(prior_strength, bool) or not isinstance(prior_strength, int | float) or not (
            math.isfinite(prior_strength) and prior_strength >= 0
        ):
            raise ConfigError(
                f"prior_strength must be a number >= 0, got {preview(prior_strength)}")
        if isinstance(prior_trust, bool) or not isinstance(prior_trust, int | float) or not (
            0.0 <= prior_trust <= 1.0
        ):
            raise ConfigError(f"prior_trust must be a number in [0, 1], got {preview(prior_trust)}")
        if max_move is not None and (
            isinstance(max_move, bool) or not isinstance(max_move, int) or max_move < 0
        ):
            raise ConfigError(f"max_move must be an integer >= 0 or None, got {preview(max_move)}")
        if not 0.0 < credible_level < 1.0:
            raise ConfigError("credible_level must be in (0, 1)")
        self.learner = learner
        self.id_key = id_key
        self.score_key = score_key
        self.prior_strength = float(prior_strength)
        self.prior_trust = float(prior_trust)
        self.max_move = max_move
        self.click_model = click_model or ClickModel()
        self.credible_level = credible_level
        self._fast_id = id_key if isinstance(id_key, str) else None
        self._fast_score = score_key if isinstance(score_key, str) else None
        self._get_id = _getter(id_key, "id_key")
        self._get_score = _getter(score_key, "score_key")

    # --- reading results -------------------------------------------------------------------

    def _ids(self, results: Sequence[Any]) -> list[str]:
        ids: list[Any] | None = None
        if self._fast_id is not None and type(results[0]) is dict:
            try:  # the common case, plain dicts: one comprehension, no call per item
                ids = [r[self._fast_id] for r in results]
            except (KeyError, TypeError):
                ids = None
        if ids is None:
            get = self._get_id
            assert get is not None
            ids = [get(r) for r in results]
        if not all(type(i) is str for i in ids):
            bad = next(i for i in ids if type(i) is not str)
            raise InvalidCandidates(f"result ids must be strings, got {preview(bad)}")
        if len(set(ids)) != len(ids):
            raise InvalidCandidates("result ids must be distinct")
        return ids

    def _scores(self, results: Sequence[Any]) -> FloatArray | None:
        get = self._get_score
        if get is None:
            return None
        raw: list[Any] | None = None
        if self._fast_score is not None and type(results[0]) is dict:
            try:
                raw = [r[self._fast_score] for r in results]
            except (KeyError, TypeError):
                raw = None
        if raw is None:
            raw = [get(r) for r in results]
        if not {type(x) for x in raw} <= _NUMBER_TYPES:
            for x in raw:
                if isinstance(x, bool) or not isinstance(x, int | float | np.floating | np.integer):
                    raise InvalidCandidates(f"scores must be numbers, got {preview(x)}")
        scores = np.asarray(raw, dtype=np.float64)
        if not np.isfinite(scores).all():
            raise InvalidCandidates("scores must be finite numbers")
        return scores

    # --- rerank ----------------------------------------------------------------------------

    async def rerank(
        self,
        results: Sequence[T],
        context: Mapping[str, Any] | None = None,
        *,
        explain: bool = False,
        explore: bool = False,
        limit: int | None = None,
    ) -> RerankResult[T]:
        """Reorder ``results`` by posterior means (or Thompson samples) in ``context``.

        Args:
            results: the retriever's results (dicts, dataclasses or objects).
            context: a JSON object; evidence is kept per context, with back-off.
            explain: also return an ``ItemExplanation`` per shown result.
            explore: order by a Thompson sample from the learner's generator instead.
            limit: show (and sign) only the first ``limit`` results of the new order, so
                results below the display cut can still rise into it.

        Raises:
            InvalidCandidates: results are not a list, ids are missing, not strings or
                repeated, scores are not finite numbers, or there are too many.
            InvalidName, InvalidContext, InvalidInput: a bad id, context or limit.
            LimitExceeded: the selection is too large to sign. ClosedError: closed learner.
        """
        started = time.perf_counter()
        learner = self.learner
        if not isinstance(results, Sequence) or isinstance(results, str | bytes):
            raise InvalidCandidates("results must be a list")
        n = len(results)
        if n > learner.config.max_candidates:
            raise InvalidCandidates(
                f"at most {learner.config.max_candidates} results per call, got {n}")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                                  or limit < 1):
            raise InvalidInput(f"limit must be a positive integer, got {preview(limit)}")
        if n == 0:
            token, _ = learner.issue_selection([], dict(context) if context else None, "rerank")
            return RerankResult([], token, [] if explain else None)
        ctx = dict(context) if context is not None and not isinstance(context, dict) else context
        ids = self._ids(results)
        raw = self._scores(results)
        if raw is None:
            base_order = np.arange(n, dtype=np.int64)
            s = np.linspace(1.0, 0.0, n) if n > 1 else np.full(1, 0.5)
        else:
            base_order = np.argsort(-raw, kind="stable")
            # Halved first: the spread of scores near +-1.8e308 overflows to inf (s = NaN).
            half = raw / 2.0
            low, high = float(half.min()), float(half.max())
            s = (half - low) / (high - low) if high > low else np.full(n, 0.5)
        base_rank = np.empty(n, dtype=np.int64)
        base_rank[base_order] = np.arange(n)
        m = self.prior_strength
        a0 = 1.0 + m * s
        b0 = 1.0 + m * (1.0 - s)
        succ, fail = await learner.evidence(ids, ctx)
        mean, weight, parts = robust_posterior(a0, b0, succ, fail, self.prior_trust)
        sample: FloatArray | None = None
        if explore:
            # A draw from the mixture: pick the part by its posterior weight, then its Beta.
            rng = learner.rng
            trusted = rng.random(n) < weight
            sample = np.where(trusted, rng.beta(parts[0], parts[1]),
                              rng.beta(parts[2], parts[3]))
            order = np.lexsort((base_rank, -sample))
            fresh = (succ + fail) <= 0.0
            if fresh.any():
                # Items without evidence keep the retrieval order among themselves: they
                # keep the places their samples won, filled in retrieval order.
                order[np.nonzero(fresh[order])[0]] = base_order[fresh[base_order]]
        else:
            # Ties (equal means) keep the retrieval order. Without evidence the mean is
            # increasing in the score, so those items keep it among themselves anyway.
            order = np.lexsort((base_rank, -mean))
        if self.max_move is not None:
            order = cap_moves(order, base_rank, self.max_move)
        shown = order if limit is None or limit >= n else order[:limit]
        positions = shown.tolist()
        shown_ids = [ids[i] for i in positions]
        if len(positions) < n:
            for hidden in order[len(positions):].tolist():
                check_name(ids[hidden], "result id")
        token, _ = learner.issue_selection(shown_ids, ctx, "rerank", means=mean[shown].tolist())
        explanations = None
        if explain:
            alpha, beta = _matched_beta(mean, weight, parts)
            explanations = self._explain(positions, ids, raw, s, base_rank, a0, b0, alpha,
                                         beta, mean, sample, succ, fail, weight)
        if _debug_on(logging.DEBUG):
            log.debug("rerank", learner=learner.name, results=n, shown=len(positions),
                      explore=explore, moved=int(np.count_nonzero(base_rank[shown]
                                                                  != np.arange(len(shown)))),
                      latency_ms=round((time.perf_counter() - started) * 1e3, 3))
        return RerankResult([results[i] for i in positions], token, explanations)

    def _explain(
        self, positions: list[int], ids: list[str], raw: FloatArray | None, s: FloatArray,
        base_rank: IntArray, a0: FloatArray, b0: FloatArray, alpha: FloatArray,
        beta: FloatArray, mean: FloatArray, sample: FloatArray | None, succ: FloatArray,
        fail: FloatArray, weight: FloatArray,
    ) -> list[ItemExplanation]:
        out = []
        for new_rank, i in enumerate(positions, 1):
            a, b = float(alpha[i]), float(beta[i])
            low, high = beta_interval(a, b, self.credible_level)
            out.append(ItemExplanation(
                id=ids[i], base_rank=int(base_rank[i]) + 1,
                base_score=float(raw[i]) if raw is not None else float(s[i]),
                prior_alpha=float(a0[i]), prior_beta=float(b0[i]), alpha=a, beta=b,
                mean=float(mean[i]), ci_low=low, ci_high=high, new_rank=new_rank,
                sample=None if sample is None else float(sample[i]),
                successes=float(succ[i]), failures=float(fail[i]),
                prior_weight=float(weight[i]),
            ))
        return out

    # --- feedback --------------------------------------------------------------------------

    async def feedback(
        self,
        selection_id: str,
        outcomes: Mapping[str, Outcome | float],
        *,
        clicks_only: bool = False,
    ) -> list[FeedbackResult]:
        """Learn from what the agent did with a ranked list; durable when it returns.

        Args:
            selection_id: the id ``rerank`` returned.
            outcomes: result id -> ``"accepted"``, ``"rejected"``, ``"partial"`` or a
                number in [0, 1]. Items not mentioned learn nothing, unless ...
            clicks_only: ... only accepted items are reported: skipped items above the
                lowest reported one then count as failures weighted by the click model
                (ranks from the signed selection), and every update is multiplied by the
                click model's ``evidence_weight``. Report every accept so far each time.

        Returns:
            One ``FeedbackResult`` per reported item, then one per inferred skip; each
            ``applied`` or ``duplicate``. Their alpha/beta/mean are the learner's
            posterior (its own prior plus the evidence), not the retrieval-score posterior
            ``rerank`` orders by.

        Raises:
            InvalidSelection, SelectionExpired: the selection id is bad or too old.
            ArmNotInSelection: an item was not shown in this selection.
            InvalidReward, InvalidOutcome, InvalidName, InvalidInput: bad outcomes.
            SelectionConflict: an item was already answered differently (nothing applied).
            StoreError: the store failed (retryable codes are safe to retry).
        """
        if not isinstance(outcomes, Mapping):
            raise InvalidInput("outcomes must map result ids to an outcome word or a number")
        if not clicks_only:
            return await self.learner.batch_observe(
                [_outcome(arm, value, selection_id, 1.0) for arm, value in outcomes.items()])
        claims = self.learner.verify_selection(selection_id)
        if not outcomes:
            return []
        position = {arm: p for p, arm in enumerate(claims.arms)}
        reported: list[int] = []
        for arm in outcomes:
            p = position.get(arm) if isinstance(arm, str) else None
            if p is None:
                raise ArmNotInSelection(
                    f"result {preview(arm)} was not shown in this selection; feedback applies "
                    "only to the results it ranked")
            reported.append(p)
        lowest = max(reported)
        means = claims.means or await self._current_means(claims.arms, claims.context)
        weights = self.click_model.skip_weights(means, lowest).tolist()
        tau = self.click_model.evidence_weight
        batch = [_outcome(arm, value, selection_id, tau) for arm, value in outcomes.items()]
        taken = set(reported)
        for p in range(lowest):
            if p not in taken and weights[p] >= MIN_WEIGHT:
                batch.append(ArmOutcome(claims.arms[p], reward=0.0, selection_id=selection_id,
                                        weight=weights[p]))
        return await self.learner.batch_observe(batch)

    async def _current_means(self, arms: Sequence[str], context: str | None) -> list[float]:
        """Relevance estimates for a selection that did not sign them (one made by
        ``select``): learned posterior means under the learner's default prior."""
        succ, fail = await self.learner.evidence(arms, json.loads(context) if context else None)
        a0, b0 = self.learner.config.prior
        means: list[float] = ((a0 + succ) / (a0 + b0 + succ + fail)).tolist()
        return means

    # --- the hook --------------------------------------------------------------------------

    @overload
    def wrap(
        self, retrieve: Callable[P, Awaitable[Sequence[T]]], *,
        context: ContextSource = None, limit: int | None = None, explain: bool = False,
        to_thread: bool = False,
    ) -> Callable[P, Awaitable[RerankResult[T]]]: ...

    @overload
    def wrap(
        self, retrieve: Callable[P, Sequence[T]], *,
        context: ContextSource = None, limit: int | None = None, explain: bool = False,
        to_thread: bool = False,
    ) -> Callable[P, Awaitable[RerankResult[T]]]: ...

    def wrap(
        self, retrieve: Callable[P, Any], *,
        context: ContextSource = None, limit: int | None = None, explain: bool = False,
        to_thread: bool = False,
    ) -> Callable[P, Awaitable[RerankResult[Any]]]:
        """Wrap a retrieval function so every call comes back reranked.

        The wrapped function is async and takes the same arguments; it returns a
        ``RerankResult`` (the reranked results and their selection id).

        Args:
            retrieve: the retrieval function, sync or async, returning a list of results.
            context: the context of each call: a fixed JSON object, None (global), or a
                function called with the same arguments as ``retrieve`` (for example
                ``lambda query, **kw: {"topic": topic_of(query)}``). Use a coarse context
                (a topic, a collection, a task), not the raw query text: evidence is kept
                per context, so related queries should share one.
            limit: show only the first ``limit`` results of the new order.
            explain: attach explanations to every result.
            to_thread: run a sync ``retrieve`` in a worker thread (for slow retrievers).

        Raises:
            ConfigError: ``retrieve`` or ``context`` is not usable.
        """
        if not callable(retrieve):
            raise ConfigError("wrap() needs a retrieval function")
        if context is not None and not callable(context) and not isinstance(context, Mapping):
            raise ConfigError("context must be a JSON object, a function or None")
        # Also callable objects whose __call__ is async.
        is_async = inspect.iscoroutinefunction(retrieve) or inspect.iscoroutinefunction(
            type(retrieve).__call__)

        async def reranked(*args: P.args, **kwargs: P.kwargs) -> RerankResult[Any]:
            if is_async:
                results = await retrieve(*args, **kwargs)
            elif to_thread:
                results = await asyncio.to_thread(retrieve, *args, **kwargs)
            else:
                results = retrieve(*args, **kwargs)
                if inspect.isawaitable(results):
                    results = await results
            ctx = context(*args, **kwargs) if callable(context) else context
            return await self.rerank(results, ctx, explain=explain, limit=limit)

        for attr in ("__module__", "__name__", "__qualname__", "__doc__"):
            if hasattr(retrieve, attr):
                setattr(reranked, attr, getattr(retrieve, attr))
        try:
            sig = inspect.signature(retrieve)
        except (TypeError, ValueError):  # builtins without a signature: keep *args/**kwargs
            pass
        else:
            reranked.__signature__ = sig.replace(  # type: ignore[attr-defined]
                return_annotation=RerankResult)
        return reranked

    def hook(
        self, *, context: ContextSource = None, limit: int | None = None,
        explain: bool = False, to_thread: bool = False,
    ) -> Callable[[Callable[P, Any]], Callable[P, Awaitable[RerankResult[Any]]]]:
        """Decorator form of ``wrap``::

            @reranker.hook(context=lambda query, k=10: {"topic": topic_of(query)})
            async def search(query: str, k: int = 10) -> list[dict]: ...

            ranked = await search("tuning postgres")    # a RerankResult
        """

        def decorate(retrieve: Callable[P, Any]) -> Callable[P, Awaitable[RerankResult[Any]]]:
            return self.wrap(retrieve, context=context, limit=limit, explain=explain,
                             to_thread=to_thread)

        return decorate


def _outcome(arm: str, value: object, selection_id: str, weight: float) -> ArmOutcome:
    if isinstance(value, NUMBER_TYPES) and not isinstance(value, bool):
        return ArmOutcome(arm, reward=float(value), selection_id=selection_id, weight=weight)
    # Words (and anything else) go to the learner's reward model, which refuses bad ones.
    return ArmOutcome(arm, outcome=value, selection_id=selection_id,  # type: ignore[arg-type]
                      weight=weight)
