"""Prometheus metrics: what the tools did (counters, latencies) and what the store holds.

Served as ``GET /metrics`` by ``serve --transport http`` (``prometheus_client``, the
``observe`` extra). Names follow the Prometheus conventions: the ``qortex_`` prefix, base
units (seconds), ``_total`` counters. Labels are bounded:

- ``learner``: the first ``MAX_LEARNER_LABELS`` learner names seen keep their own series,
  later ones are folded into ``learner="_other"``; only names a call was answered for are
  used (a refused call's name may be anything, so refusals are counted by code only);
- ``tool``: the nine tool names; ``code``: the stable error codes (``OK`` for success);
- ``outcome``: accepted | rejected | partial | graded (a number) | implicit (rerank clicks);
- never a context, an arm id (unless per-arm series are enabled, below) or a selection id.

Per-arm series (``qortex_arm_pulls``, ``qortex_arm_posterior_mean``) are off unless
``QORTEX_METRICS_PER_ARM=N``: then at most N arms in total (most pulled first, over the
open learners) get their own series, and each learner's remaining pulls are summed into
``arm="_other"``.

Counters count this process's calls since it started (a counter restarts at zero with the
process, as Prometheus expects) and are always current. Gauges (learners, arms, per-arm
series, stream lag) come from the store, whose read grows with its size (about 60 ms at 100
learners x 1,000 arms on SQLite): the first scrape reads them before answering; later
scrapes answer at once with the last read and start a fresh read in the background when it
is older than ``GAUGE_REFRESH_S``. So a gauge is at most one scrape interval old.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from qortex_mcp import __version__
from qortex_mcp.errors import QortexError
from qortex_mcp.learning import LearnerRegistry, LearningStore
from qortex_mcp.learning.rewards import OUTCOME_WORDS
from qortex_mcp.logging import get_logger
from qortex_mcp.observe.streams import StreamLag, StreamLagSource
from qortex_mcp.observe.timed_store import TimedStore

__all__ = [
    "CONTENT_TYPE",
    "LAG_BUCKETS",
    "LATENCY_BUCKETS",
    "MAX_LEARNER_LABELS",
    "QortexMetrics",
    "StreamLag",
]

log = get_logger(__name__)

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS: Final = (0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                          0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
"""Tool and commit latency buckets: 25 microseconds (a select) to 5 seconds (a stuck store)."""
LAG_BUCKETS: Final = (0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0)
"""Selection-to-feedback lag buckets: an agent answering at once to a day later."""
GAUGE_REFRESH_S: Final = 1.0
"""A scrape starts a background store read when the last one is older than this."""
MAX_LEARNER_LABELS: Final = 200
"""Learner names with their own series; later ones share ``learner="_other"``."""
OTHER: Final = "_other"


class _Capped:
    """Label values kept up to a limit; later ones map to ``_other``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self.seen:
            return value
        if len(self.seen) >= self.limit:
            return OTHER
        self.seen.add(value)
        return value


@dataclass
class _Snapshot:
    learners: int = 0
    arms: dict[str, int] = field(default_factory=dict)
    per_arm: list[tuple[str, str, int, float | None]] = field(default_factory=list)
    streams: list[StreamLag] = field(default_factory=list)


class _StoreGauges(Collector):
    """Gauges from the last ``refresh`` (collect() is synchronous; store reads are not)."""

    def __init__(self) -> None:
        self.snapshot = _Snapshot()

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot
        yield InfoMetricFamily("qortex_build", "qortex-mcp version", value={
            "version": __version__})
        yield GaugeMetricFamily("qortex_learners", "learners in the store", value=snap.learners)
        arms = GaugeMetricFamily("qortex_learner_arms", "arms a learner knows",
                                 labels=["learner"])
        for name, count in snap.arms.items():
            arms.add_metric([name], count)
        yield arms
        if snap.per_arm:
            pulls = GaugeMetricFamily("qortex_arm_pulls", "feedback per arm (capped series)",
                                      labels=["learner", "arm"])
            means = GaugeMetricFamily("qortex_arm_posterior_mean",
                                      "posterior mean per arm (capped series)",
                                      labels=["learner", "arm"])
            for learner, arm, n, mean in snap.per_arm:
                pulls.add_metric([learner, arm], n)
                if mean is not None:
                    means.add_metric([learner, arm], mean)
            yield pulls
            yield means
        lag = GaugeMetricFamily("qortex_stream_lag_messages",
                                "messages a stream consumer has yet to read",
                                labels=["stream", "group"])
        pending = GaugeMetricFamily("qortex_stream_pending_messages",
                                    "messages read but not yet acknowledged",
                                    labels=["stream", "group"])
        oldest = GaugeMetricFamily("qortex_stream_oldest_pending_age_seconds",
                                   "age of the oldest message read but not acknowledged",
                                   labels=["stream", "group"])
        for s in snap.streams:
            if s.lag is not None:  # (a broker that cannot tell reports no series)
                lag.add_metric([s.stream, s.group], s.lag)
            pending.add_metric([s.stream, s.group], s.pending)
            oldest.add_metric([s.stream, s.group], s.oldest_pending_age_s or 0.0)
        yield lag
        yield pending
        yield oldest


def _outcome(value: object) -> str:
    if isinstance(value, str):
        return value if value in OUTCOME_WORDS else "graded"
    return "graded" if value is not None else "implicit"


class QortexMetrics:
    """The metrics of one server process; a ``CallObserver`` for the tool boundary.

    Args:
        per_arm: how many per-arm series in total (0: none).
        learner_labels: learner names with their own series (``MAX_LEARNER_LABELS``).
    """

    def __init__(self, *, per_arm: int = 0, learner_labels: int = MAX_LEARNER_LABELS) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.per_arm = per_arm
        self._learner = _Capped(learner_labels)
        self._issued_at: Callable[[str, str], float | None] | None = None
        self._streams: list[StreamLagSource] = []
        r = self.registry
        self.selections = Counter("qortex_selections", "selections made (select calls)",
                                  ["learner", "policy"], registry=r)
        self.feedback = Counter("qortex_feedback", "feedback per arm, by outcome and result",
                                ["learner", "outcome", "result"], registry=r)
        self.refused = Counter("qortex_feedback_refused", "feedback calls refused, by code",
                               ["code"], registry=r)
        self.calls = Counter("qortex_tool_calls", "tool calls (MCP and REST), by code",
                             ["tool", "code"], registry=r)
        self.duration = Histogram("qortex_tool_duration_seconds", "tool call latency",
                                  ["tool"], buckets=LATENCY_BUCKETS, registry=r)
        self.commit = Histogram("qortex_store_commit_duration_seconds",
                                "time to commit a store write", ["store", "op"],
                                buckets=LATENCY_BUCKETS, registry=r)
        self.lag = Histogram("qortex_feedback_lag_seconds",
                             "time from a selection to its first applied feedback",
                             buckets=LAG_BUCKETS, registry=r)
        self._gauges = _StoreGauges()
        self._read_at: float | None = None
        self._reading: asyncio.Task[None] | None = None
        r.register(self._gauges)
        # Children cached by label values: labels() takes a lock and builds a key each call.
        self._children: dict[tuple[Any, ...], Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def use_selection_clock(self, issued_at: Callable[[str, str], float | None]) -> None:
        """How to read when a selection id was issued: (id, learner) -> epoch seconds."""
        self._issued_at = issued_at

    def add_stream_lag(self, source: StreamLagSource) -> None:
        """Report stream backlogs at each scrape (``qortex_stream_lag_messages``)."""
        self._streams.append(source)

    # --- the hot path: one call per tool call --------------------------------------------

    def tool_call(self, tool: str, arguments: Mapping[str, Any],
                  structured: Mapping[str, Any] | None, code: str, seconds: float) -> None:
        self._child(self.calls, tool, code).inc()
        self._child(self.duration, tool).observe(seconds)
        if tool == "select":
            if structured is not None:
                learner = self._learner(str(structured.get("learner")))
                self._child(self.selections, learner, str(structured.get("strategy"))).inc()
        elif tool == "feedback":
            if structured is None:
                self._child(self.refused, code).inc()
            else:
                self._feedback(arguments, structured)

    def _feedback(self, arguments: Mapping[str, Any], structured: Mapping[str, Any]) -> None:
        name = str(structured.get("learner"))
        learner = self._learner(name)
        outcomes = arguments.get("outcomes")
        bare = arguments.get("outcome")
        applied = False
        for arm in structured.get("arms") or ():
            arm_id = arm.get("arm_id")
            value = outcomes.get(arm_id) if isinstance(outcomes, Mapping) else bare
            status = str(arm.get("status"))
            applied = applied or status == "applied"
            self._child(self.feedback, learner, _outcome(value), status).inc()
        sid = structured.get("selection_id")
        if applied and isinstance(sid, str) and self._issued_at is not None:
            issued = self._issued_at(sid, name)
            if issued is not None:
                self.lag.observe(max(0.0, time.time() - issued))

    def store_commit(self, store: str, op: str, seconds: float) -> None:
        self._child(self.commit, store, op).observe(seconds)

    def timed_store(self, store: LearningStore) -> LearningStore:
        """``store``, its commits timed into ``qortex_store_commit_duration_seconds``."""
        return TimedStore(store, self.store_commit)

    # --- scrape -------------------------------------------------------------------------

    async def refresh(self, registry: LearnerRegistry) -> None:
        """Read the gauges from the store (pending selection counts flushed first)."""
        summaries = await registry.summaries()
        snap = _Snapshot(learners=len(summaries))
        for s in summaries:
            label = self._learner(s.name)
            snap.arms[label] = snap.arms.get(label, 0) + s.arms
        if self.per_arm:
            snap.per_arm = await self._per_arm(registry)
        for source in self._streams:
            snap.streams.extend(await source())
        self._gauges.snapshot = snap

    async def _per_arm(self, registry: LearnerRegistry) -> list[tuple[str, str, int,
                                                                      float | None]]:
        rows: list[tuple[int, str, str, float]] = []
        for lrn in registry.open_learners():
            for arm in (await lrn.metrics()).arms:
                rows.append((arm.feedback, lrn.name, arm.id, arm.mean))
        rows.sort(key=lambda r: (-r[0], r[1], r[2]))
        out: list[tuple[str, str, int, float | None]] = [
            (learner, arm, n, mean) for n, learner, arm, mean in rows[:self.per_arm]]
        rest: dict[str, int] = {}
        for n, learner, _, _ in rows[self.per_arm:]:
            rest[learner] = rest.get(learner, 0) + n
        out.extend((learner, OTHER, n, None) for learner, n in sorted(rest.items()))
        return out

    async def render(self, registry: LearnerRegistry) -> bytes:
        """The text exposition; the store gauges as of the last read (see the module doc).

        Raises:
            StoreError: the first read of the store failed.
        """
        if self._read_at is None:
            await self._read(registry, raise_errors=True)
        elif time.monotonic() - self._read_at > GAUGE_REFRESH_S and (
                self._reading is None or self._reading.done()):
            self._reading = asyncio.get_running_loop().create_task(self._read(registry))
        return generate_latest(self.registry)

    async def _read(self, registry: LearnerRegistry, raise_errors: bool = False) -> None:
        try:
            await self.refresh(registry)
        except QortexError as exc:
            if raise_errors:
                raise
            log.warning("metrics_refresh_failed", code=exc.code)
            return
        self._read_at = time.monotonic()

    async def aclose(self) -> None:
        """Wait for a background store read to end (call before closing the registry)."""
        if self._reading is not None and not self._reading.done():
            await asyncio.wait([self._reading])
