"""``select``: scoring candidates by the learner's strategy and choosing the k best (or
those that fit a token budget), signed, logged as a decision, without waiting on the store.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt

from qortex_mcp.errors import (
    BudgetTooSmall,
    InvalidCandidates,
    InvalidInput,
    preview,
)
from qortex_mcp.learning.candidates import CandidateLookup
from qortex_mcp.learning.context import canonical_context
from qortex_mcp.learning.decisions import (
    SelectPropensities,
    known_propensities,
)
from qortex_mcp.learning.state import _Candidates
from qortex_mcp.learning.tokens import MAX_OFFERED, SelectionClaims
from qortex_mcp.learning.types import (
    GLOBAL_CONTEXT,
    Arm,
    ScoredArm,
    SelectionResult,
    scored_arm,
)
from qortex_mcp.learning.validation import (
    check_name,
)
from qortex_mcp.logging import get_logger

__all__ = ["MAX_K", "Choosing"]

log = get_logger(__name__)
_debug_on = logging.getLogger(__name__).isEnabledFor

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

MAX_K: Final = 1000


class Choosing(CandidateLookup):
    """``select`` and ``issue_selection``."""

    async def select(
        self,
        arms: Sequence[Arm | str],
        context: dict[str, Any] | None = None,
        k: int = 1,
        token_budget: float | None = None,
    ) -> SelectionResult:
        """Choose up to ``k`` distinct arms among ``arms`` by the learner's strategy.

        Unknown arms start at their prior. With ``token_budget``, the best arms (in score
        order) whose ``token_cost`` sum fits are chosen. Fewer than ``k`` (fewer candidates,
        or fewer fit the budget) is not an error: ``SelectionResult.note`` says so. Never
        waits on the store.

        Raises:
            InvalidCandidates, InvalidName, InvalidContext, InvalidInput, BudgetTooSmall,
            LimitExceeded.
        """
        started = time.perf_counter()
        self._check_open()
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
            raise InvalidInput(f"k must be an integer from 1 to {MAX_K}, got {preview(k)}")
        ctx = canonical_context(context)
        cands = self._resolve(arms)
        slots = cands.slots
        now = self._now()
        chooser = self._chooser
        if chooser is not None:
            if ctx is None and self._half_life is None:
                s, f = self._s[slots], self._f[slots]
            else:
                s, f = self._evidence(slots, ctx, now)
            a0, b0 = self._a0[slots], self._b0[slots]
            alpha, beta = a0 + s, b0 + f
            scores = chooser.scores(s, f, a0, b0, self._rng)
        else:
            strategy = self._strategy
            assert strategy is not None  # one of the two is set
            if ctx is None and self._half_life is None:
                alpha, beta = self._alpha[slots], self._beta[slots]
            else:
                s, f = self._evidence(slots, ctx, now)
                alpha, beta = self._a0[slots] + s, self._b0[slots] + f
            scores = strategy.scores(alpha, beta, self._rng)
        count = slots.shape[0]
        # Positions best first, as Python ints; ties go to the earlier candidate (a policy
        # whose propensities assume random tie-breaking splits them, PolicyChooser.top).
        chosen: list[int]
        if token_budget is not None:
            order = (np.argsort(-scores, kind="stable") if chooser is None
                     else chooser.top(scores, count, self._rng))
            chosen = self._fit_budget(cands, order, k, token_budget).tolist()
        elif chooser is not None:
            chosen = chooser.top(scores, k, self._rng).tolist()
        elif k >= count:
            chosen = np.argsort(-scores, kind="stable").tolist()
        elif k == 1:
            chosen = [int(scores.argmax())]
        else:
            top = scores.argpartition(count - k)[count - k:]
            # k (negated score, position) pairs sort natively: no key function, no numpy
            # call per element.
            pairs = zip((-scores[top]).tolist(), top.tolist(), strict=True)
            chosen = [p for _, p in sorted(pairs)]
        # Exploring means taking an arm believed worse: strictly below the best mean (ties,
        # such as every candidate still at its prior, are not exploration).
        means = alpha / (alpha + beta)
        explored = bool(means[chosen[0]] < means.max())
        ids = cands.ids
        offered: list[str] = []
        if count <= MAX_OFFERED and count > len(chosen):
            taken = set(chosen)
            offered = [ids[p] for p in range(count) if p not in taken]
        chosen_ids = [ids[p] for p in chosen]
        token, nonce = self._signer.sign(self.name, ctx.body if ctx else None, chosen_ids,
                                         "select", offered, policy=self._decisions.policy)
        ctx_key = ctx.key if ctx else GLOBAL_CONTEXT
        if self._logging:
            # The snapshot to compute propensities from later: arrays this call made.
            settle = None if token_budget is not None else self._settle  # a budget fill
            if settle is None:                                          # is no ranking
                self._log_put(nonce, (nonce, "select", ctx_key, now, chosen, ids, None))
            elif chooser is not None:
                self._log_put(nonce, (nonce, "select", ctx_key, now, chosen, ids, settle,
                                      s, f, a0, b0, scores))
            else:
                self._log_put(nonce, (nonce, "select", ctx_key, now, chosen, ids, settle,
                                      alpha, beta))
            decisions = self._decisions
            decisions.held += count
            if decisions.held > decisions.max_pending:
                decisions.settle_all()
        selected = self._scored(cands, chosen, scores, alpha, beta,
                                SelectPropensities(self._decisions, nonce)
                                if self._logging else None)
        pending, sel, last_sel = self._pending, self._sel, self._last_sel
        slot_at = slots.item
        for slot in map(slot_at, chosen):
            sel[slot] += 1
            last_sel[slot] = now
            pending[slot] = pending.get(slot, 0) + 1
        self._selections += 1
        self._pending_selections += 1
        if explored:
            self._explored += 1
            self._pending_explored += 1
        if _debug_on(logging.DEBUG):
            log.debug("select", learner=self.name, candidates=count, arms=[a.id for a in selected],
                      explored=explored,
                      latency_ms=round((time.perf_counter() - started) * 1e3, 3))
        note = None
        if len(chosen) < k:
            note = (f"only {count} candidate(s) for k={k}: all are returned" if count < k else
                    f"only {len(chosen)} of k={k} fit token_budget={token_budget:g}")
        return SelectionResult(selected, token, self.name, ctx_key, self._strategy_name,
                               explored, count, k, note)

    @staticmethod
    def _scored(
        cands: _Candidates, chosen: list[int], scores: FloatArray, alpha: FloatArray,
        beta: FloatArray, lazy: SelectPropensities | None,
    ) -> tuple[ScoredArm, ...]:
        ids, given = cands.ids, cands.arms
        score, alpha_at, beta_at = scores.item, alpha.item, beta.item
        out = []
        for i, pos in enumerate(chosen):
            arm = given[pos]
            a, b = alpha_at(pos), beta_at(pos)
            if type(arm) is str:
                out.append(scored_arm(ids[pos], score(pos), a / (a + b), a, b, i + 1, None, None,
                                      lazy))
            else:
                out.append(scored_arm(ids[pos], score(pos), a / (a + b), a, b, i + 1,
                                      arm.token_cost, arm.metadata,  # type: ignore[union-attr]
                                      lazy))
        return tuple(out)

    @staticmethod
    def _fit_budget(
        cands: _Candidates, order: IntArray, k: int, budget: float
    ) -> IntArray:
        """The best positions (``order``: all of them, best first) whose costs fit."""
        if isinstance(budget, bool) or not isinstance(budget, int | float) or not (
            math.isfinite(budget) and budget >= 0
        ):
            raise InvalidInput(f"token_budget must be a number >= 0, got {preview(budget)}")
        # Checked here, where costs are used: a cached candidate list skips _resolve's checks.
        costs = []
        for arm in cands.arms:
            cost = arm.token_cost if isinstance(arm, Arm) else None
            if cost is None:
                costs.append(0.0)
            elif isinstance(cost, bool) or not isinstance(cost, int | float) or not (
                math.isfinite(cost) and cost >= 0
            ):
                raise InvalidCandidates(f"token_cost of {preview(arm)} must be a number >= 0")
            else:
                costs.append(float(cost))
        picked: list[int] = []
        spent = 0.0
        for pos in order.tolist():
            cost = costs[pos]
            if spent + cost <= budget:
                picked.append(pos)
                spent += cost
                if len(picked) == k:
                    break
        if not picked:
            raise BudgetTooSmall(f"no candidate fits token_budget {budget}")
        return np.asarray(picked, dtype=np.int64)

    def issue_selection(
        self,
        arm_ids: Sequence[str],
        context: dict[str, Any] | None,
        kind: str = "rerank",
        *,
        means: Sequence[float] = (),
        candidates: Sequence[str] | None = None,
        propensities: Sequence[float | None] | None = None,
    ) -> tuple[str, SelectionClaims]:
        """Sign a selection of ``arm_ids`` (display order) made outside ``select`` and log
        it as a decision; ``means`` (one per arm) are signed with it (the reranker's click
        model reads them). ``candidates``: everything it chose from (default: the arms
        shown); ``propensities``: one per shown arm, when the caller knows them."""
        ctx = canonical_context(context)
        for arm_id in arm_ids:
            if arm_id not in self._index:
                check_name(arm_id, "arm id")
        shown = list(arm_ids)
        chosen_kind: Literal["select", "rerank"] = "rerank" if kind == "rerank" else "select"
        # Checked before signing: a refused call issues no id.
        known = None if propensities is None else tuple(propensities)
        if known is not None and len(known) != len(shown):
            raise InvalidInput("propensities must give one value per arm shown")
        offered = shown if candidates is None else list(candidates)
        where = {arm: i for i, arm in enumerate(offered)}
        if len(where) != len(offered) or any(arm not in where for arm in shown):
            raise InvalidInput("candidates must be distinct and include every arm shown")
        token, claims = self._signer.issue(self.name, ctx.body if ctx else None, shown,
                                           chosen_kind, means=means)
        if shown and self._logging:
            self._decisions.add((claims.nonce, chosen_kind,
                                 ctx.key if ctx else GLOBAL_CONTEXT, self._now(),
                                 [where[arm] for arm in shown], offered,
                                 None if known is None else known_propensities, known))
        return token, claims

