"""Rebuild posteriors from the event log: the store's state must equal prior + events.

The event log is the oracle. Folding every ``feedback`` event, applying ``decay`` and
``reset`` events in log order, must reproduce each stored evidence row; anything else is a
mismatch worth reporting (and a bug worth a test).

The fold is commutative (``stores.base``: a row holds its evidence as of its latest event
time), so a run of feedback events between two decay or reset events folds in one
vectorised step per page: with a half-life ``h`` a row ends at ``T = max(t, at_i)`` holding
``s * 0.5**((T - t) / h) + sum(ws_i * 0.5**((T - at_i) / h))``, which is what event-by-event
``stores.base.fold`` computes, up to rounding. Pages stream from the store, so memory is the
rows plus a page, whatever the length of the log.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Sequence
from itertools import compress, repeat

import numpy as np
import numpy.typing as npt

from qortex_mcp.learning.types import (
    GLOBAL_CONTEXT,
    Event,
    EventRow,
    EvidenceRow,
    ReplayMismatch,
    ReplayReport,
)

__all__ = ["EventFold", "fold_events", "replay_events"]

_REL_TOL = 1e-9
# EventRow columns
_KIND, _ARM, _CTX, _REWARD, _WEIGHT, _AT, _FACTOR = 1, 3, 4, 5, 6, 8, 9
_KINDS = operator.itemgetter(_KIND)
_ARMS = operator.itemgetter(_ARM)
_CTXS = operator.itemgetter(_CTX)
_ATS = operator.itemgetter(_AT)
_WEIGHTS = operator.itemgetter(_WEIGHT)
_REWARDS = operator.itemgetter(_REWARD)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


class EventFold:
    """Evidence rows (s, f, n, t) per (ctx, arm), folded from events fed in log order."""

    def __init__(self, half_life_s: float | None) -> None:
        self.half_life_s = half_life_s
        self.events = 0
        self._index: dict[tuple[str, str], int] = {}
        self._global: dict[str, int] = {}  # arm -> its global row (the common lookup)
        self._keys: list[tuple[str, str]] = []
        self._s = np.zeros(0)
        self._f = np.zeros(0)
        self._n = np.zeros(0, dtype=np.int64)
        self._t = np.zeros(0)
        self._new_t: list[float] = []

    def add(self, events: Sequence[EventRow]) -> None:
        """Fold ``events`` (the next rows of the log, in ``seq`` order)."""
        self.events += len(events)
        kinds = list(map(_KINDS, events))
        if kinds.count("feedback") == len(kinds):  # the common page: no decay or reset
            self._feedback(events)
            return
        start = 0
        for i, kind in enumerate(kinds):
            if kind != "feedback":
                self._feedback(events[start:i])
                self._barrier(events[i])
                start = i + 1
        self._feedback(events[start:])

    def rows(self) -> dict[tuple[str, str], tuple[float, float, int, float]]:
        """(ctx, arm) -> (s, f, n, t) as folded so far."""
        return {key: (float(self._s[i]), float(self._f[i]), int(self._n[i]), float(self._t[i]))
                for i, key in enumerate(self._keys)}

    def _slot(self, ctx: str, arm: str, at: float) -> int:
        key = (ctx, arm)
        slot = self._index.get(key)
        if slot is None:
            slot = self._index[key] = len(self._keys)
            self._keys.append(key)
            if not ctx:
                self._global[arm] = slot
            self._new_t.append(at)  # a new row starts at its first event's time
        return slot

    def _grow(self) -> None:
        if not self._new_t:
            return
        extra = len(self._new_t)
        self._s = np.concatenate((self._s, np.zeros(extra)))
        self._f = np.concatenate((self._f, np.zeros(extra)))
        self._n = np.concatenate((self._n, np.zeros(extra, dtype=np.int64)))
        self._t = np.concatenate((self._t, np.array(self._new_t)))
        self._new_t.clear()

    def _fill(self, found: list[int | None], ctxs: Iterable[str], arms: list[str],
              ats: list[float]) -> list[int]:
        """``found`` (rows looked up at C level) with the missing rows made."""
        if None not in found:
            return found  # type: ignore[return-value]  # no None left
        return [self._slot(ctx, arm, at) if got is None else got
                for got, ctx, arm, at in zip(found, ctxs, arms, ats, strict=False)]

    def _feedback(self, run: Sequence[EventRow]) -> None:
        if not run:
            return
        count = len(run)
        arms = list(map(_ARMS, run))
        ats = list(map(_ATS, run))
        # global rows by arm alone: the common lookup, without building a key per event
        slots = self._fill(list(map(self._global.get, arms)), repeat(GLOBAL_CONTEXT), arms, ats)
        ctxs = list(map(_CTXS, run))
        picked: IntArray | None = None
        if any(ctxs):  # context rows as well as the global ones
            has = np.fromiter(map(bool, ctxs), bool, count)
            mask = has.tolist()
            in_ctx, of_arm = list(compress(ctxs, mask)), list(compress(arms, mask))
            keys = list(zip(in_ctx, of_arm, strict=True))
            slots += self._fill(list(map(self._index.get, keys)), in_ctx, of_arm,
                                list(compress(ats, mask)))
            picked = np.concatenate((np.arange(count), np.flatnonzero(has)))
        self._grow()
        idx: IntArray = np.array(slots, dtype=np.int64)
        at = np.array(ats)
        weight = np.fromiter(map(_WEIGHTS, run), np.float64, count)
        reward = np.fromiter(map(_REWARDS, run), np.float64, count)
        ws, wf = weight * reward, weight * (1.0 - reward)
        if picked is not None:
            at, ws, wf = at[picked], ws[picked], wf[picked]
        size = len(self._keys)
        if self.half_life_s is not None:
            end = self._t.copy()
            np.maximum.at(end, idx, at)
            rate = -math.log(2.0) / self.half_life_s
            keep = np.exp((end - self._t) * rate)
            self._s *= keep
            self._f *= keep
            own = np.exp((end[idx] - at) * rate)
            ws *= own
            wf *= own
            self._t = end
        self._s += np.bincount(idx, ws, size)
        self._f += np.bincount(idx, wf, size)
        self._n += np.bincount(idx, minlength=size)

    def _barrier(self, ev: EventRow) -> None:
        """A decay or reset event: it applies to the rows as they stand at its place."""
        if not self._keys:
            return
        kind, only_arm, only_ctx, factor = ev[_KIND], ev[_ARM], ev[_CTX], ev[_FACTOR]
        rows = np.array([(not only_arm or arm == only_arm)
                         and (kind != "reset" or only_ctx is None or ctx == only_ctx)
                         for ctx, arm in self._keys])
        if kind == "decay":
            assert factor is not None
            self._s[rows] *= factor
            self._f[rows] *= factor
        elif kind == "reset":
            self._s[rows] = 0.0
            self._f[rows] = 0.0
            self._n[rows] = 0


def _folded(events: Iterable[Event], half_life_s: float | None) -> EventFold:
    fold = EventFold(half_life_s)
    fold.add([ev.row() for ev in sorted(events, key=lambda e: e.seq)])
    return fold


def fold_events(
    events: Iterable[Event], half_life_s: float | None
) -> dict[tuple[str, str], tuple[float, float, int, float]]:
    """(ctx, arm) -> (s, f, n, t) from the events, in log order."""
    return _folded(events, half_life_s).rows()


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=_REL_TOL, abs_tol=1e-9)


def replay_events(
    learner: str,
    events: Sequence[Event] | EventFold,
    stored: Sequence[EvidenceRow],
    half_life_s: float | None,
) -> ReplayReport:
    """Compare stored evidence with the fold of ``events`` (or an ``EventFold`` fed them)."""
    fold = events if isinstance(events, EventFold) else _folded(events, half_life_s)
    replayed = fold.rows()
    have = {(r.ctx, r.arm): r for r in stored}
    mismatches = []
    for key in sorted(set(replayed) | set(have)):
        want = replayed.get(key, (0.0, 0.0, 0, 0.0))
        row = have.get(key)
        got = (row.s, row.f, row.n) if row else (0.0, 0.0, 0)
        if not (_close(got[0], want[0]) and _close(got[1], want[1]) and got[2] == want[2]):
            mismatches.append(ReplayMismatch(
                context_key=key[0], arm_id=key[1], stored=got,
                replayed=(want[0], want[1], want[2]),
            ))
    return ReplayReport(learner=learner, events=fold.events, rows=len(have),
                        mismatches=tuple(mismatches))
