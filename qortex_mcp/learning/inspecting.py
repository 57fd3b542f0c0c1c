"""Reading what a learner learned (posteriors, top arms, metrics, evidence) and the
maintenance that changes it by hand (decay, reset) or checks it (replay).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from qortex_mcp.errors import (
    InvalidInput,
    preview,
)
from qortex_mcp.learning.context import canonical_context
from qortex_mcp.learning.observing import Observing
from qortex_mcp.learning.replay import EventFold, replay_events
from qortex_mcp.learning.stores.base import event_pages
from qortex_mcp.learning.types import (
    ArmArrays,
    ArmMetrics,
    LearnerMetrics,
    Posterior,
    ReplayReport,
    ResetReport,
)
from qortex_mcp.logging import get_logger

__all__ = ["Inspecting"]

log = get_logger(__name__)

FloatArray = npt.NDArray[np.float64]


class Inspecting(Observing):
    """Inspection and maintenance."""

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

