"""The learning loop: ``select`` (or ``rerank``), act, then ``feedback``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from mcp.types import CallToolResult, ToolAnnotations
from pydantic import Field

from qortex_mcp.learning import FeedbackResult, Learner
from qortex_mcp.learning.feedback import FeedbackRequest, route_feedback
from qortex_mcp.rerank import PosteriorReranker
from qortex_mcp.runtime import QortexRuntime
from qortex_mcp.schemas import ArmFeedback, FeedbackOutput, RerankOutput, SelectOutput
from qortex_mcp.tools.base import ToolSpec, reply
from qortex_mcp.tools.boundary import guarded
from qortex_mcp.tools.params import (
    ArmIdArg,
    CandidatesArg,
    ContextArg,
    KArg,
    LearnerArg,
    OutcomeValue,
    ResultsArg,
)

__all__ = ["LOOP_TOOLS", "rerank_clicks"]

SelectionIdArg = Annotated[str | None, Field(
    description="The selection_id returned by select, rerank or next_tool, quoted exactly.",
)]
OutcomesArg = Annotated[dict[str, OutcomeValue] | None, Field(
    description="Per chosen arm id (for next_tool: the tool you called): 'accepted', "
    "'rejected', 'partial' or a reward in [0, 1]. "
    "Words count by the learner's reward model: by default accepted = 1, partial = 0.5, "
    "rejected = 0 (qortex_status shows each learner's).",
)]


def _select(rt: QortexRuntime) -> Any:
    @guarded
    async def select(
        *,
        learner: LearnerArg = "default",
        candidates: CandidatesArg,
        context: ContextArg = None,
        k: KArg = 1,
        token_budget: Annotated[float | None, Field(
            ge=0, description="Choose arms whose token_cost sum fits this budget."
        )] = None,
    ) -> Annotated[CallToolResult, SelectOutput]:
        """Choose the best of your candidates (prompt variants, tools, strategies) from what
        worked before. Call before acting; then send qortex_feedback with the selection_id for
        the arms it chose. Keep context coarse and stable (the task type, not the query)."""
        arms = [c if isinstance(c, str) else c.to_arm() for c in candidates]
        async with rt.use(learner) as lrn:
            result = await lrn.select(arms, context, k, token_budget)
        return reply(SelectOutput.model_validate(result))

    return select


def _rerank(rt: QortexRuntime) -> Any:
    @guarded
    async def rerank(
        *,
        learner: LearnerArg = "default",
        results: ResultsArg,
        context: ContextArg = None,
        explain: Annotated[bool, Field(description="Explain each result's new rank.")] = False,
        explore: Annotated[bool, Field(
            description="Sample posteriors instead of ranking by their means."
        )] = False,
        limit: Annotated[int | None, Field(
            ge=1, description="Return (and sign) only the first limit results of the new "
            "order; omit for all."
        )] = None,
    ) -> Annotated[CallToolResult, RerankOutput]:
        """Reorder search results so ones accepted before rise and rejected ones sink. Call
        after retrieval; then send qortex_feedback with the selection_id for results used."""
        async with rt.use(learner) as lrn:
            ranked = await PosteriorReranker(lrn).rerank(
                [r.model_dump() for r in results], context, explain=explain, explore=explore,
                limit=limit,
            )
        return reply(RerankOutput(learner=lrn.name, selection_id=ranked.selection_id,
                                  results=ranked.results, explanations=ranked.explanations))

    return rerank


def _feedback(rt: QortexRuntime) -> Any:
    @guarded
    async def feedback(
        *,
        learner: LearnerArg = "default",
        selection_id: SelectionIdArg = None,
        outcomes: OutcomesArg = None,
        arm_id: Annotated[ArmIdArg | None, Field(
            description="Bare form: the arm the outcome is about (with outcome)."
        )] = None,
        outcome: Annotated[OutcomeValue | None, Field(
            description="Bare form: 'accepted', 'rejected', 'partial' or a reward in [0, 1] "
            "(words count as for outcomes)."
        )] = None,
        context: ContextArg = None,
        idempotency_key: Annotated[str | None, Field(
            description="Makes a retried bare feedback count once."
        )] = None,
        clicks_only: Annotated[bool, Field(
            description="Rerank feedback that only records clicks (unclicked results above "
            "a click count as skipped)."
        )] = False,
    ) -> Annotated[CallToolResult, FeedbackOutput]:
        """Report how the chosen arms worked: ALWAYS call after acting on select, rerank or
        next_tool (name the tool you called), quoting its selection_id, good outcome or bad.
        Safe to retry (duplicates count once).
        Use the bare form (arm_id + outcome, no selection_id) only for an arm no select or
        rerank chose, e.g. an option you tried on your own."""
        request = FeedbackRequest.of(
            learner, selection_id=selection_id, outcomes=outcomes, arm_id=arm_id,
            outcome=outcome, context=context, idempotency_key=idempotency_key,
            clicks_only=clicks_only)
        kind, answers = await route_feedback(await rt.registry(), request, clicks=rerank_clicks)
        arms = [ArmFeedback.model_validate(a) for a in answers]
        applied = sum(a.status == "applied" for a in arms)
        return reply(FeedbackOutput(learner=learner, selection_id=selection_id, kind=kind,
                                    arms=arms, applied=applied, duplicates=len(arms) - applied))

    return feedback


async def rerank_clicks(
    lrn: Learner, selection_id: str, pairs: Mapping[str, str | float]
) -> list[FeedbackResult]:
    """``clicks_only`` rerank feedback through the reranker's click model."""
    return await PosteriorReranker(lrn).feedback(selection_id, pairs, clicks_only=True)


_WRITES = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False,
                          open_world_hint=False)

LOOP_TOOLS = (
    ToolSpec("select", "Select among candidates", _WRITES, _select),
    ToolSpec("feedback", "Report outcomes",
             ToolAnnotations(read_only_hint=False, destructive_hint=False,
                             idempotent_hint=True, open_world_hint=False), _feedback),
    ToolSpec("rerank", "Rerank retrieval results", _WRITES, _rerank),
)
