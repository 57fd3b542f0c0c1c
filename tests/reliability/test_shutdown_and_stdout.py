"""Shutdown and stdout hygiene.

* stdin EOF, SIGTERM and SIGINT (stdio), SIGTERM and SIGINT (HTTP): the server exits
  promptly (the time is measured and reported; the test waits at most 15 s) with code 0, and
  the last acknowledged feedback is in the store; a feedback in flight when SIGTERM lands is
  acknowledged and durable, or neither (never committed without its answer).
* A long stdio session with debug logging, a Python warning, ``print()`` and
  ``sys.stdout.write`` inside tool calls (injected by ``noisy_server``, a test-only
  launcher): every byte on the server's real stdout pipe is a JSON-RPC message, and the
  noise lands on stderr.

CI tier: 100 select+feedback pairs in the noisy session; QORTEX_FAULT_SCALE=10: 1,000.
"""

from __future__ import annotations

import contextlib
import json
import random
import signal
import sys
import time
from pathlib import Path
from typing import Literal

import anyio
import pytest

from tests.reliability import report
from tests.reliability.loop import LEARNER, Feedback, FeedbackClient, seed_for
from tests.reliability.oracle import Ledger, read_store
from tests.reliability.servers import (
    HttpRpc,
    ServerGone,
    ServerProcess,
    StdioRpc,
    server_env,
)

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

_EXITS: list[str] = []


def _durable(state_dir: Path, fb: Feedback) -> bool:
    rows = read_store("sqlite", state_dir, LEARNER).answers.get(fb.key, [])
    return [r for r, _ in rows] == [fb.reward]


@pytest.mark.parametrize(("transport", "how"), [
    ("stdio", "eof"), ("stdio", "SIGTERM"), ("stdio", "SIGINT"),
    ("http", "SIGTERM"), ("http", "SIGINT"),
])
async def test_the_server_stops_promptly_and_keeps_the_last_acknowledged_feedback(
    tmp_path: Path, transport: Literal["stdio", "http"], how: str,
) -> None:
    state_dir = tmp_path / "state"
    server = ServerProcess(server_env(state_dir), tmp_path / "server.log", transport=transport)
    rng = random.Random(seed_for(f"shutdown {transport} {how}"))
    try:
        await server.start()
        if transport == "stdio":
            async with StdioRpc.connect(server) as rpc:
                agent = FeedbackClient(rpc, Ledger(), rng)
                for _ in range(5):
                    last = await agent.select()
                    assert (await agent.send(last)).ok
                stopped = time.monotonic()
                if how == "eof":
                    await rpc.close_stdin()
                else:
                    server.proc.send_signal(getattr(signal, how))  # type: ignore[union-attr]
                code, seconds = await server.wait_exit(stopped)
                await rpc.drained()
                assert rpc.bad_lines == []
        else:
            async with HttpRpc(server.url) as rpc:
                agent = FeedbackClient(rpc, Ledger(), rng)
                for _ in range(5):
                    last = await agent.select()
                    assert (await agent.send(last)).ok
            code, seconds = await server.signal_and_wait(getattr(signal, how))
    finally:
        await server.aclose()
    log = (tmp_path / "server.log").read_text()
    _EXITS.append(f"{transport} {how} {seconds:.2f} s (exit {code})")
    if len(_EXITS) == 5:
        report.record("shutdown", "exit after " + ", ".join(_EXITS) +
                      "; the last acknowledged feedback durable in every case")
    assert code == 0
    assert seconds < 15  # generous; the measured figure is in the summary
    assert _durable(state_dir, last)
    assert "Traceback" not in log
    assert "ResourceWarning" not in log


async def test_sigterm_with_a_feedback_in_flight_never_loses_an_acknowledgement(
    tmp_path: Path,
) -> None:
    state_dir = tmp_path / "state"
    server = ServerProcess(server_env(state_dir), tmp_path / "server.log")
    acked = durable = committed_unacked = trials = 0
    rng = random.Random(seed_for("shutdown in flight"))
    try:
        for trial in range(report.tier(6, 20)):
            trials += 1
            await server.start()
            async with StdioRpc.connect(server, keep=True) as rpc:
                agent = FeedbackClient(rpc, Ledger(), random.Random(trial))
                fb = await agent.select()
                body = json.dumps({"jsonrpc": "2.0", "id": 9000 + trial, "method": "tools/call",
                                   "params": {"name": "qortex_feedback",
                                              "arguments": fb.arguments()}})
                await rpc.send_raw(body.encode() + b"\n")
                await anyio.sleep(rng.uniform(0, 0.01))
                server.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
                code, _ = await server.wait_exit(time.monotonic())
                await rpc.drained()
                answered = [m for m in rpc.messages if m.get("id") == 9000 + trial]
            assert code == 0
            # A JSON-RPC error (e.g. the request cancelled by the shutdown) is no acknowledgement.
            if answered and "result" in answered[0] and not answered[0]["result"].get("isError"):
                acked += 1
                durable += _durable(state_dir, fb)
            else:
                committed_unacked += _durable(state_dir, fb)
    finally:
        await server.aclose()
    report.record("shutdown in flight", f"{trials} SIGTERMs with a feedback in flight: "
                  f"{acked} acknowledged, {durable} of them durable; {committed_unacked} committed "
                  "without an answer")
    assert durable == acked
    # The server lets requests in progress answer before it stops reading.
    assert committed_unacked == 0


async def test_a_long_noisy_stdio_session_writes_only_json_rpc_to_stdout(
    tmp_path: Path,
) -> None:
    state_dir = tmp_path / "state"
    env = server_env(state_dir, log_level="debug")
    server = ServerProcess(env, tmp_path / "server.log",
                           argv=[sys.executable, "-m", "tests.reliability.noisy_server"])
    pairs = report.tier(100, 1000)
    try:
        await server.start()
        async with StdioRpc.connect(server) as rpc:
            agent = FeedbackClient(rpc, Ledger(), random.Random(seed_for("noisy")))
            for _ in range(pairs):
                fb = await agent.select()
                assert (await agent.send(fb)).ok
            await rpc.close_stdin()
            code, _ = await server.wait_exit(time.monotonic())
            with contextlib.suppress(ServerGone):
                await rpc.drained()
            stdout = bytes(rpc.stdout_bytes)
            bad = list(rpc.bad_lines)
    finally:
        await server.aclose()
    log = (tmp_path / "server.log").read_text()
    lines = stdout.split(b"\n")
    report.record("stdout hygiene",
                  f"{2 * pairs} calls with debug logging, warnings, print() and "
                  f"sys.stdout.write in the tool path: {len(stdout)} stdout bytes, "
                  f"{len(lines) - 1} lines, {len(bad)} not JSON-RPC; "
                  f"{log.count('NOISE')} noise lines on stderr")
    assert bad == [], bad[:3]
    assert stdout.endswith(b"\n")
    assert code == 0
    assert "NOISE: print()" in log
    assert "NOISE: a warning" in log
    assert "NOISE: a log line" in log
