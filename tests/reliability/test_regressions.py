"""Bugs the reliability suite found, pinned as plain tests (the fuzz and fault tests found
them by chance; these find them every time)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from mcp import Client

from qortex_mcp.config import Settings
from qortex_mcp.server import build_server
from tests.reliability.servers import SECRET

pytestmark = pytest.mark.anyio


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[Client]:
    server = build_server(Settings.build(store="sqlite", state_dir=tmp_path, secret=SECRET,
                                         log_level="warning"))
    async with Client(server) as c:
        yield c


def _code(result: object) -> str:
    meta = getattr(result, "meta", None) or {}
    return str(meta.get("qortex-mcp/error", {}).get("code", "OK"))


async def test_a_400_digit_reward_is_an_invalid_reward_not_an_internal_error(
    client: Client,
) -> None:
    """It raised OverflowError inside argument validation: JSON-RPC -32603 (or code 0 with
    the exception text on 2025-11-25 sessions)."""
    chosen = await client.call_tool("qortex_select", {"candidates": ["a", "b"]})
    sid = chosen.structured_content["selection_id"]
    for arguments in ({"selection_id": sid, "outcomes": {"a": 10**400}},
                      {"arm_id": "a", "outcome": -(10**400)}):
        result = await client.call_tool("qortex_feedback", arguments)
        assert _code(result) == "INVALID_REWARD"


async def test_rerank_of_scores_spanning_the_float_range_keeps_their_order(
    client: Client,
) -> None:
    """``max - min`` of scores near +-1.8e308 overflowed to inf, the normalised scores
    became NaN and signing the selection raised ValueError (INTERNAL_ERROR)."""
    result = await client.call_tool("qortex_rerank", {"results": [
        {"id": "low", "score": -1.7e308}, {"id": "mid", "score": 0.0},
        {"id": "high", "score": 1.7e308}]})
    assert _code(result) == "OK"
    assert [r["id"] for r in result.structured_content["results"]] == ["high", "mid", "low"]
