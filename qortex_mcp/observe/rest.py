"""The REST API under ``/api/learning/``: the MCP tools over plain JSON.

Each route is one tool call through ``ToolBoundary.invoke``: the same strict arguments, the
same tool function (one library call), the same stable error codes, the same metrics. A
route only moves values: the path's ``{name}`` becomes ``learner``, query strings become
arguments (digits read as integers, ``context`` and ``arm_ids`` as JSON), a POST body is the
arguments object. Errors answer ``{"error": {"code", "message", "retryable"}}`` with an
HTTP status chosen by code (``STATUS``); a refused call changes nothing in the store.

=====================================  ==================
``GET  metrics``                       ``qortex_metrics``
``GET  learners``                      ``qortex_status``
``GET  learners/{name}/arms``          ``qortex_posteriors``
``POST learners/{name}/select``        ``qortex_select``
``POST learners/{name}/feedback``      ``qortex_feedback``
``GET  openapi.json``                  this API, as OpenAPI 3.1
=====================================  ==================
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from qortex_mcp import __version__
from qortex_mcp.errors import InvalidInput, QortexError, RateLimited
from qortex_mcp.schemas import (
    FeedbackOutput,
    MetricsOutput,
    PosteriorsOutput,
    SelectOutput,
    StatusOutput,
)
from qortex_mcp.tools.boundary import Invoked, ToolBoundary

__all__ = ["PREFIX", "STATUS", "error_response", "openapi", "rest_routes", "status_of"]

PREFIX: Final = "/api/learning"
STATUS: Final[Mapping[str, int]] = {
    "OK": 200, "UNKNOWN_LEARNER": 404, "UNKNOWN_ARM": 404, "UNKNOWN_TOOL": 404,
    "SELECTION_CONFLICT": 409, "SELECTION_EXPIRED": 410, "RATE_LIMITED": 429,
    "LIMIT_EXCEEDED": 429, "CLOSED": 503, "STORE_UNAVAILABLE": 503, "STORE_BUSY": 503,
    "STORE_FULL": 507, "INTERNAL_ERROR": 500,
}
"""HTTP status per error code; any other code (bad input) is 400, other store errors 503."""
_JSON_QUERY: Final = frozenset({"context", "arm_ids"})

# route: (method, path, tool base name, summary, output model, path-bound learner)
_ROUTES: Final = (
    ("get", "/metrics", "metrics", "Selections, feedback and reward rates per learner",
     MetricsOutput, False),
    ("get", "/learners", "status", "Learners with their counts, and where the store is",
     StatusOutput, False),
    ("get", "/learners/{name}/arms", "posteriors",
     "A page of a learner's arms: estimate, 95% credible interval, pulls", PosteriorsOutput,
     True),
    ("post", "/learners/{name}/select", "select", "Choose among candidates",
     SelectOutput, True),
    ("post", "/learners/{name}/feedback", "feedback", "Report outcomes for a selection",
     FeedbackOutput, True),
)


def status_of(code: str) -> int:
    if code in STATUS:
        return STATUS[code]
    return 503 if code.startswith("STORE") or code in ("CORRUPT_STATE", "SCHEMA_TOO_NEW") \
        else 400


def error_response(exc: QortexError) -> JSONResponse:
    """The JSON answer of a refused call: ``{"error": {code, message, retryable}}``."""
    body: dict[str, Any] = {"code": exc.code, "message": exc.message,
                            "retryable": exc.retryable}
    headers = {}
    if isinstance(exc, RateLimited):
        body["retry_after_s"] = exc.retry_after_s
        headers["Retry-After"] = str(max(1, round(exc.retry_after_s)))
    return JSONResponse({"error": body}, status_code=status_of(exc.code), headers=headers)


def _query_value(key: str, value: str, integers: frozenset[str]) -> object:
    """A query string as the JSON value a tool argument would be: JSON for ``context`` and
    ``arm_ids``, an integer for an integer argument written in digits, else the string
    (which the strict check then refuses with the argument's name when it is wrong)."""
    if key in _JSON_QUERY:
        try:
            return json.loads(value)
        except ValueError:
            return value
    if key in integers and value.isdigit() and len(value) < 19:
        return int(value)
    return value


def _integers(schema: Mapping[str, Any]) -> frozenset[str]:
    out = set()
    for key, prop in schema.get("properties", {}).items():
        if "integer" in {p.get("type") for p in prop.get("anyOf", [prop])}:
            out.add(key)
    return frozenset(out)


class _Api:
    def __init__(self, boundary: ToolBoundary) -> None:
        self.boundary = boundary
        self._integers: dict[str, frozenset[str]] = {}

    def tool(self, base: str) -> str:
        name = self.boundary.tool_for(base)
        if name is None:
            raise _Missing(base)
        return name

    async def call(self, request: Request, base: str, path_learner: bool) -> Response:
        try:
            name = self.tool(base)
        except _Missing:
            return error_response(_Unexposed(f"this server does not expose the {base} tool"))
        args: dict[str, Any]
        if request.method == "POST":
            try:
                raw = json.loads(await request.body() or b"{}")
            except ValueError:
                return error_response(InvalidInput("the body must be a JSON object"))
            if not isinstance(raw, dict):
                return error_response(InvalidInput("the body must be a JSON object"))
            args = raw
        else:
            integers = self._integers.get(name)
            if integers is None:
                integers = self._integers[name] = _integers(
                    self.boundary.arguments_schema(name))
            args = {k: _query_value(k, v, integers) for k, v in request.query_params.items()}
        if path_learner:
            if "learner" in args:
                return error_response(InvalidInput("the learner is named by the path; leave "
                                           "'learner' out of the arguments"))
            args["learner"] = request.path_params["name"]
        done: Invoked = await self.boundary.invoke(name, args)
        if done.error is not None:
            return error_response(done.error)
        return JSONResponse(done.structured)

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(openapi(self.boundary))


class _Missing(Exception):
    pass


class _Unexposed(QortexError):
    code = "UNKNOWN_TOOL"


def rest_routes(boundary: ToolBoundary) -> list[Route]:
    """The routes of the REST API (paths include ``PREFIX``)."""
    api = _Api(boundary)
    routes = [Route(PREFIX + "/openapi.json", api.openapi, methods=["GET"])]
    for method, path, base, _, _, path_learner in _ROUTES:

        async def endpoint(request: Request, base: str = base,
                           path_learner: bool = path_learner) -> Response:
            return await api.call(request, base, path_learner)

        routes.append(Route(PREFIX + path, endpoint, methods=[method.upper()]))
    return routes


_ERROR_SCHEMA: Final = {
    "type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["code", "message", "retryable"],
        "properties": {"code": {"type": "string"}, "message": {"type": "string"},
                       "retryable": {"type": "boolean"},
                       "retry_after_s": {"type": "number"}}}},
}
_REF: Final = "#/components/schemas/{model}"


def openapi(boundary: ToolBoundary) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the routes the boundary's tools back."""
    components: dict[str, Any] = {"Error": _ERROR_SCHEMA}
    paths: dict[str, Any] = {}
    for method, path, base, summary, output, path_learner in _ROUTES:
        name = boundary.tool_for(base)
        if name is None:
            continue
        schema = boundary.arguments_schema(name, _REF)
        components.update(schema.pop("$defs", {}))
        out = output.model_json_schema(ref_template=_REF)
        components.update(out.pop("$defs", {}))
        components[output.__name__] = out
        props: dict[str, Any] = dict(schema.get("properties", {}))
        required = [r for r in schema.get("required", []) if r != "learner"]
        params: list[dict[str, Any]] = []
        if path_learner:
            params.append({"name": "name", "in": "path", "required": True,
                           "schema": props.pop("learner")})
        op: dict[str, Any] = {
            "summary": summary, "operationId": base,
            "description": f"The `{name}` tool over REST.",
            "responses": {
                "200": {"description": "the tool's answer", "content": {"application/json": {
                    "schema": {"$ref": _REF.format(model=output.__name__)}}}},
                "default": {"description": "refused: the stable code and a one-line message",
                            "content": {"application/json": {
                                "schema": {"$ref": "#/components/schemas/Error"}}}},
            },
        }
        if method == "post":
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "properties": props, "required": required,
                "additionalProperties": False}}}}
        else:
            for key, prop in props.items():
                params.append({"name": key, "in": "query", "required": key in required,
                               "schema": prop if key not in _JSON_QUERY else {"type": "string"},
                               "description": prop.get("description", "") + (
                                   " (JSON text)" if key in _JSON_QUERY else "")})
        if params:
            op["parameters"] = params
        paths[PREFIX + path] = {method: op}
    return {"openapi": "3.1.0",
            "info": {"title": "qortex-mcp learning API", "version": __version__},
            "paths": paths, "components": {"schemas": components}}
