"""``NextToolModel``: which tool should an agent call next, learned from what it called.

One learner holds one model: its arms are tool names and its contexts the n-gram levels of
``qortex_mcp.learning.sequences`` (how counts are stored and smoothed). ``suggest`` ranks
the tools available now after the history so far; feedback on its selection id names the
tool actually called (any candidate it was offered, suggested or not) and how that went,
and teaches the transition at every level in one durable, exactly-once write.

The score blends the two things the model knows about a candidate::

    score = p_seq ** w * success ** (1 - w)        (w = sequence_weight, default 0.5)

``p_seq`` is the smoothed probability that it comes next, ``success`` a draw from its
success posterior after this history (the posterior mean with ``explore=False``), so a
tool that usually follows but keeps failing drops below one that works.

``suggest`` never awaits the store: counts come from the learner's in-memory cache, kept as
arrays per n-gram level (``ngram_counts``), and the estimate for a (history, candidates) pair
is memoised until a row of one of its levels, an arm's prior or the arm set changes.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from qortex_mcp.errors import (
    ArmNotInSelection,
    InvalidCandidates,
    InvalidInput,
    InvalidSelection,
    LimitExceeded,
    preview,
)
from qortex_mcp.learning.context import canonical_context
from qortex_mcp.learning.learner import MAX_K, Learner
from qortex_mcp.learning.ngram_counts import Estimate, LevelCounts, estimate
from qortex_mcp.learning.sequences import Level, levels_for, reason, state_of
from qortex_mcp.learning.strategies import ThompsonSampling
from qortex_mcp.learning.tokens import MAX_OFFERED
from qortex_mcp.learning.types import (
    ArmOutcome,
    EvidenceRow,
    FeedbackResult,
    FeedbackRow,
    Outcome,
    ToolExecution,
)
from qortex_mcp.learning.validation import check_name, check_weight
from qortex_mcp.logging import get_logger

__all__ = ["MAX_HISTORY", "NextToolModel", "NextToolResult", "ToolSuggestion"]

log = get_logger(__name__)
_debug_on = logging.getLogger(__name__).isEnabledFor

MAX_HISTORY: Final = 1000
"""The longest history accepted (only its last two tools are used)."""
MAX_TOOLS: Final = MAX_OFFERED
"""The most candidates per suggestion: all of them are signed into its id."""
_LEVEL_CACHE: Final = 4096
_MEMO_DRIFT: Final = 1e-4
_MEMO_SIZE: Final = 1024
"""Memoised estimates (about 4 KB each with 50 candidates)."""
_THOMPSON: Final = ThompsonSampling()
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
_MODELS: weakref.WeakKeyDictionary[Learner, NextToolModel] = weakref.WeakKeyDictionary()


@dataclass(frozen=True, slots=True)
class ToolSuggestion:
    """One suggested tool, best first."""

    tool: str
    rank: int
    probability: float
    """Smoothed probability that this candidate is the one called next (over candidates)."""
    success: float
    """The success estimate the score used: a posterior draw, or its mean without explore."""
    success_mean: float
    score: float
    count: float
    """How often it followed the most specific matching history (decayed)."""
    reason: str


@dataclass(frozen=True, slots=True)
class NextToolResult:
    """What ``suggest`` returned. Quote ``selection_id`` in feedback naming the tool used."""

    suggestions: tuple[ToolSuggestion, ...]
    selection_id: str
    learner: str
    history: tuple[str | None, ...]
    """The state used: the last two tools (None pads the session start)."""
    context_key: str
    candidates: int
    explored: bool
    """True when the top suggestion differs from the best by posterior means."""


@dataclass(frozen=True, slots=True)
class _Slots:
    """What a candidate list maps to, as of ``arms`` arms and ``priors`` prior changes."""

    arms: int
    priors: int
    slots: IntArray
    top: int
    prior: FloatArray
    """(2, candidates): a0, b0."""
    cap: FloatArray
    """``context_backoff + a0 + b0`` per candidate."""


class NextToolModel:
    """The next-tool model of one learner; get it with ``NextToolModel.of(learner)``.

    Args:
        learner: holds the counts (its arms are tool names); share it with nothing else.
        sequence_weight: ``w`` of the score, in [0, 1]: 1 ranks by sequence probability
            only, 0 by success only.
    """

    def __init__(self, learner: Learner, *, sequence_weight: float = 0.5) -> None:
        if isinstance(sequence_weight, bool) or not isinstance(sequence_weight, int | float) \
                or not 0.0 <= sequence_weight <= 1.0:
            raise InvalidInput(f"sequence_weight must be in [0, 1], got {preview(sequence_weight)}")
        self.learner = learner
        self.sequence_weight = float(sequence_weight)
        self._levels: dict[tuple[Any, ...], tuple[Level, ...]] = {}
        self._counts = LevelCounts()
        # (finest level key, candidates) -> (estimate, when, arms, prior changes)
        self._memo: dict[tuple[str, tuple[str, ...]], tuple[Estimate, float, int, int]] = {}
        self._memo_by_level: dict[str, set[tuple[str, tuple[str, ...]]]] = {}
        self._memo_refs = 0
        self._slot_cache: dict[tuple[str, ...], _Slots] = {}
        self._checked: set[tuple[str, ...]] = set()
        learner._watch(self._changed)

    @classmethod
    def of(cls, learner: Learner) -> NextToolModel:
        """The learner's model (one per learner, made on first use)."""
        model = _MODELS.get(learner)
        if model is None:
            model = _MODELS[learner] = cls(learner)
        return model

    def _changed(self, rows: Sequence[EvidenceRow]) -> None:
        keys = {r.ctx for r in rows}
        self._counts.update(rows, self.learner._ctx, self.learner._index)
        for key in keys:
            for memo_key in self._memo_by_level.pop(key, ()):
                self._memo.pop(memo_key, None)

    # --- inputs ----------------------------------------------------------------------------

    def _state(self, history: Sequence[str]) -> tuple[str | None, str | None]:
        if not isinstance(history, Sequence) or isinstance(history, str):
            raise InvalidInput("history must be a list of tool names (oldest first)")
        if len(history) > MAX_HISTORY:
            raise LimitExceeded(f"history holds at most {MAX_HISTORY} tool names (only the "
                                f"last two are used), got {len(history)}")
        for name in history:
            check_name(name, "tool name in history")
        return state_of(history)

    def _candidates(self, candidates: Sequence[str]) -> tuple[str, ...]:
        if not isinstance(candidates, Sequence) or isinstance(candidates, str) or not candidates:
            raise InvalidCandidates("candidates must be a non-empty list of tool names")
        key = tuple(candidates)
        if key in self._checked:
            return key
        if len(key) > MAX_TOOLS:
            raise InvalidCandidates(f"at most {MAX_TOOLS} candidate tools per call, "
                                    f"got {len(key)}")
        for name in key:
            check_name(name, "tool name")
        if len(set(key)) != len(key):
            raise InvalidCandidates("candidate tool names must be distinct")
        if len(self._checked) >= _LEVEL_CACHE:
            self._checked.clear()
        self._checked.add(key)
        return key

    def _levels_of(self, state: tuple[str | None, str | None], caller: str | None
                   ) -> tuple[Level, ...]:
        key = (state, caller)
        levels = self._levels.get(key)
        if levels is None:
            levels = levels_for(state, caller)
            if len(self._levels) >= _LEVEL_CACHE:
                self._levels.clear()
            self._levels[key] = levels
        return levels

    # --- counts ----------------------------------------------------------------------------

    def counts(self, history: Sequence[str], context: Mapping[str, Any] | None = None
               ) -> dict[str, float]:
        """Decayed counts of each tool that followed ``history`` (its last two tools) at
        the most specific level: the trigram, or the context's trigram with ``context``."""
        ctx = canonical_context(context)
        level = self._levels_of(self._state(history), ctx.body if ctx else None)[-1]
        table = self.learner._ctx.get(level.key, {})
        ids, half_life, now = self.learner._ids, self.learner._half_life, self.learner._now()
        out = {}
        for slot, row in table.items():
            n = row[0] + row[1]
            if n > 0.0:
                out[ids[slot]] = n if half_life is None else n * 0.5 ** (
                    (now - row[4]) / half_life)
        return out

    # --- suggest ---------------------------------------------------------------------------

    def _slots(self, tools: tuple[str, ...]) -> _Slots:
        """The candidates' arm slots (-1: unknown), the largest, and their priors, cached
        per list while the learner's arms and priors stay the same."""
        lrn = self.learner
        known, priors = len(lrn._ids), lrn._priors_changed
        hit = self._slot_cache.get(tools)
        if hit is not None and hit.arms == known and hit.priors == priors:
            return hit
        index = lrn._index
        slots = np.fromiter([index.get(t, -1) for t in tools], dtype=np.int64,
                            count=len(tools))
        prior = np.empty((2, len(tools)))
        prior[0], prior[1] = lrn.config.prior
        seen = slots >= 0
        prior[0, seen], prior[1, seen] = lrn._a0[slots[seen]], lrn._b0[slots[seen]]
        got = _Slots(known, priors, slots, int(slots.max()), prior,
                     lrn.config.context_backoff + prior[0] + prior[1])
        if len(self._slot_cache) >= _LEVEL_CACHE:
            self._slot_cache.clear()
        self._slot_cache[tools] = got
        return got

    def _estimate(self, levels: Sequence[Level], tools: tuple[str, ...]) -> Estimate:
        """The estimate for these levels and candidates, memoised until a row of one of the
        levels, an arm's prior or the set of arms changes (with a half-life, also for at
        most ``_MEMO_DRIFT`` of it: counts then decay by less than 0.01%)."""
        lrn = self.learner
        memo_key = (levels[-1].key, tools)
        now = self.learner._now()
        hit = self._memo.get(memo_key)
        if hit is not None:
            got, at, arms, priors = hit
            if arms == len(lrn._ids) and priors == lrn._priors_changed and (
                    lrn._half_life is None or now - at <= lrn._half_life * _MEMO_DRIFT):
                return got
        got = self._compute(levels, tools, now)
        if len(self._memo) >= _MEMO_SIZE or self._memo_refs >= 4 * _MEMO_SIZE:
            # (the reverse index keeps keys of entries already dropped: bound it too)
            self._memo.clear()
            self._memo_by_level.clear()
            self._memo_refs = 0
        self._memo[memo_key] = (got, now, len(lrn._ids), lrn._priors_changed)
        for level in levels:
            self._memo_by_level.setdefault(level.key, set()).add(memo_key)
        self._memo_refs += len(levels)
        return got

    def _compute(self, levels: Sequence[Level], tools: tuple[str, ...], now: float
                 ) -> Estimate:
        lrn, got = self.learner, self._slots(tools)
        ctx = lrn._ctx
        return estimate(self._counts, [ctx.get(lv.key) for lv in levels],
                        [lv.key for lv in levels], got.slots, got.top, len(lrn._ids) + 1,
                        got.prior, got.cap, lrn._half_life, now)

    def suggest(
        self,
        history: Sequence[str],
        candidates: Sequence[str],
        k: int = 3,
        context: Mapping[str, Any] | None = None,
        *,
        explore: bool = True,
    ) -> NextToolResult:
        """Rank ``candidates`` (the tools available now) as the next call after ``history``.

        Args:
            history: tool names called so far in this task, oldest first (any length up to
                ``MAX_HISTORY``; the last two are used).
            candidates: 1 to ``MAX_TOOLS`` distinct tool names.
            k: how many to return (all when fewer candidates).
            context: the kind of task; the model learns per context on top of the global
                counts.
            explore: draw success estimates from their posteriors (Thompson); False uses
                the posterior means.

        Raises:
            InvalidName, InvalidCandidates, InvalidContext, InvalidInput, LimitExceeded.
        """
        started = time.perf_counter()
        lrn = self.learner
        lrn._check_open()
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
            raise InvalidInput(f"k must be an integer from 1 to {MAX_K}, got {preview(k)}")
        if not isinstance(explore, bool):
            raise InvalidInput("explore must be true or false")
        state = self._state(history)
        tools = self._candidates(candidates)
        ctx = canonical_context(context)
        levels = self._levels_of(state, ctx.body if ctx else None)
        count = len(tools)
        got = self._estimate(levels, tools)
        p, alpha, beta = got.p, got.alpha, got.beta
        mean = alpha / (alpha + beta)
        by_mean = self._blend(p, mean)
        if explore:
            est, score = self._draw(p, alpha, beta)
        else:
            est, score = mean, by_mean
        order = np.argsort(-score, kind="stable")[:k].tolist()
        explored = bool(explore and order[0] != int(np.argmax(by_mean)))
        chosen = [tools[i] for i in order]
        taken = set(order)
        offered = [tools[i] for i in range(count) if i not in taken]
        token, _ = lrn._signer.sign(lrn.name, ctx.body if ctx else None, chosen, "next", offered,
                                 history=state)
        out = []
        at = np.array(order)  # one conversion per array, not one per value
        probs, draws, means, scores = (p[at].tolist(), est[at].tolist(), mean[at].tolist(),
                                       score[at].tolist())
        for i, pos in enumerate(order):
            depth, n, s = got.deepest(pos)
            out.append(ToolSuggestion(
                tool=tools[pos], rank=i + 1, probability=probs[i], success=draws[i],
                success_mean=means[i], score=scores[i], count=n,
                reason=reason(tools[pos], levels, depth, n, s),
            ))
        if _debug_on(logging.DEBUG):
            log.debug("suggest_next", learner=lrn.name, candidates=count, tools=chosen,
                      latency_ms=round((time.perf_counter() - started) * 1e3, 3))
        return NextToolResult(tuple(out), token, lrn.name, state,
                              levels[-1].key if ctx else "", count, explored)

    def _draw(self, p: FloatArray, alpha: FloatArray, beta: FloatArray
              ) -> tuple[FloatArray, FloatArray]:
        """Thompson success draws for every candidate and the scores they give.

        One gamma call for all of them: with at most ``MAX_TOOLS`` candidates numpy's
        per-call cost dominates, so drawing only for those that could reach the top k
        (partitioning first to find them) cost more than it saved."""
        est = _THOMPSON.scores(alpha, beta, self.learner.rng)
        return est, self._blend(p, est)

    def _blend(self, p: FloatArray, success: FloatArray) -> FloatArray:
        """``p ** w * success ** (1 - w)``; w = 0.5 (the default) is one square root."""
        w = self.sequence_weight
        out: FloatArray
        if w == 0.5:
            out = np.sqrt(p * success)
        elif w == 1.0:
            out = p
        else:
            out = p ** w * success ** (1.0 - w)
        return out

    # --- feedback --------------------------------------------------------------------------

    async def feedback(
        self,
        selection_id: str,
        outcomes: Mapping[str, Outcome | float],
        *,
        weight: float = 1.0,
    ) -> list[FeedbackResult]:
        """Learn from the tool the agent called after a suggestion; durable when it returns.

        Args:
            selection_id: the id ``suggest`` returned.
            outcomes: the tool actually called (any candidate of that suggestion) ->
                ``"accepted"``, ``"rejected"``, ``"partial"`` or a number in [0, 1]. Usually
                one tool; several (parallel calls) each count as a transition.
            weight: evidence weight in (0, 1].

        Returns:
            One ``FeedbackResult`` per tool (``applied`` or ``duplicate``: each (selection,
            tool) counts once), with the tool's success posterior after the history.

        Raises:
            InvalidSelection, SelectionExpired: a bad id, or one ``suggest`` did not issue.
            ArmNotInSelection: a tool that was not among the suggestion's candidates.
            InvalidReward, InvalidOutcome, InvalidName, InvalidInput: bad outcomes.
            SelectionConflict: a tool already answered with another reward (nothing applied).
            LimitExceeded, RateLimited, StoreError.
        """
        lrn = self.learner
        lrn._check_open()
        if not isinstance(outcomes, Mapping) or not outcomes:
            raise InvalidInput("outcomes must map the tool called to an outcome word or number")
        weight = check_weight(weight)
        claims = lrn.verify_selection(selection_id)
        if claims.kind != "next":
            raise InvalidSelection("this selection_id is not a next-tool suggestion")
        levels = self._levels_of(state_of(claims.history), claims.context)
        now = self.learner._now()
        rows: list[FeedbackRow] = []
        rated: list[FeedbackRow] = []
        for tool, value in outcomes.items():
            check_name(tool, "tool name")
            if not claims.covers(tool):
                raise ArmNotInSelection(f"tool {preview(tool)} was not a candidate of this "
                                        "suggestion; name the tool called among those offered")
            quote = ArmOutcome(tool, outcome=value) if isinstance(
                value, str | ToolExecution) else ArmOutcome(tool, reward=value)
            reward, text = lrn._reward(quote)
            slot = lrn._index.get(tool)
            a0 = b0 = None
            if slot is not None and slot in lrn._custom_prior:
                a0, b0 = float(lrn._a0[slot]), float(lrn._b0[slot])
            for level in levels:
                rows.append(FeedbackRow(
                    key=f"{claims.nonce}/{level.tag}", arm=tool, ctx=level.key,
                    ctx_body=level.body, reward=reward, weight=weight, outcome=text, at=now,
                    a0=a0, b0=b0))
            rated.append(rows[-1])
        result = await lrn._apply_rows(rows, rated)
        tools = tuple(outcomes)
        got = self._estimate(levels, tools)
        alpha, beta = got.alpha, got.beta
        deepest, per = levels[-1], len(levels)
        table = lrn._ctx.get(deepest.key, {})
        out = []
        for i, tool in enumerate(tools):
            row = table.get(lrn._index[tool])
            a, b = float(alpha[i]), float(beta[i])
            out.append(FeedbackResult(
                arm_id=tool, status="applied" if result.statuses[i * per] == "applied" else
                "duplicate", reward=rows[i * per].reward, alpha=a, beta=b, mean=a / (a + b),
                pulls=int(row[2]) if row else 0, selection_id=claims.nonce,
                context_key=deepest.key))
        log.info("next_tool_feedback", learner=lrn.name, tools=list(tools),
                 statuses=[o.status for o in out])
        return out
