"""``Learner``: the async facade over a strategy, a reward model and a store.

This module is long on purpose: it owns the in-memory posterior cache and every path that
reads or writes it (select, observe, refresh, decay, reset), and keeping those in one place
is what keeps the cache consistent with the store.

Design:

* ``select`` never awaits the store. Posteriors live in numpy arrays (one slot per arm),
  loaded at ``create`` and written through by ``observe``. Selection counters are
  write-behind statistics, flushed every second and at ``close``.
* ``observe`` returns only after the store committed the event and the evidence increment
  in one transaction; the cache is then updated from the committed rows (never from values
  computed here), guarded by per-row versions so an older read never overwrites a newer one.
* When the store is shared with other processes, a background task pulls rows they wrote
  (``store.changes``); inspection calls pull before answering.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
import secrets
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, Final, Literal, Self

import numpy as np
import numpy.typing as npt

from qortex_mcp.errors import (
    ArmNotChosen,
    ArmNotInSelection,
    BudgetTooSmall,
    ClosedError,
    InvalidCandidates,
    InvalidInput,
    InvalidOutcome,
    InvalidSelection,
    LimitExceeded,
    QortexError,
    SelectionConflict,
    StoreError,
    UnknownArm,
    preview,
)
from qortex_mcp.learning.changes import CHANGE_DETECTED, ArmTests
from qortex_mcp.learning.clock import WallClock
from qortex_mcp.learning.config import LearnerConfig
from qortex_mcp.learning.context import CanonicalContext, canonical_context
from qortex_mcp.learning.decision_log import (
    DecisionLog,
    SelectPropensities,
    Settle,
    known_propensities,
)
from qortex_mcp.learning.limits import (
    ARM_BYTES,
    CANDIDATE_BYTES,
    CONTEXT_BYTES,
    CONTEXT_ROW_BYTES,
    LEARNER_BYTES,
    Clock,
    FeedbackRateLimiter,
    MemoryBudget,
)
from qortex_mcp.learning.policies import Estimate
from qortex_mcp.learning.replay import EventFold, replay_events
from qortex_mcp.learning.selection import PolicyChooser, thompson_settler
from qortex_mcp.learning.stats import beta_interval
from qortex_mcp.learning.stores.base import LearningStore, apply_many, event_pages
from qortex_mcp.learning.strategies import (
    LearningStrategy,
    ThompsonSampling,
    default_generator,
)
from qortex_mcp.learning.tasks import stop_tasks
from qortex_mcp.learning.tokens import MAX_OFFERED, SelectionClaims, SelectionSigner
from qortex_mcp.learning.types import (
    GLOBAL_CONTEXT,
    ApplyResult,
    Arm,
    ArmArrays,
    ArmMetrics,
    ArmOutcome,
    ArmRow,
    Decision,
    EvidenceRow,
    FeedbackResult,
    FeedbackRow,
    LearnerMetrics,
    Posterior,
    ReplayReport,
    ResetReport,
    RowStatus,
    ScoredArm,
    SelectionResult,
    ToolExecution,
    scored_arm,
)
from qortex_mcp.learning.validation import (
    check_name,
    check_names,
    check_prior,
    check_reward,
    check_weight,
)
from qortex_mcp.logging import get_logger

__all__ = ["Learner"]

log = get_logger(__name__)
_debug_on = logging.getLogger(__name__).isEnabledFor

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

_CACHE_SIZE: Final = 64
# The candidate cache holds each list's ids (the caller's strings): bounded by ids too, or
# 64 lists of 10,000 fresh ids would hold ~50 MB per learner.
_CACHE_IDS: Final = 100_000
_get_id = attrgetter("id")
_get_prior = attrgetter("prior")
MAX_K: Final = 1000


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


def decision_propensity(decision: Decision, arm: str) -> float | None:
    """The propensity ``decision`` logged for ``arm`` (None: not chosen, or unknown)."""
    try:
        return decision.propensities[decision.chosen.index(arm)]
    except ValueError:
        return None


def _ids_of(arms: Sequence[Arm | str]) -> list[str]:
    try:
        # All Arms (the usual case): about 8 ns per candidate instead of 35 for the mixed
        # form below.
        return [a.id for a in arms]  # type: ignore[union-attr]
    except AttributeError:  # ids among the candidates
        try:
            return [a if type(a) is str else _get_id(a) for a in arms]
        except AttributeError:
            raise InvalidCandidates("candidates must be arm ids (strings) or Arms") from None


class Learner:
    """A named bandit learner. Create with ``await Learner.create(config)``.

    Use as ``async with await Learner.create(...) as learner`` or call ``close()``.
    """

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
        self._log_append = self._decisions.pending.append
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
        self._sync_lock = asyncio.Lock()
        self._cached_ids = 0
        # What this learner counts against the (maybe shared) budget; released at close.
        self._budget = MemoryBudget() if budget is None else budget
        self._charged = 0
        self._charge(LEARNER_BYTES)
        self._limiter = FeedbackRateLimiter(
            config.name, config.feedback_per_minute, config.feedback_per_arm_per_minute,
            *(() if clock is None else (clock,)))

    # --- lifecycle -------------------------------------------------------------------------

    @classmethod
    async def create(
        cls,
        config: LearnerConfig | None = None,
        store: LearningStore | None = None,
        *,
        signer: SelectionSigner | None = None,
        rng: np.random.Generator | None = None,
        refresh_interval_s: float = 0.5,
        flush_interval_s: float = 1.0,
        budget: MemoryBudget | None = None,
        clock: Clock | None = None,
        now: WallClock = time.time,
    ) -> Self:
        """Open (or create) a learner and load its posteriors.

        Without a store, the learner lives where the environment says, resolved exactly as
        the server resolves it (``Settings.from_env``: ``QORTEX_STORE``, ``DATABASE_URL``,
        ``QORTEX_STATE_DIR``, default SQLite in the per-user state directory) and signs with
        ``QORTEX_SECRET`` or the state directory's key file; it owns that store and closes
        it. Given a store, it reads no environment variable and writes nothing outside that
        store.

        Args:
            config: the learner's settings (default: ``LearnerConfig()``, named "default").
            store: where state lives. A store passed in stays the caller's: the learner
                initializes it but never closes it, so close it yourself (``async with
                store:``, or ``await store.close()`` after the learner).
            signer: signs selection ids. Default without a store: ``QORTEX_SECRET`` or the
                key file in the state directory (a random key for a memory store). Default
                with a store: the key kept in that store (SQLite, PostgreSQL; created on first
                use), else a random key for this process (memory, JSON), see
                ``stores.factory.store_signer``. Pass one to share selection ids with a
                server using its own key.
            rng: the random generator (default: seeded from ``config.seed``).
            budget: the memory budget this learner's in-memory state counts against
                (shared by a registry's learners); default: its own, without a limit.
            clock: monotonic seconds for the feedback rate caps (default
                ``time.monotonic``; tests pass a fake one).
            now: wall seconds since the epoch for feedback and selection times, half-life
                decay and maintenance events (default ``time.time``; tests pass a
                ``clock.FakeClock`` and move it instead of sleeping).

        Raises:
            StoreError: the store cannot be opened.
            ConfigError: the configuration is invalid.
        """
        from qortex_mcp.learning.stores.factory import (
            configured_store,
            default_signer,
            store_signer,
        )

        config = config or LearnerConfig()
        owns = store is None
        if store is None:
            from qortex_mcp.config import Settings

            settings = Settings.from_env()  # the only place a learner reads the environment
            store = configured_store(settings)
            if signer is None:
                signer = default_signer(settings, store, config.selection_ttl_s)
        learner: Self | None = None
        try:
            await store.initialize()
            if signer is None:
                signer = await store_signer(store, config.selection_ttl_s)
            learner = cls(config, store, signer, rng or default_generator(config.seed), owns,
                          refresh_interval_s, flush_interval_s, budget, clock, now)
            for arm, prior in config.arm_priors.items():
                learner._set_prior(learner._slot(arm), prior, persist=False)
            await learner._sync()
        except BaseException:
            if learner is not None:
                learner._release_budget()
            if owns:
                await store.close()
            raise
        learner._tasks.append(asyncio.create_task(learner._flush_loop(),
                                                  name=f"qortex-flush-{learner.name}"))
        if store.shared:
            learner._tasks.append(asyncio.create_task(learner._refresh_loop(),
                                                      name=f"qortex-refresh-{learner.name}"))
        return learner

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Flush selection statistics and stop background work (and the store, if owned)."""
        if self._closed:
            return
        self._closed = True
        await stop_tasks(self._tasks, f"learner {self.name}")
        try:
            await self._flush()
        except QortexError as exc:
            log.warning("learner_flush_failed", learner=self.name, code=exc.code)
        finally:
            self._release_budget()
            if self._owns_store:
                await self.store.close()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def rng(self) -> np.random.Generator:
        """The learner's random generator (seeded from ``config.seed``); callers that sample
        on the learner's behalf, such as the reranker's ``explore``, draw from it."""
        return self._rng

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"learner {self.name!r} is closed")

    # --- limits ----------------------------------------------------------------------------

    @property
    def memory_bytes(self) -> int:
        """The estimate of this learner's in-memory state (``qortex_mcp.learning.limits``)."""
        return self._charged

    @property
    def feedback_last_minute(self) -> int:
        """Feedback rows this learner took in the last 60 seconds (what the rate caps
        count; refused calls are not counted)."""
        return self._limiter.recent()

    def _charge(self, nbytes: int) -> None:
        self._charged += nbytes
        self._budget.charge(nbytes)

    def _release_budget(self) -> None:
        self._budget.release(self._charged)
        self._charged = 0

    def _admit(self, rows: Sequence[FeedbackRow], rated: Sequence[FeedbackRow]) -> None:
        """Refuse, before anything is written, feedback the limits do not take: a context
        past ``max_contexts``, new state past the memory budget, or a rate cap (checked
        last, so a call refused for another reason costs no rate)."""
        index = self._index
        if all(r.ctx == GLOBAL_CONTEXT and r.arm in index for r in rows):
            # The common case (known arms, no context) needs no new state: only the rate.
            self._limiter.take([r.arm for r in rated])
            return
        new_ctx = {r.ctx for r in rows if r.ctx != GLOBAL_CONTEXT and r.ctx not in self._ctx}
        cap = self.config.max_contexts
        if new_ctx and len(self._ctx) + len(new_ctx) > cap:
            raise LimitExceeded(
                f"learner {self.name!r} already keeps evidence in {len(self._ctx)} contexts "
                f"(max_contexts {cap}); use a coarser context, or none"
            )
        nbytes = sum(CONTEXT_BYTES + len(c) for c in new_ctx)
        fresh = {r.arm for r in rows if r.arm not in self._index}
        nbytes += sum(ARM_BYTES + len(a) for a in fresh)
        nbytes += CONTEXT_ROW_BYTES * len({
            (r.ctx, r.arm) for r in rows if r.ctx != GLOBAL_CONTEXT and (
                r.arm in fresh or index[r.arm] not in self._ctx.get(r.ctx, {}))
        })
        self._budget.require(nbytes, f"feedback for learner {self.name!r}")
        self._limiter.take([r.arm for r in rated])

    # --- slots -----------------------------------------------------------------------------

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

    # --- select ----------------------------------------------------------------------------

    def _resolve(self, arms: Sequence[Arm | str]) -> _Candidates:
        if not isinstance(arms, Sequence) or isinstance(arms, str) or not arms:
            raise InvalidCandidates("candidates must be a non-empty list of arm ids or Arms")
        if len(arms) > self.config.max_candidates:
            raise InvalidCandidates(
                f"at most {self.config.max_candidates} candidates per call, got {len(arms)}"
            )
        recent = self._recent
        # Fastest path: the same candidates as the previous call (a caller reusing its list
        # of ids, or of Arms, which are frozen). Comparing two lists of the very same
        # objects costs under 1 ns per candidate (identity first; tuples compare several
        # times slower), hashing them 3+ ns and two lookups. The first-element identity
        # test keeps lists of new but equal Arm objects off this path, where the comparison
        # would call Arm.__eq__ per candidate.
        if recent is not None and type(arms) is type(recent.given) and (
            type(arms[0]) is str or arms[0] is recent.given[0]
        ) and arms == recent.given:
            if recent.priors:
                self._apply_arm_priors(arms, recent.slots)
            return _Candidates(recent.ids, recent.slots, arms)
        given = tuple(arms)
        cands, priors = self._lookup(arms, given)
        # The caller may change its list later: keep a copy, in the type it came in.
        kept: Sequence[Any] = list(arms) if type(arms) is list else given
        self._recent = _Recent(kept, cands.ids, cands.slots, priors)
        return cands

    def _lookup(
        self, arms: Sequence[Arm | str], given: tuple[Any, ...]
    ) -> tuple[_Candidates, bool]:
        """Resolve candidates to slots (cached per id list); also whether any has a prior."""
        if type(arms[0]) is str:
            # Fast path: a list of ids seen before resolves with one tuple hash.
            key: tuple[Any, ...] = given
            hit = self._candidates.get(key)
            if hit is not None:
                self._candidates.move_to_end(key)
                return _Candidates(key, hit, arms), False
            ids: Sequence[str] = key
        else:
            ids = ()
        # True when every candidate is an id string (checked once: a pass over 1M ids costs).
        only_ids = bool(ids) and all(type(a) is str for a in ids)
        if not only_ids:
            ids = _ids_of(arms)
            key = tuple(ids)
            hit = self._candidates.get(key)
            if hit is not None:
                self._candidates.move_to_end(key)
                return _Candidates(ids, hit, arms), self._apply_arm_priors(arms, hit)
        if len(set(ids)) != len(ids):
            raise InvalidCandidates("candidate ids must be distinct")
        index = self._index
        fresh = [i for i in ids if i not in index] if index else list(ids)
        check_names(fresh, "arm id")
        for arm in arms:
            if type(arm) is not str:
                if not isinstance(arm, Arm):
                    raise InvalidCandidates("candidates must be arm ids (strings) or Arms")
                if arm.token_cost is not None and (
                    isinstance(arm.token_cost, bool) or not isinstance(arm.token_cost, int | float)
                    or not math.isfinite(arm.token_cost) or arm.token_cost < 0
                ):
                    raise InvalidCandidates(f"token_cost of {preview(arm.id)} must be >= 0")
                if arm.prior is not None:
                    check_prior(arm.prior)
        if len(self._ids) + len(fresh) > self.config.max_arms:
            raise LimitExceeded(f"learner {self.name!r} would exceed {self.config.max_arms} arms")
        if fresh:
            nbytes = ARM_BYTES * len(fresh) + sum(map(len, fresh))
            self._budget.require(nbytes,
                                 f"select with {len(fresh)} new arm(s) on learner {self.name!r}")
            # New ids take the next slots in the order given, as _slot would give them one
            # by one, registered in bulk (a first select of 1M ids: one dict update).
            start = len(self._ids)
            self._grow(start + len(fresh))
            index.update(zip(fresh, range(start, start + len(fresh)), strict=True))
            self._ids.extend(fresh)
            self._charge(nbytes)
        slots = np.fromiter(map(index.__getitem__, ids), dtype=np.int64, count=len(ids))
        self._cache(key, slots)
        priors = False if only_ids else self._apply_arm_priors(arms, slots)
        return _Candidates(ids, slots, arms), priors

    def _cache(self, key: tuple[Any, ...], slots: IntArray) -> None:
        """Remember a candidate list's slots, within ``_CACHE_SIZE`` lists, ``_CACHE_IDS``
        ids and the memory budget (a cache never causes a refusal: it just holds less)."""
        cost = CANDIDATE_BYTES * len(key)
        while self._candidates and (len(self._candidates) >= _CACHE_SIZE
                                    or self._cached_ids + len(key) > _CACHE_IDS):
            _, old = self._candidates.popitem(last=False)
            self._cached_ids -= old.shape[0]
            self._charge(-CANDIDATE_BYTES * old.shape[0])
        if len(key) > _CACHE_IDS or not self._budget.fits(cost):
            return
        self._candidates[key] = slots
        self._cached_ids += len(key)
        self._charge(cost)

    def _apply_arm_priors(self, arms: Sequence[Arm | str], slots: IntArray) -> bool:
        """Set the priors that candidate Arms carry; False when none carries one."""
        try:
            # All Arms (the usual case): a list comprehension's specialised attribute read
            # is about 4x cheaper per candidate than the filtered map below.
            if not any([a.prior for a in arms]):  # type: ignore[union-attr]
                return False
        except AttributeError:  # ids among the candidates
            if not any(map(_get_prior, (a for a in arms if type(a) is not str))):
                return False
        for pos, arm in enumerate(arms):
            if isinstance(arm, Arm) and arm.prior is not None:
                self._set_prior(int(slots[pos]), check_prior(arm.prior))
        return True

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

    async def select(
        self,
        arms: Sequence[Arm | str],
        context: dict[str, Any] | None = None,
        k: int = 1,
        token_budget: float | None = None,
    ) -> SelectionResult:
        """Choose up to ``k`` distinct arms among ``arms`` by the learner's strategy.

        Unknown arms start at their prior. With ``token_budget``, the best arms (in score
        order) whose ``token_cost`` sum fits are chosen. Fewer than ``k`` (fewer candidates,
        or fewer fit the budget) is not an error: ``SelectionResult.note`` says so. Never
        waits on the store.

        Raises:
            InvalidCandidates, InvalidName, InvalidContext, InvalidInput, BudgetTooSmall,
            LimitExceeded.
        """
        started = time.perf_counter()
        self._check_open()
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
            raise InvalidInput(f"k must be an integer from 1 to {MAX_K}, got {preview(k)}")
        ctx = canonical_context(context)
        cands = self._resolve(arms)
        slots = cands.slots
        now = self._now()
        chooser = self._chooser
        if chooser is not None:
            if ctx is None and self._half_life is None:
                s, f = self._s[slots], self._f[slots]
            else:
                s, f = self._evidence(slots, ctx, now)
            a0, b0 = self._a0[slots], self._b0[slots]
            alpha, beta = a0 + s, b0 + f
            scores = chooser.scores(s, f, a0, b0, self._rng)
        else:
            strategy = self._strategy
            assert strategy is not None  # one of the two is set
            if ctx is None and self._half_life is None:
                alpha, beta = self._alpha[slots], self._beta[slots]
            else:
                s, f = self._evidence(slots, ctx, now)
                alpha, beta = self._a0[slots] + s, self._b0[slots] + f
            scores = strategy.scores(alpha, beta, self._rng)
        count = slots.shape[0]
        # Positions best first, as Python ints; ties go to the earlier candidate (a policy
        # whose propensities assume random tie-breaking splits them, PolicyChooser.top).
        chosen: list[int]
        if token_budget is not None:
            order = (np.argsort(-scores, kind="stable") if chooser is None
                     else chooser.top(scores, count, self._rng))
            chosen = self._fit_budget(cands, order, k, token_budget).tolist()
        elif chooser is not None:
            chosen = chooser.top(scores, k, self._rng).tolist()
        elif k >= count:
            chosen = np.argsort(-scores, kind="stable").tolist()
        elif k == 1:
            chosen = [int(scores.argmax())]
        else:
            top = scores.argpartition(count - k)[count - k:]
            # k (negated score, position) pairs sort natively: no key function, no numpy
            # call per element.
            pairs = zip((-scores[top]).tolist(), top.tolist(), strict=True)
            chosen = [p for _, p in sorted(pairs)]
        # Exploring means taking an arm believed worse: strictly below the best mean (ties,
        # such as every candidate still at its prior, are not exploration).
        means = alpha / (alpha + beta)
        explored = bool(means[chosen[0]] < means.max())
        ids = cands.ids
        offered: list[str] = []
        if count <= MAX_OFFERED and count > len(chosen):
            taken = set(chosen)
            offered = [ids[p] for p in range(count) if p not in taken]
        chosen_ids = [ids[p] for p in chosen]
        token, nonce = self._signer.sign(self.name, ctx.body if ctx else None, chosen_ids,
                                         "select", offered, policy=self._decisions.policy)
        ctx_key = ctx.key if ctx else GLOBAL_CONTEXT
        if self._logging:
            # The snapshot to compute propensities from later: arrays this call made.
            settle = None if token_budget is not None else self._settle  # a budget fill
            if settle is None:                                          # is no ranking
                self._log_append((nonce, "select", ctx_key, now, chosen, ids, None))
            elif chooser is not None:
                self._log_append((nonce, "select", ctx_key, now, chosen, ids, settle,
                                  s, f, a0, b0, scores))
            else:
                self._log_append((nonce, "select", ctx_key, now, chosen, ids, settle,
                                  alpha, beta))
            decisions = self._decisions
            decisions.held += count
            if decisions.held > decisions.max_pending:
                decisions.settle_all()
        selected = self._scored(cands, chosen, scores, alpha, beta,
                                SelectPropensities(self._decisions, nonce)
                                if self._logging else None)
        pending, sel, last_sel = self._pending, self._sel, self._last_sel
        slot_at = slots.item
        for slot in map(slot_at, chosen):
            sel[slot] += 1
            last_sel[slot] = now
            pending[slot] = pending.get(slot, 0) + 1
        self._selections += 1
        self._pending_selections += 1
        if explored:
            self._explored += 1
            self._pending_explored += 1
        if _debug_on(logging.DEBUG):
            log.debug("select", learner=self.name, candidates=count, arms=[a.id for a in selected],
                      explored=explored,
                      latency_ms=round((time.perf_counter() - started) * 1e3, 3))
        note = None
        if len(chosen) < k:
            note = (f"only {count} candidate(s) for k={k}: all are returned" if count < k else
                    f"only {len(chosen)} of k={k} fit token_budget={token_budget:g}")
        return SelectionResult(selected, token, self.name, ctx_key, self._strategy_name,
                               explored, count, k, note)

    @staticmethod
    def _scored(
        cands: _Candidates, chosen: list[int], scores: FloatArray, alpha: FloatArray,
        beta: FloatArray, lazy: SelectPropensities | None,
    ) -> tuple[ScoredArm, ...]:
        ids, given = cands.ids, cands.arms
        score, alpha_at, beta_at = scores.item, alpha.item, beta.item
        out = []
        for i, pos in enumerate(chosen):
            arm = given[pos]
            a, b = alpha_at(pos), beta_at(pos)
            if type(arm) is str:
                out.append(scored_arm(ids[pos], score(pos), a / (a + b), a, b, i + 1, None, None,
                                      lazy))
            else:
                out.append(scored_arm(ids[pos], score(pos), a / (a + b), a, b, i + 1,
                                      arm.token_cost, arm.metadata,  # type: ignore[union-attr]
                                      lazy))
        return tuple(out)

    @staticmethod
    def _fit_budget(
        cands: _Candidates, order: IntArray, k: int, budget: float
    ) -> IntArray:
        """The best positions (``order``: all of them, best first) whose costs fit."""
        if isinstance(budget, bool) or not isinstance(budget, int | float) or not (
            math.isfinite(budget) and budget >= 0
        ):
            raise InvalidInput(f"token_budget must be a number >= 0, got {preview(budget)}")
        # Checked here, where costs are used: a cached candidate list skips _resolve's checks.
        costs = []
        for arm in cands.arms:
            cost = arm.token_cost if isinstance(arm, Arm) else None
            if cost is None:
                costs.append(0.0)
            elif isinstance(cost, bool) or not isinstance(cost, int | float) or not (
                math.isfinite(cost) and cost >= 0
            ):
                raise InvalidCandidates(f"token_cost of {preview(arm)} must be a number >= 0")
            else:
                costs.append(float(cost))
        picked: list[int] = []
        spent = 0.0
        for pos in order.tolist():
            cost = costs[pos]
            if spent + cost <= budget:
                picked.append(pos)
                spent += cost
                if len(picked) == k:
                    break
        if not picked:
            raise BudgetTooSmall(f"no candidate fits token_budget {budget}")
        return np.asarray(picked, dtype=np.int64)

    # --- feedback --------------------------------------------------------------------------

    def verify_selection(self, selection_id: str) -> SelectionClaims:
        """The claims of an unexpired selection id this learner issued.

        Raises:
            InvalidSelection: not an id this learner issued.
            SelectionExpired: older than ``config.selection_ttl_s`` (0: never expires).
        """
        return self._signer.verify(selection_id, self.name, ttl_s=self.config.selection_ttl_s)

    def issue_selection(
        self,
        arm_ids: Sequence[str],
        context: dict[str, Any] | None,
        kind: str = "rerank",
        *,
        means: Sequence[float] = (),
        candidates: Sequence[str] | None = None,
        propensities: Sequence[float | None] | None = None,
    ) -> tuple[str, SelectionClaims]:
        """Sign a selection of ``arm_ids`` (display order) made outside ``select`` and log
        it as a decision; ``means`` (one per arm) are signed with it (the reranker's click
        model reads them). ``candidates``: everything it chose from (default: the arms
        shown); ``propensities``: one per shown arm, when the caller knows them."""
        ctx = canonical_context(context)
        for arm_id in arm_ids:
            if arm_id not in self._index:
                check_name(arm_id, "arm id")
        shown = list(arm_ids)
        chosen_kind: Literal["select", "rerank"] = "rerank" if kind == "rerank" else "select"
        token, claims = self._signer.issue(self.name, ctx.body if ctx else None, shown,
                                           chosen_kind, means=means)
        if shown and self._logging:
            known = None if propensities is None else tuple(propensities)
            if known is not None and len(known) != len(shown):
                raise InvalidInput("propensities must give one value per arm shown")
            offered = shown if candidates is None else list(candidates)
            where = {arm: i for i, arm in enumerate(offered)}
            positions = [where[arm] for arm in shown]  # KeyError: not among the candidates
            self._log_append((claims.nonce, chosen_kind, ctx.key if ctx else GLOBAL_CONTEXT,
                              self._now(), positions, offered,
                              None if known is None else known_propensities, known))
            self._decisions.held += len(offered)
        return token, claims

    def _reward(self, outcome: ArmOutcome) -> tuple[float, str | None]:
        raw = outcome.outcome
        text: str | None
        if raw is None:
            text = None
        elif isinstance(raw, str):
            text = raw
        elif isinstance(raw, ToolExecution):
            text = json.dumps({"success": raw.success, "latency_ms": raw.latency_ms,
                               "rating": raw.rating}, separators=(",", ":"))
        else:
            raise InvalidOutcome(f"outcome must be a word or a ToolExecution: {preview(raw)}")
        if outcome.reward is not None:
            if raw is not None:
                self._reward_model(raw)  # still refuse unknown words
            return check_reward(outcome.reward), text
        if raw is None:
            raise InvalidOutcome("give an outcome word or a reward in [0, 1]")
        return check_reward(self._reward_model(raw)), text

    def _prepare(self, outcome: ArmOutcome, now: float, selects: set[str],
                 unknown: set[str]) -> FeedbackRow:
        """Check one feedback and build its row; the nonce of a select it quotes goes into
        ``selects``, the nonce of a decision this learner's log does not hold (its
        propensity is read from the store) into ``unknown``."""
        if not isinstance(outcome, ArmOutcome):
            raise InvalidInput("feedback must be an ArmOutcome")
        arm = check_name(outcome.arm_id, "arm id")
        reward, text = self._reward(outcome)
        weight = check_weight(outcome.weight)
        propensity: float | None = None
        policy: str | None = None
        if outcome.selection_id is not None:
            claims = self.verify_selection(outcome.selection_id)
            if not claims.chose(arm):
                if not claims.covers(arm):
                    raise ArmNotInSelection(
                        f"arm {preview(arm)} was not part of this selection; feedback applies "
                        "only to the arms it chose"
                    )
                if not self.config.accept_unchosen_feedback:
                    raise ArmNotChosen(
                        f"arm {preview(arm)} was offered but not chosen; only the chosen arms "
                        "of a select can get feedback on that selection"
                    )
            if claims.kind == "next":
                raise InvalidSelection(
                    "this selection_id is a next-tool suggestion; send its feedback with "
                    "NextToolModel.feedback (qortex_feedback routes it there)"
                )
            ctx = canonical_context(json.loads(claims.context)) if claims.context else None
            key = claims.nonce
            if claims.kind == "select":
                selects.add(key)
            policy = claims.policy
            decision = self._decisions.find(key)
            if decision is not None:
                propensity = decision_propensity(decision, arm)
                policy = decision.policy
            elif self._logging:
                unknown.add(key)
        else:
            ctx = canonical_context(outcome.context)
            if outcome.idempotency_key is not None:
                key = "key:" + check_name(outcome.idempotency_key, "idempotency_key")
            else:
                key = "bare:" + secrets.token_urlsafe(16)
        slot = self._index.get(arm)
        a0 = b0 = None
        if slot is not None and slot in self._custom_prior:
            a0, b0 = float(self._a0[slot]), float(self._b0[slot])
        return FeedbackRow(
            key=key, arm=arm, ctx=ctx.key if ctx else GLOBAL_CONTEXT,
            ctx_body=ctx.body if ctx else None, reward=reward, weight=weight, outcome=text,
            at=now, a0=a0, b0=b0, propensity=propensity, policy=policy,
        )

    async def _logged(self, unknown: set[str]) -> dict[str, Decision]:
        """The decisions under ``unknown`` keys in the store's decision log: those this
        learner's log did not hold (one not written yet, e.g. made by another instance
        less than a flush ago, or lost in a crash, is missing: its rows keep None)."""
        return {d.key: d for d in await self.store.decisions(self.name, keys=sorted(unknown))}

    @staticmethod
    def _with_logged(rows: list[FeedbackRow], found: dict[str, Decision]) -> list[FeedbackRow]:
        if not found:
            return rows
        return [r if r.key not in found else dataclasses.replace(
            r, propensity=decision_propensity(found[r.key], r.arm),
            policy=found[r.key].policy) for r in rows]

    async def observe(self, outcome: ArmOutcome) -> FeedbackResult:
        """Apply one feedback; returns after it is durable.

        Raises:
            InvalidReward, InvalidOutcome, InvalidName, InvalidContext: bad input.
            InvalidSelection, SelectionExpired, ArmNotInSelection: a bad selection id.
            SelectionConflict: this arm of this selection was answered with another reward.
            StoreError: the store failed (retryable codes are safe to retry).
        """
        return (await self.batch_observe([outcome]))[0]

    async def batch_observe(self, outcomes: Sequence[ArmOutcome]) -> list[FeedbackResult]:
        """Apply many feedbacks in one transaction: all are checked first, and if any is
        invalid or conflicts, nothing is applied. Order does not matter."""
        started = time.perf_counter()
        self._check_open()
        if isinstance(outcomes, ArmOutcome) or not isinstance(outcomes, Sequence):
            raise InvalidInput("batch_observe takes a list of ArmOutcome")
        if not outcomes:
            return []
        now = self._now()
        selects: set[str] = set()
        unknown: set[str] = set()
        rows = [self._prepare(o, now, selects, unknown) for o in outcomes]
        if unknown:
            rows = self._with_logged(rows, await self._logged(unknown))
        result = await self._apply_rows(rows)
        # Selections (of select, not rerank) answered for the first time: feedback rate.
        first = len(result.new_keys & selects) if selects else 0
        self._answered += first
        self._pending_answered += first
        out = []
        for status, row in zip(result.statuses, rows, strict=True):
            slot = self._slot(row.arm)
            ctx = None if row.ctx == GLOBAL_CONTEXT else CanonicalContext(row.ctx, "")
            s, f = self._evidence(np.array([slot]), ctx, now)
            alpha, beta = float(self._a0[slot] + s[0]), float(self._b0[slot] + f[0])
            pulls = int(self._n[slot]) if ctx is None else int(
                self._ctx.get(row.ctx, {}).get(slot, [0, 0, 0])[2])
            out.append(FeedbackResult(
                arm_id=row.arm, status="applied" if status == "applied" else "duplicate",
                reward=row.reward, alpha=alpha, beta=beta, mean=alpha / (alpha + beta),
                pulls=pulls, selection_id=None if row.key.startswith(("key:", "bare:")) else
                row.key, context_key=row.ctx,
            ))
        if _debug_on(logging.DEBUG):
            log.debug("observe", learner=self.name, arms=[r.arm for r in rows],
                      rewards=[r.reward for r in rows], statuses=list(result.statuses),
                      latency_ms=round((time.perf_counter() - started) * 1e3, 3))
        return out

    async def _apply_rows(
        self, rows: Sequence[FeedbackRow], rated: Sequence[FeedbackRow] | None = None
    ) -> ApplyResult:
        """Admit, durably apply and absorb checked feedback rows (all or none).

        ``rated`` are the rows the rate caps count (default: all); the next-tool model
        writes one row per n-gram level of a transition and counts the transition once.

        Raises:
            LimitExceeded, RateLimited: refused before anything is written.
            SelectionConflict: a row was answered before with another reward.
            StoreError: the store failed.
        """
        self._admit(rows, rows if rated is None else rated)
        await self._ensure_stored()
        result = await self.store.apply(self.name, rows, self._half_life)
        for status, row, standing in zip(result.statuses, rows, result.standing, strict=True):
            if status == "conflict":
                raise SelectionConflict(
                    f"arm {preview(row.arm)} of this selection was already answered with reward "
                    f"{standing}; the first answer stands"
                )
        self._absorb(result.rows)
        if self._changes is not None:
            await self._detect_changes(rows, result.statuses)
        return result

    async def _detect_changes(self, rows: Sequence[FeedbackRow],
                              statuses: Sequence[RowStatus]) -> None:
        """Feed the committed rewards to the arms' change tests; shrink the evidence of an
        arm whose test alarms (``qortex_mcp.learning.changes``). The feedback is already
        durable: a store failure here is logged and does not fail the feedback."""
        tests = self._changes
        assert tests is not None
        fired = [row.arm for row, status in zip(rows, statuses, strict=True)
                 if status == "applied" and tests.observe(row.arm, row.reward)]
        if not fired:
            return
        # What to shrink ("" = every arm: one global restart) -> the arm that alarmed.
        targets = {arm: arm for arm in fired}
        if tests.test.all_arms:
            targets = {"": fired[0]}
            tests.clear()
        for arm, cause in targets.items():
            log.info(CHANGE_DETECTED, learner=self.name, arm=cause,
                     scope="arm" if arm else "all arms", shrink=tests.test.shrink)
            try:
                await self._decay(arm, tests.test.shrink, CHANGE_DETECTED)
            except StoreError as exc:
                log.warning("change_decay_failed", learner=self.name, arm=arm, code=exc.code)

    def _watch(self, listener: Callable[[Sequence[EvidenceRow]], None]) -> None:
        """Call ``listener`` with the evidence rows the cache took in (feedback, another
        process's rows, decay, reset), after it took them; the next-tool model keeps its
        per-level arrays current this way (reading the cache, which skips stale rows).
        ``listener`` is a bound method, held weakly: a model dropped stops listening."""
        self._listeners.append(weakref.WeakMethod(listener))

    async def observe_many(
        self, requests: Sequence[Sequence[ArmOutcome]]
    ) -> list[tuple[RowStatus, ...] | QortexError]:
        """Apply independent feedback requests together (the stream consumers' batch path).

        Each request is checked and applied as by ``batch_observe``, on its own: one that
        is invalid or conflicts changes nothing and its error takes its place in the
        result; the others are handed to the store at once, which commits them in one
        transaction when it group-commits (SQLite, PostgreSQL). Returns, per request, its
        per-arm statuses (``applied`` or ``duplicate``) or its error, after the commit.
        Unlike ``batch_observe`` it builds no posterior per arm (a stream has no one to
        answer).

        Raises:
            StoreError: the store failed; which requests committed is unknown (retrying
                them all is safe: each is deduplicated by its keys).
        """
        self._check_open()
        now = self._now()
        out: list[tuple[RowStatus, ...] | QortexError] = []
        ready: list[tuple[int, list[FeedbackRow], set[str]]] = []
        unknown: set[str] = set()
        for i, outcomes in enumerate(requests):
            selects: set[str] = set()
            try:
                if not outcomes:
                    raise InvalidInput("a feedback request needs at least one outcome")
                rows = [self._prepare(o, now, selects, unknown) for o in outcomes]
                self._admit(rows, rows)
            except QortexError as exc:
                out.append(exc)
                continue
            out.append(())
            ready.append((i, rows, selects))
        if not ready:
            return out
        if unknown:
            found = await self._logged(unknown)
            ready = [(i, self._with_logged(rows, found), sel) for i, rows, sel in ready]
        await self._ensure_stored()
        # First as one request (one decision, one write): a request with a conflicting row
        # writes nothing, so if any conflicts, nothing was written and the requests are
        # applied again each on its own, the conflicting ones then alone refused.
        merged = await self.store.apply(self.name, [r for _, rows, _ in ready for r in rows],
                                        self._half_life)
        if "conflict" not in merged.statuses:
            self._absorb(merged.rows)
            if self._changes is not None:
                await self._detect_changes([r for _, rows, _ in ready for r in rows],
                                           merged.statuses)
            selects = set().union(*(sel for _, _, sel in ready))
            first = len(merged.new_keys & selects) if selects else 0
            self._answered += first
            self._pending_answered += first
            k = 0
            for i, rows, _ in ready:
                out[i] = merged.statuses[k:k + len(rows)]
                k += len(rows)
            return out
        results = await apply_many(self.store, self.name, [r for _, r, _ in ready],
                                   self._half_life)
        for (i, rows, selects), result in zip(ready, results, strict=True):
            if "conflict" in result.statuses:
                k = result.statuses.index("conflict")
                out[i] = SelectionConflict(
                    f"arm {preview(rows[k].arm)} of this selection was already answered with "
                    f"reward {result.standing[k]}; the first answer stands")
                continue
            self._absorb(result.rows)
            if self._changes is not None:
                await self._detect_changes(rows, result.statuses)
            first = len(result.new_keys & selects) if selects else 0
            self._answered += first
            self._pending_answered += first
            out[i] = result.statuses
        return out

    # --- cache maintenance -----------------------------------------------------------------

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

    async def refresh(self) -> None:
        """Pull changes made by other processes now (inspection calls do this themselves)."""
        self._check_open()
        await self._sync()

    async def _refresh_loop(self) -> None:
        while not self._closed:  # also a cancellation a driver swallowed ends it (tasks.py)
            await self.store.wait_for_change(self.name, self._refresh_interval)
            try:
                await self._sync()
            except QortexError as exc:
                log.warning("learner_refresh_failed", learner=self.name, code=exc.code)

    async def _flush(self) -> None:
        if not (self._pending or self._pending_priors or self._pending_selections
                or self._pending_answered or len(self._decisions)):
            return
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
            raise

    async def _flush_loop(self) -> None:
        while not self._closed:
            await asyncio.sleep(self._flush_interval)
            try:
                await self._flush()
            except QortexError as exc:
                log.warning("learner_flush_failed", learner=self.name, code=exc.code)

    async def flush(self) -> None:
        """Write pending selection statistics now."""
        self._check_open()
        await self._flush()

    # --- inspection ------------------------------------------------------------------------

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

    async def posteriors(
        self,
        arm_ids: Sequence[str] | None = None,
        context: dict[str, Any] | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[Posterior]:
        """Posteriors of the given arms (all known arms by id when None), in ``context``;
        ``offset`` and ``limit`` pick a page of them (in that order)."""
        self._check_open()
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise InvalidInput(f"offset must be a whole number >= 0, got {preview(offset)}")
        ctx = canonical_context(context)
        await self._sync()
        slots = self._slots_for(arm_ids)[offset:]
        if limit is not None:
            slots = slots[:limit]
        now = self._now()
        return [self._posterior(slot, ctx, now) for slot in slots]

    async def top_arms(self, k: int = 5, context: dict[str, Any] | None = None) -> list[Posterior]:
        """The ``k`` arms with the highest posterior mean (in ``context``)."""
        self._check_open()
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise InvalidInput(f"k must be a positive integer, got {preview(k)}")
        ctx = canonical_context(context)
        await self._sync()
        count = len(self._ids)
        if not count:
            return []
        slots = np.arange(count, dtype=np.int64)
        s, f = self._evidence(slots, ctx, self._now())
        means = (self._a0[:count] + s) / (self._a0[:count] + s + self._b0[:count] + f)
        order = np.lexsort((np.array(self._ids, dtype=object), -means))[:k]
        now = self._now()
        return [self._posterior(int(slot), ctx, now) for slot in order]

    async def arm_arrays(self, context: dict[str, Any] | None = None) -> ArmArrays:
        """Every known arm's posterior parameters and counts as numpy arrays (copies), in
        the order arms were first seen: one pass for views over thousands of arms."""
        self._check_open()
        ctx = canonical_context(context)
        await self._sync()
        count = len(self._ids)
        s, f = self._evidence(np.arange(count, dtype=np.int64), ctx, self._now())
        return ArmArrays(
            ids=tuple(self._ids), alpha=self._a0[:count] + s, beta=self._b0[:count] + f,
            pulls=self._n[:count].copy(), selections=self._sel[:count].copy(),
            reward_sum=self._rsum[:count].copy(), last_update=self._t[:count].copy(),
        )

    async def metrics(self) -> LearnerMetrics:
        """Selections, feedback, reward rates, feedback rate and measured exploration."""
        self._check_open()
        await self._sync()
        arms = []
        feedback = 0
        last: float | None = None
        for slot in sorted(range(len(self._ids)), key=self._ids.__getitem__):
            n = int(self._n[slot])
            feedback += n
            a = float(self._a0[slot] + self._s[slot])
            b = float(self._b0[slot] + self._f[slot])
            t = float(self._t[slot]) if n else None
            if t is not None:
                last = t if last is None else max(last, t)
            ls = float(self._last_sel[slot])
            arms.append(ArmMetrics(
                id=self._ids[slot], selections=int(self._sel[slot]), feedback=n,
                reward_rate=float(self._rsum[slot]) / n if n else None, mean=a / (a + b),
                last_selected=None if math.isnan(ls) else ls, last_update=t,
            ))
        # Counters of other processes sharing the store are read at start only, so their
        # later answers can outnumber the selections seen here: the share stays <= 1.
        rate = min(1.0, self._answered / self._selections) if self._selections else None
        return LearnerMetrics(
            learner=self.name, selections=self._selections, explored=self._explored,
            feedback=feedback, feedback_rate=rate,
            exploration_rate=self._explored / self._selections if self._selections else None,
            arms=tuple(arms), last_update=last, answered=self._answered,
        )

    async def evidence(
        self, arm_ids: Sequence[str], context: dict[str, Any] | None = None
    ) -> tuple[FloatArray, FloatArray]:
        """Learned successes and failures (decayed, backed off) per id; unknown ids get 0.

        For callers that bring their own prior (the reranker uses retrieval scores).
        """
        self._check_open()
        ctx = canonical_context(context)
        slots = np.fromiter((self._index.get(i, -1) for i in arm_ids), dtype=np.int64,
                            count=len(arm_ids))
        known = slots >= 0
        s = np.zeros(len(arm_ids))
        f = np.zeros(len(arm_ids))
        if known.any():
            ks, kf = self._evidence(slots[known], ctx, self._now())
            s[known], f[known] = ks, kf
        return s, f

    # --- maintenance -----------------------------------------------------------------------

    async def decay_arm(self, arm_id: str, factor: float) -> Posterior:
        """Shrink an arm's learned evidence toward its prior: evidence *= ``factor``."""
        self._check_open()
        slot = self._slots_for([arm_id])[0]
        await self._decay(arm_id, factor)
        return self._posterior(slot, None, self._now())

    async def decay(self, factor: float) -> None:
        """Shrink every arm's learned evidence toward its prior."""
        self._check_open()
        await self._decay("", factor)

    async def _decay(self, arm: str, factor: float, reason: str | None = None) -> None:
        if isinstance(factor, bool) or not isinstance(factor, int | float) or not (
            math.isfinite(factor) and 0.0 <= factor <= 1.0
        ):
            raise InvalidInput(f"factor must be a number in [0, 1], got {preview(factor)}")
        await self._ensure_stored()
        rows = await self.store.decay(self.name, arm, float(factor), self._now(), reason)
        self._absorb(rows)
        log.info("decay", learner=self.name, arm=arm or "*", factor=factor, reason=reason)

    async def reset(
        self,
        arm_ids: Sequence[str] | None = None,
        context: dict[str, Any] | None = None,
        *,
        dry_run: bool = False,
    ) -> ResetReport:
        """Forget learned evidence of the given arms (all when None), in ``context`` (every
        context and the global posterior when None). ``dry_run`` only reports."""
        self._check_open()
        ctx = canonical_context(context)
        arms = None if arm_ids is None else [self._ids[s] for s in self._slots_for(arm_ids)]
        if not dry_run:
            await self._ensure_stored()
        touched, rows, removed = await self.store.reset(
            self.name, arms, None if ctx is None else ctx.key, self._now(), dry_run
        )
        if not dry_run:
            await self._sync()
            log.info("reset", learner=self.name, arms=len(touched), rows=rows)
        return ResetReport(self.name, not dry_run, touched, rows, removed,
                           None if ctx is None else ctx.key)

    async def replay(self) -> ReplayReport:
        """Rebuild every posterior from the event log and compare with the stored state."""
        self._check_open()
        fold = EventFold(self._half_life)
        async for page in event_pages(self.store, self.name, bodies=False):
            fold.add(page)
        stored = await self.store.evidence(self.name)
        return replay_events(self.name, fold, stored, self._half_life)
