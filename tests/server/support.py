"""Helpers for the server tests: calling tools, fingerprinting a store, real subprocesses."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
from mcp import Client

from qortex_mcp.learning import LearnerRegistry, LearningStore, SqliteLearningStore
from qortex_mcp.learning.types import EvidenceRow
from qortex_mcp.tools import ERROR_META_KEY

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(sys.executable).with_name("qortex-mcp")
"""The installed console script (the project is installed editable in the venv)."""
if not SCRIPT.exists():  # pragma: no cover - a venv without the script is a broken install
    found = shutil.which("qortex-mcp")
    assert found, "the qortex-mcp console script is not installed (pip install -e .)"
    SCRIPT = Path(found)


def text_of(result: Any) -> str:
    return "".join(getattr(c, "text", "") for c in result.content)


async def ok(client: Client, tool: str, arguments: Mapping[str, Any] | None = None
             ) -> dict[str, Any]:
    """Call a tool that must succeed; its structured content."""
    result = await client.call_tool(tool, dict(arguments or {}))
    assert not result.is_error, text_of(result)
    content: dict[str, Any] | None = result.structured_content
    assert content is not None
    # the text is the same data, as compact JSON
    assert json.loads(text_of(result)) == content
    return content


async def refused(client: Client, tool: str, arguments: Mapping[str, Any] | None = None
                  ) -> tuple[str, str]:
    """Call a tool that must fail; (code, one-line text). Checks the error's shape."""
    result = await client.call_tool(tool, dict(arguments or {}))
    text = text_of(result)
    assert result.is_error, text
    assert result.meta is not None, "errors carry _meta"
    error = result.meta[ERROR_META_KEY]
    code = error["code"]
    assert text == f"{code}: {error['message']}"
    assert "\n" not in text
    assert "Traceback" not in text
    assert "Error executing tool" not in text
    return code, text


async def fingerprint(store: LearningStore, registry: LearnerRegistry | None = None
                      ) -> tuple[Any, ...]:
    """Everything a refused call must leave unchanged: per learner its counters, arms,
    evidence rows and event log (pending selection counts flushed first)."""
    if registry is not None:
        for learner in registry.open_learners():
            await learner.flush()
    out = []
    for summary in await store.learners():
        snap = await store.load(summary.name)
        out.append((
            summary.name, snap.selections, snap.explored,
            sorted((a.arm, a.a0, a.b0, a.selections) for a in snap.arms),
            sorted((r.ctx, r.arm, r.s, r.f, r.n, r.rsum) for r in await store.evidence(
                summary.name)),
            [(e.seq, e.kind, e.key, e.arm, e.reward, e.factor)
             for e in await store.events(summary.name)],
        ))
    return tuple(out)


def stored_evidence(db: Path, learner: str = "default") -> list[EvidenceRow]:
    """What a server left in its SQLite file, read after it exited."""

    async def read() -> list[EvidenceRow]:
        async with SqliteLearningStore(db) as store:
            return await store.evidence(learner)

    return anyio.run(read)


def base_env(state_dir: Path, **extra: str) -> dict[str, str]:
    """A minimal, explicit environment for a server subprocess."""
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(state_dir.parent),
           "QORTEX_STATE_DIR": str(state_dir), "PYTHONUNBUFFERED": "1"}
    env.update(extra)
    return env


class _Lines:
    """Lines from a pipe, read by a thread, with a bounded wait for each."""

    def __init__(self, stream: Any) -> None:
        self.all: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: Any) -> None:
        for line in stream:
            self.all.append(line)
            self._queue.put(line)
        self._queue.put(None)

    def next(self, timeout: float = 10.0) -> str | None:
        return self._queue.get(timeout=timeout)

    def join(self, timeout: float = 5.0) -> None:
        self._thread.join(timeout)


class _Child:
    """A server subprocess whose output pipes are read by threads."""

    proc: subprocess.Popen[str]
    stdout: _Lines
    stderr: _Lines

    def wait(self, timeout: float) -> int:
        """The exit code; fails (and kills the server) when it takes longer than ``timeout``."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError(f"the server did not exit within {timeout} s") from None
        self.stdout.join()
        self.stderr.join()
        return code

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None and not stream.closed:
                stream.close()


class RawStdioServer(_Child):
    """``qortex-mcp`` driven with raw JSON-RPC lines: every byte of stdout is seen."""

    def __init__(self, env: Mapping[str, str], *args: str) -> None:
        self.proc = subprocess.Popen(
            [str(SCRIPT), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, env=dict(env), text=True, encoding="utf-8",
        )
        self.stdout = _Lines(self.proc.stdout)
        self.stderr = _Lines(self.proc.stderr)
        self._id = 0

    def send(self, message: Mapping[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message) + "\n")
        self.proc.stdin.flush()

    def request(self, method: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        self._id += 1
        self.send({"jsonrpc": "2.0", "id": self._id, "method": method, "params": params or {}})
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            line = self.stdout.next(timeout=deadline - time.monotonic())
            assert line is not None, "the server closed stdout"
            message = json.loads(line)
            if message.get("id") == self._id:
                return dict(message)
        raise AssertionError(f"no answer to {method}")

    def handshake(self) -> None:
        answer = self.request("initialize", {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "raw-test", "version": "1"},
        })
        assert "result" in answer
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def call(self, tool: str, arguments: Mapping[str, Any]) -> dict[str, Any]:
        answer = self.request("tools/call", {"name": tool, "arguments": dict(arguments)})
        return dict(answer["result"])

    def close_stdin(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)


def assert_only_jsonrpc(lines: list[str]) -> None:
    """Every line the server wrote to stdout is one JSON-RPC 2.0 message."""
    assert lines, "the server wrote nothing"
    for line in lines:
        message = json.loads(line)
        assert message.get("jsonrpc") == "2.0", line
        assert {"id", "method"} & message.keys(), line


class HttpServer(_Child):
    """``qortex-mcp serve --transport http --port 0``: waits for its listening line."""

    def __init__(self, env: Mapping[str, str], *args: str) -> None:
        self.proc = subprocess.Popen(
            [str(SCRIPT), "serve", "--transport", "http", "--port", "0", *args],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=dict(env), text=True, encoding="utf-8",
        )
        self.stdout = _Lines(self.proc.stdout)
        self.stderr = _Lines(self.proc.stderr)
        self.url = ""
        deadline = time.monotonic() + 30
        while not self.url:
            line = self.stderr.next(timeout=max(deadline - time.monotonic(), 0.01))
            assert line is not None, "the server exited: " + "".join(self.stderr.all)
            if "http_listening" in line:
                self.url = line.split("url='", 1)[1].split("'", 1)[0]

    def post(self, body: bytes, headers: Mapping[str, str] | None = None
             ) -> tuple[int, dict[str, str]]:
        """A raw POST to the endpoint: (status, response headers)."""
        request = urllib.request.Request(self.url, data=body, method="POST", headers={
            "Content-Type": "application/json", "Accept": "application/json, text/event-stream",
            **(headers or {}),
        })
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, dict(response.headers)
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers)


INITIALIZE = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-11-25", "capabilities": {},
    "clientInfo": {"name": "raw-test", "version": "1"}}}).encode()
