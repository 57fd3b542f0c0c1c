"""Serving streamable HTTP: loopback by default, a bearer token beyond it, clean stops.

The server binds 127.0.0.1 by default with Host and Origin checks; binding any other address
requires a bearer token (``QORTEX_HTTP_TOKEN``), checked in constant time on every request.
It is stateless: no MCP session is kept between requests (learner state lives in the store
and a selection id is the only handle), so abandoned clients hold nothing, any instance can
answer any request, and both the 2026-07-28 revision (no sessions by design) and 2025-11-25
clients (whose ``initialize`` opens nothing) are served. Slow or idle connections are closed
by the guards in ``http_guards``. SIGTERM/SIGINT stop uvicorn gracefully (open streams get
``SHUTDOWN_GRACE_S``), then the server's lifespan exits and the caller closes its registry.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import signal
import socket
from typing import Any, Final

import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.types import ASGIApp, Receive, Scope, Send

from qortex_mcp.errors import ConfigError
from qortex_mcp.http_guards import (
    IDLE_TIMEOUT_S,
    AcceptErrors,
    BodyDeadline,
    GuardedH11Protocol,
    HostCheck,
    ListenLimit,
    PostOnly,
    raise_fd_limit,
    refuse,
)
from qortex_mcp.logging import get_logger

__all__ = [
    "MAX_REQUEST_BYTES",
    "BearerAuth",
    "check_binding",
    "is_loopback",
    "serve_app",
    "serve_http",
    "transport_security",
]

log = get_logger(__name__)

MAX_REQUEST_BYTES: Final = 4 * 1024 * 1024
"""Largest HTTP request body (413 beyond): room for 10,000 candidates of 128 characters."""
SHUTDOWN_GRACE_S: Final = 2
"""How long open HTTP streams may finish after a shutdown signal."""
_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_binding(host: str, token: str | None) -> None:
    """Refuse to expose the server beyond this machine without a bearer token.

    Raises:
        ConfigError: ``host`` is not a loopback address and no token is set.
    """
    if not is_loopback(host) and not token:
        raise ConfigError(
            f"refusing to serve HTTP on {host}: beyond 127.0.0.1 every client must present "
            "a bearer token; set QORTEX_HTTP_TOKEN (or bind 127.0.0.1)"
        )


def transport_security(host: str) -> TransportSecuritySettings:
    """Host and Origin checks (DNS-rebinding protection) for a server bound to ``host``.

    ``HostCheck`` applies them: ``name:*`` allows that name (any case) with a numeric port or
    none.

    Loopback: only loopback Host and Origin values pass (any port). A specific address
    also accepts itself. A wildcard bind (``0.0.0.0``, ``::``) cannot know the names
    clients use, so it relies on the bearer token that ``check_binding`` requires.
    """
    names = ["127.0.0.1", "localhost", "[::1]"]
    if not is_loopback(host):
        bare = host.strip("[]")
        try:
            unspecified = ipaddress.ip_address(bare).is_unspecified
        except ValueError:  # a host name
            unspecified = False
        if unspecified:
            return TransportSecuritySettings(enable_dns_rebinding_protection=False)
        names.append(f"[{bare}]" if ":" in bare else bare)
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[f"{name}:*" for name in names],
        allowed_origins=[f"http://{name}:*" for name in names],
    )


class BearerAuth:
    """ASGI middleware: every HTTP request must carry ``Authorization: Bearer <token>``.

    Missing or wrong tokens get 401 with ``WWW-Authenticate``; the comparison takes the
    same time whatever the token's content.
    """

    def __init__(self, app: ASGIApp, token: str) -> None:
        if not token:
            raise ConfigError("the HTTP bearer token must not be empty")
        self.app = app
        self._token = token.encode("utf-8")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = b""
        for key, value in scope.get("headers", ()):
            if key == b"authorization":
                given = value
                break
        scheme, _, token = given.partition(b" ")
        if scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self._token):
            await self.app(scope, receive, send)
            return
        challenge = b'Bearer realm="qortex-mcp"' + (b', error="invalid_token"' if given else b"")
        # Connection: close, so an unauthenticated client holds a socket no longer than its
        # headers take (HEADER_TIMEOUT_S at most), however many requests it would send.
        await refuse(send, 401, "unauthorized", "send Authorization: Bearer <QORTEX_HTTP_TOKEN>",
                     extra=[(b"www-authenticate", challenge)])


def _listen(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)  # clients may connect (and queue) from now on
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return sock


async def serve_http(
    server: MCPServer[Any], *, host: str, port: int, token: str | None, path: str = "/mcp",
    observe: ASGIApp | None = None,
) -> str:
    """Serve streamable HTTP until SIGTERM/SIGINT; returns why it stopped.

    ``observe`` (``qortex_mcp.observe.app``) answers ``/metrics``, ``/api/learning/`` and
    ``/dashboard`` behind the same Host/Origin checks and bearer token as the MCP endpoint.

    Also raises this process's soft file-descriptor limit to its hard limit (one descriptor
    per connection) and installs the loop's handler for ``accept()`` failures while serving.

    Raises:
        ConfigError: the binding is refused (see ``check_binding``) or the port is taken.
    """
    check_binding(host, token)
    limits = raise_fd_limit()
    sock = _listen(host, port)
    app: ASGIApp = server.streamable_http_app(
        streamable_http_path=path, host=host, max_request_body_size=MAX_REQUEST_BYTES,
        stateless_http=True,
        # Plain JSON answers: stateless, no stream outlives its request anyway, and an SSE
        # stream per request costs 15-40% more server CPU (bench/RESULTS.md section 4.5).
        json_response=True,
        # HostCheck below does the Host/Origin checks, with exact matching.
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )
    app = ListenLimit(PostOnly(BodyDeadline(app, max_bytes=MAX_REQUEST_BYTES), path))
    if observe is not None:
        from qortex_mcp.observe.app import ObserveSplit

        app = ObserveSplit(app, BodyDeadline(observe, max_bytes=MAX_REQUEST_BYTES))
    return await _serve(app, sock, host=host, token=token, path=path, limits=limits)


async def serve_app(app: ASGIApp, *, host: str, port: int, token: str | None,
                    path: str = "/") -> str:
    """Serve a plain ASGI app (``qortex-mcp dashboard``) with the same guards, Host/Origin
    checks and bearer token as the MCP server, until SIGTERM/SIGINT.

    Raises:
        ConfigError: the binding is refused (see ``check_binding``) or the port is taken.
    """
    check_binding(host, token)
    limits = raise_fd_limit()
    sock = _listen(host, port)
    return await _serve(BodyDeadline(app, max_bytes=MAX_REQUEST_BYTES), sock, host=host,
                        token=token, path=path, limits=limits)


async def _serve(app: ASGIApp, sock: socket.socket, *, host: str, token: str | None,
                 path: str, limits: tuple[int, int] | None) -> str:
    if token:
        app = BearerAuth(app, token)
    app = HostCheck(app, transport_security(host))
    bound = sock.getsockname()
    shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
    config = uvicorn.Config(app, log_config=None, access_log=False, server_header=False,
                            timeout_graceful_shutdown=SHUTDOWN_GRACE_S, lifespan="on",
                            http=GuardedH11Protocol, timeout_keep_alive=IDLE_TIMEOUT_S)
    web = uvicorn.Server(config)
    loop = asyncio.get_running_loop()
    previous_handler = loop.get_exception_handler()
    loop.set_exception_handler(AcceptErrors(web.server_state.connections, previous_handler))
    # Stateless, the SDK logs "Terminating session: None" at info for every request.
    sdk_log = logging.getLogger("mcp.server.streamable_http")
    if sdk_log.getEffectiveLevel() == logging.INFO:
        sdk_log.setLevel(logging.WARNING)
    received: list[int] = []
    # uvicorn handles the signals while it serves, then re-raises them to the handlers it
    # found; recording them here turns that into a normal return instead of a kill.
    previous = {sig: signal.signal(sig, lambda signum, _: received.append(signum))
                for sig in _SIGNALS}
    try:
        log.info("http_listening", url=f"http://{shown}:{bound[1]}{path}",
                 auth="bearer" if token else "none",
                 fd_limit=limits[0] if limits else None)
        await web.serve(sockets=[sock])
    finally:
        sock.close()
        loop.set_exception_handler(previous_handler)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return signal.Signals(received[0]).name if received else "stopped"
