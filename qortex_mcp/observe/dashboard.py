"""The dashboard: two pages and the JSON they poll, served from package files.

=============================================  ==========================================
``GET /dashboard``                             the learners (a page of them)
``GET /dashboard/learners/{name}``             one learner: arms, intervals, time series
``GET /dashboard/static/{file}``               the page's script and style sheet
``GET /dashboard/api/learners``                ``?offset=&limit=`` (``DashboardData``)
``GET /dashboard/api/learners/{name}``         ``?offset=&limit=&sort=estimate|pulls|id``
``GET /dashboard/api/learners/{name}/series``  ``?bucket_s=60``
=============================================  ==========================================

The pages are plain HTML, SVG drawn by a small vanilla script (no framework, no CDN, no
build step), and poll their JSON every ``poll_s`` seconds (``QORTEX_DASHBOARD_POLL_S``,
default 5). A Content-Security-Policy allows only this server's own script and styles.
"""

from __future__ import annotations

import html
import json
from collections.abc import Awaitable, Callable, Sequence
from importlib import resources
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from qortex_mcp.errors import InvalidInput, QortexError
from qortex_mcp.learning import LearnerRegistry
from qortex_mcp.observe.rest import error_response
from qortex_mcp.observe.streams import StreamLagSource
from qortex_mcp.observe.views import DashboardData

__all__ = ["PREFIX", "dashboard_routes"]

PREFIX: Final = "/dashboard"
_STATIC: Final = {"dashboard.js": "text/javascript; charset=utf-8",
                  "dashboard.css": "text/css; charset=utf-8"}
_CSP: Final = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
               "img-src 'self' data:; base-uri 'none'; form-action 'none'; "
               "frame-ancestors 'none'")
_HEADERS: Final = {"content-security-policy": _CSP, "x-content-type-options": "nosniff",
                   "cache-control": "no-store", "referrer-policy": "no-referrer"}


def _file(name: str) -> str:
    return resources.files("qortex_mcp.observe").joinpath("static", name).read_text("utf-8")


def _int(request: Request, key: str, default: int) -> int:
    raw = request.query_params.get(key)
    if raw is None:
        return default
    if not (raw.isdigit() and len(raw) < 10):
        raise InvalidInput(f"{key} must be a whole number, got {raw[:32]!r}")
    return int(raw)


def _json(fn: Callable[[Request], Awaitable[dict[str, Any]]]
          ) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            return JSONResponse(await fn(request), headers=_HEADERS)
        except QortexError as exc:
            return error_response(exc)

    return endpoint


def dashboard_routes(registry: Callable[[], LearnerRegistry], *, poll_s: float,
                     stream_lag: Sequence[StreamLagSource] = ()) -> list[BaseRoute]:
    """The dashboard's routes over the learners of ``registry()``."""
    data = DashboardData(registry, stream_lag=stream_lag)
    shell = _file("dashboard.html")
    files = {name: _file(name) for name in _STATIC}

    def page(title: str) -> HTMLResponse:
        body = (shell.replace("{{title}}", html.escape(title))
                .replace("{{poll_s}}", html.escape(json.dumps(poll_s)))
                .replace("{{base}}", PREFIX))
        return HTMLResponse(body, headers=_HEADERS)

    async def index(request: Request) -> Response:
        return page("qortex-mcp: learners")

    async def learner(request: Request) -> Response:
        return page(f"qortex-mcp: {request.path_params['name']}")

    async def static(request: Request) -> Response:
        name = request.path_params["file"]
        if name not in files:
            return Response("not found", status_code=404, media_type="text/plain")
        return Response(files[name], media_type=_STATIC[name], headers=_HEADERS)

    @_json
    async def learners(request: Request) -> dict[str, Any]:
        return await data.learners(_int(request, "offset", 0), _int(request, "limit", 50))

    @_json
    async def arms(request: Request) -> dict[str, Any]:
        return await data.arms(request.path_params["name"], _int(request, "offset", 0),
                               _int(request, "limit", 50),
                               request.query_params.get("sort", "estimate"))

    @_json
    async def series(request: Request) -> dict[str, Any]:
        return await data.series(request.path_params["name"],
                                 _int(request, "bucket_s", 60))

    return [
        Route(PREFIX, index, methods=["GET"]),
        Route(PREFIX + "/", index, methods=["GET"]),
        Route(PREFIX + "/learners/{name}", learner, methods=["GET"]),
        Route(PREFIX + "/static/{file}", static, methods=["GET"]),
        Route(PREFIX + "/api/learners", learners, methods=["GET"]),
        Route(PREFIX + "/api/learners/{name}", arms, methods=["GET"]),
        Route(PREFIX + "/api/learners/{name}/series", series, methods=["GET"]),
    ]
