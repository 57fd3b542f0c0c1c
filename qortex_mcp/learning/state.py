"""The in-memory state of one learner, and every path that writes it.

Posteriors live in numpy arrays, one slot per arm (prior, evidence, decay times, counts,
versions), with a dict per context for context rows. They are loaded at ``create`` and
changed only from rows the store committed (``_absorb``, ``_absorb_arms``: guarded by
per-row versions, so an older read never overwrites a newer one); selection counters and
the decision log are write-behind (``_flush``). The layers above (``candidates``,
``choosing``, ``observing``, ``inspecting``, ``learner``) read and change the state only
through these methods and arrays.
"""

from __future__ import annotations

import asyncio
import math
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from qortex_mcp.errors import (
    ClosedError,
    InvalidInput,
    LimitExceeded,
    UnknownArm,
    preview,
)
from qortex_mcp.learning.changes import ArmTests
from qortex_mcp.learning.clock import WallClock
from qortex_mcp.learning.config import LearnerConfig
from qortex_mcp.learning.context import CanonicalContext
from qortex_mcp.learning.decisions import (
    DecisionLog,
    Settle,
)
from qortex_mcp.learning.limits import (
    ARM_BYTES,
    CONTEXT_BYTES,
    CONTEXT_ROW_BYTES,
    LEARNER_BYTES,
    Clock,
    FeedbackRateLimiter,
    MemoryBudget,
)
from qortex_mcp.learning.policies import Estimate
from qortex_mcp.learning.selection import PolicyChooser, thompson_settler
from qortex_mcp.learning.stats import beta_interval
from qortex_mcp.learning.stores.base import LearningStore
from qortex_mcp.learning.strategies import (
    LearningStrategy,
    ThompsonSampling,
)
from qortex_mcp.learning.tokens import SelectionSigner
from qortex_mcp.learning.types import (
    GLOBAL_CONTEXT,
    Arm,
    ArmRow,
    EvidenceRow,
    Posterior,
)
from qortex_mcp.learning.validation import (
    check_name,
)
from qortex_mcp.logging import get_logger

__all__ = ["LearnerState"]

log = get_logger(__name__)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(slots=True)
class _Candidates:
    ids: Sequence[str]
    slots: IntArray
    arms: Sequence[Arm | str]


@dataclass(slots=True)
class _Recent:
    """The previous select's candidates as given (a copy, when a list), their ids and
    slots, and whether any candidate carried a prior."""

    given: Sequence[Any]
    ids: Sequence[str]
    slots: IntArray
    priors: bool


class LearnerState:
    """The cache of one learner's state (see the module docstring)."""

    def __init__(
        self,
        config: LearnerConfig,
        store: LearningStore,
        signer: SelectionSigner,
        rng: np.random.Generator,
        owns_store: bool,
        refresh_interval_s: float,
        flush_interval_s: float,
        budget: MemoryBudget | None = None,
        clock: Clock | None = None,
        now: WallClock = time.time,
    ) -> None:
        self.config = config
        self._now = now
        self.name = config.name
        self.store = store
        self._signer = signer
        self._rng = rng
        self._owns_store = owns_store
        strategy = config.build_strategy()
        # A policy-layer strategy scores from evidence and prior; a LearningStrategy from
        # the posterior's alpha and beta (ThompsonSampling keeps its fast path).
        self._chooser: PolicyChooser | None = None
        self._strategy: LearningStrategy | None = None
        if isinstance(strategy, PolicyChooser):
            self._chooser = strategy
        else:
            self._strategy = strategy
        self._strategy_name = config.strategy_name()
        self._decisions = DecisionLog(config.policy_version())
        self._logging = config.decision_log
        self._log_put = self._decisions.pending.__setitem__
        # Propensities draw from a generator of their own: the selections' stream (and so
        # the decisions of a seeded learner) stays what it was without a decision log.
        prop_rng = np.random.default_rng(None if config.seed is None else [config.seed, 0x5EED])
        self._settle: Settle | None = None
        if self._chooser is not None:
            self._settle = self._chooser.settler(prop_rng, config.propensity_draws)
        elif isinstance(self._strategy, ThompsonSampling):
            self._settle = thompson_settler(prop_rng, config.propensity_draws)
        detector = config.build_change_detector()
        self._changes = None if detector is None else ArmTests(detector)
        self._reward_model = config.build_reward_model()
        self._half_life = config.half_life_s
        self._refresh_interval = refresh_interval_s
        self._flush_interval = flush_interval_s
        self._closed = False
        self._ensured = False
        self._tasks: list[asyncio.Task[None]] = []
        # Slots: arm id -> index into the arrays below.
        self._index: dict[str, int] = {}
        self._ids: list[str] = []
        cap = 64
        self._a0: FloatArray = np.full(cap, config.prior[0])
        self._b0: FloatArray = np.full(cap, config.prior[1])
        self._s: FloatArray = np.zeros(cap)
        self._f: FloatArray = np.zeros(cap)
        # a0 + s and b0 + f: the posterior without half-life decay, kept in step by every
        # write (_absorb, _absorb_arms, _set_prior) so select gathers two arrays, not four.
        self._alpha: FloatArray = self._a0.copy()
        self._beta: FloatArray = self._b0.copy()
        self._t: FloatArray = np.zeros(cap)
        self._rsum: FloatArray = np.zeros(cap)
        self._n: IntArray = np.zeros(cap, dtype=np.int64)
        self._v: IntArray = np.full(cap, -1, dtype=np.int64)
        self._sel: IntArray = np.zeros(cap, dtype=np.int64)
        self._last_sel: FloatArray = np.full(cap, np.nan)
        self._custom_prior: set[int] = set()
        # Per context: slot -> [s, f, n, rsum, t, v]
        self._ctx: dict[str, dict[int, list[float]]] = {}
        self._cursor = -1
        self._selections = 0
        self._explored = 0
        self._pending: dict[int, int] = {}
        self._pending_priors: dict[int, tuple[float, float]] = {}
        self._pending_selections = 0
        self._pending_explored = 0
        self._answered = 0
        self._pending_answered = 0
        self._candidates: OrderedDict[tuple[Any, ...], IntArray] = OrderedDict()
        self._recent: _Recent | None = None
        self._listeners: list[weakref.WeakMethod[Callable[[Sequence[EvidenceRow]], None]]] = []
        # Bumped whenever an arm's prior changes (the next-tool model's memo checks it).
        self._priors_changed = 0
        self._flush_lock = asyncio.Lock()
        self._sync_lock = asyncio.Lock()
        self._cached_ids = 0
        # What this learner counts against the (maybe shared) budget; released at close.
        self._budget = MemoryBudget() if budget is None else budget
        self._charged = 0
        self._charge(LEARNER_BYTES)
        self._limiter = FeedbackRateLimiter(
            config.name, config.feedback_per_minute, config.feedback_per_arm_per_minute,
            *(() if clock is None else (clock,)))

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"learner {self.name!r} is closed")

    def _charge(self, nbytes: int) -> None:
        self._charged += nbytes
        self._budget.charge(nbytes)

    def _release_budget(self) -> None:
        self._budget.release(self._charged)
        self._charged = 0

    def _grow(self, need: int) -> None:
        cap = self._s.shape[0]
        if need <= cap:
            return
        new = max(need, cap * 2)

        def grow(arr: Any, fill: float) -> Any:
            out = np.full(new, fill, dtype=arr.dtype)
            out[:cap] = arr
            return out

        self._a0 = grow(self._a0, self.config.prior[0])
        self._b0 = grow(self._b0, self.config.prior[1])
        self._s, self._f = grow(self._s, 0.0), grow(self._f, 0.0)
        self._alpha = grow(self._alpha, self.config.prior[0])
        self._beta = grow(self._beta, self.config.prior[1])
        self._t, self._rsum = grow(self._t, 0.0), grow(self._rsum, 0.0)
        self._n, self._v = grow(self._n, 0), grow(self._v, -1)
        self._sel, self._last_sel = grow(self._sel, 0), grow(self._last_sel, np.nan)

    def _slot(self, arm: str) -> int:
        slot = self._index.get(arm)
        if slot is None:
            if len(self._ids) >= self.config.max_arms:
                raise LimitExceeded(
                    f"learner {self.name!r} already has {self.config.max_arms} arms"
                )
            slot = len(self._ids)
            self._grow(slot + 1)
            self._index[arm] = slot
            self._ids.append(arm)
            self._charge(ARM_BYTES + len(arm))
        return slot

    def _set_prior(self, slot: int, prior: tuple[float, float], persist: bool = True) -> None:
        if self._a0[slot] == prior[0] and self._b0[slot] == prior[1]:
            return
        self._priors_changed += 1
        self._a0[slot], self._b0[slot] = prior
        self._refit(slot)
        self._custom_prior.add(slot)
        if persist:
            self._pending_priors[slot] = prior

    def _refit(self, slot: int) -> None:
        self._alpha[slot] = self._a0[slot] + self._s[slot]
        self._beta[slot] = self._b0[slot] + self._f[slot]

    async def _ensure_stored(self) -> None:
        """Record the learner in the store before its first write, not at ``create``: a call
        refused for bad input must leave the store exactly as it was."""
        if not self._ensured:
            await self.store.ensure_learner(self.name, self.config.describe())
            self._ensured = True

    def _decayed(self, s: FloatArray, f: FloatArray, t: FloatArray, now: float) -> tuple[
        FloatArray, FloatArray
    ]:
        if self._half_life is None:
            return s, f
        d = np.power(0.5, np.maximum(now - t, 0.0) / self._half_life)
        return s * d, f * d

    def _evidence(
        self, slots: IntArray, ctx: CanonicalContext | None, now: float
    ) -> tuple[FloatArray, FloatArray]:
        """Effective (decayed, backed-off) successes and failures for the slots."""
        s, f = self._s[slots], self._f[slots]
        if self._half_life is not None:  # only then are the times needed (a K-sized gather)
            s, f = self._decayed(s, f, self._t[slots], now)
        if ctx is None:
            return s, f
        m = self.config.context_backoff
        table = self._ctx.get(ctx.key)
        n_g = s + f
        with np.errstate(divide="ignore", invalid="ignore"):
            w = np.where(n_g > 0, np.minimum(1.0, m / n_g), 0.0) if m > 0 else np.zeros_like(s)
        s_out, f_out = w * s, w * f
        if table:
            # One dict lookup per slot, then the back-off rule (backoff_weight) vectorised:
            # a Python loop per arm cost ~1 us each, the bulk of a 100-result rerank.
            get = table.get
            hit_pos: list[int] = []
            hit_rows: list[list[float]] = []
            for pos, slot in enumerate(slots.tolist()):
                row = get(slot)
                if row is not None:
                    hit_pos.append(pos)
                    hit_rows.append(row)
            if hit_pos:
                idx = np.array(hit_pos, dtype=np.int64)
                rows = np.array(hit_rows, dtype=np.float64)
                sc, fc = rows[:, 0], rows[:, 1]
                if self._half_life is not None:
                    d = np.power(0.5, np.maximum(now - rows[:, 4], 0.0) / self._half_life)
                    sc, fc = sc * d, fc * d
                so = np.maximum(s[idx] - sc, 0.0)
                fo = np.maximum(f[idx] - fc, 0.0)
                n_other = so + fo
                if m > 0:
                    with np.errstate(divide="ignore", invalid="ignore"):
                        wc = np.where(n_other > 0.0,
                                      np.minimum(1.0, m / n_other) * m / (m + (sc + fc)), 0.0)
                else:
                    wc = np.zeros_like(so)
                s_out[idx] = sc + wc * so
                f_out[idx] = fc + wc * fo
        return s_out, f_out

    def _absorb(self, rows: Sequence[EvidenceRow]) -> None:
        for row in rows:
            slot = self._slot(row.arm)
            if row.ctx == GLOBAL_CONTEXT:
                if row.v < self._v[slot]:
                    continue
                self._s[slot], self._f[slot], self._t[slot] = row.s, row.f, row.t
                self._n[slot], self._rsum[slot], self._v[slot] = row.n, row.rsum, row.v
                self._refit(slot)
            else:
                table = self._ctx.get(row.ctx)
                if table is None:
                    table = self._ctx[row.ctx] = {}
                    self._charge(CONTEXT_BYTES + len(row.ctx))
                cur = table.get(slot)
                if cur is not None and row.v < cur[5]:
                    continue
                if cur is None:
                    self._charge(CONTEXT_ROW_BYTES)
                table[slot] = [row.s, row.f, row.n, row.rsum, row.t, row.v]
        if rows and self._listeners:
            alive = []
            for ref in self._listeners:
                listener = ref()
                if listener is not None:
                    listener(rows)
                    alive.append(ref)
            self._listeners = alive

    def _absorb_arms(self, rows: Sequence[ArmRow]) -> None:
        for row in rows:
            slot = self._slot(row.arm)
            if row.a0 is not None and row.b0 is not None and slot not in self._pending_priors:
                self._priors_changed += 1
                self._a0[slot], self._b0[slot] = row.a0, row.b0
                self._refit(slot)
                self._custom_prior.add(slot)
            self._sel[slot] = row.selections + self._pending.get(slot, 0)
            if row.last_selected is not None:
                self._last_sel[slot] = max(row.last_selected,
                                           np.nan_to_num(self._last_sel[slot]))

    async def _sync(self) -> None:
        """Pull rows written since the last pull (by this or any other process)."""
        async with self._sync_lock:
            ev: Sequence[EvidenceRow]
            arms: Sequence[ArmRow]
            if self._cursor < 0:
                snap = await self.store.load(self.name)
                self._selections = snap.selections + self._pending_selections
                self._explored = snap.explored + self._pending_explored
                self._answered = snap.answered + self._pending_answered
                cursor, ev, arms = snap.cursor, snap.evidence, snap.arms
            else:
                cursor, ev, arms = await self.store.changes(self.name, self._cursor)
            self._absorb(ev)
            self._absorb_arms(arms)
            self._cursor = cursor

    async def _flush(self) -> None:
        # One flush at a time (the loop, flush(), close and a registry's eviction may
        # overlap): each takes what is pending when it starts.
        async with self._flush_lock:
            await self._flush_once()

    async def _flush_once(self) -> None:
        if not (self._pending or self._pending_priors or self._pending_selections
                or self._pending_answered or len(self._decisions)):
            return
        dropped = self._decisions.dropped
        decisions = await self._decisions.take()
        pending, priors = self._pending, self._pending_priors
        sels, expl, answered = (self._pending_selections, self._pending_explored,
                                self._pending_answered)
        self._pending, self._pending_priors = {}, {}
        self._pending_selections = self._pending_explored = self._pending_answered = 0
        try:
            await self._ensure_stored()
            await self.store.record_selections(
                self.name,
                {self._ids[s]: (n, float(self._last_sel[s])) for s, n in pending.items()},
                {self._ids[s]: p for s, p in priors.items()}, sels, expl, answered,
                decisions,
            )
            self._decisions.written(decisions)
        except BaseException:
            # Keep the counts for the next flush (merged with what arrived meanwhile).
            self._decisions.put_back(decisions)
            for slot, n in pending.items():
                self._pending[slot] = self._pending.get(slot, 0) + n
            for slot, p in priors.items():
                self._pending_priors.setdefault(slot, p)
            self._pending_selections += sels
            self._pending_explored += expl
            self._pending_answered += answered
            if self._decisions.dropped > dropped:
                log.warning("decisions_dropped", learner=self.name,
                            dropped=self._decisions.dropped - dropped,
                            reason="the store refused the flushes; the oldest unwritten "
                            "decisions were dropped")
            raise

    def _posterior(self, slot: int, ctx: CanonicalContext | None, now: float) -> Posterior:
        s, f = self._evidence(np.array([slot]), ctx, now)
        a, b = float(self._a0[slot] + s[0]), float(self._b0[slot] + f[0])
        if ctx is None:
            n, rsum, t = int(self._n[slot]), float(self._rsum[slot]), float(self._t[slot])
        else:
            row = self._ctx.get(ctx.key, {}).get(slot)
            n, rsum, t = (int(row[2]), row[3], row[4]) if row else (0, 0.0, 0.0)
        low, high = beta_interval(a, b)
        chooser = self._chooser
        if chooser is not None:
            estimate: Estimate | None = chooser.estimate(
                float(s[0]), float(f[0]), float(self._a0[slot]), float(self._b0[slot]))
        elif isinstance(self._strategy, ThompsonSampling):
            estimate = Estimate(a / (a + b), low, high, "credible", 0.95, float(s[0] + f[0]),
                                {"alpha": a, "beta": b})
        else:
            estimate = None
        return Posterior(
            id=self._ids[slot], alpha=a, beta=b, mean=a / (a + b), ci_low=low, ci_high=high,
            pulls=n, selections=int(self._sel[slot]), reward_rate=rsum / n if n else None,
            last_update=t if n else None, context_key=ctx.key if ctx else GLOBAL_CONTEXT,
            estimate=estimate,
        )

    def _slots_for(self, arm_ids: Sequence[str] | None) -> list[int]:
        if arm_ids is None:
            return sorted(range(len(self._ids)), key=self._ids.__getitem__)
        out = []
        for arm in arm_ids:
            slot = self._index.get(check_name(arm, "arm id"))
            if slot is None:
                raise UnknownArm(f"learner {self.name!r} has no arm {preview(arm)}")
            out.append(slot)
        return out

    async def _decay(self, arm: str, factor: float, reason: str | None = None) -> None:
        if isinstance(factor, bool) or not isinstance(factor, int | float) or not (
            math.isfinite(factor) and 0.0 <= factor <= 1.0
        ):
            raise InvalidInput(f"factor must be a number in [0, 1], got {preview(factor)}")
        await self._ensure_stored()
        rows = await self.store.decay(self.name, arm, float(factor), self._now(), reason)
        self._absorb(rows)
        log.info("decay", learner=self.name, arm=arm or "*", factor=factor, reason=reason)

    def _watch(self, listener: Callable[[Sequence[EvidenceRow]], None]) -> None:
        """Call ``listener`` with the evidence rows the cache took in (feedback, another
        process's rows, decay, reset), after it took them; the next-tool model keeps its
        per-level arrays current this way (reading the cache, which skips stale rows).
        ``listener`` is a bound method, held weakly: a model dropped stops listening."""
        self._listeners.append(weakref.WeakMethod(listener))

