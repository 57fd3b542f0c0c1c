"""MCP resources qortex://learners and qortex://learners/{name}/posteriors, and their change
events, with a real client over stdio (a subprocess) and over HTTP."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp.shared.exceptions import MCPError
from mcp.shared.subscriptions import ResourcesListChanged, ResourceUpdated

from tests.server.support import SCRIPT, HttpServer, base_env, ok

pytestmark = pytest.mark.anyio


def stdio(state: Path) -> StdioServerParameters:
    return StdioServerParameters(command=str(SCRIPT), args=[], env=base_env(state))


async def read(client: Client, uri: str) -> Any:
    result = await client.read_resource(uri)
    return json.loads(result.contents[0].text)  # type: ignore[union-attr]


async def _loop(client: Client) -> str:
    sel = await ok(client, "qortex_select", {"learner": "web", "candidates": ["a", "b"]})
    arm = sel["selected"][0]["id"]
    await ok(client, "qortex_feedback", {"learner": "web", "selection_id": sel["selection_id"],
                                         "outcomes": {arm: "accepted"}})
    return str(arm)


async def _check_resources(client: Client) -> None:
    listed = {str(r.uri) for r in (await client.list_resources()).resources}
    assert "qortex://learners" in listed
    templates = {t.uri_template for t in (await client.list_resource_templates())
                 .resource_templates}
    assert "qortex://learners/{name}/posteriors" in templates
    arm = await _loop(client)
    learners = await read(client, "qortex://learners")
    assert [lrn["name"] for lrn in learners["learners"]] == ["web"]
    assert learners["learners"][0]["feedback"] == 1
    post = await read(client, "qortex://learners/web/posteriors")
    by_id = {a["id"]: a for a in post["arms"]}
    assert by_id[arm]["alpha"] == 2.0
    assert by_id[arm]["ci_low"] < by_id[arm]["mean"] < by_id[arm]["ci_high"]
    with pytest.raises(MCPError) as err:
        await read(client, "qortex://learners/never-made/posteriors")
    assert "UNKNOWN_LEARNER" in str(err.value)


async def _events_after_feedback(client: Client) -> list[object]:
    """Listen, send a feedback on another task, collect the events it causes."""
    got: list[object] = []
    async with client.listen(resources_list_changed=True, resource_subscriptions=[
            "qortex://learners/web/posteriors", "qortex://learners"]) as sub:
        async def feed() -> None:
            await _loop(client)

        async with anyio.create_task_group() as tg:
            tg.start_soon(feed)
            async for event in sub:
                got.append(event)
                if {"qortex://learners/web/posteriors", "qortex://learners"} <= {
                        e.uri for e in got if isinstance(e, ResourceUpdated)}:
                    break
    return got


@pytest.fixture
async def stdio_client(tmp_path: Path) -> AsyncIterator[Client]:
    async with Client(stdio(tmp_path / "state")) as client:
        yield client


async def test_resources_over_stdio(stdio_client: Client) -> None:
    with anyio.fail_after(30):
        await _check_resources(stdio_client)


async def test_feedback_over_stdio_notifies_the_listeners(tmp_path: Path) -> None:
    with anyio.fail_after(30):
        async with Client(stdio(tmp_path / "state")) as client:
            events = await _events_after_feedback(client)
    assert any(isinstance(e, ResourcesListChanged) for e in events)  # "web" is new
    updated = [e.uri for e in events if isinstance(e, ResourceUpdated)]
    assert "qortex://learners/web/posteriors" in updated


async def test_resources_and_their_events_over_stateless_http(tmp_path: Path) -> None:
    server = HttpServer(base_env(tmp_path / "state"))
    try:
        with anyio.fail_after(30):
            async with Client(server.url) as client:
                await _check_resources(client)
            # subscriptions/listen is a POST whose answer is the event stream: it works
            # without a session, so the 2026-07-28 events reach HTTP clients too.
            async with Client(server.url) as client:
                events = await _events_after_feedback(client)
        assert "qortex://learners/web/posteriors" in [
            e.uri for e in events if isinstance(e, ResourceUpdated)]
    finally:
        server.stop()
