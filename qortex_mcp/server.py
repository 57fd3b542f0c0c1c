"""The MCP server: ``build_server()`` for a standalone server, ``register_tools()`` as a plugin.

Both register the same ten tools (``qortex_mcp.tools``) over one shared
``LearnerRegistry`` and install the ``ToolBoundary`` middleware that gives every tool
strict arguments, ``CODE: message`` errors and one log event per call. Tool names are
``settings.tool_prefix`` + the base name (``qortex_select`` by default); ``settings.tools``
(``QORTEX_TOOLS``) exposes a subset.

A host server adds feedback learning in a few lines (``examples/host_server.py``)::

    @asynccontextmanager
    async def lifespan(app):
        async with qortex.running():      # opens the registry now, closes it at shutdown
            yield {}

    server = MCPServer("search", lifespan=lifespan)
    qortex = register_tools(server)      # the ten tools; `async with qortex.use(name)` in your own
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

from mcp.server.mcpserver import MCPServer

from qortex_mcp import __version__
from qortex_mcp.config import Settings
from qortex_mcp.errors import ConfigError, preview
from qortex_mcp.learning import LearnerRegistry
from qortex_mcp.runtime import QortexRuntime
from qortex_mcp.tools import ALL_TOOLS, ToolBoundary, ToolSpec
from qortex_mcp.tools.boundary import CallObserver, Observers

__all__ = [
    "TOOL_NAMES",
    "ServerState",
    "build_server",
    "build_server_and_runtime",
    "instructions",
    "register_tools",
    "tool_names",
]

TOOL_NAMES: tuple[str, ...] = tuple(spec.base for spec in ALL_TOOLS)
"""Base names of the tools (``select``, ``feedback``, ...), before the prefix."""


def instructions(prefix: str = "qortex_") -> str:
    """What a model should know before using the tools: the loop, and how errors read."""
    p = prefix
    return (
        "These tools learn from feedback which option works best: prompt variants, tools, "
        "strategies or documents. The loop:\n"
        f"1. Call {p}select with your candidates (or {p}rerank with retrieval results), a "
        "learner name per kind of decision, and a context object describing the situation.\n"
        "2. Act on what it returns.\n"
        f"3. ALWAYS call {p}feedback afterwards, quoting the selection_id it returned, with "
        "each used arm's outcome: accepted, rejected, partial or a reward in [0, 1]. Send bad "
        "outcomes too; without feedback nothing is learned. Retrying feedback is safe.\n"
        f"{p}next_tool suggests which of your tools to call next, given the ones called so "
        f"far; send {p}feedback on its selection_id naming the tool you called.\n"
        f"Inspect with {p}status, {p}posteriors, {p}top_arms and {p}metrics. {p}decay and "
        f"{p}reset change learned state; {p}reset only previews unless confirm=true.\n"
        "Errors start with a stable code (e.g. INVALID_REWARD: ...): fix the call and retry."
    )


def _selected(settings: Settings) -> list[ToolSpec]:
    if settings.tools is None:
        return list(ALL_TOOLS)
    by_name: dict[str, ToolSpec] = {}
    for spec in ALL_TOOLS:
        for alias in (spec.base, "qortex_" + spec.base, settings.tool_prefix + spec.base):
            by_name[alias] = spec
    unknown = [t for t in settings.tools if t not in by_name]
    if unknown:
        raise ConfigError(f"QORTEX_TOOLS names unknown tool(s) {', '.join(map(preview, unknown))}"
                          f"; choose from {', '.join(TOOL_NAMES)}")
    wanted = {by_name[t].base for t in settings.tools}
    if not wanted:
        raise ConfigError("QORTEX_TOOLS is empty; name at least one tool")
    return [spec for spec in ALL_TOOLS if spec.base in wanted]


def register_tools(
    server: MCPServer[Any],
    settings: Settings | None = None,
    *,
    registry: LearnerRegistry | None = None,
    observer: CallObserver | None = None,
) -> QortexRuntime:
    """Add the qortex tools to ``server``, all sharing one learner registry.

    The registry opens lazily on the first tool call unless the host opens it at start:
    put ``async with runtime.running():`` (the returned runtime) in the host's lifespan,
    and it is also closed cleanly at shutdown. Without that, call ``await
    runtime.aclose()`` when done. Pass ``registry`` to use an open registry you own
    (never closed here).

    Args:
        server: the host's server; its other tools are untouched.
        settings: store, prefix, tool subset and learner options (default: environment).
        registry: an open ``LearnerRegistry`` to share instead of opening one.
        observer: told about every tool call (``qortex_mcp.observe.QortexMetrics``).

    Returns:
        The runtime holding the registry.

    Raises:
        ConfigError: a bad environment or ``QORTEX_TOOLS`` entry.
    """
    settings = Settings.from_env() if settings is None else settings
    runtime = QortexRuntime(settings, registry)
    boundary = ToolBoundary(server.list_tools, observer=observer)
    for spec in _selected(settings):
        fn = spec.factory(runtime)
        name = settings.tool_prefix + spec.base
        server.add_tool(fn, name=name, title=spec.title, annotations=spec.annotations,
                        description=" ".join((fn.__doc__ or "").split()),
                        structured_output=True)
        boundary.add(name, fn, spec.base)
    server.middleware.append(boundary)
    runtime.boundary = boundary
    return runtime


@dataclass(frozen=True)
class ServerState:
    """What ``build_server``'s lifespan yields (``ctx.request_context.lifespan_context``)."""

    runtime: QortexRuntime
    registry: LearnerRegistry


_LOG_LEVELS: dict[str, Literal["DEBUG", "INFO", "WARNING", "ERROR"]] = {
    "debug": "DEBUG", "info": "INFO", "warning": "WARNING", "error": "ERROR",
}


def build_server(
    settings: Settings | None = None, *, registry: LearnerRegistry | None = None
) -> MCPServer[ServerState]:
    """A ready qortex-mcp server: the ten tools, the ``qortex://`` resources (with change
    notifications, see ``qortex_mcp.observe.resources``), instructions and a typed lifespan.

    The lifespan opens one ``LearnerRegistry`` over the configured store and signer and
    closes it when the server stops (stdin EOF, a signal, or the end of an in-memory
    client). With ``registry``, the caller's open registry is used and left open.

    Raises:
        ConfigError: a bad environment or ``QORTEX_TOOLS`` entry.
    """
    return build_server_and_runtime(settings, registry=registry)[0]


def build_server_and_runtime(
    settings: Settings | None = None, *, registry: LearnerRegistry | None = None,
    observer: CallObserver | None = None,
) -> tuple[MCPServer[ServerState], QortexRuntime]:
    """``build_server``, also returning the runtime (its boundary serves the REST API);
    ``observer`` is told about every tool call.

    Raises:
        ConfigError: a bad environment or ``QORTEX_TOOLS`` entry.
    """
    from mcp.server.subscriptions import InMemorySubscriptionBus

    from qortex_mcp.observe.resources import ResourceNotifier, register_resources

    settings = Settings.from_env() if settings is None else settings
    runtime: QortexRuntime
    bus = InMemorySubscriptionBus()

    @asynccontextmanager
    async def lifespan(_: MCPServer[ServerState]) -> AsyncIterator[ServerState]:
        async with runtime.running() as opened:
            yield ServerState(runtime, opened)

    server: MCPServer[ServerState] = MCPServer(
        "qortex-mcp", title="qortex-mcp: learning from feedback", version=__version__,
        instructions=instructions(settings.tool_prefix), lifespan=lifespan,
        log_level=_LOG_LEVELS.get(settings.log_level, "INFO"), subscriptions=bus,
    )
    runtime = register_tools(server, settings, registry=registry,
                             observer=Observers(observer, ResourceNotifier(bus)))
    register_resources(server, runtime)
    return server, runtime


def tool_names(settings: Settings) -> Sequence[str]:
    """The full names of the tools ``settings`` exposes, in registration order."""
    return [settings.tool_prefix + spec.base for spec in _selected(settings)]
