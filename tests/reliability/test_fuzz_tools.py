"""Every tool fuzzed through a real MCP client session: arguments generated from the tool's
input schema, curated from real state, and mutated into hostile ones.

For every call: no crash and no internal error (no JSON-RPC error, no ``INTERNAL_ERROR``
code), every error carries a known stable code and never a traceback, a path or the secret,
every success validates against the tool's output schema, a call that breaks the input
schema is refused, and a refused call leaves the posterior checksum (every evidence row and
the event log, read from the SQLite file) unchanged; so does any read-only call.

In memory (the SDK's ``mcp.Client`` on the server object): 250 examples per tool in CI
(2,250), 2,500 per tool at QORTEX_FAULT_SCALE=10. Over a stdio subprocess (raw JSON text,
so NaN/Infinity literals and invalid UTF-8 reach the server): 40 per tool in CI.
Derandomized: the same examples every run.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import jsonschema
import pytest
from anyio.from_thread import start_blocking_portal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp import Client
from mcp.shared.exceptions import MCPError

from qortex_mcp.config import Settings
from qortex_mcp.server import build_server, tool_names
from tests.reliability import report
from tests.reliability.hostile import ERROR_CODES, World, arguments, must_refuse
from tests.reliability.servers import (
    CALL_TIMEOUT_S,
    SECRET,
    RpcError,
    ServerProcess,
    StdioRpc,
    ToolReply,
    server_env,
)

pytestmark = pytest.mark.slow

TOOLS = tool_names(Settings.build(state_dir="/nonexistent"))
WRITES = {"qortex_feedback", "qortex_decay", "qortex_reset"}


def checksum(db: Path) -> tuple[Any, ...]:
    """Every posterior row and the event log's extent: what an invalid call must not move."""
    conn = sqlite3.connect(db, timeout=10)
    try:
        evidence = conn.execute(
            "SELECT learner, ctx, arm, s, f, n FROM evidence ORDER BY learner, ctx, arm"
        ).fetchall()
        events = conn.execute("SELECT count(*), max(seq) FROM events").fetchone()
    finally:
        conn.close()
    return (tuple(evidence), tuple(events))


@dataclass
class Tally:
    calls: Counter[str] = field(default_factory=Counter)
    codes: Counter[str] = field(default_factory=Counter)
    refused_invalid: int = 0
    unchanged_by_errors: int = 0


@dataclass
class Target:
    """The server under fuzz, its schemas, its real state and how to call it."""

    db: Path
    state_dir: Path
    schemas: dict[str, tuple[dict[str, Any], dict[str, Any] | None]]
    world: World
    call: Any
    """(tool, arguments) -> ToolReply, or raises RpcError for a JSON-RPC error."""
    tally: Tally = field(default_factory=Tally)

    def check(self, tool: str, args: dict[str, Any]) -> None:
        in_schema, out_schema = self.schemas[tool]
        before = checksum(self.db)
        try:
            reply: ToolReply = self.call(tool, args)
        except RpcError as exc:
            raise AssertionError(f"{tool} answered a JSON-RPC error: {exc}") from exc
        after = checksum(self.db)
        self.tally.calls[tool] += 1
        self.tally.codes[reply.code] += 1
        if reply.ok:
            assert not must_refuse(args, in_schema), f"{tool} accepted schema-invalid {args!r}"
            assert out_schema is not None
            jsonschema.Draft202012Validator(out_schema).validate(reply.data)
            if tool not in WRITES:
                assert after == before, f"read-only {tool} changed the posteriors"
            return
        assert reply.code in ERROR_CODES, f"{tool}: unknown or internal code {reply.code}"
        assert after == before, f"{tool} refused with {reply.code} but changed the posteriors"
        self.tally.unchanged_by_errors += 1
        self.tally.refused_invalid += must_refuse(args, in_schema)
        text = reply.text
        assert "Traceback" not in text
        assert SECRET not in text
        assert str(self.state_dir) not in text
        assert reply.text.startswith(reply.code + ":")


def _reply(result: Any) -> ToolReply:
    return ToolReply(result.model_dump(by_alias=True, mode="json", exclude_none=True))


async def _seed(call: Any) -> World:
    """Learners with arms, answered and open selections, for curated arguments."""
    world = World(learners=["fuzz", "default", "x'); DROP TABLE events;--"])
    for learner in world.learners:
        for i in range(4):
            reply = await call("qortex_select", {"learner": learner, "candidates": world.arms})
            assert reply.ok, reply.text
            sid = reply.data["selection_id"]
            # feedback may name only the arms a select chose
            world.selections.append((learner, sid, [a["id"] for a in reply.data["selected"]]))
            if i % 2:
                arm = reply.data["selected"][0]["id"]
                answered = await call("qortex_feedback", {"learner": learner,
                                                          "selection_id": sid,
                                                          "outcomes": {arm: 1.0}})
                assert answered.ok, answered.text
    return world


@pytest.fixture(scope="module")
def in_memory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    state_dir = tmp_path_factory.mktemp("fuzz-memory")
    server = build_server(Settings.build(store="sqlite", state_dir=state_dir, secret=SECRET,
                                         log_level="warning"))
    with start_blocking_portal("asyncio") as portal, \
            portal.wrap_async_context_manager(Client(server)) as client:

        async def call(tool: str, args: dict[str, Any]) -> ToolReply:
            with anyio.fail_after(CALL_TIMEOUT_S):
                try:
                    return _reply(await client.call_tool(tool, args))
                except MCPError as exc:
                    raise RpcError({"code": exc.error.code, "message": exc.error.message}) \
                        from exc

        tools = portal.call(client.list_tools).tools
        schemas = {t.name: (t.input_schema, t.output_schema) for t in tools}
        world = portal.call(_seed, call)
        target = Target(state_dir / "qortex.db", state_dir, schemas, world,
                        lambda tool, args: portal.call(call, tool, args))
        yield target
    _summary("fuzz in-memory", target)


@pytest.fixture(scope="module")
def subprocess_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    tmp = tmp_path_factory.mktemp("fuzz-stdio")
    state_dir = tmp / "state"
    server = ServerProcess(server_env(state_dir), tmp / "server.log")
    with start_blocking_portal("asyncio") as portal:
        portal.call(server.start)
        try:
            with portal.wrap_async_context_manager(StdioRpc.connect(server)) as rpc:
                tools = portal.call(rpc.request, "tools/list", {})["result"]["tools"]
                schemas = {t["name"]: (t["inputSchema"], t.get("outputSchema")) for t in tools}
                world = portal.call(_seed, rpc.call_tool)
                target = Target(state_dir / "qortex.db", state_dir, schemas, world,
                                lambda tool, args: portal.call(rpc.call_tool, tool, args))
                yield target
                portal.call(rpc.ping)
                assert rpc.bad_lines == []
        finally:
            portal.call(server.aclose)
    log = (tmp / "server.log").read_text()
    assert "Traceback" not in log
    assert SECRET not in log
    _summary("fuzz stdio subprocess", target)


def _summary(name: str, target: Target) -> None:
    t = target.tally
    report.record(
        name, f"{sum(t.calls.values())} calls over {len(t.calls)} tools: 0 crashes, "
        f"{t.codes.get('INTERNAL_ERROR', 0)} internal errors, {t.codes.get('OK', 0)} "
        f"successes valid against their output schema, {t.unchanged_by_errors} refusals left "
        f"the posterior checksum unchanged ({t.refused_invalid} schema-invalid calls among "
        f"them); codes {dict(sorted(t.codes.items()))}", calls=dict(t.calls))


_SETTINGS = settings(max_examples=report.tier(250, 2500), derandomize=True, deadline=None,
                     database=None, suppress_health_check=list(HealthCheck))
_WIRE_SETTINGS = settings(_SETTINGS, max_examples=report.tier(40, 400))


@pytest.mark.parametrize("tool", TOOLS)
def test_every_tool_survives_hostile_arguments_in_memory(tool: str, in_memory: Target) -> None:
    in_schema = in_memory.schemas[tool][0]

    @_SETTINGS
    @given(st.data())
    def fuzz(data: st.DataObject) -> None:
        in_memory.check(tool, data.draw(arguments(tool, in_schema, in_memory.world,
                                                  wire=False)))

    fuzz()


@pytest.mark.parametrize("tool", TOOLS)
def test_every_tool_survives_hostile_json_over_stdio(tool: str,
                                                     subprocess_target: Target) -> None:
    in_schema = subprocess_target.schemas[tool][0]

    @_WIRE_SETTINGS
    @given(st.data())
    def fuzz(data: st.DataObject) -> None:
        subprocess_target.check(tool, data.draw(arguments(tool, in_schema,
                                                          subprocess_target.world, wire=True)))

    fuzz()


def test_tool_list_carries_no_user_data_and_is_stable(in_memory: Target) -> None:
    """Tool descriptions are static: the seeded learners' names never appear in them."""
    listing = json.dumps({name: schema for name, schema in in_memory.schemas.items()},
                         sort_keys=True)
    assert "DROP TABLE" not in listing
    assert "fuzz" not in listing
