"""A small MCP retrieval server that learns from feedback which documents help.

It serves BM25 search (``bm25s``) over ``corpus.jsonl`` (320 short documents on 8 topics,
written by ``make_corpus.py``) and adds the qortex tools with ``register_tools``. Its own
``search`` tool is wrapped with the reranker hook: every search comes back reranked by what
agents accepted before, with a ``selection_id`` the agent quotes in ``qortex_feedback``.

    python examples/retrieval_server/server.py          # MCP over stdio

Context: feedback is learned per topic. A search's context is ``{"topic": ...}``: the
``topic`` argument if the agent gives one, else the topic most of the query's top ten BM25
hits belong to. So "slow SQL query" and "database index tuning" share what agents taught,
while a search about sourdough borrows at most ``context_backoff`` (default 4)
observations' worth of it (the back-off rule of ``qortex_mcp.learning.context``).

Environment: the qortex settings (``QORTEX_STATE_DIR``, ``QORTEX_STORE``, ...); state is
kept in the learner ``docs``.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import bm25s  # type: ignore[import-untyped]  # ships no type information
from mcp.server.mcpserver import Context, MCPServer
from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field

from qortex_mcp import __version__
from qortex_mcp.config import Settings
from qortex_mcp.learning import Learner
from qortex_mcp.logging import configure_logging
from qortex_mcp.rerank import ItemExplanation, PosteriorReranker, RerankResult
from qortex_mcp.server import register_tools

# bm25s sets its own logger to DEBUG on import; keep its index-building chatter off stderr.
logging.getLogger("bm25s").setLevel(logging.WARNING)

CORPUS = Path(__file__).resolve().with_name("corpus.jsonl")
LEARNER = "docs"
CANDIDATES = 50
"""BM25 hits reranked per search: results below the ten shown can still rise into view."""
SHOWN = 10


def _fold_plurals(words: list[str]) -> list[str]:
    """A tiny stemmer (enough for the example): "queries" -> "query", "indexes" -> "index",
    "databases" -> "database"."""
    out = []
    for w in words:
        if len(w) > 4 and w.endswith("ies"):
            w = w[:-3] + "y"
        elif len(w) > 4 and w.endswith(("xes", "ches", "shes", "sses")):
            w = w[:-2]
        elif len(w) > 3 and w.endswith("s") and not w.endswith("ss"):
            w = w[:-1]
        out.append(w)
    return out


class Index:
    """BM25 over the corpus."""

    def __init__(self, path: Path = CORPUS) -> None:
        with open(path, encoding="utf-8") as fh:
            self.docs: list[dict[str, str]] = [json.loads(line) for line in fh if line.strip()]
        self._bm25 = bm25s.BM25()
        self._bm25.index(self._tokens([f"{d['title']}. {d['text']}" for d in self.docs]),
                         show_progress=False)

    @staticmethod
    def _tokens(texts: list[str]) -> Any:
        return bm25s.tokenize(texts, stopwords="en", stemmer=_fold_plurals, show_progress=False)

    def search(self, query: str, k: int = CANDIDATES, topic: str | None = None) -> list[
        dict[str, Any]
    ]:
        """The ``k`` best BM25 hits, best first, as ``{id, score, title, text, topic}``.
        (``topic`` only sets the learning context; see ``context``.)"""
        del topic
        k = min(k, len(self.docs))
        found, scores = self._bm25.retrieve(self._tokens([query]), k=k, show_progress=False)
        hits = []
        for i, score in zip(found[0].tolist(), scores[0].tolist(), strict=True):
            if score > 0.0:
                hits.append({**self.docs[i], "score": float(score)})
        return hits

    def context(self, query: str, k: int = CANDIDATES, topic: str | None = None) -> dict[
        str, str
    ]:
        """The learning context of a search: the given topic, else the majority topic of
        the top ten hits (ties: the best hit's topic)."""
        del k
        if topic:
            return {"topic": topic}
        top = self.search(query, SHOWN)
        if not top:
            return {"topic": "none"}
        counts = Counter(h["topic"] for h in top)
        best = max(counts.values())
        return {"topic": next(h["topic"] for h in top if counts[h["topic"]] == best)}


class Hit(BaseModel):
    rank: int
    id: str
    title: str
    text: str
    topic: str
    bm25: float = Field(description="the BM25 score (the prior of the reranking)")


class SearchOutput(BaseModel):
    learner: str = Field(description="pass it as `learner` to qortex_feedback")
    selection_id: str = Field(description="quote it in qortex_feedback")
    context: dict[str, str] = Field(description="where this search's feedback is learned")
    results: list[Hit]
    explanations: list[ItemExplanation] | None = None


@dataclass
class State:
    search: Callable[..., Awaitable[RerankResult[dict[str, Any]]]]
    """``Index.search`` wrapped by the reranker hook."""
    learner: Learner


INSTRUCTIONS = f"""Search a small knowledge base with `search`. Results improve from your
feedback: after using the results, call qortex_feedback with learner="{LEARNER}", the
search's selection_id, and outcomes mapping each document id you judged to "accepted" or
"rejected" (or clicks_only=true listing only the documents you used)."""


SEARCH_DESCRIPTION = (
    "Search the knowledge base (BM25, reranked by earlier feedback). Then call "
    f'qortex_feedback with learner="{LEARNER}", the selection_id and the documents you '
    "accepted or rejected."
)


def build(settings: Settings | None = None, index: Index | None = None) -> MCPServer[State]:
    """The example server: ``search`` (reranked) plus the qortex tools."""
    idx = index or Index()

    @asynccontextmanager
    async def lifespan(_: MCPServer[State]) -> AsyncIterator[State]:
        # use(): the learner stays open for the server's life, however many others are used
        async with qortex.running(), qortex.use(LEARNER) as learner:
            reranker = PosteriorReranker(learner)
            yield State(reranker.wrap(idx.search, context=idx.context, limit=SHOWN,
                                      explain=True), learner)

    server: MCPServer[State] = MCPServer(
        "qortex-retrieval-example", version=__version__, instructions=INSTRUCTIONS,
        lifespan=lifespan)
    qortex = register_tools(server, settings)

    # The SDK copies a docstring verbatim (indentation included): pass the text instead.
    @server.tool(title="Search the knowledge base", description=SEARCH_DESCRIPTION,
                 annotations=ToolAnnotations(read_only_hint=False, open_world_hint=False))
    async def search(
        query: Annotated[str, Field(min_length=1, max_length=500, description="what to find")],
        ctx: Context[State],
        topic: Annotated[str | None, Field(
            description="the topic to learn this search's feedback in (default: inferred)",
            max_length=64)] = None,
        explain: Annotated[bool, Field(description="say why each result is where it is")]
        = False,
    ) -> SearchOutput:
        state = ctx.request_context.lifespan_context
        ranked = await state.search(query, CANDIDATES, topic)
        signed = state.learner.verify_selection(ranked.selection_id).context
        return SearchOutput(
            learner=LEARNER, selection_id=ranked.selection_id,
            context=json.loads(signed) if signed else {},
            results=[Hit(rank=r, id=h["id"], title=h["title"], text=h["text"],
                         topic=h["topic"], bm25=h["score"])
                     for r, h in enumerate(ranked.results, 1)],
            explanations=ranked.explanations if explain else None,
        )

    return server


def main() -> None:
    settings = Settings.from_env()
    configure_logging(settings.log_level)
    build(settings).run()


if __name__ == "__main__":
    main()
