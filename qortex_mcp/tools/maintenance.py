"""Destructive tools: shrink learned evidence (``decay``) or forget it (``reset``)."""

from __future__ import annotations

from typing import Annotated, Any

from mcp.types import CallToolResult, ToolAnnotations
from pydantic import Field

from qortex_mcp.runtime import QortexRuntime
from qortex_mcp.schemas import DecayOutput, PosteriorOut, ResetOutput
from qortex_mcp.tools.base import ToolSpec, reply
from qortex_mcp.tools.boundary import guarded
from qortex_mcp.tools.params import (
    MAX_LIMIT,
    ArmIdArg,
    ArmIdsArg,
    ContextArg,
    ExistingLearnerArg,
)

__all__ = ["MAINTENANCE_TOOLS"]


def _decay(rt: QortexRuntime) -> Any:
    @guarded
    async def decay(
        *,
        learner: ExistingLearnerArg = "default",
        factor: Annotated[float, Field(
            ge=0, le=1, description="Keep this share of the learned evidence (0.5 halves it)."
        )],
        arm_id: Annotated[ArmIdArg | None, Field(
            description="Only this arm; omit for every arm."
        )] = None,
    ) -> Annotated[CallToolResult, DecayOutput]:
        """Shrink learned evidence toward the prior so the learner adapts faster. Call when
        the world changed (new model, new data) and old outcomes count for less."""
        async with rt.use(learner, create=False) as lrn:
            if arm_id is None:
                await lrn.decay(factor)
                posterior = None
                summary = f"evidence of every arm of {lrn.name!r} multiplied by {factor}"
            else:
                posterior = PosteriorOut.model_validate(await lrn.decay_arm(arm_id, factor))
                summary = f"evidence of arm {arm_id!r} multiplied by {factor}"
        return reply(DecayOutput(learner=lrn.name, factor=factor, arm_id=arm_id,
                                 posterior=posterior, summary=summary))

    return decay


def _reset(rt: QortexRuntime) -> Any:
    @guarded
    async def reset(
        *,
        learner: ExistingLearnerArg = "default",
        arm_ids: ArmIdsArg = None,
        context: ContextArg = None,
        confirm: Annotated[bool, Field(
            description="false (default) only previews; true forgets the evidence."
        )] = False,
    ) -> Annotated[CallToolResult, ResetOutput]:
        """Forget what a learner learned (all arms, some arms, or one context). Previews by
        default; call again with confirm=true only when the user asked for a reset."""
        async with rt.use(learner, create=False) as lrn:
            report = await lrn.reset(arm_ids, context, dry_run=not confirm)
        shown = list(report.arms[:MAX_LIMIT])
        if not report.rows:
            summary = "nothing to reset: no learned evidence matches"
        elif report.applied:
            summary = f"reset {len(report.arms)} arm(s) of {lrn.name!r}"
        else:
            summary = (f"preview: would reset {len(report.arms)} arm(s) of {lrn.name!r}; "
                       "call again with confirm=true to apply")
        return reply(ResetOutput(
            learner=lrn.name, applied=report.applied, arms=shown,
            arms_left_out=len(report.arms) - len(shown), rows=report.rows,
            evidence_removed=report.evidence, context_key=report.context_key, summary=summary,
        ))

    return reset


_DESTRUCTIVE = ToolAnnotations(read_only_hint=False, destructive_hint=True,
                               idempotent_hint=False, open_world_hint=False)

MAINTENANCE_TOOLS = (
    ToolSpec("decay", "Decay learned evidence", _DESTRUCTIVE, _decay),
    ToolSpec("reset", "Reset a learner",
             ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True,
                             open_world_hint=False), _reset),
)
