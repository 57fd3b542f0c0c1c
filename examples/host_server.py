"""A notes-search MCP server that adds qortex's feedback learning with ``register_tools``.

    python examples/host_server.py          # serves MCP over stdio

Its own tool, ``search_notes``, ranks a few notes by keyword overlap, reorders them by
what agents reported before (learner ``notes``) and returns a ``selection_id``; agents then
call ``qortex_feedback`` with it. The nine qortex tools share the server's one learner
registry, opened and closed by the server's own lifespan.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from mcp.server.mcpserver import MCPServer

from qortex_mcp.logging import configure_logging
from qortex_mcp.rerank import PosteriorReranker
from qortex_mcp.server import register_tools

NOTES = {
    "wal": "SQLite write-ahead log mode lets readers run while one writer commits",
    "vacuum": "PostgreSQL vacuum reclaims space from dead rows and updates statistics",
    "index": "an index on the filtered column turns a scan into a lookup",
    "pool": "a connection pool caps concurrent database connections per process",
}


@asynccontextmanager
async def lifespan(_: MCPServer[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    async with qortex.running():  # the learner registry opens now and closes at shutdown
        yield {}


server: MCPServer[dict[str, Any]] = MCPServer(
    "notes", lifespan=lifespan,
    instructions="Search notes with search_notes, then report which results helped with "
    "qortex_feedback (learner 'notes'), quoting the selection_id.",
)
qortex = register_tools(server)


@server.tool()
async def search_notes(query: str) -> dict[str, Any]:
    """Find notes about a topic; then report which results helped with qortex_feedback."""
    words = set(query.lower().split())
    hits = sorted(
        ({"id": nid, "score": float(len(words & set(text.split()))), "text": text}
         for nid, text in NOTES.items()),
        key=lambda hit: -hit["score"],
    )
    async with qortex.use("notes") as learner:  # held open for the call
        ranked = await PosteriorReranker(learner).rerank(hits)
    return {"learner": "notes", "selection_id": ranked.selection_id, "results": ranked.results}


if __name__ == "__main__":
    configure_logging("warning")
    server.run()
