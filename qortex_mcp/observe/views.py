"""Server-side aggregation for the dashboard: bounded pages of JSON, computed here.

- ``learners(offset, limit)``: a page of learners with their counts (one store read), and
  the stream consumers' backlogs when stream ingestion reports them.
- ``arms(name, offset, limit, sort)``: a learner's strategy and parameters, and a page of its
  arms with estimate, 95% credible interval, pulls, share of selections and probability of
  being best (estimates from ``qortex_mcp.observe.estimates``).
- ``series(name, bucket_s)``: per time bucket, feedback count and mean reward, the estimate
  of the most pulled arms (``SERIES_ARMS``) as it stood at the end of each bucket (rebuilt
  from the event log, without half-life decay), and those arms' share of selections
  between the dashboard's own samples of the selection counters.

Reading the event log is incremental (each learner's cursor is kept; at most
``EVENTS_PER_CALL`` events per call, so a long log is caught up over a few polls), and
selection samples are taken at each call for the learner (at most ``MAX_SAMPLES`` kept):
the share of selections over time starts when the dashboard starts.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Final, Literal

import numpy as np

from qortex_mcp.errors import InvalidInput, preview
from qortex_mcp.learning import LearnerConfig, LearnerRegistry
from qortex_mcp.learning.validation import check_name
from qortex_mcp.observe.estimates import estimator_for, prob_best
from qortex_mcp.observe.streams import StreamLagSource

__all__ = ["MAX_PAGE", "DashboardData"]

MAX_PAGE: Final = 200
SERIES_ARMS: Final = 8
MAX_BUCKETS: Final = 120
EVENTS_PER_CALL: Final = 20_000
MAX_SAMPLES: Final = 240
MAX_LOGS: Final = 256
"""Learners whose folded event log is kept (least recently viewed dropped first)."""
Sort = Literal["estimate", "pulls", "id"]
_SORTS: Final = ("estimate", "pulls", "id")


def _page(offset: object, limit: object) -> tuple[int, int]:
    for key, value, low in (("offset", offset, 0), ("limit", limit, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low or (
                key == "limit" and value > MAX_PAGE):
            raise InvalidInput(f"{key} must be a whole number from {low}"
                               f"{f' to {MAX_PAGE}' if key == 'limit' else ''}, "
                               f"got {preview(value)}")
    assert isinstance(offset, int)
    assert isinstance(limit, int)
    return offset, limit


def _strategy(config: LearnerConfig) -> tuple[str, dict[str, Any]]:
    detector = config.build_change_detector()
    params = {**config.strategy_parameters(), "prior": list(config.prior),
              "half_life_s": config.half_life_s,
              "change_detection": detector.params if detector else None,
              "reward_model": config.build_reward_model().name}
    return config.strategy_name(), params


@dataclass
class _Log:
    """One learner's event log, folded into time buckets as it is read."""

    cursor: int = 0
    # bucket start -> arm -> [feedback count, reward sum]
    buckets: dict[int, dict[str, list[float]]] = field(default_factory=dict)
    base: dict[str, list[float]] = field(default_factory=dict)
    """Per arm, the sums of the buckets folded away (older than the ones kept)."""
    bucket_s: int = 60
    samples: deque[tuple[float, dict[str, int]]] = field(
        default_factory=lambda: deque(maxlen=MAX_SAMPLES))


class DashboardData:
    """The dashboard's JSON, from the learners of ``registry()``."""

    def __init__(self, registry: Callable[[], LearnerRegistry], *, seed: int | None = None,
                 stream_lag: Sequence[StreamLagSource] = ()) -> None:
        self._registry = registry
        self._streams = list(stream_lag)
        self._logs: dict[str, _Log] = {}
        self._rng = np.random.default_rng(seed)

    async def learners(self, offset: int = 0, limit: int = 50) -> dict[str, Any]:
        offset, limit = _page(offset, limit)
        registry = self._registry()
        summaries = await registry.store.learners()
        page = summaries[offset:offset + limit]
        out = []
        for s in page:
            name, params = _strategy(registry.config_for(s.name))
            out.append({"name": s.name, "arms": s.arms, "selections": s.selections,
                        "feedback": s.feedback, "last_update": s.last_update,
                        "strategy": name, "parameters": params})
        streams = [asdict(row) for source in self._streams for row in await source()]
        return {"learners": out, "total": len(summaries), "offset": offset, "limit": limit,
                "streams": streams, "now": time.time()}

    async def arms(self, name: str, offset: int = 0, limit: int = 50,
                   sort: str = "estimate") -> dict[str, Any]:
        offset, limit = _page(offset, limit)
        if sort not in _SORTS:
            raise InvalidInput(f"sort must be one of {', '.join(_SORTS)}, got {preview(sort)}")
        check_name(name, "learner name")
        async with self._registry().use(name, create=False) as lrn:
            table = await lrn.arm_arrays()
            config = lrn.config
        strategy, params = _strategy(config)
        est = estimator_for(strategy)
        means = est.means(table.alpha, table.beta) if table.ids else np.zeros(0)
        best = prob_best(est, table.alpha, table.beta, self._rng)
        total_sel = int(table.selections.sum()) if table.ids else 0
        if sort == "estimate":
            order = np.lexsort((np.array(table.ids, dtype=object), -means))
        elif sort == "pulls":
            order = np.lexsort((np.array(table.ids, dtype=object), -table.pulls))
        else:
            order = np.argsort(np.array(table.ids, dtype=object), kind="stable")
        rows = []
        for slot in order[offset:offset + limit].tolist():
            a, b = float(table.alpha[slot]), float(table.beta[slot])
            low, high = est.interval(a, b, 0.95)
            n = int(table.pulls[slot])
            rows.append({
                "id": table.ids[slot], "estimate": float(means[slot]), "ci_low": low,
                "ci_high": high, "alpha": a, "beta": b, "pulls": n,
                "selections": int(table.selections[slot]),
                "selection_share": int(table.selections[slot]) / total_sel if total_sel
                else None,
                "reward_rate": float(table.reward_sum[slot]) / n if n else None,
                "prob_best": float(best[slot]),
                "last_update": float(table.last_update[slot]) if n else None})
        return {"learner": name, "strategy": strategy, "parameters": params,
                "estimator": est.name, "arms": rows, "total": len(table.ids),
                "offset": offset, "limit": limit, "sort": sort,
                "selections": total_sel, "feedback": int(table.pulls.sum()) if table.ids
                else 0, "now": time.time()}

    async def series(self, name: str, bucket_s: int = 60) -> dict[str, Any]:
        if isinstance(bucket_s, bool) or not isinstance(bucket_s, int) or \
                not 1 <= bucket_s <= 86400:
            raise InvalidInput(f"bucket_s must be a whole number of seconds from 1 to 86400, "
                               f"got {preview(bucket_s)}")
        check_name(name, "learner name")
        registry = self._registry()
        async with registry.use(name, create=False) as lrn:
            table = await lrn.arm_arrays()
            prior = lrn.config.prior
        log = self._logs.pop(name, None)  # re-inserted last: the most recently viewed
        if log is None or log.bucket_s != bucket_s:
            log = _Log(bucket_s=bucket_s)
        self._logs[name] = log
        while len(self._logs) > MAX_LOGS:
            del self._logs[next(iter(self._logs))]
        caught_up = await self._read(registry, name, log)
        now = time.time()
        log.samples.append((now, dict(zip(table.ids, table.selections.tolist(), strict=True))))
        top = [table.ids[i] for i in np.argsort(-table.pulls, kind="stable")[:SERIES_ARMS]]
        return {"learner": name, "bucket_s": bucket_s, "arms": top,
                "buckets": self._buckets(log, top, prior),
                "shares": self._shares(log, top), "caught_up": caught_up, "now": now}

    async def _read(self, registry: LearnerRegistry, name: str, log: _Log) -> bool:
        read = 0
        while read < EVENTS_PER_CALL:
            events = await registry.store.events(name, log.cursor, 5000)
            if not events:
                self._fold_old(log)
                return True
            for e in events:  # events arrive in seq order (time order within a writer)
                log.cursor = max(log.cursor, e.seq)
                if e.kind != "feedback" or e.reward is None or (e.ctx or "") != "":
                    continue
                start = int(e.at // log.bucket_s) * log.bucket_s
                cell = log.buckets.setdefault(start, {}).setdefault(e.arm, [0.0, 0.0])
                weight = e.weight if e.weight is not None else 1.0
                cell[0] += weight
                cell[1] += weight * e.reward
            read += len(events)
            self._fold_old(log)
        return False

    @staticmethod
    def _fold_old(log: _Log) -> None:
        """Keep at most ``2 * MAX_BUCKETS`` buckets: older ones only add to the base."""
        if len(log.buckets) <= 2 * MAX_BUCKETS:
            return
        for start in sorted(log.buckets)[:len(log.buckets) - MAX_BUCKETS]:
            for arm, (n, r) in log.buckets.pop(start).items():
                cell = log.base.setdefault(arm, [0.0, 0.0])
                cell[0] += n
                cell[1] += r

    def _buckets(self, log: _Log, top: list[str], prior: tuple[float, float]
                 ) -> list[dict[str, Any]]:
        starts = sorted(log.buckets)
        cum: dict[str, list[float]] = {arm: list(log.base.get(arm, [0.0, 0.0])) for arm in top}
        out = []
        keep = set(starts[-MAX_BUCKETS:])
        for start in starts:
            cells = log.buckets[start]
            for arm in top:
                if arm in cells:
                    cum[arm][0] += cells[arm][0]
                    cum[arm][1] += cells[arm][1]
            if start not in keep:
                continue
            n = sum(c[0] for c in cells.values())
            r = sum(c[1] for c in cells.values())
            out.append({"t": start, "feedback": n, "reward": r / n if n else None,
                        "estimates": {arm: (prior[0] + c[1]) / (prior[0] + prior[1] + c[0])
                                      for arm, c in cum.items()}})
        return out

    def _shares(self, log: _Log, top: list[str]) -> list[dict[str, Any]]:
        out = []
        samples = list(log.samples)
        # dicts of a few thousand counts, MAX_SAMPLES of them: bounded
        for (_, before), (t, after) in itertools.pairwise(samples):
            total = sum(after.values()) - sum(before.values())
            if total <= 0:
                continue
            out.append({"t": t, "selections": total, "shares": {
                arm: (after.get(arm, 0) - before.get(arm, 0)) / total for arm in top}})
        return out
