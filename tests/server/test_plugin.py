"""``register_tools``: the same tools on someone else's server, over one learner registry."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from mcp import Client
from mcp.server.mcpserver import MCPServer

from qortex_mcp.config import Settings
from qortex_mcp.errors import ClosedError
from qortex_mcp.learning import LearnerRegistry
from qortex_mcp.runtime import QortexRuntime, open_registry
from qortex_mcp.server import register_tools
from tests.server.support import ok, refused, text_of

pytestmark = pytest.mark.anyio


def host_with_lifespan(settings: Settings) -> tuple[MCPServer[Any], QortexRuntime, list[Any]]:
    opened: list[LearnerRegistry] = []

    @asynccontextmanager
    async def lifespan(_: MCPServer[Any]) -> AsyncIterator[dict[str, Any]]:
        async with runtime.running() as registry:
            opened.append(registry)
            yield {}

    server: MCPServer[Any] = MCPServer("host", lifespan=lifespan)

    @server.tool()
    async def echo(text: str) -> str:
        """Echo the text."""
        return text

    runtime = register_tools(server, settings)
    return server, runtime, opened


async def test_the_host_keeps_its_tools_and_gains_the_ten(settings: Settings) -> None:
    server, _, _ = host_with_lifespan(settings)
    async with Client(server) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert names == {"echo", "qortex_select", "qortex_feedback", "qortex_rerank",
                         "qortex_next_tool",
                         "qortex_posteriors", "qortex_top_arms", "qortex_metrics",
                         "qortex_status", "qortex_decay", "qortex_reset"}
        assert (await client.call_tool("echo", {"text": "hi"})).structured_content \
            == {"result": "hi"}
        # the host's own tools keep the SDK's behaviour: the boundary guards only ours
        lax = await client.call_tool("echo", {"text": "hi", "extra": 1})
        assert not lax.is_error
        sel = await ok(client, "qortex_select", {"candidates": ["a", "b"]})
        chosen = sel["selected"][0]["id"]
        fb = await ok(client, "qortex_feedback", {"selection_id": sel["selection_id"],
                                                  "outcomes": {chosen: "accepted"}})
        assert fb["applied"] == 1


async def test_the_host_lifespan_opens_the_registry_at_start_and_closes_it(
    settings: Settings,
) -> None:
    server, _, opened = host_with_lifespan(settings)
    async with Client(server) as client:
        assert len(opened) == 1
        assert settings.sqlite_path.exists()
        await ok(client, "qortex_feedback", {"arm_id": "a", "outcome": 1})
    with pytest.raises(ClosedError):
        await opened[0].get("default")
    async with Client(server) as client:  # a second session opens a fresh registry
        post = await ok(client, "qortex_posteriors")
    assert post["arms"][0]["alpha"] == 2.0
    assert len(opened) == 2


async def test_without_a_lifespan_the_registry_opens_on_first_use(settings: Settings) -> None:
    server: MCPServer[Any] = MCPServer("bare")
    runtime = register_tools(server, settings)
    assert not settings.sqlite_path.exists()
    async with Client(server) as client:
        await ok(client, "qortex_feedback", {"arm_id": "a", "outcome": 1})
    registry = await runtime.registry()  # still open after the session
    assert (await registry.get("default", create=False)).name == "default"
    await runtime.aclose()
    with pytest.raises(ClosedError):
        await registry.get("default")


async def test_a_registry_passed_in_is_shared_and_left_open(settings: Settings) -> None:
    registry = await open_registry(settings)
    try:
        server: MCPServer[Any] = MCPServer("shared")
        runtime = register_tools(server, settings, registry=registry)
        async with runtime.running(), Client(server) as client:
            await ok(client, "qortex_feedback", {"learner": "shared", "arm_id": "a",
                                                 "outcome": 1})
        learner = await registry.get("shared", create=False)  # not closed by the runtime
        assert (await learner.posteriors())[0].alpha == 2.0
    finally:
        await registry.close()


async def test_two_prefixes_on_one_server_are_two_guarded_tool_sets(settings: Settings) -> None:
    server: MCPServer[Any] = MCPServer("two")
    first = register_tools(server, settings)
    second = register_tools(server, settings.with_overrides(tool_prefix="b_", tools=("status",)))
    async with Client(server) as client:
        assert not (await client.call_tool("b_status", {})).is_error
        code, _ = await refused(client, "b_status", {"nope": 1})
        assert code == "INVALID_ARGUMENT"
        result = await client.call_tool("qortex_status", {"nope": 1})
        assert text_of(result).startswith("INVALID_ARGUMENT: unknown argument 'nope'")
    await first.aclose()
    await second.aclose()
