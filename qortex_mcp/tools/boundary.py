"""The tool boundary: strict arguments in, one stable error shape out, one log event per call.

The MCP SDK validates tool arguments in lax mode (``"0.5"`` becomes ``0.5``), ignores
unknown arguments, and prefixes every tool error with ``Error executing tool <name>:``.
Agents need the opposite: refusals they can act on, starting with a stable code. So each
server carrying qortex tools gets one ``ToolBoundary`` middleware that, for those tools only:

1. validates the raw arguments in pydantic's strict mode with unknown arguments forbidden,
   and answers a failure itself (``INVALID_ARGUMENT: ...``) before the tool runs;
2. lets the SDK run the tool; a ``QortexError`` raised inside is turned into a ``ToolError``
   by ``guarded`` (which also records it here), and the boundary rewrites the SDK's text
   to ``CODE: message`` and adds ``_meta["qortex-mcp/error"]`` (code, message, retryable,
   and ``retry_after_s`` for ``RATE_LIMITED``);
3. answers an unexpected exception as ``INTERNAL_ERROR`` without any detail, and logs it
   (``tool_crashed``: its type and traceback) on stderr;
4. logs one ``tool_call`` event: tool, learner, latency_ms, code, and tells its
   ``CallObserver`` (the Prometheus metrics, when serving them) the same facts.

``invoke`` runs a guarded tool without MCP (the REST API): the same strict arguments, the
same tool function, the same codes, the same observer.

It also counts the requests in progress (``IN_FLIGHT``): the stdio transport waits for them
to answer before it stops on a signal.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import json
import time
import typing
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from types import CodeType
from typing import Any, Final, ParamSpec, Protocol, TypeVar

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from qortex_mcp.errors import (
    InvalidInput,
    InvalidOutcome,
    InvalidReward,
    QortexError,
    RateLimited,
    UnknownTool,
    preview,
)
from qortex_mcp.logging import get_logger

__all__ = [
    "ERROR_META_KEY",
    "IN_FLIGHT",
    "CallObserver",
    "InFlight",
    "Invoked",
    "Observers",
    "ToolBoundary",
    "guarded",
]

log = get_logger("qortex_mcp.tools")

ERROR_META_KEY: Final = "qortex-mcp/error"
_INTERNAL: Final = "INTERNAL_ERROR"
_STRICT: Final = ConfigDict(extra="forbid", strict=True)
# Custom error types raised by parameter validators that deserve a more specific code.
_CODES: Final[Mapping[str, type[InvalidInput]]] = {"outcome_value": InvalidReward,
                                                   "outcome_word": InvalidOutcome}

P = ParamSpec("P")
R = TypeVar("R")


class InFlight:
    """How many requests this process's servers are handling right now."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0


IN_FLIGHT: Final = InFlight()


class CallObserver(Protocol):
    """Told about every guarded tool call once it has answered (metrics, traces).

    ``structured`` is the answer's structured content (None for an error); ``seconds`` the
    time from arguments in to answer out. Must be cheap: it runs on every call.
    """

    def tool_call(self, tool: str, arguments: Mapping[str, Any],
                  structured: Mapping[str, Any] | None, code: str, seconds: float) -> None: ...


class Observers:
    """Several observers told in turn (metrics, resource notifications)."""

    def __init__(self, *observers: CallObserver | None) -> None:
        self.observers = [o for o in observers if o is not None]

    def tool_call(self, tool: str, arguments: Mapping[str, Any],
                  structured: Mapping[str, Any] | None, code: str, seconds: float) -> None:
        for observer in self.observers:
            observer.tool_call(tool, arguments, structured, code, seconds)


@dataclass(frozen=True)
class Invoked:
    """What ``ToolBoundary.invoke`` answers: the structured content, or the error."""

    code: str
    """``OK`` or the stable error code."""
    structured: dict[str, Any] | None = None
    error: QortexError | None = None


@dataclass
class _Call:
    error: QortexError | None = None
    crash: Exception | None = None
    """An unexpected exception of the tool body: logged with its traceback, never sent."""


_current: ContextVar[_Call | None] = ContextVar("qortex_tool_call", default=None)


def guarded(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Raise every ``QortexError`` of a tool body as a ``ToolError`` carrying its code."""

    @functools.wraps(fn)
    async def tool(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except QortexError as exc:
            call = _current.get()
            if call is not None:
                call.error = exc
            raise ToolError(str(exc)) from exc
        except Exception as exc:
            call = _current.get()
            if call is not None:
                call.crash = exc
            raise

    return tool


def arguments_model(name: str, fn: Callable[..., Any]) -> type[BaseModel]:
    """A strict model of ``fn``'s parameters (the same annotations the SDK reads)."""
    hints = typing.get_type_hints(fn, include_extras=True)
    fields: dict[str, Any] = {}
    for param in inspect.signature(fn).parameters.values():
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[param.name] = (hints[param.name], default)
    model: type[BaseModel] = create_model(f"{name}StrictArguments", __config__=_STRICT, **fields)
    return model


def _where(loc: tuple[int | str, ...], mappings: frozenset[str]) -> str:
    """``candidates[3].token_cost``, ``outcomes['a']``: the path as an agent would write it."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not out:
            out = part
        elif part.isidentifier() and loc[0] not in mappings:
            out += f".{part}"
        else:
            out += f"[{preview(part)}]"
    return out


def _shown(value: object) -> str:
    """A refused value as the agent sent it: JSON where it can be, escaped and cut short."""
    if isinstance(value, str):
        return preview(value)
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=True)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 64 else text[:64] + "..."


def describe(exc: ValidationError, params: list[str], mappings: frozenset[str]) -> InvalidInput:
    """One line an agent can act on, from pydantic's errors (the first one, and a count)."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc, kind = tuple(first["loc"]), first["type"]
    if kind == "missing" and len(loc) == 1:
        text = f"missing required argument {preview(loc[0])}"
    elif kind == "extra_forbidden" and len(loc) == 1:
        text = f"unknown argument {preview(loc[0])}; this tool takes {', '.join(params)}"
    else:
        msg = str(first["msg"])
        text = (f"{_where(loc, mappings)}: {msg[:1].lower()}{msg[1:]}, "
                f"got {_shown(first.get('input'))}")
    if len(errors) > 1:
        text += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return _CODES.get(kind, InvalidInput)(text)


def _preparse(raw: Mapping[str, Any], containers: frozenset[str]) -> dict[str, Any]:
    """Decode list and object arguments that arrive JSON-encoded as strings.

    Some MCP hosts send ``candidates='["a", "b"]'``; the SDK decodes those too, so this
    keeps the strict check in step with what the tool would receive. Scalars are never
    decoded: ``"0.5"`` stays a string and is refused.
    """
    out = dict(raw)
    for key in containers & out.keys():
        value = out[key]
        if isinstance(value, str):
            try:
                decoded = json.loads(value)
            except ValueError:
                continue
            if isinstance(decoded, list | dict):
                out[key] = decoded
    return out


@dataclass(frozen=True)
class _Spec:
    model: type[BaseModel]
    params: list[str]
    lists: frozenset[str]
    mappings: frozenset[str]
    learner: str | None
    """The learner a call names when it omits ``learner`` (for the log)."""

    @property
    def containers(self) -> frozenset[str]:
        return self.lists | self.mappings


def _error_result(exc: QortexError, result: Mapping[str, Any] | None = None) -> dict[str, Any]:
    meta = dict(result.get("_meta") or {}) if result else {}
    meta[ERROR_META_KEY] = {"code": exc.code, "message": exc.message,
                            "retryable": exc.retryable}
    if isinstance(exc, RateLimited):  # when the same call will be accepted
        meta[ERROR_META_KEY]["retry_after_s"] = exc.retry_after_s
    base = dict(result) if result else {}
    return {**base, "content": [{"type": "text", "text": str(exc)}], "isError": True,
            "_meta": meta}


def _spec(name: str, fn: Callable[..., Any]) -> _Spec:
    model = arguments_model(name, fn)
    props = model.model_json_schema().get("properties", {})

    def typed(kind: str) -> frozenset[str]:
        return frozenset(key for key, prop in props.items()
                         if kind in {b.get("type") for b in prop.get("anyOf", [prop])})

    learner = model.model_fields.get("learner")
    default = learner.default if learner is not None else None
    return _Spec(model, list(model.model_fields), typed("array"), typed("object"),
                 default if isinstance(default, str) else None)


# Built once per tool name and function code, whatever closure carries it: building pydantic
# models is most of what building a server costs, and tests build many servers.
_SPECS: dict[tuple[str, CodeType], _Spec] = {}


class _Internal(QortexError):
    code = _INTERNAL


class ToolBoundary:
    """Server middleware guarding the tools registered with ``add`` (see module doc)."""

    def __init__(self, listed: Callable[[], Awaitable[Sequence[Any]]] | None = None, *,
                 observer: CallObserver | None = None) -> None:
        """``listed`` returns the server's tools (``MCPServer.list_tools``): a call naming
        none of them is answered ``UNKNOWN_TOOL`` here, before the SDK runs (with no
        ``listed``, only unguarded names pass through to the SDK). ``observer`` is told
        about every guarded call."""
        self._specs: dict[str, _Spec] = {}
        self._listed = listed
        self._fns: dict[str, Callable[..., Awaitable[Any]]] = {}
        self._bases: dict[str, str] = {}
        self.observer = observer
        self.tracer: Any = None
        """An OpenTelemetry tracer: ``invoke`` (REST) then opens a ``tools/call`` span."""

    def add(self, name: str, fn: Callable[..., Any], base: str | None = None) -> None:
        """Guard the tool ``name`` whose function is ``fn`` (``base``: its unprefixed name)."""
        key = (name, fn.__code__)
        spec = _SPECS.get(key)
        if spec is None:
            spec = _SPECS[key] = _spec(name, fn)
        self._specs[name] = spec
        self._fns[name] = fn
        self._bases[name] = base or name

    def tool_for(self, base: str) -> str | None:
        """The registered name of the tool whose unprefixed name is ``base``."""
        return next((name for name, b in self._bases.items() if b == base), None)

    def arguments_schema(self, name: str, ref_template: str = "#/$defs/{model}"
                         ) -> dict[str, Any]:
        """The JSON schema of the strict arguments of tool ``name``."""
        schema = self._specs[name].model.model_json_schema(ref_template=ref_template)
        schema["additionalProperties"] = False
        return schema

    async def invoke(self, name: str, raw: object) -> Invoked:
        """Run the guarded tool ``name`` with JSON ``raw`` arguments, as a tool call would.

        The arguments pass the same strict check, the same function runs, errors get the
        same codes (an unexpected one is logged and answered ``INTERNAL_ERROR``), and the
        observer is told. Nothing about MCP is involved.
        """
        if self.tracer is None:
            return await self._invoke(name, raw)
        with self.tracer.start_as_current_span(f"tools/call {name}", attributes={
                "mcp.method.name": "tools/call", "gen_ai.tool.name": name,
                "gen_ai.operation.name": "execute_tool", "network.transport": "tcp"}) as span:
            done = await self._invoke(name, raw)
            if done.error is not None:
                span.set_attribute("error.type", "tool_error")  # as the SDK marks MCP calls
            return done

    async def _invoke(self, name: str, raw: object) -> Invoked:
        spec, fn = self._specs[name], self._fns[name]
        started = time.perf_counter()
        structured: dict[str, Any] | None = None
        error: QortexError | None = None
        try:
            if not isinstance(raw, Mapping):
                raise InvalidInput("the body must be a JSON object")
            try:
                args = spec.model.model_validate(_preparse(raw, spec.containers))
            except ValidationError as exc:
                raise describe(exc, spec.params, spec.mappings) from None
            call = _Call()
            token = _current.set(call)
            try:
                result = await fn(**{key: getattr(args, key) for key in spec.params})
            except ToolError:
                if call.error is None:  # guarded always records it: a bug if not
                    raise
                raise call.error from None
            except Exception as exc:
                log.error("tool_crashed", tool=name, error_type=type(exc).__name__,
                          exc_info=exc)
                raise _Internal("unexpected server error; the server log has the details") \
                    from None
            finally:
                _current.reset(token)
            structured = dict(result.structured_content or {})
        except QortexError as exc:
            error = exc
        code = "OK" if error is None else error.code
        seconds = time.perf_counter() - started
        learner = raw.get("learner", spec.learner) if isinstance(raw, Mapping) else None
        log.info("tool_call", tool=name, learner=learner if isinstance(learner, str) else None,
                 latency_ms=round(seconds * 1e3, 3), code=code, via="rest")
        if self.observer is not None:
            self.observer.tool_call(self._bases[name], raw if isinstance(raw, Mapping) else {},
                                    structured, code, seconds)
        return Invoked(code, structured, error)

    async def __call__(
        self, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        IN_FLIGHT.count += 1
        try:
            return await self._handle(ctx, call_next)
        finally:
            IN_FLIGHT.count -= 1

    async def _handle(
        self, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        params = ctx.params
        spec = None
        if ctx.method == "tools/list":
            return self._strict_schemas(await call_next(ctx))
        if ctx.method == "tools/call" and params is not None:
            spec = self._specs.get(str(params.get("name")))
            if spec is None and not await self._exists(params.get("name")):
                return self._unknown_tool(params.get("name"), ctx)
        if spec is None or params is None:
            return await call_next(ctx)
        name = str(params["name"])
        raw = params.get("arguments") or {}
        started = time.perf_counter()
        code = "CANCELLED"
        result: dict[str, Any] | None = None
        try:
            result, code = await self._call(ctx, call_next, name, spec, raw)
            return result
        finally:
            seconds = time.perf_counter() - started
            learner = raw.get("learner", spec.learner) if isinstance(raw, Mapping) else None
            log.info("tool_call", tool=name,
                     learner=learner if isinstance(learner, str) else None,
                     latency_ms=round(seconds * 1e3, 3), code=code)
            if self.observer is not None:
                structured = result.get("structuredContent") if code == "OK" and result else None
                self.observer.tool_call(self._bases.get(name, name),
                                        raw if isinstance(raw, Mapping) else {},
                                        structured if isinstance(structured, dict) else None,
                                        code, seconds)

    def _strict_schemas(self, result: HandlerResult) -> HandlerResult:
        """Publish what the boundary enforces: unknown arguments are refused, so each
        guarded tool's input schema says ``additionalProperties: false``."""
        data = _wire(result)
        if data is None:
            return result
        for tool in data.get("tools") or ():
            schema = tool.get("inputSchema") if isinstance(tool, dict) else None
            if isinstance(schema, dict) and tool.get("name") in self._specs:
                schema["additionalProperties"] = False
        return data

    async def _exists(self, name: object) -> bool:
        """Whether the server has a tool ``name`` (its own or a host's), asked of the
        server's tool list rather than read from the SDK's error text."""
        if self._listed is None:
            return True
        return any(getattr(tool, "name", None) == name for tool in await self._listed())

    def _unknown_tool(
        self, name: object, ctx: ServerRequestContext[Any, Any]
    ) -> HandlerResult:
        """A name the server has no tool for: the SDK would answer bare text; answer with
        a code, ``_meta`` and the nearest guarded name, like every other error."""
        close = difflib.get_close_matches(str(name), list(self._specs), n=1)
        hint = f"did you mean {close[0]!r}?" if close else "list the tools for the names"
        error = UnknownTool(f"this server has no tool named {preview(name)}; {hint}")
        log.info("tool_call", tool=preview(name), learner=None, latency_ms=0.0,
                 code=error.code)
        return _refusal(error, ctx)[0]

    async def _call(
        self, ctx: ServerRequestContext[Any, Any], call_next: CallNext, name: str, spec: _Spec,
        raw: object,
    ) -> tuple[dict[str, Any], str]:
        """The wire result and its code (``OK`` or the error code)."""
        if not isinstance(raw, Mapping):
            return _refusal(InvalidInput("arguments must be a JSON object"), ctx)
        try:
            spec.model.model_validate(_preparse(raw, spec.containers))
        except ValidationError as exc:
            return _refusal(describe(exc, spec.params, spec.mappings), ctx)
        call = _Call()
        token = _current.set(call)
        try:
            result = dict(await call_next(ctx) or {})
        finally:
            _current.reset(token)
        if not result.get("isError"):
            return result, "OK"
        error = call.error
        if error is None:
            # Not a refusal of ours: the tool body crashed (``guarded`` kept the exception)
            # or the SDK failed the call around it although the strict arguments passed.
            # Either is a defect: the log gets the exception's type and traceback, or the
            # SDK's text (stderr, never stdout); the client learns only that it happened.
            # Decided by what ``guarded`` saw, never by parsing the SDK's message.
            crash = call.crash
            log.error("tool_crashed", tool=name,
                      error_type=type(crash).__name__ if crash is not None else None,
                      sdk_text=None if crash is not None else "".join(
                          c.get("text", "") for c in result.get("content", [])),
                      exc_info=crash if crash is not None else False)
            error = _Internal("unexpected server error; the server log has the details")
        return _error_result(error, result), error.code


def _wire(result: HandlerResult) -> dict[str, Any] | None:
    """A handler's result as its wire dict (camelCase), whatever form it came in."""
    if isinstance(result, BaseModel):
        dumped: dict[str, Any] = result.model_dump(by_alias=True, mode="json",
                                                   exclude_none=True)
        return dumped
    return result if isinstance(result, dict) else None


def _refusal(
    exc: QortexError, ctx: ServerRequestContext[Any, Any]
) -> tuple[dict[str, Any], str]:
    """An error answered before the tool runs: it carries its own envelope."""
    result = _error_result(exc)
    if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
        result["resultType"] = "complete"
    return result, exc.code
