"""The HTTP transport under hostile requests: foreign Host and Origin refused, bearer tokens
checked, oversized bodies refused, odd methods and dropped connections survived, and no
answer or log line carrying a secret, a path or a traceback.

CI tier: 100 random tokens and 100 dropped connections; QORTEX_FAULT_SCALE=10: 1,000 each.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import signal
import sys
from pathlib import Path

import anyio
import httpx2 as httpx
import pytest

from tests.reliability import report
from tests.reliability.loop import seed_for
from tests.reliability.oracle import read_store
from tests.reliability.servers import (
    PROTOCOL,
    SECRET,
    HttpRpc,
    ServerProcess,
    server_env,
)

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

TOKEN = "http-token-" + secrets.token_hex(16)
INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": PROTOCOL, "capabilities": {},
                   "clientInfo": {"name": "hostile", "version": "1"}}}
JSON_HEADERS = {"accept": "application/json, text/event-stream",
                "content-type": "application/json"}


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def _drop_connections(port: int, count: int, rng: random.Random) -> None:
    """Open and drop connections: some silent, some mid-headers, some mid-body."""
    partials = [b"", b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n",
                b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n{\"js"]
    for _ in range(count):
        with anyio.fail_after(5):
            stream = await anyio.connect_tcp("127.0.0.1", port)
            data = rng.choice(partials)
            if data:
                await stream.send(data)
            await stream.aclose()


async def test_hostile_http_requests_are_refused_and_the_server_survives(
    tmp_path: Path,
) -> None:
    state_dir = tmp_path / "state"
    server = ServerProcess(server_env(state_dir, extra={"QORTEX_HTTP_TOKEN": TOKEN}),
                           tmp_path / "server.log", transport="http")
    rng = random.Random(seed_for("http security"))
    bodies: list[str] = []
    statuses: dict[str, int] = {}
    auth = {"authorization": f"Bearer {TOKEN}"}
    try:
        await server.start()
        url = server.url
        origin = f"http://127.0.0.1:{server.port}"
        async with httpx.AsyncClient(timeout=10) as http:

            async def hit(what: str, method: str = "POST", **kwargs: object) -> httpx.Response:
                response = await http.request(method, url, **kwargs)  # type: ignore[arg-type]
                statuses[what] = response.status_code
                bodies.append(response.text)
                return response

            body = json.dumps(INIT)
            # A valid client, so that refusals can be shown to change nothing.
            async with HttpRpc(url, headers=auth) as good:
                reply = await good.call_tool("qortex_select", {"learner": "l",
                                                               "candidates": ["a", "b"]})
                assert reply.ok
                sid, arm = reply.data["selection_id"], reply.data["selected"][0]["id"]
                before = read_store("sqlite", state_dir, "l").checksum()

                # Bearer tokens.
                await hit("no token", content=body, headers=JSON_HEADERS)
                await hit("wrong token", content=body,
                          headers={**JSON_HEADERS, "authorization": "Bearer nope"})
                await hit("empty token", content=body,
                          headers={**JSON_HEADERS, "authorization": "Bearer"})
                await hit("token prefix", content=body,
                          headers={**JSON_HEADERS, "authorization": f"Bearer {TOKEN[:-1]}"})
                await hit("token plus a byte", content=body,
                          headers={**JSON_HEADERS, "authorization": f"Bearer {TOKEN}x"})
                await hit("basic scheme", content=body,
                          headers={**JSON_HEADERS, "authorization": f"Basic {TOKEN}"})
                random_refused = 0
                randoms = report.tier(100, 1000)
                for _ in range(randoms):
                    guess = rng.choice([secrets.token_hex(16),
                                        "http-token-" + secrets.token_hex(16),
                                        TOKEN[:rng.randrange(1, len(TOKEN))]])
                    response = await http.post(url, content=body, headers={
                        **JSON_HEADERS, "authorization": f"Bearer {guess}"})
                    random_refused += response.status_code == 401
                    bodies.append(response.text)
                unauthorized = await hit("no token (again)", content=body, headers=JSON_HEADERS)
                assert "bearer" in unauthorized.headers.get("www-authenticate", "").lower()
                # A feedback without the token changes nothing.
                await hit("feedback without token", content=json.dumps({
                    "jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
                        "name": "qortex_feedback", "arguments": {
                            "learner": "l", "selection_id": sid, "outcomes": {arm: 1}}}}),
                    headers={**JSON_HEADERS, "mcp-session-id": good.session or ""})

                # DNS rebinding: foreign Host and Origin, on every method.
                for method in ("POST", "GET", "DELETE"):
                    await hit(f"{method} foreign Host", method, content=body, headers={
                        **JSON_HEADERS, **auth, "host": f"evil.example:{server.port}"})
                    await hit(f"{method} foreign Origin", method, content=body, headers={
                        **JSON_HEADERS, **auth, "origin": "http://evil.example"})
                    await hit(f"{method} lookalike Origin", method, content=body, headers={
                        **JSON_HEADERS, **auth, "origin": f"http://127.0.0.1.evil.example:"
                                                          f"{server.port}"})
                await hit("loopback Origin", content=body,
                          headers={**JSON_HEADERS, **auth, "origin": origin})

                # Sizes, types, versions, sessions and methods.
                big = json.dumps({**INIT, "params": {**INIT["params"],  # type: ignore[dict-item]
                                                     "pad": "x" * (5 << 20)}})
                await hit("5 MiB body", content=big, headers={**JSON_HEADERS, **auth})
                await hit("text/plain body", content=body,
                          headers={**JSON_HEADERS, **auth, "content-type": "text/plain"})
                await hit("bad protocol version", content=body, headers={
                    **JSON_HEADERS, **auth, "mcp-session-id": good.session or "",
                    "mcp-protocol-version": "1999-01-01"})
                # Stateless: no session exists, so a made-up session id is simply ignored.
                await hit("unknown session", content=json.dumps({
                    "jsonrpc": "2.0", "id": 3, "method": "ping"}), headers={
                    **JSON_HEADERS, **auth, "mcp-session-id": "f" * 32,
                    "mcp-protocol-version": PROTOCOL})
                await hit("invalid JSON body", content=b"{\"jsonrpc\": \xff",
                          headers={**JSON_HEADERS, **auth})
                for method in ("HEAD", "PUT", "PATCH", "OPTIONS", "TRACE"):
                    await hit(method, method, headers={**JSON_HEADERS, **auth})

                # Connections opened and dropped.
                fds_before = _fds(server.pid)
                drops = report.tier(100, 1000)
                await _drop_connections(server.port, drops, rng)
                # The server still answers, and the refused feedback was never applied.
                after = read_store("sqlite", state_dir, "l").checksum()
                reply = await good.call_tool("qortex_feedback", {
                    "learner": "l", "selection_id": sid, "outcomes": {arm: 1}})
                assert reply.ok
                assert reply.data["arms"][0]["status"] == "applied"
            with anyio.fail_after(10):

                while _fds(server.pid) > fds_before + 10:  # noqa: ASYNC110
                    await anyio.sleep(0.05)
            fds_after = _fds(server.pid)
        code, _ = await server.signal_and_wait(signal.SIGTERM)
    finally:
        await server.aclose()
    log = (tmp_path / "server.log").read_text()
    leaks = [b[:120] for b in bodies if TOKEN in b or SECRET in b or str(tmp_path) in b
             or "Traceback" in b or 'File "' in b]
    report.record(
        "http security", f"{randoms}/{randoms} random tokens and every missing, empty, "
        f"prefix or wrong token refused (401); foreign Host/Origin refused on POST/GET/DELETE; "
        f"5 MiB body {statuses['5 MiB body']}; HEAD/PUT/PATCH/OPTIONS/TRACE "
        f"{[statuses[m] for m in ('HEAD', 'PUT', 'PATCH', 'OPTIONS', 'TRACE')]}; {drops} "
        f"dropped connections (fds {fds_before} -> {fds_after}); server alive; {len(leaks)} "
        f"answers and {int(TOKEN in log) + int(SECRET in log)} log hits with a secret, path "
        f"or traceback", statuses=statuses)
    assert random_refused == randoms
    for what in ("no token", "wrong token", "empty token", "token prefix", "token plus a byte",
                 "basic scheme", "no token (again)", "feedback without token"):
        assert statuses[what] == 401, what
    for method in ("POST", "GET", "DELETE"):
        assert statuses[f"{method} foreign Host"] in (403, 421)
        assert statuses[f"{method} foreign Origin"] == 403
        assert statuses[f"{method} lookalike Origin"] == 403
    assert statuses["loopback Origin"] == 200
    assert statuses["5 MiB body"] == 413
    assert statuses["text/plain body"] in (400, 415)
    assert statuses["bad protocol version"] == 400
    assert statuses["unknown session"] == 200
    assert statuses["invalid JSON body"] in (400, 422)
    assert all(400 <= statuses[m] < 500 for m in ("HEAD", "PUT", "PATCH", "OPTIONS", "TRACE"))
    assert after == before, "a refused request changed the posteriors"
    assert leaks == []
    assert TOKEN not in log
    assert SECRET not in log
    assert "Traceback" not in log
    assert code == 0


async def test_serving_beyond_loopback_without_a_token_is_refused(tmp_path: Path) -> None:
    env = server_env(tmp_path / "state")
    with anyio.fail_after(30):
        done = await anyio.run_process(
            [sys.executable, "-m", "qortex_mcp", "serve", "--transport", "http", "--host",
             "0.0.0.0", "--port", "0"], env=env, check=False)
    err = done.stderr.decode()
    assert done.returncode == 2
    assert "QORTEX_HTTP_TOKEN" in err
    assert "Traceback" not in err
    assert done.stdout == b""

