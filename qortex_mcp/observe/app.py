"""The observing app mounted beside the MCP endpoint: ``/metrics``, ``/api/learning/``,
``/dashboard``.

``serve --transport http`` routes these paths here and everything else to the MCP app; the
same ``HostCheck`` and ``BearerAuth`` wrap both, so the same token and Host/Origin rules
apply (see ``qortex_mcp.http_server``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from qortex_mcp.learning import LearnerRegistry
from qortex_mcp.observe.streams import StreamLagSource
from qortex_mcp.tools.boundary import ToolBoundary

__all__ = ["OBSERVE_PREFIXES", "ObserveSplit", "observe_app"]

OBSERVE_PREFIXES: Final = ("/metrics", "/api/learning", "/dashboard")


def _metrics_route(registry: Callable[[], LearnerRegistry], metrics: object,
                   stream_lag: Sequence[StreamLagSource]) -> Route:
    # Imported here: the dashboard alone runs without prometheus_client.
    from qortex_mcp.observe.metrics import CONTENT_TYPE, QortexMetrics

    assert isinstance(metrics, QortexMetrics)
    for source in stream_lag:
        metrics.add_stream_lag(source)

    async def scrape(request: Request) -> Response:
        return Response(await metrics.render(registry()), media_type=CONTENT_TYPE)

    return Route("/metrics", scrape, methods=["GET"])


def observe_app(
    registry: Callable[[], LearnerRegistry], *, boundary: ToolBoundary | None = None,
    metrics: object | None = None, dashboard_poll_s: float = 5.0,
    stream_lag: Sequence[StreamLagSource] = (),
) -> ASGIApp:
    """A Starlette app over an open registry: ``/metrics`` when ``metrics`` (a
    ``QortexMetrics``) is given, the REST API when ``boundary`` is, and the dashboard;
    ``stream_lag`` sources (stream ingestion) feed both the metrics and the dashboard."""
    from qortex_mcp.observe.dashboard import dashboard_routes

    routes: list[BaseRoute] = []
    if metrics is not None:
        routes.append(_metrics_route(registry, metrics, stream_lag))
    if boundary is not None:
        from qortex_mcp.observe.rest import rest_routes

        routes.extend(rest_routes(boundary))
    routes.extend(dashboard_routes(registry, poll_s=dashboard_poll_s, stream_lag=stream_lag))
    return Starlette(routes=routes)


class ObserveSplit:
    """ASGI: requests under ``prefixes`` go to ``observe``, all others (and the lifespan)
    to ``main``."""

    def __init__(self, main: ASGIApp, observe: ASGIApp,
                 prefixes: Sequence[str] = OBSERVE_PREFIXES) -> None:
        self.main = main
        self.observe = observe
        self.prefixes = tuple(prefixes)

    def wants(self, path: str) -> bool:
        return any(path == p or path.startswith(p + "/") for p in self.prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.wants(scope["path"]):
            await self.observe(scope, receive, send)
        else:
            await self.main(scope, receive, send)
