"""The next-tool model's arithmetic: level counts as arrays, smoothing and success, vectorised.

``LevelCounts`` mirrors the learner's evidence rows of each n-gram level it is asked about
as arrays over the learner's arm slots (built on first use, then updated in place from the
rows the learner's cache takes in), so a suggestion gathers each level's counts for every
candidate in one numpy indexing step instead of a dict lookup per candidate.

``estimate`` then works on the stacked ``(levels, candidates)`` counts at once:

* **Sequence probability** (interpolated Witten-Bell, ``sequences``): the recursion
  ``P_L = (c_L + T_L P_{L-1}) / (c_L + T_L)`` is linear, so it is evaluated in closed form,
  ``P = sum_L c_L w_L + P_0 prod_L lambda_L`` with scalar weights
  ``w_L = prod_{j > L} lambda_j / (c_L + T_L)`` and ``lambda_L = T_L / (c_L + T_L)``:
  one matrix-vector product whatever the number of levels.
* **Success** (a Beta posterior per candidate after this history): the most specific level's
  successes and failures count in full; each coarser level adds the evidence it holds
  beyond the next finer level (the levels are nested: every transition updates them all),
  at most ``cap = context_backoff + a0 + b0`` pseudo-observations of it. So the history's
  own outcomes dominate once there are a few, a new history starts from what the tool did
  after the last tool and overall, and a tool's global record never swamps a specific one.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from qortex_mcp.learning.types import EvidenceRow

__all__ = ["Estimate", "LevelCounts"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

_CELLS: Final = 2_000_000
"""Cells of cached level arrays (3 floats each): at most about 48 MB per model."""
_TINY: Final = 1e-300


class _Level:
    """One level's counts over the learner's slots, as of ``at`` (decayed lazily).

    ``ns`` holds the counts (row 0), successes (row 1) and failures (row 2); its last cell
    stays 0, so an unknown tool (slot -1) gathers zeros."""

    __slots__ = ("at", "mass", "ns", "t", "types")

    def __init__(self, table: Mapping[int, list[float]], size: int, at: float) -> None:
        ns, t = np.zeros((3, size)), np.zeros(size)
        if table:
            # One array from the rows ([s, f, n, rsum, t, v] each), then column scatters:
            # a numpy item assignment per row costs more than the whole conversion.
            slots = np.fromiter(table.keys(), dtype=np.int64, count=len(table))
            rows = np.array(list(table.values()))
            ns[0, slots] = rows[:, 0] + rows[:, 1]
            ns[1, slots] = rows[:, 0]
            ns[2, slots] = rows[:, 1]
            t[slots] = rows[:, 4]
        self.ns, self.t, self.at = ns, t, at
        self.types = int(np.count_nonzero(ns[0]))
        self.mass: float | None = None

    def total(self, half_life: float | None, now: float) -> float:
        """The decayed count of every tool that followed the level's history."""
        if self.mass is None:  # (re)computed as of now after a change
            n = self.ns[0]
            self.at = now
            self.mass = float(n.sum() if half_life is None else
                              n @ np.power(0.5, (now - self.t) / half_life))
        if half_life is None:
            return self.mass
        return float(self.mass * 0.5 ** ((now - self.at) / half_life))


class LevelCounts:
    """The arrays of the levels in use, LRU-bounded by ``_CELLS``."""

    def __init__(self) -> None:
        self._levels: OrderedDict[str, _Level] = OrderedDict()
        self._cells = 0

    def forget(self, keys: set[str]) -> None:
        """Drop the arrays of these levels (rebuilt when next used)."""
        for key in keys:
            old = self._levels.pop(key, None)
            if old is not None:
                self._cells -= old.t.shape[0]

    def update(self, rows: Sequence[EvidenceRow], tables: Mapping[str, Mapping[int, list[float]]],
               index: Mapping[str, int]) -> None:
        """Bring the arrays of levels in use up to date with changed rows, in place (as the
        learner's cache now holds them: it skips stale rows); a level whose array is too
        small for a new arm is dropped and rebuilt when next used."""
        for row in rows:
            level = self._levels.get(row.ctx)
            if level is None:
                continue
            slot = index[row.arm]
            cur = tables.get(row.ctx, {}).get(slot)
            if slot >= level.t.shape[0] - 1 or cur is None:
                self.forget({row.ctx})
                continue
            n = cur[0] + cur[1]
            if (level.ns[0, slot] > 0.0) != (n > 0.0):
                level.types += 1 if n > 0.0 else -1
            level.ns[:, slot] = n, cur[0], cur[1]
            level.t[slot] = cur[4]
            level.mass = None

    def get(self, key: str, table: Mapping[int, list[float]], size: int, now: float) -> _Level:
        level = self._levels.get(key)
        if level is not None:
            self._levels.move_to_end(key)
            return level
        level = _Level(table, size, now)
        while self._levels and self._cells + size > _CELLS:
            _, old = self._levels.popitem(last=False)
            self._cells -= old.t.shape[0]
        self._levels[key] = level
        self._cells += size
        return level


@dataclass(frozen=True, slots=True)
class Estimate:
    p: FloatArray
    """Sequence probability per candidate (sums to 1)."""
    alpha: FloatArray
    beta: FloatArray
    depths: list[int]
    """The level index (in the caller's list) of each row of ``counts``."""
    counts: FloatArray
    """(levels learned, 3, candidates): decayed counts, successes and failures."""

    def deepest(self, pos: int) -> tuple[int, float, float]:
        """The most specific level candidate ``pos`` followed: index, count, successes."""
        for row in range(len(self.depths) - 1, -1, -1):
            n = float(self.counts[row, 0, pos])
            if n > 0.0:
                return self.depths[row], n, float(self.counts[row, 1, pos])
        return -1, 0.0, 0.0


def estimate(
    cache: LevelCounts,
    tables: Sequence[Mapping[int, list[float]] | None],
    keys: Sequence[str],
    slots: IntArray,
    top_slot: int,
    size: int,
    prior: FloatArray,
    cap: FloatArray,
    half_life: float | None,
    now: float,
) -> Estimate:
    """The module docstring's arithmetic for the candidates at ``slots`` (-1: unknown).

    ``tables`` are the learner's evidence tables of the levels (most general first; None
    when a level has none), ``size`` the slot count the arrays are built for (learner arms
    + 1) and ``top_slot`` the largest slot among the candidates. ``prior`` is the
    candidates' ``(a0, b0)`` rows and ``cap`` their ``context_backoff + a0 + b0``.

    With at most a few hundred candidates numpy's cost per call dominates, so the steps are
    few and whole-array: one gather per level, then every level at once.
    """
    count = slots.shape[0]
    found: list[tuple[int, _Level, float]] = []
    for depth, (key, table) in enumerate(zip(keys, tables, strict=True)):
        if table:
            level = cache.get(key, table, size, now)
            total = level.total(half_life, now)
            if total > 0.0:
                found.append((depth, level, total))
    if not found:
        return Estimate(np.full(count, 1.0 / count), prior[0], prior[1], [],
                        np.zeros((0, 3, count)))
    # (levels, [count, successes, failures], candidates), gathered in place
    stacked = np.empty((len(found), 3, count))
    weights = np.empty(len(found))
    keep = 1.0
    for i in range(len(found) - 1, -1, -1):
        _, level, total = found[i]
        width = level.t.shape[0]
        at = slots if top_slot < width - 1 else np.minimum(slots, width - 1)
        np.take(level.ns, at, axis=1, out=stacked[i])
        if half_life is not None:
            stacked[i] *= np.power(0.5, (now - level.t[at]) / half_life)
        # Witten-Bell in closed form: one weight per level, applied in one product.
        types = level.types
        weights[i] = keep / (total + types)
        keep *= types / (total + types)
    p = weights @ stacked[:, 0, :]
    p += keep / count
    p /= p.sum()
    # Success: [successes, failures] per level; the finest level in full, each coarser
    # one's surplus over the next finer level capped at ``cap`` pseudo-observations.
    ev = stacked[:, 1:, :]
    if len(found) > 1:
        ev = ev.copy()
        ev[:-1] -= stacked[1:, 1:, :]
        np.maximum(ev, 0.0, out=ev)
    w = cap / np.maximum(ev.sum(axis=1), _TINY)
    np.minimum(w, 1.0, out=w)
    w[-1] = 1.0
    ab = np.einsum("lk,lck->ck", w, ev)
    ab += prior
    depths = [d for d, _, _ in found]
    return Estimate(p, ab[0], ab[1], depths, stacked)
