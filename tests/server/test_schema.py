"""What clients see before calling anything: tool names, schemas, annotations, instructions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
from mcp import Client

from qortex_mcp.config import Settings
from qortex_mcp.errors import ConfigError
from qortex_mcp.server import TOOL_NAMES, build_server, tool_names

pytestmark = pytest.mark.anyio

ANNOTATIONS = {  # tool: (read-only, destructive, idempotent), as DESIGN.md lists them
    "qortex_select": (False, False, False),
    "qortex_feedback": (False, False, True),
    "qortex_rerank": (False, False, False),
    "qortex_posteriors": (True, False, True),
    "qortex_top_arms": (True, False, True),
    "qortex_metrics": (True, False, True),
    "qortex_decay": (False, True, False),
    "qortex_reset": (False, True, True),
    "qortex_status": (True, False, True),
}


async def _tools(settings: Settings) -> list[dict[str, Any]]:
    async with Client(build_server(settings)) as client:
        tools = (await client.list_tools()).tools
    return [t.model_dump(by_alias=True, exclude_none=True) for t in tools]


async def test_the_nine_tools_carry_their_annotations(settings: Settings) -> None:
    tools = {t["name"]: t for t in await _tools(settings)}
    assert set(tools) == set(ANNOTATIONS)
    for name, (read_only, destructive, idempotent) in ANNOTATIONS.items():
        hints = tools[name]["annotations"]
        assert (hints["readOnlyHint"], hints["destructiveHint"], hints["idempotentHint"]) \
            == (read_only, destructive, idempotent), name
        assert hints["openWorldHint"] is False
        assert tools[name]["title"]


async def test_every_tool_has_an_output_schema_and_described_flat_parameters(
    settings: Settings,
) -> None:
    for tool in await _tools(settings):
        jsonschema.Draft202012Validator.check_schema(tool["outputSchema"])
        assert tool["outputSchema"]["type"] == "object"
        for name, prop in tool["inputSchema"]["properties"].items():
            assert prop.get("description"), f"{tool['name']}.{name} has no description"
            assert "$ref" not in prop, f"{tool['name']}.{name} is not flat"
        description = tool["description"]
        assert 40 < len(description) < 400
        assert "Args:" not in description


async def test_descriptions_say_when_to_call_and_feedback_is_always_asked_for(
    settings: Settings,
) -> None:
    tools = {t["name"]: t["description"] for t in await _tools(settings)}
    assert "ALWAYS" in tools["qortex_feedback"]
    assert "selection_id" in tools["qortex_feedback"]
    assert "qortex_feedback" in tools["qortex_select"]
    assert "confirm=true" in tools["qortex_reset"]


async def test_instructions_explain_the_loop(settings: Settings) -> None:
    async with Client(build_server(settings)) as client:
        text = client.instructions
    assert text is not None
    assert text.index("qortex_select") < text.index("qortex_feedback")
    assert "ALWAYS" in text
    assert "selection_id" in text
    assert "INVALID_REWARD" in text


async def test_the_tool_list_is_the_same_for_every_server(tmp_path: Path) -> None:
    # No user data (paths, learner names, secrets) ever reaches a description or schema.
    one = Settings.build(store="sqlite", state_dir=tmp_path / "one",
                         secret="9c1f4e7a2b6d8053e1a4c7f92d6b0e38a5")
    two = Settings.build(store="memory", state_dir=tmp_path / "two",
                         learners={"*": {"prior": [2, 2]}, "secret-learner": {}})
    first, second = await _tools(one), await _tools(two)
    assert first == second
    assert str(tmp_path) not in repr(first)
    assert "secret-learner" not in repr(first)


async def test_qortex_tools_exposes_only_a_subset(settings: Settings) -> None:
    subset = settings.with_overrides(tools=("qortex_select", "feedback"))
    names = [t["name"] for t in await _tools(subset)]
    assert names == ["qortex_select", "qortex_feedback"]


async def test_the_prefix_is_configurable(settings: Settings) -> None:
    custom = settings.with_overrides(tool_prefix="learn_", tools=("learn_status", "select"))
    async with Client(build_server(custom)) as client:
        names = [t.name for t in (await client.list_tools()).tools]
        assert names == ["learn_select", "learn_status"]
        assert "learn_feedback" in (client.instructions or "")
        result = await client.call_tool("learn_status", {})
    assert not result.is_error


def test_an_unknown_tool_name_is_a_config_error(settings: Settings) -> None:
    with pytest.raises(ConfigError, match="unknown tool"):
        tool_names(settings.with_overrides(tools=("qortex_select", "qortex_teleport")))
    assert len(TOOL_NAMES) == 9


async def test_input_schemas_say_unknown_arguments_are_refused(settings: Settings) -> None:
    for tool in await _tools(settings):
        assert tool["inputSchema"]["additionalProperties"] is False, tool["name"]
    async with Client(build_server(settings), mode="legacy") as client:  # 2025-11-25 too
        for listed in (await client.list_tools()).tools:
            assert listed.input_schema["additionalProperties"] is False


async def test_a_host_tools_schema_is_left_as_the_host_wrote_it(settings: Settings) -> None:
    from mcp.server.mcpserver import MCPServer

    from qortex_mcp.server import register_tools

    host: MCPServer[Any] = MCPServer("host")

    @host.tool()
    def search(query: str) -> str:
        """Search."""
        return query

    register_tools(host, settings)
    async with Client(host) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    assert "additionalProperties" not in tools["search"].input_schema
    assert tools["qortex_select"].input_schema["additionalProperties"] is False


async def test_an_unknown_tool_answers_with_a_code_like_other_errors(
    settings: Settings,
) -> None:
    from tests.server.support import refused

    for mode in ("auto", "legacy"):
        async with Client(build_server(settings), mode=mode) as client:
            code, text = await refused(client, "qortex_selec", {"candidates": ["a"]})
            assert code == "UNKNOWN_TOOL"
            assert text == ("UNKNOWN_TOOL: this server has no tool named 'qortex_selec'; "
                            "did you mean 'qortex_select'?")
            code, text = await refused(client, "teleport", {})
            assert code == "UNKNOWN_TOOL"


async def test_descriptions_say_which_tools_create_learners_and_how_outcomes_count(
    settings: Settings,
) -> None:
    tools = {t["name"]: t for t in await _tools(settings)}
    for name in ("qortex_select", "qortex_feedback", "qortex_rerank"):
        assert "Created on first use" in tools[name]["inputSchema"]["properties"][
            "learner"]["description"], name
    for name in ("qortex_posteriors", "qortex_top_arms", "qortex_decay", "qortex_reset",
                 "qortex_metrics"):
        learner = tools[name]["inputSchema"]["properties"]["learner"]["description"]
        assert "Created on first use" not in learner, name
        assert "UNKNOWN_LEARNER" in learner, name
    props = tools["qortex_feedback"]["inputSchema"]["properties"]
    assert "partial = 0.5" in props["outcomes"]["description"]
    assert "bare form" in tools["qortex_feedback"]["description"]
    context = tools["qortex_select"]["inputSchema"]["properties"]["context"]["description"]
    assert "coarse and stable" in context
    assert "never the query text" in context
    assert "coarse and stable" in tools["qortex_select"]["description"]


async def test_a_host_tool_is_never_taken_for_an_unknown_one(settings: Settings) -> None:
    """Whether a tool exists is asked of the server, not read from an error's text: a host
    tool failing with the SDK's own words keeps its error, and unknown names still get the
    code on a server that carries host tools."""
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError

    from qortex_mcp.server import register_tools
    from tests.server.support import refused, text_of

    host: MCPServer[Any] = MCPServer("host")

    @host.tool()
    def lookup(query: str) -> str:
        """Look up."""
        raise ToolError("Unknown tool: lookup")

    register_tools(host, settings)
    async with Client(host) as client:
        result = await client.call_tool("lookup", {"query": "x"})
        assert result.is_error
        assert text_of(result).endswith("Unknown tool: lookup")
        assert result.meta is None or "qortex-mcp/error" not in result.meta
        code, _ = await refused(client, "lookup2", {})
        assert code == "UNKNOWN_TOOL"
