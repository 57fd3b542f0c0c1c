"""Both MCP revisions against a real server process: 2026-07-28 (no handshake, no session;
every request carries its version) and 2025-11-25 (``initialize`` first), over stdio and over
streamable HTTP, with the SDK's own client. Over HTTP the server keeps no session for either.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import anyio
import pytest
from mcp import Client, StdioServerParameters

from tests.server.support import INITIALIZE, SCRIPT, HttpServer, base_env, ok

Mode = Literal["legacy", "2026-07-28"]
MODES: list[tuple[Mode, str]] = [("legacy", "2025-11-25"), ("2026-07-28", "2026-07-28")]


@pytest.fixture(scope="module")
def http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    server = HttpServer(base_env(tmp_path_factory.mktemp("revisions") / "state"))
    try:
        yield server
    finally:
        server.stop()


async def _loop(client: Client, learner: str) -> None:
    sel = await ok(client, "qortex_select", {"learner": learner, "candidates": ["a", "b"]})
    chosen = sel["selected"][0]["id"]
    args = {"learner": learner, "selection_id": sel["selection_id"],
            "outcomes": {chosen: "accepted"}}
    assert (await ok(client, "qortex_feedback", args))["applied"] == 1
    assert (await ok(client, "qortex_feedback", args))["duplicates"] == 1
    names = {t.name for t in (await client.list_tools()).tools}
    assert {"qortex_select", "qortex_feedback", "qortex_status"} <= names


@pytest.mark.anyio
@pytest.mark.parametrize(("mode", "version"), MODES, ids=[m for m, _ in MODES])
async def test_both_revisions_over_stdio(tmp_path: Path, mode: Mode, version: str) -> None:
    params = StdioServerParameters(command=str(SCRIPT), env=base_env(tmp_path / "state"))
    with anyio.fail_after(30):
        async with Client(params, mode=mode) as client:
            assert client.protocol_version == version
            await _loop(client, f"stdio-{mode}")


@pytest.mark.anyio
@pytest.mark.parametrize(("mode", "version"), MODES, ids=[m for m, _ in MODES])
async def test_both_revisions_over_http(http_server: HttpServer, mode: Mode,
                                        version: str) -> None:
    with anyio.fail_after(30):
        async with Client(http_server.url, mode=mode) as client:
            assert client.protocol_version == version
            await _loop(client, f"http-{mode}")


def test_http_keeps_no_session_and_needs_no_handshake(http_server: HttpServer) -> None:
    status, headers = http_server.post(INITIALIZE)
    assert status == 200
    assert "mcp-session-id" not in {k.lower() for k in headers}
    # A 2025-11-25 tools/call with no initialize before it, on a fresh connection.
    request = urllib.request.Request(http_server.url, method="POST", data=json.dumps({
        "jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {"name": "qortex_status", "arguments": {}}}).encode(), headers={
        "Content-Type": "application/json", "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": "2025-11-25"})
    with urllib.request.urlopen(request, timeout=10) as response:
        # Answered as plain JSON (no SSE stream to outlive a stateless request).
        assert response.headers["Content-Type"].startswith("application/json")
        answer = json.loads(response.read())
    assert answer["id"] == 7
    assert answer["result"]["isError"] is False
    # No session, so no notification stream to open: GET is refused, not held open.
    get = urllib.request.Request(http_server.url, method="GET",
                                 headers={"Accept": "text/event-stream"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(get, timeout=10)
    with refused.value:
        assert refused.value.code == 405
        assert refused.value.headers["Allow"] == "POST"
