"""End to end over stdio: the installed ``qortex-mcp`` script as a real subprocess."""

from __future__ import annotations

import os
import pty
import signal
import subprocess
from pathlib import Path

import anyio
import pytest
from mcp import Client, StdioServerParameters

from tests.server.support import (
    SCRIPT,
    RawStdioServer,
    _Lines,
    assert_only_jsonrpc,
    base_env,
    ok,
    refused,
    stored_evidence,
)

pytestmark = pytest.mark.anyio


def teed(state_dir: Path, capture: Path) -> StdioServerParameters:
    """The server behind a pipe that copies every byte it writes to stdout into ``capture``."""
    return StdioServerParameters(
        command="/bin/sh", args=["-c", '"$0" | tee -a "$1"', str(SCRIPT), str(capture)],
        env=base_env(state_dir),
    )


async def test_the_loop_persists_across_restarts_and_stdout_is_only_protocol(
    tmp_path: Path,
) -> None:
    state, capture = tmp_path / "state", tmp_path / "stdout.jsonl"
    with anyio.fail_after(60):
        async with Client(teed(state, capture)) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            assert len(names) == 10
            assert "qortex_select" in names
            sel = await ok(client, "qortex_select", {
                "learner": "prompts", "candidates": ["concise", "detailed"],
                "context": {"task": "review"}})
            chosen = sel["selected"][0]["id"]
            args = {"learner": "prompts", "selection_id": sel["selection_id"],
                    "outcomes": {chosen: "accepted"}}
            first = await ok(client, "qortex_feedback", args)
            assert first["arms"][0]["status"] == "applied"
            again = await ok(client, "qortex_feedback", args)
            assert again["arms"][0]["status"] == "duplicate"
            token = sel["selection_id"]
            forged = token[:-1] + ("A" if token[-1] != "A" else "B")
            code, _ = await refused(client, "qortex_feedback", {**args, "selection_id": forged})
            assert code == "INVALID_SELECTION"
            post = await ok(client, "qortex_posteriors", {"learner": "prompts",
                                                          "arm_ids": [chosen]})
            assert post["arms"][0]["alpha"] == 2.0
            assert post["arms"][0]["pulls"] == 1
        async with Client(teed(state, capture)) as client:  # a new process, same state
            post = await ok(client, "qortex_posteriors", {"learner": "prompts",
                                                          "arm_ids": [chosen]})
            assert post["arms"][0]["alpha"] == 2.0
            status = await ok(client, "qortex_status")
            assert status["location"] == str(state / "qortex.db")
    assert_only_jsonrpc(capture.read_text(encoding="utf-8").splitlines())


def test_refusals_on_the_wire_are_protocol_messages_too(tmp_path: Path) -> None:
    server = RawStdioServer(base_env(tmp_path / "state"))
    try:
        server.handshake()
        # NaN is not JSON, but Python-style encoders send it; it is refused, never learned
        server.proc.stdin.write(  # type: ignore[union-attr]
            '{"jsonrpc":"2.0","id":77,"method":"tools/call","params":{"name":"qortex_feedback",'
            '"arguments":{"arm_id":"a","outcome":NaN}}}\n')
        server.proc.stdin.flush()  # type: ignore[union-attr]
        line = server.stdout.next()
        assert line is not None
        assert '"id":77' in line
        assert "INVALID_REWARD: reward must be a finite number in [0, 1], got 'nan'" in line
        bad = server.call("qortex_feedback", {"arm_id": "a", "outcome": "0.5"})
        assert bad["isError"] is True
        assert bad["_meta"]["qortex-mcp/error"]["code"] == "INVALID_REWARD"
        server.send({"jsonrpc": "2.0", "id": 78, "method": "no/such/method"})
        fine = server.call("qortex_status", {})
        # the refused feedbacks left no trace: not even their learner was recorded
        assert fine["structuredContent"]["summary"] == "no data: no learner has been used yet"
        server.close_stdin()
        assert server.wait(10) == 0
    finally:
        server.stop()
    assert_only_jsonrpc(server.stdout.all)


@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT", "EOF"])
def test_the_server_stops_within_5_s_with_the_last_acknowledged_feedback_durable(
    tmp_path: Path, how: str,
) -> None:
    state = tmp_path / "state"
    server = RawStdioServer(base_env(state))
    try:
        server.handshake()
        for i in range(3):
            answer = server.call("qortex_feedback", {"arm_id": "a", "outcome": 1,
                                                     "idempotency_key": f"k{i}"})
            assert answer["structuredContent"]["arms"][0]["status"] == "applied"
        if how == "EOF":
            server.close_stdin()
        else:
            server.signal(getattr(signal, how))
        assert server.wait(5) == 0
    finally:
        server.stop()
    logged = "".join(server.stderr.all)
    assert "registry_closed" in logged
    assert f"reason='{how.lower() if how == 'EOF' else how}'" in logged
    assert_only_jsonrpc(server.stdout.all)

    assert [(r.arm, r.s, r.n) for r in stored_evidence(state / "qortex.db")] == [("a", 3.0, 3)]


@pytest.mark.parametrize(("env", "message"), [
    ({"QORTEX_STORE": "cassandra"}, "QORTEX_STORE must be one of"),
    ({"QORTEX_STATE_DIR": "relative/dir"}, "QORTEX_STATE_DIR must be an absolute path"),
    ({"QORTEX_SECRET": "short"}, "QORTEX_SECRET must be at least 32 bytes"),
    ({"QORTEX_SECRET": "changeme" * 5}, "QORTEX_SECRET is a placeholder"),
    ({"QORTEX_SECRET": "x" * 40}, "QORTEX_SECRET is one pattern repeated"),
    ({"QORTEX_TOOLS": "qortex_teleport"}, "unknown tool"),
])
def test_a_bad_configuration_exits_2_with_one_clear_line(
    tmp_path: Path, env: dict[str, str], message: str,
) -> None:
    done = subprocess.run([str(SCRIPT)], env=base_env(tmp_path / "state", **env),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert done.stdout == ""
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("qortex-mcp: CONFIG_ERROR: ")
    assert message in line


@pytest.mark.parametrize("problem", ["state dir is a file", "database is garbage"])
def test_a_store_that_cannot_open_exits_2_without_a_traceback(
    tmp_path: Path, problem: str,
) -> None:
    state = tmp_path / "state"
    if problem == "state dir is a file":
        state.parent.mkdir(exist_ok=True)
        state.write_text("a file where the state directory should be")
    else:
        state.mkdir()
        (state / "qortex.db").write_bytes(b"this is not an SQLite database" * 100)
    done = subprocess.run([str(SCRIPT)],
                          env=base_env(state, QORTEX_SECRET="9c1f4e7a2b6d8053e1a4c7f92d6b0e38a5"),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith(("qortex-mcp: STORE_", "qortex-mcp: CORRUPT_STATE")), line


WAITING = "waiting for an MCP client"


def test_started_in_a_terminal_it_says_on_stderr_that_it_waits_for_a_client(
    tmp_path: Path,
) -> None:
    """A person who runs ``qortex-mcp`` in a terminal sees why nothing happens (stdin is a
    pty here); stdout stays empty, and Ctrl-D ends it like any end of input."""
    leader, follower = pty.openpty()
    with subprocess.Popen([str(SCRIPT)], stdin=follower, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, env=base_env(tmp_path / "state"),
                          text=True) as proc:
        os.close(follower)
        try:
            assert proc.stderr is not None
            stderr = _Lines(proc.stderr)
            lines: list[str] = []
            while (line := stderr.next(timeout=30)) is not None:
                lines.append(line)
                if WAITING in line:
                    break
            said = [x for x in lines if WAITING in x]
            assert said, "".join(lines)
            assert said[0].startswith("qortex-mcp: MCP server waiting for an MCP client")
            assert f"claude mcp add qortex -- {SCRIPT.resolve()}" in said[0]
            os.write(leader, b"\x04")  # Ctrl-D
            assert proc.wait(10) == 0
            stderr.join()
            assert sum(WAITING in x for x in stderr.all) == 1  # one line, once
            assert proc.stdout is not None
            assert proc.stdout.read() == ""
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
            os.close(leader)


def test_started_by_a_client_it_prints_no_greeting(tmp_path: Path) -> None:
    done = subprocess.run([str(SCRIPT)], env=base_env(tmp_path / "state"),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0
    assert WAITING not in done.stderr
    assert done.stdout == ""
