"""MCP resources: ``qortex://learners`` and ``qortex://learners/{name}/posteriors``.

Resources are read by applications (a host that lets its user attach one, say); the
read-only tools stay for agents. Both answer JSON:

- ``qortex://learners``: every learner (the first ``MAX_LEARNERS``) with its arm, selection
  and feedback counts and its strategy;
- ``qortex://learners/{name}/posteriors``: the learner's arms (the first ``MAX_ARMS`` by id)
  with alpha, beta, the estimate and its 95% credible interval, pulls.

Change events go out on the server's ``SubscriptionBus`` (``ResourceNotifier``, a tool-call
observer): when a feedback is applied, ``ResourceUpdated`` for that learner's posteriors and
for ``qortex://learners``; when a learner is first used by this process, also
``ResourcesListChanged``. The SDK delivers them on ``subscriptions/listen`` streams, which
exist in protocol 2026-07-28 only (``Client.listen()``), over stdio and over HTTP alike. A
2025-11-25 client (``resources/subscribe``) gets no change notifications: it reads again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Final

from mcp.server.mcpserver import MCPServer
from mcp.server.subscriptions import (
    ResourcesListChanged,
    ResourceUpdated,
    ServerEvent,
    SubscriptionBus,
)
from mcp.shared.exceptions import MCPError
from mcp.types import INVALID_PARAMS

from qortex_mcp.errors import QortexError
from qortex_mcp.logging import get_logger
from qortex_mcp.runtime import QortexRuntime

__all__ = ["LEARNERS_URI", "MAX_ARMS", "MAX_LEARNERS", "ResourceNotifier", "posteriors_uri",
           "register_resources"]

log = get_logger(__name__)

LEARNERS_URI: Final = "qortex://learners"
MAX_LEARNERS: Final = 1000
MAX_ARMS: Final = 1000
_SEEN_CAP: Final = 10_000


def posteriors_uri(learner: str) -> str:
    return f"{LEARNERS_URI}/{learner}/posteriors"


def register_resources(server: MCPServer[Any], runtime: QortexRuntime) -> None:
    """Add the two resources to ``server``, reading ``runtime``'s registry."""

    @server.resource(LEARNERS_URI, name="learners", title="Learners",
                     description="Every learner with its counts and strategy (JSON).",
                     mime_type="application/json")
    async def learners() -> dict[str, Any]:
        try:
            registry = await runtime.registry()
            summaries = await registry.summaries()
        except QortexError as exc:
            raise MCPError(code=INVALID_PARAMS, message=str(exc)) from None
        shown = summaries[:MAX_LEARNERS]
        return {"learners": [{
            "name": s.name, "arms": s.arms, "selections": s.selections,
            "feedback": s.feedback, "last_update": s.last_update,
            "strategy": registry.config_for(s.name).strategy_name(),
            "posteriors": posteriors_uri(s.name)} for s in shown],
            "left_out": len(summaries) - len(shown)}

    @server.resource(posteriors_uri("{name}"), name="posteriors", title="Posteriors",
                     description="One learner's arms: alpha, beta, estimate, 95% credible "
                     "interval, pulls (JSON).", mime_type="application/json")
    async def posteriors(name: str) -> dict[str, Any]:
        try:
            async with runtime.use(name, create=False) as lrn:
                page = await lrn.posteriors(limit=MAX_ARMS)
                total = len((await lrn.metrics()).arms) if len(page) == MAX_ARMS else len(page)
        except QortexError as exc:
            raise MCPError(code=INVALID_PARAMS, message=str(exc)) from None
        return {"learner": lrn.name, "strategy": lrn.config.strategy_name(),
                "arms": [{
            "id": p.id, "alpha": p.alpha, "beta": p.beta, "mean": p.mean,
            "ci_low": p.ci_low, "ci_high": p.ci_high, "pulls": p.pulls,
            "selections": p.selections} for p in page], "left_out": total - len(page)}



class ResourceNotifier:
    """A tool-call observer publishing resource change events (see the module doc)."""

    def __init__(self, bus: SubscriptionBus) -> None:
        self.bus = bus
        self._seen: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def tool_call(self, tool: str, arguments: Mapping[str, Any],
                  structured: Mapping[str, Any] | None, code: str, seconds: float) -> None:
        if structured is None or tool not in ("select", "feedback", "rerank"):
            return
        name = structured.get("learner")
        if not isinstance(name, str):
            return
        events: list[ServerEvent] = []
        if name not in self._seen and len(self._seen) < _SEEN_CAP:
            self._seen.add(name)
            events.append(ResourcesListChanged())
        if tool == "feedback" and structured.get("applied"):
            events += [ResourceUpdated(uri=posteriors_uri(name)),
                       ResourceUpdated(uri=LEARNERS_URI)]
        for event in events:
            task = asyncio.get_running_loop().create_task(self.bus.publish(event))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
