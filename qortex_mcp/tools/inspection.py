"""Read-only tools: what the learners know (posteriors, top arms, metrics, status)."""

from __future__ import annotations

from typing import Annotated, Any

from mcp.types import CallToolResult
from pydantic import Field

from qortex_mcp import __version__
from qortex_mcp.learning import LearnerRegistry
from qortex_mcp.learning.context import canonical_context
from qortex_mcp.learning.rewards import outcome_rewards
from qortex_mcp.learning.types import GLOBAL_CONTEXT
from qortex_mcp.runtime import QortexRuntime
from qortex_mcp.schemas import (
    ArmMetricsOut,
    LearnerMetricsOut,
    LearnerStatus,
    LimitsStatus,
    MetricsOutput,
    PosteriorOut,
    PosteriorsOutput,
    StatusOutput,
    TopArmsOutput,
)
from qortex_mcp.tools.base import READ_ONLY, ToolSpec, reply
from qortex_mcp.tools.boundary import guarded
from qortex_mcp.tools.params import (
    MAX_LIMIT,
    ArmIdsArg,
    ContextArg,
    ExistingLearnerArg,
    LimitArg,
    OptionalLearnerArg,
)

__all__ = ["INSPECTION_TOOLS"]


def _context_key(context: dict[str, Any] | None) -> str:
    ctx = canonical_context(context)
    return GLOBAL_CONTEXT if ctx is None else ctx.key


def _posteriors(rt: QortexRuntime) -> Any:
    @guarded
    async def posteriors(
        *,
        learner: ExistingLearnerArg = "default",
        arm_ids: ArmIdsArg = None,
        context: ContextArg = None,
        limit: LimitArg = 50,
        offset: Annotated[int, Field(
            ge=0, description="Skip this many arms first (pages: offset += limit)."
        )] = 0,
    ) -> Annotated[CallToolResult, PosteriorsOutput]:
        """Show what a learner believes about each arm: alpha, beta, mean, 95% credible
        interval, pulls. Call to explain a choice or check learning progress."""
        async with rt.use(learner, create=False) as lrn:
            page = await lrn.posteriors(arm_ids, context, limit=limit, offset=offset)
            if arm_ids is not None:
                total = len(arm_ids)
            elif len(page) < limit and (page or not offset):
                total = offset + len(page)
            else:  # count every arm (metrics skips the credible intervals, so it is cheaper)
                total = len((await lrn.metrics()).arms)
        return reply(PosteriorsOutput(
            learner=lrn.name, context_key=_context_key(context),
            arms=[PosteriorOut.model_validate(p) for p in page], total=total,
            left_out=total - len(page),
        ))

    return posteriors


def _top_arms(rt: QortexRuntime) -> Any:
    @guarded
    async def top_arms(
        *,
        learner: ExistingLearnerArg = "default",
        k: Annotated[int, Field(ge=1, le=MAX_LIMIT, description="How many arms.")] = 5,
        context: ContextArg = None,
    ) -> Annotated[CallToolResult, TopArmsOutput]:
        """List the arms with the highest expected reward, best first. Call to see what
        works best (in a context)."""
        async with rt.use(learner, create=False) as lrn:
            top = await lrn.top_arms(k, context)
        return reply(TopArmsOutput(learner=lrn.name, context_key=_context_key(context),
                                   arms=[PosteriorOut.model_validate(p) for p in top]))

    return top_arms


def _metrics(rt: QortexRuntime) -> Any:
    @guarded
    async def metrics(
        *,
        learner: OptionalLearnerArg = None,
        limit: LimitArg = 50,
    ) -> Annotated[CallToolResult, MetricsOutput]:
        """Report selections, feedback and reward rates, feedback rate and measured
        exploration, per learner and arm. Call to check the loop is being closed."""
        registry = await rt.registry()
        if learner is None:
            names = [s.name for s in await registry.summaries()]
        else:
            names = [(await registry.get(learner, create=False)).name]
        out = []
        for name in names[:limit]:
            async with registry.use(name, create=False) as lrn:
                m = await lrn.metrics()
            arms = sorted(m.arms, key=lambda a: (-a.selections, a.id))[:limit]
            out.append(LearnerMetricsOut(
                learner=m.learner, selections=m.selections, explored=m.explored,
                feedback=m.feedback, answered=m.answered, feedback_rate=m.feedback_rate,
                exploration_rate=m.exploration_rate, last_update=m.last_update,
                arms=[ArmMetricsOut.model_validate(a) for a in arms],
                arms_left_out=len(m.arms) - len(arms),
            ))
        summary = (f"{len(names)} learner(s)" if names else
                   "no data: no learner has been used yet; qortex_select starts one")
        return reply(MetricsOutput(learners=out, left_out=len(names) - len(out),
                                   summary=summary))

    return metrics


def _limits(registry: LearnerRegistry) -> LimitsStatus:
    config, budget = registry.default_config(), registry.budget
    return LimitsStatus(
        max_open_learners=registry.max_open, open_learners=len(registry.open_learners()),
        memory_budget_mb=None if budget.limit_bytes is None else budget.limit_bytes / 2**20,
        memory_used_mb=round(budget.used_bytes / 2**20, 3),
        feedback_per_minute=config.feedback_per_minute,
        feedback_per_arm_per_minute=config.feedback_per_arm_per_minute,
        max_contexts=config.max_contexts,
    )


def _status(rt: QortexRuntime) -> Any:
    @guarded
    async def status(*, limit: LimitArg = 100) -> Annotated[CallToolResult, StatusOutput]:
        """Report the server version, which store holds the learning and where, and each
        learner's strategy and its parameters, arm, selection and feedback counts and how
        each outcome word counts for it. Call first when unsure what exists."""
        registry = await rt.registry()
        info = await registry.store.info()
        learners = await registry.summaries()
        rates = {lrn.name: lrn.feedback_last_minute for lrn in registry.open_learners()}
        shown = []
        for learner in learners[:limit]:
            config = registry.config_for(learner.name)
            model = config.build_reward_model()
            shown.append(LearnerStatus.model_validate(learner).model_copy(update={
                "feedback_last_minute": rates.get(learner.name),
                "strategy": config.strategy_name(),
                "strategy_params": config.strategy_parameters(),
                "change_detection": (detector.params if (detector := config.build_change_detector())
                                     else None),
                "reward_model": model.name, "outcome_rewards": outcome_rewards(model)}))
        feedback = sum(s.feedback for s in learners)
        if not learners:
            summary = "no data: no learner has been used yet"
        elif not feedback:
            summary = f"{len(learners)} learner(s); no feedback yet, so nothing learned"
        else:
            summary = f"{len(learners)} learner(s), {feedback} feedback(s) in total"
        return reply(StatusOutput(
            version=__version__, store=info.kind, location=info.location,
            schema_version=info.schema_version, learners=shown,
            learners_left_out=len(learners) - len(shown), limits=_limits(registry),
            summary=summary,
        ))

    return status


INSPECTION_TOOLS = (
    ToolSpec("posteriors", "Posterior per arm", READ_ONLY, _posteriors),
    ToolSpec("top_arms", "Best arms", READ_ONLY, _top_arms),
    ToolSpec("metrics", "Learning metrics", READ_ONLY, _metrics),
    ToolSpec("status", "Server and store status", READ_ONLY, _status),
)
