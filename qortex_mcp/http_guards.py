"""Guards that keep abusive HTTP clients from holding the server's connections and memory.

A client that opens sockets and sends nothing, trickles its headers a byte at a time, streams
an endless chunked body, or opens more sockets than the process may hold must not stop others
from being answered. Each guard bounds one of those:

- ``GuardedH11Protocol`` (uvicorn's h11 protocol plus deadlines): a request's headers must be
  complete within ``HEADER_TIMEOUT_S`` of the connection opening or of the previous response,
  its body within ``BODY_TIMEOUT_S`` (+1 s) of its headers; otherwise the connection is closed.
  Between requests uvicorn closes a connection idle for ``IDLE_TIMEOUT_S``.
- ``BodyDeadline`` (ASGI): reads the body before the app sees it, answering 408 when it is late
  and 413 when it is too large, so a slow body never reaches the SDK half-read.
- ``ListenLimit`` (ASGI): 2026-07-28 ``subscriptions/listen`` streams, the one thing a
  stateless server holds open per client, are capped per client address and in total.
- ``PostOnly`` (ASGI): the stateless MCP endpoint answers POST only; a GET would otherwise
  open a notification stream that nothing ever writes to and that never ends.
- ``HostCheck`` (ASGI): DNS-rebinding protection with exact matching: host names compared
  case-insensitively, ports digits only (the SDK's prefix match accepted
  ``127.0.0.1:1@evil.com`` and refused ``LOCALHOST`` and a Host without a port).
- ``AcceptErrors``: when ``accept()`` runs out of file descriptors, one warning per
  ``ACCEPT_LOG_INTERVAL_S`` instead of one per attempt, and the oldest connections still
  waiting for their headers are closed to make room for clients that send requests.
- ``raise_fd_limit``: the soft file-descriptor limit is raised to the hard limit at start.
"""

from __future__ import annotations

import asyncio
import errno
import json
import re
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any, Final

import anyio
import h11
from mcp.server.transport_security import TransportSecuritySettings
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from qortex_mcp.logging import get_logger

__all__ = [
    "ACCEPT_LOG_INTERVAL_S",
    "BODY_TIMEOUT_S",
    "HEADER_TIMEOUT_S",
    "IDLE_TIMEOUT_S",
    "MAX_LISTEN_PER_CLIENT",
    "MAX_LISTEN_STREAMS",
    "AcceptErrors",
    "BodyDeadline",
    "GuardedH11Protocol",
    "HostCheck",
    "ListenLimit",
    "PostOnly",
    "raise_fd_limit",
    "refuse",
]

log = get_logger(__name__)

HEADER_TIMEOUT_S: Final = 5.0
"""A request's headers must be complete this long after the connection opens (or after the
previous response): MCP clients send them in one write, a slowloris never finishes them."""
BODY_TIMEOUT_S: Final = 10.0
"""A request's body must be complete this long after its headers (408 otherwise): 4 MiB at
400 KiB/s, far more than any tool call needs."""
IDLE_TIMEOUT_S: Final = 5
"""A kept-alive connection with no request for this long is closed (uvicorn's keep-alive)."""
ACCEPT_LOG_INTERVAL_S: Final = 10.0
"""At most one ``http_accept_failed`` warning per interval while ``accept()`` fails."""
MAX_LISTEN_STREAMS: Final = 256
"""Open ``subscriptions/listen`` streams at most (503 beyond)."""
MAX_LISTEN_PER_CLIENT: Final = 32
"""Open ``subscriptions/listen`` streams per client address at most (429 beyond)."""
_SHED_BATCH: Final = 64
_SHED_EVERY_S: Final = 0.5
_ACCEPT_ERRNOS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def raise_fd_limit() -> tuple[int, int] | None:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit; the (soft, hard) now in force.

    Every open connection costs one descriptor; the usual soft limit of 1,024 lets a thousand
    idle sockets lock every client out while the hard limit is far higher. None where the
    platform has no such limit.
    """
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # macOS reports an unlimited hard limit but refuses it; 10,240 is its OPEN_MAX.
    for target in (hard, 10_240):
        if target == resource.RLIM_INFINITY or (soft != resource.RLIM_INFINITY
                                                and target <= soft):
            continue
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            continue
        break
    return resource.getrlimit(resource.RLIMIT_NOFILE)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request's headers and body.

    The deadline is absolute (a byte of progress does not extend it), so trickling data holds
    a connection no longer than sending nothing. Responses are not timed: a tool call may
    legitimately stream for as long as it runs.
    """

    header_timeout_s: float = HEADER_TIMEOUT_S
    body_timeout_s: float = BODY_TIMEOUT_S + 1.0  # BodyDeadline answers 408 first

    _deadline: asyncio.TimerHandle | None = None
    _phase: str | None = None
    waiting_since: float | None = None
    """When this connection started waiting for request headers (None once they came)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._follow()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._follow()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._follow()

    def connection_lost(self, exc: Exception | None) -> None:
        self._set_phase(None)
        super().connection_lost(exc)

    def shed(self) -> None:
        """Close this connection (it has not sent a complete request header)."""
        self._set_phase(None)
        if not self.transport.is_closing():
            self.transport.abort()

    def _follow(self) -> None:
        if self.transport.is_closing():
            self._set_phase(None)
            return
        state = self.conn.their_state
        if state is h11.IDLE:
            self._set_phase("headers")
        elif state is h11.SEND_BODY:
            self._set_phase("body")
        else:  # the request is complete (or the connection is ending): nothing to wait for
            self._set_phase(None)

    def _set_phase(self, phase: str | None) -> None:
        if phase == self._phase:
            return
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._phase = phase
        self.waiting_since = time.monotonic() if phase == "headers" else None
        if phase is not None:
            delay = self.header_timeout_s if phase == "headers" else self.body_timeout_s
            self._deadline = self.loop.call_later(delay, self._expired)

    def _expired(self) -> None:
        self._deadline = None
        self._phase = None
        self.waiting_since = None
        if not self.transport.is_closing():
            self.transport.close()


def _refusal(status: int, error: str, description: str, *, close: bool
             ) -> tuple[Message, Message]:
    body = json.dumps({"error": error, "error_description": description}).encode("utf-8")
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode("ascii"))]
    if close:
        headers.append((b"connection", b"close"))
    return ({"type": "http.response.start", "status": status, "headers": headers},
            {"type": "http.response.body", "body": body})


async def refuse(send: Send, status: int, error: str, description: str, *,
                 close: bool = True, extra: Iterable[tuple[bytes, bytes]] = ()) -> None:
    """A small JSON refusal; ``close`` ends the connection after it (``Connection: close``)."""
    start, body = _refusal(status, error, description, close=close)
    start["headers"].extend(extra)
    await send(start)
    await send(body)


class BodyDeadline:
    """ASGI middleware: the whole body within ``timeout_s`` and ``max_bytes``, or a refusal.

    The app then reads the buffered body at once; a client that disconnects mid-body is
    dropped quietly (there is no one to answer).
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int, timeout_s: float = BODY_TIMEOUT_S
                 ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = (413, "request_too_large", f"request bodies are limited to "
                     f"{self.max_bytes} bytes")
        for key, value in scope.get("headers", ()):
            if key == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                # Not closed: the client is still sending, and a reset would hide the 413.
                await refuse(send, *too_large, close=False)
                return
        chunks: list[bytes] = []
        size = 0
        try:
            with anyio.fail_after(self.timeout_s):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.max_bytes:
                        await refuse(send, *too_large, close=False)
                        return
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            await refuse(send, 408, "request_timeout",
                         f"the request body must arrive within {self.timeout_s:g} s")
            return
        pending: list[Message] = [{"type": "http.request", "body": b"".join(chunks),
                                   "more_body": False}]

        async def replay() -> Message:
            return pending.pop() if pending else await receive()

        await self.app(scope, replay, send)


class ListenLimit:
    """ASGI middleware: at most ``total`` open ``subscriptions/listen`` streams, and at most
    ``per_client`` from one client address.

    A listen stream lasts until its client goes away (then it is released at once), so it is
    what a client could abandon by the thousand. 2026-07-28 requests name their method in the
    ``Mcp-Method`` header (the SDK refuses a body that disagrees), so no body is read here.
    """

    def __init__(self, app: ASGIApp, *, total: int = MAX_LISTEN_STREAMS,
                 per_client: int = MAX_LISTEN_PER_CLIENT) -> None:
        self.app = app
        self.total = total
        self.per_client = per_client
        self.open = 0
        self.by_client: Counter[str] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (b"mcp-method", b"subscriptions/listen") not in scope.get(
                "headers", ()):
            await self.app(scope, receive, send)
            return
        client = str((scope.get("client") or ("unknown",))[0])
        if self.by_client[client] >= self.per_client:
            await refuse(send, 429, "too_many_streams", f"at most {self.per_client} open "
                         "subscriptions/listen streams per client", close=False,
                         extra=[(b"retry-after", b"5")])
            return
        if self.open >= self.total:
            await refuse(send, 503, "too_many_streams", f"at most {self.total} open "
                         "subscriptions/listen streams", close=False,
                         extra=[(b"retry-after", b"5")])
            return
        self.open += 1
        self.by_client[client] += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.open -= 1
            self.by_client[client] -= 1
            if not self.by_client[client]:
                del self.by_client[client]


class PostOnly:
    """ASGI middleware: requests to ``path`` other than POST get 405 (``Allow: POST``).

    The SDK's stateless mode still opens a standalone SSE stream for a GET: with no session
    nothing is ever sent on it, and each one holds a connection for as long as the client
    likes. The streamable-HTTP spec lets a server refuse the GET with 405, and clients then
    carry on over POST alone; without a session there is nothing for a DELETE to end either.
    """

    def __init__(self, app: ASGIApp, path: str) -> None:
        self.app = app
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] == "http" and scope["method"] != "POST"
                and scope["path"].rstrip("/") == self.path.rstrip("/")):
            await refuse(send, 405, "method_not_allowed", "this MCP endpoint answers POST only",
                         close=False, extra=[(b"allow", b"POST")])
            return
        await self.app(scope, receive, send)


_PORT: Final = re.compile(r"[0-9]{1,5}")


def split_authority(value: str) -> tuple[str, str | None] | None:
    """``host[:port]`` as (lower-case host, port digits or None); None when malformed."""
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        host, rest = value[:end + 1], value[end + 1:]
    else:
        host, colon, port = value.partition(":")
        rest = colon + port
    if not host:
        return None
    if not rest:
        return host.lower(), None
    if rest[0] == ":" and _PORT.fullmatch(rest[1:]):
        return host.lower(), rest[1:]
    return None


def _patterns(values: Iterable[str]) -> list[tuple[str, str | None]]:
    """``name:*`` (any port, or none) and ``name:port`` entries, parsed once."""
    out: list[tuple[str, str | None]] = []
    for value in values:
        if value.endswith(":*"):
            parsed = split_authority(value[:-2])
            if parsed is not None:
                out.append((parsed[0], "*"))
        else:
            parsed = split_authority(value)
            if parsed is not None:
                out.append(parsed)
    return out


def _matches(parsed: tuple[str, str | None] | None,
             patterns: list[tuple[str, str | None]]) -> bool:
    if parsed is None:
        return False
    host, port = parsed
    return any(host == name and (want == "*" or want == port) for name, want in patterns)


class HostCheck:
    """ASGI middleware: DNS-rebinding protection (bad Host 421, bad Origin 403).

    Follows ``TransportSecuritySettings``: ``name:*`` allows that host with any numeric port
    or none. A missing Origin is allowed (same-origin and non-browser clients send none).
    """

    def __init__(self, app: ASGIApp, settings: TransportSecuritySettings) -> None:
        self.app = app
        self.enabled = settings.enable_dns_rebinding_protection
        self.hosts = _patterns(settings.allowed_hosts)
        self.origins: list[tuple[str, list[tuple[str, str | None]]]] = []
        for origin in settings.allowed_origins:
            scheme, sep, authority = origin.partition("://")
            if sep:
                self.origins.append((scheme.lower(), _patterns([authority])))

    def host_allowed(self, value: str | None) -> bool:
        return value is not None and _matches(split_authority(value), self.hosts)

    def origin_allowed(self, value: str | None) -> bool:
        if value is None:
            return True
        scheme, sep, authority = value.partition("://")
        if not sep:
            return False
        parsed = split_authority(authority)
        return any(scheme.lower() == want and _matches(parsed, patterns)
                   for want, patterns in self.origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.enabled:
            await self.app(scope, receive, send)
            return
        hosts: list[str] = []
        origins: list[str] = []
        for key, value in scope.get("headers", ()):
            if key == b"host":
                hosts.append(value.decode("latin-1"))
            elif key == b"origin":
                origins.append(value.decode("latin-1"))
        if len(hosts) != 1 or not self.host_allowed(hosts[0]):
            await refuse(send, 421, "misdirected_request",
                         "the Host header does not name this server")
            return
        if len(origins) > 1 or not self.origin_allowed(origins[0] if origins else None):
            await refuse(send, 403, "forbidden_origin",
                         "requests from this Origin are not allowed")
            return
        await self.app(scope, receive, send)


class AcceptErrors:
    """Event-loop exception handler for ``accept()`` failures (out of file descriptors).

    asyncio logs every failed ``accept()`` (up to the backlog per loop pass: tens of
    thousands of lines a minute); this logs one warning per interval with a count, and sheds
    the oldest connections still waiting for their headers so that new clients get in.
    Other loop errors go to the handler that was installed before.
    """

    def __init__(self, connections: set[Any], previous: Any = None,
                 interval_s: float = ACCEPT_LOG_INTERVAL_S) -> None:
        self.connections = connections
        self.previous = previous
        self.interval_s = interval_s
        self.failures = 0
        self.shed = 0
        self._last_logged: float | None = None
        self._last_shed: float | None = None
        self._unlogged = 0

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if not (isinstance(exc, OSError) and exc.errno in _ACCEPT_ERRNOS
                and "accept" in str(context.get("message", ""))):
            if self.previous is not None:
                self.previous(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        self.failures += 1
        self._unlogged += 1
        now = time.monotonic()
        shed = 0
        # asyncio retries accept() in the same pass (up to the backlog) before the closed
        # sockets are released: shed once per pass, not once per failed attempt.
        if self._last_shed is None or now - self._last_shed >= _SHED_EVERY_S:
            self._last_shed = now
            shed = self._shed()
        if self._last_logged is None or now - self._last_logged >= self.interval_s:
            log.warning("http_accept_failed", error=errno.errorcode.get(exc.errno, "?"),
                        failures=self._unlogged, connections=len(self.connections),
                        shed_total=self.shed, shed_now=shed,
                        next_log_in_s=self.interval_s)
            self._last_logged = now
            self._unlogged = 0

    def _shed(self) -> int:
        waiting = sorted((c for c in self.connections
                          if isinstance(c, GuardedH11Protocol) and c.waiting_since is not None),
                         key=lambda c: c.waiting_since or 0.0)
        victims = waiting[:_SHED_BATCH]
        for conn in victims:
            conn.shed()
        self.shed += len(victims)
        return len(victims)
