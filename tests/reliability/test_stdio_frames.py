"""Malformed protocol frames on stdio: each is answered or ignored, the server keeps
answering, and every byte it writes to stdout is a JSON-RPC message.

CI tier: every frame kind once (with a ping after each), then 200 frames drawn from them
interleaved with valid calls; QORTEX_FAULT_SCALE=10: 2,000. The 16 MiB line, the
100,000-deep array and an 8 MiB argument run in every tier.
"""

from __future__ import annotations

import random
from pathlib import Path

import anyio
import pytest

from tests.reliability import report
from tests.reliability.loop import seed_for
from tests.reliability.servers import ServerProcess, StdioRpc, server_env

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

FRAMES: list[tuple[str, bytes]] = [
    ("not JSON", b"not json"),
    ("a number", b"42"),
    ("null", b"null"),
    ("an empty array", b"[]"),
    ("an empty object", b"{}"),
    ("a string", b'"str"'),
    ("true", b"true"),
    ("invalid UTF-8", b"\xff\xfe\xfd"),
    ("invalid UTF-8 inside a request", b'{"jsonrpc":"2.0","id":7001,"method":"ping\xff"}'),
    ("an empty line", b""),
    ("a lone CR", b"\r"),
    ("CRLF after a valid request", b'{"jsonrpc":"2.0","id":7002,"method":"ping"}\r'),
    ("no method", b'{"jsonrpc":"2.0"}'),
    ("JSON-RPC 1.0", b'{"jsonrpc":"1.0","id":7003,"method":"ping"}'),
    ("an object as id", b'{"jsonrpc":"2.0","id":{},"method":"ping"}'),
    ("an unknown method", b'{"jsonrpc":"2.0","id":7004,"method":"nope"}'),
    ("params of the wrong type", b'{"jsonrpc":"2.0","id":7005,"method":"tools/call","params":"x"}'),
    ("an unknown tool", b'{"jsonrpc":"2.0","id":7006,"method":"tools/call",'
                        b'"params":{"name":"nope"}}'),
    ("a batch", b'[{"jsonrpc":"2.0","id":7007,"method":"ping"}]'),
    ("NaN params", b'{"jsonrpc":"2.0","id":7008,"method":"ping","params":NaN}'),
    ("a NaN argument", b'{"jsonrpc":"2.0","id":7009,"method":"tools/call","params":'
                       b'{"name":"qortex_status","arguments":{"limit":NaN}}}'),
    ("a lone surrogate escape", b'{"jsonrpc":"2.0","id":7010,"method":"tools/call","params":'
                                b'{"name":"qortex_select","arguments":{"candidates":["\\ud800"]}}}'),
    ("initialize again", b'{"jsonrpc":"2.0","id":7011,"method":"initialize","params":{}}'),
    ("a response nobody asked for", b'{"jsonrpc":"2.0","id":7012,"result":{}}'),
    ("truncated JSON", b'{"jsonrpc":"2.0","id":7013,"method":"pi'),
    ("a NUL byte", b"\x00"),
    ("shell garbage", b"$(rm -rf /); `id`"),
]
HUGE: list[tuple[str, bytes]] = [
    ("a 100,000-deep array", b"[" * 100_000 + b"]" * 100_000),
    ("a 16 MiB line", b'"' + b"a" * (16 << 20) + b'"'),
    ("an 8 MiB argument", b'{"jsonrpc":"2.0","id":7100,"method":"tools/call","params":{"name":'
                          b'"qortex_select","arguments":{"candidates":["' + b"a" * (8 << 20) +
                          b'"]}}}'),
]


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def test_malformed_frames_never_stop_the_server_or_dirty_its_stdout(
    tmp_path: Path,
) -> None:
    server = ServerProcess(server_env(tmp_path / "state"), tmp_path / "server.log")
    rng = random.Random(seed_for("frames"))
    sent = answered_pings = 0
    try:
        await server.start()
        async with StdioRpc.connect(server, keep=True) as rpc:
            for _, frame in FRAMES + HUGE:
                await rpc.send_raw(frame + b"\n")
                sent += 1
                await rpc.ping()
                answered_pings += 1
            peak_rss = _rss_mib(server.pid)
            bulk = report.tier(200, 2000)
            for i in range(bulk):
                await rpc.send_raw(rng.choice(FRAMES)[1] + b"\n")
                sent += 1
                if i % 10 == 9:
                    reply = await rpc.call_tool("qortex_status", {})
                    assert reply.ok
                    answered_pings += 1
            await rpc.ping()
            # A valid request split across two writes is still one request.
            with anyio.fail_after(10):
                await rpc.send_raw(b'{"jsonrpc":"2.0","id":7200,')
                await anyio.sleep(0.05)
                await rpc.send_raw(b'"method":"ping"}\n')
                await rpc.ping()
            answers = {m.get("id"): m for m in rpc.messages}
            await rpc.close_stdin()
            code, _ = await server.wait_exit(0.0)
            bad = list(rpc.bad_lines)
    finally:
        await server.aclose()
    log = (tmp_path / "server.log").read_text()
    report.record(
        "stdio frames", f"{sent} malformed frames ({len(FRAMES) + len(HUGE)} kinds, up to "
        f"16 MiB) interleaved with {answered_pings} valid calls: server alive, all answered; "
        f"{len(bad)} non-JSON-RPC stdout lines; peak RSS {peak_rss:.0f} MiB; exit {code}")
    assert bad == []
    assert code == 0
    assert "Traceback" not in log
    assert peak_rss < 512
    # Frames that are valid requests get their answers (CR before LF is tolerated).
    assert answers[7002]["result"] == {}
    assert answers[7004]["error"]["code"] == -32601
    assert answers[7200]["result"] == {}
    assert answers[7009]["result"]["isError"] is True
