"""Frozen value objects of the learning API.

Everything here is plain data: arms offered to ``select``, outcomes sent to ``observe``, and
what comes back. Store-level records (evidence rows, events) live here too so that every
store speaks the same types.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Final, Literal, Protocol

from qortex_mcp.learning.policies.base import Estimate

__all__ = [
    "ApplyResult",
    "Arm",
    "ArmArrays",
    "ArmMetrics",
    "ArmOutcome",
    "ArmRow",
    "Decision",
    "Event",
    "EventKind",
    "EventRow",
    "EvidenceRow",
    "FeedbackResult",
    "FeedbackRow",
    "LearnerMetrics",
    "Outcome",
    "Posterior",
    "ReplayMismatch",
    "ReplayReport",
    "ResetReport",
    "RowStatus",
    "ScoredArm",
    "SelectionResult",
    "ToolExecution",
]

GLOBAL_CONTEXT = ""
"""Context key of an arm's global posterior (evidence from every context)."""


@dataclass(frozen=True, slots=True)
class Arm:
    """A candidate: a prompt, tool, strategy or document, named by a stable id.

    Args:
        id: 1-128 characters, NFC, no control or format characters, no outer whitespace.
        token_cost: what choosing it costs against ``token_budget`` (missing means 0).
        prior: ``(alpha, beta)`` of the arm's Beta prior, e.g. ``(8, 2)`` for an arm known to
            succeed about 80% of the time. Setting it updates the arm's stored prior;
            learned evidence is kept.
        metadata: free data returned with the arm; never interpreted.
    """

    id: str
    token_cost: float | None = None
    prior: tuple[float, float] | None = None
    metadata: Mapping[str, Any] | None = field(default=None, compare=False, hash=False)


@dataclass(frozen=True, slots=True)
class ToolExecution:
    """How a tool call went, for ``ToolOutcomeReward``."""

    success: bool
    latency_ms: float | None = None
    rating: int | None = None
    """Optional human or model rating, 1 (bad) to 5 (excellent)."""


Outcome = str | ToolExecution
"""An outcome word (``accepted``, ``rejected``, ``partial``) or a tool execution record."""

RowStatus = Literal["applied", "duplicate", "conflict"]


@dataclass(frozen=True, slots=True)
class ArmOutcome:
    """Feedback for one arm.

    Give ``reward`` (a number in [0, 1]) or ``outcome`` (mapped by the learner's reward
    model); when both are given the reward is used and the outcome is recorded with it.
    Quote the ``selection_id`` that ``select`` or ``rerank`` returned; without it the
    feedback is "bare" and ``idempotency_key`` (if given) makes retries safe.
    """

    arm_id: str
    outcome: Outcome | None = None
    reward: float | None = None
    selection_id: str | None = None
    context: Mapping[str, Any] | None = None
    idempotency_key: str | None = None
    weight: float = 1.0
    """Evidence weight in (0, 1]: alpha += weight*reward, beta += weight*(1-reward)."""


class LazyPropensities(Protocol):
    """What a ``ScoredArm`` asks for its propensity: the select's propensities, one per
    chosen arm, computed on first use (the learner's decision log settles them)."""

    def get(self, slot: int) -> float | None: ...


@dataclass(frozen=True, slots=True)
class ScoredArm:
    """One chosen arm, best first, with the score it was ranked by."""

    id: str
    score: float
    mean: float
    alpha: float
    beta: float
    rank: int
    token_cost: float | None = None
    metadata: Mapping[str, Any] | None = field(default=None, compare=False, hash=False)
    lazy: LazyPropensities | None = field(default=None, compare=False, hash=False,
                                          repr=False)
    """Where ``propensity`` comes from (set by ``select``)."""

    @property
    def propensity(self) -> float | None:
        """The probability the strategy had of choosing this arm in its slot, given the
        state the select saw (see the decision log in the README): computed on first
        read, off the select path; None when unknown (decision log off, a token budget,
        a strategy instance without propensities)."""
        lazy = self.lazy
        return None if lazy is None else lazy.get(self.rank - 1)


def _slot_setters(cls: type) -> tuple[Any, ...]:
    return tuple(cls.__dict__[f.name].__set__ for f in fields(cls))


_SCORED_SET: Final = _slot_setters(ScoredArm)


def scored_arm(
    id: str, score: float, mean: float, alpha: float, beta: float, rank: int,
    token_cost: float | None, metadata: Mapping[str, Any] | None,
    lazy: LazyPropensities | None = None,
) -> ScoredArm:
    """``ScoredArm(...)`` for the select hot path, without validation.

    A frozen dataclass's ``__init__`` sets each field through ``object.__setattr__``
    (about 80 ns a field); writing the slots directly halves building the k results.
    """
    arm: ScoredArm = object.__new__(ScoredArm)
    s_id, s_score, s_mean, s_alpha, s_beta, s_rank, s_cost, s_meta, s_lazy = _SCORED_SET
    s_id(arm, id)
    s_score(arm, score)
    s_mean(arm, mean)
    s_alpha(arm, alpha)
    s_beta(arm, beta)
    s_rank(arm, rank)
    s_cost(arm, token_cost)
    s_meta(arm, metadata)
    s_lazy(arm, lazy)
    return arm


@dataclass(frozen=True, slots=True)
class SelectionResult:
    """What ``select`` chose. Quote ``selection_id`` in feedback."""

    selected: tuple[ScoredArm, ...]
    selection_id: str
    learner: str
    context_key: str
    strategy: str
    explored: bool
    """True when the top choice's posterior mean is strictly below the best candidate's (a
    tie, e.g. every candidate still at its prior, is not exploration)."""
    candidates: int
    requested: int = 1
    """The ``k`` asked for; ``selected`` holds fewer when there were fewer candidates, or
    when fewer fit ``token_budget`` (``note`` then says which)."""
    note: str | None = None


@dataclass(frozen=True, slots=True)
class FeedbackResult:
    """The durable answer to one arm's feedback."""

    arm_id: str
    status: Literal["applied", "duplicate"]
    reward: float
    alpha: float
    beta: float
    mean: float
    pulls: int
    selection_id: str | None
    context_key: str


@dataclass(frozen=True, slots=True)
class ArmArrays:
    """Every arm a learner knows, as aligned arrays (for views over many arms at once).

    ``alpha`` and ``beta`` are the posterior parameters in the context asked for (decayed,
    backed off, as ``posteriors`` gives them); ``pulls`` and ``reward_sum`` the global
    feedback count and raw reward sum; ``selections`` how often each arm was chosen.
    """

    ids: tuple[str, ...]
    alpha: Any
    beta: Any
    pulls: Any
    selections: Any
    reward_sum: Any
    last_update: Any
    """Unix time of each arm's last feedback (0 when none)."""


@dataclass(frozen=True, slots=True)
class Posterior:
    """An arm's Beta posterior (in one context, or globally when ``context_key`` is empty)."""

    id: str
    alpha: float
    beta: float
    mean: float
    ci_low: float
    ci_high: float
    pulls: int
    selections: int
    reward_rate: float | None
    last_update: float | None
    context_key: str = GLOBAL_CONTEXT
    estimate: Estimate | None = None
    """What the learner's strategy believes about the arm (``policies.Estimate``: a mean
    with a credible or confidence interval and the strategy's own numbers); None for a
    ``LearningStrategy`` instance given as the strategy."""


@dataclass(frozen=True, slots=True)
class ArmMetrics:
    id: str
    selections: int
    feedback: int
    reward_rate: float | None
    mean: float
    last_selected: float | None
    last_update: float | None


@dataclass(frozen=True, slots=True)
class LearnerMetrics:
    learner: str
    selections: int
    explored: int
    feedback: int
    feedback_rate: float | None
    """Share of selections (``select`` calls) that got feedback on at least one of their
    arms: ``answered / selections``, at most 1. A selection counts once however many of
    its arms were answered; bare feedback and rerank feedback are not selections."""
    exploration_rate: float | None
    """Share of selections whose top choice's posterior mean was strictly below the best
    candidate's."""
    arms: tuple[ArmMetrics, ...]
    last_update: float | None
    answered: int = 0
    """Selections that got feedback on at least one arm."""


@dataclass(frozen=True, slots=True)
class ResetReport:
    """What a reset changed (or, as a preview, would change)."""

    learner: str
    applied: bool
    arms: tuple[str, ...]
    rows: int
    evidence: float
    """Total pseudo-observations (alpha + beta beyond the prior) removed."""
    context_key: str | None


@dataclass(frozen=True, slots=True)
class ReplayMismatch:
    context_key: str
    arm_id: str
    stored: tuple[float, float, int]
    replayed: tuple[float, float, int]


@dataclass(frozen=True, slots=True)
class ReplayReport:
    learner: str
    events: int
    rows: int
    mismatches: tuple[ReplayMismatch, ...]

    @property
    def ok(self) -> bool:
        return not self.mismatches


# --- store records -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EvidenceRow:
    """Learned evidence for (context, arm): s and f are the (decayed) successes and failures
    as of time ``t``; ``n`` counts feedbacks, ``rsum`` sums raw rewards (never decayed);
    ``v`` is a per-row version that only grows."""

    ctx: str
    arm: str
    s: float
    f: float
    n: int
    rsum: float
    t: float
    v: int


@dataclass(frozen=True, slots=True)
class ArmRow:
    arm: str
    a0: float | None
    b0: float | None
    selections: int
    last_selected: float | None
    v: int


@dataclass(frozen=True, slots=True)
class FeedbackRow:
    """One feedback to apply: dedup key ``key`` (a selection id, ``key:<idempotency key>``,
    or a fresh random id for unkeyed bare feedback) and ``arm``."""

    key: str
    arm: str
    ctx: str
    ctx_body: str | None
    reward: float
    weight: float
    outcome: str | None
    at: float
    a0: float | None = None
    b0: float | None = None
    propensity: float | None = None
    """The probability the strategy had of choosing ``arm`` in its slot (None: unknown, e.g.
    bare feedback, or a selection whose decision record was lost)."""
    policy: str | None = None
    """The strategy version that chose (``LearnerConfig.policy_version``), None without a
    selection id."""


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """Per input row its status (``conflict`` rows carry the first, standing reward) and the
    evidence rows the transaction left, as committed."""

    statuses: tuple[RowStatus, ...]
    standing: tuple[float | None, ...]
    rows: tuple[EvidenceRow, ...]
    new_keys: frozenset[str] = frozenset()
    """Keys that had no answer (for any arm) before this call and got one now: a selection
    answered for the first time (feedback rate counts selections, not arms)."""


EventKind = Literal["feedback", "decay", "reset"]


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of the append-only event log. ``kind`` is ``feedback``, ``decay`` or
    ``reset``; ``arm`` empty means every arm, ``ctx`` None (for reset) every context."""

    seq: int
    kind: EventKind
    key: str | None
    arm: str
    ctx: str | None
    reward: float | None
    weight: float | None
    outcome: str | None
    at: float
    factor: float | None = None
    ctx_body: str | None = None
    propensity: float | None = None
    """Feedback only: the chosen arm's propensity (``FeedbackRow.propensity``)."""
    policy: str | None = None
    """Feedback only: the strategy version that chose (``FeedbackRow.policy``)."""

    def row(self) -> EventRow:
        """The event as a plain tuple in field order (what ``EventRow`` describes)."""
        return (self.seq, self.kind, self.key, self.arm, self.ctx, self.reward, self.weight,
                self.outcome, self.at, self.factor, self.ctx_body, self.propensity,
                self.policy)


EventRow = tuple[int, EventKind, str | None, str, str | None, float | None, float | None,
                 str | None, float, float | None, str | None, float | None, str | None]
"""An ``Event`` as a plain tuple, fields in the same order: what long scans of the log
(replay, export) read, because building a million ``Event`` objects costs more than reading
the rows (and keeps the garbage collector busy)."""


@dataclass(frozen=True, slots=True)
class Decision:
    """One recorded ``select`` or ``rerank``: what was offered, what was chosen, and the
    probability the strategy had of each choice (the decision log; off-policy evaluation
    reads it). ``seq`` is the store's order (0 before it is written)."""

    key: str
    """The selection id's nonce: feedback on this decision carries the same key."""
    kind: Literal["select", "rerank"]
    ctx: str
    at: float
    policy: str
    """``LearnerConfig.policy_version`` of the learner that decided."""
    chosen: tuple[str, ...]
    """Chosen arms, best first (a rerank: the shown order)."""
    propensities: tuple[float | None, ...]
    """Per chosen arm, ``P(slot j holds chosen[j])`` under the strategy and state of the
    moment; None where the strategy gives none (a rerank ranks by mean)."""
    candidates: tuple[str, ...] | None
    """Every candidate offered, in the caller's order; None beyond ``MAX_LOGGED``."""
    n_candidates: int
    seq: int = 0
