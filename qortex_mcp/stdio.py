"""Serving over stdio until stdin closes, or until SIGTERM/SIGINT turns into a clean close.

The SDK reads stdin in a worker thread blocked in ``read()``, which no cancellation can
interrupt: a server told to stop while its client is idle would hang until the next
message. So stdin is relayed through a pipe this process owns. On a signal the server
first lets the requests in progress answer (up to ``GRACE_S``: a feedback that committed
gets its acknowledgement), then ends the relay; the SDK sees an ordinary end of input, and
the server shuts down along the same path as a client disconnect: the lifespan exits, the
registry closes.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any, Final

import anyio
from mcp.server.mcpserver import MCPServer

from qortex_mcp.logging import get_logger
from qortex_mcp.tools.boundary import IN_FLIGHT

__all__ = ["announce_if_terminal", "serve_stdio", "stdin_relay"]

log = get_logger(__name__)

GRACE_S: Final = 3.0
"""After a signal, how long requests in progress may take to answer, and then how long the
transport may take to wind down before it is cancelled."""
_QUIET_S: Final = 0.05
"""No request in progress for this long: every answer has been written out."""
_CHUNK: Final = 1 << 16


@contextmanager
def stdin_relay() -> Iterator[Callable[[], None]]:
    """Route fd 0 through a pipe; yields ``end()``, which closes it (the reader sees EOF).

    A daemon thread copies the real stdin into the pipe and is the only one to touch the
    pipe's write end, so ending is a message to it (a byte on a stop pipe), never a close
    racing a write.
    """
    real = os.dup(0)
    read_end, write_end = os.pipe()
    stop_r, stop_w = os.pipe()
    os.dup2(read_end, 0)
    os.close(read_end)

    def pump() -> None:
        try:
            while True:
                ready, _, _ = select.select([real, stop_r], [], [])
                if stop_r in ready:
                    return
                chunk = os.read(real, _CHUNK)
                if not chunk:
                    return
                view = memoryview(chunk)
                while view:
                    view = view[os.write(write_end, view):]
        except OSError as exc:  # the reader went away; end of input either way
            log.debug("stdin_relay_stopped", error=exc.strerror)
        finally:
            os.close(write_end)

    thread = threading.Thread(target=pump, name="qortex-stdin-relay", daemon=True)
    thread.start()
    ended = threading.Event()

    def end() -> None:
        if not ended.is_set():
            ended.set()
            os.write(stop_w, b"x")

    try:
        yield end
    finally:
        end()
        thread.join(1.0)
        os.dup2(real, 0)
        os.close(real)
        if not thread.is_alive():  # else it may still select() on stop_r: leave it open
            os.close(stop_r)
            os.close(stop_w)


async def _drain(limit_s: float) -> None:
    """Wait until no request has been in progress for ``_QUIET_S`` (or ``limit_s``).

    The quiet period covers a request still in the pipe when the signal came and the
    moment between a handler returning and the SDK writing its answer.
    """
    deadline = anyio.current_time() + limit_s
    quiet_since = anyio.current_time()
    while (now := anyio.current_time()) < deadline:
        if IN_FLIGHT.count:
            quiet_since = now
        elif now - quiet_since >= _QUIET_S:
            return
        await anyio.sleep(0.01)
    log.warning("stdio_drain_timeout", in_flight=IN_FLIGHT.count)


def _launch_command() -> str:
    """How this process was started, as a host's config would spell it."""
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else ""
    if argv0.endswith("__main__.py"):  # python -m qortex_mcp
        return f"{sys.executable} -m qortex_mcp"
    found = shutil.which(argv0) if argv0 else None
    return str(Path(found).resolve()) if found else "qortex-mcp"


def announce_if_terminal() -> None:
    """One line on stderr when a person started the server in a terminal: it is waiting
    for an MCP client, not hung (stdout stays the protocol's, so nothing goes there)."""
    try:
        interactive = os.isatty(0)
    except OSError:  # fd 0 closed: certainly no person typing
        return
    if interactive:
        print(f"qortex-mcp: MCP server waiting for an MCP client on stdin/stdout; attach it "
              f"from a host (e.g. claude mcp add qortex -- {_launch_command()}, or the "
              f"command in claude_desktop_config.json); Ctrl-D or Ctrl-C quits; --help for "
              f"the other commands", file=sys.stderr, flush=True)


async def serve_stdio(server: MCPServer[Any]) -> str:
    """Serve over stdin/stdout until stdin closes or a signal; returns why it stopped."""
    stopped = "eof"
    announce_if_terminal()  # before the relay: after it, fd 0 is a pipe
    relay: AbstractContextManager[Callable[[], None] | None] = (
        nullcontext(None) if sys.platform == "win32" else stdin_relay())
    with relay as end_input:
        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                nonlocal stopped
                with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    async for signum in signals:
                        stopped = signal.Signals(signum).name
                        break
                if end_input is not None:
                    await _drain(GRACE_S)
                    end_input()  # the transport winds down as if the client had left
                    await anyio.sleep(GRACE_S)
                tg.cancel_scope.cancel()

            tg.start_soon(watch)
            await server.run_stdio_async()
            tg.cancel_scope.cancel()
    # The SDK has pointed fd 1 back at the client. A print() still in sys.stdout's buffer
    # would be flushed there at exit, after the last message: send it to stderr instead.
    os.dup2(2, 1)
    sys.stdout.flush()
    return stopped
