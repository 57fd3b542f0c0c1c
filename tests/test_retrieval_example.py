"""The retrieval example end to end: a real MCP client talking to
``examples/retrieval_server/server.py`` in a subprocess over stdio, as an agent would.

The agent searches, reads, and reports what it accepted or rejected with ``qortex_feedback``
quoting each search's selection id; later searches come back in a better order.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters

from qortex_mcp import __version__ as qortex_version
from qortex_mcp.learning import LearnerConfig

pytestmark = pytest.mark.anyio

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "retrieval_server"

# Queries on the shipped corpus (BM25 is deterministic, so these are fixed facts, checked
# again below before anything is learned).
SLOW_QUERY = "slow database query"                   # context: databases
RELATED_QUERY = "slow queries in production database"  # context: databases
PHOTO_QUERY = "aperture and shutter speed"           # context: photography


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[Client]:
    env = {"QORTEX_STATE_DIR": str(tmp_path / "state"), "QORTEX_STORE": "sqlite",
           "PYTHONUNBUFFERED": "1", "QORTEX_LOG_LEVEL": "warning",
           "PATH": os.environ.get("PATH", "")}
    params = StdioServerParameters(command=sys.executable, args=[str(EXAMPLE / "server.py")],
                                   env=env, cwd=str(tmp_path))
    with anyio.fail_after(60):
        async with Client(params) as c:
            yield c


async def call(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    with anyio.fail_after(20):
        result = await client.call_tool(tool, arguments)
    assert not result.is_error, f"{tool}: {result.content}"
    content: dict[str, Any] | None = result.structured_content
    assert content is not None
    return content


async def search(client: Client, query: str, **extra: Any) -> dict[str, Any]:
    return await call(client, "search", query=query, **extra)


def ids(found: dict[str, Any]) -> list[str]:
    return [hit["id"] for hit in found["results"]]


async def feedback(client: Client, found: dict[str, Any], outcomes: dict[str, str]) -> None:
    answer = await call(client, "qortex_feedback", learner=found["learner"],
                        selection_id=found["selection_id"], outcomes=outcomes)
    assert answer["kind"] == "rerank"
    assert answer["applied"] == len(outcomes)


async def test_accepted_documents_rise_rejected_ones_drop_and_contexts_stay_apart(
        client: Client) -> None:
    listed = {t.name: t for t in (await client.list_tools()).tools}
    assert {"search", "qortex_feedback", "qortex_rerank", "qortex_posteriors"} <= set(listed)
    description = listed["search"].description or ""
    assert description.startswith("Search the knowledge base")
    assert "\n" not in description  # no docstring indentation
    assert "  " not in description
    assert client.server_info is not None
    assert client.server_info.version == qortex_version

    # --- an accepted document, first shown at rank 8, rises into the top 3 ----------------
    first = await search(client, SLOW_QUERY)
    assert first["context"] == {"topic": "databases"}
    assert len(first["results"]) == 10
    target = ids(first)[7]                                       # shown at rank 8
    related = await search(client, RELATED_QUERY)
    assert related["context"] == {"topic": "databases"}
    assert target in ids(related)
    assert ids(related).index(target) >= 3                      # not in its top 3 either

    latest, accepts = first, 0
    while target not in ids(latest)[:3]:
        assert accepts < 5, f"{target} not in the top 3 after 5 accepts: {ids(latest)}"
        await feedback(client, latest, {target: "accepted"})
        accepts += 1
        latest = await search(client, SLOW_QUERY)
    assert target in ids(await search(client, RELATED_QUERY))[:3]   # a related query too

    # --- a top result the agent keeps rejecting leaves the top 3 -------------------------
    latest = await search(client, PHOTO_QUERY)
    assert latest["context"] == {"topic": "photography"}
    top = ids(latest)[0]
    rejections = 0
    while top in ids(latest)[:3]:
        assert rejections < 5, f"{top} still in the top 3 after 5 rejections: {ids(latest)}"
        await feedback(client, latest, {top: "rejected"})
        rejections += 1
        latest = await search(client, PHOTO_QUERY)

    # --- another context borrows the evidence only as far as the back-off rule allows ------
    for _ in range(5):  # the agent keeps using the target: more evidence than m in one context
        await feedback(client, await search(client, SLOW_QUERY), {target: "accepted"})
    own = await search(client, SLOW_QUERY, explain=True)
    unrelated = await search(client, SLOW_QUERY, topic="cooking", explain=True)
    assert unrelated["context"] == {"topic": "cooking"}
    learned = {arm["id"]: (arm["alpha"] - 1.0, arm["beta"] - 1.0)  # learner prior Beta(1, 1)
               for arm in (await call(client, "qortex_posteriors", learner="docs"))["arms"]}
    assert learned[target] == (accepts + 5, 0.0)
    m = LearnerConfig().context_backoff
    explained = unrelated["explanations"]
    assert [e["id"] for e in explained] == ids(unrelated)
    for e in explained:
        # Rule (qortex_mcp.learning.context), with no evidence of the cooking context's own:
        # another context's n observations count min(1, m / n) each.
        s, f = learned.get(e["id"], (0.0, 0.0))
        w = min(1.0, m / (s + f)) if s + f else 0.0
        assert e["successes"] == pytest.approx(w * s)
        assert e["failures"] == pytest.approx(w * f)
        assert e["successes"] + e["failures"] <= m + 1e-9
    means = [e["mean"] for e in explained]
    assert means == sorted(means, reverse=True)       # the order is the bounded posterior's
    own_target = next(e for e in own["explanations"] if e["id"] == target)
    far_target = next(e for e in explained if e["id"] == target)
    assert own_target["successes"] == pytest.approx(accepts + 5)
    assert far_target["mean"] < own_target["mean"]
    # Accepts against the retrieval score took its weight away, more so with more of them.
    assert own_target["prior_weight"] < far_target["prior_weight"] < 0.8

    # Nothing was learned in the cooking context itself.
    cooking = await call(client, "qortex_posteriors", learner="docs",
                         context={"topic": "cooking"}, arm_ids=[target])
    assert cooking["arms"][0]["pulls"] == 0
