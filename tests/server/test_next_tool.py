"""``qortex_next_tool`` end to end: the installed server as a stdio subprocess, a real
client, feedback through ``qortex_feedback``, and the counts in the SQLite file after exit."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from mcp import Client, StdioServerParameters

from qortex_mcp.learning import SqliteLearningStore
from qortex_mcp.learning.sequences import levels_for
from tests.server.support import SCRIPT, base_env, ok, refused

pytestmark = pytest.mark.anyio

TOOLS = ["read_file", "run_tests", "edit_file", "grep"]


async def test_next_tool_learns_over_stdio_and_feedback_counts_once(tmp_path: Path) -> None:
    state = tmp_path / "state"
    params = StdioServerParameters(command=str(SCRIPT), env=base_env(state))
    history = ["read_file", "run_tests"]
    with anyio.fail_after(90):
        async with Client(params) as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
            schema = tools["qortex_next_tool"].input_schema
            assert schema["additionalProperties"] is False
            assert set(schema["required"]) == {"history", "candidates"}
            for _ in range(5):
                got = await ok(client, "qortex_next_tool", {
                    "learner": "agent", "history": history, "candidates": TOOLS})
                assert len(got["suggestions"]) == 3
                # the agent called edit_file, whatever was suggested
                fb = await ok(client, "qortex_feedback", {
                    "learner": "agent", "selection_id": got["selection_id"],
                    "outcomes": {"edit_file": "accepted"}})
                assert fb["kind"] == "next_tool"
                assert fb["applied"] == 1
            again = await ok(client, "qortex_feedback", {
                "learner": "agent", "selection_id": got["selection_id"],
                "outcomes": {"edit_file": "accepted"}})
            assert again["duplicates"] == 1
            best = await ok(client, "qortex_next_tool", {
                "learner": "agent", "history": ["grep", *history], "candidates": TOOLS,
                "k": 1, "explore": False})
            top = best["suggestions"][0]
            assert top["tool"] == "edit_file"
            assert top["reason"] == ("after read_file -> run_tests, edit_file followed 5 "
                                     "times, 100% went well")
            assert best["history"] == history
            # refusals: a tool that was not offered, a history too long, an extra argument
            code, _ = await refused(client, "qortex_feedback", {
                "learner": "agent", "selection_id": best["selection_id"],
                "outcomes": {"commit": "accepted"}})
            assert code == "ARM_NOT_IN_SELECTION"
            code, _ = await refused(client, "qortex_next_tool", {
                "learner": "agent", "history": ["grep"] * 1001, "candidates": TOOLS})
            assert code == "LIMIT_EXCEEDED"
            code, _ = await refused(client, "qortex_next_tool", {
                "learner": "agent", "history": [], "candidates": TOOLS, "extra": 1})
            assert code == "INVALID_ARGUMENT"
            code, _ = await refused(client, "qortex_next_tool", {
                "learner": "agent", "history": [], "candidates": ["a", "a"]})
            assert code == "INVALID_CANDIDATES"
    async with SqliteLearningStore(state / "qortex.db") as store:
        rows = {(r.ctx, r.arm): r.n for r in await store.evidence("agent")}
    trigram = levels_for(("read_file", "run_tests"), None)[-1]
    assert rows[(trigram.key, "edit_file")] == 5
