"""OpenTelemetry spans (QORTEX_OTEL=1): MCP semantic-convention names and attributes plus
qortex's own, for MCP calls and REST calls; nothing is configured when off."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from mcp import Client
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from qortex_mcp.config import Settings
from qortex_mcp.learning import LearnerRegistry
from qortex_mcp.observe.tracing import SpanAttributes, configure_tracing
from qortex_mcp.server import build_server_and_runtime
from tests.server.support import ok, refused

pytestmark = pytest.mark.anyio

_EXPORTER = InMemorySpanExporter()
_TRACER: list[Any] = []


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    if not _TRACER:  # the global provider can be set once per process
        _TRACER.append(configure_tracing(True, exporter=_EXPORTER))
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


def test_off_configures_nothing() -> None:
    assert configure_tracing(False) is None
    assert Settings.build().otel is False
    assert Settings.from_env({"QORTEX_OTEL": "1"}).otel is True


async def test_tool_calls_make_semconv_spans_with_qortex_attributes(
        settings: Settings, registry: LearnerRegistry, spans: InMemorySpanExporter) -> None:
    server, runtime = build_server_and_runtime(settings, registry=registry,
                                               observer=SpanAttributes())
    assert runtime.boundary is not None
    runtime.boundary.tracer = _TRACER[0]
    async with Client(server) as client:
        await ok(client, "qortex_select", {"learner": "traced", "candidates": ["a", "b"]})
        code, _ = await refused(client, "qortex_feedback", {
            "learner": "traced", "arm_id": "a", "outcome": 3})
    done = await runtime.boundary.invoke("qortex_select", {"learner": "rest-traced",
                                                          "candidates": ["a"]})
    assert done.code == "OK"
    calls = [(s.name, dict(s.attributes or {})) for s in spans.get_finished_spans()
             if s.name.startswith("tools/call ")]
    by_name = dict(calls)
    select = [a for name, a in calls if name == "tools/call qortex_select"]
    assert len(select) == 2  # the MCP call (the SDK's span) and the REST one (ours)
    mcp_span = next(a for a in select if a.get("qortex.learner") == "traced")
    assert mcp_span["mcp.method.name"] == "tools/call"
    assert mcp_span["gen_ai.tool.name"] == "qortex_select"
    assert mcp_span["qortex.code"] == "OK"
    rest_span = next(a for a in select if a.get("qortex.learner") == "rest-traced")
    assert rest_span["network.transport"] == "tcp"
    assert rest_span["gen_ai.operation.name"] == "execute_tool"
    failed = by_name["tools/call qortex_feedback"]
    assert failed["qortex.code"] == code == "INVALID_REWARD"
    assert failed["error.type"] == "tool_error"
    bad = await runtime.boundary.invoke("qortex_select", {"learner": "x", "candidates": 1})
    assert bad.code == "INVALID_ARGUMENT"
    rest_failed = [dict(s.attributes or {}) for s in spans.get_finished_spans()
                   if (s.attributes or {}).get("qortex.code") == "INVALID_ARGUMENT"]
    assert rest_failed[0]["error.type"] == "tool_error"
