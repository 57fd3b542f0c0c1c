"""A learner's decision log: what each ``select`` and ``rerank`` chose, with propensities.

``select`` appends its decision as one tuple and computes nothing more: the arrays it scored
from are its own copies, and they stay with the pending decision as its snapshot. Its
propensities are computed later, off the select path ("settled"): when the next flush
takes the log, or at once when a feedback quotes the decision first. Taken decisions are
written in the flush's transaction with the selection counters (write-behind, like those
counters: a crash loses at most the decisions of the last flush interval; never a
feedback, which carries its own strategy version and, when known, propensity).

The latest ``remembered`` settled decisions stay in memory, so feedback finds its
propensity without reading the store; an older one is read from the store's log. Pending
snapshots are bounded by the candidates they hold (``max_pending``): past that, the next
``select`` settles them at once.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, Final

from qortex_mcp.learning.stores.decision_rows import MAX_LOGGED
from qortex_mcp.learning.types import Decision

__all__ = ["DecisionLog", "Pending", "SelectPropensities", "Settle", "known_propensities"]

Settle = Callable[..., tuple[float | None, ...]]
"""``settle(chosen, *snapshot)``: a pending decision's propensities, one per chosen arm."""

Pending = tuple[Any, ...]
"""A decision as ``select`` appends it: (key, kind, ctx, at, chosen positions, candidate
ids, settle or None (no propensities), *snapshot). Nothing in it is copied: the caller
never changes what it hands over."""

_SLICE_S: Final = 0.005
"""``take`` yields to the event loop after this much settling (selects keep flowing)."""


def known_propensities(chosen: Sequence[int], given: tuple[float | None, ...]
                       ) -> tuple[float | None, ...]:
    """The ``Settle`` of a decision whose propensities its maker knew (a rerank)."""
    return given


class DecisionLog:
    def __init__(self, policy: str, remembered: int = 16_384,
                 max_pending: int = 1 << 20) -> None:
        self.policy = policy
        """The strategy version every decision of this log carries."""
        self.pending: list[Pending | None] = []
        """Appended to by ``select`` (``pending.append`` is bound once); settled entries
        become None until ``take`` drops them."""
        self.held = 0
        """Candidates held by pending snapshots; ``select`` adds its count."""
        self.max_pending = max_pending
        self._settled: list[Decision] = []  # settled, not yet taken by a flush
        self._known: OrderedDict[str, Decision] = OrderedDict()
        self._remembered = remembered

    def __len__(self) -> int:
        """Decisions (at most) not yet taken by a flush."""
        return len(self.pending) + len(self._settled)

    def _settle(self, entry: Pending) -> Decision:
        key, kind, ctx, at, chosen, candidates, settle, *snapshot = entry
        n = len(candidates)
        self.held -= n
        props = (None,) * len(chosen) if settle is None else settle(chosen, *snapshot)
        d = Decision(key=key, kind=kind, ctx=ctx, at=at, policy=self.policy,
                     chosen=tuple(candidates[p] for p in chosen), propensities=props,
                     candidates=tuple(candidates) if n <= MAX_LOGGED else None,
                     n_candidates=n)
        self._settled.append(d)
        known = self._known
        known[key] = d
        if len(known) > self._remembered:
            known.popitem(last=False)
        return d

    def find(self, key: str) -> Decision | None:
        """The decision logged under ``key`` (settled now if it was pending), or None when
        this log does not hold it (made elsewhere, before a restart, or long ago)."""
        found = self._known.get(key)
        if found is not None:
            return found
        pending = self.pending
        for i in range(len(pending) - 1, -1, -1):  # feedback quotes recent decisions
            entry = pending[i]
            if entry is not None and entry[0] == key:
                pending[i] = None
                return self._settle(entry)
        return None

    def settle_all(self) -> None:
        """Settle every pending decision now (``select`` does, past ``max_pending``)."""
        pending = self.pending
        for i, entry in enumerate(pending):
            if entry is not None:
                pending[i] = None
                self._settle(entry)
        pending.clear()

    async def take(self) -> list[Decision]:
        """Settle every pending decision and hand over all untaken ones (oldest first),
        yielding to the event loop every few milliseconds of work. A decision stays
        findable while it waits (feedback may quote it meanwhile)."""
        pending = self.pending
        deadline = time.perf_counter() + _SLICE_S
        i = 0
        while i < len(pending):
            entry = pending[i]
            if entry is not None:
                pending[i] = None
                self._settle(entry)
            i += 1
            if time.perf_counter() > deadline:
                await asyncio.sleep(0)
                deadline = time.perf_counter() + _SLICE_S
        del pending[:i]
        out, self._settled = self._settled, []
        return out

    def put_back(self, decisions: list[Decision]) -> None:
        """Decisions a failed flush took: the next flush writes them (before newer ones)."""
        self._settled[:0] = decisions


class SelectPropensities:
    """One select's propensities for its ``ScoredArm``s (``types.LazyPropensities``): asked
    of the log on first read, which settles the decision then if it is still pending."""

    __slots__ = ("_key", "_log", "_value")

    def __init__(self, log: DecisionLog, key: str) -> None:
        self._log, self._key = log, key
        self._value: tuple[float | None, ...] | None = None

    def get(self, slot: int) -> float | None:
        value = self._value
        if value is None:
            found = self._log.find(self._key)
            value = self._value = () if found is None else found.propensities
        return value[slot] if slot < len(value) else None
