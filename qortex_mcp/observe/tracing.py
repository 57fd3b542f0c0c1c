"""Optional OpenTelemetry traces (``QORTEX_OTEL=1`` with the ``otel`` extra).

The MCP SDK already opens a span per MCP message through the OpenTelemetry API, named and
attributed by the MCP semantic conventions (``tools/call qortex_select``,
``mcp.method.name``, ``gen_ai.tool.name``, ``gen_ai.operation.name = execute_tool``, the
caller's trace context from ``params._meta``); without an SDK installed and configured
those spans are the API's no-ops. ``configure_tracing`` installs the SDK's tracer provider
with an OTLP/HTTP exporter (configured by the standard ``OTEL_EXPORTER_OTLP_*`` variables,
which the OpenTelemetry SDK reads itself), and then:

- ``SpanAttributes``, a tool-call observer, adds ``qortex.learner`` and ``qortex.code``
  (``OK`` or the stable error code) to the current tool span;
- REST calls, which never pass the SDK, get the same ``tools/call <tool>`` span from
  ``ToolBoundary.invoke`` (``network.transport = tcp``).

Off (the default) nothing here runs and nothing is imported.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from typing import Any

from qortex_mcp.logging import get_logger

__all__ = ["SpanAttributes", "configure_tracing", "tracing_available"]

log = get_logger(__name__)


def tracing_available() -> bool:
    return importlib.util.find_spec("opentelemetry.sdk") is not None


def configure_tracing(enabled: bool, *, exporter: Any = None) -> Any | None:
    """Install an SDK tracer provider exporting spans; returns a tracer, or None when off
    (or when the ``otel`` extra is missing: said once on stderr).

    Args:
        enabled: ``Settings.otel`` (``QORTEX_OTEL``).
        exporter: a span exporter to use instead of OTLP/HTTP (tests pass an in-memory one).
    """
    if not enabled:
        return None
    if not tracing_available():
        log.warning("tracing_unavailable", hint="pip install 'qortex-mcp[otel]' for QORTEX_OTEL")
        return None
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    from qortex_mcp import __version__

    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):  # the host may have configured one
        provider = TracerProvider(resource=Resource.create({"service.name": "qortex-mcp",
                                                            "service.version": __version__}))
        trace.set_tracer_provider(provider)
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    log.info("tracing_on", exporter=type(exporter).__name__ if exporter else "otlp-http")
    return trace.get_tracer("qortex-mcp", __version__)


class SpanAttributes:
    """A tool-call observer that adds qortex's facts to the current span."""

    def tool_call(self, tool: str, arguments: Mapping[str, Any],
                  structured: Mapping[str, Any] | None, code: str, seconds: float) -> None:
        from opentelemetry import trace

        span = trace.get_current_span()
        if not span.is_recording():
            return
        learner = structured.get("learner") if structured is not None else None
        if isinstance(learner, str):
            span.set_attribute("qortex.learner", learner)
        # error.type stays the SDK's ("tool_error", per the conventions); the code is ours.
        span.set_attribute("qortex.code", code)
