"""The commands behind ``qortex-mcp``: each takes the parsed flags and settings and returns
an exit code (see ``qortex_mcp.cli``). Human output goes to stdout, except while serving."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TextIO

import anyio

from qortex_mcp.config import Settings
from qortex_mcp.errors import (
    InvalidContext,
    InvalidInput,
    QortexError,
    UnknownLearner,
    preview,
)
from qortex_mcp.learning import LearnerConfig, LearnerRegistry, LearningStore, SelectionSigner
from qortex_mcp.learning.stores.factory import configured_store
from qortex_mcp.learning.transfer import export_chunks, import_file
from qortex_mcp.logging import get_logger
from qortex_mcp.runtime import close_registry, open_registry

if TYPE_CHECKING:
    from qortex_mcp.observe.metrics import QortexMetrics
    from qortex_mcp.observe.streams import StreamLagSource

__all__ = ["run"]

log = get_logger("qortex_mcp.cli")


async def run(args: argparse.Namespace, settings: Settings) -> int:
    command = args.command or "serve"
    if command == "serve":
        return await serve(args, settings)
    if command == "dashboard":
        return await dashboard(args, settings)
    out = sys.stdout
    if command == "ingest":
        return await ingest(args, settings, out)
    if command != "import" and _nothing_stored(settings):
        # export's stdout is the data, so its complaint goes to stderr
        print(f"store: {settings.store}\nlocation: {settings.location()}\n"
              "no data: nothing has been stored here yet",
              file=sys.stderr if command == "export" else out)
        if command == "status" and getattr(args, "ingest", None):
            await stream_lag(args.ingest, args, out)
        return 0 if command == "status" else 1
    if command == "status":
        code = await status(settings, out, getattr(args, "limit", 50))
        if getattr(args, "ingest", None):
            await stream_lag(args.ingest, args, out)
        return code
    if command == "inspect":
        return await inspect(settings, args.learner, args.context, args.limit, out)
    if command == "decisions":
        return await decisions(settings, args.learner, args.after, args.limit, out)
    if command == "export":
        return await export(settings, args.learner, args.output, out)
    if command == "import":
        return await import_(settings, args.file, out)
    return await replay(settings, args.learners, out)


async def serve(args: argparse.Namespace, settings: Settings) -> int:
    """Serve until stdin closes or a signal arrives; the registry is closed before exit."""
    # Imported here: the other commands never need the MCP server (a faster CLI).
    from qortex_mcp.http_server import check_binding, serve_http
    from qortex_mcp.server import build_server_and_runtime, tool_names
    from qortex_mcp.stdio import serve_stdio
    from qortex_mcp.tools.boundary import Observers

    transport = getattr(args, "transport", "stdio")
    host, port = getattr(args, "host", "127.0.0.1"), getattr(args, "port", 8765)
    tool_names(settings)  # refuse a bad QORTEX_TOOLS before opening anything
    if transport == "http":
        check_binding(host, settings.http_token)
    metrics = _metrics(settings) if transport == "http" else None
    tracer = _tracer(settings)
    registry = await open_registry(
        settings, wrap=None if metrics is None else metrics.timed_store)
    try:
        spans = None
        if tracer is not None:
            from qortex_mcp.observe.tracing import SpanAttributes

            spans = SpanAttributes()
        server, runtime = build_server_and_runtime(settings, registry=registry,
                                                   observer=Observers(metrics, spans))
        if runtime.boundary is not None:
            runtime.boundary.tracer = tracer
        if transport == "http":
            from qortex_mcp.observe.app import observe_app

            if metrics is not None:
                metrics.use_selection_clock(_selection_clock(registry))
            web = observe_app(lambda: registry, boundary=runtime.boundary, metrics=metrics,
                              dashboard_poll_s=settings.dashboard_poll_s,
                              stream_lag=_stream_lag(settings))
            reason = await serve_http(server, host=host, port=port, token=settings.http_token,
                                      path=getattr(args, "path", "/mcp"), observe=web)
        else:
            reason = await serve_stdio(server)
    finally:
        if metrics is not None:
            await metrics.aclose()
        await close_registry(registry)
    log.info("server_stopped", reason=reason)
    return 0


def store_from_url(url: str) -> LearningStore:
    """The store ``url`` names: ``sqlite:///PATH`` or a path to a ``.db`` file,
    ``json:///PATH``, ``postgresql://...[?schema=NAME]`` (``postgres://`` too). A file must
    exist already.

    Raises:
        ConfigError: an unknown scheme, or no store at that path.
    """
    from pathlib import Path

    from qortex_mcp.errors import ConfigError
    from qortex_mcp.learning import JsonLearningStore, SqliteLearningStore

    scheme, sep, rest = url.partition("://")
    if scheme in ("postgresql", "postgres") and sep:
        from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

        from qortex_mcp.learning.postgres import PostgresLearningStore

        # ?schema=NAME picks the schema (the server's default is "qortex"); the rest of
        # the URL goes to the driver as it is.
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        schema = next((v for k, v in query if k == "schema"), "qortex")
        dsn = urlunsplit(parts._replace(query=urlencode([(k, v) for k, v in query
                                                          if k != "schema"])))
        try:
            return PostgresLearningStore(dsn, schema=schema)
        except ValueError as exc:
            raise ConfigError(f"--store: {exc}") from None
    if not sep:
        scheme, rest = ("sqlite", url) if url.endswith((".db", ".sqlite")) else ("", url)
    if scheme in ("sqlite", "json"):
        path = Path(rest).expanduser()
        if not path.is_file():
            raise ConfigError(f"no {scheme} store at {path}")
        return SqliteLearningStore(path) if scheme == "sqlite" else JsonLearningStore(path)
    raise ConfigError(f"--store must be a store kind or a URL (sqlite:///PATH, json:///PATH, "
                      f"postgresql://...), got {url[:64]!r}")


def _stream_lag(settings: Settings) -> list[StreamLagSource]:
    """The backlog source of the stream consumers ``QORTEX_STREAM_LAG`` names, if any."""
    if not settings.stream_lag:
        return []
    from qortex_mcp.observe.streams import ingest_lag_source

    return [ingest_lag_source(settings.stream_lag)]


async def dashboard(args: argparse.Namespace, settings: Settings) -> int:
    """Serve the dashboard pages over a store until a signal arrives (reads only)."""
    import secrets

    from qortex_mcp.http_server import check_binding, serve_app
    from qortex_mcp.observe.app import observe_app
    from qortex_mcp.runtime import server_learner_options

    host, port = args.host, args.port
    check_binding(host, settings.http_token)
    raw = getattr(args, "store", None)
    if raw is not None and raw not in ("sqlite", "json", "memory", "postgres"):
        store = store_from_url(raw)
    else:
        if _nothing_stored(settings):
            from qortex_mcp.errors import ConfigError

            raise ConfigError(f"no store at {settings.location()}; pass --store URL")
        store = configured_store(settings)
    # Never signs anything: a throwaway key, so the dashboard writes no key to the store.
    registry = LearnerRegistry(store, SelectionSigner([secrets.token_bytes(32)]),
                               options=server_learner_options(settings))
    await registry.open()
    try:
        app = observe_app(lambda: registry, dashboard_poll_s=settings.dashboard_poll_s,
                          stream_lag=_stream_lag(settings))
        reason = await serve_app(app, host=host, port=port, token=settings.http_token,
                                 path="/dashboard")
    finally:
        await close_registry(registry)
    log.info("dashboard_stopped", reason=reason)
    return 0


def _metrics(settings: Settings) -> QortexMetrics | None:
    """The metrics of an HTTP server, or None (``QORTEX_METRICS=0``, or the ``observe``
    extra is not installed: said once on stderr)."""
    from qortex_mcp.observe import metrics_available

    if not settings.metrics:
        return None
    if not metrics_available():
        log.warning("metrics_unavailable",
                    hint="pip install 'qortex-mcp[observe]' to serve GET /metrics")
        return None
    from qortex_mcp.observe.metrics import QortexMetrics

    return QortexMetrics(per_arm=settings.metrics_per_arm)


def _tracer(settings: Settings) -> Any:
    if not settings.otel:
        return None  # nothing of OpenTelemetry is imported or configured
    from qortex_mcp.observe.tracing import configure_tracing

    return configure_tracing(True)


def _selection_clock(registry: LearnerRegistry) -> Callable[[str, str], float | None]:
    def issued_at(selection_id: str, learner: str) -> float | None:
        try:  # already verified by the feedback that quoted it (a cache hit)
            return registry.signer.verify(selection_id, learner, ttl_s=0).issued_ms / 1000
        except QortexError:
            return None

    return issued_at


def _nothing_stored(settings: Settings) -> bool:
    """True when looking would only create an empty store (so we do not look)."""
    if settings.store == "sqlite":
        return not settings.sqlite_path.exists()
    if settings.store == "json":
        return not settings.json_path.exists()
    return settings.store == "memory"


@asynccontextmanager
async def _store(settings: Settings) -> AsyncIterator[LearningStore]:
    store = configured_store(settings)
    try:
        await store.initialize()
        yield store
    finally:
        await store.close()


@asynccontextmanager
async def _registry(store: LearningStore, settings: Settings) -> AsyncIterator[LearnerRegistry]:
    # Inspection never signs or checks selection ids: a throwaway key spares the real one.
    registry = LearnerRegistry(store, SelectionSigner.random(), options=settings.learners,
                               owns_store=False)
    try:
        yield await registry.open()
    finally:
        await registry.close()


def _when(t: float | None) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(t))


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], out: TextIO) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:],
                                                                        strict=True)]
        print("  ".join(cells).rstrip(), file=out)


async def status(settings: Settings, out: TextIO, limit: int = 50) -> int:
    """Where state lives, the server's limits, and the first ``limit`` learners (by name)."""
    async with _store(settings) as store:
        info = await store.info()
        learners = await store.learners()
    print(f"store: {info.kind}\nlocation: {info.location}\nschema version: "
          f"{info.schema_version}", file=out)
    if not learners:
        print("no data: no learner has been used yet", file=out)
        print(f"limits: {_limits(settings)}", file=out)
        return 0
    shown = learners[:limit]
    print(f"learners: {len(learners)}", file=out)
    _table(["learner", "arms", "selections", "feedback", "last update"],
           [[s.name, str(s.arms), str(s.selections), str(s.feedback), _when(s.last_update)]
            for s in shown], out)
    if len(learners) > len(shown):
        print(f"({len(learners) - len(shown)} more learner(s); raise --limit)", file=out)
    print(f"limits: {_limits(settings)}", file=out)
    return 0


def _limits(settings: Settings) -> str:
    """The server's resource limits in one line (``[defaults]`` of the TOML file win)."""
    defaults = settings.learner_options("*")

    def cap(option: str, value: int) -> str:
        value = defaults.get(option, value) or 0
        return "no cap" if value == 0 else f"{value}/min"

    return (f"{settings.max_open_learners} open learners, {settings.memory_budget_mb} MiB "
            f"learner memory, feedback {cap('feedback_per_minute', settings.feedback_per_minute)}"
            f" per learner and "
            f"{cap('feedback_per_arm_per_minute', settings.feedback_per_arm_per_minute)}"
            " per arm")


async def inspect(settings: Settings, name: str, context: str | None, limit: int,
                  out: TextIO) -> int:
    try:
        ctx = None if context is None else json.loads(context)
    except ValueError:
        raise InvalidContext("--context must be a JSON object") from None
    async with _store(settings) as store, _registry(store, settings) as registry:
        learner = await registry.get(name, create=False)
        arms = await learner.posteriors(None, ctx, limit=limit)
        metrics = await learner.metrics()
    scope = "global" if ctx is None else json.dumps(ctx, sort_keys=True)
    print(f"learner {name!r}: {len(metrics.arms)} arm(s), {metrics.feedback} feedback(s), "
          f"context {scope}", file=out)
    if not arms:
        print("no data: this learner has no arms yet", file=out)
        return 0
    _table(["arm", "mean", "95% CI", "pulls", "reward rate", "selections"],
           [[p.id, f"{p.mean:.3f}", f"[{p.ci_low:.3f}, {p.ci_high:.3f}]", str(p.pulls),
             "-" if p.reward_rate is None else f"{p.reward_rate:.3f}", str(p.selections)]
            for p in arms], out)
    if len(metrics.arms) > len(arms):
        print(f"({len(metrics.arms) - len(arms)} more arm(s); raise --limit)", file=out)
    return 0


def _propensity(p: float | None) -> str:
    return "-" if p is None else f"{p:.3f}"


async def decisions(settings: Settings, name: str, after: int, limit: int,
                    out: TextIO) -> int:
    """The learner's decision log from ``after`` on, ``limit`` of them, oldest first."""
    async with _store(settings) as store:
        if name not in {s.name for s in await store.learners()}:
            raise UnknownLearner(f"no learner named {preview(name)} in the store")
        logged = await store.decisions(name, max(after, 0), limit)
    if not logged:
        print(f"learner {name!r}: no decisions after {after}", file=out)
        return 0
    print(f"learner {name!r}: decisions {logged[0].seq} to {logged[-1].seq}", file=out)
    _table(["seq", "time", "kind", "context", "chosen (propensity)", "of", "strategy"],
           [[str(d.seq), _when(d.at), d.kind, d.ctx or "global",
             ", ".join(f"{arm} ({_propensity(p)})"
                       for arm, p in zip(d.chosen, d.propensities, strict=True)),
             str(d.n_candidates), d.policy] for d in logged], out)
    if len(logged) == limit:
        print(f"(more may follow: --after {logged[-1].seq})", file=out)
    return 0


async def export(settings: Settings, learners: list[str] | None, output: str | None,
                 out: TextIO) -> int:
    count = 0
    async with _store(settings) as store:
        try:
            target = anyio.wrap_file(out) if output is None else await anyio.open_file(
                output, "w", encoding="utf-8")
        except OSError as exc:
            raise InvalidInput(f"cannot write {output}: {exc.strerror}") from exc
        try:
            # a chunk (a page of records) per write: one thread hand-off each, not per line
            async for chunk in export_chunks(store, learners):
                await target.write(chunk)
                count += chunk.count("\n")
        finally:
            if output is not None:
                await target.aclose()
    print(f"exported {count} record(s)", file=sys.stderr)
    return 0


async def import_(settings: Settings, path: str, out: TextIO) -> int:
    def half_life(name: str) -> float | None:
        return LearnerConfig.from_options(name, settings.learner_options(name)).half_life_s

    # Not initialized here: the import validates the whole file first, so a refused file
    # leaves the store as it was (and never creates one).
    store = configured_store(settings)
    try:
        report = await import_file(store, sys.stdin.buffer if path == "-" else path,
                                   half_life=half_life)
    finally:
        await store.close()
    print(f"imported {report.records} record(s) for {len(report.learners)} learner(s): "
          f"{report.applied} feedback applied, {report.duplicates} already present, "
          f"{report.conflicts} conflicting, {report.maintenance} decay/reset applied", file=out)
    for line in report.mismatches:
        print(f"mismatch: {line}", file=out)
    return 0 if report.ok else 1


async def replay(settings: Settings, names: list[str], out: TextIO) -> int:
    bad = 0
    async with _store(settings) as store, _registry(store, settings) as registry:
        for name in names or [s.name for s in await store.learners()]:
            report = await (await registry.get(name, create=False)).replay()
            verdict = "ok" if report.ok else f"{len(report.mismatches)} mismatch(es)"
            print(f"{name}: {report.events} event(s), {report.rows} row(s): {verdict}",
                  file=out)
            for m in report.mismatches:
                print(f"  {m.context_key or 'global'}/{m.arm_id}: stored "
                      f"(s={m.stored[0]:g}, f={m.stored[1]:g}, n={m.stored[2]}), replayed "
                      f"(s={m.replayed[0]:g}, f={m.replayed[1]:g}, n={m.replayed[2]})",
                      file=out)
            bad += not report.ok
    return 1 if bad else 0


async def ingest(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    """Consume a stream into the store until SIGTERM/SIGINT (or, with ``--once``, until it is
    drained). A signal finishes the batch in flight (commit, then ack) and exits."""
    from qortex_mcp.ingest import ConsumerOptions
    from qortex_mcp.ingest import run as ingest_run

    redis = ingest_run.broker_of(args.url) == "redis"
    name, group = (args.stream, args.group) if redis else (args.subject, args.durable)
    if args.status:
        await stream_lag(args.url, args, out)
        return 0
    options = ConsumerOptions(
        batch_size=args.batch_size, block_ms=args.block_ms, claim_idle_ms=args.claim_idle_ms,
        max_deliveries=args.max_deliveries, once=args.once,
        create_learners=args.create_learners,
        **({"consumer": args.consumer} if args.consumer else {}))
    # The server's per-agent feedback rate caps are for agents over MCP, not for a stream.
    registry = await open_registry(settings, agent_caps=False)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        stats = await ingest_run.consume(args.url, registry, options, name=name, group=group,
                                         stop=stop)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await close_registry(registry)
    print(f"ingested {stats.read} message(s): {stats.done} committed ({stats.applied} outcome(s) "
          f"applied), {stats.dead} dead-lettered, {stats.retried} left for retry", file=out)
    return 0


async def stream_lag(url: str, args: argparse.Namespace, out: TextIO) -> None:
    """One line: the pending count, undelivered count and oldest pending age of a consumer."""
    from qortex_mcp.ingest import run as ingest_run

    redis = ingest_run.broker_of(url) == "redis"
    name, group = (args.stream, args.group) if redis else (args.subject, args.durable)
    lag = await ingest_run.lag(url, name=name, group=group)
    age = "-" if lag.oldest_pending_age_s is None else f"{lag.oldest_pending_age_s:.1f}s"
    print(f"{lag.broker} {lag.stream} group {lag.group}: pending {lag.pending}, "
          f"lag {'-' if lag.lag is None else lag.lag}, oldest pending {age}", file=out)
