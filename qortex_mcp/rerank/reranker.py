"""``PosteriorReranker``: reorder results by what was learned, take feedback on the ranked
list, and wrap a retrieval function (the hook). The scoring rule is in the package's
docstring; its arithmetic in ``ranking``. One class past 400 lines on purpose: ranking,
feedback and the hook share how results are read and what a selection signs."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final, ParamSpec, TypeVar, overload

import numpy as np
import numpy.typing as npt

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
from qortex_mcp.rerank.clicks import MIN_WEIGHT, ClickModel
from qortex_mcp.rerank.ranking import cap_moves, matched_beta, robust_posterior
from qortex_mcp.rerank.results import ContextSource, Getter, ItemExplanation, RerankResult, getter

__all__ = ["PosteriorReranker"]

log = get_logger(__name__)
_debug_on = logging.getLogger(__name__).isEnabledFor

T = TypeVar("T")
P = ParamSpec("P")
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

_NUMBER_TYPES: Final = frozenset({float, int, np.float64, np.float32, np.int64, np.int32})


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
        self._get_id = getter(id_key, "id_key")
        self._get_score = getter(score_key, "score_key")

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
        # Without exploration the order is a function of the scores and the evidence: each
        # shown result was certain to take its place. A Thompson order logs no propensity.
        token, _ = learner.issue_selection(
            shown_ids, ctx, "rerank", means=mean[shown].tolist(), candidates=ids,
            propensities=None if explore else [1.0] * len(shown_ids))
        explanations = None
        if explain:
            alpha, beta = matched_beta(mean, weight, parts)
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
