"""Retrieval reranking by posterior means (interim: retrieval order, real selection ids).

The full scoring (retrieval-score priors, back-off, explore, move caps, position-weighted
click feedback) lands with the reranker issue; this module fixes the public interface the
MCP server builds on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from qortex_mcp.errors import InvalidCandidates
from qortex_mcp.learning.learner import Learner
from qortex_mcp.learning.types import ArmOutcome, FeedbackResult, Outcome

__all__ = ["ItemExplanation", "PosteriorReranker", "RerankResult"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ItemExplanation:
    id: str
    base_rank: int
    base_score: float
    prior_alpha: float
    prior_beta: float
    alpha: float
    beta: float
    mean: float
    ci_low: float
    ci_high: float
    new_rank: int


@dataclass(frozen=True, slots=True)
class RerankResult(Generic[T]):
    results: list[T]
    selection_id: str
    explanations: list[ItemExplanation] | None = None


class PosteriorReranker:
    """Reorders retrieval results by what agents accepted before."""

    def __init__(self, learner: Learner, *, id_key: str = "id", score_key: str = "score") -> None:
        self.learner = learner
        self.id_key = id_key
        self.score_key = score_key

    def _id(self, item: Any) -> str:
        value = item.get(self.id_key) if isinstance(item, Mapping) else getattr(
            item, self.id_key, None)
        if not isinstance(value, str):
            raise InvalidCandidates(f"every result needs a string {self.id_key!r}")
        return value

    async def rerank(
        self,
        results: Sequence[T],
        context: dict[str, Any] | None = None,
        *,
        explain: bool = False,
        explore: bool = False,
    ) -> RerankResult[T]:
        ids = [self._id(item) for item in results]
        if len(set(ids)) != len(ids):
            raise InvalidCandidates("result ids must be distinct")
        token, _ = self.learner.issue_selection(ids, context, "rerank")
        return RerankResult(list(results), token, None)

    async def feedback(
        self,
        selection_id: str,
        outcomes: Mapping[str, Outcome | float],
        *,
        clicks_only: bool = False,
    ) -> list[FeedbackResult]:
        batch = [
            ArmOutcome(arm, reward=float(v)) if isinstance(v, int | float)
            and not isinstance(v, bool) else ArmOutcome(arm, outcome=v,  # type: ignore[arg-type]
                                                       selection_id=selection_id)
            for arm, v in outcomes.items()
        ]
        batch = [ArmOutcome(o.arm_id, o.outcome, o.reward, selection_id) for o in batch]
        return await self.learner.batch_observe(batch)
