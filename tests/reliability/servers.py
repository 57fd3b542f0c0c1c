"""Real ``qortex-mcp`` server processes and the lean JSON-RPC clients that drive them.

The fault tests need what an SDK client hides: the server's PID (to ``kill -9`` it at a
chosen moment), every raw byte of its stdout (to prove nothing but JSON-RPC is written
there), its stderr in a file (to grep for secrets), and a client that notices a dead server
at once instead of hanging (python-sdk#396). So processes are started here, killed by PID
only, and spoken to by two small clients (``StdioRpc`` for stdio, ``HttpRpc`` for
streamable HTTP) that speak the MCP 2025-11-25 handshake; every call has its own timeout.
The hostile-input tests use the SDK's own ``mcp.Client`` instead.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final, Literal

import anyio
import httpx2 as httpx
from anyio.abc import Process

__all__ = [
    "CALL_TIMEOUT_S",
    "PROTOCOL",
    "SECRET",
    "HttpRpc",
    "RpcError",
    "ServerGone",
    "ServerProcess",
    "StdioRpc",
    "ToolReply",
    "encode",
    "nonce_of",
    "parse_http_body",
    "server_env",
]

SECRET: Final = "reliability-suite-secret-" + "5f" * 20
"""The selection key every test server gets (several servers must share one)."""
PROTOCOL: Final = "2025-11-25"
FAULTY_SERVER: Final = [sys.executable, "-m", "qortex_mcp.testing.faults"]
"""The server with the SQLite store bugs ``QORTEX_TEST_FAULTS`` names put back in."""
CALL_TIMEOUT_S: Final = 10.0
START_TIMEOUT_S: Final = 20.0
_REPO: Final = Path(__file__).resolve().parents[2]
_LISTENING = re.compile(r"event='http_listening'.*url='http://127\.0\.0\.1:(\d+)/mcp'")


class ServerGone(Exception):
    """The server process died or closed the connection before answering."""


class RpcError(Exception):
    """A JSON-RPC error answer (not a tool error: those come back as ``ToolReply``)."""

    def __init__(self, error: Mapping[str, Any]) -> None:
        self.code = int(error.get("code", 0))
        self.message = str(error.get("message", ""))
        super().__init__(f"JSON-RPC error {self.code}: {self.message}")


def nonce_of(selection_id: str) -> str:
    """The dedup key a selection id carries (its signed 128-bit nonce)."""
    body = selection_id.split(".")[2]
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    return str(payload["n"])


def server_env(state_dir: Path, *, store: str = "sqlite", log_level: str = "info",
               extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a test server: nothing inherited from the user's QORTEX_*."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("QORTEX_") and k not in ("DATABASE_URL", "PYTHONUNBUFFERED")}
    # The feedback rate caps are off: these servers take load on purpose (the caps have
    # their own tests in tests/server/test_limits.py).
    env.update(QORTEX_STATE_DIR=str(state_dir), QORTEX_STORE=store, QORTEX_SECRET=SECRET,
               QORTEX_LOG_LEVEL=log_level, QORTEX_FEEDBACK_PER_MINUTE="0",
               QORTEX_FEEDBACK_PER_ARM_PER_MINUTE="0",
               PYTHONPATH=os.pathsep.join(filter(None, [str(_REPO), env.get("PYTHONPATH")])))
    env.update(extra or {})
    return env


@dataclass
class ToolReply:
    """One ``tools/call`` result: a success or a tool error with its stable code."""

    result: dict[str, Any]

    @property
    def ok(self) -> bool:
        return not self.result.get("isError", False)

    @property
    def data(self) -> dict[str, Any]:
        out = self.result.get("structuredContent")
        assert isinstance(out, dict), self.result
        return out

    @property
    def error(self) -> dict[str, Any]:
        meta = self.result.get("_meta") or {}
        return dict(meta.get("qortex-mcp/error") or {})

    @property
    def code(self) -> str:
        return "OK" if self.ok else str(self.error.get("code", "UNCODED"))

    @property
    def retryable(self) -> bool:
        return bool(self.error.get("retryable", False))

    @property
    def text(self) -> str:
        return "".join(c.get("text", "") for c in self.result.get("content", []))


class ServerProcess:
    """``python -m qortex_mcp`` as a child process, stopped only by its PID.

    Args:
        env: from ``server_env``.
        log: the file that receives its stderr.
        transport: ``stdio`` (pipes for stdin and stdout) or ``http``.
        port: the HTTP port; 0 picks one (read back from the ``http_listening`` log line,
            so HTTP servers need ``QORTEX_LOG_LEVEL`` info or debug).
        argv: a different command line (for a wrapper such as the noisy launcher).
    """

    def __init__(self, env: Mapping[str, str], log: Path, *,
                 transport: Literal["stdio", "http"] = "stdio", port: int = 0,
                 argv: list[str] | None = None, extra_args: list[str] | None = None) -> None:
        self.env = dict(env)
        self.log = log
        self.transport = transport
        self.port = port
        self.argv = argv
        self.extra_args = extra_args or []
        self.proc: Process | None = None
        self._log_file: IO[bytes] | None = None
        self.started_at = 0.0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def _command(self) -> list[str]:
        cmd = list(self.argv or [sys.executable, "-m", "qortex_mcp"])
        if self.transport == "http":
            cmd += ["serve", "--transport", "http", "--host", "127.0.0.1",
                    "--port", str(self.port)]
        return cmd + self.extra_args

    async def start(self) -> None:
        """Spawn the process; for HTTP, return once it listens."""
        self._log_file = self.log.open("ab")
        self.started_at = time.monotonic()
        offset = self.log.stat().st_size
        self.proc = await anyio.open_process(
            self._command(), env=self.env, cwd=str(_REPO), stderr=self._log_file,
            stdin=subprocess.PIPE if self.transport == "stdio" else subprocess.DEVNULL,
            stdout=subprocess.PIPE if self.transport == "stdio" else subprocess.DEVNULL,
        )
        if self.transport == "http":
            await self._await_listening(offset)

    async def _await_listening(self, offset: int) -> None:
        with anyio.fail_after(START_TIMEOUT_S):
            while True:
                with self.log.open("rb") as fh:
                    fh.seek(offset)
                    text = fh.read().decode("utf-8", "replace")
                match = _LISTENING.search(text)
                if match:
                    self.port = int(match.group(1))
                    return
                assert self.proc is not None
                if self.proc.returncode is not None:
                    raise ServerGone(f"server exited with {self.proc.returncode}: {text[-500:]}")
                await anyio.sleep(0.02)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def kill(self) -> None:
        """``kill -9`` and reap."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGKILL)
        with anyio.fail_after(CALL_TIMEOUT_S):
            await self.proc.wait()
        self._close_log()

    async def signal_and_wait(self, signum: int, wait_s: float = 15.0) -> tuple[int, float]:
        """Send ``signum``; return (exit code, seconds until exit). Killed if it hangs."""
        assert self.proc is not None
        sent = time.monotonic()
        os.kill(self.proc.pid, signum)
        return await self.wait_exit(sent, wait_s)

    async def wait_exit(self, since: float, wait_s: float = 15.0) -> tuple[int, float]:
        assert self.proc is not None
        try:
            with anyio.fail_after(wait_s):
                code = await self.proc.wait()
        except TimeoutError:
            await self.kill()
            raise
        self._close_log()
        return code, time.monotonic() - since

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    async def aclose(self) -> None:
        """Make sure the process is gone (the test's finally)."""
        if self.proc is not None and self.proc.returncode is None:
            await self.kill()
        if self.proc is not None:
            for stream in (self.proc.stdin, self.proc.stdout):
                if stream is not None:
                    with contextlib.suppress(Exception):
                        await stream.aclose()
        self._close_log()


@dataclass
class StdioRpc:
    """JSON-RPC over a server process's stdin/stdout, recording every stdout byte."""

    server: ServerProcess
    stdout_bytes: bytearray = field(default_factory=bytearray)
    bad_lines: list[bytes] = field(default_factory=list)
    """stdout lines that are not JSON-RPC messages (must stay empty)."""
    messages: list[dict[str, Any]] = field(default_factory=list)
    _waiting: dict[int, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    _next_id: int = 0
    _gone: bool = False
    _keep: bool = False
    _reader: asyncio.Task[None] | None = None

    @classmethod
    @asynccontextmanager
    async def connect(cls, server: ServerProcess, *, handshake: bool = True,
                      keep: bool = False) -> AsyncIterator[StdioRpc]:
        """Read the server's stdout for the block; ``keep`` records every message."""
        rpc = cls(server)
        rpc._keep = keep
        rpc._reader = asyncio.create_task(rpc._read())
        try:
            if handshake:
                await rpc.initialize()
            yield rpc
        finally:
            rpc._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await rpc._reader

    async def _read(self) -> None:
        assert self.server.proc is not None
        assert self.server.proc.stdout is not None
        buf = b""
        try:
            async for chunk in self.server.proc.stdout:
                self.stdout_bytes += chunk
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    self._on_line(line)
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass
        finally:
            if buf:
                self.bad_lines.append(buf)  # a line without its newline at the end
            self._gone = True
            for fut in self._waiting.values():
                if not fut.done():
                    fut.set_exception(ServerGone("stdout closed"))
            self._waiting.clear()

    def _on_line(self, line: bytes) -> None:
        try:
            msg = json.loads(line)
        except ValueError:
            self.bad_lines.append(line)
            return
        if not isinstance(msg, dict) or msg.get("jsonrpc") != "2.0":
            self.bad_lines.append(line)
            return
        if self._keep:
            self.messages.append(msg)
        fut = self._waiting.pop(msg["id"], None) if "id" in msg else None
        if fut is not None and not fut.done():
            fut.set_result(msg)

    async def drained(self) -> None:
        """Wait until the server closed its stdout (everything it wrote was read)."""
        assert self._reader is not None
        with anyio.fail_after(CALL_TIMEOUT_S):
            await asyncio.shield(self._reader)

    async def send_raw(self, data: bytes) -> None:
        assert self.server.proc is not None
        assert self.server.proc.stdin is not None
        try:
            with anyio.fail_after(CALL_TIMEOUT_S * 3):
                await self.server.proc.stdin.send(data)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            raise ServerGone(f"stdin closed: {exc!r}") from exc

    async def close_stdin(self) -> None:
        assert self.server.proc is not None
        assert self.server.proc.stdin is not None
        await self.server.proc.stdin.aclose()

    async def request(self, method: str, params: Mapping[str, Any] | None = None,
                      wait_s: float = CALL_TIMEOUT_S, *, raw_text: str | None = None
                      ) -> dict[str, Any]:
        """Send a request (or ``raw_text`` with this id spliced in) and await its answer."""
        if self._gone:
            raise ServerGone("stdout already closed")
        self._next_id += 1
        rid = self._next_id
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = fut
        body: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            body["params"] = params
        data = encode(body) if raw_text is None else \
            raw_text.replace('"id": 0', f'"id": {rid}', 1).encode("utf-8", "surrogatepass")
        try:
            await self.send_raw(data + b"\n")
            with anyio.fail_after(wait_s):
                return await fut
        finally:
            self._waiting.pop(rid, None)

    async def notify(self, method: str, params: Mapping[str, Any] | None = None) -> None:
        body: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            body["params"] = params
        await self.send_raw(json.dumps(body).encode() + b"\n")

    async def initialize(self) -> dict[str, Any]:
        msg = await self.request("initialize", {
            "protocolVersion": PROTOCOL, "capabilities": {},
            "clientInfo": {"name": "qortex-reliability", "version": "1"},
        }, wait_s=START_TIMEOUT_S)
        if "error" in msg:
            raise RpcError(msg["error"])
        await self.notify("notifications/initialized")
        return dict(msg["result"])

    async def call_tool(self, name: str, arguments: Mapping[str, Any],
                        wait_s: float = CALL_TIMEOUT_S) -> ToolReply:
        msg = await self.request("tools/call", {"name": name, "arguments": dict(arguments)},
                                 wait_s)
        if "error" in msg:
            raise RpcError(msg["error"])
        return ToolReply(msg["result"])

    async def ping(self, wait_s: float = CALL_TIMEOUT_S) -> None:
        msg = await self.request("ping", None, wait_s)
        if "error" in msg:
            raise RpcError(msg["error"])


def encode(body: Any) -> bytes:
    """JSON as a sloppy client might send it: NaN/Infinity literals and lone surrogates
    pass through (the server must refuse them, not the client)."""
    return json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogatepass")


def parse_http_body(response: httpx.Response) -> list[dict[str, Any]]:
    """JSON-RPC messages of a streamable-HTTP answer (SSE events or one JSON body)."""
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        return [json.loads(line[5:]) for line in response.text.splitlines()
                if line.startswith("data:") and line[5:].strip()]
    return [response.json()] if response.content else []


class HttpRpc:
    """One MCP client session over streamable HTTP (its own connection pool)."""

    def __init__(self, url: str, *, headers: Mapping[str, str] | None = None) -> None:
        self.url = url
        self.base_headers = {"accept": "application/json, text/event-stream",
                             "content-type": "application/json", **(headers or {})}
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(CALL_TIMEOUT_S, connect=2.0))
        self.session: str | None = None
        self.initialized = False
        self._next_id = 0

    async def aclose(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> HttpRpc:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def headers(self) -> dict[str, str]:
        out = dict(self.base_headers)
        if self.session is not None:  # a stateful server's session (qortex-mcp keeps none)
            out["mcp-session-id"] = self.session
        if self.initialized:
            out["mcp-protocol-version"] = PROTOCOL
        return out

    async def post(self, body: Any, wait_s: float = CALL_TIMEOUT_S,
                   headers: Mapping[str, str] | None = None) -> httpx.Response:
        try:
            with anyio.fail_after(wait_s):
                # Encoded here: NaN and Infinity literals are part of the hostile input.
                return await self.http.post(self.url, content=encode(body),
                                            headers={**self.headers(), **(headers or {})})
        except (httpx.TransportError, OSError) as exc:
            raise ServerGone(f"{type(exc).__name__}: {exc}") from exc

    async def initialize(self) -> None:
        self.session = None
        self.initialized = False
        response = await self.post({"jsonrpc": "2.0", "id": 0, "method": "initialize",
                                    "params": {"protocolVersion": PROTOCOL, "capabilities": {},
                                               "clientInfo": {"name": "qortex-reliability",
                                                              "version": "1"}}})
        if response.status_code != 200:
            raise ServerGone(f"initialize answered HTTP {response.status_code}")
        self.session = response.headers.get("mcp-session-id")
        self.initialized = True
        await self.post({"jsonrpc": "2.0", "method": "notifications/initialized"})

    async def request(self, method: str, params: Mapping[str, Any] | None = None,
                      wait_s: float = CALL_TIMEOUT_S) -> dict[str, Any]:
        if not self.initialized:
            await self.initialize()
        self._next_id += 1
        body: dict[str, Any] = {"jsonrpc": "2.0", "id": self._next_id, "method": method}
        if params is not None:
            body["params"] = params
        response = await self.post(body, wait_s)
        if response.status_code == 404:  # the server restarted: a new session
            await self.initialize()
            response = await self.post(body, wait_s)
        if response.status_code >= 500:
            raise RpcError({"code": -response.status_code, "message": response.text[:200]})
        if response.status_code != 200:
            raise RpcError({"code": -response.status_code, "message": response.text[:200]})
        for msg in parse_http_body(response):
            if msg.get("id") == self._next_id:
                return msg
        raise ServerGone(f"no answer in the HTTP response ({response.text[:200]!r})")

    async def call_tool(self, name: str, arguments: Mapping[str, Any],
                        wait_s: float = CALL_TIMEOUT_S) -> ToolReply:
        msg = await self.request("tools/call", {"name": name, "arguments": dict(arguments)},
                                 wait_s)
        if "error" in msg:
            raise RpcError(msg["error"])
        return ToolReply(msg["result"])
