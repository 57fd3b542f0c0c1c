"""``next_tool``: which of the tools available now to call next, learned from what was called.

A thin adapter over ``qortex_mcp.learning.nexttool.NextToolModel``; its feedback goes
through ``qortex_feedback`` (``loop._apply`` routes a next-tool selection id to the model).
"""

from __future__ import annotations

from typing import Annotated, Any

from mcp.types import CallToolResult
from pydantic import Field

from qortex_mcp.learning.nexttool import MAX_HISTORY, MAX_TOOLS, NextToolModel
from qortex_mcp.learning.validation import MAX_NAME_CHARS
from qortex_mcp.runtime import QortexRuntime
from qortex_mcp.schemas import NextToolOutput
from qortex_mcp.tools.base import READ_ONLY, ToolSpec, reply
from qortex_mcp.tools.boundary import guarded
from qortex_mcp.tools.params import ContextArg, KArg, LearnerArg

__all__ = ["SEQUENCE_TOOLS"]

_TOOL_NAME = {"type": "string", "minLength": 1, "maxLength": MAX_NAME_CHARS}

HistoryArg = Annotated[list[str], Field(
    description="Tool names called so far in this task, oldest first ([] at the start). Only "
    f"the last two are used; at most {MAX_HISTORY}.",
    json_schema_extra={"maxItems": MAX_HISTORY, "items": _TOOL_NAME},
)]
ToolsArg = Annotated[list[str], Field(
    description=f"The tools you could call now (1 to {MAX_TOOLS} distinct names).",
    json_schema_extra={"minItems": 1, "maxItems": MAX_TOOLS, "items": _TOOL_NAME},
)]


def _next_tool(rt: QortexRuntime) -> Any:
    @guarded
    async def next_tool(
        *,
        learner: LearnerArg = "tools",
        history: HistoryArg,
        candidates: ToolsArg,
        k: KArg = 3,
        context: ContextArg = None,
        explore: Annotated[bool, Field(
            description="Sample success estimates (explores); false ranks by their means."
        )] = True,
    ) -> Annotated[CallToolResult, NextToolOutput]:
        """Suggest which of your available tools to call next, from the tools called so far
        and how such calls went. Then send qortex_feedback with its selection_id, the tool
        you actually called (suggested or not) and how it went."""
        async with rt.use(learner) as lrn:
            result = NextToolModel.of(lrn).suggest(history, candidates, k, context,
                                                   explore=explore)
        return reply(NextToolOutput.model_validate(result))

    return next_tool


SEQUENCE_TOOLS = (
    ToolSpec("next_tool", "Suggest the next tool", READ_ONLY, _next_tool),
)
