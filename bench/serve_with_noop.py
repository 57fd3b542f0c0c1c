"""``qortex-mcp`` plus no-op tools: the server the round-trip benchmarks talk to.

    python bench/serve_with_noop.py [qortex-mcp arguments]     # e.g. serve --transport http

This runs the console script's own code, unchanged (``qortex_mcp.cli.main``: flags,
logging to stderr, the registry opened before serving, the stdio relay or uvicorn, the
clean close), with one difference: ``build_server_and_runtime`` (what ``commands.serve``
calls; ``build_server`` too) is wrapped so that the server it returns also carries
bench-only tools that do no work:

* ``noop``: the reference of issue 3. It takes an optional ``candidates`` list that it
  ignores, so the bench can also ship a select's payload through the SDK alone.
* ``noop_select_answer`` / ``noop_feedback_answer``: take the arguments of ``qortex_select``
  / ``qortex_feedback`` loosely typed and return a fixed answer of the same shape and size
  (same output model, so the same output schema, the same compact text via ``reply``, a
  selection id as long as a K = 100 one). They measure what this SDK and its client charge
  for such an answer (output re-validation, serialisation, the client's JSON-schema check)
  when no learning happens.

These are ordinary ``@server.tool()`` tools, which the ``ToolBoundary`` middleware passes
straight through, so comparing them with the qortex tools in one process and one session
isolates what the qortex layer adds to a call (strict argument check, tool body, SQLite
commit, log event) from what every call pays (transport, JSON-RPC, SDK dispatch, the
client's own work).

Wrapping, rather than re-implementing ``commands.serve`` here, keeps the measured server
identical to ``qortex-mcp`` whatever that code path does now or later.

Profiling switch: ``QORTEX_BENCH_PROFILE=FILE`` runs the server under cProfile (CPU time
of the serving thread) and writes the stats to ``FILE`` when it exits
(``python -m pstats FILE``).
"""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any

from mcp.types import CallToolResult

import qortex_mcp.server as server_module
from qortex_mcp.cli import main
from qortex_mcp.schemas import ArmFeedback, FeedbackOutput, ScoredArmOut, SelectOutput
from qortex_mcp.tools.base import reply

NOOP = "noop"
NOOP_SELECT = "noop_select_answer"
NOOP_FEEDBACK = "noop_feedback_answer"
TOKEN_CHARS = 2060
"""About the length of a selection id over 100 candidates named like ``variant-042``."""

_build_server_and_runtime = server_module.build_server_and_runtime
_SELECT = SelectOutput(
    learner="bench", selection_id="x" * TOKEN_CHARS, context_key="", strategy="thompson",
    explored=False, candidates=100, selected=[ScoredArmOut(
        id="variant-042", score=0.61, mean=0.55, alpha=12.0, beta=10.0, rank=1)])
_FEEDBACK = FeedbackOutput(
    learner="bench", selection_id="x" * TOKEN_CHARS, kind="select", applied=1, duplicates=0,
    arms=[ArmFeedback(arm_id="variant-042", status="applied", reward=1.0, mean=0.56,
                      alpha=13.0, beta=10.0, pulls=22)])


def build_server_with_noop(*args: Any, **kwargs: Any) -> Any:
    """``qortex_mcp.server.build_server`` plus the bench-only tools."""
    return build_server_and_runtime_with_noop(*args, **kwargs)[0]


def build_server_and_runtime_with_noop(*args: Any, **kwargs: Any) -> Any:
    """``qortex_mcp.server.build_server_and_runtime`` plus the bench-only tools."""
    server, runtime = _build_server_and_runtime(*args, **kwargs)

    @server.tool(name=NOOP)
    async def noop(candidates: list[str] | None = None) -> dict[str, Any]:
        """Do nothing (the benchmark's baseline); ``candidates`` is ignored."""
        return {}

    @server.tool(name=NOOP_SELECT)
    async def noop_select_answer(
        candidates: list[str], learner: str = "default"
    ) -> Annotated[CallToolResult, SelectOutput]:
        """A fixed select-shaped answer, no learning."""
        return reply(_SELECT)

    @server.tool(name=NOOP_FEEDBACK)
    async def noop_feedback_answer(
        selection_id: str, outcomes: dict[str, str], learner: str = "default"
    ) -> Annotated[CallToolResult, FeedbackOutput]:
        """A fixed feedback-shaped answer, nothing stored."""
        return reply(_FEEDBACK)

    return server, runtime


# ``commands.serve`` imports these when it runs, so it picks them up.
server_module.build_server = build_server_with_noop
server_module.build_server_and_runtime = build_server_and_runtime_with_noop


def run() -> int:
    profile = os.environ.get("QORTEX_BENCH_PROFILE")
    if not profile:
        return main(sys.argv[1:])
    import cProfile
    import time

    # CPU time of the serving thread, not wall time: on a shared machine, time spent
    # preempted would otherwise land on whatever function happened to be running.
    profiler = cProfile.Profile(time.thread_time_ns, 1e-9)
    try:
        return profiler.runcall(main, sys.argv[1:])
    finally:
        profiler.dump_stats(profile)


if __name__ == "__main__":
    sys.exit(run())
