"""A learner's decision log: what each ``select`` and ``rerank`` chose, with propensities.

``select`` files its decision as one tuple and computes nothing more: the arrays it scored
from are its own copies, and they stay with the pending decision as its snapshot. Its
propensities are computed later, off the select path ("settled"): when the next flush
takes the log, or at once when a feedback quotes the decision first. Taken decisions are
written in the flush's transaction with the selection counters (write-behind, like those
counters: a crash loses at most the decisions of the last flush interval; never a
feedback, which carries its own strategy version and, when known, propensity).

Decisions not yet written stay findable, and the latest ``remembered`` written ones stay in
memory, so feedback finds its propensity without reading the store; an older one is read
from the store's log. Pending snapshots are bounded by the candidates they hold
(``max_pending``): past that, they are settled at once. Decisions a failing store keeps
from being written are bounded too (``max_unwritten``: the oldest are dropped, counted in
``dropped``).
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
    def __init__(self, policy: str, remembered: int = 16_384, max_pending: int = 1 << 20,
                 max_unwritten: int = 200_000) -> None:
        self.policy = policy
        """The strategy version every decision of this log carries."""
        self.pending: dict[str, Pending] = {}
        """Key -> decision, set by ``select`` (``pending.__setitem__`` is bound once)."""
        self.held = 0
        """Candidates held by pending snapshots; ``select`` adds its count."""
        self.max_pending = max_pending
        self.dropped = 0
        """Decisions dropped unwritten, oldest first, past ``max_unwritten`` (while the
        store refuses the flushes)."""
        self._settling: dict[str, Pending] = {}  # taken by a flush, being settled
        self._unwritten: dict[str, Decision] = {}  # settled, not yet written
        self._known: OrderedDict[str, Decision] = OrderedDict()  # written, the latest ones
        self._remembered = remembered
        self._max_unwritten = max_unwritten

    def __len__(self) -> int:
        """Decisions not yet written."""
        return len(self.pending) + len(self._settling) + len(self._unwritten)

    def add(self, entry: Pending) -> None:
        """Add a pending decision (what ``select`` does inline), within ``max_pending``."""
        self.pending[entry[0]] = entry
        self.held += len(entry[5])
        if self.held > self.max_pending:
            self.settle_all()

    def _settle(self, entry: Pending) -> Decision:
        key, kind, ctx, at, chosen, candidates, settle, *snapshot = entry
        n = len(candidates)
        self.held -= n
        props = (None,) * len(chosen) if settle is None else settle(chosen, *snapshot)
        d = Decision(key=key, kind=kind, ctx=ctx, at=at, policy=self.policy,
                     chosen=tuple(candidates[p] for p in chosen), propensities=props,
                     candidates=tuple(candidates) if n <= MAX_LOGGED else None,
                     n_candidates=n)
        unwritten = self._unwritten
        unwritten[key] = d
        if len(unwritten) > self._max_unwritten:
            del unwritten[next(iter(unwritten))]
            self.dropped += 1
        return d

    def find(self, key: str) -> Decision | None:
        """The decision logged under ``key`` (settled now if it was pending), or None when
        this log does not hold it (made elsewhere, before a restart, or long ago)."""
        found = self._unwritten.get(key) or self._known.get(key)
        if found is not None:
            return found
        entry = self.pending.pop(key, None) or self._settling.pop(key, None)
        return None if entry is None else self._settle(entry)

    def settle_all(self) -> None:
        """Settle every pending decision now (``select`` does, past ``max_pending``)."""
        pending = self.pending
        while pending:
            self._settle(pending.pop(next(iter(pending))))

    async def take(self) -> list[Decision]:
        """Settle every pending decision and hand over all unwritten ones (oldest first),
        yielding to the event loop every few milliseconds of work. A decision stays
        findable while it waits (feedback may quote it meanwhile); decisions made
        meanwhile wait for the next flush."""
        batch = self._settling
        batch.update(self.pending)
        self.pending.clear()
        deadline = time.perf_counter() + _SLICE_S
        while batch:
            self._settle(batch.pop(next(iter(batch))))
            if time.perf_counter() > deadline:
                await asyncio.sleep(0)
                deadline = time.perf_counter() + _SLICE_S
        out = list(self._unwritten.values())
        self._unwritten.clear()
        return out

    def written(self, decisions: list[Decision]) -> None:
        """Decisions the store now holds: remembered (the latest ``remembered``) so that
        feedback finds them without reading the store."""
        known = self._known
        for d in decisions:
            known[d.key] = d
        while len(known) > self._remembered:
            known.popitem(last=False)

    def put_back(self, decisions: list[Decision]) -> None:
        """Decisions a failed flush took: the next flush writes them (before newer ones)."""
        newer = self._unwritten
        self._unwritten = {d.key: d for d in decisions}
        self._unwritten.update(newer)
        while len(self._unwritten) > self._max_unwritten:
            del self._unwritten[next(iter(self._unwritten))]
            self.dropped += 1


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
            if found is None:  # not cached: the store may have it later
                return None
            value = self._value = found.propensities
        return value[slot] if slot < len(value) else None
