"""What the MCP tools return: pydantic output models (each becomes a tool's output schema).

Every list a tool returns is bounded; where a bound can cut it, the model says how many
items were left out. Models are built from the library's frozen value objects with
``from_attributes``, so the adapters in ``qortex_mcp.tools`` stay one line each.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from qortex_mcp.rerank import ItemExplanation

__all__ = [
    "ArmFeedback",
    "ArmMetricsOut",
    "DecayOutput",
    "FeedbackOutput",
    "LearnerMetricsOut",
    "LearnerStatus",
    "LimitsStatus",
    "MetricsOutput",
    "NextToolOutput",
    "PosteriorOut",
    "PosteriorsOutput",
    "RerankOutput",
    "ResetOutput",
    "ScoredArmOut",
    "SelectOutput",
    "StatusOutput",
    "ToolSuggestionOut",
    "TopArmsOutput",
]


def _finite_or_none(value: Any) -> Any:
    """JSON has no infinity: an unbounded score (an untried arm's UCB index) is null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True, frozen=True)


class ScoredArmOut(_Out):
    id: str
    score: Annotated[float | None, BeforeValidator(_finite_or_none)] = Field(
        description="the strategy's score (a posterior draw for Thompson, an upper confidence "
        "bound for the UCB family); null when the strategy's score is unbounded: an arm a "
        "UCB-type strategy has not tried yet")
    mean: float = Field(description="posterior mean: the expected reward")
    alpha: float
    beta: float
    rank: int = Field(description="1 = best")
    token_cost: float | None = None
    metadata: dict[str, Any] | None = None
    propensity: float | None = Field(
        None, description="the probability the strategy had of choosing this arm in this "
        "slot (exact, or a Monte-Carlo estimate for Thompson sampling); null when unknown")


class SelectOutput(_Out):
    learner: str
    selection_id: str = Field(description="quote it in qortex_feedback")
    selected: list[ScoredArmOut] = Field(description="the chosen arms, best first")
    context_key: str = Field(description="key of the context the selection used ('' = global)")
    strategy: str
    explored: bool = Field(
        description="true when the top choice's posterior mean was below the best candidate's"
    )
    candidates: int
    requested: int = Field(1, description="the k asked for")
    note: str | None = Field(
        None, description="set when fewer than k arms were chosen, and why (fewer candidates, "
        "or fewer fit token_budget)",
    )


class ArmFeedback(_Out):
    arm_id: str
    status: Literal["applied", "duplicate"] = Field(
        description="duplicate: this answer was already recorded, nothing changed"
    )
    reward: float
    mean: float = Field(description="the arm's posterior mean after this feedback")
    alpha: float
    beta: float
    pulls: int = Field(description="feedbacks the arm has received (in the context)")


class FeedbackOutput(_Out):
    learner: str
    selection_id: str | None
    kind: Literal["select", "rerank", "next_tool", "bare"]
    arms: list[ArmFeedback]
    applied: int
    duplicates: int


class ToolSuggestionOut(_Out):
    tool: str
    rank: int = Field(description="1 = best")
    probability: float = Field(description="smoothed chance it is the next call, given the "
                               "history (over the candidates)")
    success: float = Field(description="its success estimate after this history (a posterior "
                           "draw when exploring)")
    success_mean: float = Field(description="posterior mean of its success after this history")
    score: float = Field(description="what the ranking used: probability and success blended")
    count: float = Field(description="times it followed the most specific matching history")
    reason: str = Field(description="which history matched, how often and how well it went")


class NextToolOutput(_Out):
    learner: str
    selection_id: str = Field(description="quote it in qortex_feedback with the tool you called")
    suggestions: list[ToolSuggestionOut] = Field(description="best first")
    history: list[str | None] = Field(description="the last two tools used (null: session "
                                      "start)")
    context_key: str = Field(description="key of the context level used ('' = global)")
    candidates: int
    explored: bool


class RerankOutput(_Out):
    learner: str
    selection_id: str = Field(description="quote it in qortex_feedback")
    results: list[dict[str, Any]] = Field(description="the results, in the new order")
    explanations: list[ItemExplanation] | None = None


class EstimateOut(_Out):
    mean: float | None = Field(description="the strategy's estimate of the mean reward (null: "
                               "no evidence yet, for a frequentist strategy)")
    low: float
    high: float
    interval: Literal["credible", "confidence"]
    level: float = Field(description="the interval's probability, e.g. 0.95")
    pulls: float = Field(description="(decayed, backed-off) observations behind it")
    params: dict[str, float] = Field(description="the strategy's own numbers, e.g. alpha/beta "
                                     "of a Beta posterior or pulls/reward_sum")


class PosteriorOut(_Out):
    id: str
    alpha: float
    beta: float
    mean: float
    ci_low: float = Field(description="95% credible interval, lower end")
    ci_high: float = Field(description="95% credible interval, upper end")
    pulls: int
    selections: int
    reward_rate: float | None = Field(description="mean raw reward of the feedback received")
    last_update: float | None = Field(description="Unix time of the last feedback")
    estimate: EstimateOut | None = Field(
        None, description="what the learner's strategy believes: for UCB-type strategies the "
        "sample mean with a confidence interval; for Thompson the Beta posterior above")


class PosteriorsOutput(_Out):
    learner: str
    context_key: str
    arms: list[PosteriorOut]
    total: int = Field(description="arms that matched")
    left_out: int = Field(description="arms not returned (before the offset or beyond the "
                          "limit)")


class TopArmsOutput(_Out):
    learner: str
    context_key: str
    arms: list[PosteriorOut] = Field(description="highest posterior mean first")


class ArmMetricsOut(_Out):
    id: str
    selections: int
    feedback: int
    reward_rate: float | None
    mean: float
    last_selected: float | None
    last_update: float | None


class LearnerMetricsOut(_Out):
    learner: str
    selections: int
    explored: int
    feedback: int
    answered: int = Field(0, description="selections that got feedback on at least one arm")
    feedback_rate: float | None = Field(
        description="share of selections that got any feedback (answered / selections, at "
        "most 1; bare and rerank feedback are not selections)"
    )
    exploration_rate: float | None = Field(
        description="share of selections whose top choice's mean was below the best one's"
    )
    last_update: float | None
    arms: list[ArmMetricsOut]
    arms_left_out: int


class MetricsOutput(_Out):
    learners: list[LearnerMetricsOut]
    left_out: int = Field(description="learners beyond the limit, not returned")
    summary: str


class DecayOutput(_Out):
    learner: str
    factor: float
    arm_id: str | None = Field(description="the arm decayed; null = every arm")
    posterior: PosteriorOut | None = Field(description="the arm's posterior after the decay")
    summary: str


class ResetOutput(_Out):
    learner: str
    applied: bool = Field(description="false: a preview; call again with confirm=true")
    arms: list[str] = Field(description="arms whose evidence is (or would be) forgotten")
    arms_left_out: int
    rows: int = Field(description="posterior rows touched (global and per context)")
    evidence_removed: float = Field(description="pseudo-observations removed")
    context_key: str | None
    summary: str


class LearnerStatus(_Out):
    name: str
    arms: int
    selections: int
    explored: int
    feedback: int
    last_update: float | None
    feedback_last_minute: int | None = Field(
        None, description="feedback rows taken in the last 60 s (learners open in this "
        "server; null otherwise)")
    strategy: str | None = Field(None, description="how this learner chooses (e.g. thompson)")
    strategy_params: dict[str, Any] | None = Field(
        None, description="the strategy's parameters, defaults filled in ({} for thompson)")
    change_detection: dict[str, Any] | None = Field(
        None, description="the Page-Hinkley change test's parameters when the learner runs "
        "one (null: off)")
    reward_model: str | None = Field(None, description="how this learner scores outcomes")
    outcome_rewards: dict[str, float] | None = Field(
        None, description="the reward each outcome word counts as for this learner, e.g. "
        "{\"accepted\": 1, \"partial\": 0.5, \"rejected\": 0}",
    )


class LimitsStatus(_Out):
    max_open_learners: int = Field(description="idle learners beyond are closed (LRU)")
    open_learners: int
    memory_budget_mb: float | None = Field(description="learner state of open learners")
    memory_used_mb: float = Field(description="an estimate of the open learners' state")
    feedback_per_minute: int | None = Field(
        description="per learner (null: no cap); beyond, RATE_LIMITED says when to retry")
    feedback_per_arm_per_minute: int | None = Field(description="per learner and arm")
    max_contexts: int = Field(description="distinct contexts with evidence, per learner")


class StatusOutput(_Out):
    version: str
    store: str
    location: str = Field(description="where state lives (passwords masked)")
    schema_version: int
    learners: list[LearnerStatus]
    learners_left_out: int
    limits: LimitsStatus | None = None
    summary: str = Field(description="one line; says 'no data' when nothing was learned yet")
