"""What every tool module shares: the spec a tool is registered from, and ``reply``."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel

from qortex_mcp.runtime import QortexRuntime

__all__ = ["READ_ONLY", "ToolSpec", "reply"]

ToolFactory = Callable[[QortexRuntime], Callable[..., Any]]

READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True,
                            open_world_hint=False)


@dataclass(frozen=True)
class ToolSpec:
    """One tool: ``base`` name (the prefix is added at registration), a human title, MCP
    annotations, and a factory that binds the tool function to a runtime. The function's
    docstring is the tool description: short, saying when to call it."""

    base: str
    title: str
    annotations: ToolAnnotations
    factory: ToolFactory


def reply(model: BaseModel) -> CallToolResult:
    """Structured content plus the same data as compact JSON text.

    The SDK's default text is indented JSON; models read the text, so compact saves tokens.
    """
    data = model.model_dump(mode="json")
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=data)
